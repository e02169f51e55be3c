"""Helpers shared by the benchmark scripts: peak memory, timing, `name: value` output, inputs."""

from __future__ import annotations

import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def peak_rss_mb(children: bool = True) -> float:
    """Peak resident memory of this process (and, by default, the largest finished child), in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if children else 0
    return max(own, kids) / 1024


def emit(name: str, value, fmt: str = "{:.3f}") -> None:
    text = fmt.format(value) if isinstance(value, float) else str(value)
    print(f"{name}: {text}", flush=True)


@contextmanager
def timed():
    box = {}
    t0 = time.perf_counter()
    yield box
    box["s"] = time.perf_counter() - t0


def full_cohort(target: Path, scale: str = "full") -> Path:
    """The paper-sized synthetic cohort, generated once into `target` (reused when present)."""
    from medalign_utils.synthetic import CohortSpec, make_cohort

    if (target / "SYNTHETIC").exists() and (target / "planted_truth.json").exists():
        return target
    make_cohort(target, CohortSpec.for_scale(scale), progress=False)
    return target


def default_work_dir() -> Path:
    return Path(os.environ.get("MEDALIGN_BENCH_DIR", Path.home() / ".cache" / "medalign" / "bench"))
