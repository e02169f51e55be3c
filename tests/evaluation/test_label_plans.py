"""Which answers clinicians should label: plans whose inclusion probabilities are what they say,
estimators that match each design and cover the system's correct rate, and what a judge or a jury
can save."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from medalign_utils import cli
from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge.labelplans import draw_sample, neyman_allocation

SYSTEM = "vicuna13b_2k"  # one of the six, planned as if new: every one of its labels is known


@pytest.fixture(scope="module")
def cohort(gold_cohort):
    release = load_release(gold_cohort)
    labels = clinicians.combine_raters(release.model_responses, "primary")
    mine = labels[labels.system == SYSTEM][["instruction_id", "binary_correct"]].dropna()
    return release, labels, mine.reset_index(drop=True)


def _verdicts(instruction_ids, p, *, judge="j", system=SYSTEM):
    return pd.DataFrame(
        {
            "judge": judge,
            "mode": "correct",
            "instruction_id": list(instruction_ids),
            "system": system,
            "valid": True,
            "error": None,
            "score": (np.asarray(p) > 0.5).astype(float),
            "expected_score": np.asarray(p, float),
        }
    )


# ------------------------------------------------------------------ inclusion probabilities


def test_inclusion_probabilities_sum_to_the_budget_and_follow_each_design():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.45, 0.55, 50), rng.uniform(0.0, 0.03, 250)])
    for design in ("uniform", "active"):
        pi = J.inclusion_probabilities(p, 40, design=design)
        assert pi.sum() == pytest.approx(40) and (pi <= 1).all() and (pi > 0).all()
    active = J.inclusion_probabilities(p, 40, design="active", floor=0.5)
    assert active.min() >= 0.5 * 40 / 300 - 1e-12  # the floor: no π is tiny
    assert active[:50].mean() > 2 * active[50:].mean()  # uncertain answers are labelled more often
    s = np.sqrt(p * (1 - p))
    assert active == pytest.approx(40 * (0.5 * s / s.sum() + 0.5 / 300))  # √(p(1−p)) mixed with uniform
    # Neyman: n_h ∝ N_h σ_h, recomputed here by hand for two strata.
    strata = np.array(["uncertain"] * 50 + ["sure"] * 250)
    alloc = neyman_allocation(strata, s, 40)
    share = 50 * s[:50].mean() / (50 * s[:50].mean() + 250 * s[50:].mean())
    assert sum(alloc.values()) == 40 and abs(alloc["uncertain"] - 40 * share) <= 1
    pi = J.inclusion_probabilities(p, 40, design="stratified", strata=strata)
    assert pi[:50] == pytest.approx(alloc["uncertain"] / 50) and pi[50:] == pytest.approx(alloc["sure"] / 250)


def test_a_drawn_plan_has_exactly_the_budget_and_includes_each_answer_about_as_often_as_its_pi():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 200)
    pi = J.inclusion_probabilities(p, 30, design="active", floor=0.3)
    counts = np.zeros(200)
    for seed in range(4000):
        pick = draw_sample(pi, design="active", seed=seed)
        assert pick.sum() == 30
        counts += pick
    assert np.abs(counts / 4000 - pi).max() < 0.03  # Pareto πps: inclusion as planned
    strata = np.where(p > 0.5, "a", "b")
    spi = J.inclusion_probabilities(p, 30, design="stratified", strata=strata)
    pick = draw_sample(spi, design="stratified", strata=strata, seed=0)
    assert pick.sum() == 30 and pick[strata == "a"].sum() == round(spi[strata == "a"].sum())


# ------------------------------------------------------------------ estimators


def test_each_estimator_is_its_formula():
    rng = np.random.default_rng(2)
    y_all, f_all = (rng.random(100) < 0.4).astype(float), rng.uniform(0, 1, 100)
    pick = rng.choice(100, 20, replace=False)
    pi = np.full(20, 0.2)
    # λ = 0 with uniform π: the labels' mean; λ = 1: the judge's mean plus the mean residual (PPI).
    assert J.ipw_ppi_ci(y_all[pick], f_all[pick], pi, f_all, lam=0.0)["estimate"] == pytest.approx(y_all[pick].mean())
    plain = f_all.mean() + (y_all[pick] - f_all[pick]).mean()
    assert J.ipw_ppi_ci(y_all[pick], f_all[pick], pi, f_all, lam=1.0)["estimate"] == pytest.approx(plain)
    # A judge that is always right: the truth, whatever was drawn.
    exact = J.ipw_ppi_ci(y_all[pick], y_all[pick], pi, y_all, lam=1.0)
    assert exact["estimate"] == pytest.approx(y_all.mean()) and exact["ci_low"] < exact["ci_high"]
    # Stratified with λ = 0: the strata's labelled means weighted by their sizes.
    strata = np.where(np.arange(100) < 30, "a", "b")
    s_pick = np.concatenate([rng.choice(30, 5, replace=False), 30 + rng.choice(70, 10, replace=False)])
    by_hand = 0.3 * y_all[s_pick[:5]].mean() + 0.7 * y_all[s_pick[5:]].mean()
    got = J.stratified_ppi_ci(y_all[s_pick], f_all[s_pick], strata[s_pick], f_all, strata, lam=0.0)
    assert got["estimate"] == pytest.approx(by_hand) and got["ci_low"] <= by_hand <= got["ci_high"]
    # Every label agrees: never a zero-width interval.
    ones = J.ipw_ppi_ci(np.ones(10), np.full(10, 0.95), np.full(10, 0.1), np.full(100, 0.95))
    assert ones["ci_high"] - ones["ci_low"] > 0.05


@pytest.mark.parametrize("quality", ["informative", "uninformative"])
def test_every_design_covers_the_systems_correct_rate_and_active_pays_off(cohort, quality):
    """The benchmark's simulation, smaller: 200 plans per design and k (benchmarks/bench_labels.py
    runs 1000 and holds the 93% floor)."""
    release, _, mine = cohort
    y = mine.binary_correct.to_numpy(float)
    p = J.planted_predictions(y, quality=quality, seed=0)
    category = release.instructions.set_index("instruction_id").category
    table = J.simulate_designs(
        y, p, strata=mine.instruction_id.map(category).fillna("?"), ks=(20, 40), n_draws=200, seed=0
    )
    both = table[table.method == "labels+judge"].set_index(["design", "k"])
    assert (both.coverage >= 0.9).all(), both
    ratio = both.loc[("active", 40), "mean_width"] / both.loc[("uniform", 40), "mean_width"]
    if quality == "informative":
        assert ratio < 0.92
    else:
        assert ratio <= 1.05


# ------------------------------------------------------------------ the commands


@pytest.fixture(scope="module")
def planned(cohort, tmp_path_factory):
    release, _, mine = cohort
    out = tmp_path_factory.mktemp("plans")
    p = J.planted_predictions(mine.binary_correct, quality="informative", seed=3)
    judgments = pd.concat([_verdicts(mine.instruction_id, p), _verdicts(mine.instruction_id, 1 - p, judge="other")])
    judgments.to_json(out / "correct.jsonl", orient="records", lines=True)
    return out


def test_label_plan_writes_the_answers_to_label_with_their_pi_and_place_estimates_by_the_design(
    cohort, planned, gold_cohort, capsys
):
    release, _, mine = cohort
    plan_path = planned / "plan.tsv"
    argv = ["label-plan", str(gold_cohort), "--judgments", str(planned / "correct.jsonl"), "--system", SYSTEM]
    argv += ["--budget", "40", "--design", "active", "--seed", "7", "--out", str(plan_path)]
    assert cli.main(argv) == 2 and "say which with --judge" in capsys.readouterr().err
    assert cli.main([*argv, "--judge", "j"]) == 0
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert out["labels"] == "40" and float(out["expected_ci_width_points"]) > 0
    head = [line for line in plan_path.read_text().splitlines() if line.startswith("# ")]
    assert {'# design: "active"', "# seed: 7", "# budget: 40"} <= set(head)
    rows = pd.read_csv(plan_path, sep="\t", comment="#", dtype={"instruction_id": str})
    assert len(rows) == 40 and set(rows.columns) >= {"instruction_id", "pi", "question", "answer"}
    assert rows.answer.notna().all() and (rows.pi > 0).all()
    plan = J.LabelPlan.read(plan_path)
    assert plan.design == "active" and plan.population.pi.sum() == pytest.approx(40)
    # The clinicians label 36 of the 40: their labels give the design's estimate, 4 missing said.
    truth = mine.set_index("instruction_id").binary_correct
    labels = planned / "labels.tsv"
    given = rows.instruction_id[:36]
    pd.DataFrame(
        {"instruction_id": given, "model_name": SYSTEM, "binary_correct": given.map(truth).astype(int)}
    ).to_csv(labels, sep="\t", index=False)
    judged = [str(planned / "correct.jsonl")]
    place = ["place", str(gold_cohort), "--judgments", *judged, "--judge", "j", "--system", SYSTEM]
    assert cli.main([*place, "--labels", str(labels), "--plan", str(plan_path)]) == 0
    captured = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in captured.out.splitlines() if ": " in line)
    assert lines["design"] == "active" and lines["n_labels"] == "36" and lines["n_missing"] == "4"
    low, high = float(lines["plan_correct_pct_ci_low"]), float(lines["plan_correct_pct_ci_high"])
    assert low <= float(lines["plan_correct_pct"]) <= high and "plan_labels_correct_pct" in lines
    assert "4 planned answers have no label yet" in captured.err
    # A label of an answer the plan did not pick is refused, naming its line.
    stray = mine.instruction_id[~mine.instruction_id.isin(rows.instruction_id)].iloc[0]
    with labels.open("a") as f:
        f.write(f"{stray}\t{SYSTEM}\t1\n")
    assert cli.main([*place, "--labels", str(labels), "--plan", str(plan_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"line 38: instruction {stray}" in err[0] and "not in the active plan" in err[0]


def test_stratified_plans_by_category_and_real_data_plans_stay_out_of_reports(
    cohort, planned, gold_cohort, tmp_path, capsys
):
    argv = ["label-plan", str(gold_cohort), "--judgments", str(planned / "correct.jsonl"), "--system", SYSTEM]
    argv += ["--judge", "j", "--budget", "30", "--design", "stratified", "--strata", "category"]
    assert cli.main([*argv, "--out", str(tmp_path / "s.tsv")]) == 0
    capsys.readouterr()
    plan = J.LabelPlan.read(tmp_path / "s.tsv")
    picked = plan.population[plan.population.selected]
    assert len(picked) == 30 and picked.stratum.value_counts().min() >= 1 and plan.strata == "category"
    real = tmp_path / "real"
    shutil.copytree(gold_cohort, real)
    (real / "SYNTHETIC").unlink()
    code = cli.main([*argv[:1], str(real), *argv[2:], "--out", str(tmp_path / "reports" / "plan.tsv")])
    err = capsys.readouterr().err
    assert code == 2 and "written under data/, never under reports/" in err
    assert not (tmp_path / "reports").exists()


# ------------------------------------------------------------------ what a judge or a jury can save


def test_a_jurys_effective_size_and_a_judges_saving_ceiling_are_their_formulas(cohort):
    _, labels, mine = cohort
    rng = np.random.default_rng(4)
    y = mine.binary_correct.to_numpy(float)
    shared = rng.normal(0, 0.2, len(y))
    p = {f"j{k}": np.clip(0.5 * y + 0.25 + shared + rng.normal(0, 0.2, len(y)), 0, 1) for k in range(3)}
    judgments = pd.concat([_verdicts(mine.instruction_id, v, judge=name) for name, v in p.items()])
    jury = J.jury_effective_size(judgments, labels)
    errors = np.array([v - y for v in p.values()])
    c = np.corrcoef(errors)
    rho = np.mean([c[0, 1], c[0, 2], c[1, 2]])
    assert jury["jury_mean_error_correlation"] == pytest.approx(rho)
    assert jury["jury_effective_size"] == pytest.approx(3 / (1 + 2 * rho)) and 1 < jury["jury_effective_size"] < 3
    ceiling = J.label_saving_ceiling(judgments, labels, judge="j0")
    r = np.corrcoef(y, p["j0"])[0, 1]
    assert ceiling["judge_label_correlation"] == pytest.approx(r)
    assert ceiling["labels_worth_factor"] == pytest.approx(1 / (1 - r**2))
    one = J.jury_effective_size(judgments[judgments.judge == "j0"], labels)
    assert one["jury_judges"] == 1 and "two judges" in one["jury_note"]


def test_notebook_06s_label_plan_section_compares_designs_writes_the_plan_under_data_and_counts_labels_saved(
    cohort, tmp_path
):
    release, labels, _ = cohort
    items = J.response_items(release)
    planted = release.planted_truth["answers"]
    iids = sorted(items.instruction_id.unique())[:60]
    answers = pd.DataFrame(
        {
            "instruction_id": iids,
            "system": "mine",
            "answer": [f"The answer is {(planted[i].get('value') or {}).get('value')}." for i in iids],
            "error": None,
        }
    )
    parameters = {
        "label_ks": [20, 40],
        "label_draws": 40,
        "label_budget_k": 20,
        "label_plan_design": "active",
        "label_plans_dir": str(tmp_path / "data" / "label-plans"),
        "judgments_dir": str(tmp_path / "judgments"),
        "judge_instructions": 2,
        "seed": 0,
        "progress": False,
    }
    with J.planted_judge(release) as judge:
        J.run_judgments(judge, "correct", items, release, tmp_path / "six.jsonl", progress=False)
        judgments = J.read_judgments(tmp_path / "six.jsonl")
        plans = J.LabelPlanDisplay.from_parameters(parameters, judge, release, answers, judgments, system="mine")
    assert set(plans.table.design) == set(J.DESIGNS) and set(plans.table.k) == {20, 40}
    assert plans.plan_path.parent == tmp_path / "data" / "label-plans" and plans.plan_path.is_file()
    assert len(plans.plan.rows) == 20 and plans.plan.system == "mine"
    # Labels saved: labels alone needed for the design's width, less the budget, from the table itself.
    t = plans.table.set_index(["design", "k", "method"]).mean_width
    expected = 20 * (t[("uniform", 20, "labels")] / t[("active", 20, "labels+judge")]) ** 2 - 20
    assert plans.labels_saved() == pytest.approx(expected)
    assert plans.findings()[0]["value"] == pytest.approx(expected) and plans.findings()[0]["unit"] == "labels"
    assert "labels worth at most" in plans.note and "under data/" in plans.note
    assert plans.plot() is not None
