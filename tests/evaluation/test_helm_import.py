"""A HELM run of MedAlign brought in: instances numbered as HELM's loader reads the release (pandas,
default quoting), each checked against the release by its question and its reference, other
scenarios refused from the run spec, and the jury's score equal to HELM's LLMJuryMetric."""

from __future__ import annotations

import csv
import json
import shutil

import pandas as pd
import pytest

from medalign_utils import cli
from medalign_utils.data import load_release
from medalign_utils.evaluation import judge as J

RUBRIC = ("accuracy", "completeness", "clarity")


@pytest.fixture(scope="module")
def release(gold_cohort):
    return load_release(gold_cohort)


def _run_spec(*, scenario="helm.benchmark.scenarios.medalign_scenario.MedalignScenario", model="acme/medlm-7b"):
    return {
        "name": f"medalign:model={model},max_length=2048",
        "scenario_spec": {"class_name": scenario, "args": {"max_length": 2048, "data_path": "WORK/release"}},
        "adapter_spec": {"model": model, "model_deployment": model, "max_tokens": 256},
        "metric_specs": [
            {
                "class_name": "helm.benchmark.metrics.llm_jury_metrics.LLMJuryMetric",
                "args": {
                    "metric_name": "medalign_accuracy",
                    "scenario_name": "medalign",
                    "annotator_models": {"gpt": {}, "llama": {}, "claude": {}},
                    "default_score": 1.0,
                },
            }
        ],
    }


def _helm_read(folder):
    """HELM 0.5.16's reading of a release, step by step as its `medalign_scenario_helper` does it
    (written out here apart from the suite's code): instance N -> (instruction_id, question, reference)."""
    instructions = pd.read_csv(folder / "clinician-reviewed-model-responses.tsv", sep="\t")
    question = {row["instruction_id"]: row["question"] for _, row in instructions.iterrows()}
    prompts = pd.DataFrame.from_dict({k: f"prompt {k}" for k in question}, orient="index", columns=["prompt"])
    prompts = prompts.reset_index().rename(columns={"index": "instruction_id"})
    gold = pd.read_csv(folder / "clinician-instruction-responses.tsv", sep="\t")
    gold = gold.query("annotator_num == 'Annotator_1'")[["instruction_id", "clinician_response"]]
    merged = gold.merge(prompts, on="instruction_id", how="inner")
    return [(str(r.instruction_id), question[r.instruction_id], r.clinician_response) for r in merged.itertuples()]


def _state(instances, *, redact=False, annotations=None, answers=None):
    """A scenario_state.json of HELM instances [(instance_id, question, reference)]."""
    states = []
    for n, (hid, question, reference) in enumerate(instances):
        text = (
            REDACTED
            if redact
            else f"\nQuestion: Instruction: Answer ...\n\nEHR: <x/>\n\nQuestion: {question}\n\nAnswer:\n"
        )
        states.append(
            {
                "instance": {"id": hid, "input": {"text": text}, "references": [{"output": {"text": reference}}]},
                "request": {"prompt": text},
                "result": {"completions": [{"text": (answers or {}).get(hid, f"answer {n}")}]},
                "annotations": {"medalign": (annotations or {}).get(hid, _jury())},
            }
        )
    return {"request_states": states}


REDACTED = "[redacted]"


def _jury():
    return {
        "prompt_text": "the jurors' prompt",
        "gpt": {k: {"score": 4, "explanation": "[redacted]"} for k in RUBRIC},
        "llama": {k: {"score": 2 + (k == "clarity"), "explanation": "ok"} for k in RUBRIC},
        "claude": {k: {"score": 5, "explanation": "fine"} for k in RUBRIC},
    }


def _write_run(folder, instances, spec=None, **state):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_spec.json").write_text(json.dumps(spec or _run_spec()))
    (folder / "scenario_state.json").write_text(json.dumps(_state(instances, **state)))
    return folder


def _truth(release, n=4):
    """The first n instances as HELM numbers this (unquoted) release, with the release's own texts."""
    inst = J.helm_instances(release).head(n)
    return list(zip(inst.instance_id, inst.question, inst.reference)), list(inst.instruction_id)


def _import(run_dir, release, tmp_path, name="g", **kw):
    gens, judg = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-j.jsonl"
    return J.import_helm_run(run_dir, release, generations_out=gens, judgments_out=judg, **kw), gens, judg


def _gens(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ numbering as HELM reads the files


def test_helm_numbering_equals_helms_own_reading_of_an_ordinary_release(release, gold_cohort):
    expected = _helm_read(gold_cohort)
    inst = J.helm_instances(release)
    assert list(inst.instruction_id) == [iid for iid, _, _ in expected]
    assert list(inst.instance_id) == [f"id{n}" for n in range(len(expected))]
    # On a release without a leading quote pandas and the suite read the same rows: Annotator_1's
    # rows of reviewed instructions, in the references' order.
    with open(gold_cohort / "clinician-reviewed-model-responses.tsv", newline="") as f:
        reviewed = {r["instruction_id"] for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
    with open(gold_cohort / "clinician-instruction-responses.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    naive = [
        r["instruction_id"] for r in rows if r["annotator_num"] == "Annotator_1" and r["instruction_id"] in reviewed
    ]
    assert list(inst.instruction_id) == naive


@pytest.fixture(scope="module")
def quoted(gold_cohort, tmp_path_factory):
    """The gold cohort with one question that starts with a double quote, in both files (as a real
    release would): pandas swallows the rows that follow it into that field."""
    folder = tmp_path_factory.mktemp("quoted") / "release"
    shutil.copytree(gold_cohort, folder)
    refs = (folder / "clinician-instruction-responses.tsv").read_text().split("\n")
    target = refs[3].split("\t")[0]
    for name, column in (("clinician-instruction-responses.tsv", 2), ("clinician-reviewed-model-responses.tsv", 1)):
        lines = (folder / name).read_text().split("\n")
        for k, line in enumerate(lines[1:], start=1):
            fields = line.split("\t")
            if fields[0] == target:
                fields[column] = '"' + fields[column]
                lines[k] = "\t".join(fields)
        (folder / name).write_text("\n".join(lines))
    return folder, target


def test_a_quoted_question_shifts_helms_numbering_and_the_import_maps_every_instance_right_or_refuses(quoted, tmp_path):
    folder, target = quoted
    release = load_release(folder, follow_external_links=True)
    helm = _helm_read(folder)
    inst = J.helm_instances(release)
    assert list(inst.instruction_id) == [iid for iid, _, _ in helm]
    # The suite's own reading (quoting off) numbers differently from the swallowed row on.
    primary = release.references[release.references.annotator_num == "Annotator_1"]
    reviewed = set(release.model_responses.instruction_id)
    naive = [i for i in primary.instruction_id if i in reviewed]
    assert len(naive) > len(helm) and naive[: len(helm)] != [iid for iid, _, _ in helm]
    # A run HELM made of this release: its instances carry HELM's questions and references.
    instances = [(f"id{n}", q, r) for n, (_, q, r) in enumerate(helm)]
    run_dir = _write_run(tmp_path / "run", instances)
    summary, gens, _ = _import(run_dir, release, tmp_path)
    assert not summary["written"] and summary["problems"] and not gens.exists()  # the mangled one refuses it all
    summary, gens, _ = _import(run_dir, release, tmp_path, allow_partial=True)
    truth = {f"id{n}": iid for n, (iid, _, _) in enumerate(helm)}
    question = release.instructions.set_index("instruction_id").question
    for rec in _gens(gens):  # every instance imported is the instruction HELM asked, with the release's text
        assert rec["instruction_id"] == truth[rec["helm_instance_id"]]
        assert " ".join(question[rec["instruction_id"]].split()) in " ".join(
            instances[int(rec["helm_instance_id"][2:])][1].split()
        )
    assert target not in {r["instruction_id"] for r in _gens(gens)}
    assert summary["imported"] + len(summary["problems"]) == len(instances)
    # A run numbered the suite's way instead (as the import used to read ids) maps nothing wrong either.
    reference = primary.set_index("instruction_id").clinician_response
    naive_run = [(f"id{n}", question[iid], reference[iid]) for n, iid in enumerate(naive)]
    summary, gens2, _ = _import(_write_run(tmp_path / "naive", naive_run), release, tmp_path, "n", allow_partial=True)
    assert summary["problems"] and summary["imported"] < len(naive_run)
    for rec in _gens(gens2):
        assert rec["instruction_id"] == truth[rec["helm_instance_id"]]


def test_each_instance_is_checked_by_its_question_and_its_reference(release, tmp_path, capsys):
    instances, iids = _truth(release)
    wrong_q = [*instances]
    wrong_q[1] = (wrong_q[1][0], "What is the capital of France?", wrong_q[1][2])
    run_dir = _write_run(tmp_path / "q", wrong_q)
    argv = ["import-helm", str(run_dir), "--data", str(release.root), "--out", str(tmp_path / "g.jsonl")]
    argv += ["--judgments-out", str(tmp_path / "j.jsonl")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"instance {instances[1][0]}: its prompt does not hold the question of instruction {iids[1]}" in err
    assert "nothing written" in err and not (tmp_path / "g.jsonl").exists()
    assert cli.main([*argv, "--allow-partial"]) == 1
    assert "partial import (--allow-partial): 1 instances left out" in capsys.readouterr().err
    assert [r["instruction_id"] for r in _gens(tmp_path / "g.jsonl")] == [iids[0], iids[2], iids[3]]
    # Redacted prompts (published runs) are checked by their reference: a wrong reference is refused.
    wrong_ref = [*instances]
    wrong_ref[2] = (wrong_ref[2][0], wrong_ref[2][1], "another clinician's answer")
    summary, _, _ = _import(_write_run(tmp_path / "r", wrong_ref, redact=True), release, tmp_path, "r")
    assert not summary["written"] and len(summary["problems"]) == 1
    assert "its reference is not Annotator_1's answer" in summary["problems"][0]
    summary, gens, _ = _import(_write_run(tmp_path / "ok", instances, redact=True), release, tmp_path, "ok")
    assert summary["written"] and summary["checked_by_reference_only"] == 4
    assert [r["instruction_id"] for r in _gens(gens)] == iids


def test_display_only_folders_are_checked_against_instances_json_or_refused(release, tmp_path):
    instances, iids = _truth(release)
    state = _state(instances)
    display = tmp_path / "display"
    display.mkdir()
    (display / "run_spec.json").write_text(json.dumps(_run_spec()))
    predictions = [
        {
            "instance_id": st["instance"]["id"],
            "predicted_text": st["result"]["completions"][0]["text"],
            "annotations": st["annotations"],
        }
        for st in state["request_states"]
    ]
    predictions[0], predictions[1] = predictions[1], predictions[0]  # any order: matched by id
    (display / "display_predictions.json").write_text(json.dumps(predictions))
    summary, _, _ = _import(display, release, tmp_path, "d0")
    assert not summary["written"] and all("no prompt or reference to check" in p for p in summary["problems"])
    redacted = [{**s["instance"], "input": {"text": REDACTED}} for s in state["request_states"]]
    redacted[3]["references"] = [{"output": {"text": "not the reference"}}]
    (display / "instances.json").write_text(json.dumps(redacted))
    summary, _, _ = _import(display, release, tmp_path, "d1")
    assert not summary["written"] and len(summary["problems"]) == 1 and instances[3][0] in summary["problems"][0]
    (display / "instances.json").write_text(json.dumps([s["instance"] for s in state["request_states"]]))
    summary, gens, _ = _import(display, release, tmp_path, "d2")
    assert summary["written"] and not summary["problems"]
    assert {r["helm_instance_id"]: r["instruction_id"] for r in _gens(gens)} == dict(
        zip([i[0] for i in instances], iids)
    )


def test_the_run_spec_names_the_scenario_the_model_and_the_context(release, tmp_path, capsys):
    instances, _ = _truth(release)
    other = _write_run(
        tmp_path / "simple1",
        instances,
        spec=_run_spec(scenario="helm.benchmark.scenarios.simple_scenarios.Simple1Scenario"),
    )
    argv = ["import-helm", str(other), "--data", str(release.root), "--out", str(tmp_path / "g.jsonl")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Simple1Scenario, not MedAlign" in err[0] and not (tmp_path / "g.jsonl").exists()
    (other / "run_spec.json").unlink()
    assert cli.main(argv) == 2 and "no run_spec.json" in capsys.readouterr().err
    run_dir = _write_run(tmp_path / "medalign", instances)
    argv = ["import-helm", str(run_dir), "--data", str(release.root), "--out", str(tmp_path / "g.jsonl")]
    assert cli.main([*argv, "--judgments-out", str(tmp_path / "j.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "system: medlm-7b" in out and "model: acme/medlm-7b" in out and "context: 2048" in out
    rec = _gens(tmp_path / "g.jsonl")[0]
    assert (rec["system"], rec["context"], rec["model"], rec["max_new_tokens"]) == (
        "medlm-7b",
        2048,
        "acme/medlm-7b",
        256,
    )


# ------------------------------------------------------------------ HELM's jury score


def _llm_jury_metric(annotations, jurors=("gpt", "llama", "claude"), default=1.0):
    """HELM's LLMJuryMetric.evaluate_generation, restated: int() of every criterion score of every
    juror the metric knows, pooled; the default when there are none."""
    scores = []
    for key, value in annotations.items():
        if key in jurors and value is not None:
            for criterion in value.values():
                scores.append(int(criterion["score"]))
    return sum(scores) / len(scores) if scores else default


JURY_CASES = {
    "plain": _jury(),
    "strings, halves, out of range": {
        "prompt_text": "p",
        "gpt": {"accuracy": {"score": "4"}, "completeness": {"score": 4.5}, "clarity": {"score": 0}},
        "llama": {"accuracy": {"score": 7}, "completeness": {"score": 3}, "clarity": {"score": 3.0}},
    },
    "an extra overall": {
        "prompt_text": "p",
        "gpt": {**{k: {"score": 4} for k in RUBRIC}, "overall": {"score": 1}},
        "claude": None,
    },
    "every juror failed": {"prompt_text": "p"},
}


def test_juror_scores_equal_helms_jury_metric_exactly(release, tmp_path):
    instances, iids = _truth(release, n=len(JURY_CASES) + 1)
    names = list(JURY_CASES)
    annotations = {instances[k][0]: JURY_CASES[name] for k, name in enumerate(names)}
    empty = instances[len(names)][0]
    annotations[empty] = {"prompt_text": None, "empty_output_equivalence_judgement": False}
    run_dir = _write_run(tmp_path / "run", instances, annotations=annotations, answers={empty: "  "})
    summary, gens, judg = _import(run_dir, release, tmp_path)
    assert summary["written"] and not summary["problems"]
    judgments = J.read_judgments(judg)
    assert set(judgments.judge) == {"helm:gpt", "helm:llama", "helm:claude"}  # bookkeeping keys are no jurors
    jury = J.jury_scores(judgments, "medhelm").set_index("instruction_id").score
    expected = {iids[k]: _llm_jury_metric(annotations[instances[k][0]]) for k in range(len(instances))}
    assert expected[iids[1]] == pytest.approx((4 + 4 + 0 + 7 + 3 + 3) / 6)  # what HELM's int() gives
    assert expected[iids[2]] == pytest.approx(3.25) and expected[iids[3]] == expected[iids[4]] == 1.0
    assert jury.to_dict() == pytest.approx(expected)
    assert {r["instruction_id"]: r["helm_jury_score"] for r in _gens(gens)} == pytest.approx(expected)
    # The suite's own check of each verdict is kept beside it, not imposed (no explanations, a 7).
    check = judgments.set_index(["judge", "instruction_id"]).medhelm_check
    assert check[("helm:llama", iids[1])].startswith("accuracy") and pd.isna(check[("helm:gpt", iids[0])])


def test_helms_own_per_instance_score_is_checked_when_the_run_wrote_it(release, tmp_path):
    instances, _ = _truth(release, n=2)
    run_dir = _write_run(tmp_path / "run", instances)
    right = _llm_jury_metric(_jury())
    stats = [
        {"instance_id": instances[0][0], "stats": [{"name": {"name": "medalign_accuracy"}, "mean": right}]},
        {"instance_id": instances[1][0], "stats": [{"name": {"name": "medalign_accuracy"}, "mean": 2.0}]},
    ]
    (run_dir / "per_instance_stats.json").write_text(json.dumps(stats))
    summary, _, _ = _import(run_dir, release, tmp_path)
    assert summary["problems"] == [f"instance {instances[1][0]}: HELM scored it 2, its annotations give {right:g}"]


# ------------------------------------------------------------------ importing again, folders of links


def test_importing_again_replaces_and_never_duplicates(release, tmp_path):
    instances, _ = _truth(release)
    run_dir = _write_run(tmp_path / "run", instances)
    _import(run_dir, release, tmp_path)
    again, gens, judg = _import(
        _write_run(run_dir, instances, answers={i[0]: f"new {i[0]}" for i in instances}), release, tmp_path
    )
    assert again["replaced"] == 4 + 12 and [r["answer"] for r in _gens(gens)] == [f"new {i[0]}" for i in instances]
    assert len(J.read_judgments(judg)) == 12


def test_import_helm_of_a_folder_that_is_not_a_helm_run_is_one_line(gold_cohort, tmp_path, capsys):
    (tmp_path / "run_spec.json").write_text(json.dumps(_run_spec()))
    code = cli.main(["import-helm", str(tmp_path), "--data", str(gold_cohort), "--system", "x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "not a HELM run folder" in err[0]


def test_a_release_folder_of_links_as_helm_keeps_it_is_named_and_read_with_the_flag(
    release, gold_cohort, tmp_path, capsys
):
    """HELM's data folder holds links to the release's files: the refusal names the link and the flag,
    and with the flag the import reads through them."""
    work = tmp_path / "WORK" / "release"
    (work / "ehrs").mkdir(parents=True)
    for f in gold_cohort.glob("*.tsv"):
        (work / f.name).symlink_to(f)
    for f in (gold_cohort / "ehrs").glob("*.xml"):
        (work / "ehrs" / f.name).symlink_to(f)
    instances, _ = _truth(release)
    run_dir = _write_run(tmp_path / "run", instances)
    argv = ["import-helm", str(run_dir), "--data", str(work), "--system", "x", "--out", str(tmp_path / "g.jsonl")]
    argv += ["--judgments-out", str(tmp_path / "j.jsonl")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a link to" in err[0] and "--follow-external-links" in err[0]
    assert cli.main([*argv, "--follow-external-links"]) == 0
    assert "imported: 4" in capsys.readouterr().out


# ------------------------------------------------------------------ after the import: judged and placed


def test_an_imported_run_is_judged_against_the_six_and_placed(release, gold_cohort, tmp_path, capsys):
    from medalign_utils.evaluation.judge import PlantedJudge, planted_judge
    from medalign_utils.generation import LocalServer

    inst = J.helm_instances(release).head(14)
    planted = release.planted_truth["answers"]
    answers = {
        hid: f"The answer is {(planted[iid].get('value') or {}).get('value')}."
        for hid, iid in zip(inst.instance_id, inst.instruction_id)
    }
    run_dir = _write_run(tmp_path / "run", list(zip(inst.instance_id, inst.question, inst.reference)), answers=answers)
    gens, helm_j = tmp_path / "helm.jsonl", tmp_path / "helm-medhelm.jsonl"
    argv = ["import-helm", str(run_dir), "--data", str(gold_cohort), "--out", str(gens), "--judgments-out", str(helm_j)]
    assert cli.main(argv) == 0
    # HELM's jury scored only its own system: Table 4 says why it has no row, in one line.
    assert cli.main(["table4", str(gold_cohort), "--metrics", "rougeL", "--judgments", str(helm_j), "--quiet"]) == 0
    assert "scores only medlm-7b, none of the reviewed systems" in capsys.readouterr().err
    # The judge's verdicts on the six (the baseline) and on the imported answers.
    items = J.response_items(release)
    scope = items[items.instruction_id.isin(inst.instruction_id)]
    with planted_judge(release) as judge:
        J.run_judgments(judge, "pairwise", J.pairwise_items(scope), release, tmp_path / "six-p.jsonl", progress=False)
        J.run_judgments(judge, "correct", items, release, tmp_path / "six-c.jsonl", progress=False)
    place = ["place", str(gold_cohort), "--judgments", str(tmp_path / "six-p.jsonl"), str(tmp_path / "six-c.jsonl")]
    assert cli.main([*place, str(helm_j), "--judge", "planted", "--system", "medlm-7b"]) == 0
    assert "no pairwise verdicts on medlm-7b by planted" in capsys.readouterr().out  # said, not NaN without a reason
    with LocalServer(PlantedJudge(release)) as srv:
        for mode in ("pairwise", "correct"):
            args = ["judge", str(gold_cohort), "--endpoint", srv.url + "/v1", "--judge-model", "planted",
                    "--mode", mode, "--generations", str(gens), "--strategy", "none", "--quiet",
                    "--out", str(tmp_path / f"new-{mode}.jsonl")]  # fmt: skip
            assert cli.main(args) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert lines["judgments"] == "14" and lines["invalid"] == "0"  # correct mode: one verdict per answer
    pairs = J.read_judgments(tmp_path / "new-pairwise.jsonl")
    assert len(pairs) == 14 * 6 * 2 and set(pairs.pair.str.split("|").str[0]) == {"medlm-7b"}
    new = [str(tmp_path / f"new-{m}.jsonl") for m in ("pairwise", "correct")]
    assert cli.main([*place, *new, "--system", "medlm-7b", "--min-instructions", "10"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    assert float(lines["win_rate"]) > 0.5 and 1 <= float(lines["place"]) <= 3  # stating the planted value wins
    verdicts = J.read_judgments(tmp_path / "new-correct.jsonl")
    assert float(lines["correct_pct"]) == pytest.approx(100 * verdicts.score.astype(float).mean(), abs=1e-3)
    assert float(lines["correct_pct_ci_low"]) <= float(lines["correct_pct"]) <= float(lines["correct_pct_ci_high"])
    assert lines["n_instructions_judged"] == "14"


def test_stored_answers_are_read_from_a_tsv_or_jsonl_and_nothing_is_dropped_unsaid(release, tmp_path):
    from medalign_utils.generation import read_answers

    iids = list(J.helm_instances(release).instruction_id[:3])
    tsv = tmp_path / "mine.tsv"
    tsv.write_text("instruction_id\tanswer\n" + f"{iids[0]}\tyes\n\tlost\n{iids[1]}\tno\n")
    answers = read_answers(tsv)
    assert answers.system.unique().tolist() == ["mine"] and answers.answer.tolist() == ["yes", "no"]
    assert answers.attrs["skipped"] == [f"{tsv} row 3: no instruction_id, skipped"]
    with pytest.raises(ValueError, match="needs the columns instruction_id and answer"):
        (tmp_path / "bad.tsv").write_text("id\ttext\n1\tx\n")
        read_answers(tmp_path / "bad.tsv")
    jsonl = tmp_path / "g.jsonl"
    rows = [(iids[0], "a", "recent", "old"), (iids[0], "a", "views", "new"), (iids[1], "b", "recent", "b's")]
    recs = [
        {"instruction_id": i, "system": m, "strategy": st, "context": 2048, "prompt_hash": st + m, "answer": x}
        for i, m, st, x in rows
    ]
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    a = read_answers(jsonl, system="a")
    assert a.answer.tolist() == ["new"] and "1 earlier answers" in a.attrs["skipped"][0]
    with pytest.raises(ValueError, match="is one of the reviewed systems"):
        J.generation_items(release, read_answers(jsonl).assign(system="gpt4_32k"), "gpt4_32k")
    pairs = J.generation_items(release, read_answers(jsonl), "b", pairwise=True)
    assert len(pairs) == 12 and set(pairs.instruction_id) == {iids[1]}
