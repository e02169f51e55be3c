"""The README's main job (`medalign run` on the default synthetic cohort), timed end to end.

Usage: python benchmarks/bench_suite.py [--keep-caches]
By default the data, token and notebook caches start empty (the cohort is generated, every record
parsed and tokenized, every notebook executed), from a warm virtual environment (SmolLM2 already
converted). Floor (issue 4): under 10 minutes on 2 cores. The last line is the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from _common import emit, timed

from medalign_utils.reports import project_root, run_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-caches", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medalign-suite-"))
    if not args.keep_caches:
        os.environ["MEDALIGN_CACHE_DIR"] = str(work / "cache")  # parsed events and tokens from scratch
    cfg = work / "config.yaml"
    text = (project_root() / "configs" / "synthetic.yaml").read_text()
    text = text.replace("data_dir: data/synthetic", f"data_dir: {work / 'synthetic'}")
    for key in ("prompts_out", "prompts_path", "generations_path"):  # intermediate files in the work folder too
        text = text.replace(f"{key}: data/", f"{key}: {work}/data/", 1)
    cfg.write_text(text)
    try:
        with timed() as t:
            ok = run_suite(config=cfg, out=work / "reports", progress=False)
        record = json.loads((work / "reports" / "run.json").read_text())
        for nb in record["notebooks"]:
            emit(f"{nb['name']}_s", nb["seconds"], "{:.1f}")
        emit("all_ok", ok)
        emit("suite_s", t["s"], "{:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
