"""The release reader and `medalign validate` on every layout and fault the issue names."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from medalign_utils import cli
from medalign_utils.data import UnusableReleaseError, load_release, read_table
from medalign_utils.data.ehr import parse_ehr, parse_timestamp, split_paper_code

LUMIA_EHR = """<eventstream person_id="{pid}">
<encounter start_timestamp="2019-01-02 08:00" end_timestamp="2019-01-02 09:00">
<person><birthdate>1970-05-01</birthdate><age><days>17777</days><years>48</years></age>
<demographics><ethnicity>Not Hispanic or Latino</ethnicity><gender>FEMALE</gender></demographics><payerplan>Commercial</payerplan></person>
<caresites><caresite care_site_id="1" care_site_name="Clinic"/></caresites>
<providers><provider provider_id="9" gender="" speciality="Cardiology" year_of_birth="1960" care_site_name="Clinic"/></providers>
<events>
<entry timestamp="2019-01-02 08:05">
<event type="measurement" code="LOINC/8867-4" name="Heart rate" provider_id="9" care_site_id="1">85.00</event>
<event type="observation" code="LOINC/72166-2" name="Tobacco smoking status">Never smoker</event>
</entry>
<entry timestamp="2019-01-02 08:30">
<event type="note" code="" name="Progress Note" note_id="77" provider_id="9" care_site_id="1">Seen for "palpitations" &amp; fatigue.</event>
</entry>
</events>
</encounter>
<encounter start_timestamp="2020-03-04 10:00" end_timestamp="2020-03-04 11:00">
<events>
<entry timestamp="2020-03-04 10:10">
<event type="condition" code="ICD10CM/I48.91" name="Unspecified atrial fibrillation"></event>
</entry>
</events>
</encounter>
</eventstream>
"""

RESPONSES_HEADER = [
    "instruction_id",
    "question",
    "person_id",
    "filename",
    "clinician_response",
    "evidence",
    "model_name",
    "model_response",
    "model_rank",
    "binary_correct",
    "is_used_eval",
    "extra_column",
]


def write_tsv(path: Path, header: list[str], rows: list[list[str]], sep: str = "\t") -> None:
    path.write_text("\n".join(sep.join(r) for r in [header, *rows]) + "\n", encoding="utf-8")


def make_lumia_release(root: Path, person_ids=("101", "102")) -> Path:
    (root / "ehrs").mkdir(parents=True)
    for pid in person_ids:
        (root / "ehrs" / f"{pid}.xml").write_text(LUMIA_EHR.format(pid=pid))
    rows = []
    for iid, pid in (("1", "101"), ("2", "102")):
        for m, rank in (("model_a", "1"), ("model_b", "2")):
            # A bare quote character inside a field: read with quoting off, kept as written.
            rows.append(
                [
                    iid,
                    'What was the "last" heart rate?',
                    pid,
                    f"{pid}.xml",
                    "85 bpm",
                    "2019-01-02 08:05",
                    m,
                    'It was 85 "bpm"',
                    rank,
                    "1" if m == "model_a" else "0",
                    "yes",
                    "x",
                ]
            )
    write_tsv(root / "clinician-reviewed-model-responses.tsv", RESPONSES_HEADER, rows)
    write_tsv(
        root / "clinician-instruction-responses.tsv",
        ["instruction_id", "person_id", "question", "annotator_num", "clinician_response", "evidence"],
        [
            ["1", "101", 'What was the "last" heart rate?', "Annotator_1", "85 bpm", "2019-01-02 08:05"],
            ["2", "102", 'What was the "last" heart rate?', "Annotator_1", "85 bpm", "2019-01-02 08:05"],
        ],
    )
    return root


def run_validate(capsys, path) -> tuple[int, list[str]]:
    """Exit code and the lines printed: results on stdout, an unusable release's line on stderr."""
    code = cli.main(["validate", str(path)])
    captured = capsys.readouterr()
    if code == 2:
        assert not captured.out.strip()  # errors go to stderr only
        return code, captured.err.strip().splitlines()
    return code, captured.out.strip().splitlines()


def summary_of(lines: list[str]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in lines if not line.startswith("problem:"))


# ------------------------------------------------------------------ the public sample (paper-era schema)


def test_public_sample_parses_to_visits_codes_and_notes(public_sample):
    parsed = parse_ehr(public_sample / "sample-ehr-clean.xml", "sample")
    df = parsed.events.to_pandas()
    assert parsed.schema == "paper"
    assert df.encounter.nunique() == 3
    assert (df.event_type != "note").sum() == 52
    assert (df.event_type == "note").sum() == 5
    assert parsed.problems == []
    assert df.timestamp.notna().all()
    # 24-hour and AM/PM with a one-digit hour both parse.
    assert datetime(2018, 10, 8, 21, 0) in set(df.timestamp.dt.to_pydatetime())
    hr = df[(df.code == "8867-4")].iloc[0]
    assert hr.value_num == 85 and hr.description == "Heart rate" and hr.vocabulary == "LOINC"
    weight = df[(df.code == "29463-7")].iloc[0]
    assert (weight.value_num, weight.unit) == (80.0, "kg")
    notes = df[df.event_type == "note"]
    assert notes.text.str.contains("IV tPA").any()
    assert parsed.patient["gender"] == "FEMALE" and parsed.patient["birthdate"] == "7/19/1966"


def test_paper_code_strings_keep_odd_values_without_guessing():
    assert split_paper_code("[LOINC/29463-7] Body weight 2432.51", "measurement")[3:] == ("2432.51", 2432.51, "")
    assert split_paper_code("[LOINC/8277-6] Body surface area 0 sq meters", "measurement")[3:] == (
        "0",
        0.0,
        "sq meters",
    )
    # A number inside a description is not mistaken for the value.
    assert split_paper_code("[LOINC/1] Glucose 2 Hr post meal 120 mg/dL", "measurement")[2:] == (
        "Glucose 2 Hr post meal",
        "120",
        120.0,
        "mg/dL",
    )
    # Conditions carry no value, even when their names end in numbers.
    assert split_paper_code("[ICD/E11] Diabetes type 2", "condition_occurrence")[2:4] == ("Diabetes type 2", "")


def test_timestamp_formats():
    assert parse_timestamp("10/08/2018 9:00 PM") == datetime(2018, 10, 8, 21, 0)
    assert parse_timestamp("10/08/2018 20:00") == datetime(2018, 10, 8, 20, 0)
    assert parse_timestamp("2019-01-02 08:05") == datetime(2019, 1, 2, 8, 5)
    assert parse_timestamp("yesterday") is None


# ------------------------------------------------------------------ LUMIA releases


def test_lumia_release_reads_all_tables(tmp_path):
    release = load_release(make_lumia_release(tmp_path / "rel"))
    assert release.problems == []
    assert len(release.instructions) == 2
    assert set(release.instructions.columns) >= {"instruction_id", "question", "person_id", "has_reference"}
    mr = release.model_responses
    assert len(mr) == 4 and mr.model_rank.tolist() == [1, 2, 1, 2]
    assert mr.binary_correct.tolist() == [1, 0, 1, 0]
    assert mr.model_response.iloc[0] == 'It was 85 "bpm"'  # quote characters kept as written
    assert "extra_column" in mr.columns  # extra columns kept
    ev = release.events()
    assert len(ev) == 8 and (ev.event_type == "note").sum() == 2
    note = ev[ev.event_type == "note"].iloc[0]
    assert note.note_type == "Progress Note" and note.text == 'Seen for "palpitations" & fatigue.'
    assert ev.encounter.max() == 1
    smoke = ev[ev.code == "72166-2"].iloc[0]
    assert smoke.value == "Never smoker" and pd.isna(smoke.value_num)
    assert release.ehr_text("101").startswith("<eventstream")
    assert release.patients().set_index("person_id").loc["101", "gender"] == "FEMALE"


def test_cached_load_does_no_xml_work(tmp_path, monkeypatch):
    root = make_lumia_release(tmp_path / "rel")
    cache = tmp_path / "cache"
    first = load_release(root).events(cache_dir=cache, progress=False)
    import medalign_utils.data.ehr as ehr_mod

    def boom(*a, **k):
        raise AssertionError("parsed XML although a cache entry exists")

    monkeypatch.setattr(ehr_mod, "parse_ehr", boom)
    second = load_release(root).events(cache_dir=cache, progress=False)
    pd.testing.assert_frame_equal(first, second)
    # A changed file is parsed again (its hash changes).
    monkeypatch.undo()
    path = root / "ehrs" / "101.xml"
    path.write_text(path.read_text().replace("85.00", "90.00"))
    third = load_release(root).events(cache_dir=cache, progress=False)
    assert 90.0 in third.value_num.tolist()


def test_stray_file_in_ehr_folder_is_skipped_and_reported(tmp_path, capsys):
    root = make_lumia_release(tmp_path / "rel")
    (root / "ehrs" / ".DS_Store").write_bytes(b"\x00\x01binary")
    code, out = run_validate(capsys, root)
    assert code == 1
    s = summary_of(out)
    assert s["schema"] == "lumia" and s["patients"] == "2" and s["instructions"] == "2"
    assert s["reference_responses"] == "2" and s["model_responses"] == "4"
    assert s["events"] == "8" and s["notes"] == "2"
    problems = [line for line in out if line.startswith("problem:")]
    assert len(problems) == 1 and "ehrs/.DS_Store" in problems[0] and "skipped" in problems[0]


def test_clean_release_exits_zero(tmp_path, capsys):
    code, out = run_validate(capsys, make_lumia_release(tmp_path / "rel"))
    assert code == 0, out
    assert not [line for line in out if line.startswith("problem:")]


def test_legacy_csv_release_with_paper_era_ehrs(tmp_path, capsys, public_sample):
    root = tmp_path / "legacy"
    (root / "full_patient_ehrs").mkdir(parents=True)
    shutil.copy(public_sample / "sample-ehr-clean.xml", root / "full_patient_ehrs" / "EHR_555.xml")
    header = ["instruction_id", "question", "person_id", "model_name", "model_response", "model_rank", "binary_correct"]
    rows = [
        ["9", '"Has this patient, had a stroke?"', "555", "m1", '"Yes, in 2018."', "1", "True"],
        ["9", '"Has this patient, had a stroke?"', "555", "m2", "No.", "2", "False"],
    ]
    write_tsv(root / "clinician-reviewed-model-responses.csv", header, rows, sep=",")
    code, out = run_validate(capsys, root)
    assert code == 0, out
    s = summary_of(out)
    assert s["schema"] == "paper" and s["events"] == "57" and s["notes"] == "5" and s["patients"] == "1"
    release = load_release(root)
    assert release.model_responses.model_response.tolist() == ["Yes, in 2018.", "No."]  # CSV quoting honoured
    assert release.model_responses.binary_correct.tolist() == [1.0, 0.0]


def test_ehr_cut_off_mid_element_names_file_and_line(tmp_path, capsys):
    root = make_lumia_release(tmp_path / "rel")
    path = root / "ehrs" / "102.xml"
    text = path.read_text()
    path.write_text(text[: text.index('<event type="note"') + 30])
    code, out = run_validate(capsys, root)
    assert code == 1
    problem = next(line for line in out if line.startswith("problem:"))
    assert "ehrs/102.xml:line 13" in problem and "cut off" in problem
    # What was read before the fault is kept: 8 events in the intact file, 2 before the cut.
    assert summary_of(out)["events"] == "6"


def test_missing_required_column_exits_2_naming_file_and_column(tmp_path, capsys):
    root = make_lumia_release(tmp_path / "rel")
    path = root / "clinician-reviewed-model-responses.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.split("\t", 1)[1] for line in lines) + "\n")
    code, out = run_validate(capsys, root)
    assert code == 2
    assert len(out) == 1 and "clinician-reviewed-model-responses.tsv" in out[0] and "instruction_id" in out[0]


def test_missing_folder_and_missing_files_exit_2(tmp_path, capsys):
    code, out = run_validate(capsys, tmp_path / "nope")
    assert code == 2 and "no such folder" in out[0]
    (tmp_path / "empty").mkdir()
    code, out = run_validate(capsys, tmp_path / "empty")
    assert code == 2 and "required file" in out[0]


def test_instruction_whose_ehr_is_absent_names_person_id(tmp_path, capsys):
    root = make_lumia_release(tmp_path / "rel")
    (root / "ehrs" / "102.xml").unlink()
    code, out = run_validate(capsys, root)
    assert code == 1
    problems = [line for line in out if line.startswith("problem:")]
    assert any("person_id 102" in p and "clinician-reviewed-model-responses.tsv:row 3" in p for p in problems)


def test_non_utf8_byte_names_file_and_row(tmp_path, capsys):
    root = make_lumia_release(tmp_path / "rel")
    path = root / "clinician-instruction-responses.tsv"
    data = path.read_bytes().replace(b"85 bpm", b"85 \xe9bpm", 1)
    path.write_bytes(data)
    code, out = run_validate(capsys, root)
    assert code == 1
    problem = next(line for line in out if line.startswith("problem:"))
    assert "clinician-instruction-responses.tsv:line 2" in problem and "data row 1" in problem and "0xe9" in problem
    refs = load_release(root).references
    assert "\ufffd" in refs.clinician_response.iloc[0]  # kept, with the byte replaced


def test_unparseable_ranks_and_ragged_rows_are_reported_not_dropped(tmp_path):
    root = make_lumia_release(tmp_path / "rel")
    path = root / "clinician-reviewed-model-responses.tsv"
    lines = path.read_text().splitlines()
    fields = lines[1].split("\t")
    fields[8] = "first"
    lines[1] = "\t".join(fields)
    lines.append("3\tonly three\tfields")
    path.write_text("\n".join(lines) + "\n")
    problems = []
    df = read_table(path, problems)
    assert len(df) == 4
    assert any("row 5 has 3 fields" in str(p) for p in problems)
    release = load_release(root)
    msgs = [str(p) for p in release.problems]
    assert any("model_rank 'first' is not a number" in m and ":row 1" in m for m in msgs)
    assert release.model_responses.model_rank.isna().sum() == 1


def test_unusable_release_raises(tmp_path):
    with pytest.raises(UnusableReleaseError):
        load_release(tmp_path / "missing")


def test_console_script_never_prints_a_traceback(tmp_path):
    exe = Path(sys.executable).parent / "medalign"
    if not exe.exists():
        pytest.skip("the medalign console script is not installed in this environment")
    out = subprocess.run([str(exe), "validate", str(tmp_path / "nope")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
