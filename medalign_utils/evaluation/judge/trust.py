"""How far to trust a judge, measured on the release's own labels: every agreement figure with a
bootstrap CI, the judge among the clinicians (HealthBench's leave-one-out comparison and
percentile), the alternative annotator test (Calderon et al. 2025), MedHELM's agreement statistics,
the judge's transfer error over the six systems, and prediction-powered inference (PPI++) with a
label-budget planner for a new system.

The release names reviewers only by slot (`Annotator_1/2/3`), and the slots rotate over the
clinicians: "each clinician" below is each slot, the one identity the release gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ...data.release import rater_column
from ...stats import BOOTSTRAP, Bootstrap, kendall_tau_b_rows
from ..clinicians import bootstrap_clusters
from .agreement import judge_scores, pairwise_battles

# ------------------------------------------------------------------ every agreement figure with a CI


def _interval(boot: np.ndarray, confidence: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return np.nan, np.nan
    a = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(lo), float(hi)


def _kappa_from_counts(t: np.ndarray) -> np.ndarray:
    """Cohen's kappa from 2x2 counts (..., 4: judge1&clin1, judge1&clin0, judge0&clin1, judge0&clin0)."""
    n = t.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        po = (t[..., 0] + t[..., 3]) / n
        pj, pc = (t[..., 0] + t[..., 1]) / n, (t[..., 0] + t[..., 2]) / n
        pe = pj * pc + (1 - pj) * (1 - pc)
        return (po - pe) / (1 - pe)


def correct_agreement_intervals(
    judgments: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    judge: str,
) -> pd.DataFrame:
    """The `correct` verdicts against the clinicians' `binary_correct`: accuracy, Cohen's kappa and
    each system's judge bias (judge correct % minus the clinicians'), each with a percentile
    bootstrap CI over instructions (or patients). One row per statistic."""
    s = judge_scores(judgments, "correct")
    m = s[s.judge == judge].merge(
        labels[["instruction_id", "system", "binary_correct"]], on=["instruction_id", "system"]
    )
    m = m.dropna(subset=["binary_correct", "score"])
    if m.empty:
        return pd.DataFrame(columns=["statistic", "value", "ci_low", "ci_high", "n"])
    ids = sorted(m.instruction_id.unique())
    row = {iid: k for k, iid in enumerate(ids)}
    systems = sorted(m.system.unique())
    col = {x: k for k, x in enumerate(systems)}
    cells = np.zeros((len(ids), 4))
    judged = np.zeros((len(ids), len(systems)))
    clin = np.zeros((len(ids), len(systems)))
    count = np.zeros((len(ids), len(systems)))
    for r in m.itertuples(index=False):
        i, j, c = row[r.instruction_id], int(r.score >= 0.5), int(r.binary_correct)
        cells[i, (1 - j) * 2 + (1 - c)] += 1
        judged[i, col[r.system]] += j
        clin[i, col[r.system]] += c
        count[i, col[r.system]] += 1
    weights = bootstrap.counts(len(ids), bootstrap_clusters(labels, ids, bootstrap.unit))
    boot_cells = weights @ cells
    out = []

    def add(name, value, boot, n):
        lo, hi = _interval(boot, bootstrap.confidence)
        out.append({"statistic": name, "value": float(value), "ci_low": lo, "ci_high": hi, "n": int(n)})

    total = cells.sum(0)
    add(
        "accuracy",
        (total[0] + total[3]) / total.sum(),
        (boot_cells[:, 0] + boot_cells[:, 3]) / boot_cells.sum(1),
        len(m),
    )
    add("cohens_kappa", _kappa_from_counts(total), _kappa_from_counts(boot_cells), len(m))
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = 100 * (judged.sum(0) - clin.sum(0)) / count.sum(0)
        boot_bias = 100 * (weights @ judged - weights @ clin) / (weights @ count)
    for k, system in enumerate(systems):
        add(f"judge_bias_points:{system}", bias[k], boot_bias[:, k], count[:, k].sum())
    return pd.DataFrame(out)


def pairwise_agreement_intervals(
    judgments: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    judge: str,
) -> pd.DataFrame:
    """The judge's battles against the clinicians' non-tied ones, three ways: its ties counted as
    disagreement, its ties left out, and each order alone (the verdict with the pair shown AB, and
    shown BA); and position bias (the share of decisive verdicts for the answer shown first), each
    with a bootstrap CI over instructions (or patients)."""
    battles = pairwise_battles(judgments, judge=judge)
    rank = labels.set_index(["instruction_id", "system"]).model_rank
    ids = sorted(battles.instruction_id.unique()) if len(battles) else []
    row = {iid: k for k, iid in enumerate(ids)}
    # Per instruction: battles, agreed, judge ties, agreed AB, agreed BA, decisive verdicts, first chosen.
    c = np.zeros((len(ids), 7))
    to_ab, to_ba = {"A": "a", "B": "b", "tie": "tie"}, {"A": "b", "B": "a", "tie": "tie"}
    for r in battles.itertuples(index=False):
        i = row[r.instruction_id]
        for choice in (r.first_choice_ab, r.first_choice_ba):
            c[i, 5] += choice != "tie"
            c[i, 6] += choice == "A"
        ra, rb = rank.get((r.instruction_id, r.system_a)), rank.get((r.instruction_id, r.system_b))
        if ra is None or rb is None or pd.isna(ra) or pd.isna(rb) or ra == rb:
            continue
        clinicians = "a" if ra < rb else "b"
        c[i, :5] += (1, r.outcome == clinicians, r.outcome == "tie", to_ab[r.first_choice_ab] == clinicians,
                     to_ba[r.first_choice_ba] == clinicians)  # fmt: skip
    weights = bootstrap.counts(max(len(ids), 1), bootstrap_clusters(labels, ids, bootstrap.unit) if ids else None)
    boot = weights[:, : len(ids)] @ c if ids else np.full((bootstrap.n_resamples, 7), np.nan)
    total = c.sum(0)

    def ratio(x, num, den):
        with np.errstate(invalid="ignore", divide="ignore"):
            return (
                x[..., num] / x[..., den]
                if not isinstance(den, tuple)
                else x[..., num] / (x[..., den[0]] - x[..., den[1]])
            )

    stats = [
        ("pairwise_agreement", 1, 0, total[0]),
        ("pairwise_agreement_ties_excluded", 1, (0, 2), total[0] - total[2]),
        ("pairwise_agreement_ab", 3, 0, total[0]),
        ("pairwise_agreement_ba", 4, 0, total[0]),
        ("judge_tie_share", 2, 0, total[0]),
        ("position_first_share", 6, 5, total[5]),
    ]
    out = []
    for name, num, den, n in stats:
        value = ratio(total, num, den) if total.size else np.nan
        lo, hi = _interval(ratio(boot, num, den), bootstrap.confidence)
        out.append({"statistic": name, "value": float(value), "ci_low": lo, "ci_high": hi, "n": int(n)})
    return pd.DataFrame(out)


# ------------------------------------------------------------------ the judge among the clinicians


def _rater_labels(responses: pd.DataFrame) -> pd.DataFrame:
    """The multi-rated responses, one row per (instruction, system, rater): binary_correct, model_rank."""
    col = rater_column(responses)
    if col is None:
        return pd.DataFrame(columns=["instruction_id", "system", "rater", "binary_correct", "model_rank"])
    d = responses.rename(columns={col: "rater"})[["instruction_id", "system", "rater", "binary_correct", "model_rank"]]
    d = d.assign(
        binary_correct=pd.to_numeric(d.binary_correct, errors="coerce"),
        model_rank=pd.to_numeric(d.model_rank, errors="coerce"),
    )
    multi = d.groupby("instruction_id").rater.nunique()
    return d[d.instruction_id.isin(multi[multi >= 2].index)].reset_index(drop=True)


def macro_f1(pairs: list[tuple[int, int]]) -> float:
    """Macro F1 of (rater, reference) label pairs pooled: the mean of the F1 of "correct" and of
    "incorrect" (HealthBench's meta-evaluation counts agreement over (rater, other rater) pairs)."""
    if not pairs:
        return np.nan
    a = np.array(pairs, dtype=int)
    f1 = []
    for cls in (1, 0):
        tp = np.sum((a[:, 0] == cls) & (a[:, 1] == cls))
        fp = np.sum((a[:, 0] == cls) & (a[:, 1] != cls))
        fn = np.sum((a[:, 0] != cls) & (a[:, 1] == cls))
        f1.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else np.nan)
    return float(np.nanmean(f1))


def _judge_correct(judgments: pd.DataFrame, judge: str) -> dict:
    s = judge_scores(judgments, "correct")
    s = s[s.judge == judge]
    return {(r.instruction_id, r.system): int(r.score >= 0.5) for r in s.itertuples(index=False)}


def _judge_rubric(judgments: pd.DataFrame, judge: str, mode: str = "rubric") -> dict:
    s = judge_scores(judgments, mode)
    s = s[s.judge == judge]
    return {(r.instruction_id, r.system): float(r.score) for r in s.itertuples(index=False)}


def _rank_tau(x: dict, y: dict) -> float:
    keys = sorted(set(x) & set(y))
    if len(keys) < 2:
        return np.nan
    return float(kendall_tau_b_rows(np.array([[x[k] for k in keys]]), np.array([[y[k] for k in keys]]))[0])


def judge_among_clinicians(
    responses: pd.DataFrame, judgments: pd.DataFrame, *, judge: str
) -> tuple[pd.DataFrame, dict]:
    """HealthBench's meta-evaluation on the instructions several clinicians reviewed: per clinician,
    its macro F1 (correct/incorrect) and mean per-instruction Kendall tau of ranks against the
    other clinicians (leave one out), beside the judge's against the same clinicians; and the
    judge's percentile among the clinicians, (#clinicians it beats + half the ties) / #clinicians,
    for each figure."""
    d = _rater_labels(responses)
    verdict = _judge_correct(judgments, judge)
    score = _judge_rubric(judgments, judge)
    rows = []
    for r in sorted(d.rater.unique()):
        mine, others = d[d.rater == r], d[d.rater != r]
        merged = mine.merge(others, on=["instruction_id", "system"], suffixes=("", "_o"))
        lab = merged.dropna(subset=["binary_correct", "binary_correct_o"])
        human_pairs = list(zip(lab.binary_correct.astype(int), lab.binary_correct_o.astype(int)))
        other_lab = others.dropna(subset=["binary_correct"])
        other_lab = other_lab[other_lab.instruction_id.isin(mine.instruction_id)]
        keys = zip(other_lab.instruction_id, other_lab.system)
        judge_pairs = [(verdict[k], int(c)) for k, c in zip(keys, other_lab.binary_correct) if k in verdict]
        taus_h, taus_j = [], []
        for iid, part in merged.groupby("instruction_id"):
            mine_r = dict(zip(part.system, -part.model_rank))
            for _, opart in others[others.instruction_id == iid].groupby("rater"):
                theirs = dict(zip(opart.system, -opart.model_rank))
                taus_h.append(_rank_tau(mine_r, theirs))
                jt = {s: score[(iid, s)] for s in theirs if (iid, s) in score}
                taus_j.append(_rank_tau(jt, theirs))
        rows.append(
            {
                "clinician": r,
                "clinician_macro_f1": macro_f1(human_pairs),
                "judge_macro_f1": macro_f1(judge_pairs),
                "clinician_tau": float(np.nanmean(taus_h)) if np.isfinite(taus_h).any() else np.nan,
                "judge_tau": float(np.nanmean(taus_j)) if np.isfinite(taus_j).any() else np.nan,
                "n_pairs": len(human_pairs),
            }
        )
    table = pd.DataFrame(rows)
    summary = {}
    for fig in ("macro_f1", "tau"):
        ok = table.dropna(subset=[f"clinician_{fig}", f"judge_{fig}"]) if len(table) else table
        if not len(ok):
            summary[f"percentile_{fig}"] = np.nan
            continue
        below = (ok[f"judge_{fig}"] > ok[f"clinician_{fig}"]).sum()
        ties = np.isclose(ok[f"judge_{fig}"], ok[f"clinician_{fig}"]).sum()
        summary[f"percentile_{fig}"] = float((below + 0.5 * ties) / len(ok))
    summary["n_clinicians"] = len(table)
    return table, summary


# ------------------------------------------------------------------ the alternative annotator test


def _item_scores(d: pd.DataFrame, held: str, judge_of: dict, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the held-out clinician's and the judge's agreement with the remaining clinicians."""
    mine, others = d[d.rater == held], d[d.rater != held]
    human, llm = [], []
    if kind == "correct":
        o = others.dropna(subset=["binary_correct"]).groupby(["instruction_id", "system"]).binary_correct.apply(list)
        for r in mine.dropna(subset=["binary_correct"]).itertuples(index=False):
            key = (r.instruction_id, r.system)
            if key not in o.index or key not in judge_of:
                continue
            human.append(np.mean([r.binary_correct == x for x in o[key]]))
            llm.append(np.mean([judge_of[key] == x for x in o[key]]))
        return np.array(human), np.array(llm)
    for iid, part in mine.groupby("instruction_id"):
        mine_r = dict(zip(part.system, -part.model_rank))
        th, tj = [], []
        for _, opart in others[others.instruction_id == iid].groupby("rater"):
            theirs = dict(zip(opart.system, -opart.model_rank))
            th.append(_rank_tau(mine_r, theirs))
            tj.append(_rank_tau({s: judge_of[(iid, s)] for s in theirs if (iid, s) in judge_of}, theirs))
        if np.isfinite(th).any() and np.isfinite(tj).any():
            human.append(np.nanmean(th))
            llm.append(np.nanmean(tj))
    return np.array(human), np.array(llm)


def alt_test(
    responses: pd.DataFrame,
    judgments: pd.DataFrame,
    *,
    judge: str,
    kind: str = "correct",
    epsilon: float = 0.2,
    q: float = 0.05,
    min_items: int = 30,
    min_clinicians: int = 3,
) -> tuple[pd.DataFrame, dict]:
    """The alternative annotator test (Calderon et al., ACL 2025), as their paper and notebook define
    it. For each clinician h held out, on each item both h and the judge can be compared with the
    remaining clinicians (`kind` "correct": responses, the share of their labels each agrees with;
    "rank": instructions, the mean Kendall tau of each's ranking with theirs, the judge ranking by
    its rubric score): S_h(i) and S_f(i). The win indicators W_h(i) = 1[S_h >= S_f] and W_f(i) =
    1[S_f >= S_h] have means rho_h and rho_f (the advantage probabilities); a one-sided one-sample
    t-test of d(i) = W_h(i) - W_f(i) against `epsilon` tests H0: rho_h - rho_f >= epsilon. The
    p-values are corrected by Benjamini-Yekutieli over clinicians at `q`; the winning rate is the share
    of clinicians rejected, passed at >= 0.5. With too few clinicians or items the verdict is None and
    `reason` says why."""
    from scipy import stats
    from statsmodels.stats.multitest import multipletests

    d = _rater_labels(responses)
    judge_of = _judge_correct(judgments, judge) if kind == "correct" else _judge_rubric(judgments, judge)
    rows = []
    for r in sorted(d.rater.unique()):
        human, llm = _item_scores(d, r, judge_of, kind)
        # A tie counts for both; scores equal but for rounding (two taus of one ranking) are a tie.
        w_h, w_f = (human >= llm - 1e-9).astype(float), (llm >= human - 1e-9).astype(float)
        diff = w_h - w_f
        if len(diff) < 2:
            p = np.nan
        elif np.std(diff) == 0:
            p = 0.0 if diff.mean() < epsilon else 1.0  # no variance: the mean decides
        else:
            p = float(stats.ttest_1samp(diff, epsilon, alternative="less").pvalue)
        rho = (float(w_f.mean()), float(w_h.mean())) if len(diff) else (np.nan, np.nan)
        rows.append({"clinician": r, "n_items": len(diff), "rho_judge": rho[0], "rho_clinician": rho[1], "p_value": p})
    table = pd.DataFrame(rows, columns=["clinician", "n_items", "rho_judge", "rho_clinician", "p_value"])
    reason = None
    if len(table) < min_clinicians:
        reason = f"{len(table)} clinicians reviewed the same items; the test needs at least {min_clinicians}"
    elif (table.n_items < min_items).any():
        reason = f"a clinician has {int(table.n_items.min())} items; the test needs at least {min_items} each"
    summary = {"epsilon": epsilon, "q": q, "kind": kind, "n_clinicians": len(table), "reason": reason}
    if reason is not None or table.p_value.isna().any():
        table["rejected"] = np.nan
        return table, {**summary, "winning_rate": np.nan, "passed": None, "reason": reason or "too few items"}
    table["rejected"] = multipletests(table.p_value.to_numpy(), alpha=q, method="fdr_by")[0]
    rate = float(table.rejected.mean())
    return table, {**summary, "winning_rate": rate, "passed": bool(rate >= 0.5)}


# ------------------------------------------------------------------ MedHELM's agreement statistics


def icc3k(scores: np.ndarray) -> float:
    """ICC(3,k): two-way mixed, consistency, the mean of k raters (targets x raters, complete)."""
    x = np.asarray(scores, float)
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * ((x.mean(1) - grand) ** 2).sum() / (n - 1)
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + grand
    ms_err = (resid**2).sum() / ((n - 1) * (k - 1))
    return float((ms_rows - ms_err) / ms_rows)


def quadratic_kappa(a: np.ndarray, b: np.ndarray, categories=(1, 2, 3, 4, 5)) -> float:
    """Cohen's kappa with quadratic weights over ordered `categories`."""
    cats = list(categories)
    k = len(cats)
    pos = {c: i for i, c in enumerate(cats)}
    o = np.zeros((k, k))
    for x, y in zip(a, b):
        o[pos[x], pos[y]] += 1
    w = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    e = np.outer(o.sum(1), o.sum(0)) / o.sum()
    return float(1 - (w * o).sum() / (w * e).sum())


def clinician_score(rank: pd.Series, n_systems: int = 6) -> pd.Series:
    """A clinician's rank (1 best .. n) on MedHELM's 1-5 scale: 5 for the best, 1 for the worst."""
    return (1 + 4 * (n_systems - rank) / (n_systems - 1)).round()


def medhelm_agreement(judgments: pd.DataFrame, labels: pd.DataFrame, *, judge: str, mode: str = "rubric") -> dict:
    """MedHELM's judge-clinician figures on the same responses: ICC(3,k) of z-scored judge scores and
    clinician scores (ranks mapped to 1-5), quadratic-weighted kappa on 1-5 (the judge's score
    rounded), Spearman with a Fisher-z 95% CI."""
    from scipy import stats

    s = judge_scores(judgments, mode)
    m = s[s.judge == judge].merge(labels[["instruction_id", "system", "model_rank"]], on=["instruction_id", "system"])
    m = m.dropna(subset=["score", "model_rank"])
    if len(m) < 4:
        return {"n": len(m), "icc3k": np.nan, "quadratic_kappa": np.nan, "spearman": np.nan}
    clin = clinician_score(m.model_rank.astype(float))
    z = np.column_stack([stats.zscore(m.score.to_numpy(float)), stats.zscore(clin.to_numpy(float))])
    rho = float(stats.spearmanr(m.score, -m.model_rank).statistic)
    half = 1.96 / np.sqrt(len(m) - 3)
    return {
        "n": len(m),
        "icc3k": icc3k(z) if np.isfinite(z).all() else np.nan,
        "quadratic_kappa": quadratic_kappa(np.clip(np.rint(m.score), 1, 5).astype(int), clin.astype(int)),
        "spearman": rho,
        "spearman_ci_low": float(np.tanh(np.arctanh(rho) - half)),
        "spearman_ci_high": float(np.tanh(np.arctanh(rho) + half)),
    }


def agreement_report(
    responses: pd.DataFrame,
    judgments: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    judge: str,
    systems: list[str],
    epsilon: float = 0.2,
) -> dict:
    """Every trust figure of one judge as flat `name: value` pairs (NaN where its verdicts cannot
    give one): `JudgeTrustDisplay.summary`."""
    from .displays import JudgeTrustDisplay

    return JudgeTrustDisplay.from_judgments(
        responses, judgments, labels, judge=judge, systems=systems, bootstrap=bootstrap, epsilon=epsilon
    ).summary
