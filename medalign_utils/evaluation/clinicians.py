"""Clinician-label analysis: correctness, head-to-head win rates, ranks, paired tests, agreement.

Input is the release's model-responses table (`Release.model_responses`): one row per instruction x
model (x reviewer, where several clinicians reviewed), with ``model_rank`` (1 = best, ties allowed)
and ``binary_correct`` (1/0). Every function is small and pure; bootstraps resample *instructions*
(the unit the paper sampled) and are vectorized as one index or count matrix.

Conventions, as in the paper:
* error rate = 1 - share correct;
* a battle between two models on one instruction counts only when their ranks differ (ties are
  excluded); the head-to-head share is wins / (wins + losses) over instructions both answered;
* a model's win rate (WR) is the unweighted mean of its head-to-head shares over its opponents.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.problems import Problem
from ..data.release import primary_reviewer_rows, rater_column
from ..stats import BOOTSTRAP, BOOTSTRAP_UNITS, Bootstrap, bootstrap_ci, kendall_tau_b_rows

COMBINE_METHODS = ("primary", "majority", "mean")
LABEL_COLUMNS = ("model_rank", "binary_correct")


def require_responses(df: pd.DataFrame) -> None:
    """A clear error, naming the file, when there is nothing to analyse (a header-only file)."""
    if df.empty or "system" not in df.columns:
        name = df.attrs.get("source_file", "the model responses table")
        raise ValueError(f"{name} holds no reviewed responses (a header and no rows?): there is nothing to tabulate")


def check_labels(df: pd.DataFrame) -> list[Problem]:
    """Problems an analysis must know about: missing or non-numeric ranks and labels, ranks outside
    1..n, models missing for some instructions, duplicated rows. Nothing is dropped here."""
    name = df.attrs.get("source_file", "model responses")
    problems = []
    for col in ("model_rank", "binary_correct"):
        if col not in df.columns:
            problems.append(Problem(name, f"no {col} column: the statistics that need it are empty"))
            continue
        bad = pd.to_numeric(df[col], errors="coerce").isna()
        if bad.any():
            problems.append(
                Problem(
                    name,
                    f"{int(bad.sum())} rows have no usable {col}; they are left out of the "
                    f"{'rank' if col == 'model_rank' else 'correctness'} statistics",
                )
            )
    models = sorted(df.system.unique())
    keys = ["instruction_id"] + ([rater_column(df)] if rater_column(df) else [])
    per = df.groupby(keys).system.nunique()
    short = per[per < len(models)]
    if len(short):
        problems.append(
            Problem(
                name,
                f"{len(short)} instruction reviews lack some of the {len(models)} models; "
                "head-to-head shares use the instructions both models answered",
            )
        )
    dup = df.duplicated(keys + ["system"]).sum()
    if dup:
        problems.append(Problem(name, f"{int(dup)} duplicated instruction x model rows; the first of each is used"))
    return problems


def combine_raters(df: pd.DataFrame, how: str = "primary") -> pd.DataFrame:
    """One label per instruction x model from several reviewers.

    * ``primary``: the primary reviewer's labels as they are (`release.primary_reviewer_rows`:
      Annotator_1's whole ranking of an instruction, or, where Annotator_1 gave none, the first
      other reviewer's whole ranking). A label the chosen reviewer left empty stays missing.
    * ``majority``: correctness by majority vote (a tie takes the primary's label); where several
      reviewers ranked an instruction, its responses re-ranked by their mean rank (equal means tie,
      averaged ranks); single-reviewer instructions keep their ranks as given.
    * ``mean``: correctness as the share of reviewers who said correct; rank as the mean rank.

    Returns columns instruction_id, system, model_rank, binary_correct, n_raters (and
    person_id when the input has it), with the method in `attrs["combined_by"]`: the functions
    below take these labels as they are, so raters are combined once and the labels passed on.
    """
    out = _combine(df, how)
    if "person_id" in df.columns and len(out):
        person = df.drop_duplicates("instruction_id").set_index("instruction_id").person_id
        out["person_id"] = out.instruction_id.map(person)
    out.attrs["combined_by"] = how
    return out


def labels_of(df: pd.DataFrame, combine: str = "primary") -> pd.DataFrame:
    """Combined labels: `df` itself when it already is (`combine_raters`' output), else combined by
    `combine`."""
    return df if "n_raters" in df.columns else combine_raters(df, combine)


def _combine(df: pd.DataFrame, how: str) -> pd.DataFrame:
    if how not in COMBINE_METHODS:
        raise ValueError(f"combine must be one of {', '.join(COMBINE_METHODS)}, not {how!r}")
    keys = ["instruction_id", "system"]
    d = df.copy()
    d["model_rank"] = pd.to_numeric(d["model_rank"], errors="coerce")
    d["binary_correct"] = pd.to_numeric(d["binary_correct"], errors="coerce")
    col = rater_column(d)
    if col is None:
        d = d.drop_duplicates(keys)
        return d.assign(n_raters=1)[[*keys, "model_rank", "binary_correct", "n_raters"]]
    d = d.drop_duplicates([*keys, col])
    n_raters = d.groupby(keys, sort=False)[col].nunique().rename("n_raters")
    prim = primary_reviewer_rows(d, LABEL_COLUMNS).set_index(keys)[["model_rank", "binary_correct"]]
    if how == "primary":
        return prim.join(n_raters).reset_index()
    g = d.groupby(keys, sort=False)
    if how == "mean":
        return g[["model_rank", "binary_correct"]].mean().join(n_raters).reset_index()
    share = g["binary_correct"].mean()
    tie_break = prim["binary_correct"].reindex(share.index)
    vote = np.where(share > 0.5, 1.0, np.where(share < 0.5, 0.0, tie_break))
    out = pd.DataFrame({"binary_correct": vote, "model_rank": g["model_rank"].mean()}, index=share.index)
    out = out.join(n_raters).reset_index()
    combined = out.groupby("instruction_id").n_raters.transform("max") > 1
    reranked = out[combined].groupby("instruction_id")["model_rank"].rank(method="average")
    out.loc[combined, "model_rank"] = reranked
    return out[[*keys, "model_rank", "binary_correct", "n_raters"]]


def label_matrices(labels: pd.DataFrame, systems: list[str] | None = None):
    """(instruction ids, systems, rank matrix, correct matrix): instructions x systems, NaN where missing."""
    systems = systems or sorted(labels.system.unique())
    rank = labels.pivot_table(index="instruction_id", columns="system", values="model_rank", aggfunc="first")
    corr = labels.pivot_table(index="instruction_id", columns="system", values="binary_correct", aggfunc="first")
    idx = sorted(set(labels.instruction_id))
    rank = rank.reindex(index=idx, columns=systems)
    corr = corr.reindex(index=idx, columns=systems)
    return idx, systems, rank.to_numpy(float), corr.to_numpy(float)


def battle_matrices(rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per instruction, W[i, a, b] = 1 where a beat b, L[i, a, b] = 1 where a lost (ties and missing: 0)."""
    a = rank[:, :, None]
    b = rank[:, None, :]
    valid = ~np.isnan(a) & ~np.isnan(b)
    wins = (a < b) & valid
    losses = (a > b) & valid
    return wins.astype(float), losses.astype(float)


def head_to_head(rank: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Share of non-tied battles won by the row model over the column model (NaN on the diagonal
    and where a pair never met). `weights` (B x instructions) gives B weighted versions at once."""
    return battle_shares(*battle_matrices(rank), weights)


def battle_shares(wins: np.ndarray, losses: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Head-to-head shares from per-instruction battle counts (instructions x models x models: the
    clinicians' from their ranks, a judge's from its verdicts): the row model's share of the
    non-tied battles; `weights` (B x instructions) gives B weighted versions at once."""
    m = wins.shape[1]
    if weights is None:
        w, l = wins.sum(0), losses.sum(0)
    else:
        w = (weights @ wins.reshape(len(wins), -1)).reshape(-1, m, m)
        l = (weights @ losses.reshape(len(wins), -1)).reshape(-1, m, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = w / (w + l)
    idx = np.arange(m)
    share[..., idx, idx] = np.nan
    return share


def win_rates(share: np.ndarray) -> np.ndarray:
    """The paper's WR: each row's unweighted mean share over its opponents (NaN for a model that met
    no opponent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(share, axis=-1)


def _weighted_nanmean(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per resample (rows of weights) and column of x: the weighted mean ignoring NaNs."""
    present = ~np.isnan(x)
    xs = np.where(present, x, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ xs) / (weights @ present.astype(float))


def bootstrap_clusters(df: pd.DataFrame, ids, unit: str) -> np.ndarray | None:
    """The cluster code of each instruction in `ids` for a bootstrap by `unit`: None by instruction
    (each its own), or its patient (instructions sharing a record move together). `df` is any table
    with instruction_id and person_id (labels, responses). The one place the option is read."""
    if unit not in BOOTSTRAP_UNITS:
        raise ValueError(f"bootstrap unit must be one of {', '.join(BOOTSTRAP_UNITS)}, not {unit!r}")
    if unit == "instruction":
        return None
    if "person_id" not in df.columns:
        raise ValueError("a bootstrap by patient needs a person_id column in the labels")
    person = df.drop_duplicates("instruction_id").set_index("instruction_id").person_id.astype(str)
    codes, _ = pd.factorize(person.reindex(list(ids)).fillna("unknown"))
    return codes


def table3(
    df: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    combine: str = "primary",
    min_n: int = 10,
) -> pd.DataFrame:
    """The paper's Table 3 with percentile bootstrap CIs over instructions (or over patients:
    `bootstrap_unit="patient"` draws whole patients, since several instructions share a record).

    Columns: model, n, correct_pct, correct_ci_low, correct_ci_high, error_rate_pct, win_rate,
    win_rate_ci_low, win_rate_ci_high, mean_rank, mean_rank_ci_low, mean_rank_ci_high,
    n_rank_missing, n_correct_missing, low_n. A model with fewer than `min_n` labelled responses
    gets a Wilson interval for correct % and no win-rate or rank CI (a bootstrap of a handful of
    values is not an interval), is flagged `low_n`, sorted after the well-measured models, and
    named in `attrs['problems']`, which lists what else the input lacked.
    """
    require_responses(df)
    problems = check_labels(df) if "n_raters" not in df.columns else []  # combined labels were checked raw
    labels = labels_of(df, combine)
    combine = labels.attrs.get("combined_by", combine)
    ids, models, rank, corr = label_matrices(labels)
    weights = bootstrap.counts(len(ids), bootstrap_clusters(df, ids, bootstrap.unit))
    alpha = (1 - bootstrap.confidence) / 2
    q = [alpha, 1 - alpha]
    boot_correct = _weighted_nanmean(corr, weights) * 100
    boot_rank = _weighted_nanmean(rank, weights)
    boot_wr = win_rates(head_to_head(rank, weights))
    wr = win_rates(head_to_head(rank))
    with warnings.catch_warnings():
        # A model with no usable labels in a resample gives NaN there, not an error.
        warnings.simplefilter("ignore", RuntimeWarning)
        quant = {
            name: np.nanquantile(boot, q, axis=0)
            for name, boot in (("correct", boot_correct), ("wr", boot_wr), ("rank", boot_rank))
        }
        point_correct, point_rank = np.nanmean(corr, axis=0) * 100, np.nanmean(rank, axis=0)
    n = (~np.isnan(corr) | ~np.isnan(rank)).sum(0)
    low = n < min_n
    source = df.attrs.get("source_file", "model responses")
    problems += _small_n_intervals(quant, corr, n, models, confidence=bootstrap.confidence, min_n=min_n, source=source)
    out = pd.DataFrame(
        {
            "system": models,
            "n": n,
            "correct_pct": point_correct,
            **_ci_columns("correct", quant["correct"]),
            "win_rate": wr,
            **_ci_columns("win_rate", quant["wr"]),
            "mean_rank": point_rank,
            **_ci_columns("mean_rank", quant["rank"]),
            "n_rank_missing": np.isnan(rank).sum(0),
            "n_correct_missing": np.isnan(corr).sum(0),
            "low_n": low,
        }
    )
    out.insert(5, "error_rate_pct", 100 - out.correct_pct)
    out = out.sort_values(["low_n", "win_rate"], ascending=[True, False], kind="stable").reset_index(drop=True)
    out.attrs["problems"] = problems
    out.attrs["settings"] = {
        "combine": combine,
        "n_resamples": bootstrap.n_resamples,
        "seed": bootstrap.seed,
        "confidence": bootstrap.confidence,
        "ci": f"percentile bootstrap over {bootstrap.unit}s; Wilson for correct % below n = {min_n}",
        "bootstrap_unit": bootstrap.unit,
        "min_n": min_n,
    }
    return out


def _ci_columns(name: str, interval: np.ndarray) -> dict:
    return {f"{name}_ci_low": interval[0], f"{name}_ci_high": interval[1]}


def _small_n_intervals(
    quant: dict, corr: np.ndarray, n: np.ndarray, models, *, confidence: float, min_n: int, source: str
) -> list[Problem]:
    """For models with fewer than `min_n` labelled responses: a Wilson interval for correct % in
    place of the bootstrap one, no win-rate or rank interval (set in `quant`), and a problem each."""
    from statsmodels.stats.proportion import proportion_confint

    problems = []
    n_correct_labelled = (~np.isnan(corr)).sum(0)
    for j in np.flatnonzero(n < min_n):
        k = int(np.nansum(corr[:, j] >= 0.5))
        lo, hi = (
            proportion_confint(k, n_correct_labelled[j], 1 - confidence, method="wilson")
            if n_correct_labelled[j]
            else (np.nan, np.nan)
        )
        quant["correct"][:, j] = (100 * lo, 100 * hi)
        quant["wr"][:, j] = quant["rank"][:, j] = np.nan
        problems.append(
            Problem(
                source,
                f"model {models[j]} has {n[j]} labelled responses (< {min_n}): Wilson CI for correct %, "
                "no win-rate or rank CI, listed after the well-measured models",
            )
        )
    return problems


def patient_correlation(labels: pd.DataFrame) -> pd.DataFrame:
    """Per system, how its instructions' outcomes move together within a patient: the intraclass
    correlation (`stats.intraclass_correlation`) of its per-instruction net wins (battles won minus
    lost) and of its correctness, with the patients and mean instructions per patient. It says why a
    patient-level bootstrap interval is wider (ICC > 0) or narrower (ICC < 0) than an
    instruction-level one: the design effect is about 1 + (m - 1) ICC."""
    from ..stats import intraclass_correlation

    ranks = labels.pivot_table(index="instruction_id", columns="system", values="model_rank")
    correct = labels.pivot_table(index="instruction_id", columns="system", values="binary_correct")
    patient = labels.drop_duplicates("instruction_id").set_index("instruction_id").person_id
    rows = []
    for system in ranks.columns:
        others = ranks.drop(columns=system)
        net = np.sign(others.sub(ranks[system], axis=0)).sum(axis=1, min_count=1)  # + where it ranked better
        net = net[ranks[system].notna()].dropna()
        ok = correct[system].dropna()
        rows.append(
            {
                "system": system,
                "patients": int(patient.reindex(net.index).nunique()),
                "instructions_per_patient": len(net) / max(patient.reindex(net.index).nunique(), 1),
                "icc_net_wins": intraclass_correlation(net.to_numpy(), patient.reindex(net.index).to_numpy()),
                "icc_correct": intraclass_correlation(ok.to_numpy(), patient.reindex(ok.index).to_numpy()),
            }
        )
    return pd.DataFrame(rows)


def head_to_head_ci(
    df: pd.DataFrame,
    model_a: str,
    model_b: str,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    combine: str = "primary",
) -> tuple[float, float]:
    """A percentile bootstrap CI (over instructions, or patients) of the share of non-tied battles
    `model_a` won over `model_b`: one cell of Figure 2 with its uncertainty."""
    labels = labels_of(df, combine)
    ids, models, rank, _ = label_matrices(labels)
    a, b = models.index(model_a), models.index(model_b)
    counts = bootstrap.counts(len(ids), bootstrap_clusters(labels, ids, bootstrap.unit))
    shares = head_to_head(rank, counts)[:, a, b]
    alpha = (1 - bootstrap.confidence) / 2
    lo, hi = np.nanquantile(shares, [alpha, 1 - alpha])
    return float(lo), float(hi)


def win_matrix(df: pd.DataFrame, combine: str = "primary", systems: list[str] | None = None) -> pd.DataFrame:
    """The paper's Figure 2 as a DataFrame (row model's share of non-tied battles won over column)."""
    labels = labels_of(df, combine)
    _, systems, rank, _ = label_matrices(labels, systems)
    return pd.DataFrame(head_to_head(rank), index=systems, columns=systems)


# ------------------------------------------------------------------ paired tests


@dataclass
class McNemarResult:
    model_a: str
    model_b: str
    n: int
    a_only: int  # a correct, b wrong
    b_only: int  # b correct, a wrong
    diff_pct: float  # correct % of a minus b on the shared instructions
    ci_low: float
    ci_high: float
    statistic: float
    p_value: float
    exact: bool


def mcnemar(
    df: pd.DataFrame,
    model_a: str,
    model_b: str,
    *,
    combine: str = "primary",
    exact: bool | None = None,
    confidence: float = 0.95,
) -> McNemarResult:
    """McNemar's test of correctness between two systems on the instructions both answered.

    Exact binomial test when the discordant pairs are few (< 25) unless `exact` says otherwise,
    else the chi-square with continuity correction. The CI of the paired difference is the Wald
    interval of a difference of paired proportions.
    """
    from scipy import stats
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    labels = labels_of(df, combine)
    wide = labels.pivot_table(index="instruction_id", columns="system", values="binary_correct", aggfunc="first")
    for m in (model_a, model_b):
        if m not in wide.columns:
            raise ValueError(f"no labels for model {m!r} (models: {', '.join(map(str, wide.columns))})")
    pair = wide[[model_a, model_b]].dropna()
    a, b = pair[model_a].to_numpy() >= 0.5, pair[model_b].to_numpy() >= 0.5
    n = len(pair)
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    disc = n10 + n01
    use_exact = disc < 25 if exact is None else exact
    if disc == 0:
        stat, p = 0.0, 1.0
    else:
        table = [[int(np.sum(a & b)), n10], [n01, int(np.sum(~a & ~b))]]
        res = sm_mcnemar(table, exact=use_exact, correction=True)
        stat, p = float(res.statistic), float(res.pvalue)
    diff = (n10 - n01) / n if n else np.nan
    se = np.sqrt(max(n10 + n01 - (n10 - n01) ** 2 / n, 0)) / n if n else np.nan
    z = stats.norm.ppf(0.5 + confidence / 2)
    return McNemarResult(
        model_a,
        model_b,
        n,
        n10,
        n01,
        100 * diff,
        100 * (diff - z * se),
        100 * (diff + z * se),
        float(stat),
        p,
        bool(use_exact),
    )


def bradley_terry_gradient(wins: np.ndarray, log_strength: np.ndarray, prior_games: float = 1.0) -> np.ndarray:
    """The gradient of the log posterior `fit_bradley_terry` maximises, at `log_strength` (the
    uncentred fit relative to the reference player of strength 1): zero at the optimum."""
    w = np.asarray(wins, float)
    n = w + w.T
    p = np.exp(log_strength)
    expected = (n * p[:, None] / (p[:, None] + p[None, :])).sum(1) + prior_games * p / (p + 1.0)
    return w.sum(1) + prior_games / 2 - expected


def fit_bradley_terry(wins: np.ndarray, prior_games: float = 1.0, max_iter: int = 100, tol: float = 1e-8) -> np.ndarray:
    """Log-strengths of a Bradley-Terry model fitted to a wins matrix (wins[a, b]: times a beat b),
    with a proper prior: each model also plays `prior_games` virtual games against a fixed reference
    player of strength 1, winning half of them. This is the maximum of the likelihood times that
    prior; it shrinks every strength toward the reference and keeps a model that never (or always)
    wins finite. Returned centred on 0; `fit_bradley_terry_many` fits a stack of matrices at once."""
    return fit_bradley_terry_many(np.asarray(wins, float)[None], prior_games, max_iter=max_iter, tol=tol)[0]


def fit_bradley_terry_many(
    wins: np.ndarray, prior_games: float = 1.0, *, max_iter: int = 100, tol: float = 1e-8
) -> np.ndarray:
    """`fit_bradley_terry` for each of a stack of wins matrices (shape: fits x models x models), all
    at once (a bootstrap's thousands of resamples). The log posterior is strictly concave in the
    log-strengths (the prior's games make it so), so Newton's method with a backtracking line search
    climbs to its one maximum in a few steps; each fit iterates until its largest gradient per game
    played is below `tol` (the fixed point Hunter's MM algorithm reaches in hundreds of iterations),
    and a warning says when `max_iter` ends one first. Returned centred on 0, one row per fit."""
    w = np.asarray(wins, float)
    if w.ndim != 3 or w.shape[1] != w.shape[2]:
        raise ValueError(f"wins must be fits x models x models, not shape {w.shape}")
    n_fits, k = w.shape[:2]
    off = 1.0 - np.eye(k)
    n = (w + w.transpose(0, 2, 1)) * off
    total_wins = (w * off).sum(2) + prior_games / 2
    games = n.sum(2) + prior_games
    theta = np.zeros((n_fits, k))

    def log_posterior(t, rows):
        pair = np.logaddexp(t[:, :, None], t[:, None, :])
        prior = prior_games * np.logaddexp(t, 0).sum(1)
        return (total_wins[rows] * t).sum(1) - 0.5 * (n[rows] * pair).sum((1, 2)) - prior

    def gradient_and_hessian(t, rows):
        s = 1 / (1 + np.exp(t[:, None, :] - t[:, :, None]))  # s[f, i, j]: i beats j
        s0 = 1 / (1 + np.exp(-t))
        g = total_wins[rows] - (n[rows] * s).sum(2) - prior_games * s0
        curvature = n[rows] * s * (1 - s)
        h = curvature - np.eye(k) * (curvature.sum(2) + prior_games * s0 * (1 - s0))[:, :, None]
        return g, h

    active = np.ones(n_fits, bool)
    for _ in range(max_iter):
        g, h = gradient_and_hessian(theta[active], active)
        done = np.abs(g / games[active]).max(1) < tol
        active[np.flatnonzero(active)[done]] = False
        if not active.any():
            break
        g, h, t = g[~done], h[~done], theta[active]
        step = -np.linalg.solve(h, g[:, :, None])[:, :, 0]  # the ascent direction (h is negative definite)
        size, base, slope = np.ones(len(t)), log_posterior(t, active), (g * step).sum(1)
        for _ in range(50):  # halve each fit's step until its posterior rises enough (Armijo)
            short = log_posterior(t + size[:, None] * step, active) < base + 1e-4 * size * slope
            if not short.any():
                break
            size[short] /= 2
        theta[active] = t + size[:, None] * step
    else:
        g, _ = gradient_and_hessian(theta[active], active)
        gradient = np.abs(g / games[active]).max(1) if active.any() else np.zeros(0)
        if (gradient >= tol).any():
            warnings.warn(
                f"Bradley-Terry fit stopped after {max_iter} iterations with gradient {gradient.max():.2g} per game "
                f"(tolerance {tol:g}) in {int((gradient >= tol).sum())} of {n_fits} fits",
                RuntimeWarning,
                stacklevel=3,
            )
    return theta - theta.mean(1, keepdims=True)


def bradley_terry(
    df,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    combine="primary",
    prior_games=1.0,
) -> pd.DataFrame:
    """Bradley-Terry strengths fitted to the non-tied battles (`fit_bradley_terry`: one virtual game
    per model against an average reference player), as log-strengths centred on 0,
    with percentile bootstrap CIs over instructions (or patients). Also the model's probability of
    beating an average opponent, exp(s) / (exp(s) + 1) on the centred scale."""
    labels = labels_of(df, combine)
    ids, models, rank, _ = label_matrices(labels)
    wins, _ = battle_matrices(rank)
    point = fit_bradley_terry(wins.sum(0), prior_games)
    counts = bootstrap.counts(len(ids), bootstrap_clusters(labels, ids, bootstrap.unit))
    flat = wins.reshape(len(ids), -1)
    boot = fit_bradley_terry_many((counts @ flat).reshape(len(counts), len(models), len(models)), prior_games)
    alpha = (1 - bootstrap.confidence) / 2
    out = pd.DataFrame(
        {
            "system": models,
            "bt_log_strength": point,
            "ci_low": np.quantile(boot, alpha, axis=0),
            "ci_high": np.quantile(boot, 1 - alpha, axis=0),
        }
    )
    out["p_beat_average"] = 1 / (1 + np.exp(-out.bt_log_strength))
    out.attrs["settings"] = {
        "prior": f"{prior_games:g} virtual game(s) per model vs a reference of strength 1",
        "bootstrap_unit": bootstrap.unit,
    }
    return out.sort_values("bt_log_strength", ascending=False).reset_index(drop=True)


# ------------------------------------------------------------------ breakdowns


def breakdown(
    df: pd.DataFrame,
    groups: pd.Series,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    combine: str = "primary",
    min_cell: int = 0,
) -> pd.DataFrame:
    """Correct % and mean rank per model within each group of instructions (category, EHR length
    bin, patient demographics...), with the number of instructions per cell so thin cells are
    visible, and a bootstrap CI of correct % per cell. `groups` maps instruction_id to a group
    label; instructions without one are counted in the group 'unknown'. Cells with fewer than
    `min_cell` patients show only their counts, so that no cell describes a handful of patients
    (patients, never instructions: a patient's several instructions are one person). The CI
    resamples `bootstrap.unit`s within each cell."""
    labels = labels_of(df, combine)
    if (min_cell or bootstrap.unit == "patient") and "person_id" not in labels.columns:
        raise ValueError("a breakdown with min_cell or by patient needs person_id in the labels")
    g = labels.instruction_id.map(groups).astype(object).fillna("unknown")
    rows = []
    for (group, model), part in labels.groupby([g, labels.system], sort=True):
        part = part[part.binary_correct.notna()]
        corr = part.binary_correct.to_numpy(float)
        clusters = bootstrap_clusters(part, part.instruction_id, bootstrap.unit)
        lo, hi = bootstrap_ci(corr * 100, bootstrap=bootstrap, clusters=clusters)
        rows.append(
            {
                "group": group,
                "system": model,
                "n_instructions": part.instruction_id.nunique(),
                "n_patients": part.person_id.nunique() if "person_id" in part.columns else np.nan,
                "correct_pct": corr.mean() * 100 if len(corr) else np.nan,
                "correct_ci_low": lo,
                "correct_ci_high": hi,
                "mean_rank": part.model_rank.mean(),
            }
        )
    out = pd.DataFrame(rows)
    if min_cell and len(out):
        thin = out.n_patients < min_cell
        out.loc[thin, ["correct_pct", "correct_ci_low", "correct_ci_high", "mean_rank"]] = np.nan
    out.attrs["settings"] = {"bootstrap_unit": bootstrap.unit, "min_cell_patients": min_cell}
    return out


# ------------------------------------------------------------------ agreement between reviewers


def rater_rankings(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """For instructions with two or more reviewers: {instruction_id: raters x models rank table}."""
    col = rater_column(df)
    if col is None:
        return {}
    d = df.assign(model_rank=pd.to_numeric(df.model_rank, errors="coerce"))
    multi = d.groupby("instruction_id")[col].nunique()
    out = {}
    for iid in multi[multi >= 2].index:
        part = d[d.instruction_id == iid]
        out[iid] = part.pivot_table(index=col, columns="system", values="model_rank", aggfunc="first")
    return out


def inter_rater_tau(
    df: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
) -> dict:
    """Mean pairwise Kendall's tau-b between reviewers' rankings of the same responses (the paper's
    0.44): per instruction the mean over reviewer pairs, then the mean over instructions, with a
    bootstrap CI over instructions. Pairs where a reviewer's ranking is constant are left out and
    counted. A release with a single reviewer per instruction returns n_instructions = 0."""
    per_instruction, ids = [], []
    n_pairs = n_constant = 0
    for iid, table in rater_rankings(df).items():
        table = table.dropna(axis=1)
        raters = table.to_numpy(float)
        ia, ib = np.triu_indices(len(raters), 1)
        taus = kendall_tau_b_rows(raters[ia], raters[ib])
        n_pairs += len(taus)
        n_constant += int(np.isnan(taus).sum())
        if np.isfinite(taus).any():
            per_instruction.append(np.nanmean(taus))
            ids.append(iid)
    vals = np.array(per_instruction)
    clusters = bootstrap_clusters(df, ids, bootstrap.unit) if ids else None
    lo, hi = bootstrap_ci(vals, bootstrap=bootstrap, clusters=clusters)
    return {
        "mean_tau": float(vals.mean()) if len(vals) else np.nan,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_instructions": int(len(vals)),
        "n_rater_pairs": n_pairs,
        "n_pairs_constant": n_constant,
    }


def cohens_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa between two raters' labels (any categories; statsmodels); NaN when both
    raters use one category only (chance agreement is then 1)."""
    from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa

    a, b = np.asarray(a), np.asarray(b)
    cats = np.union1d(a, b)
    if len(cats) < 2:
        return np.nan
    table = pd.crosstab(pd.Categorical(a, cats), pd.Categorical(b, cats), dropna=False).to_numpy()
    return float(sm_cohens_kappa(table, return_results=False))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an items x categories table of rater counts (same raters per item;
    statsmodels); NaN when every rating falls in one category."""
    from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

    counts = np.asarray(counts, float)
    if np.count_nonzero(counts.sum(0)) < 2:
        return np.nan
    return float(sm_fleiss_kappa(counts, method="fleiss"))


def correctness_agreement(df: pd.DataFrame) -> dict:
    """Agreement of reviewers on correctness over instruction x model items they all labelled.

    `fleiss_kappa` (items with the modal number of reviewers) is the agreement figure: the
    release's Annotator_1/2/3 columns are slots that rotate over the clinicians, so treating them as
    fixed raters (Cohen's) is not justified. `mean_cohens_kappa` over slot pairs is a detail."""
    col = rater_column(df)
    if col is None:
        return {"fleiss_kappa": np.nan, "mean_cohens_kappa": np.nan, "n_items": 0, "n_raters": 1}
    d = df.assign(binary_correct=pd.to_numeric(df.binary_correct, errors="coerce")).dropna(subset=["binary_correct"])
    multi = d.groupby("instruction_id")[col].nunique()
    d = d[d.instruction_id.isin(multi[multi >= 2].index)]
    if d.empty:
        return {"fleiss_kappa": np.nan, "mean_cohens_kappa": np.nan, "n_items": 0, "n_raters": 1}
    wide = d.pivot_table(index=["instruction_id", "system"], columns=col, values="binary_correct", aggfunc="first")
    k = wide.notna().sum(axis=1)
    modal = int(k.mode().iloc[0])
    full = wide[k == modal]
    votes = full.to_numpy(float)
    table = np.column_stack([np.nansum(votes == 0, 1), np.nansum(votes == 1, 1)])
    pair_kappas = []
    raters = list(wide.columns)
    for i in range(len(raters)):
        for j in range(i + 1, len(raters)):
            both = wide[[raters[i], raters[j]]].dropna()
            if len(both) > 1:
                pair_kappas.append(cohens_kappa(both.iloc[:, 0].to_numpy(), both.iloc[:, 1].to_numpy()))
    return {
        "fleiss_kappa": fleiss_kappa(table),
        "mean_cohens_kappa": float(np.nanmean(pair_kappas)) if pair_kappas else np.nan,
        "n_items": int(len(full)),
        "n_raters": modal,
    }


def fleiss_kappa_ci(df: pd.DataFrame, *, bootstrap: Bootstrap = BOOTSTRAP) -> tuple[float, float]:
    """A percentile-bootstrap CI of Fleiss' kappa of correctness (`correctness_agreement`'s items with
    the modal number of reviewers) that resamples instructions (or their patients, by
    `bootstrap.unit`), each with all its items: the same kappa recomputed from each resample's counts."""
    col = rater_column(df)
    if col is None:
        return (np.nan, np.nan)
    d = df.assign(binary_correct=pd.to_numeric(df.binary_correct, errors="coerce")).dropna(subset=["binary_correct"])
    multi = d.groupby("instruction_id")[col].nunique()
    d = d[d.instruction_id.isin(multi[multi >= 2].index)]
    if d.empty:
        return (np.nan, np.nan)
    wide = d.pivot_table(index=["instruction_id", "system"], columns=col, values="binary_correct", aggfunc="first")
    k = wide.notna().sum(axis=1)
    m = int(k.mode().iloc[0])
    votes = wide[k == m].to_numpy(float)
    n1 = np.nansum(votes == 1, 1)
    agree = (n1**2 + (m - n1) ** 2 - m) / (m * (m - 1))  # each item's P_i
    per = pd.DataFrame({"iid": wide[k == m].index.get_level_values(0), "agree": agree, "n1": n1, "items": 1.0})
    sums = per.groupby("iid", sort=True)[["agree", "n1", "items"]].sum()
    if len(sums) < 2:
        return (np.nan, np.nan)
    clusters = bootstrap_clusters(df.drop_duplicates("instruction_id"), sums.index, bootstrap.unit)
    w = bootstrap.counts(len(sums), clusters)
    items = w @ sums["items"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        p_bar = w @ sums["agree"].to_numpy() / items
        p1 = w @ sums["n1"].to_numpy() / (m * items)
        chance = p1**2 + (1 - p1) ** 2
        kappas = (p_bar - chance) / (1 - chance)
    return tuple(float(x) for x in np.nanquantile(kappas, bootstrap.quantiles()))


def mcnemar_table(responses: pd.DataFrame, pairs, *, combine: str = "primary") -> pd.DataFrame:
    """McNemar's test for each (a, b) pair of systems both present: discordant counts, the
    difference in correct % with its CI, the p-value and which test was used."""
    present = set(responses.system)
    rows = []
    for a, b in pairs:
        if not {a, b} <= present:
            continue
        r = mcnemar(responses, a, b, combine=combine)
        rows.append(
            {
                "a": a,
                "b": b,
                "n": r.n,
                "a correct, b not": r.a_only,
                "b correct, a not": r.b_only,
                "difference (points)": r.diff_pct,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "interval": "Wald, paired proportions (not a bootstrap)",
                "p_value": r.p_value,
                "test": "exact binomial" if r.exact else "chi-square (corrected)",
            }
        )
    return pd.DataFrame(rows)


def agreement_summary(
    responses: pd.DataFrame,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    planted_tau: float | None = None,
) -> pd.DataFrame:
    """The clinicians' agreement on the multiply-reviewed instructions: mean pairwise Kendall tau-b
    of ranks (with CI, beside the paper's), Fleiss' kappa of correctness (the agreement figure) and
    the mean Cohen's kappa over annotator-slot pairs; `planted_tau` adds the planted value."""
    from .. import paper

    tau = inter_rater_tau(responses, bootstrap=bootstrap)
    kappa = correctness_agreement(responses)
    kappa_lo, kappa_hi = fleiss_kappa_ci(responses, bootstrap=bootstrap)
    multi = responses.groupby("instruction_id")[rater_column(responses)].nunique() if rater_column(responses) else []
    n_multi = int((pd.Series(multi) >= 2).sum()) if len(multi) else 0
    summary = pd.DataFrame(
        [
            {
                "statistic": "mean pairwise Kendall tau-b (ranks)",
                "value": tau["mean_tau"],
                "ci_low": tau["ci_low"],
                "ci_high": tau["ci_high"],
                "interval": f"bootstrap over {bootstrap.unit}s",
                "n_instructions": tau["n_instructions"],
                "n_items": np.nan,
                "paper": paper.INTER_RATER_TAU,
            },
            {
                "statistic": "Fleiss' kappa (correctness): the agreement figure",
                "value": kappa["fleiss_kappa"],
                "ci_low": kappa_lo,
                "ci_high": kappa_hi,
                "interval": f"bootstrap over {bootstrap.unit}s",
                "n_instructions": n_multi,
                "n_items": kappa["n_items"],
                "paper": np.nan,
            },
            {
                "statistic": "mean Cohen's kappa over Annotator slot pairs (detail)",
                "value": kappa["mean_cohens_kappa"],
                "ci_low": np.nan,
                "ci_high": np.nan,
                "interval": "none: a detail (slots are not fixed raters)",
                "n_instructions": n_multi,
                "n_items": kappa["n_items"],
                "paper": np.nan,
            },
        ]
    )
    if planted_tau is not None:
        summary.loc[0, "planted"] = planted_tau
    return summary
