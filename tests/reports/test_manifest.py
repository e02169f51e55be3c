"""What leaves a run is exactly what was scanned: names are read, files the run did not admit are
removed whatever their time stamps, a run that withheld anything fails and bundles nothing, PDFs are
printed without scripts and scanned, a killed run's debris is removed by the next run, and two runs
into one folder each end the way their own notebooks deserve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nbformat
import pytest
from helpers import REPO, write_notebook

from medalign_utils.reports.manifest import Snapshot, debris, recover
from medalign_utils.reports.scan import ShareSafeWriter

# The cells below read a note, a person_id and a record date with the standard library only.
TRACES = (
    "import glob, os, shutil, xml.etree.ElementTree as ET\n"
    "from pathlib import Path\n"
    "trees = [ET.parse(f).getroot() for f in sorted(glob.glob(data_dir + '/ehrs/*.xml'))]\n"
    "note = max((e.text or '' for t in trees for e in t.iter('event') if e.get('type') == 'note'), key=len)[:600]\n"
    "pid = trees[0].get('person_id')\n"
)


def _medalign(*args, cwd=REPO):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "medalign_utils.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def _pid_and_note(release: Path) -> tuple[str, str]:
    found = {"data_dir": str(release)}
    exec(TRACES, found)
    return found["pid"], found["note"]


def _nothing_of(out: Path, pid: str, note: str) -> None:
    fragment = " ".join(note.split()[10:16])
    for path in out.rglob("*"):
        assert pid not in path.name, path
        if path.is_file() and path.suffix != ".zip":
            text = path.read_text(errors="replace")
            assert pid not in text and fragment not in text, path
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    assert pid not in member
                    assert pid.encode() not in zf.read(member), member


def _run_dir(out: Path) -> Path:
    return out / json.loads((out / "run.json").read_text())["run_id"]


@pytest.mark.slow(seconds=40)
def test_a_leaking_name_or_an_old_copied_file_fails_the_run_and_nothing_of_it_stays(real_like, tmp_path):
    root, _ = real_like
    pid, note = _pid_and_note(root)
    out = tmp_path / "reports"
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    # The run folder, not the folder 02 makes under --out (named by a person_id).
    run_dir = f"next(p for p in Path({str(out)!r}).iterdir() if p.is_dir() and p.name.endswith('-release'))"
    old = tmp_path / "old.txt"
    old.write_text(note)
    os.utime(old, (0, 0))  # a file from 1970: no time stamp says this run made it
    cases = {
        # a table named by a person_id: its name leaks, its content does not
        "01_table_name": "import pandas as pd\nfrom medalign_utils.reports import record_table\n"
        "record_table(pid, pd.DataFrame({'n': [1]}))",
        "02_folder_name": f"d = Path({str(out)!r}) / pid\nd.mkdir()\n(d / 'counts.txt').write_text('3')",
        "03_copy2_run_folder": f"shutil.copy2({str(old)!r}, {run_dir} / 'old.txt')",
        "04_copy2_out": f"shutil.copy2({str(old)!r}, Path({str(out)!r}) / 'old.txt')",
        "05_headline_png": f"(({run_dir}) / 'headline.png').write_bytes(b'\\x89PNG' + note.encode())",
    }
    for name, code in cases.items():
        write_notebook(nbs / f"{name}.ipynb", TRACES + code)
    proc = _medalign("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out), "--bundle")
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1, console[-3000:]
    assert "bundle not written" in console and not list(out.glob("*.zip"))
    record = json.loads((out / "run.json").read_text())
    assert record["withheld"] >= 4
    run = _run_dir(out)
    assert not (run / "tables").exists() or not list((run / "tables").iterdir())
    assert not (out / "old.txt").exists() and not (run / "old.txt").exists() and not (run / "headline.png").exists()
    assert not [p for p in out.iterdir() if p.name == pid]
    statuses = {n["name"]: n["status"] for n in record["notebooks"]}
    assert statuses["03_copy2_run_folder"] == "leak" and statuses["05_headline_png"] == "leak"
    _nothing_of(out, pid, note)
    assert pid not in console and " ".join(note.split()[10:16]) not in console
    # What stays is what the run admitted, listed with its hash in the run folder's manifest.
    manifest = json.loads((run / "manifest.json").read_text())["files"]
    assert f"{run.name}/run.json" in manifest and "run.json" in manifest
    for rel in manifest:
        assert (out / rel).is_file(), rel


@pytest.mark.slow(seconds=40)
def test_a_clean_real_run_bundles_only_admitted_files_and_pdfs_without_script_text(real_like, tmp_path):
    from medalign_utils.reports.pages import find_chromium, pdf_text

    root, _ = real_like
    pid, _ = _pid_and_note(root)
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    codes = ",".join(str(ord(c)) for c in pid)  # the page's HTML never holds the id: only its script makes it
    write_notebook(
        nbs / "01_script.ipynb",
        "from IPython.display import HTML, display\n"
        f"display(HTML('<p id=\"x\">aggregate only</p><script>var t = String.fromCharCode({codes});'"
        f"'document.title = t; document.getElementById(\"x\").textContent = t;</script>'))",
    )
    out = tmp_path / "reports"
    proc = _medalign("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out), "--bundle")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    run = _run_dir(out)
    with zipfile.ZipFile(out / f"{run.name}.zip") as zf:
        names = zf.namelist()
        manifest = json.loads((run / "manifest.json").read_text())["files"]
        for member in names:
            if member.startswith(run.name + "/") and not member.endswith(("README.txt", "config.yaml", ".pdf")):
                assert member in manifest, member  # nothing the run did not admit
        assert not [m for m in names if m.endswith(".png")]
        if find_chromium():
            pdf = run / "01_script.pdf"
            text = pdf_text(pdf)
            assert "aggregate only" in text and pid not in text  # printed with the script off
            assert f"{run.name}/01_script.pdf" in names and "01_script.pdf" in " ".join(manifest)


def test_a_pdf_whose_text_or_title_leaks_is_withheld(real_like, real_index, tmp_path):
    from pypdf import PdfWriter

    from medalign_utils.reports.pages import _withheld_pdf

    root, _ = real_like
    pid, _ = _pid_and_note(root)
    pdf = tmp_path / "page.pdf"
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.add_metadata({"/Title": f"report for {pid}"})
    with open(pdf, "wb") as handle:
        writer.write(handle)
    scan = ShareSafeWriter(real_index)
    assert _withheld_pdf(pdf, scan) and not pdf.exists()
    assert scan.withheld and "person_id" in scan.withheld[0]


def test_the_sweep_follows_the_manifest_not_the_clock(tmp_path, real_index, real_like):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("from an earlier run")
    before = Snapshot.of(out)
    writer = ShareSafeWriter(real_index)
    writer.write(out / "page.html", "<p>aggregate</p>")
    (out / "copied.txt").write_text("harmless")
    os.utime(out / "copied.txt", (0, 0))
    (out / "earlier.txt").write_text("changed after the start")  # changed: not admitted
    (out / "page.html").write_text("<p>changed after the scan</p>")  # admitted bytes no longer hold
    files, folders = debris(out, before, writer.manifest)
    assert sorted(p.name for p in files) == ["copied.txt", "earlier.txt", "page.html"] and folders == []
    removed = writer.sweep(out, before)
    assert set(removed) == {"copied.txt", "earlier.txt", "page.html"}
    assert all(kinds == [] for kinds in removed.values())  # nothing leaked; removed all the same
    assert [p.name for p in out.iterdir()] == []


def _two_cell_notebook(path: Path, first: str, second: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("data_dir = 'x'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(first),
        nbformat.v4.new_code_cell(second),
    ]
    nbformat.write(nb, path)


@pytest.mark.slow(seconds=40)
def test_a_killed_runs_debris_is_removed_by_the_next_run_before_anything_else(real_like, tmp_path):
    root, _ = real_like
    pid, note = _pid_and_note(root)
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    # The first cell's output (the note) is saved into the executed notebook before the second
    # cell kills `medalign run` (and the kernel with it): no scan ever reads that notebook.
    _two_cell_notebook(
        nbs / "01_killed.ipynb",
        TRACES
        + f"print(note)\n(Path({str(out)!r}) / 'stray.txt').write_text(pid)\n"
        + f"(Path({str(out)!r}) / pid).write_text('x')",
        "import time\ntime.sleep(2)\nos.kill(os.getppid(), 9)\nos._exit(0)",
    )
    proc = _medalign("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out))
    assert proc.returncode == -signal.SIGKILL
    assert list((out / ".journal").glob("*.jsonl"))  # the killed run's journal stayed
    assert (out / "stray.txt").exists()
    write_notebook(nbs / "01_killed.ipynb", "print('fine now')")
    proc = _medalign("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "left by a run that did not finish" in proc.stderr
    assert not list((out / ".journal").glob("*.jsonl"))
    _nothing_of(out, pid, note)
    record = json.loads((out / "run.json").read_text())
    assert any("01_killed.ipynb" in r for r in record["recovered"]) and "stray.txt" in record["recovered"]
    # The file named by a person_id is gone and its name withheld, without failing this run.
    assert any("withheld by the share-safe scan" in r for r in record["recovered"]) and record["withheld"] == 0


def test_recover_leaves_what_the_killed_run_admitted(tmp_path):
    from medalign_utils.reports.manifest import RunJournal

    out = tmp_path / "out"
    out.mkdir()
    journal = RunJournal(out, "run-1", scanned=True, snapshot=Snapshot.of(out))
    writer = ShareSafeWriter(None, journal)
    (out / "run-1").mkdir()
    writer.write(out / "run-1" / "index.html", "<p>fine</p>")
    (out / "run-1" / "partial.ipynb").write_text("{}")
    assert recover(out) == ["run-1/partial.ipynb"]
    assert (out / "run-1" / "index.html").exists() and not (out / ".journal" / "run-1.jsonl").exists()


@pytest.mark.slow(seconds=60)
def test_two_runs_into_one_folder_each_end_by_their_own_notebooks(real_like, tmp_path):
    root, _ = real_like
    out = tmp_path / "reports"
    procs = {}
    for name, code in (("leaking", TRACES + "import time\ntime.sleep(3)\nprint(note)"), ("harmless", "print('hello')")):
        nbs = tmp_path / name
        nbs.mkdir()
        write_notebook(nbs / f"01_{name}.ipynb", code)
        cmd = [sys.executable, "-m", "medalign_utils.cli", "run", "--data", str(root), "--notebooks", str(nbs)]
        procs[name] = subprocess.Popen(
            [*cmd, "--out", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(0.5)
    codes = {name: p.wait(timeout=300) for name, p in procs.items()}
    assert codes == {"leaking": 1, "harmless": 0}
    records = [json.loads(p.read_text()) for p in out.glob("*/run.json")]
    assert len(records) == 2
    harmless = next(r for r in records if r["notebooks"][0]["name"] == "01_harmless")
    assert not harmless["removed_by_scan"] and harmless["notebooks"][0]["status"] == "ok"
    assert (out / harmless["run_id"] / "01_harmless.html").exists()


def test_out_that_is_a_file_and_validate_given_a_file_say_so_in_one_line(tiny_cohort, tmp_path):
    target = tmp_path / "reports"
    target.write_text("not a folder")
    proc = _medalign("run", "--data", str(tiny_cohort), "--out", str(target), "--only", "01")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "is a file, not a folder" in lines[0], proc.stderr
    proc = _medalign("validate", str(tiny_cohort / "clinician-instruction-responses.tsv"))
    assert proc.returncode == 2 and "is a file, not a release folder" in proc.stderr, proc.stderr


@pytest.mark.slow(seconds=30)
def test_ctrl_c_to_the_process_group_ends_the_run_within_10_s_with_no_kernel_and_nothing_unscanned(real_like, tmp_path):
    root, _ = real_like
    pid, note = _pid_and_note(root)
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    # The note reaches the executed notebook, then the kernel spins in C code (a regular expression
    # that backtracks for minutes), where a signal is only seen when it returns.
    kernel_pid = tmp_path / "kernel.pid"
    first = TRACES + f"print(note)\nPath({str(kernel_pid)!r}).write_text(str(os.getpid()))"
    _two_cell_notebook(nbs / "01_busy.ipynb", first, "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "medalign_utils.cli",
        "run",
        "--data",
        str(root),
        "--notebooks",
        str(nbs),
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline and not kernel_pid.exists():  # the first cell has run
        time.sleep(0.2)
    time.sleep(2)  # the second cell is running
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        code = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the run did not end within 10 s of Ctrl-C") from None
    assert code == 130 and time.time() - sent < 10
    kernel = int(kernel_pid.read_text())
    for _ in range(20):  # the kernel is gone (a zombie is reaped by its parent, which is gone too)
        if not Path(f"/proc/{kernel}").exists() or "Z" in Path(f"/proc/{kernel}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        os.kill(kernel, signal.SIGKILL)
        raise AssertionError("Ctrl-C left the kernel running")
    assert not list(out.glob("*/01_busy.*"))
    _nothing_of(out, pid, note)
