"""Small vectorized statistics shared by the human-evaluation and metric-correlation analyses."""

from __future__ import annotations

import numpy as np


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
    statistic=np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
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
        weights = bootstrap_counts(n, n_resamples, seed, clusters)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = weights @ values / weights.sum(1)
        alpha = (1 - confidence) / 2
        return tuple(np.nanquantile(means, [alpha, 1 - alpha]))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    stats = statistic(np.take(values, idx, axis=axis), axis=1)
    alpha = (1 - confidence) / 2
    return tuple(np.nanquantile(stats, [alpha, 1 - alpha], axis=0))
