"""Label plans shown to hold, by simulation: on the synthetic cohort (the paper's 303 reviewed
instructions), one of the six systems planned as if new, its clinician labels the truth, and a
planted judge of known quality (informative: a correlation near 0.9 with the labels;
uninformative: none). For each design and k, the share of plans whose interval (labels + judge,
95%) covers the system's correct rate over its answers, and the mean widths; then the active
design's width over the uniform design's at k = 40 for each judge.

Usage: python benchmarks/bench_labels.py [--draws 1000] [--system vicuna13b_2k]
Prints `coverage_<design>_k<k>` (the lower of the two judges'), per-judge lines, widths, and last
`active_width_ratio_informative` and `active_width_ratio_uninformative`.
"""

from __future__ import annotations

import argparse

from _common import default_work_dir, emit, full_cohort, timed

from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians
from medalign_utils.evaluation import judge as J

KS = (20, 40, 80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000, help="plans per design and k")
    ap.add_argument("--system", default="vicuna13b_2k")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    release = load_release(full_cohort(default_work_dir() / "cohort-full"))
    labels = clinicians.combine_raters(release.model_responses, "primary")
    mine = labels[labels.system == args.system][["instruction_id", "binary_correct"]].dropna()
    y = mine.binary_correct.to_numpy(float)
    strata = mine.instruction_id.map(release.instructions.set_index("instruction_id").category).fillna("?")
    emit("answers", len(y))
    emit("true_correct_pct", 100 * y.mean())
    tables = {}
    with timed() as t:
        for quality in ("informative", "uninformative"):
            p = J.planted_predictions(y, quality=quality, seed=args.seed)
            tables[quality] = J.simulate_designs(y, p, strata=strata, ks=KS, n_draws=args.draws, seed=args.seed)
    emit("simulation_s", t["s"])
    both = {q: t[t.method == "labels+judge"].set_index(["design", "k"]) for q, t in tables.items()}
    for quality, table in both.items():
        for (design, k), row in table.iterrows():
            emit(f"coverage_{design}_k{k}_{quality}", row.coverage)
            emit(f"width_points_{design}_k{k}_{quality}", row.mean_width)
    for design, k in both["informative"].index:
        emit(f"coverage_{design}_k{k}", min(t.loc[(design, k), "coverage"] for t in both.values()))
    for quality in ("informative", "uninformative"):
        t = both[quality]
        emit(
            f"active_width_ratio_{quality}", t.loc[("active", 40), "mean_width"] / t.loc[("uniform", 40), "mean_width"]
        )


if __name__ == "__main__":
    main()
