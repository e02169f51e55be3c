"""What a clinician and a statistician read: findings with their n and a plain reading, numbers
rounded by meaning, one name per system, no index columns or reprs, breakdown charts in a reader's
order with their CIs, plots whose labels do not collide, and every interval on page 04 what it says
it is (with simulations where an interval is new)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from medalign_utils import paper, plots
from medalign_utils.data import open_release
from medalign_utils.evaluation import BreakdownDisplay, Table3Display, clinicians
from medalign_utils.evaluation.judge.displays import judge_metric_label
from medalign_utils.reports.findings import (
    FINDING_MIME,
    Finding,
    compare_findings,
    format_value,
    plain_reading,
    record_finding,
)
from medalign_utils.reports.tables import readable
from medalign_utils.stats import Bootstrap, intraclass_correlation


@pytest.fixture(scope="module")
def labels(gold_cohort):
    release = open_release(gold_cohort)
    return clinicians.combine_raters(release.model_responses, "primary")


# ------------------------------------------------------------------ item 4: findings


def test_a_difference_and_a_tau_come_with_a_plain_reading():
    assert plain_reading(6.0, (-3.7, 15.7), null=0.0) == "the interval includes 0: no evidence of a difference"
    assert plain_reading(6.0, (1.2, 15.7), null=0.0).startswith("the interval lies above 0: evidence of")
    tau = plain_reading(-0.2, (-0.5, -0.1), null=0.0, about="agreement beyond chance")
    assert tau == "the interval lies below 0: evidence of agreement beyond chance"
    assert plain_reading(0.07, (-0.2, 0.33), n_instructions=2, null=0.0) == "too few instructions to say (n = 2)"
    assert plain_reading(0.5, None) == ""  # no interval, no reading made up


def test_numbers_are_rounded_by_meaning_and_never_nan():
    assert Finding("win rate", 0.42, 0.368, 0.471).text() == "0.420 (95% CI 0.368–0.471)"  # as Table 3 prints it
    assert Finding("correct %", 56.3758, 48.3, 64.4, unit="%").text() == "56.4 % (95% CI 48.3–64.4)"
    assert Finding("lost", 6.04, -3.667, 15.747, unit="points").text() == "6.0 points (95% CI -3.7–15.7)"
    assert Finding("records", 3.0, unit="").text() == "3"
    assert format_value(float("nan")) == "n/a" and format_value(1234.5) == "1,234.5"
    shown = Finding("x", 0.5, n_instructions=149, n_patients=24)
    assert shown.n_text() == "n = 149 instructions, 24 patients"
    assert "n = 149 instructions, 24 patients" in repr(shown)


def test_record_finding_keeps_n_and_reading_for_the_index(capsys):
    record_finding("diff", 6.04, ci=(-3.7, 15.7), unit="points", n_instructions=149, null=0.0)
    line = capsys.readouterr().out
    assert "n = 149 instructions" in line and "no evidence of a difference" in line
    few = Finding(
        "tau", 0.07, -0.2, 0.33, n_instructions=2, reading=plain_reading(0.07, (-0.2, 0.33), n_instructions=2)
    )
    lines = compare_findings([{**few.__dict__}], [{**few.__dict__, "value": 0.1}])
    assert "[n = 2 instructions]" in lines[0]


def test_table3_findings_lead_with_correct_pct_and_carry_n_counted_independently(labels):
    t3 = Table3Display.from_labels(labels, bootstrap=Bootstrap(100, 0, "patient"))
    found = t3.findings()
    leads = [f for f in found if f["lead"]]
    assert [f["name"].split(": ")[0] for f in leads] == ["Table 3 correct %"] * len(leads) == ["Table 3 correct %"] * 6
    for f in found:
        system = next(k for k, v in paper.MODEL_LABELS.items() if f["name"].endswith(": " + v))
        mine = labels[(labels.system == system) & labels.binary_correct.notna()]
        assert f["n_instructions"] == mine.instruction_id.nunique()
        assert f["n_patients"] == mine.person_id.nunique()  # a patient bootstrap: patients are the unit
    by_instruction = Table3Display.from_labels(labels, bootstrap=Bootstrap(100, 0, "instruction")).findings()
    assert all(f["n_patients"] is None for f in by_instruction)


def test_judge_rows_are_named_for_a_reader():
    assert judge_metric_label("judge:planted:medhelm-expected") == (
        "planted test judge, MedHELM jury score (probability-weighted)"
    )
    assert judge_metric_label("judge:smollm2:rubric") == "smollm2, rubric score"
    assert judge_metric_label("jury:a+b:correct") == "jury of a, b, correct-or-not verdict"
    assert judge_metric_label("rougeL") == "rougeL"


# ------------------------------------------------------------------ item 5: page 04's intervals


def test_fleiss_kappa_ci_holds_the_point_estimate_and_covers_a_planted_kappa():
    """Planted raters: each item's truth is correct with p = 0.5 and each of three raters reports it
    with accuracy a, so Fleiss' kappa of the population is (2a - 1)^2. The bootstrap interval over
    instructions covers it in about 95% of cohorts of 40 instructions x 6 items."""
    accuracy, n_instructions, worlds = 0.85, 40, 200
    truth_kappa = (2 * accuracy - 1) ** 2
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for w in range(worlds):
        truth = rng.random((n_instructions, 6)) < 0.5
        rows = []
        for rater in range(3):
            said = np.where(rng.random(truth.shape) < accuracy, truth, ~truth)
            for i in range(n_instructions):
                for j in range(6):
                    rows.append((f"i{i}", f"s{j}", f"Annotator_{rater + 1}", float(said[i, j]), f"p{i // 2}"))
        df = pd.DataFrame(rows, columns=["instruction_id", "system", "annotator_num", "binary_correct", "person_id"])
        lo, hi = clinicians.fleiss_kappa_ci(df, bootstrap=Bootstrap(400, w))
        if w == 0:
            point = clinicians.correctness_agreement(df)["fleiss_kappa"]
            assert lo < point < hi
        covered += lo <= truth_kappa <= hi
        widths.append(hi - lo)
    assert 0.91 <= covered / worlds <= 0.99, covered / worlds
    assert 0.05 < np.mean(widths) < 0.4


def test_intraclass_correlation_matches_the_anova_formula_and_pingouin():
    pingouin = pytest.importorskip("pingouin")
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(12), 5)
    values = rng.normal(size=12)[clusters] * 0.8 + rng.normal(size=60)
    data = pd.DataFrame({"target": clusters, "rater": np.tile(np.arange(5), 12), "score": values})
    icc1 = pingouin.intraclass_corr(data, targets="target", raters="rater", ratings="score").set_index("Type")
    assert intraclass_correlation(values, clusters) == pytest.approx(icc1.loc["ICC(1,1)", "ICC"], abs=1e-9)


def test_a_patient_interval_is_narrower_exactly_when_a_patients_instructions_offset_each_other():
    """Planted within-patient structure: when a patient's instructions alternate between a system's
    best and worst answers (negative intra-patient correlation), resampling patients gives a narrower
    win-rate interval than resampling instructions; when they move together, a wider one."""
    rng = np.random.default_rng(2)
    systems = list(paper.MODELS)
    widths = {}
    for structure in ("offsetting", "together"):
        rows = []
        for p in range(30):
            for i in range(6):
                good = (i % 2 == 0) if structure == "offsetting" else (p % 2 == 0)
                order = list(rng.permutation(systems[1:]))
                ranking = [systems[0], *order] if good else [*order, systems[0]]
                for rank, system in enumerate(ranking, start=1):
                    rows.append((f"p{p}-i{i}", f"p{p}", system, float(rank), float(rank <= 3)))
        lab = pd.DataFrame(rows, columns=["instruction_id", "person_id", "system", "model_rank", "binary_correct"])
        icc = clinicians.patient_correlation(lab).set_index("system").icc_net_wins[systems[0]]
        assert (icc < -0.1) if structure == "offsetting" else (icc > 0.5), (structure, icc)
        for unit in ("instruction", "patient"):
            t = clinicians.table3(lab, bootstrap=Bootstrap(500, 0, unit)).set_index("system").loc[systems[0]]
            widths[structure, unit] = t.win_rate_ci_high - t.win_rate_ci_low
    assert widths["offsetting", "patient"] < 0.7 * widths["offsetting", "instruction"]
    assert widths["together", "patient"] > 1.5 * widths["together", "instruction"]


def test_page_04_tables_say_what_each_interval_is(labels, gold_cohort):
    release = open_release(gold_cohort)
    summary = clinicians.agreement_summary(release.model_responses, bootstrap=Bootstrap(200, 0))
    fleiss = summary.set_index("statistic").filter(like="Fleiss", axis=0).iloc[0]
    assert fleiss.ci_low < fleiss.value < fleiss.ci_high and fleiss.interval.startswith("bootstrap over")
    cohen = summary.set_index("statistic").filter(like="Cohen", axis=0).iloc[0]
    assert np.isnan(cohen.ci_low) and cohen.interval.startswith("none")
    html = readable(summary, caption="agreement (95% CI)", na="—").to_html()
    assert "not in the paper" not in html
    table = clinicians.mcnemar_table(labels, [("gpt4_32k", "gpt4_2k")])
    assert table.interval.iloc[0].startswith("Wald")
    t3 = Table3Display.from_labels(labels, bootstrap=Bootstrap(100, 0, "patient"), planted=release.planted_truth)
    note = t3.patient_note()
    assert "intra-patient correlation" in note and "chance" in note


# ------------------------------------------------------------------ items 6-8: breakdowns, names, rounding


def test_breakdowns_show_groups_in_order_with_their_intervals_and_counts(labels, gold_cohort):
    from medalign_utils.data import describe

    bands = pd.Series(
        np.array(describe.LENGTH_LABELS)[np.arange(labels.instruction_id.nunique()) % 4][::-1],
        index=sorted(labels.instruction_id.unique()),
    )
    by = BreakdownDisplay.from_labels(labels, bands, by="EHR length (cl100k tokens)", order=describe.LENGTH_LABELS,
                                      bootstrap=Bootstrap(100, 0))  # fmt: skip
    assert by.order == describe.LENGTH_LABELS and list(by.counts().index) == describe.LENGTH_LABELS
    assert by.counts().index.name == "EHR length (cl100k tokens)"
    assert list(by.counts().columns[:6]) == list(paper.MODELS)
    cell = by.rates().iloc[0, 0]
    assert "(" in cell and "–" in cell  # "61.4 (52.1–70.6)"
    fig = by.plot()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == describe.LENGTH_LABELS
    assert ax.get_xlabel() == "EHR length (cl100k tokens)" and "95% CI" in ax.get_ylabel()
    errorbars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(errorbars) == 6
    n_labels = [t for t in ax.texts if t.get_text().isdigit()]
    assert len(n_labels) == 24 and min(t.get_fontsize() for t in n_labels) >= 7
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend.x0 >= ax.get_window_extent(fig.canvas.get_renderer()).x1  # off the data
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [paper.MODEL_LABELS[m] for m in paper.MODELS]


def test_readable_tables_name_systems_once_round_by_meaning_and_drop_positions():
    pivot = pd.DataFrame({"gpt4_32k": [47.3684, 46.0], "vicuna7b_2k": [12.5, 4.1667]}, index=["FEMALE", "MALE"])
    html = readable(pivot.rename_axis("sex"), caption="correct % by sex").to_html()
    assert "GPT-4 (32k)" in html and "gpt4_32k" not in html and "47.4" in html and "47.368" not in html
    assert ">46.0<" in html and ">4.2<" in html
    rows = pd.DataFrame({"system": ["gpt4_2k", "mpt7b_instruct_2k"], "answer": ["a", "b"]}, index=[7, 3])
    html = readable(rows).to_html()
    assert "GPT-4 (2k)" in html and "MPT-7B-Instruct (2k)" in html and ">7<" not in html  # no shuffled positions
    stats = pd.Series({"generated": 20.0, "failed": 0.0, "seconds": 49.61, "tokens_per_s": 18.47, "share": 0.4217})
    html = readable(stats.rename("value")).to_html()
    assert ">20<" in html and ">0<" in html and ">49.6<" in html and ">0.422<" in html and "20.0" not in html
    fractions = readable(pd.DataFrame({"tau": [0.4, 0.41]}), caption="agreement (95% CI)").to_html()
    assert ">0.400<" in fractions  # "95% CI" in a caption does not make a table percentages


# ------------------------------------------------------------------ item 9: plots


def test_plots_a_reader_can_read():
    retention = pd.DataFrame(
        [(s, c, v) for s, vs in {"helm": [58, 63], "timer": [58, 63], "recent": [40, 70]}.items()
         for c, v in zip([2048, 4096], vs)],
        columns=["strategy", "context", "retained_pct"],
    )  # fmt: skip
    fig = plots.retention_curves(retention)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["helm = timer", "recent"]
    assert any("identical, drawn as one line: helm and timer" in t.get_text() for t in ax.texts)
    renderer = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1
    plan = pd.DataFrame({"method": ["labels"] * 4, "k": [10, 20, 40, 80], "mean_width": [30, 20, 14, 10],
                         "coverage": [0.95] * 4})  # fmt: skip
    ax = plots.label_budget_curves(plan).axes[0]
    fig = ax.figure
    fig.canvas.draw()
    shown = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert shown == [] and [t.get_text() for t in ax.get_xticklabels()] == ["10", "20", "40", "80"]
    share = pd.DataFrame(np.full((7, 7), 0.5), index=[*paper.MODELS, "new"], columns=[*paper.MODELS, "new"])
    fig = plots.win_matrices(share, share, titles=("a", "b"))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 49 - 0 and not any(a.overlaps(b) for k, a in enumerate(boxes) for b in boxes[k + 1 :])


def test_finding_mime_round_trips_the_new_fields(capsys):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("from medalign_utils.reports import record_finding\n"
                   "record_finding('x', 0.5, ci=(0.4, 0.6), n_instructions=12, n_patients=3, lead=True)")  # fmt: skip
    InteractiveShell.clear_instance()
    assert "n = 12 instructions, 3 patients" in capsys.readouterr().out
    assert {"n_instructions", "n_patients", "reading", "lead"} <= set(Finding.__dataclass_fields__)
    assert FINDING_MIME.endswith("+json") and json.dumps(Finding("x", 1.0).__dict__)
