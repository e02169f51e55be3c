"""The README's main job (`medalign run` on the default synthetic cohort), timed end to end: the
code as it was (`--before`, a git revision) and this checkout, one after the other on this machine.

Usage: python benchmarks/bench_suite.py [--before REV] [--no-before] [--one-at-a-time] [--keep-caches]
Each run starts from empty data, token, judge and notebook caches (the cohort generated, every record
parsed and tokenized, every judgment asked, every notebook executed) and a warm virtual environment
(SmolLM2 converted). The revision before runs from a git worktree of this repository, with this
environment.
`--one-at-a-time` also runs this checkout with `--jobs 1` and says whether its findings equal the
default run's (notebooks side by side must change no result). Prints each run's notebook seconds,
how many findings the runs share with equal values, then `default_suite_notebooks_s` (this checkout's
wall time) and last `default_suite_speed_ratio` (before over now).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import emit

REPO = Path(__file__).resolve().parent.parent
# The last commit before the suite's speed work of issue 37 (8m54s on a fresh clone, sequential).
BEFORE = "61c59b9"

# Run in a child process with the code under test first on the path (`PYTHONPATH`), so the kernels
# it starts import the same code. Prints the run's record as one JSON line.
CHILD = """
import json, sys, time
from pathlib import Path
work, jobs = Path(sys.argv[1]), json.loads(sys.argv[2])
from medalign_utils.config import load_config
from medalign_utils.reports import run_suite
from medalign_utils.synthetic import CohortSpec, make_cohort
overrides = {
    "data_dir": str(work / "synthetic"),
    "prompts_path": str(work / "data" / "prompts.parquet"),
    "generations_path": str(work / "data" / "generations.jsonl"),
    "notebooks": {"06_llm_judge": {"judgments_dir": str(work / "data" / "judgments")}},
}
if "judge_cache_dir" in (load_config().notebooks.get("06_llm_judge") or {}):  # the judge's answers: cold too
    overrides["notebooks"]["06_llm_judge"]["judge_cache_dir"] = str(work / "data" / "judge-cache")
t0 = time.perf_counter()
synthetic = load_config().synthetic  # the cohort is made inside the time, as `medalign run` would
make_cohort(work / "synthetic", CohortSpec.for_scale(synthetic.scale, seed=synthetic.seed), progress=False)
kw = {} if jobs is None else {"jobs": jobs}
ok = run_suite(overrides=overrides, out=work / "reports", progress=False, **kw)
seconds = time.perf_counter() - t0
record = json.loads((work / "reports" / "run.json").read_text())
print(json.dumps({"ok": ok, "seconds": seconds, "notebooks": record["notebooks"], "findings": record["findings"]}))
"""


def time_suite(code: Path, *, jobs: int | None, keep_caches: bool) -> dict:
    """One cold run of the suite with the code at `code`, in a fresh work folder."""
    work = Path(tempfile.mkdtemp(prefix="medalign-suite-"))
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    if not keep_caches:
        env["MEDALIGN_CACHE_DIR"] = str(work / "cache")  # parsed events and tokens from scratch
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(work), json.dumps(jobs)],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"the suite at {code} failed: {proc.stderr.strip().splitlines()[-1:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def findings_by_key(run: dict) -> dict:
    return {(f["notebook"], f["name"]): (f["value"], f.get("ci_low"), f.get("ci_high")) for f in run["findings"]}


def equal_findings(a: dict, b: dict) -> tuple[int, int]:
    """How many findings both runs recorded, and how many of those have equal values and CIs."""
    fa, fb = findings_by_key(a), findings_by_key(b)
    shared = sorted(set(fa) & set(fb))
    return sum(fa[k] == fb[k] for k in shared), len(shared)


def emit_run(label: str, run: dict) -> None:
    for nb in run["notebooks"]:
        emit(f"{label}_{nb['name']}_s", nb["seconds"], "{:.1f}")
    emit(f"{label}_all_ok", run["ok"])
    emit(f"{label}_suite_s", run["seconds"], "{:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help=f"the git revision to compare with (default {BEFORE})")
    ap.add_argument("--no-before", action="store_true", help="time this checkout only")
    ap.add_argument("--one-at-a-time", action="store_true", help="also run this checkout with --jobs 1")
    ap.add_argument("--keep-caches", action="store_true")
    args = ap.parse_args()
    before = None
    if not args.no_before:
        tree = Path(tempfile.mkdtemp(prefix="medalign-before-")) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.before], check=True,
                       capture_output=True)  # fmt: skip
        try:
            before = time_suite(tree, jobs=None, keep_caches=args.keep_caches)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
        emit_run("before", before)
    now = time_suite(REPO, jobs=None, keep_caches=args.keep_caches)
    emit_run("now", now)
    if args.one_at_a_time:
        serial = time_suite(REPO, jobs=1, keep_caches=args.keep_caches)
        emit_run("one_at_a_time", serial)
        same, shared = equal_findings(serial, now)
        emit("findings_equal_to_one_at_a_time", f"{same}/{shared}")
    if before is not None:
        same, shared = equal_findings(before, now)
        emit("findings_equal_to_before", f"{same}/{shared}")
    emit("default_suite_notebooks_s", now["seconds"], "{:.1f}")
    if before is not None:
        emit("default_suite_speed_ratio", before["seconds"] / now["seconds"], "{:.2f}")


if __name__ == "__main__":
    main()
