"""Small vectorized statistics shared by the human-evaluation, metric-correlation and judge
analyses, and `Bootstrap`: how every CI of the suite resamples, one settings object."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_UNITS = ("instruction", "patient")


@dataclass(frozen=True)
class Bootstrap:
    """How a percentile-bootstrap CI is drawn: `n_resamples` resamples from `seed`, over `unit`
    (``instruction``, the paper's; ``patient``: instructions that share a record move together),
    at `confidence`. Every function with a CI takes one (``bootstrap=``), so a page states its
    resampling once and every CI on it follows."""

    n_resamples: int = 2000
    seed: int = 0
    unit: str = "instruction"
    confidence: float = 0.95

    def __post_init__(self):
        if self.unit not in BOOTSTRAP_UNITS:
            raise ValueError(f"bootstrap unit must be one of {', '.join(BOOTSTRAP_UNITS)}, not {self.unit!r}")
        if self.n_resamples < 1 or not 0 < self.confidence < 1:
            raise ValueError(f"a bootstrap needs n_resamples >= 1 and 0 < confidence < 1, not {self}")

    def counts(self, n: int, clusters: np.ndarray | None = None) -> np.ndarray:
        """The resamples as counts (`bootstrap_counts`)."""
        return bootstrap_counts(n, self.n_resamples, self.seed, clusters)

    def quantiles(self) -> tuple[float, float]:
        """The percentiles its interval runs between, as fractions."""
        alpha = (1 - self.confidence) / 2
        return alpha, 1 - alpha

    def describe(self) -> str:
        n, unit = self.n_resamples, self.unit
        return f"{self.confidence:.0%} percentile bootstrap that resamples {unit}s ({n} resamples, seed {self.seed})"

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **changes) -> Bootstrap:
        """The same settings with some changed (``bootstrap.replace(unit="patient")``)."""
        return dataclasses.replace(self, **changes)


BOOTSTRAP = Bootstrap()  # the default every function with a CI takes


def kendall_tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b between x[i] and y[i] for every row i, vectorized over rows.

    Equals ``scipy.stats.kendalltau(x[i], y[i]).statistic`` (tau-b, ties corrected). NaN entries
    are ignored pairwise-free: a row with any NaN gives NaN, as does a row where x or y is constant.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if x.ndim == 1:
        return kendall_tau_b_rows(x[None, :], y[None, :])
    n, m = x.shape
    iu, ju = np.triu_indices(m, k=1)
    sx = np.sign(x[:, iu] - x[:, ju])
    sy = np.sign(y[:, iu] - y[:, ju])
    s = np.nansum(sx * sy, axis=1)
    n0 = len(iu)
    tx = (sx == 0).sum(axis=1)
    ty = (sy == 0).sum(axis=1)
    denom = np.sqrt((n0 - tx).astype(float) * (n0 - ty).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(denom > 0, s / denom, np.nan)
    bad = np.isnan(x).any(axis=1) | np.isnan(y).any(axis=1)
    tau[bad] = np.nan
    return tau


def bootstrap_counts(n: int, n_resamples: int, seed: int, clusters: np.ndarray | None = None) -> np.ndarray:
    """Each row: how many times each item (instruction) is drawn in one bootstrap resample. With
    `clusters` (a cluster index per item, e.g. its patient), whole clusters are drawn and each item
    counts as often as its cluster was drawn."""
    rng = np.random.default_rng(seed)
    if clusters is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)
    clusters = np.asarray(clusters)
    k = int(clusters.max()) + 1
    drawn = rng.multinomial(k, np.full(k, 1.0 / k), size=n_resamples).astype(float)
    return drawn[:, clusters]


def bootstrap_ci(
    values: np.ndarray,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    statistic=np.mean,
    axis: int = 0,
    min_n: int = 2,
    clusters: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` over the first axis (e.g. instructions), vectorized:
    all resamples are drawn as one index matrix. Fewer than `min_n` values give (NaN, NaN): one
    value resampled says nothing about its spread. With `clusters` (one code per value, e.g. its
    patient) whole clusters are drawn (`bootstrap_counts`); the statistic is then the mean."""
    values = np.asarray(values, float)
    n = values.shape[axis]
    if n < max(min_n, 1):
        return (np.nan, np.nan)
    if clusters is not None:
        if statistic is not np.mean or values.ndim != 1:
            raise ValueError("a clustered bootstrap here resamples the mean of one column of values")
        weights = bootstrap.counts(n, clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = weights @ values / weights.sum(1)
        return tuple(np.nanquantile(means, bootstrap.quantiles()))
    rng = np.random.default_rng(bootstrap.seed)
    idx = rng.integers(0, n, size=(bootstrap.n_resamples, n))
    stats = statistic(np.take(values, idx, axis=axis), axis=1)
    return tuple(np.nanquantile(stats, bootstrap.quantiles(), axis=0))


def intraclass_correlation(values, clusters) -> float:
    """One-way ANOVA intraclass correlation ICC(1) of `values` within `clusters` (e.g. instructions
    within patients): above 0, a cluster's values move together and a cluster bootstrap is wider
    than an item bootstrap; below 0 (down to -1/(m - 1)), they offset each other and it is narrower.
    The design effect on a mean's variance is about 1 + (m - 1) ICC for clusters of m items."""
    values = np.asarray(values, float)
    codes, clusters = np.unique(np.asarray(clusters), return_inverse=True)
    a, n = len(codes), len(values)
    if a < 2 or n <= a:
        return float("nan")
    sizes = np.bincount(clusters, minlength=a).astype(float)
    means = np.bincount(clusters, weights=values, minlength=a) / sizes
    between = float((sizes * (means - values.mean()) ** 2).sum() / (a - 1))
    within = float(((values - means[clusters]) ** 2).sum() / (n - a))
    k0 = (n - (sizes**2).sum() / n) / (a - 1)
    denominator = between + (k0 - 1) * within
    return (between - within) / denominator if denominator > 0 else float("nan")
