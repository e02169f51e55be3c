"""Headline results as data: what each notebook found, for the index page, `run.json` and comparisons.

A notebook records a finding with `record_finding(name, value, ci=..., unit=..., compare=...)` and
an aggregate table with `record_table(name, table)`. Each is shown in the notebook as an output that
carries the record itself (`FINDING_MIME`, `TABLE_MIME`), so the executed notebook is the one place
a run's findings and tables live: `medalign run` reads them back from it (`outputs_in`) after it has
scanned it, with the cell that made each one. Run by hand, a finding is only shown. No environment
variable or side file passes between the runner and a kernel. `compare_findings` sets two runs'
findings side by side.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

# The MIME types of a recorded finding and table. A front end that does not know them shows the
# bundle's text/plain line instead; the runner reads them from the executed notebook.
FINDING_MIME = "application/vnd.medalign.finding+json"
TABLE_MIME = "application/vnd.medalign.table+json"


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

    def __repr__(self) -> str:  # the line a page shows where a finding was recorded
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


def record_finding(name: str, value, *, ci=None, unit: str = "", compare: str = "", planted: bool = False) -> None:
    """Record one headline result of the running notebook: shown as a line of the page, whose output
    also carries the finding for `medalign run`. `planted`: the value is set by construction (the
    synthetic cohort's planted truth or its planted test judge), which the index says beside it."""
    lo, hi = ci if ci is not None else (None, None)
    value = _number(value) if _number(value) is not None else str(value)
    finding = Finding(name, value, _number(lo), _number(hi), unit, compare, planted=planted)
    _show({FINDING_MIME: asdict(finding), "text/plain": repr(finding)})


def record_table(name: str, table) -> None:
    """Record one aggregate table (Table 3, Table 4): `medalign run` saves it as `tables/<name>.csv`
    for the run's bundle, from the executed notebook it has scanned. The page shows one line saying so."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"table name {name!r}: letters, digits, '_', '.' and '-' only")
    csv = table.to_csv(index=False, float_format="%.6g")
    rows, cols = table.shape
    line = f"table {name}: {rows} rows x {cols} columns (saved as tables/{name}.csv by `medalign run`)"
    _show({TABLE_MIME: {"name": name, "csv": csv}, "text/plain": line})


def _show(bundle: dict) -> None:
    """A MIME bundle as the running cell's output; outside IPython, its text line on stdout."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with the notebooks' dependencies
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(bundle["text/plain"])
        return
    display(bundle, raw=True)


def outputs_in(executed: str | Path, *, notebook: str = "", page: str = "") -> tuple[list[dict], dict[str, str]]:
    """The findings and tables an executed notebook recorded, in the order its cells made them.
    Each finding names its `notebook`, the execution count of its `cell`, and a link to that cell
    on `page` (when given); tables map each name to its CSV text (a later table of a name wins)."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    findings, tables = [], {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if FINDING_MIME in data:
                found = {**asdict(_finding(data[FINDING_MIME])), "notebook": notebook}
                found["cell"] = cell.get("execution_count")
                if page:
                    found["link"] = f"{page}#cell-id={cell.get('id')}" if cell.get("id") else page
                findings.append(found)
            if TABLE_MIME in data:
                tables[data[TABLE_MIME]["name"]] = data[TABLE_MIME]["csv"]
    return findings, tables


def load_run_findings(run: str | Path) -> list[dict]:
    """The findings of a run: a run folder (`reports/<run>/`), a reports folder, or a `run.json`."""
    return load_run_record(run).get("findings", [])


# What makes two runs' numbers comparable: a difference here is said before any finding's.
COMPARED_SETTINGS = ("n_resamples", "bootstrap_unit", "seed", "combine_raters", "data_dir")


def settings_differences(a: dict, b: dict) -> list[str]:
    """One line per setting two run records differ in (`COMPARED_SETTINGS` of their configs, and
    the data's fingerprint): their findings' CIs and values are then not like for like."""
    ca, cb = a.get("config") or {}, b.get("config") or {}
    lines = [f"{key}: A {ca.get(key)!r} | B {cb.get(key)!r}" for key in COMPARED_SETTINGS if ca.get(key) != cb.get(key)]
    fa, fb = ((r.get("data") or {}).get("fingerprint") for r in (a, b))
    if fa != fb:
        lines.append(f"data fingerprint: A {fa} | B {fb}")
    return lines


def load_run_record(run: str | Path) -> dict:
    """A run's record (`run.json`): a run folder, a reports folder, or the file itself."""
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
    return record


def _finding(record: dict) -> Finding:
    from dataclasses import fields

    return Finding(**{f.name: record[f.name] for f in fields(Finding) if f.name in record})


def compare_findings(*runs: list[dict]) -> list[str]:
    """One line per finding: its value in each run (A, B, ...) and each one's difference from A
    where both are numbers ("the same" where equal)."""
    letters = [chr(ord("A") + k) for k in range(len(runs))]
    by_run = [{f["name"]: f for f in run} for run in runs]
    names = list(dict.fromkeys(f["name"] for run in runs for f in run))
    lines = []
    for name in names:
        first = by_run[0].get(name)
        parts = []
        for letter, found in zip(letters, by_run):
            f = found.get(name)
            text = f"{letter} {_finding(f).text() if f else '—'}"
            numbers = first and f and all(isinstance(x["value"], (int, float)) for x in (first, f))
            if letter != "A" and numbers:
                delta = f["value"] - first["value"]
                text += "  (the same)" if delta == 0 else f"  ({letter} − A: {delta:+.4g})"
            parts.append(text)
        lines.append(f"{name}: " + " | ".join(parts))
    return lines