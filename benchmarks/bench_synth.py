"""Generate the full-scale synthetic cohort (276 patients, 983 instructions) and validate it.

Usage: python benchmarks/bench_synth.py [--out DIR]
Floors (issue 3): under 120 s and under 2 GB on 2 cores. The last line is the seconds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import emit, peak_rss_mb, timed

from medalign_utils.data import validate_release
from medalign_utils.synthetic import CohortSpec, make_cohort


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="medalign-synth-"))
    try:
        with timed() as t:
            truth = make_cohort(out, CohortSpec.for_scale("full"), progress=False)
        rss = peak_rss_mb()
        cache = Path(tempfile.mkdtemp(prefix="medalign-synth-cache-"))
        summary, problems = validate_release(out, cache_dir=cache)
        shutil.rmtree(cache, ignore_errors=True)
        rec = truth["records"]
        emit("patients", rec["patients"])
        emit("instructions", truth["instructions"]["total"])
        emit("events", rec["events"])
        emit("notes", rec["notes"])
        emit("xml_mb", rec["xml_bytes"] / 1e6, "{:.1f}")
        emit("validate_problems", len(problems))
        emit("peak_rss_mb", rss, "{:.0f}")
        emit("generate_s", t["s"], "{:.1f}")
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
