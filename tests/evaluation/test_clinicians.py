"""Clinician-label analysis against the paper's numbers, hand-worked cases and independent libraries."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats import inter_rater as sm_ir
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from medalign_utils import cli, paper
from medalign_utils.data import load_release
from medalign_utils.evaluation.clinicians import (
    bradley_terry,
    check_labels,
    cohens_kappa,
    combine_raters,
    correctness_agreement,
    fleiss_kappa,
    head_to_head,
    inter_rater_tau,
    mcnemar,
    table3,
    win_matrix,
    win_rates,
)
from medalign_utils.stats import Bootstrap, kendall_tau_b_rows


def labels_frame(rows):
    return pd.DataFrame(rows, columns=["instruction_id", "system", "model_rank", "binary_correct"])


def figure2_battles(n_per_pair: int = 100) -> pd.DataFrame:
    """Rankings whose non-tied head-to-head shares equal the paper's Figure 2: each instruction is
    answered by two models only, so every pair's share is set independently."""
    rows, k = [], 0
    models = paper.MODELS
    for i, a in enumerate(models):
        for j, b in enumerate(models):
            if j <= i:
                continue
            wins_a = round(paper.FIGURE2.loc[a, b] * n_per_pair)
            for t in range(n_per_pair):
                a_wins = t < wins_a
                rows.append([f"i{k}", a, 1 if a_wins else 2, 1])
                rows.append([f"i{k}", b, 2 if a_wins else 1, 1])
                k += 1
            # A tied battle on top: must change nothing.
            rows += [[f"i{k}", a, 1, 1], [f"i{k}", b, 1, 0]]
            k += 1
    return labels_frame(rows)


def test_paper_figure2_battles_give_the_published_win_rates():
    df = figure2_battles()
    share = win_matrix(df, systems=paper.MODELS)
    published = paper.FIGURE2.to_numpy()
    mask = ~np.isnan(published)
    # Figure 2 pairs sum to 1 (0.48 / 0.52) so the constructed matrix reproduces it exactly.
    assert np.allclose(share.to_numpy()[mask], published[mask], atol=1e-9)
    t3 = table3(df, bootstrap=Bootstrap(n_resamples=50)).set_index("system").loc[paper.MODELS]
    assert np.allclose(t3.win_rate, paper.TABLE3.win_rate, atol=0.0051), t3.win_rate.tolist()


def test_ties_are_excluded_from_battles():
    df = labels_frame(
        [
            ["q1", "A", 1, 1],
            ["q1", "B", 1, 1],
            ["q1", "C", 3, 0],
            ["q2", "A", 2, 1],
            ["q2", "B", 1, 1],
            ["q2", "C", 2, 0],
        ]
    )
    share = win_matrix(df)
    # A vs B: q1 tie (excluded), q2 B wins -> A 0/1; A vs C: q1 A wins, q2 tie -> 1/1.
    assert share.loc["A", "B"] == 0.0 and share.loc["B", "A"] == 1.0
    assert share.loc["A", "C"] == 1.0 and share.loc["C", "B"] == 0.0
    assert win_rates(share.to_numpy()).tolist() == [0.5, 1.0, 0.0]


def test_models_missing_for_some_instructions_use_shared_instructions_only():
    df = labels_frame(
        [
            ["q1", "A", 1, 1],
            ["q1", "B", 2, 0],
            ["q2", "A", 2, 0],
            ["q2", "C", 1, 1],
            ["q3", "B", 1, 1],
            ["q3", "C", 2, 1],
        ]
    )
    share = win_matrix(df)
    assert share.loc["A", "B"] == 1 and share.loc["A", "C"] == 0 and share.loc["B", "C"] == 1
    problems = check_labels(df)
    assert any("lack some of the 3 models" in str(p) for p in problems)
    t3 = table3(df, bootstrap=Bootstrap(n_resamples=20)).set_index("system")
    assert t3.loc["A", "n"] == 2 and t3.loc["A", "correct_pct"] == 50


def test_nan_and_non_numeric_ranks_are_counted_not_dropped_silently():
    df = labels_frame([["q1", "A", "1", 1], ["q1", "B", "best", 1], ["q2", "A", np.nan, 0], ["q2", "B", 1, "x"]])
    t3 = table3(df, bootstrap=Bootstrap(n_resamples=20)).set_index("system")
    assert t3.loc["A", "n_rank_missing"] == 1 and t3.loc["B", "n_rank_missing"] == 1
    assert t3.loc["B", "n_correct_missing"] == 1 and t3.loc["B", "correct_pct"] == 100
    msgs = [str(p) for p in t3.attrs["problems"]]
    assert any("2 rows have no usable model_rank" in m for m in msgs)
    assert any("1 rows have no usable binary_correct" in m for m in msgs)


def test_single_rater_release_reports_no_agreement():
    df = labels_frame([["q1", "A", 1, 1], ["q1", "B", 2, 0]])
    assert inter_rater_tau(df)["n_instructions"] == 0
    assert correctness_agreement(df)["n_items"] == 0
    assert combine_raters(df, "majority").n_raters.tolist() == [1, 1]


def test_combine_raters_hand_worked():
    rows = []
    # Three reviewers of q1: ranks A: 1,2,1 ; B: 2,1,2 ; correctness A: 1,0,0 ; B: 1,1,0
    for r, (ra, rb, ca, cb) in enumerate([(1, 2, 1, 1), (2, 1, 0, 1), (1, 2, 0, 0)], start=1):
        rows += [["q1", "A", ra, ca, f"Annotator_{r}"], ["q1", "B", rb, cb, f"Annotator_{r}"]]
    df = pd.DataFrame(rows, columns=["instruction_id", "system", "model_rank", "binary_correct", "annotator_num"])
    p = combine_raters(df, "primary").set_index("system")
    assert p.loc["A", "model_rank"] == 1 and p.loc["A", "binary_correct"] == 1 and p.loc["A", "n_raters"] == 3
    m = combine_raters(df, "majority").set_index("system")
    assert m.loc["A", "binary_correct"] == 0 and m.loc["B", "binary_correct"] == 1
    assert m.loc["A", "model_rank"] == 1 and m.loc["B", "model_rank"] == 2  # mean ranks 4/3 vs 5/3
    mean = combine_raters(df, "mean").set_index("system")
    assert mean.loc["A", "model_rank"] == pytest.approx(4 / 3) and mean.loc["B", "binary_correct"] == pytest.approx(
        2 / 3
    )
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_raters(df, "median")


def test_bootstrap_cis_cover_the_planted_values(gold_cohort):
    truth = json.loads((gold_cohort / "planted_truth.json").read_text())["expected_table3"]
    t3 = table3(load_release(gold_cohort).model_responses, bootstrap=Bootstrap(n_resamples=1000)).set_index("system")
    for model in paper.MODELS:  # one containment check for all three statistics
        row = t3.loc[model]
        assert row.correct_ci_low <= truth["correct_pct"][model] <= row.correct_ci_high, model
        assert row.mean_rank_ci_low <= truth["mean_rank"][model] <= row.mean_rank_ci_high, model
        assert row.win_rate_ci_low <= truth["win_rate"][model] <= row.win_rate_ci_high, model


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    rng = np.random.default_rng(3)
    x = (rng.random(300) < 0.6).astype(float)
    df = labels_frame([[f"q{i}", "A", 1, v] for i, v in enumerate(x)] + [[f"q{i}", "B", 2, 1] for i in range(300)])
    row = table3(df, bootstrap=Bootstrap(n_resamples=4000, seed=1)).set_index("system").loc["A"]
    ref = stats.bootstrap(
        (x * 100,), np.mean, n_resamples=4000, method="percentile", random_state=2
    ).confidence_interval
    assert row.correct_ci_low == pytest.approx(ref.low, abs=1.2)
    assert row.correct_ci_high == pytest.approx(ref.high, abs=1.2)


@pytest.mark.parametrize("exact", [True, False])
def test_mcnemar_matches_statsmodels(exact):
    rng = np.random.default_rng(0)
    a = rng.random(200) < 0.6
    b = np.where(rng.random(200) < 0.8, a, ~a)
    rows = [[f"q{i}", "A", 1, int(a[i])] for i in range(200)] + [[f"q{i}", "B", 2, int(b[i])] for i in range(200)]
    res = mcnemar(labels_frame(rows), "A", "B", exact=exact)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    ref = sm_mcnemar(table, exact=exact, correction=True)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.diff_pct == pytest.approx(100 * (a.mean() - b.mean()))
    assert res.ci_low < res.diff_pct < res.ci_high


def test_mcnemar_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="no labels for model 'Z'"):
        mcnemar(labels_frame([["q1", "A", 1, 1], ["q1", "B", 2, 0]]), "A", "Z")


def test_kappas_match_statsmodels():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 2, 300)
    b = np.where(rng.random(300) < 0.75, a, 1 - a)
    table = pd.crosstab(a, b).to_numpy()
    assert cohens_kappa(a, b) == pytest.approx(sm_ir.cohens_kappa(table).kappa)
    votes = np.column_stack([a, b, np.where(rng.random(300) < 0.7, a, 1 - a)])
    counts = np.column_stack([(votes == 0).sum(1), (votes == 1).sum(1)])
    assert fleiss_kappa(counts) == pytest.approx(sm_ir.fleiss_kappa(counts))


def test_inter_rater_tau_hand_worked_and_against_scipy():
    rows = []
    ranks = {"Annotator_1": [1, 2, 3, 4], "Annotator_2": [1, 3, 2, 4], "Annotator_3": [2, 1, 3, 3]}
    for r, rk in ranks.items():
        rows += [["q1", m, rk[k], 1, r] for k, m in enumerate("ABCD")]
    df = pd.DataFrame(rows, columns=["instruction_id", "system", "model_rank", "binary_correct", "annotator_num"])
    res = inter_rater_tau(df)
    want = np.mean(
        [
            stats.kendalltau(ranks[x], ranks[y]).statistic
            for x, y in [("Annotator_1", "Annotator_2"), ("Annotator_1", "Annotator_3"), ("Annotator_2", "Annotator_3")]
        ]
    )
    assert res["mean_tau"] == pytest.approx(want) and res["n_instructions"] == 1 and res["n_rater_pairs"] == 3


def test_vectorized_tau_b_equals_scipy_on_tied_data():
    rng = np.random.default_rng(5)
    x, y = rng.integers(1, 4, (500, 6)), rng.integers(1, 5, (500, 6))
    ours = kendall_tau_b_rows(x, y)
    ref = np.array([stats.kendalltau(x[i], y[i]).statistic for i in range(500)])
    assert np.allclose(ours, ref, equal_nan=True)


def test_inter_rater_tau_recovers_the_planted_value(gold_cohort):
    truth = json.loads((gold_cohort / "planted_truth.json").read_text())["expected_inter_rater_tau"]
    res = inter_rater_tau(load_release(gold_cohort).model_responses)
    assert res["n_instructions"] == 50
    assert res["ci_low"] - 0.03 <= truth <= res["ci_high"] + 0.03


def test_bradley_terry_recovers_planted_strengths():
    rng = np.random.default_rng(2)
    strengths = np.array([0.8, 0.3, 0.0, -0.4, -0.7])
    models = list("ABCDE")
    rows, k = [], 0
    for _ in range(3000):
        i, j = rng.choice(5, 2, replace=False)
        p = 1 / (1 + np.exp(-(strengths[i] - strengths[j])))
        win = rng.random() < p
        rows += [[f"q{k}", models[i], 1 if win else 2, 1], [f"q{k}", models[j], 2 if win else 1, 1]]
        k += 1
    bt = bradley_terry(labels_frame(rows), bootstrap=Bootstrap(n_resamples=30)).set_index("system").loc[models]
    centred = strengths - strengths.mean()
    assert np.allclose(bt.bt_log_strength, centred, atol=0.12)
    assert (bt.ci_low <= bt.bt_log_strength).all() and (bt.bt_log_strength <= bt.ci_high).all()


def test_head_to_head_weighted_equals_resampled():
    rng = np.random.default_rng(4)
    rank = rng.integers(1, 4, (40, 3)).astype(float)
    idx = rng.integers(0, 40, 40)
    counts = np.bincount(idx, minlength=40)[None, :].astype(float)
    assert np.allclose(head_to_head(rank, counts)[0], head_to_head(rank[idx]), equal_nan=True)


def test_table3_cli_prints_csv(gold_cohort, capsys):
    assert cli.main(["table3", str(gold_cohort), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    df = pd.read_csv(io.StringIO(out))
    assert {"model", "n", "correct_pct", "correct_ci_low", "correct_ci_high", "win_rate", "mean_rank"} <= set(
        df.columns
    )
    assert len(df) == 6 and df.n.eq(303).all() and df.correct_pct.between(0, 100).all()


# ------------------------------------------------------------------ audit corrections (issue 13)


def reviewed(rows):
    return pd.DataFrame(
        rows, columns=["instruction_id", "system", "model_rank", "binary_correct", "annotator_num", "person_id"]
    )


def test_primary_takes_whole_rows_never_filling_from_other_reviewers():
    # q1: the primary left B's rank empty; Annotator_2 ranked B first. q2: the primary gave nothing.
    df = reviewed(
        [
            ["q1", "A", 1, 1, "Annotator_1", "p1"],
            ["q1", "B", np.nan, np.nan, "Annotator_1", "p1"],
            ["q1", "C", 2, 0, "Annotator_1", "p1"],
            ["q1", "A", 3, 0, "Annotator_2", "p1"],
            ["q1", "B", 1, 1, "Annotator_2", "p1"],
            ["q1", "C", 2, 1, "Annotator_2", "p1"],
            ["q2", "A", np.nan, np.nan, "Annotator_1", "p2"],
            ["q2", "B", np.nan, np.nan, "Annotator_1", "p2"],
            ["q2", "A", 2, 0, "Annotator_3", "p2"],
            ["q2", "B", 1, 1, "Annotator_3", "p2"],
        ]
    )
    p = combine_raters(df, "primary").set_index(["instruction_id", "system"])
    assert np.isnan(p.loc[("q1", "B"), "model_rank"]) and np.isnan(p.loc[("q1", "B"), "binary_correct"])
    assert p.loc[("q1", "A"), "model_rank"] == 1 and p.loc[("q1", "C"), "binary_correct"] == 0
    assert (
        p.loc[("q2", "A"), "model_rank"] == 2 and p.loc[("q2", "B"), "model_rank"] == 1
    )  # Annotator_3's whole ranking
    # Win rate of A: over q1 A beat C (B unranked: no battle); over q2 A lost to B.
    share = win_matrix(df).loc["A"]
    assert share["C"] == 1.0 and share["B"] == 0.0


def test_majority_reranks_only_instructions_several_reviewers_combined():
    df = reviewed(
        [
            ["q1", "A", 1, 1, "Annotator_1", "p"],
            ["q1", "B", 2.5, 1, "Annotator_1", "p"],
            ["q1", "C", 2.5, 0, "Annotator_1", "p"],
            ["q1", "D", 4, 0, "Annotator_1", "p"],
            ["q2", "A", 1, 1, "Annotator_1", "p"],
            ["q2", "B", 2, 1, "Annotator_1", "p"],
            ["q2", "A", 2, 1, "Annotator_2", "p"],
            ["q2", "B", 1, 0, "Annotator_2", "p"],
            ["q2", "A", 1, 0, "Annotator_3", "p"],
            ["q2", "B", 2, 0, "Annotator_3", "p"],
        ]
    )
    m = combine_raters(df, "majority").set_index(["instruction_id", "system"]).model_rank
    assert m.loc["q1"].tolist() == [1, 2.5, 2.5, 4]  # single reviewer: the release's ranks as given
    assert m.loc[("q2", "A")] == 1 and m.loc[("q2", "B")] == 2  # mean ranks 4/3 vs 5/3, re-ranked


def test_win_rate_is_the_unweighted_mean_of_head_to_head_shares_not_pooled_wins():
    rows = []
    for k in range(10):  # A beats B 9 times out of 10
        rows += [[f"b{k}", "A", 1 if k < 9 else 2, 1], [f"b{k}", "B", 2 if k < 9 else 1, 1]]
    for k in range(2):  # A loses both battles with C
        rows += [[f"c{k}", "A", 2, 1], [f"c{k}", "C", 1, 1]]
    wr = table3(labels_frame(rows), min_n=1, bootstrap=Bootstrap(n_resamples=20)).set_index("system").win_rate
    assert wr["A"] == pytest.approx((0.9 + 0.0) / 2)  # pooled wins / battles would give 9 / 12 = 0.75
    assert wr["B"] == pytest.approx(0.1) and wr["C"] == pytest.approx(1.0)


def test_bradley_terry_zero_win_model_stays_finite_and_matches_a_penalised_fit():
    from scipy.optimize import minimize

    from medalign_utils.evaluation.clinicians import fit_bradley_terry

    wins = np.array([[0, 6, 4], [2, 0, 5], [0, 0, 0]], float)  # C never wins
    s = fit_bradley_terry(wins)

    def neg_log_posterior(x):  # likelihood x one virtual game (half a win) against strength 1
        ll = sum(wins[i, j] * (x[i] - np.logaddexp(x[i], x[j])) for i in range(3) for j in range(3) if i != j)
        ll += sum(0.5 * (x[i] - np.logaddexp(x[i], 0)) + 0.5 * (0 - np.logaddexp(x[i], 0)) for i in range(3))
        return -ll

    ref = minimize(neg_log_posterior, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    assert np.allclose(s, ref - ref.mean(), atol=1e-6)
    rows = []
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        for k in range(int(wins[a, b] + wins[b, a])):
            win_a = k < wins[a, b]
            rows += [[f"{a}{b}{k}", "ABC"[a], 1 if win_a else 2, 1], [f"{a}{b}{k}", "ABC"[b], 2 if win_a else 1, 1]]
    bt = bradley_terry(labels_frame(rows), bootstrap=Bootstrap(n_resamples=50)).set_index("system")
    assert np.isfinite(bt[["bt_log_strength", "ci_low", "ci_high"]].to_numpy()).all()
    assert ((bt.p_beat_average > 0) & (bt.p_beat_average < 1)).all() and bt.p_beat_average["C"] < 0.2


def test_small_n_model_gets_a_wilson_interval_and_is_not_ranked_first():
    from statsmodels.stats.proportion import proportion_confint

    rows = [[f"q{i}", "A", 1 + (i % 2), int(i % 3 > 0)] for i in range(40)]
    rows += [[f"q{i}", "B", 2 - (i % 2), int(i % 4 > 0)] for i in range(40)]
    rows += [["q0", "C", 0.5, 1]]  # one response, ranked best
    t3 = table3(labels_frame(rows), min_n=10, bootstrap=Bootstrap(n_resamples=200))
    assert t3.system.tolist()[-1] == "C" and bool(t3.set_index("system").low_n["C"])
    c = t3.set_index("system").loc["C"]
    lo, hi = proportion_confint(1, 1, 0.05, method="wilson")
    assert c.correct_ci_low == pytest.approx(100 * lo) and c.correct_ci_high == pytest.approx(100 * hi)
    assert np.isnan(c.win_rate_ci_low) and np.isnan(c.mean_rank_ci_high)
    assert any("model C has 1 labelled responses" in str(p) for p in t3.attrs["problems"])


def test_bootstrap_by_patient_resamples_whole_patients():
    from medalign_utils.stats import bootstrap_counts

    clusters = np.array([0, 0, 0, 1, 2, 2])
    w = bootstrap_counts(6, 500, 0, clusters)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 4] == w[:, 5]).all()  # instructions of a patient move together
    assert set(np.unique(w.sum(1) - (w[:, 0] + w[:, 3] + w[:, 4]))) <= set(range(0, 10))
    # Instructions clustered in few patients: the patient bootstrap's CI is the wider one.
    rows = [[f"q{p}_{k}", "A", 1, int(p % 2)] for p in range(12) for k in range(8)]
    rows += [[f"q{p}_{k}", "B", 2, 1] for p in range(12) for k in range(8)]
    df = labels_frame(rows).assign(person_id=lambda d: d.instruction_id.str.split("_").str[0])
    by_ins = table3(df, bootstrap=Bootstrap(n_resamples=500)).set_index("system").loc["A"]
    by_pat = table3(df, bootstrap=Bootstrap(n_resamples=500, unit="patient")).set_index("system").loc["A"]
    assert by_pat.correct_ci_high - by_pat.correct_ci_low > 1.5 * (by_ins.correct_ci_high - by_ins.correct_ci_low)
    assert "patients" in table3(df, bootstrap=Bootstrap(n_resamples=20, unit="patient")).attrs["settings"]["ci"]


def test_fleiss_is_the_agreement_figure_over_rotating_slots(gold_cohort):
    responses = load_release(gold_cohort).model_responses
    agreement = correctness_agreement(responses)
    d = responses.assign(binary_correct=pd.to_numeric(responses.binary_correct))
    multi = d.groupby("instruction_id").annotator_num.nunique()
    wide = d[d.instruction_id.isin(multi[multi == 3].index)].pivot_table(
        index=["instruction_id", "system"], columns="annotator_num", values="binary_correct"
    )
    counts = np.column_stack([(wide == 0).sum(axis=1), (wide == 1).sum(axis=1)])
    assert agreement["fleiss_kappa"] == pytest.approx(sm_ir.fleiss_kappa(counts), abs=1e-12)
    assert agreement["n_raters"] == 3


def test_table3_and_table4_cli_equal_an_independent_primary_whole_row_computation(gold_cohort, tmp_path, capsys):
    import shutil

    from rouge_score import rouge_scorer

    release_dir = tmp_path / "rel"
    shutil.copytree(gold_cohort, release_dir)
    path = release_dir / "clinician-reviewed-model-responses.tsv"
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    multi = df.groupby("instruction_id").annotator_num.nunique()
    three = multi[multi == 3].index[:20]
    assert len(three) == 20
    # The primary leaves some labels empty on three-reviewer instructions.
    holes = df.instruction_id.isin(three) & (df.annotator_num == "Annotator_1") & df.model_name.isin(["gpt4_2k"])
    df.loc[holes, "model_rank"] = ""
    df.loc[holes & df.instruction_id.isin(three[:10]), "binary_correct"] = ""
    df.to_csv(path, sep="\t", index=False)

    # Independent: Annotator_1's whole rows (every instruction here has its Annotator_1 rows).
    prim = df[df.annotator_num == "Annotator_1"].copy()
    prim["rank"] = pd.to_numeric(prim.model_rank.replace("", np.nan))
    prim["correct"] = pd.to_numeric(prim.binary_correct.replace("", np.nan))
    assert cli.main(["table3", str(release_dir), "--resamples", "50", "--quiet"]) == 0
    t3 = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("model")  # the CSV keeps its published name
    models = sorted(prim.model_name.unique())  # the raw table: the release's own column name
    ranks = prim.pivot(index="instruction_id", columns="model_name", values="rank")
    for m in models:
        assert t3.loc[m, "correct_pct"] == pytest.approx(100 * prim[prim.model_name == m].correct.mean(), abs=1e-4)
        assert t3.loc[m, "mean_rank"] == pytest.approx(prim[prim.model_name == m]["rank"].mean(), abs=1e-4)
        shares = []
        for o in models:
            if o != m:
                both = ranks[[m, o]].dropna()
                w, lo = (both[m] < both[o]).sum(), (both[m] > both[o]).sum()
                shares.append(w / (w + lo))
        assert t3.loc[m, "win_rate"] == pytest.approx(np.mean(shares), abs=1e-4)

    assert cli.main(["table4", str(release_dir), "--metrics", "rougeL", "--resamples", "50", "--quiet"]) == 0
    t4 = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("metric")
    refs = pd.read_csv(release_dir / "clinician-instruction-responses.tsv", sep="\t", dtype=str)
    ref = refs[refs.annotator_num == "Annotator_1"].set_index("instruction_id").clinician_response

    class Whitespace:
        tokenize = staticmethod(str.split)

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=Whitespace())
    taus = []
    for iid, part in prim.groupby("instruction_id"):
        part = part.dropna(subset=["rank"])
        scores = [scorer.score(ref[iid], h)["rougeL"].fmeasure for h in part.model_response]
        tau = stats.kendalltau(scores, -part["rank"]).statistic
        if not np.isnan(tau):
            taus.append(tau)
    assert t4.loc["rougeL", "mean_tau"] == pytest.approx(np.mean(taus), abs=1e-4)
    assert t4.loc["rougeL", "n_instructions"] == len(taus)


# ------------------------------------------------------------------ the bootstrap unit, everywhere


def _each_instruction_twice(responses: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(once, twice): every instruction its own patient, then each also copied under a second id of
    the same patient. A bootstrap by patient of `twice` draws exactly what a bootstrap by instruction
    of `once` draws (the copies move together, and '!' sorts them right after their original)."""
    once = responses.assign(instruction_id=responses.instruction_id.astype(str))
    once = once.assign(person_id="p" + once.instruction_id)
    twice = pd.concat([once, once.assign(instruction_id=once.instruction_id + "!")], ignore_index=True)
    return once, twice


def test_every_ci_honours_the_bootstrap_unit(tiny_cohort):
    from medalign_utils.evaluation.clinicians import breakdown, head_to_head_ci
    from medalign_utils.evaluation.correlation import table4
    from medalign_utils.evaluation.judge import judge_win_rates

    once, twice = _each_instruction_twice(load_release(tiny_cohort).model_responses)
    a, b = sorted(once.system.unique())[:2]
    # `once` by patient (each instruction its own patient) is `twice` by patient: the same draws
    for by_patient, by_instruction, unit in ((twice, once, "patient"),):
        kw = {"bootstrap": Bootstrap(n_resamples=300, seed=3, unit=unit)}
        assert head_to_head_ci(by_patient, a, b, **kw) == pytest.approx(head_to_head_ci(by_instruction, a, b, **kw))
        prior = 2.0 if unit == "patient" else 1.0  # every battle counted twice: the prior doubled keeps the fit
        bt_p = bradley_terry(by_patient, **kw, prior_games=prior).set_index("system")
        bt_i = bradley_terry(by_instruction, **kw).set_index("system")
        assert np.allclose(bt_p.loc[bt_i.index, ["ci_low", "ci_high"]], bt_i[["ci_low", "ci_high"]], atol=1e-6)
        tau_p = inter_rater_tau(by_patient, **kw)
        tau_i = inter_rater_tau(by_instruction, **kw)
        assert (tau_p["ci_low"], tau_p["ci_high"]) == pytest.approx((tau_i["ci_low"], tau_i["ci_high"]), nan_ok=True)
        groups = lambda d: pd.Series("all", index=d.instruction_id.unique())  # noqa: E731
        br_p = breakdown(by_patient, groups(by_patient), **kw)
        br_i = breakdown(by_instruction, groups(by_instruction), **kw)
        assert np.allclose(br_p.correct_ci_low, br_i.correct_ci_low) and np.allclose(
            br_p.correct_ci_high, br_i.correct_ci_high
        )
        ranks = lambda d: d[["instruction_id", "system"]].assign(  # noqa: E731
            metric="m", score=-d.model_rank.astype(float) + 0.1 * (d.system == a)
        )
        labels_p, labels_i = combine_raters(by_patient), combine_raters(by_instruction)
        t4_p = table4(ranks(labels_p), labels_p, **kw)
        t4_i = table4(ranks(labels_i), labels_i, **kw)
        assert t4_p[["ci_low", "ci_high"]].to_numpy() == pytest.approx(t4_i[["ci_low", "ci_high"]].to_numpy())
    # With real clustering (copies of one patient) the patient CI is what the deduplicated data gives,
    # and narrower CIs by instruction would have been overconfident.
    wide = head_to_head_ci(twice, a, b, bootstrap=Bootstrap(n_resamples=300, seed=3, unit="patient"))
    narrow = head_to_head_ci(twice, a, b, bootstrap=Bootstrap(n_resamples=300, seed=3))
    assert wide[1] - wide[0] > narrow[1] - narrow[0]
    assert callable(judge_win_rates)


def test_breakdown_min_cell_counts_patients_not_instructions(tiny_cohort):
    from medalign_utils.evaluation.clinicians import breakdown

    responses = load_release(tiny_cohort).model_responses
    labels = combine_raters(responses)
    per_patient = labels.drop_duplicates("instruction_id").groupby("person_id").instruction_id.nunique()
    assert per_patient.min() >= 2  # every patient has several instructions: counting them would pass
    groups = labels.drop_duplicates("instruction_id").set_index("instruction_id").person_id
    out = breakdown(labels, groups, min_cell=2, bootstrap=Bootstrap(n_resamples=50))  # each group is one patient
    assert (out.n_patients == 1).all() and (out.n_instructions >= 2).all()
    assert out.correct_pct.isna().all()  # one patient (however many instructions) is below 2
    with pytest.raises(ValueError, match="person_id"):
        breakdown(labels.drop(columns="person_id"), groups, min_cell=2)


def test_bradley_terry_converges_to_the_maximum_posterior_found_independently():
    """Iterated to a tolerance, not a fixed count: the MM fit equals a generic optimiser's maximum of
    the same log posterior, and stopping it early warns."""
    from scipy.optimize import minimize

    from medalign_utils.evaluation.clinicians import bradley_terry_gradient, fit_bradley_terry

    rng = np.random.default_rng(5)
    strength = np.array([2.0, 1.0, 0.0, -0.5, -1.5, -3.0])  # far apart: MM converges slowly
    p = 1 / (1 + np.exp(-(strength[:, None] - strength[None, :])))
    wins = rng.binomial(40, p) * (1 - np.eye(6))
    wins = np.triu(wins) + np.tril(40 - wins.T, -1) * (1 - np.eye(6))

    def neg_log_posterior(s):
        diff = s[:, None] - s[None, :]
        loglik = (wins * -np.logaddexp(0, -diff)).sum()
        prior = (0.5 * -np.logaddexp(0, -s) + 0.5 * -np.logaddexp(0, s)).sum()  # one virtual game vs strength 1
        return -(loglik + prior)

    ref = minimize(neg_log_posterior, np.zeros(6), method="BFGS", options={"gtol": 1e-10}).x
    fit = fit_bradley_terry(wins)
    assert np.allclose(fit, ref - ref.mean(), atol=1e-5)
    uncentred = fit - fit.mean() + ref.mean()
    assert np.abs(bradley_terry_gradient(wins, uncentred)).max() < 1e-4
    with pytest.warns(RuntimeWarning, match="stopped after 1 iterations"):
        fit_bradley_terry(wins, max_iter=1)


def test_bradley_terry_fits_a_stack_of_resamples_each_to_its_own_maximum():
    """The bootstrap's fits, all at once: each equals a generic optimiser's maximum of its own log
    posterior, including resamples where a model never wins or a pair never meets."""
    from scipy.optimize import minimize

    from medalign_utils.evaluation.clinicians import fit_bradley_terry, fit_bradley_terry_many

    rng = np.random.default_rng(11)
    strength = np.array([1.5, 0.5, 0.0, -1.0, -2.5])
    p = 1 / (1 + np.exp(-(strength[:, None] - strength[None, :])))
    stack = []
    for games in (1, 3, 12, 40):
        wins = rng.binomial(games, p) * (1 - np.eye(5))
        stack.append(np.triu(wins) + np.tril(games - wins.T, -1) * (1 - np.eye(5)))
    stack.append(stack[-1] * np.array([1, 1, 1, 1, 0])[:, None])  # the last model never wins
    stack.append(np.zeros((5, 5)))  # no battles: every strength is the reference's
    stack = np.array(stack, float)

    def neg_log_posterior(s, wins):
        loglik = (wins * -np.logaddexp(0, -(s[:, None] - s[None, :]))).sum()
        return -(loglik + (0.5 * -np.logaddexp(0, -s) + 0.5 * -np.logaddexp(0, s)).sum())

    fits = fit_bradley_terry_many(stack)
    for wins, fit in zip(stack, fits, strict=True):
        ref = minimize(neg_log_posterior, np.zeros(5), args=(wins,), method="BFGS", options={"gtol": 1e-10}).x
        assert np.allclose(fit, ref - ref.mean(), atol=1e-5)
        assert np.allclose(fit_bradley_terry(wins), fit, atol=1e-12)  # one at a time: the same
    assert np.allclose(fits[-1], 0)
    with pytest.raises(ValueError, match="fits x models x models"):
        fit_bradley_terry_many(stack[0])
