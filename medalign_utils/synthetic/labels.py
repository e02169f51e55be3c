"""The planted clinician-label model of the synthetic cohort.

For each instruction and system, a response is correct with the system's probability (the paper's
Table 3 correct %), and has a latent quality ``mu[system] + gamma * correct + sigma * noise``. Each
reviewing clinician sees that quality through their own noise (``rater_sigma``) and ranks the six
responses by it, 1 = best; neighbouring responses are tied with probability ``tie_prob``. A
reviewer other than the primary flips a correctness label with probability ``rater_flip``.

`mu` was calibrated by stochastic approximation so that the expected mean ranks come close to the
paper's (see `calibrate_mu`); `rater_sigma` so that mean pairwise Kendall's tau between reviewers
is near the paper's 0.44. The expected values of every Table 3 statistic under this model are
computed by Monte Carlo (`expected_table3`) and written beside the cohort as its planted truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .. import paper
from ..stats import kendall_tau_b_rows


@dataclass(frozen=True)
class LabelModel:
    models: tuple[str, ...] = tuple(paper.MODELS)
    p_correct: tuple[float, ...] = tuple(paper.TABLE3.correct_pct / 100)
    mu: tuple[float, ...] = (0.498, 0.563, 0.304, -0.291, -0.291, -0.782)
    gamma: float = 0.6
    sigma: float = 1.0
    rater_sigma: float = 0.9
    tie_prob: float = 0.05
    rater_flip: float = 0.12

    def to_dict(self) -> dict:
        return asdict(self)


# How tied responses share ranks. The paper's mean ranks sum to 21.00 = 1 + ... + 6 over six
# systems, which holds with no ties or with averaged ties (1, 2.5, 2.5, 4), not with "min" ties
# (1, 2, 2, 4, whose sums fall short): averaged ties are the convention its numbers imply.
TIE_CONVENTION = "average"


def ranks_with_ties(latent: np.ndarray, rng: np.random.Generator, tie_prob: float) -> np.ndarray:
    """Rank each row (1 = highest latent); each neighbour in the order is tied to the one above
    with probability `tie_prob`; tied responses share the average of their ranks (1, 2.5, 2.5, 4),
    so every row's ranks sum to 1 + ... + m."""
    n, m = latent.shape
    order = np.argsort(-latent, axis=1, kind="stable")
    tie = rng.random((n, m)) < tie_prob
    tie[:, 0] = False
    positions = np.arange(m)[None, :].repeat(n, axis=0)
    group_start = np.maximum.accumulate(np.where(tie, 0, positions), axis=1)
    # The next group's start after each position, from the right: one less is this group's end.
    starts = np.where(~tie, positions, m)
    after = np.concatenate([starts[:, 1:], np.full((n, 1), m)], axis=1)
    group_end = np.minimum.accumulate(after[:, ::-1], axis=1)[:, ::-1] - 1
    ranks_sorted = (group_start + group_end) / 2 + 1
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=1)
    return ranks


@dataclass
class SimulatedLabels:
    correct: np.ndarray  # (raters, n, m) of 0/1
    rank: np.ndarray  # (raters, n, m) of 1..m, averaged ties (x.5)
    latent: np.ndarray  # (n, m), the response quality that response texts follow
    base_correct: np.ndarray = field(default=None)  # (n, m)


def simulate_labels(model: LabelModel, n: int, rng: np.random.Generator, n_raters: int = 1) -> SimulatedLabels:
    m = len(model.models)
    p = np.asarray(model.p_correct)
    base_correct = (rng.random((n, m)) < p).astype(int)
    latent = np.asarray(model.mu) + model.gamma * base_correct + model.sigma * rng.standard_normal((n, m))
    correct = np.empty((n_raters, n, m), dtype=int)
    rank = np.empty((n_raters, n, m), dtype=float)
    for r in range(n_raters):
        seen = latent + model.rater_sigma * rng.standard_normal((n, m))
        rank[r] = ranks_with_ties(seen, rng, model.tie_prob)
        flip = (rng.random((n, m)) < model.rater_flip) if r > 0 else np.zeros((n, m), bool)
        correct[r] = np.where(flip, 1 - base_correct, base_correct)
    return SimulatedLabels(correct, rank, latent, base_correct)


def win_matrix(rank: np.ndarray) -> np.ndarray:
    """Share of non-tied battles the row system wins over the column system (rank 1 = best)."""
    m = rank.shape[1]
    out = np.full((m, m), np.nan)
    for a in range(m):
        for b in range(m):
            if a != b:
                wins = np.sum(rank[:, a] < rank[:, b])
                losses = np.sum(rank[:, a] > rank[:, b])
                out[a, b] = wins / (wins + losses) if wins + losses else np.nan
    return out


def expected_table3(model: LabelModel, n: int = 200_000, seed: int = 12345) -> dict:
    """Expected correct %, win rate and mean rank (primary reviewer) under the label model."""
    sim = simulate_labels(model, n, np.random.default_rng(seed), n_raters=1)
    wins = win_matrix(sim.rank[0])
    return {
        "correct_pct": dict(zip(model.models, (100 * sim.correct[0].mean(axis=0)).round(2).tolist())),
        "win_rate": dict(zip(model.models, np.nanmean(wins, axis=1).round(4).tolist())),
        "mean_rank": dict(zip(model.models, sim.rank[0].mean(axis=0).round(3).tolist())),
        "win_matrix": {
            a: {b: (None if np.isnan(wins[i, j]) else round(float(wins[i, j]), 4)) for j, b in enumerate(model.models)}
            for i, a in enumerate(model.models)
        },
        "monte_carlo_draws": n,
    }


def expected_inter_rater_tau(model: LabelModel, n: int = 20_000, seed: int = 54321) -> float:
    """Expected mean Kendall tau-b between two reviewers' rankings of one instruction's responses."""
    sim = simulate_labels(model, n, np.random.default_rng(seed), n_raters=2)
    return float(np.nanmean(kendall_tau_b_rows(sim.rank[0], sim.rank[1])))


def calibrate_mu(
    model: LabelModel,
    *,
    target_mean_rank=tuple(paper.TABLE3.mean_rank),
    steps: int = 60,
    n: int = 40_000,
    rate: float = 0.6,
) -> tuple[float, ...]:
    """Stochastic approximation of `mu` so that expected mean ranks approach the targets (how the
    defaults were found; not run at generation time)."""
    mu = np.asarray(model.mu, float)
    target = np.asarray(target_mean_rank)
    for step in range(steps):
        trial = LabelModel(**{**model.to_dict(), "mu": tuple(mu)})
        sim = simulate_labels(trial, n, np.random.default_rng(step))
        mu += rate * (sim.rank[0].mean(axis=0) - target)
        mu -= mu.mean()
    return tuple(np.round(mu, 3))


# Table 3 statistic -> the prefix of its CI columns in `evaluation.clinicians.table3`.
TABLE3_CI_PREFIX = {"correct_pct": "correct", "win_rate": "win_rate", "mean_rank": "mean_rank"}


def planted_coverage(table3, planted: dict):
    """Table 3 with each statistic's planted expected value beside it (`planted_<stat>`), and for
    each statistic the number of systems whose CI contains it: (table, {stat: count})."""
    exp = planted["expected_table3"]
    out = table3.copy()
    inside = {}
    for stat, ci in TABLE3_CI_PREFIX.items():
        out[f"planted_{stat}"] = out.system.map(exp[stat])
        inside[stat] = int(out[f"planted_{stat}"].between(out[f"{ci}_ci_low"], out[f"{ci}_ci_high"]).sum())
    return out, inside


def judge_rubric_level(quality: np.ndarray, noise: np.ndarray, scale: float) -> np.ndarray:
    """The rubric level (1-5) the planted test judge gives a response of latent `quality`, seen
    through its own `noise`: one function shared by the judge and its expected agreement."""
    return np.clip(np.rint(3 + scale * (quality + noise)), 1, 5)


def expected_judge_tau(
    model: LabelModel, noise_sd: float, *, scale: float = 1.0, n: int = 40_000, seed: int = 97531
) -> float:
    """Expected per-instruction Kendall tau-b between the planted test judge's rubric scores and the
    primary clinician's ranking, under the label model (Monte Carlo; instructions where either side
    is constant are left out, as Table 4 does)."""
    rng = np.random.default_rng(seed)
    sim = simulate_labels(model, n, rng, n_raters=1)
    score = judge_rubric_level(sim.latent, noise_sd * rng.standard_normal(sim.latent.shape), scale)
    return float(np.nanmean(kendall_tau_b_rows(score, -sim.rank[0])))
