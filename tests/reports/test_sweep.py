"""Sweeps: a matrix of settings, each cell an ordinary run, on a Dask LocalCluster of two worker
processes; a rerun runs only the cells it changes, and inside them only the notebooks whose inputs
changed; a failing cell is reported and the others go on."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import write_notebook

from medalign_utils import cli
from medalign_utils.reports.sweep import SweepSpec, run_sweep, sweep_plan

pytestmark = pytest.mark.slow(120)

WRITER = "open(prompts_path, 'w').write(str(x))"
READER = """
from medalign_utils.reports import record_finding
if y == 0:
    raise ValueError("y must not be 0")
value = int(open(prompts_path).read()) * y
record_finding(name="x times y", value=value, ci=(value - 1, value + 1), unit="points")
"""


@pytest.fixture
def notebooks(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    common = "data_dir = 'x'\nprompts_path = 'p'\n"
    write_notebook(nbs / "01_writer.ipynb", WRITER, parameters=common + "x = 1", writes=["prompts_path"])
    write_notebook(nbs / "02_reader.ipynb", READER, parameters=common + "y = 1", reads=["prompts_path"])
    return nbs


def _sweep_file(tmp_path, tiny_cohort, ys):
    path = tmp_path / "grid.yaml"
    spec = {
        "extends": "synthetic.yaml",
        "data_dir": str(tiny_cohort),
        "synthetic": {"generate_if_missing": False},
        "prompts_path": str(tmp_path / "data" / "value.txt"),
        "matrix": {"notebooks.01_writer.x": [1, 2], "notebooks.02_reader.y": ys},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_sweep_file_is_a_config_with_a_matrix(tmp_path, tiny_cohort):
    spec = SweepSpec.from_file(_sweep_file(tmp_path, tiny_cohort, [10, 20]))
    assert spec.base.name == "synthetic.yaml" and spec.name == "grid"
    cells = spec.cells()
    assert [c.name for c in cells] == ["x-1__y-10", "x-1__y-20", "x-2__y-10", "x-2__y-20"]
    assert cells[3].overrides() == {"notebooks": {"01_writer": {"x": 2}, "02_reader": {"y": 20}}}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"matrix": {"bootstrap_unit": "patient"}}))
    with pytest.raises(ValueError, match="matrix.bootstrap_unit must be a non-empty list"):
        SweepSpec.from_file(bad)


def test_two_dask_workers_run_a_2x2_sweep_and_a_rerun_runs_only_what_changed(tmp_path, tiny_cohort, notebooks, capsys):
    path, out = _sweep_file(tmp_path, tiny_cohort, [10, 20]), tmp_path / "sweep"
    data = tmp_path / "data" / "sweeps"
    plan = run_sweep(path, out=out, workers=2, progress=False, notebooks_dir=notebooks, data_root=data)
    assert list(plan.status) == ["ran"] * 4
    for row in plan.itertuples():
        record = json.loads((out / row.cell / "run.json").read_text())  # each cell is an ordinary run
        values = {f["name"]: f["value"] for f in record["findings"]}
        x, y = (int(part.split("-")[1]) for part in row.cell.split("__"))
        assert values == {"x times y": x * y}
    # The writer's output is isolated by what it was given: two files, one per x, shared by two cells.
    assert sorted(p.read_text() for p in data.glob("01_writer-*/value.txt")) == ["1", "2"]
    page = (out / "index.html").read_text()
    assert "<svg" in page and "x times y" in page and "x-2__y-20" in page
    assert "10 (9–11) points" in page and "40 (39–41) points" in page  # every finding by cell, with its CI
    sweep = json.loads((out / "sweep.json").read_text())
    assert len(sweep["findings"]) == 4 and sweep["matrix"]["notebooks.02_reader.y"] == [10, 20]
    # A dry run of the same sweep: every cell done.
    capsys.readouterr()
    argv = ["--out", str(out), "--notebooks", str(notebooks), "--data-root", str(data)]
    assert cli.main(["sweep", str(path), *argv, "--dry-run"]) == 0
    assert "to run: 0 of 4 cells" in capsys.readouterr().out
    # One changed key: only its two new cells run, and in them the writer is reused (same x).
    path = _sweep_file(tmp_path, tiny_cohort, [10, 30])
    dry = sweep_plan(path, out=out, notebooks_dir=notebooks, data_root=data)
    assert dict(zip(dry.cell, dry.status)) == {
        "x-1__y-10": "done", "x-1__y-30": "to run", "x-2__y-10": "done", "x-2__y-30": "to run"
    }  # fmt: skip
    plan = run_sweep(path, out=out, workers=2, progress=False, notebooks_dir=notebooks, data_root=data)
    assert dict(zip(plan.cell, plan.status)) == {
        "x-1__y-10": "done",
        "x-1__y-30": "ran",
        "x-2__y-10": "done",
        "x-2__y-30": "ran",
    }
    record = json.loads((out / "x-1__y-30" / "run.json").read_text())
    reused = {n["name"]: n.get("reused") for n in record["notebooks"]}
    assert reused == {"01_writer": True, "02_reader": False}


def test_a_failing_cell_is_reported_with_its_reason_and_the_others_go_on(tmp_path, tiny_cohort, notebooks, capsys):
    path, out = _sweep_file(tmp_path, tiny_cohort, [0, 5]), tmp_path / "sweep"
    argv = ["--out", str(out), "--notebooks", str(notebooks), "--data-root", str(tmp_path / "data")]
    code = cli.main(["sweep", str(path), *argv, "--workers", "2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    failed = [line for line in captured.err.splitlines() if line.startswith("problem: cell")]
    assert len(failed) == 2 and all("y must not be 0" in line for line in failed)
    for cell in ("x-1__y-5", "x-2__y-5"):
        assert json.loads((out / cell / "cell.json").read_text())["ok"] is True
    assert json.loads((out / "x-1__y-0" / "cell.json").read_text())["ok"] is False
