"""Headline results as data: what each notebook found, for the index page, `run.json` and comparisons.

A notebook records a finding with `record_finding(name, value, ci=..., unit=..., compare=...)`. Under
`medalign run` each finding is appended to the JSONL file the runner names in $MEDALIGN_FINDINGS,
with the cell that made it (its execution count, which the runner turns into a link to that cell);
run by hand, a finding is only shown. `compare_findings` sets two runs' findings side by side.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

FINDINGS_ENV = "MEDALIGN_FINDINGS"
TABLES_ENV = "MEDALIGN_TABLES"  # the folder `medalign run` collects a notebook's shareable tables in


@dataclass
class Finding:
    name: str
    value: float | str
    ci_low: float | None = None
    ci_high: float | None = None
    unit: str = ""
    compare: str = ""  # what it is compared with, e.g. "paper: 60.1"
    notebook: str = ""
    cell: int | None = None  # the execution count of the cell that recorded it
    planted: bool = False  # set by construction on the synthetic cohort, not measured

    def __repr__(self) -> str:  # what a notebook shows when a cell ends with record_finding(...)
        return f"finding: {self.name} = {self.text()}" + (f" ({self.compare})" if self.compare else "")

    def text(self) -> str:
        v = format_value(self.value)
        ci = f" (95% CI {format_value(self.ci_low)}–{format_value(self.ci_high)})" if self.ci_low is not None else ""
        return f"{v}{(' ' + self.unit) if self.unit else ''}{ci}"


def format_value(x) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "n/a"
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _number(x):
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def record_finding(name: str, value, *, ci=None, unit: str = "", compare: str = "", planted: bool = False) -> Finding:
    """Record one headline result of the running notebook; returns it (a notebook may display it).
    `planted`: the value is set by construction (the synthetic cohort's planted truth or its planted
    test judge), which the index says beside it."""
    cell = None
    try:
        from IPython import get_ipython

        shell = get_ipython()
        cell = shell.execution_count if shell is not None else None
    except ImportError:
        pass
    lo, hi = ci if ci is not None else (None, None)
    value = _number(value) if _number(value) is not None else str(value)
    f = Finding(
        name, value, _number(lo), _number(hi), unit, compare, os.environ.get("MEDALIGN_NOTEBOOK", ""), cell, planted
    )
    target = os.environ.get(FINDINGS_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(f)) + "\n")
    return f


def record_table(name: str, table) -> None:
    """Save one aggregate table (Table 3, Table 4) as `<name>.csv` for the run's bundle, under
    `medalign run` (the share-safe scan reads it like every other file); run by hand, nothing is
    written. Returns nothing, so a cell that ends with it shows nothing."""
    import re

    folder = os.environ.get(TABLES_ENV)
    if not folder:
        return
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"table name {name!r}: letters, digits, '_', '.' and '-' only")
    target = Path(folder) / f"{name}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False, float_format="%.6g")


def read_findings(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_run_findings(run: str | Path) -> list[dict]:
    """The findings of a run: a run folder (`reports/<run>/`), a reports folder, or a `run.json`."""
    run = Path(run)
    path = run if run.suffix == ".json" else run / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"no run.json at {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" line {err.lineno}" if isinstance(err, json.JSONDecodeError) else ""
        raise ValueError(f"{path}{where}: not JSON, so not a run record of `medalign run`") from None
    if not isinstance(record, dict) or not isinstance(record.get("findings", []), list):
        raise ValueError(f"{path}: not a run record of `medalign run` (a JSON object with findings)")
    return record.get("findings", [])


def _finding(record: dict) -> Finding:
    from dataclasses import fields

    return Finding(**{f.name: record[f.name] for f in fields(Finding) if f.name in record})


def compare_findings(a: list[dict], b: list[dict]) -> list[str]:
    """One line per finding: its value in run A and in run B and the difference where both are numbers."""
    by_b = {f["name"]: f for f in b}
    names = [f["name"] for f in a] + [f["name"] for f in b if f["name"] not in {x["name"] for x in a}]
    by_a = {f["name"]: f for f in a}
    lines = []
    for name in names:
        fa, fb = by_a.get(name), by_b.get(name)
        va = _finding(fa).text() if fa else "—"
        vb = _finding(fb).text() if fb else "—"
        diff = ""
        if fa and fb and isinstance(fa["value"], (int, float)) and isinstance(fb["value"], (int, float)):
            diff = f"  (B − A: {fb['value'] - fa['value']:+.4g})"
        lines.append(f"{name}: A {va} | B {vb}{diff}")
    return lines
