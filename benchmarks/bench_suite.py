"""The README's main job (`medalign run` on the default synthetic cohort), timed end to end.

Usage: python benchmarks/bench_suite.py [--keep-caches]
(Run from an older checkout with `PYTHONPATH=<that checkout>` and this script copied there, it times
that code the same way: the before of a side-by-side measurement.)
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

from medalign_utils.reports import run_suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-caches", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medalign-suite-"))
    if not args.keep_caches:
        os.environ["MEDALIGN_CACHE_DIR"] = str(work / "cache")  # parsed events and tokens from scratch
    # The default config, with the cohort and intermediate files in the work folder.
    overrides = {
        "data_dir": str(work / "synthetic"),
        "prompts_path": str(work / "data" / "prompts.parquet"),
        "generations_path": str(work / "data" / "generations.jsonl"),
        "notebooks": {"06_llm_judge": {"judgments_dir": str(work / "data" / "judgments")}},
    }
    try:
        with timed() as t:
            # Only data/synthetic is made on demand: the work folder's cohort is made here, inside the time.
            from medalign_utils.config import load_config
            from medalign_utils.synthetic import CohortSpec, make_cohort

            synthetic = load_config().synthetic
            make_cohort(work / "synthetic", CohortSpec.for_scale(synthetic.scale, seed=synthetic.seed), progress=False)
            ok = run_suite(overrides=overrides, out=work / "reports", progress=False)
        record = json.loads((work / "reports" / "run.json").read_text())
        for nb in record["notebooks"]:
            emit(f"{nb['name']}_s", nb["seconds"], "{:.1f}")
        emit("all_ok", ok)
        emit("suite_s", t["s"], "{:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
