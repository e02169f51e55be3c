"""A new system's place and correct % by a judge, with the judge's own error inside the interval:
the judge's transfer error over the six systems (leave one system out), prediction-powered
inference (PPI++) from a few clinician labels of the new system plus the judge on all its answers,
and a label-budget planner measured on the six, whose labels are known.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...stats import BOOTSTRAP, Bootstrap
from ..clinicians import bootstrap_clusters, head_to_head, label_matrices, win_rates
from .agreement import judge_win_rates, pairwise_battles


def judge_correct_table(judgments: pd.DataFrame, judge: str) -> pd.DataFrame:
    """The judge's correct verdict per response, its probability where it has one, and `pred`: what
    every estimator takes as the judge's prediction (the probability where there is one, else the
    verdict)."""
    j = judgments[(judgments["mode"] == "correct") & (judgments.judge == judge)]
    j = j[j.error.isna() & j.valid.astype(bool)]
    expected = j.expected_score if "expected_score" in j.columns else pd.Series(np.nan, index=j.index)
    out = j[["instruction_id", "system"]].assign(
        verdict=pd.to_numeric(j.score, errors="coerce"), p_correct=pd.to_numeric(expected, errors="coerce")
    )
    out = out.assign(pred=out.p_correct.where(out.p_correct.notna(), out.verdict))
    out = out.drop_duplicates(["instruction_id", "system"], keep="last")
    # In a fixed order: a bootstrap draw names items by position, and concurrent judging writes its
    # judgments in whatever order they finish.
    return out.sort_values(["instruction_id", "system"], kind="stable").reset_index(drop=True)


def transfer_table(judgments: pd.DataFrame, labels: pd.DataFrame, *, judge: str, systems: list[str]) -> pd.DataFrame:
    """For each of the six systems taken as if it were new (its clinician labels unused by the
    judge): the judge's correct % and win rate beside the clinicians'. `attrs` holds their
    root-mean-square differences, the judge's transfer error, and how many systems each was measured
    on (`widened` multiplies it by Student's t for that many; see `TRANSFER_ASSUMPTION`)."""
    verdicts = judge_correct_table(judgments, judge)
    clin = labels[labels.system.isin(systems)]
    judge_pct = verdicts.groupby("system").verdict.mean() * 100
    clin_pct = pd.to_numeric(clin.binary_correct, errors="coerce").groupby(clin.system).mean() * 100
    battles = pairwise_battles(judgments, judge=judge)
    battles = battles[battles.system_a.isin(systems) & battles.system_b.isin(systems)]
    point_only = Bootstrap(n_resamples=10)  # the win rates' point estimates are what is compared
    jwr = judge_win_rates(battles, systems, bootstrap=point_only, min_instructions=0).set_index("system").judge_win_rate
    _, _, rank, _ = label_matrices(clin, systems)
    cwr = pd.Series(win_rates(head_to_head(rank)), index=systems)
    out = pd.DataFrame(
        {
            "system": systems,
            "judge_correct_pct": judge_pct.reindex(systems).to_numpy(),
            "clinician_correct_pct": clin_pct.reindex(systems).to_numpy(),
            "judge_win_rate": jwr.reindex(systems).to_numpy(),
            "clinician_win_rate": cwr.to_numpy(),
        }
    )
    out["correct_pct_error"] = out.judge_correct_pct - out.clinician_correct_pct
    out["win_rate_error"] = out.judge_win_rate - out.clinician_win_rate
    for name in ("correct_pct", "win_rate"):
        err = out[f"{name}_error"].dropna()
        out.attrs[f"transfer_error_{name}"] = float(np.sqrt((err**2).mean())) if len(err) else np.nan
        out.attrs[f"transfer_systems_{name}"] = len(err)
    return out


# What the transfer widening assumes, said on every page that shows it.
TRANSFER_ASSUMPTION = (
    "The widening assumes the new system is exchangeable with the systems the judge's error was "
    "measured on (its error drawn from the same spread); a system unlike them can fall outside."
)


def transfer_quantile(n_systems: int, confidence: float = 0.95) -> float:
    """The multiplier of a transfer error (an RMS over `n_systems` errors about zero): Student's t
    with `n_systems` degrees of freedom, since a new system's error over that RMS is t-distributed
    when the systems are exchangeable and their errors normal (1.96 holds only for many systems)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, n_systems)) if n_systems >= 1 else np.nan


def widened(
    estimate: float,
    low: float,
    high: float,
    transfer_error: float,
    *,
    n_systems: int,
    scale: tuple[float, float] = (0.0, 100.0),
    confidence: float = 0.95,
) -> tuple[float, float]:
    """The sampling interval widened by the judge's transfer error over `n_systems` systems (in
    quadrature, `transfer_quantile` times the error), clipped to the `scale` (0-100 for a correct %,
    0-1 for a win rate)."""
    if not np.isfinite(transfer_error) or not np.isfinite(low) or n_systems < 1:
        return np.nan, np.nan
    half = max(estimate - low, high - estimate)
    extra = np.sqrt(half**2 + (transfer_quantile(n_systems, confidence) * transfer_error) ** 2)
    return float(max(scale[0], estimate - extra)), float(min(scale[1], estimate + extra))


def judge_correct_pct(
    judgments: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    judge: str,
    system: str,
    patients: pd.DataFrame | None = None,
) -> dict:
    """The judge's correct % for one system with a bootstrap CI over its responses (one per
    instruction), or over patients (from `patients`: a table of instruction_id and person_id)."""
    v = judge_correct_table(judgments, judge)
    mine = v[(v.system == system) & v.verdict.notna()]
    x = mine.verdict.to_numpy(float)
    if not len(x):
        return {"correct_pct": np.nan, "correct_pct_ci_low": np.nan, "correct_pct_ci_high": np.nan, "n": 0}
    clusters = bootstrap_clusters(mine if patients is None else patients, mine.instruction_id, bootstrap.unit)
    weights = bootstrap.counts(len(x), clusters)
    boot = weights @ x / weights.sum(1)
    lo, hi = np.quantile(boot, bootstrap.quantiles())
    return {"correct_pct": 100 * x.mean(), "correct_pct_ci_low": 100 * lo, "correct_pct_ci_high": 100 * hi, "n": len(x)}


# ------------------------------------------------------------------ prediction-powered inference


def ppi_mean_ci(y, yhat, yhat_unlabeled, *, alpha: float, lam: float | None = None, small_sample: bool = False) -> dict:
    """PPI++ for a mean (Angelopoulos, Duchi and Zrnic 2023): `y` the gold labels of n items,
    `yhat` the judge on the same items, `yhat_unlabeled` the judge on the other N; `lam` tuned to
    the variance-optimal value clipped to [0, 1] unless given (1: plain PPI; 0: labels alone).
    Returns the estimate, a normal interval at level 1 - `alpha`, and lam (as `ppi_py`).

    `small_sample` (what the suite reports): the interval comes from the labels with two pseudo
    pairs at 1 and two at 0 (the judge at its labelled mean; Agresti and Coull's "add two successes
    and two failures") and Student's t, contains the estimate and is clipped to [0, 1]: when k labels
    all agree, PPI++ tunes lam to 0 and its plain interval has zero width (44% of draws at p = 0.92,
    k = 10). Coverage is shown by simulation (tests/evaluation/test_interval_coverage.py)."""
    from scipy import stats

    y, yhat, yu = (np.asarray(a, float) for a in (y, yhat, yhat_unlabeled))
    plain = _ppi(y, yhat, yu, alpha=alpha, lam=lam, quantile=stats.norm.ppf(1 - alpha / 2))
    if not small_sample:
        return plain
    pseudo = np.array([1.0, 1.0, 0.0, 0.0])
    y2, h2 = np.concatenate([y, pseudo]), np.concatenate([yhat, np.full(4, yhat.mean())])
    wide = _ppi(y2, h2, yu, alpha=alpha, lam=lam, quantile=stats.t.ppf(1 - alpha / 2, len(y2) - 1))
    low = float(np.clip(min(wide["ci_low"], plain["estimate"]), 0, 1))
    high = float(np.clip(max(wide["ci_high"], plain["estimate"]), 0, 1))
    return {**plain, "ci_low": low, "ci_high": high}


def _ppi(y, yhat, yu, *, alpha: float, lam: float | None, quantile: float) -> dict:
    n, big_n = len(y), len(yu)
    if lam is None:
        theta = yu.mean() + (y - yhat).mean()
        g, gh = y - theta, yhat - theta
        cov = 2 * ((g - g.mean()) * (gh - gh.mean())).sum() / n
        var = np.var(np.concatenate([gh, yu - theta]), ddof=1)
        lam = float(np.clip(cov / (2 * (1 + n / big_n) * var), 0, 1)) if var > 0 else 0.0
    estimate = lam * yu.mean() + (y - lam * yhat).mean()
    se = np.sqrt(np.std(lam * yu) ** 2 / big_n + np.std(y - lam * yhat) ** 2 / n)
    return {
        "estimate": float(estimate),
        "ci_low": float(estimate - quantile * se),
        "ci_high": float(estimate + quantile * se),
        "lam": lam,
    }


def labels_only_ci(y, *, alpha: float, small_sample: bool = False) -> dict:
    """The classical interval from the labels alone (normal approximation, as PPI's lam = 0), or,
    `small_sample`, Wilson's score interval for 0/1 labels and Student's t for others: never zero
    width when every label agrees."""
    from scipy import stats

    y = np.asarray(y, float)
    n, mean = len(y), float(y.mean())
    z = stats.norm.ppf(1 - alpha / 2)
    if small_sample and np.isin(y, (0.0, 1.0)).all():
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return {"estimate": mean, "ci_low": float(max(0.0, centre - half)), "ci_high": float(min(1.0, centre + half))}
    if small_sample:
        z = stats.t.ppf(1 - alpha / 2, max(n - 1, 1))
    se = np.std(y, ddof=1 if small_sample and n > 1 else 0) / np.sqrt(n)
    return {"estimate": mean, "ci_low": float(mean - z * se), "ci_high": float(mean + z * se)}


def read_new_labels(path) -> pd.DataFrame:
    """Clinician labels of a new system's answers: a TSV in the release's columns (instruction_id,
    model_name, binary_correct, and optionally model_rank against the six). Bad rows are errors
    naming the file and line."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file")
    df = pd.read_csv(path, sep="\t", dtype=str, quoting=3, keep_default_na=False)
    missing = {"instruction_id", "model_name", "binary_correct"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    correct = df.binary_correct.str.strip().str.lower().map({"1": 1.0, "0": 0.0, "true": 1.0, "false": 0.0})
    bad = correct.isna()
    if bad.any():
        line = int(np.flatnonzero(bad)[0]) + 2
        raise ValueError(
            f"{path} line {line}: binary_correct {df.binary_correct[bad].iloc[0]!r} is not 0/1 or true/false"
        )
    out = pd.DataFrame(
        {
            "instruction_id": df.instruction_id.str.strip(),
            "system": df.model_name.str.strip(),
            "binary_correct": correct,
        }
    )
    if "model_rank" in df.columns:  # a tie shares the average of the places it spans (1.5, 2.5, ...)
        rank = pd.to_numeric(df.model_rank.str.strip().replace("", np.nan), errors="coerce")
        bad = (df.model_rank.str.strip() != "") & (rank.isna() | (rank < 1) | ((rank * 2) % 1 != 0))
        if bad.any():
            line = int(np.flatnonzero(bad)[0]) + 2
            raise ValueError(
                f"{path} line {line}: model_rank {df.model_rank[bad].iloc[0]!r} is not a place from 1 "
                "(a tie: the average of the places it spans, e.g. 1.5)"
            )
        out["model_rank"] = rank
    return out


def ppi_correct_pct(
    judgments: pd.DataFrame, new_labels: pd.DataFrame, *, judge: str, system: str, alpha: float = 0.05
) -> dict:
    """The new system's correct %: from its k clinician labels plus the judge on all its answers
    (PPI++, the judge's p(correct) where it has one, else its verdict), beside the labels alone."""
    v = judge_correct_table(judgments, judge)
    v = v[v.system == system]
    mine = new_labels[new_labels.system == system].dropna(subset=["binary_correct"])
    labelled = mine.merge(v[["instruction_id", "pred"]], on="instruction_id")
    unlabelled = v[~v.instruction_id.isin(labelled.instruction_id)].pred.dropna()
    if len(labelled) < 2 or not len(unlabelled):
        return {
            "n_labels": len(labelled),
            "n_unlabelled": len(unlabelled),
            "reason": "too few labels or unlabelled answers",
        }
    ppi = ppi_mean_ci(labelled.binary_correct, labelled.pred, unlabelled, alpha=alpha, small_sample=True)
    alone = labels_only_ci(labelled.binary_correct, alpha=alpha, small_sample=True)
    return {
        "n_labels": len(labelled),
        "n_unlabelled": len(unlabelled),
        "ppi_correct_pct": 100 * ppi["estimate"],
        "ppi_correct_pct_ci_low": 100 * ppi["ci_low"],
        "ppi_correct_pct_ci_high": 100 * ppi["ci_high"],
        "ppi_lambda": ppi["lam"],
        "labels_correct_pct": 100 * alone["estimate"],
        "labels_correct_pct_ci_low": 100 * alone["ci_low"],
        "labels_correct_pct_ci_high": 100 * alone["ci_high"],
    }


def label_budget(
    judgments: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    judge: str,
    systems: list[str],
    ks=(10, 20, 40, 80),
    n_draws: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """On the six systems, whose labels are all known: for k clinician labels drawn at random, the
    CI width and coverage for the labels alone and for labels + this judge (PPI++), averaged over
    systems and draws, with the suite's small-sample intervals. Coverage is of the estimand, the
    system's correct rate on instructions like these, not of the mean of its N answers (which the
    N - k unlabelled answers nearly pin down, so it looks covered): each draw resamples the N
    answers with replacement into a new population and labels k of them, whose estimand is the N
    answers' mean. `coverage_note` says where coverage stays under 0.93. `equivalent_labels` is
    how many labels alone would give the PPI interval's width (width scales as 1/sqrt(n))."""
    rng = np.random.default_rng(seed)
    v = judge_correct_table(judgments, judge)
    rows = []
    for system in systems:
        m = labels[labels.system == system][["instruction_id", "binary_correct"]].dropna()
        m = m.merge(v[v.system == system][["instruction_id", "pred"]], on="instruction_id").dropna()
        y, yhat = m.binary_correct.to_numpy(float), m.pred.to_numpy(float)
        truth = y.mean() if len(y) else np.nan
        for k in ks:
            if k >= len(y) - 1:
                continue
            for _ in range(n_draws):
                world = rng.integers(0, len(y), len(y))  # a population like the N answers
                order = rng.permutation(len(y))
                pick, rest = world[order[:k]], world[order[k:]]
                for method, ci in (
                    ("labels", labels_only_ci(y[pick], alpha=alpha, small_sample=True)),
                    ("labels+judge", ppi_mean_ci(y[pick], yhat[pick], yhat[rest], alpha=alpha, small_sample=True)),
                ):
                    width = 100 * (ci["ci_high"] - ci["ci_low"])
                    covered = ci["ci_low"] <= truth <= ci["ci_high"]
                    rows.append({"system": system, "k": k, "method": method, "width": width, "covered": covered})
    d = pd.DataFrame(rows, columns=["system", "k", "method", "width", "covered"])
    out = d.groupby(["k", "method"]).agg(mean_width=("width", "mean"), coverage=("covered", "mean")).reset_index()
    out["coverage_note"] = np.where(out.coverage < 0.93, "coverage under 0.93: too few labels to trust", "")
    wide = out.pivot(index="k", columns="method", values="mean_width")
    if {"labels", "labels+judge"} <= set(wide.columns):
        equiv = (wide.index.to_numpy() * (wide["labels"] / wide["labels+judge"]) ** 2).round()
        out = out.merge(pd.DataFrame({"k": wide.index, "equivalent_labels": equiv.to_numpy()}), on="k")
    else:  # too few judged answers of any system for even the smallest k: an empty plan, said so
        out["equivalent_labels"] = pd.Series(dtype=float)
        out.attrs["note"] = "too few judged and labelled answers per system to plan with this judge"
    out.attrs["settings"] = {"n_draws": n_draws, "seed": seed, "alpha": alpha, "systems": list(systems)}
    return out


def place_summary(
    judgments: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    judge: str,
    system: str,
    systems: list[str],
    new_labels: pd.DataFrame | None = None,
    min_instructions: int = 10,
) -> dict:
    """A system placed by the judge: its correct %, win rate and place with bootstrap CIs, each
    widened by the judge's transfer error measured on the other systems (leave this one out), and,
    with clinician labels of some of its answers, the PPI estimate beside the labels alone. A system
    judged on fewer than `min_instructions` instructions gets no CI and no place, with the reason."""
    others = [m for m in systems if m != system]
    transfer = transfer_table(judgments, labels, judge=judge, systems=others)
    out: dict = {"system": system, "judge": judge}
    out.update(judge_correct_pct(judgments, judge=judge, system=system, bootstrap=bootstrap, patients=labels))
    error, n_err = transfer.attrs["transfer_error_correct_pct"], transfer.attrs["transfer_systems_correct_pct"]
    lo, hi = widened(out["correct_pct"], out["correct_pct_ci_low"], out["correct_pct_ci_high"], error, n_systems=n_err)
    out.update(correct_pct_transfer_low=lo, correct_pct_transfer_high=hi, transfer_assumption=TRANSFER_ASSUMPTION)
    battles = pairwise_battles(judgments, judge=judge)
    everyone = [*others, system]
    battles = battles[battles.system_a.isin(everyone) & battles.system_b.isin(everyone)]
    mine = battles[(battles.system_a == system) | (battles.system_b == system)]
    n_inst = mine.instruction_id.nunique()
    wr = judge_win_rates(
        battles, everyone, bootstrap=bootstrap, patients=labels, min_instructions=min_instructions
    ).set_index("system")
    row = wr.loc[system] if system in wr.index else None
    out.update(n_instructions_judged=n_inst, transfer_error_correct_pct=transfer.attrs["transfer_error_correct_pct"])
    out["transfer_error_win_rate"] = transfer.attrs["transfer_error_win_rate"]
    if row is None or n_inst < min_instructions or not (mine.outcome != "tie").any():
        why = "no battles" if row is None or not n_inst else f"judged on {n_inst} instructions (< {min_instructions})"
        if not n_inst:
            why = (
                f"no pairwise verdicts on {system} by {judge} (a place comes from battles: "
                "`medalign judge DIR --mode pairwise --generations FILE` judges stored answers against the six)"
            )
        why = why if not n_inst or (mine.outcome != "tie").any() else "every verdict a tie"
        out.update(win_rate=np.nan, win_rate_ci_low=np.nan, win_rate_ci_high=np.nan, place=np.nan)
        out.update(
            place_ci_low=np.nan, place_ci_high=np.nan, win_rate_transfer_low=np.nan, win_rate_transfer_high=np.nan
        )
        out["note"] = f"no place: {why}"
    else:
        out.update(win_rate=row.judge_win_rate, win_rate_ci_low=row.ci_low, win_rate_ci_high=row.ci_high)
        lo, hi = widened(
            row.judge_win_rate,
            row.ci_low,
            row.ci_high,
            transfer.attrs["transfer_error_win_rate"],
            n_systems=transfer.attrs["transfer_systems_win_rate"],
            scale=(0.0, 1.0),
        )
        out.update(win_rate_transfer_low=lo, win_rate_transfer_high=hi)
        # The place's interval: where the widened win-rate interval's ends fall among the others' win
        # rates (the judge's error moves the place as it moves the rate).
        rates = wr.drop(system).judge_win_rate.to_numpy()
        low_end, high_end = (lo, hi) if np.isfinite(lo) else (row.ci_low, row.ci_high)
        out.update(place=float(row.place), place_ci_low=float(1 + (rates > high_end).sum()))
        out["place_ci_high"] = float(1 + (rates > low_end).sum())
    if new_labels is not None:
        out.update(ppi_correct_pct(judgments, new_labels, judge=judge, system=system))
        if "model_rank" in new_labels.columns and new_labels.model_rank.notna().any():
            out.update(ppi_win_rate(judgments, new_labels, judge=judge, system=system, systems=others))
    return out


def ppi_win_rate(
    judgments: pd.DataFrame,
    new_labels: pd.DataFrame,
    *,
    judge: str,
    system: str,
    systems: list[str],
    alpha: float = 0.05,
) -> dict:
    """The new system's win rate against the six from clinician ranks of some of its answers plus
    the judge's battles on all of them (PPI++): per instruction the share of the six it beats, a tie
    counting half on both sides, whose mean over instructions is the win rate. `model_rank` in the
    labels is the answer's place among them and the new system (1: better than all of them), a tie
    sharing the average of the places it spans (tied for first with one other: 1.5), so that the
    share of `systems` it beats is (len(systems) + 1 - rank) / len(systems) with a tie as half a win,
    the judge's convention."""
    if "model_rank" not in new_labels.columns:
        return {"reason": "the labels hold no model_rank"}
    battles = pairwise_battles(judgments, judge=judge)
    mine = battles[
        ((battles.system_a == system) & battles.system_b.isin(systems))
        | ((battles.system_b == system) & battles.system_a.isin(systems))
    ]
    won = np.where(mine.outcome == "tie", 0.5, ((mine.outcome == "a") == (mine.system_a == system)).astype(float))
    share = pd.Series(won, index=mine.instruction_id).groupby(level=0).mean()
    ranks = new_labels[new_labels.system == system].dropna(subset=["model_rank"]).drop_duplicates("instruction_id")
    y = ((len(systems) + 1 - ranks.set_index("instruction_id").model_rank) / len(systems)).clip(0, 1)
    labelled = y.index.intersection(share.index)
    unlabelled = share.drop(labelled)
    if len(labelled) < 2 or not len(unlabelled):
        return {"n_rank_labels": len(labelled), "reason": "too few ranked answers or judged instructions"}
    ppi = ppi_mean_ci(y[labelled], share[labelled], unlabelled, alpha=alpha, small_sample=True)
    alone = labels_only_ci(y[labelled], alpha=alpha, small_sample=True)
    return {
        "n_rank_labels": len(labelled),
        "ppi_win_rate": ppi["estimate"],
        "ppi_win_rate_ci_low": ppi["ci_low"],
        "ppi_win_rate_ci_high": ppi["ci_high"],
        "labels_win_rate": alone["estimate"],
        "labels_win_rate_ci_low": alone["ci_low"],
        "labels_win_rate_ci_high": alone["ci_high"],
    }
