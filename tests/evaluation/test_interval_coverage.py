"""Every interval says what it covers, and a simulation shows it: the judge's transfer-widened
intervals (Student's t over the systems its error was measured on, clipped to the scale) cover the
clinicians' value at least 93% of the time whatever the system-specific judge bias, where the 1.96
multiplier did not; the widened place covers the clinicians' place more often than the raw one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from medalign_utils.evaluation.judge.estimates import transfer_quantile, widened

N_SYSTEMS, N_ITEMS, WORLDS = 6, 300, 3000


def _world(rng, bias_sd: float, scale: float):
    """Six systems' clinician values and the judge's, on `scale` (100: correct %, 1: win rate): the
    clinicians' value is the mean of N_ITEMS labels, the judge's of N_ITEMS verdicts whose log-odds
    carry a bias of its own for each system."""
    p = rng.uniform(0.25, 0.8, N_SYSTEMS)
    clinicians = rng.binomial(N_ITEMS, p) / N_ITEMS
    judged = rng.binomial(N_ITEMS, expit(logit(p) + rng.normal(0.0, bias_sd, N_SYSTEMS))) / N_ITEMS
    return scale * clinicians, scale * judged


def _coverage(bias_sd: float, scale: float, multiplier=None, seed: int = 0) -> tuple[float, float]:
    """Coverage of the new system's (system 0) clinician value, the others giving the transfer error;
    and the share of intervals that would run off the scale unclipped."""
    rng = np.random.default_rng(seed)
    covered = off = 0
    for _ in range(WORLDS):
        clin, judge = _world(rng, bias_sd, scale)
        errors = judge[1:] - clin[1:]
        rms = float(np.sqrt((errors**2).mean()))
        half = 1.959963984540054 * np.sqrt(judge[0] / scale * (1 - judge[0] / scale) / N_ITEMS) * scale
        if multiplier is None:
            lo, hi = widened(judge[0], judge[0] - half, judge[0] + half, rms, n_systems=len(errors), scale=(0, scale))
        else:  # the former widening: 1.96 times the RMS, not clipped
            extra = np.sqrt(half**2 + (multiplier * rms) ** 2)
            lo, hi = judge[0] - extra, judge[0] + extra
        off += lo < 0 or hi > scale
        covered += lo <= clin[0] <= hi
    return covered / WORLDS, off / WORLDS


@pytest.mark.parametrize("scale", [100.0, 1.0], ids=["correct_pct", "win_rate"])
@pytest.mark.parametrize("bias_sd", [0.0, 0.3, 0.6])
def test_transfer_widened_intervals_cover_at_least_93_percent(bias_sd, scale):
    coverage, off_scale = _coverage(bias_sd, scale)
    assert coverage >= 0.93, coverage
    assert off_scale == 0  # clipped to the scale


def test_the_former_196_multiplier_undercovers_with_a_system_specific_bias():
    assert transfer_quantile(5) == pytest.approx(2.5706, abs=1e-4)  # t(5), not 1.96
    old, _ = _coverage(0.6, 100.0, multiplier=1.959963984540054)
    new, _ = _coverage(0.6, 100.0)
    assert old < 0.93 <= new and new - old > 0.02


def test_the_place_interval_follows_the_widened_rate():
    """The new system's place among six by the judge's win rates: the interval from the widened
    win-rate interval covers the clinicians' place far more often than the raw bootstrap's."""
    rng = np.random.default_rng(3)
    hits = {"raw": 0, "widened": 0}
    worlds = 1000
    for _ in range(worlds):
        clin, judge = _world(rng, 0.6, 1.0)
        errors = judge[1:] - clin[1:]
        rms = float(np.sqrt((errors**2).mean()))
        half = 1.96 * np.sqrt(judge[0] * (1 - judge[0]) / N_ITEMS)
        lo, hi = widened(judge[0], judge[0] - half, judge[0] + half, rms, n_systems=5, scale=(0, 1))
        true_place = 1 + (clin[1:] > clin[0]).sum()
        for name, (a, b) in {"raw": (judge[0] - half, judge[0] + half), "widened": (lo, hi)}.items():
            # as place_summary: the others' judge rates above each end of the interval
            best, worst = 1 + (judge[1:] > b).sum(), 1 + (judge[1:] > a).sum()
            hits[name] += best <= true_place <= worst
    assert hits["widened"] / worlds >= 0.9 and hits["widened"] > hits["raw"] + 0.1 * worlds
