"""Every bad input one clear line on stderr, naming the file and line or row, and nothing destroyed:
`medalign synth` never writes over a folder that is not its own cohort."""

from __future__ import annotations

import json
import shutil

import pytest

from medalign_utils import cli
from medalign_utils.data import SYNTHETIC_MARKER


def _run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_synth_refuses_a_release_and_any_folder_that_is_not_its_own_cohort(real_like, tiny_cohort, tmp_path, capsys):
    release = tmp_path / "release"
    shutil.copytree(real_like[0], release)
    before = sorted(p.relative_to(release) for p in release.rglob("*"))
    code, _, err = _run(capsys, "synth", str(release), "--patients", "2", "--quiet")
    assert code == 2 and "refusing to write over it" in _one_line(err) and str(release) in err
    assert sorted(p.relative_to(release) for p in release.rglob("*")) == before  # nothing deleted
    own = tmp_path / "own"
    shutil.copytree(tiny_cohort, own)
    assert _run(capsys, "synth", str(own), "--patients", "2", "--quiet")[0] == 0  # its own cohort: regenerated
    assert len(list((own / "ehrs").glob("*.xml"))) == 2 and (own / SYNTHETIC_MARKER).is_file()
    assert _run(capsys, "synth", str(tmp_path / "new"), "--patients", "2", "--quiet")[0] == 0


@pytest.mark.parametrize("patients", ["0", "-2"])
def test_synth_with_no_patients_is_an_error(tmp_path, capsys, patients):
    code, _, err = _run(capsys, "synth", str(tmp_path / "c"), "--patients", patients, "--quiet")
    assert code == 2 and f"patients must be at least 1 (got {patients})" in _one_line(err)
    assert not (tmp_path / "c").exists()


def test_table4_judgments_missing_garbage_foreign_and_incomplete(tiny_cohort, tmp_path, capsys):
    base = ["table4", str(tiny_cohort), "--metrics", "rougeL", "--resamples", "10", "--quiet"]
    code, _, err = _run(capsys, *base, "--judgments", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl: no such judgments file" in _one_line(err)

    from medalign_utils.data import load_release

    row = load_release(tiny_cohort).model_responses.iloc[0]
    good = {"judge": "j", "mode": "rubric", "instruction_id": int(row.instruction_id), "system": row.system,
            "pair": "", "order": "", "prompt_hash": "h", "valid": True, "score": 4.0, "error": None}  # fmt: skip
    mixed = tmp_path / "mixed.jsonl"
    no_error = {k: v for k, v in good.items() if k not in ("error",)} | {"system": "other"}
    lines = [json.dumps(good), "garbage {", json.dumps({"judge": "j", "mode": "rubric"}), json.dumps(no_error)]
    mixed.write_text("\n".join(lines) + "\n")
    code, out, err = _run(capsys, *base, "--judgments", str(mixed))
    assert code == 0 and '"judge:j:rubric","","","",0' in out  # its row says it has no instruction
    assert "judge:j:rubric: no instruction with two or more systems" in err
    assert f"{mixed} line 2: not JSON, skipped" in err
    assert f"{mixed} line 3: missing instruction_id, valid, skipped" in err

    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps(good | {"instruction_id": 987654321}) + "\n")
    code, _, err = _run(capsys, *base, "--judgments", str(foreign))
    assert code == 2 and "none of its 1 judgments is of an instruction of this release" in _one_line(err)

    pairwise = tmp_path / "pairwise.jsonl"
    pairwise.write_text(json.dumps(good | {"mode": "pairwise", "system": "", "pair": "a|b"}) + "\n")
    code, _, err = _run(capsys, *base, "--judgments", str(pairwise))
    assert code == 0 and "no rubric, correct or medhelm judgment to score, so no judge row" in err


def test_compare_judge_and_config_errors_name_their_file(tiny_cohort, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    code, _, err = _run(capsys, "compare", str(bad), str(empty))
    assert code == 2 and f"{bad} line 1: not JSON" in _one_line(err)
    code, _, err = _run(capsys, "compare", str(empty), str(empty))
    assert code == 2 and f"{empty}: not a run record" in _one_line(err)
    code, _, err = _run(capsys, "judge", str(tiny_cohort), "--model", str(tmp_path / "missing"), "--mode", "rubric")
    assert code == 2 and "no folder at" in _one_line(err) and "Repo id" not in err
    config = tmp_path / "bad.yaml"
    config.write_text("data_dir: x\nnotebooks: [\n")
    code, _, err = _run(capsys, "run", "--config", str(config), "--quiet")
    assert code == 2 and f"config {config} line 3" in _one_line(err)


def test_run_on_a_missing_data_folder_is_an_error_never_a_new_cohort(tmp_path, capsys):
    """Only the default synthetic folder is made on demand: a typo'd or unmounted release path
    would otherwise be filled with a synthetic cohort and reported on as if it were the data."""
    missing = tmp_path / "nope" / "x"
    out = tmp_path / "reports"
    code, _, err = _run(capsys, "run", "--data", str(missing), "--out", str(out), "--quiet")
    line = _one_line(err)
    assert code == 2 and "does not exist" in line and str(missing) in line
    assert not missing.exists() and not (tmp_path / "nope").exists()
    assert not (out / "index.html").exists() and not (out / "run.json").exists()


# ------------------------------------------------------------------ the CLI's rough edges (issue 36, item 11)


def test_a_mistyped_command_gets_did_you_mean(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["tabel3", "x"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "did you mean 'table3'?" in err and "Traceback" not in err


def test_resamples_must_be_positive_said_by_the_cli_not_numpy(tiny_cohort, capsys):
    with pytest.raises(SystemExit):
        cli.main(["table3", str(tiny_cohort), "--resamples", "-5"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse prints the usage first
    assert last == "medalign table3: error: argument --resamples: -5 is not a positive whole number"


def test_an_unknown_metric_is_refused_before_any_bar_with_a_suggestion(tiny_cohort, capsys):
    code, _, err = _run(capsys, "table4", str(tiny_cohort), "--metrics", "rouge")
    line = _one_line(err)
    assert code == 2 and "unknown metric 'rouge' (did you mean rougeL?)" in line and "%|" not in err


def test_errors_from_bad_input_do_not_name_exception_classes(tmp_path, capsys):
    code, _, err = _run(capsys, "table3", str(tmp_path / "nowhere"))
    line = _one_line(err)
    assert code == 2 and "no such folder" in line and "Error:" not in line


def test_only_with_no_such_notebook_lists_the_notebooks(capsys):
    code, _, err = _run(capsys, "run", "--only", "07", "--plan")
    line = _one_line(err)
    assert code == 2 and "matches no notebook" in line and "01_ehr_exploration" in line and "06_llm_judge" in line


@pytest.mark.parametrize("command", ["agreement", "place", "import-helm"])
def test_quiet_is_taken_where_the_readme_promises_it(command):
    parser = cli.build_parser()
    assert "--quiet" in parser._subparsers._group_actions[0].choices[command]._option_string_actions


def test_compare_says_the_same_and_where_the_runs_settings_differ(tmp_path, capsys):
    def run(name, resamples, unit, value):
        folder = tmp_path / name
        folder.mkdir()
        record = {
            "config": {"n_resamples": resamples, "bootstrap_unit": unit, "seed": 0},
            "data": {"fingerprint": "abc"},
            "findings": [{"name": "x", "value": value, "unit": "%"}, {"name": "y", "value": 1.0, "unit": "%"}],
        }
        (folder / "run.json").write_text(json.dumps(record))
        return folder

    a, b = run("a", 1000, "instruction", 1.0), run("b", 2000, "patient", 2.5)
    code, out, _ = _run(capsys, "compare", str(a), str(b))
    lines = out.splitlines()
    assert code == 0
    assert "settings differ: n_resamples: A 1000 | B 2000" in lines
    assert "settings differ: bootstrap_unit: A 'instruction' | B 'patient'" in lines
    assert any(line.startswith("x:") and "(B − A: +1.5)" in line for line in lines)
    assert any(line.startswith("y:") and "(the same)" in line for line in lines)


def test_compare_takes_any_number_of_runs(tmp_path, capsys):
    runs = []
    for k, value in enumerate((1.0, 1.0, 4.0)):
        folder = tmp_path / f"r{k}"
        folder.mkdir()
        record = {"config": {"n_resamples": 1000}, "findings": [{"name": "x", "value": value, "unit": "%"}]}
        (folder / "run.json").write_text(json.dumps(record))
        runs.append(str(folder))
    code, out, _ = _run(capsys, "compare", *runs)
    lines = out.splitlines()
    assert code == 0 and lines[:3] == [f"A: {runs[0]}", f"B: {runs[1]}", f"C: {runs[2]}"]
    assert lines[3] == "x: A 1.0 % | B 1.0 %  (the same) | C 4.0 %  (C − A: +3)"  # percentages: one decimal
    code, _, err = _run(capsys, "compare", runs[0])
    assert code == 2 and "two runs or more" in _one_line(err)
