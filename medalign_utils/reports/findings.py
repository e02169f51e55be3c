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
    n_instructions: int | None = None  # how many instructions it rests on
    n_patients: int | None = None  # and patients, where they are the unit (records, a patient bootstrap)
    reading: str = ""  # what it means in plain words ("the interval includes 0: no evidence of a difference")
    lead: bool = False  # a headline the index shows first (each system's correct %)

    def __repr__(self) -> str:  # the line a page shows where a finding was recorded
        extra = "; ".join(x for x in (self.compare, self.n_text(), self.reading) if x)
        return f"finding: {self.name} = {self.text()}" + (f" ({extra})" if extra else "")

    def text(self) -> str:
        digits = decimals_for(self.value, self.ci_low, self.ci_high, unit=self.unit)
        v = format_value(self.value, digits=digits)
        ci = ""
        if self.ci_low is not None:
            ci = f" (95% CI {format_value(self.ci_low, digits=digits)}–{format_value(self.ci_high, digits=digits)})"
        return f"{v}{(' ' + self.unit) if self.unit else ''}{ci}"

    def n_text(self) -> str:
        """`n = 149 instructions, 24 patients`, or "" when not recorded."""
        parts = [f"{n:,} {what}" for n, what in ((self.n_instructions, "instructions"), (self.n_patients, "patients"))
                 if n is not None]  # fmt: skip
        return "n = " + ", ".join(parts) if parts else ""


# Percentages and points to one decimal; fractions (τ, κ, win rates, shares) to three, every page alike.
PERCENT_UNITS = ("%", "points", "percentage points")


def decimals_for(*values, unit: str = "") -> int:
    """How many decimals a finding's numbers get: one for percentages and points and for magnitudes of
    ten or more, none for whole counts, three for fractions (τ, κ, win rates)."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not math.isnan(float(v))]
    if unit in PERCENT_UNITS:
        return 1
    if numbers and all(float(v).is_integer() for v in numbers):
        return 0
    return 1 if numbers and max(abs(v) for v in numbers) >= 10 else 3


def format_value(x, *, digits: int | None = None) -> str:
    """A number as a page shows it: `digits` decimals (default: `decimals_for` the number alone), with
    thousands separators; a missing number is "n/a", never "nan"."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if math.isnan(x):
        return "n/a"
    digits = decimals_for(x) if digits is None else digits
    return f"{x:,.{digits}f}"


# Below this many instructions a finding's reading is "too few instructions to say".
FEW_INSTRUCTIONS = 10


def plain_reading(value, ci, *, n_instructions: int | None = None, null: float | None = None, about: str = "") -> str:
    """What a finding means in plain words. With `null` (the value of "no effect": 0 for a difference or
    a τ), whether its interval includes it; `about` names the effect ("a difference", "agreement
    beyond chance"). Fewer than `FEW_INSTRUCTIONS` instructions: "too few instructions to say"."""
    if n_instructions is not None and n_instructions < FEW_INSTRUCTIONS:
        return f"too few instructions to say (n = {n_instructions})"
    lo, hi = ci if ci is not None else (None, None)
    if null is None or _number(lo) is None or _number(hi) is None:
        return ""
    about = about or "a difference"
    if lo <= null <= hi:
        return f"the interval includes {null:g}: no evidence of {about}"
    side = "above" if lo > null else "below"
    return f"the interval lies {side} {null:g}: evidence of {about}"


def _number(x):
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def record_finding(
    name: str,
    value,
    *,
    ci=None,
    unit: str = "",
    compare: str = "",
    planted: bool = False,
    n_instructions: int | None = None,
    n_patients: int | None = None,
    null: float | None = None,
    about: str = "",
    reading: str = "",
    lead: bool = False,
) -> None:
    """Record one headline result of the running notebook: shown as a line of the page, whose output
    also carries the finding for `medalign run`. `planted`: the value is set by construction (the
    synthetic cohort's planted truth or its planted test judge), which the index says beside it.
    `n_instructions` and `n_patients`: what it rests on. `reading` says what it means; by default
    `plain_reading` writes it from the CI, `null` and `about`. `lead`: the index shows it first."""
    lo, hi = ci if ci is not None else (None, None)
    value = _number(value) if _number(value) is not None else str(value)
    n_i = None if n_instructions is None else int(n_instructions)
    n_p = None if n_patients is None else int(n_patients)
    reading = reading or plain_reading(value, ci, n_instructions=n_i, null=null, about=about)
    finding = Finding(name, value, _number(lo), _number(hi), unit, compare, planted=planted, n_instructions=n_i,
                      n_patients=n_p, reading=reading, lead=lead)  # fmt: skip
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
                found = {**asdict(finding_from_record(data[FINDING_MIME])), "notebook": notebook}
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


def finding_from_record(record: dict) -> Finding:
    """A finding as `run.json` holds it (a dict; keys a newer suite added are left out)."""
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
            found_n = finding_from_record(f).n_text() if f else ""
            text = f"{letter} {finding_from_record(f).text() if f else '—'}" + (f" [{found_n}]" if found_n else "")
            numbers = first and f and all(isinstance(x["value"], (int, float)) for x in (first, f))
            if letter != "A" and numbers:
                delta = f["value"] - first["value"]
                text += "  (the same)" if delta == 0 else f"  ({letter} − A: {delta:+.4g})"
            parts.append(text)
        lines.append(f"{name}: " + " | ".join(parts))
    return lines
