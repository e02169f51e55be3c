"""What the share-safe scan catches, tried as an adversarial user would: error messages, script and
style contents, person_ids however written, record dates, text in figures, short fragments."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from helpers import write_notebook

from medalign_utils.config import SuiteConfig
from medalign_utils.data import load_release
from medalign_utils.reports import run_suite
from medalign_utils.reports.scan import SHINGLE_WORDS, SensitiveIndex, dates_in

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


def test_record_dates_are_flagged_in_every_common_form_years_and_relative_days_are_not(real_like, real_index):
    root, _ = real_like
    ev = load_release(root).events(progress=False)
    day = ev.timestamp.dropna().iloc[5]
    forms = [
        f"{day:%Y-%m-%d}",
        f"{day.month}/{day.day}/{day.year}",
        f"{day:%d %b %Y}",
        f"{day:%B %d, %Y}",
        f"{day:%Y/%m/%d}",
        f"{day:%m/%d/%y}",
        f"{day:%Y%m%d}",
        f"{day:%d.%m.%Y}",
        f"{day:%Y-%m-%dT%H:%M:%S}",
        f"{day:%Y-%b-%d}",
        f"{day:%b %d %Y}",
        f"{day:%d-%b-%Y}".upper(),
        f"{day:%Y}\u2010{day:%m}\u2212{day:%d}",  # a Unicode hyphen and a minus sign
    ]
    for form in forms:
        assert any("full dates" in k for k in real_index.scan(f"<td>{form}</td><td>Hemoglobin 13.2</td>")), form
    # matplotlib's yearless tick labels of a record's day
    assert any("month-day" in k for k in real_index.scan(f"<svg><text>{day:%b-%d}</text></svg>"))
    assert real_index.scan(f"records span {day.year} to {day.year + 3}; median 412 days") == []
    assert dates_in("on 2020-03-04") == {"2020-03-04"}
    assert dates_in("3/4/2020") == {"2020-03-04", "2020-04-03"}  # month-first and day-first both
    assert dates_in("14.03.2019 and 20140803 and August 3rd, 2014") == {"2019-03-14", "2014-08-03"}
    assert dates_in("version 2.13.0, 1.2.3, 20 tokens per second") == set()


def test_text_in_figures_is_scanned_svg_text_and_raster_flagged(real_like, real_index):
    root, _ = real_like
    question = load_release(root).instructions.question.iloc[0]
    svg = f'<svg><g id="text_1"><text x="3" y="4">{question}</text></g></svg>'
    assert real_index.scan(svg)
    import base64

    embedded = f'<img src="data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()}"/>'
    assert real_index.scan(embedded) and not any("raster" in k for k in real_index.scan(embedded))
    assert any("raster" in k for k in real_index.scan('<img src="data:image/png;base64,iVBORw0KGgo="/>'))


def test_six_word_fragments_are_all_caught_and_template_phrases_are_not(real_like, real_index):
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
        i = int(rng.integers(0, len(words) - SHINGLE_WORDS))
        fragment = " ".join(words[i : i + SHINGLE_WORDS])
        w = _words(fragment)
        if len(w) != SHINGLE_WORDS:
            continue
        owners = shingle_patients.get(int(_shingle_hashes(w)[0]), set())
        if len(owners) >= len(by_patient):
            template.append(fragment)
        elif len(owners) == 1 and tested < 200:
            tested += 1
            caught += bool(real_index.scan(f"<p>{fragment}</p>"))
    assert tested == 200 and caught == 200  # every patient-specific six-word fragment
    assert template, "the synthetic notes share template phrases"
    assert all(real_index.scan(f"<p>{t}</p>") == [] for t in template[:50])  # no false alarm on them


def test_shingle_hashes_are_the_same_in_every_process():
    """An index pickled or cached by one process matches in another: no salted `hash()`."""
    from medalign_utils.reports import scan

    words = "the patient was started on metformin five hundred mg twice daily".split()
    script = (
        "import sys; from medalign_utils.reports import scan; "
        "print(','.join(map(str, scan._shingle_hashes(sys.argv[1].split()).tolist())))"
    )
    other = subprocess.run([sys.executable, "-c", script, " ".join(words)], capture_output=True, text=True, check=True)
    ours = ",".join(map(str, scan._shingle_hashes(words).tolist()))
    assert ours and other.stdout.strip() == ours


def test_no_false_alarm_from_the_page_templates_geometry_or_version_strings(tmp_path):
    """A cohort whose record dates are every date the page template's numbers could form (its icons'
    path data, base64 SVGs in its stylesheet) and a kernel version's: its pages pass the scan."""
    from helpers import template_dates, template_page

    from medalign_utils.reports.scan import without_geometry

    page, formable = template_page(tmp_path), template_dates(tmp_path)
    assert len(formable) >= 4 and "2019-04-10" in formable  # one the issue saw
    index = SensitiveIndex.from_texts({}, [], dates=formable)
    assert index.scan(page) == []
    # The same dates as text a reader sees are found, in the page and inside an SVG's text.
    assert index.scan(page.replace("<p>python", "<p>seen 2019-04-10; python")) == ["1 full dates from the records"]
    svg = '<svg><path d="m10.04.19 2 3"/><text x="10.04" y="19">on 10.04.2019</text></svg>'
    assert without_geometry(svg).count('""') == 3 and "full dates from the records" in index.scan(svg)[0]
    assert index.scan('<svg><path d="m10.04.19 2 3"/></svg>') == []
    # Geometry that holds words is not geometry: it is read.
    assert index.scan('<svg><path d="seen on 2019-04-10"/></svg>') == ["1 full dates from the records"]


def test_numeric_ids_zero_padded_and_rows_a_table_widget_embeds_are_caught():
    note = "the patient was admitted overnight with chest pain radiating to the left arm and jaw"
    index = SensitiveIndex.from_texts({"124835": [note]}, ["124835"])
    assert index.scan("record 000124835 was read") == ["1 person_ids"]
    assert index.scan("a count of 124835000 and 1248350") == []  # digits around it are another number
    # A table widget (itables, DataTables) embeds its rows as data in the page's script.
    rows = json.dumps({"data": [[i, w] for i, w in enumerate(note.split())], "columns": ["i", "w"]})
    page = f'<table id="t"></table><script type="module">new DataTable(document.getElementById("t"), {rows});</script>'
    assert index.scan(page)[0].endswith("passages of record, instruction or response text")
