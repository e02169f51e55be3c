"""Bradley-Terry's bootstrap (page 04): every resample's fit at once by Newton's method, against the
fit it replaced, Hunter's MM algorithm one resample at a time, on the same resamples.

Usage: python benchmarks/bench_bradley_terry.py [--resamples 2000] [--unit instruction]
On the default synthetic cohort's primary labels (made in the work folder when missing). Prints both
times, the largest difference between the two fits' strengths and intervals, and last the ratio
`bradley_terry_bootstrap_speed_ratio` (MM over Newton).
"""

from __future__ import annotations

import argparse

import numpy as np
from _common import default_work_dir, emit, full_cohort, timed

from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians
from medalign_utils.stats import Bootstrap


def mm_fit(wins: np.ndarray, prior_games: float = 1.0, tol: float = 1e-8) -> np.ndarray:
    """The baseline: Hunter's MM iteration for the same posterior, to the same gradient tolerance."""
    n = wins + wins.T
    total_wins, games = wins.sum(1) + prior_games / 2, n.sum(1) + prior_games
    p = np.ones(len(wins))
    for i in range(100_000):
        p = total_wins / ((n / (p[:, None] + p[None, :])).sum(1) + prior_games / (p + 1.0))
        if (
            i % 10 == 9
            and np.max(np.abs(clinicians.bradley_terry_gradient(wins, np.log(p), prior_games)) / games) < tol
        ):
            break
    s = np.log(p)
    return s - s.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--unit", default="instruction", choices=["instruction", "patient"])
    args = ap.parse_args()
    release = load_release(full_cohort(default_work_dir() / "cohort-default", scale="default"))
    labels = clinicians.combine_raters(release.model_responses, "primary")
    ids, models, rank, _ = clinicians.label_matrices(labels)
    wins, _ = clinicians.battle_matrices(rank)
    bootstrap = Bootstrap(args.resamples, 0, args.unit)
    counts = bootstrap.counts(len(ids), clinicians.bootstrap_clusters(labels, ids, args.unit))
    stack = (counts @ wins.reshape(len(ids), -1)).reshape(len(counts), len(models), len(models))
    emit("instructions", len(ids))
    emit("resamples", len(counts))
    with timed() as old:
        before = np.array([mm_fit(w) for w in stack])
    with timed() as new:
        after = clinicians.fit_bradley_terry_many(stack)
    interval = [0.025, 0.975]
    emit("mm_one_at_a_time_s", old["s"])
    emit("newton_all_at_once_s", new["s"])
    emit("max_abs_difference_strengths", float(np.abs(before - after).max()), "{:.2e}")
    difference = np.abs(np.quantile(before, interval, axis=0) - np.quantile(after, interval, axis=0)).max()
    emit("max_abs_difference_interval_ends", float(difference), "{:.2e}")
    emit("bradley_terry_bootstrap_speed_ratio", old["s"] / new["s"], "{:.0f}")


if __name__ == "__main__":
    main()
