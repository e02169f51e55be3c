"""Shared fixtures: the authors' public sample (from ../shared, never copied into the project) and
small synthetic releases made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import PUBLIC_SAMPLE, make_tiny_lm, small_spec, unmark

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # `make test` runs one worker per core (pytest-xdist): each worker's torch, and the notebook
    # kernels and subprocesses it starts, get their share of the cores. Set before torch is
    # imported; more threads than cores would spin against each other.
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ.setdefault(name, share)


def pytest_collection_modifyitems(items):
    """Modules holding a test marked `slow(seconds=...)` run first, the longest first: under
    `--dist loadscope` each module goes to one worker, so the long ones start at once and the many
    short ones fill in beside them, and the workers finish together."""
    weight: dict = {}
    for item in items:
        if mark := item.get_closest_marker("slow"):
            weight[item.module] = max(weight.get(item.module, 0), mark.kwargs.get("seconds", 1))
    items.sort(key=lambda item: -weight.get(item.module, 0))  # stable: each module keeps its order


@pytest.fixture(scope="session")
def public_sample() -> Path:
    if not (PUBLIC_SAMPLE / "sample-ehr-clean.xml").exists():
        pytest.skip(
            f"the dataset authors' public sample is not at {PUBLIC_SAMPLE} (only a developer checkout "
            "beside ../shared has it; CI always does)"
        )
    return PUBLIC_SAMPLE


@pytest.fixture(autouse=True)
def _fresh_display_rule(monkeypatch):
    # Opening the real release sets the small-cell rule for every table shown after it in the
    # process (`describe.register_display_rule`): each test starts as a fresh kernel would.
    from medalign_utils.data import describe

    monkeypatch.setattr(describe, "_DISPLAY_RULE", {"min_cell_patients": None})


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    # Parsed-EHR and token caches go to a per-session temp folder, never to the user's home: set for
    # the whole session, before any module- or session-scoped fixture builds something cached.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDALIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "medalign-cache"))
        yield


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A small synthetic release (4 patients, 40 instructions, 14 gold), made once per session."""
    from medalign_utils.synthetic import make_cohort

    out = tmp_path_factory.mktemp("tiny_cohort")
    make_cohort(out, small_spec(), workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def gold_cohort(tmp_path_factory) -> Path:
    """A release with the paper's 303 gold instructions over 6 short records, for label analyses."""
    from medalign_utils.synthetic import make_cohort

    out = tmp_path_factory.mktemp("gold_cohort")
    make_cohort(
        out, small_spec(patients=6, instructions=400, gold=303, seed=1, multi_rated=50), workers=1, progress=False
    )
    return out


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return make_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def real_like(tiny_cohort, tmp_path_factory):
    """A copy of the tiny cohort that counts as the real release (see `helpers.unmark`)."""
    return unmark(tiny_cohort, tmp_path_factory.mktemp("real") / "release")


@pytest.fixture(scope="session")
def real_index(real_like):
    from medalign_utils.data import load_release
    from medalign_utils.reports.scan import SensitiveIndex

    return SensitiveIndex.from_release(load_release(real_like[0]))
