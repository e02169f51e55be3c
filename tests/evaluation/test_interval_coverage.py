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


# ------------------------------------------------------------------ small-sample intervals for k labels


def test_no_zero_width_interval_when_every_label_agrees():
    from medalign_utils.evaluation.judge.estimates import labels_only_ci, ppi_mean_ci

    y, yhat, yu = np.ones(10), np.full(10, 0.9), np.linspace(0.6, 1.0, 290)
    plain = ppi_mean_ci(y, yhat, yu, alpha=0.05)
    assert plain["lam"] == 0.0 and plain["ci_high"] - plain["ci_low"] == pytest.approx(0)  # the defect
    small = ppi_mean_ci(y, yhat, yu, alpha=0.05, small_sample=True)
    assert small["ci_high"] - small["ci_low"] > 0.1 and small["ci_low"] <= small["estimate"] <= small["ci_high"] <= 1
    wilson = labels_only_ci(y, alpha=0.05, small_sample=True)
    assert wilson["ci_low"] == pytest.approx(10 / (10 + 1.959964**2)) and wilson["ci_high"] == pytest.approx(1.0)


@pytest.mark.parametrize("p", [0.5, 0.8, 0.92])
@pytest.mark.parametrize("k", [10, 20, 40])
def test_small_sample_intervals_cover_the_estimand_at_small_k(p, k):
    """k labels of N = 300 answers whose correct rate is p, a judge whose probability separates them;
    the estimand is p. Coverage of PPI++ (small-sample) and of Wilson's interval, over 1500 draws."""
    from medalign_utils.evaluation.judge.estimates import labels_only_ci, ppi_mean_ci

    rng = np.random.default_rng(int(p * 100) + k)
    hits = {"labels": 0, "labels+judge": 0}
    draws = 1500
    for _ in range(draws):
        y_all = rng.random(300) < p
        q = np.where(y_all, rng.beta(6, 2, 300), rng.beta(2, 6, 300))
        pick = rng.choice(300, k, replace=False)
        rest = np.setdiff1d(np.arange(300), pick)
        for name, ci in (
            ("labels", labels_only_ci(y_all[pick].astype(float), alpha=0.05, small_sample=True)),
            ("labels+judge", ppi_mean_ci(y_all[pick].astype(float), q[pick], q[rest], alpha=0.05, small_sample=True)),
        ):
            hits[name] += ci["ci_low"] <= p <= ci["ci_high"]
    assert hits["labels+judge"] / draws >= 0.93, hits
    assert hits["labels"] / draws >= 0.92, hits  # Wilson's coverage oscillates a little around 95%


def test_ties_count_half_in_the_labels_as_in_the_judges_battles(tmp_path):
    """The new system beats five of the six and ties the sixth on every instruction. Its judge share
    is 5.5/6; clinicians who saw the same (a tie for first: rank 1.5) give the same 5.5/6."""
    import pandas as pd

    from medalign_utils.evaluation.judge.estimates import ppi_win_rate, read_new_labels

    six = [f"s{i}" for i in range(6)]
    rows = []
    for i in range(20):
        for s in six:
            winner = ("tie", "tie") if s == "s5" else ("A", "B")  # AB: new is A; BA: new is B
            for order, w in zip(("AB", "BA"), winner):
                verdict = {"winner": w}
                rows.append(
                    {"judge": "j", "mode": "pairwise", "instruction_id": str(i), "pair": f"new|{s}",
                     "order": order, "valid": True, "error": None, "verdict": verdict}
                )  # fmt: skip
    judgments = pd.DataFrame(rows)
    path = tmp_path / "labels.tsv"
    lines = ["instruction_id\tmodel_name\tbinary_correct\tmodel_rank"] + [f"{i}\tnew\t1\t1.5" for i in range(5)]
    path.write_text("\n".join(lines) + "\n")
    labels = read_new_labels(path)
    out = ppi_win_rate(judgments, labels, judge="j", system="new", systems=six)
    assert out["labels_win_rate"] == pytest.approx(5.5 / 6) == out["ppi_win_rate"]
    path.write_text(lines[0] + "\n0\tnew\t1\t1.3\n")
    with pytest.raises(ValueError, match=r"labels.tsv line 2: model_rank '1.3' is not a place from 1"):
        read_new_labels(path)


def test_no_interval_from_three_instructions():
    """A bootstrap over three instructions where the system won every battle says (1.000, 1.000):
    judge_win_rates withholds it, as place_summary does, and names the system."""
    import pandas as pd

    from medalign_utils.evaluation.judge.agreement import judge_win_rates, pairwise_battles

    rows = [
        {"judge": "j", "mode": "pairwise", "instruction_id": str(i), "pair": f"a|{b}", "order": order,
         "valid": True, "error": None, "verdict": {"winner": "A" if order == "AB" else "B"}}
        for i in range(3) for b in ("b", "c") for order in ("AB", "BA")
    ]  # fmt: skip
    battles = pairwise_battles(pd.DataFrame(rows), judge="j")
    table = judge_win_rates(battles, ["a", "b", "c"]).set_index("system")
    assert table.loc["a", "judge_win_rate"] == 1.0 and np.isnan(table.loc["a", "ci_low"])
    assert "a, b, c" in table.attrs["note"] and "fewer than 10 instructions" in table.attrs["note"]
    assert judge_win_rates(battles, ["a", "b", "c"], min_instructions=3).ci_low.notna().all()
