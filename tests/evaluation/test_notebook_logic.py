"""What notebooks 04-06 used to compute in their cells, now in the package: each checked against an
independent computation or a planted value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medalign_utils import Judge, paper
from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians, correlation
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge import planted_judge
from medalign_utils.stats import Bootstrap


@pytest.fixture(scope="module")
def gold(gold_cohort):
    release = load_release(gold_cohort)
    return release, J.response_items(release), clinicians.combine_raters(release.model_responses, "primary")


def test_raters_combined_once_give_the_tables_that_combining_inside_gave(gold):
    release, _, _ = gold
    responses = release.model_responses
    for how in ("primary", "majority", "mean"):
        labels = clinicians.combine_raters(responses, how)
        assert labels.attrs["combined_by"] == how and labels.person_id.notna().all()
        once = clinicians.table3(labels, bootstrap=Bootstrap(n_resamples=50, seed=1))
        inside = clinicians.table3(responses, combine=how, bootstrap=Bootstrap(n_resamples=50, seed=1))
        pd.testing.assert_frame_equal(once, inside)
        assert once.attrs["settings"]["combine"] == how
        by_patient = clinicians.table3(labels, bootstrap=Bootstrap(n_resamples=50, seed=1, unit="patient"))
        pd.testing.assert_frame_equal(
            by_patient,
            clinicians.table3(responses, combine=how, bootstrap=Bootstrap(n_resamples=50, seed=1, unit="patient")),
        )
        pd.testing.assert_frame_equal(clinicians.win_matrix(labels), clinicians.win_matrix(responses, combine=how))


def test_mcnemar_table_holds_one_row_per_present_pair_with_the_discordant_counts(gold):
    release, _, labels = gold
    models = sorted(labels.system.unique())
    table = clinicians.mcnemar_table(labels, [(models[0], models[1]), ("absent", models[0])])
    assert len(table) == 1  # the pair with an absent system is left out
    row = table.iloc[0]
    wide = labels.pivot(index="instruction_id", columns="system", values="binary_correct").dropna(
        subset=[models[0], models[1]]
    )
    a, b = wide[models[0]] >= 0.5, wide[models[1]] >= 0.5
    assert row["a correct, b not"] == int((a & ~b).sum()) and row["b correct, a not"] == int((~a & b).sum())
    assert row["difference (points)"] == pytest.approx(100 * (a.mean() - b.mean()))


def test_agreement_summary_is_the_inter_rater_tau_and_kappas(gold):
    release, _, _ = gold
    responses = release.model_responses
    summary = clinicians.agreement_summary(responses, planted_tau=0.5, bootstrap=Bootstrap(n_resamples=100, seed=0))
    tau = clinicians.inter_rater_tau(responses, bootstrap=Bootstrap(n_resamples=100, seed=0))
    kappa = clinicians.correctness_agreement(responses)
    assert summary.value.iloc[0] == tau["mean_tau"] and summary.ci_low.iloc[0] == tau["ci_low"]
    assert summary.value.iloc[1] == kappa["fleiss_kappa"] and summary.value.iloc[2] == kappa["mean_cohens_kappa"]
    assert summary.paper.iloc[0] == paper.INTER_RATER_TAU and summary.planted.iloc[0] == 0.5


def test_tables_beside_the_papers_and_systems_in_its_order(gold):
    release, _, labels = gold
    t3 = clinicians.table3(labels, bootstrap=Bootstrap(n_resamples=20))
    beside = paper.beside_table3(t3)
    row = beside.set_index("system").loc["gpt4_32k"]
    assert row.paper_correct_pct == paper.TABLE3.set_index("system").correct_pct["gpt4_32k"]
    known = paper.TABLE4.metric.iloc[0]
    t4 = pd.DataFrame({"metric": [known, "new"], "mean_tau": [0.3, 0.1]})
    assert beside_tau(t4) == [paper.TABLE4.set_index("metric").mean_tau[known], None]
    assert paper.in_paper_order(["x", *reversed(paper.MODELS)]) == paper.MODELS
    assert paper.in_paper_order(["b", "a"]) == ["a", "b"]


def beside_tau(t4):
    return [None if np.isnan(v) else v for v in paper.beside_table4(t4).paper_tau]


def test_generated_systems_are_one_system_per_model_strategy_and_context(gold):
    release, _, _ = gold
    ref = release.references.instruction_id.iloc[0]
    results = pd.DataFrame(
        {
            "instruction_id": [ref, ref, "no-reference"],
            "system": ["m", "m", "m"],
            "strategy": ["recent", "retrieval", "recent"],
            "context": [2048, 2048, 2048],
            "answer": ["a", "b", "c"],
            "error": [None, None, None],
        }
    )
    gen = correlation.generated_systems(results, release.references)
    assert gen.system.tolist() == ["m · recent @2048", "m · retrieval @2048"]
    assert gen.model_response.tolist() == ["a", "b"]


def test_pairwise_summary_counts_each_judges_agreement_and_bias(gold, tmp_path):
    release, items, labels = gold
    pairs = J.pairwise_items(items[items.instruction_id.isin(items.instruction_id.unique()[:6])])
    with planted_judge(release) as judge:
        J.run_judgments(judge, "pairwise", pairs, release, tmp_path / "p.jsonl", progress=False)
    judgments = J.read_judgments(tmp_path / "p.jsonl")
    summary = J.pairwise_summary(judgments, labels).set_index("judge")
    battles = J.pairwise_battles(judgments, judge="planted")
    assert summary.loc["planted", "incomplete_pairs"] == battles.attrs["n_incomplete"]
    for key, value in {**J.pairwise_agreement(battles, labels), **J.position_bias(battles)}.items():
        assert summary.loc["planted", key] == pytest.approx(value, nan_ok=True)


def test_a_new_system_is_placed_by_one_call_and_the_oracle_wins(gold, tmp_path):
    release, items, labels = gold
    planted = release.planted_truth
    ids = items.instruction_id.unique()[:20]
    answers = pd.DataFrame(
        {
            "instruction_id": ids,
            "system": "oracle",
            "answer": [f"The answer is {(planted['answers'][i].get('value') or {}).get('value')}." for i in ids],
            "error": None,
        }
    )
    assert J.system_to_place(answers, items) == "oracle" and J.system_to_place(answers, items, "other") is None
    assert J.system_to_place(pd.DataFrame(), items) is None
    models = paper.in_paper_order(labels.system)
    with planted_judge(release) as judge:
        table = J.place_new_system(
            judge,
            items,
            answers,
            "oracle",
            release,
            tmp_path / "placement.jsonl",
            systems=models,
            limit=10,
            progress=False,
            bootstrap=Bootstrap(n_resamples=50),
        )
    assert table.attrs["n_instructions"] == 10
    assert set(table.system) == {*models, "new:oracle"}
    graded = [i for i in ids[:10] if (planted["answers"][i].get("value") or {}).get("value")]
    if graded:  # stating the planted value wins against the six
        assert table.set_index("system").loc["new:oracle", "judge_win_rate"] > 0.5


def test_the_planted_judge_is_a_judge_served_on_loopback_for_the_block(gold):
    release, _, _ = gold
    with planted_judge(release, name="p", batch_size=5, price_prompt_per_1k=1.0) as judge:
        assert isinstance(judge, Judge) and judge.name == "p" and judge.backend.batch_size == 5
        assert judge.backend.base_url.startswith("http://127.0.0.1:") and judge.price_prompt_per_1k == 1.0
        port = int(judge.backend.base_url.rsplit(":", 1)[1].split("/")[0])
    import socket

    with pytest.raises(ConnectionRefusedError):  # the loopback server is gone with the block
        socket.create_connection(("127.0.0.1", port), timeout=2)
