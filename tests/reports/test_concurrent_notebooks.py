"""Notebooks side by side (`medalign run --jobs`): independent notebooks overlap, a reader waits for
its writer, the order of the results is the plan's, the longest chain starts first, and a stray that
held input while two ran at once marks both."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import write_notebook

from medalign_utils.config import ConfigError, SuiteConfig, load_config
from medalign_utils.reports import run_suite
from medalign_utils.reports.notebooks import NotebookSpec
from medalign_utils.reports.runner import notebook_jobs, previous_seconds, schedule_order

# Each notebook appends when it started and ended (the kernel's clock) to a shared log.
STAMP = (
    "import json, time\nstart = time.time()\n{body}\n"
    "open({log!r}, 'a').write(json.dumps([{name!r}, start, time.time()]) + '\\n')"
)


def _stamped(nbs: Path, name: str, log: Path, body: str = "time.sleep(2)", **declared) -> None:
    files = "data_dir = 'x'\nprompts_path = 'p'"
    code = STAMP.format(body=body, log=str(log), name=name)
    write_notebook(nbs / f"{name}.ipynb", code, parameters=files, **declared)


def _windows(log: Path) -> dict[str, tuple[float, float]]:
    return {name: (start, end) for name, start, end in map(json.loads, log.read_text().splitlines())}


@pytest.mark.parametrize("jobs", [1, 2])
def test_independent_notebooks_overlap_and_a_reader_waits_for_its_writer(tmp_path, tiny_cohort, jobs):
    nbs, log, prompts = tmp_path / "nbs", tmp_path / "log.jsonl", tmp_path / "prompts.txt"
    nbs.mkdir()
    _stamped(nbs, "01_alone", log)
    _stamped(nbs, "02_writer", log, "time.sleep(2)\nopen(prompts_path, 'w').write('x')", writes=["prompts_path"])
    _stamped(nbs, "03_reader", log, "assert open(prompts_path).read() == 'x'", reads=["prompts_path"])
    cfg = SuiteConfig(data_dir=str(tiny_cohort), prompts_path=str(prompts))
    out = tmp_path / "reports"
    assert run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs, jobs=jobs)
    w = _windows(log)
    overlap = w["01_alone"][0] < w["02_writer"][1] and w["02_writer"][0] < w["01_alone"][1]
    assert overlap == (jobs == 2)
    assert w["03_reader"][0] >= w["02_writer"][1]  # never before what it reads is written
    record = json.loads((out / "run.json").read_text())
    assert [n["name"] for n in record["notebooks"]] == ["01_alone", "02_writer", "03_reader"]  # the plan's order
    assert all(n["status"] == "ok" for n in record["notebooks"])


def test_a_failed_writer_skips_its_reader_while_an_independent_notebook_runs_on(tmp_path, tiny_cohort):
    nbs, log = tmp_path / "nbs", tmp_path / "log.jsonl"
    nbs.mkdir()
    _stamped(nbs, "01_alone", log)
    write_notebook(
        nbs / "02_writer.ipynb", "raise RuntimeError('no prompts')", parameters="data_dir = 'x'\nprompts_path = 'p'",
        writes=["prompts_path"],
    )  # fmt: skip
    _stamped(nbs, "03_reader", log, "pass", reads=["prompts_path"])
    cfg = SuiteConfig(data_dir=str(tiny_cohort), prompts_path=str(tmp_path / "p.txt"))
    assert not run_suite(config=cfg, out=tmp_path / "reports", progress=False, notebooks_dir=nbs, jobs=3)
    statuses = {
        n["name"]: n["status"] for n in json.loads((tmp_path / "reports" / "run.json").read_text())["notebooks"]
    }
    assert statuses == {"01_alone": "ok", "02_writer": "failed", "03_reader": "skipped"}
    assert list(_windows(log)) == ["01_alone"]


def _spec(name: str, reads=(), writes=()) -> NotebookSpec:
    return NotebookSpec(Path(f"{name}.ipynb"), frozenset({*reads, *writes}), tuple(reads), tuple(writes))


def test_the_longest_remaining_chain_starts_first():
    plan = [
        _spec("01_short"),
        _spec("02_prompts", writes=["p"]),
        _spec("03_generate", reads=["p"], writes=["g"]),
        _spec("04_long"),
        _spec("05_score", reads=["g"]),
    ]
    # Unknown times: the chain 02 -> 03 -> 05 first, then the plan's order.
    assert [s.name for s in schedule_order(plan)] == ["02_prompts", "03_generate", "01_short", "04_long", "05_score"]
    # From a last run's times: 04 (200 s) outlasts the chain (10 + 50 + 30 s), so it starts first.
    seconds = {"01_short": 5, "02_prompts": 10, "03_generate": 50, "04_long": 200, "05_score": 30}
    assert [s.name for s in schedule_order(plan, seconds)][:2] == ["04_long", "02_prompts"]


def test_the_scheduler_takes_its_times_from_the_last_run_that_executed_each_notebook(tmp_path):
    def record(run_id, finished, notebooks):
        (tmp_path / run_id).mkdir()
        body = {"run_id": run_id, "finished": finished, "notebooks": notebooks, "data": {}}
        (tmp_path / run_id / "run.json").write_text(json.dumps(body))

    record("a", "2026-01-01T00:00:00", [{"name": "01", "status": "ok", "seconds": 9.0, "reused": False}])
    record("b", "2026-01-02T00:00:00", [
        {"name": "01", "status": "ok", "seconds": 0.1, "reused": True},  # reused: not how long it takes
        {"name": "02", "status": "ok", "seconds": 30.0, "reused": False},
        {"name": "03", "status": "failed", "seconds": 1.0, "reused": False},
    ])  # fmt: skip
    assert previous_seconds(tmp_path) == {"01": 9.0, "02": 30.0}
    assert previous_seconds(tmp_path / "none") == {}


def test_jobs_from_the_config_and_its_checks(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert notebook_jobs(0) == 4 and notebook_jobs(3) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert notebook_jobs(0) == 1
    with pytest.raises(ValueError, match="concurrent_notebooks must be 0"):
        notebook_jobs(-1)
    assert load_config().concurrent_notebooks == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("concurrent_notebooks: two\n")
    with pytest.raises(ConfigError, match="concurrent_notebooks must be a whole number"):
        load_config(bad)


@pytest.mark.slow(seconds=30)
def test_a_stray_that_held_input_while_two_ran_at_once_marks_both(real_like, tmp_path):
    root, _ = real_like
    nbs, out = tmp_path / "nbs", tmp_path / "reports"
    nbs.mkdir()
    run_dir = f"next(p for p in Path({str(out)!r}).iterdir() if p.is_dir() and p.name.endswith('-release'))"
    note = (  # the longest note of the records, read with the standard library
        "import glob, xml.etree.ElementTree as ET\nfrom pathlib import Path\n"
        "trees = [ET.parse(f).getroot() for f in sorted(glob.glob(data_dir + '/ehrs/*.xml'))]\n"
        "note = max((e.text or '' for t in trees for e in t.iter('event') if e.get('type') == 'note'), key=len)\n"
    )
    stray = tmp_path / "stray.written"
    write_notebook(nbs / "01_writes_a_stray.ipynb", note + f"({run_dir} / 'x.txt').write_text(note)\n"
                   f"Path({str(stray)!r}).touch()")  # fmt: skip
    wait = f"for _ in range(600):\n    if Path({str(stray)!r}).exists():\n        break\n    time.sleep(0.1)\n"
    write_notebook(nbs / "02_beside.ipynb", "import time\nfrom pathlib import Path\n" + wait + "time.sleep(2)")
    cfg = SuiteConfig(data_dir=str(root))
    assert not run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs, jobs=2)
    record = json.loads((out / "run.json").read_text())
    by_name = {n["name"]: n for n in record["notebooks"]}
    assert by_name["01_writes_a_stray"]["status"] == "leak" and by_name["02_beside"]["status"] == "leak"
    assert "ran at once" in by_name["02_beside"]["error"] and "x.txt" in by_name["02_beside"]["error"]
    assert not list(out.rglob("x.txt"))


def _kernel_spec(folder: Path, name: str, code: str) -> None:
    """A kernel spec whose process runs `code` first, then becomes an ordinary IPython kernel."""
    import sys

    spec = folder / "kernels" / name
    spec.mkdir(parents=True)
    boot = code + "\nos.execv(sys.executable, [sys.executable, '-m', 'ipykernel_launcher', '-f', sys.argv[1]])"
    argv = [sys.executable, "-c", "import os, sys\n" + boot, "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))


def test_a_kernel_that_dies_before_it_answers_is_started_once_more(tmp_path, tiny_cohort, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    marker = tmp_path / "first-start"
    # Dies at its first start only (a start that failed on a busy machine), then runs.
    first = (
        f"m = {str(marker)!r}\nif not os.path.exists(m):\n"
        "    open(m, 'w').close()\n    print('no luck this time', file=sys.stderr)\n    sys.exit(1)"
    )
    _kernel_spec(tmp_path / "jupyter", "flaky", first)
    _kernel_spec(tmp_path / "jupyter", "dead", "print('cannot start at all', file=sys.stderr)\nsys.exit(1)")
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_a.ipynb", "print('ran')")
    cfg, out = SuiteConfig(data_dir=str(tiny_cohort)), tmp_path / "reports"
    assert run_suite(config=cfg, out=out, progress=False, notebooks_dir=nbs, kernel_name="flaky")
    assert marker.exists()
    assert not run_suite(config=cfg, out=tmp_path / "again", progress=False, notebooks_dir=nbs, kernel_name="dead")
    (result,) = json.loads((tmp_path / "again" / "run.json").read_text())["notebooks"]
    assert result["status"] == "failed" and "before replying to kernel_info" in result["error"]
    assert "the kernel's last words: cannot start at all" in result["error"]


@pytest.mark.parametrize(
    ("jobs", "preset", "expected"), [(1, None, None), (2, None, "PASSIVE"), (2, "ACTIVE", "ACTIVE")]
)
def test_kernels_side_by_side_wait_passively_unless_the_user_chose(tmp_path, tiny_cohort, monkeypatch, jobs, preset,
                                                                   expected):  # fmt: skip
    # Two kernels' OpenMP threads spinning on the same cores slow both; a policy the user set is theirs.
    if preset is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", preset)
    nbs, log = tmp_path / "nbs", tmp_path / "log.jsonl"
    nbs.mkdir()
    for name in ("01_a", "02_b"):
        seen = str(tmp_path / f"policy{name}")
        _stamped(nbs, name, log, f"import os\nopen({seen!r}, 'w').write(repr(os.environ.get('OMP_WAIT_POLICY')))")
    cfg = SuiteConfig(data_dir=str(tiny_cohort), prompts_path=str(tmp_path / "p"))
    assert run_suite(config=cfg, out=tmp_path / "reports", progress=False, notebooks_dir=nbs, jobs=jobs)
    assert {(tmp_path / f"policy{n}").read_text() for n in ("01_a", "02_b")} == {repr(expected)}
    assert os.environ.get("OMP_WAIT_POLICY") == preset  # the runner's own environment is as it was
