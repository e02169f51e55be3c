"""Shared fixtures: the authors' public sample (from ../shared, never copied into the project) and
small synthetic releases made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PUBLIC_SAMPLE = SHARED / "medalign-public-sample"


@pytest.fixture(scope="session")
def public_sample() -> Path:
    if not (PUBLIC_SAMPLE / "sample-ehr-clean.xml").exists():
        pytest.skip(f"the dataset authors' public sample is not at {PUBLIC_SAMPLE} (only a developer checkout "
                    "beside ../shared has it; CI always does)")
    return PUBLIC_SAMPLE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Parsed-EHR caches go to a per-session temp folder, never to the user's home.
    monkeypatch.setenv("MEDALIGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "medalign-cache"))


def small_spec(patients: int = 4, instructions: int = 40, gold: int = 14, seed: int = 0, multi_rated: int = 5):
    from medalign_utils.synthetic import CohortSpec

    # Short records (median ~8k tokens) keep fixtures fast; the shape of everything else is kept.
    return CohortSpec(patients=patients, instructions=instructions, gold=gold, multi_rated=multi_rated, seed=seed,
                      length_log_median=9.0, length_log_sigma=0.6, min_tokens=3000, max_tokens=40_000)


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
    make_cohort(out, small_spec(patients=6, instructions=400, gold=303, seed=1, multi_rated=50), workers=1, progress=False)
    return out
