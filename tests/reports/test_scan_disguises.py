"""Note text, dates and person_ids in every disguise tried by an adversarial user, each in its own
notebook run through `medalign run` on an unmarked cohort: every run fails with the leaking page
named and removed, and leaves no trace under `--out` or on the console."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, write_notebook

# Each notebook's cell: `note` is a note of the record, `pid` a person_id, `day` a record date;
# read with the standard library only, so that each notebook starts fast.
TRACES = (
    "import glob, xml.etree.ElementTree as ET\n"
    "from datetime import datetime\n"
    "trees = [ET.parse(f).getroot() for f in sorted(glob.glob(data_dir + '/ehrs/*.xml'))]\n"
    "note = max((e.text or '' for t in trees for e in t.iter('event') if e.get('type') == 'note'), key=len)[:600]\n"
    "pid = trees[0].get('person_id')\n"
    "day = datetime.fromisoformat([e.get('timestamp') for e in trees[0].iter('entry')][7])\n"
)
PRELUDE = "import base64, html, os, sys, urllib.parse\nfrom IPython.display import HTML, SVG, display\n" + TRACES
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
DISGUISES = {
    "lt_gt": "display(HTML('<pre>K <3.5 and EF >55% ' + note + '</pre>'))",
    "lt_escaped": "print('K <3.5, EF >55%: ' + note)",
    "fullwidth": "print(''.join(chr(ord(c) + 0xFEE0) if '!' <= c <= '~' else c for c in note))",
    "zero_width": "print('\\u200b'.join(note))",
    "soft_hyphens": "print(' '.join('\\u00ad'.join(w) for w in note.split()))",
    "homoglyphs": "print(note.translate(str.maketrans('aeopcAEOPC', 'аеорсАЕОРС')))",
    "odd_spaces": "print('\\u2009'.join(note.split()))",
    "percent_encoded": "print(urllib.parse.quote(note))",
    "base64_svg": "display(HTML('<img src=\"data:image/svg+xml;base64,' + "
    "base64.b64encode(('<svg xmlns=\"http://www.w3.org/2000/svg\"><text>' + html.escape(note) + "
    "'</text></svg>').encode()).decode() + '\"/>'))",
    "js_string": "display(HTML(\"<script>var n = '\" + note.replace(\"'\", '').replace(' ', '\\\\u0020') + \"';</script>\"))",  # noqa: E501
    "attribute": "display(HTML('<span title=\"' + html.escape(note) + '\">hover</span>'))",
    "pandas_head": (
        "import pandas as pd\n"
        "notes = [e.text for t in trees for e in t.iter('event') if e.get('type') == 'note']\n"
        "display(pd.DataFrame({'event_type': 'note', 'text': notes}).head())"
    ),
    "pid_spaced": "print('patient', pid.replace('-', ' '))",
    "pid_unicode_hyphen": "print('patient', pid.replace('-', '\\u2011'))",
    "pid_homoglyph": "print('patient', pid.replace('P', 'Р').replace('T', 'Т'))",
    "date_day_mon_year": "print(day.strftime('%d %b %Y'))",
    "date_month_name": "print(day.strftime('%B %d, %Y'))",
    "date_slashes_ymd": "print(day.strftime('%Y/%m/%d'))",
    "date_two_digit_year": "print(day.strftime('%m/%d/%y'))",
    "date_compact": "print(day.strftime('%Y%m%d'))",
    "date_dotted": "print(day.strftime('%d.%m.%Y'))",
    "date_iso_time": "print(day.strftime('%Y-%m-%dT%H:%M:%S'))",
    "date_tick_labels": (
        "import matplotlib.pyplot as plt, matplotlib.dates as mdates\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([day, day + __import__('pandas').Timedelta(days=3)], [0, 1])\n"
        "ax.xaxis.set_major_formatter(mdates.DateFormatter('%b-%d'))\n"
        "plt.show()"
    ),
    "date_year_mon_day_tick": "print(day.strftime('%Y-%b-%d'))",
    "svg_raster": (
        f'display(SVG(\'<svg xmlns="http://www.w3.org/2000/svg"><image href="data:image/png;base64,{PNG}"/></svg>\'))'
    ),
    "css_raster": f"display(HTML('<div style=\"background:url(data:image/png;base64,{PNG})\">x</div>'))",
    "bmp_output": "display({'image/bmp': 'Qk0eAAAAAAAAABoAAAAMAAAAAQABAAEAGAAAAP8A'}, raw=True)",
    "jpeg_output": "display({'image/jpeg': '/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAP'}, raw=True)",
    "gif_output": "display({'image/gif': 'R0lGODlhAQABAAAAACw='}, raw=True)",
    # Issue 32's accidental disguises: SVG text by position, direction, encodings, split words, dates, ids.
    "svg_tspan_words": (
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"><text y=\"20\">' + ''.join("
        "f'<tspan dx=\"4\">{html.escape(w)}</tspan>' for w in note.split()[:40]) + '</text></svg>'))"
    ),
    "svg_tspan_letters": (
        "xs, parts = 0, []\n"
        "for ch in note[:300]:\n"
        "    if ch != ' ':\n"
        "        parts.append(f'<tspan x=\"{xs}\">{html.escape(ch)}</tspan>')\n"
        "    xs += 7\n"
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\"><text y=\"20\">' + ''.join(parts) + '</text></svg>'))"
    ),
    "svg_text_per_letter": (
        "xs, parts = 0, []\n"
        "for ch in note[:300]:\n"
        "    if ch != ' ':\n"
        '        parts.append(f\'<text x="{xs}" y="20">{html.escape(ch)}</text>\')\n'
        "    xs += 7\n"
        "display(SVG('<svg xmlns=\"http://www.w3.org/2000/svg\">' + ''.join(parts) + '</svg>'))"
    ),
    "right_to_left_override": "print('\\u202e' + note[::-1])",
    "bdo_rtl": "display(HTML('<bdo dir=\"rtl\">' + html.escape(note[::-1]) + '</bdo>'))",
    "css_content_escapes": (
        "display(HTML('<style>.x::after { content: \"' + ''.join(f'\\\\{ord(c):x} ' for c in note[:300])"
        ' + \'"; }</style><div class="x"></div>\'))'
    ),
    "data_uri_any_type": (
        "display(HTML('<a href=\"data:application/octet-stream;base64,' + base64.b64encode(note.encode()).decode()"
        " + '\">file</a>'))"
    ),
    "base64_in_script": (
        "display(HTML('<script>var s = atob(\"' + base64.b64encode(note.encode()).decode() + '\");</script>'))"
    ),
    "bare_base64": "print(base64.b64encode(note.encode()).decode())",
    "double_percent_encoding": "print(urllib.parse.quote(urllib.parse.quote(note)))",
    "underscore_joined": "print('_'.join(note.split()))",
    "combining_marks": "print(''.join(c + '\\u0301' if c.isalpha() else c for c in note))",
    "tokenizer_word_marks": "print(''.join('\\u0120' + w for w in note.split()))",
    "one_word_per_row": "import pandas as pd\ndisplay(pd.DataFrame({'w': note.split()[:60]}))",
    "date_nth_of_month": "print(f\"{day.day}th of {day.strftime('%B %Y')}\")",
    "date_spaced_ymd": "print(day.strftime('%Y %m %d'))",
    "date_two_digit_year_first": "print(day.strftime('%y-%m-%d'))",
    "epoch_seconds": "import pandas as pd\ndisplay(pd.DataFrame({'t': [int(day.timestamp())]}))",
    "epoch_milliseconds": "import pandas as pd\ndisplay(pd.DataFrame({'t': [int(day.timestamp() * 1000)]}))",
    "epoch_nanoseconds": "import pandas as pd\ndisplay(pd.DataFrame({'t': [pd.Timestamp(day).value]}))",
    "zero_padded_id": "head, digits = pid.split('-')\nprint(head + '-' + digits.zfill(14))",
    # RUN_DIR: the run's folder, the one folder under --out (the test writes its path in).
    "file_in_run_folder": ("from pathlib import Path\n(RUN_DIR / 'notes.csv').write_text(note)\nprint('wrote a file')"),
    "binary_in_run_folder": (
        f"from pathlib import Path\n(RUN_DIR / 'figure.png').write_bytes(base64.b64decode(PNG))\nPNG = {PNG!r}"
    ),
}
# The binary notebook needs PNG before it uses it.
DISGUISES["binary_in_run_folder"] = f"PNG = {PNG!r}\n" + DISGUISES["binary_in_run_folder"].rsplit("\n", 1)[0]


def _medalign(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "medalign_utils.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def _traces(release_dir):
    """What must appear nowhere: a note's words, the person_id, the record date (as the cells compute them)."""
    found = {"data_dir": str(release_dir)}
    exec(TRACES, found)
    return found["note"], found["pid"], found["day"]


def _assert_no_trace(out, console, note, pid, day):
    fragments = [" ".join(note.split()[i : i + 5]) for i in (3, 20, 40)]
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for f in fragments:
            assert f not in text, (path, f)
        assert pid not in text and pid.replace("-", " ") not in text, path
        assert day.strftime("%d %b %Y") not in text and day.strftime("%Y%m%d") not in text, path
    for f in fragments:
        assert f not in console, f
    assert pid not in console


@pytest.mark.slow(seconds=50)
def test_every_disguise_fails_its_run_names_and_removes_the_page_and_leaves_no_trace(real_like, tmp_path):
    root, _ = real_like
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    names = {}
    out = tmp_path / "reports"
    run_dir = f"next(p for p in Path({str(out)!r}).iterdir() if p.is_dir() and not p.name.startswith('.'))"
    for i, (name, code) in enumerate(DISGUISES.items(), start=1):
        names[name] = f"{i:02d}_{name}"
        write_notebook(nbs / f"{names[name]}.ipynb", PRELUDE + code.replace("RUN_DIR", run_dir))
    proc = _medalign("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out), "--bundle", cwd=REPO)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "bundle not written" in proc.stderr and not list(out.glob("*.zip"))  # nothing in a zip or PDF
    record = json.loads((out / "run.json").read_text())
    results = {n["name"]: n for n in record["notebooks"]}
    run_dir = out / record["run_id"]
    for name, stem in names.items():
        res = results[stem]
        assert res["status"] == "leak", (name, res["status"], res["error"])
        assert "share-safe scan" in res["error"], name
        assert not (run_dir / f"{stem}.html").exists() and not (run_dir / f"{stem}.ipynb").exists(), name
    assert not (run_dir / "notes.csv").exists() and not (run_dir / "figure.png").exists()
    assert not list((out / ".cache").glob("*"))  # nothing that leaked was cached
    _assert_no_trace(out, proc.stdout + proc.stderr, *_traces(root))


def test_the_kernels_own_stderr_and_stdout_reach_the_console_only_through_the_scan(real_like, tmp_path):
    root, _ = real_like
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(
        nbs / "01_console.ipynb",
        PRELUDE + "os.write(2, note.encode() + b'\\n')\n"
        "print(pid, file=sys.__stderr__, flush=True)\n"
        "os.write(1, note.encode() + b'\\n')\n"
        "os.write(2, b'an ordinary library warning\\n')\n"
        "print('done')",
    )
    out = tmp_path / "reports"
    proc = _medalign("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out), cwd=REPO)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1, console[-2000:]  # a run whose scan withheld anything fails
    assert "withheld by the share-safe scan" in console
    assert "share-safe scan withheld a message that held 1 person_ids" in console  # why it failed, at the end
    assert "an ordinary library warning" in console  # what holds no record text still reaches the user
    _assert_no_trace(out, console, *_traces(root))


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_interrupted_run_leaves_no_partly_executed_notebook_and_nothing_unscanned(real_like, tmp_path, jobs):
    """Ctrl-C while notebooks run: what finished and passed the scan stays; every notebook still
    running (one, or two side by side) leaves nothing, and its kernel is gone."""
    root, _ = real_like
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    write_notebook(nbs / "01_fine.ipynb", "print('a page with nothing from the record')")
    beside = tmp_path / "beside.pid"
    write_notebook(
        nbs / "02_beside.ipynb",  # running beside the interrupt (when two run at once)
        PRELUDE + "import time\nfrom pathlib import Path\nprint(note)\n"
        f"Path({str(beside)!r}).write_text(str(os.getpid()))\ntime.sleep(120)",
    )
    first_page = f"Path({str(out)!r}).glob('*/01_fine.html')"
    write_notebook(
        nbs / "03_interrupted.ipynb",
        PRELUDE + "import time\nfrom pathlib import Path\nprint(note)\nprint(os.path.abspath(data_dir))\n"
        f"while not any({first_page}):\n    time.sleep(0.2)\n"
        + ("" if jobs == "1" else f"while not Path({str(beside)!r}).exists():\n    time.sleep(0.2)\n")
        + "os.kill(os.getppid(), __import__('signal').SIGINT)\ntime.sleep(60)",
    )
    if jobs == "1":  # one at a time: 02 would hold the run for its two minutes first
        (nbs / "02_beside.ipynb").unlink()
    cmd = ("run", "--data", str(root), "--notebooks", str(nbs), "--out", str(out), "--jobs", jobs)
    proc = _medalign(*cmd, cwd=REPO)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert "interrupted" in proc.stderr
    run_dir = next(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert (run_dir / "01_fine.html").exists()  # what passed the scan stays
    assert not list(run_dir.glob("03_interrupted*")) and not list(run_dir.glob("02_beside*"))
    if jobs == "2":
        kernel = int(beside.read_text())
        assert not Path(f"/proc/{kernel}").exists() or "Z" in Path(f"/proc/{kernel}/stat").read_text().split()[2]
    for path in out.rglob("*"):
        if path.is_file():
            assert str(root) not in path.read_text(errors="replace"), path
    _assert_no_trace(out, proc.stdout + proc.stderr, *_traces(root))


def test_run_folders_are_unique_when_runs_start_in_the_same_second(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from medalign_utils.reports.runner import new_run_dir

    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: new_run_dir(tmp_path, "release"), range(16)))
    assert len({d.name for d in dirs}) == 16 and all(d.is_dir() for d in dirs)


def test_concurrent_runs_into_one_out_folder_keep_both_results(tiny_cohort, tmp_path):
    n = 2
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_page.ipynb", "print('hello')")
    out = tmp_path / "reports"
    cmd = [sys.executable, "-m", "medalign_utils.cli", "run", "--quiet", "--data", str(tiny_cohort)]
    cmd += ["--notebooks", str(nbs), "--out", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0] * n
    runs = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == n and all((r / "01_page.html").exists() and (r / "run.json").exists() for r in runs)
    # both wrote out/run.json through a temporary file: it parses, and names one of them
    assert json.loads((out / "run.json").read_text())["run_id"] in {r.name for r in runs}
