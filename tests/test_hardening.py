"""The promises to a researcher bound by the data use agreement, tried as an adversarial user would:
reports that cannot leak, a data guard that cannot be skipped, a reader that loses nothing."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_notebook

from medalign_utils import cli
from medalign_utils.config import SuiteConfig
from medalign_utils.data import SYNTHETIC_MARKER, load_release
from medalign_utils.generation import DataGuard, DataGuardError, GenerationSettings, OpenAICompatibleBackend
from medalign_utils.reports import run_suite
from medalign_utils.reports.scan import SensitiveIndex, dates_in


def unmark(src: Path, dst: Path, prefix: str = "PT-") -> tuple[Path, dict[str, str]]:
    """A copy of a synthetic cohort that counts as the real release: no marker, and person_ids
    rewritten with letters and a hyphen (`PT-<id>`) in every table, file name and record."""
    shutil.copytree(src, dst)
    (dst / SYNTHETIC_MARKER).unlink()
    ids = {p.stem: f"{prefix}{p.stem}" for p in (dst / "ehrs").glob("*.xml")}
    pattern = re.compile("|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True)))
    for path in [*dst.glob("*.tsv"), *(dst / "ehrs").glob("*.xml")]:
        path.write_text(pattern.sub(lambda m: ids[m.group(0)], path.read_text()))
    for old, new in ids.items():
        (dst / "ehrs" / f"{old}.xml").rename(dst / "ehrs" / f"{new}.xml")
    return dst, ids


@pytest.fixture(scope="module")
def real_like(tiny_cohort, tmp_path_factory):
    return unmark(tiny_cohort, tmp_path_factory.mktemp("real") / "release")


@pytest.fixture(scope="module")
def real_index(real_like):
    return SensitiveIndex.from_release(load_release(real_like[0]))


# ------------------------------------------------------------------ share-safe scan


def test_error_messages_with_patient_text_are_scanned_everywhere(real_like, tmp_path, capsys):
    root, _ = real_like
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(
        nbs / "01_crash.ipynb",
        "from medalign_utils.data import load_release\n"
        "ev = load_release(data_dir).events(progress=False)\n"
        "float(ev[ev.event_type == 'note'].text.iloc[0][:200])",
    )
    out = tmp_path / "reports"
    assert not run_suite(config=SuiteConfig(data_dir=str(root)), out=out, progress=True, notebooks_dir=nbs)
    console = capsys.readouterr()
    note = load_release(root).events(progress=False).query("event_type == 'note'").text.iloc[0][:200]
    fragment = " ".join(note.split()[2:10])
    record = json.loads((out / "run.json").read_text())
    assert "withheld by the share-safe scan" in record["notebooks"][0]["error"]
    for path in out.rglob("*"):
        if path.is_file():
            assert fragment not in path.read_text(errors="replace").replace("\\n", " "), path
    assert fragment not in console.out + console.err


def test_script_and_style_contents_are_scanned_and_every_copy_of_a_leak_removed(real_like, real_index, tmp_path):
    root, _ = real_like
    question = load_release(root).instructions.question.iloc[0]
    assert real_index.scan(f"<html><script>var q = {json.dumps(question)};</script></html>")
    assert real_index.scan(f"<style>/* {question} */</style>")
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(
        nbs / "01_script.ipynb",
        "from IPython.display import HTML, display\n"
        "from medalign_utils.data import load_release\n"
        "q = load_release(data_dir).instructions.question.iloc[0]\n"
        "display(HTML('<script>var x = ' + repr(q) + ';</script>'))",
    )
    out = tmp_path / "reports"
    assert not run_suite(config=SuiteConfig(data_dir=str(root)), out=out, progress=False, notebooks_dir=nbs)
    record = json.loads((out / "run.json").read_text())
    assert record["notebooks"][0]["status"] == "leak"
    run_dir = out / record["run_id"]
    assert not list(run_dir.glob("01_script*")) and not list((out / ".cache").glob("01_script*"))


def test_person_ids_are_matched_however_written(real_like, real_index):
    _, ids = real_like
    pid = next(iter(ids.values()))
    for page in (f"<td>{pid}</td>", f"empty EHR ({pid}.xml)", f"EHR_{pid.lower()}.xml", f"id={pid.upper()}!"):
        assert any("person_ids" in k for k in real_index.scan(page)), page
    short = SensitiveIndex.from_texts({}, ["ab-7"])
    assert short.scan("record ab-7 done") and short.scan("AB-7") and not short.scan("slab-77")


def test_record_dates_are_flagged_years_and_relative_days_are_not(real_like, real_index):
    root, _ = real_like
    ev = load_release(root).events(progress=False)
    day = ev.timestamp.dropna().iloc[5]
    assert any("dates" in k for k in real_index.scan(f"<td>{day:%Y-%m-%d}</td><td>Hemoglobin 13.2</td>"))
    assert any("dates" in k for k in real_index.scan(f"seen {day.month}/{day.day}/{day.year}"))
    assert real_index.scan(f"records span {day.year} to {day.year + 3}; median 412 days") == []
    assert dates_in("on 2020-03-04 and 3/4/2020") == {"2020-03-04"}


def test_text_in_figures_is_scanned_svg_text_and_raster_flagged(real_like, real_index):
    root, _ = real_like
    question = load_release(root).instructions.question.iloc[0]
    svg = f'<svg><g id="text_1"><text x="3" y="4">{question}</text></g></svg>'
    assert real_index.scan(svg)
    import base64

    embedded = f'<img src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}"/>'
    assert real_index.scan(embedded) and not any("raster" in k for k in real_index.scan(embedded))
    assert any("raster" in k for k in real_index.scan('<img src="data:image/png;base64,iVBORw0KGgo="/>'))


def test_eight_word_fragments_are_all_caught_and_template_phrases_are_not(real_like, real_index):
    from medalign_utils.reports.scan import _shingle_hashes, _words

    root, _ = real_like
    release = load_release(root)
    notes = release.events(progress=False).query("event_type == 'note'")
    rng = np.random.default_rng(0)
    by_patient = {pid: list(g.text) for pid, g in notes.groupby("person_id", observed=True)}
    everything = {pid: list(texts) for pid, texts in by_patient.items()}
    for df in (release.references, release.model_responses):  # every text of a patient, as the index has them
        for col in ("clinician_response", "model_response", "question", "evidence"):
            if col in df.columns:
                for pid, t in zip(df.person_id, df[col].dropna().astype(str)):
                    everything.setdefault(pid, []).append(t)
    shingle_patients: dict[int, set] = {}
    for pid, texts in everything.items():
        for t in texts:
            for h in set(_shingle_hashes(_words(t)).tolist()):
                shingle_patients.setdefault(h, set()).add(pid)
    by_patient = {pid: " ".join(texts) for pid, texts in by_patient.items()}
    caught = tested = 0
    template = []
    for _ in range(4000):
        pid = list(by_patient)[rng.integers(len(by_patient))]
        words = by_patient[pid].split()
        i = int(rng.integers(0, len(words) - 8))
        fragment = " ".join(words[i : i + 8])
        w = _words(fragment)
        if len(w) != 8:
            continue
        owners = shingle_patients.get(int(_shingle_hashes(w)[0]), set())
        if len(owners) >= len(by_patient):
            template.append(fragment)
        elif len(owners) == 1 and tested < 200:
            tested += 1
            caught += bool(real_index.scan(f"<p>{fragment}</p>"))
    assert tested == 200 and caught == 200  # every patient-specific 8-word fragment
    assert template, "the synthetic notes share template phrases"
    assert all(real_index.scan(f"<p>{t}</p>") == [] for t in template[:50])  # no false alarm on them


# ------------------------------------------------------------------ data guard


def test_endpoint_backend_cannot_be_built_without_or_around_the_guard(real_like, tiny_cohort):
    real = load_release(real_like[0])
    assert not real.is_synthetic
    with pytest.raises(TypeError):
        OpenAICompatibleBackend("https://api.example.com/v1", "gpt", GenerationSettings())  # no guard: refused
    guard = DataGuard.for_release(real, allowed_hosts=[])
    with pytest.raises(DataGuardError, match="refusing to send MedAlign data to api.example.com"):
        OpenAICompatibleBackend(["http://127.0.0.1:9/v1", "https://api.example.com/v1"], "m", guard=guard)
    assert OpenAICompatibleBackend("http://127.0.0.1:9/v1", "m", guard=guard).base_url == "http://127.0.0.1:9/v1"
    allowed = DataGuard.for_release(real, allowed_hosts=["phi.hospital.org"])
    assert OpenAICompatibleBackend("https://phi.hospital.org/v1", "m", guard=allowed)
    synthetic = DataGuard.for_release(load_release(tiny_cohort))
    assert OpenAICompatibleBackend("https://api.example.com/v1", "m", guard=synthetic)


def test_allowed_hosts_must_be_a_list():
    with pytest.raises(DataGuardError, match="allowed_hosts must be a list"):
        DataGuard(False, "example.org")
    with pytest.raises(DataGuardError, match="allowed_hosts must be a list"):
        DataGuard.for_release(type("R", (), {"is_synthetic": False})(), allowed_hosts="e")


@pytest.mark.parametrize("kind", ["directory", "foreign text", "stale fingerprint", "link"])
def test_only_the_generators_own_marker_makes_a_release_synthetic(tiny_cohort, tmp_path, kind):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    marker = root / SYNTHETIC_MARKER
    assert load_release(root).is_synthetic
    if kind == "directory":
        marker.unlink()
        marker.mkdir()
    elif kind == "foreign text":
        marker.write_text("synthetic, trust me\n")
    elif kind == "stale fingerprint":
        tsv = root / "clinician-reviewed-model-responses.tsv"
        tsv.write_text(tsv.read_text() + "\n")  # the files changed since the marker was written
    else:
        real = tmp_path / "marker-elsewhere"
        shutil.move(marker, real)
        marker.symlink_to(real)
    release = load_release(root)
    assert not release.is_synthetic and release.planted_truth is None
    assert any(p.file == SYNTHETIC_MARKER for p in release.problems)
    with pytest.raises(DataGuardError):
        DataGuard.for_release(release).check("https://api.example.com/v1")


# ------------------------------------------------------------------ reader and labels


def _responses_path(root: Path) -> Path:
    return root / "clinician-reviewed-model-responses.tsv"


def test_out_of_range_labels_are_reported_per_row_and_left_out(tiny_cohort, tmp_path, capsys):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    df = pd.read_csv(_responses_path(root), sep="\t", dtype=str, keep_default_na=False)
    bad = {0: ("binary_correct", "2"), 1: ("model_rank", "7"), 2: ("model_rank", "0"), 3: ("model_rank", "-1")}
    bad.update({4: ("model_rank", "1e9"), 5: ("model_rank", "inf")})
    for i, (col, v) in bad.items():
        df.loc[i, col] = v
    df.to_csv(_responses_path(root), sep="\t", index=False)
    assert cli.main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    for i, (col, _v) in bad.items():
        assert re.search(rf"clinician-reviewed-model-responses.tsv:row {i + 1}: {col} .* left out", out), (i, col)
    assert cli.main(["table3", str(root), "--resamples", "20"]) == 0
    captured = capsys.readouterr()
    t3 = pd.read_csv(io.StringIO(captured.out))
    assert t3.correct_pct.between(0, 100).all() and t3.mean_rank.between(1, 6).all()
    assert "no usable model_rank" in captured.err and "no usable binary_correct" in captured.err


def test_parse_cache_is_keyed_by_content_and_person(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    files = sorted((root / "ehrs").glob("*.xml"))
    shutil.copyfile(files[0], files[1])  # two patients, byte-identical files
    events = load_release(root).events(progress=False)
    counts = events.groupby("person_id", observed=True).size()
    assert counts[files[0].stem] == counts[files[1].stem] > 0


def test_large_fields_are_read_and_swallowed_csv_rows_reported(tiny_cohort, tmp_path):
    from medalign_utils.data import read_table

    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    df = pd.read_csv(_responses_path(root), sep="\t", dtype=str, keep_default_na=False)
    df.loc[0, "model_response"] = "x" * 200_000  # over csv's 128 KB default
    df.to_csv(_responses_path(root), sep="\t", index=False)
    release = load_release(root)
    assert release.model_responses.model_response.str.len().max() == 200_000
    csv_path = tmp_path / "t.csv"
    lines = ["instruction_id,question,model_name"] + [f"{i},q{i},m" for i in range(10)]
    lines[3] = '2,"an unbalanced quote,m'
    csv_path.write_text("\n".join(lines) + "\n")
    problems = []
    table = read_table(csv_path, problems)
    lost = [p for p in problems if "row lost" in p.message]
    assert len(table) + len(lost) >= 10 - 1 and len(lost) >= 4
    assert all(p.where.startswith("line ") for p in lost)


def test_header_only_responses_give_a_clear_error(tiny_cohort, tmp_path, capsys):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = _responses_path(root)
    path.write_text(path.read_text().splitlines()[0] + "\n")
    for args in (["table3", str(root)], ["table4", str(root), "--metrics", "rougeL", "--quiet"]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no reviewed responses" in err[0] and "Traceback" not in err[0]


def test_utf16_records_are_decoded_and_reported(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = sorted((root / "ehrs").glob("*.xml"))[0]
    text = path.read_text()
    path.write_bytes(text.encode("utf-16"))
    release = load_release(root)
    assert release.ehr_text(path.stem) == text  # no NUL-interleaved text reaches a prompt
    events = release.events(progress=False)
    assert (events.person_id == path.stem).sum() > 0
    assert any("utf-16" in p.message for p in release.problems)


def test_links_outside_the_release_are_reported_and_followed_only_when_allowed(tiny_cohort, tmp_path):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    outside = tmp_path / "elsewhere.xml"
    first = sorted((root / "ehrs").glob("*.xml"))[0]
    shutil.move(first, outside)
    first.symlink_to(outside)
    release = load_release(root)
    assert first.stem not in release.ehr_files
    assert any("outside the release folder; skipped" in p.message for p in release.problems)
    allowed = load_release(root, follow_external_links=True)
    assert first.stem in allowed.ehr_files


def test_reading_a_file_a_live_run_appends_to_loses_nothing_and_two_writers_are_refused(tmp_path):
    from medalign_utils.generation import ResultStore, StoreBusyError, read_results

    out = tmp_path / "g.jsonl"
    rec = {"instruction_id": "i1", "system": "s", "strategy": "recent", "context": 1, "prompt_hash": "h"}
    with ResultStore(out) as writer:
        writer.append([{**rec, "answer": "a", "error": None}])
        with open(out, "a") as f:
            f.write('{"instruction_id": "i2", "system": "s", "strat')  # a line still being written
        size = out.stat().st_size
        assert list(read_results(out).instruction_id) == ["i1"]
        assert out.stat().st_size == size  # the reader cut nothing
        with pytest.raises(StoreBusyError, match="refusing a second writer"):
            ResultStore(out)
    with ResultStore(out) as again:  # the next writer repairs, under its lock
        assert again.repaired_bytes > 0


def test_table3_csv_cells_cannot_become_formulas(tiny_cohort, tmp_path, capsys):
    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    path = _responses_path(root)
    path.write_text(path.read_text().replace("gpt4_2k", '=HYPERLINK("http://x")').replace("mpt7b_instruct_2k", "@mpt"))
    assert cli.main(["table3", str(root), "--resamples", "20", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "\"'=HYPERLINK(" in out and '"\'@mpt"' in out
    assert not re.search(r"(^|,)[=@+]", out, re.M)


def test_read_only_cache_falls_back_with_a_warning(tiny_cohort, tmp_path, monkeypatch, capsys):
    if os.geteuid() == 0:
        # root ignores directory permissions: make the cache path a file, which no one can write into.
        blocked = tmp_path / "cache"
        blocked.write_text("not a folder")
    else:
        blocked = tmp_path / "cache"
        blocked.mkdir()
        blocked.chmod(0o500)
    monkeypatch.setenv("MEDALIGN_CACHE_DIR", str(blocked / "inner"))
    with pytest.warns(UserWarning, match="cannot be written"):
        code = cli.main(["validate", str(tiny_cohort)])
    assert code == 0, capsys.readouterr()


# ------------------------------------------------------------------ the whole suite on an unmarked cohort


def test_whole_suite_on_an_unmarked_cohort_leaks_nothing_anywhere(real_like, tmp_path):
    """Person_ids with letters and hyphens, one EHR empty: no person_id, note fragment, question,
    reference, response or full record date anywhere under the output folder, console included."""
    root, ids = real_like
    work = tmp_path / "work"
    shutil.copytree(root, work / "release")
    release_dir = work / "release"
    empty = sorted((release_dir / "ehrs").glob("*.xml"))[-1]
    empty.write_text("")
    out = work / "reports"
    overrides = {
        "data_dir": str(release_dir),
        "context_lengths": [2048, 8192],
        "n_resamples": 100,
        "prompts_path": str(work / "data" / "prompts.parquet"),
        "generations_path": str(work / "data" / "generations.jsonl"),
        "notebooks": {
            "02_context_truncation": {"export_contexts": [2048], "export_strategies": ["recent"]},
            "03_model_generation": {"max_items": 2, "max_new_tokens": 8, "generation_strategies": ["recent"]},
            "05_metric_correlation": {"metrics": ["rougeL", "chrf++"]},
            "06_llm_judge": {"judgments_dir": str(work / "data" / "judgments")},
        },
    }
    script = (
        "import json, sys\n"
        "from medalign_utils.reports import run_suite\n"
        f"ok = run_suite(overrides=json.loads({json.dumps(json.dumps(overrides))}), out={str(out)!r}, progress=True)\n"
        "sys.exit(0 if ok else 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    console = proc.stdout + proc.stderr
    record = json.loads((out / "run.json").read_text())
    statuses = {n["name"]: (n["status"], n["error"]) for n in record["notebooks"]}
    assert proc.returncode == 0 and all(s == "ok" for s, _ in statuses.values()), statuses
    assert record["scanned"] is True and record["data"]["synthetic"] is False

    release = load_release(release_dir)
    events = release.events(progress=False)
    texts = []
    for df, cols in (
        (release.instructions, ["question"]),
        (release.references, ["clinician_response"]),
        (release.model_responses, ["model_response"]),
    ):
        for c in cols:
            texts += [t for t in df[c].dropna().astype(str).unique() if len(t.split()) >= 4]
    notes = events[events.event_type == "note"].text.dropna().tolist()
    rng = np.random.default_rng(1)
    for note in rng.choice(notes, size=min(30, len(notes)), replace=False):
        words = note.split()
        i = int(rng.integers(0, max(1, len(words) - 12)))
        texts.append(" ".join(words[i : i + 12]))
    dates = set(events.timestamp.dropna().dt.strftime("%Y-%m-%d"))
    outputs = {str(p): p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()}
    outputs["console"] = console
    pid_pattern = re.compile("|".join(re.escape(p) for p in ids.values()), re.I)
    for where, content in outputs.items():
        flat = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", content.replace("\\n", " ")))
        assert not pid_pattern.search(content), (where, "person_id")
        assert not (dates & dates_in(content)), (where, "record date")
        for t in texts:
            assert re.sub(r"\s+", " ", t) not in flat, (where, t[:40])
