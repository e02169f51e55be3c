"""Tables a collaborator reads at a glance: numbers rounded to what they mean, no DataFrame index
column, no raw NaN (a word says why a cell is empty), and wide tables split so the headline
columns come first.

`readable(table)` returns a pandas Styler (what a notebook displays); `show(table)` displays it.
"""

from __future__ import annotations

import math
import re
from functools import partial

import numpy as np
import pandas as pd

MISSING = "—"


def _is_integral(values: pd.Series) -> bool:
    finite = values[np.isfinite(values)]
    return len(finite) > 0 and bool(np.all(np.isclose(finite, np.round(finite))))


def column_format(name, values: pd.Series, *, digits: int = 3):
    """The format of one numeric column: whole numbers as whole numbers (with thousands separators),
    percentages and large magnitudes to one decimal, p-values to three significant figures, other
    fractions (τ, κ, win rates) to `digits` decimals."""
    values = pd.to_numeric(values, errors="coerce").astype(float)
    label = " ".join(map(str, name)) if isinstance(name, tuple) else str(name)
    if _is_integral(values):
        return lambda x: f"{x:,.0f}"
    if "p_value" in label or label.startswith("p "):
        return lambda x: f"{x:.3g}"
    finite = values[np.isfinite(values)]
    big = len(finite) and float(np.abs(finite).max()) >= 100
    if big or label.endswith(("_pct", "%", "pct")) or "pct_" in label or "seconds" in label:
        return lambda x: f"{x:,.1f}"
    return lambda x: f"{x:.{digits}f}"


def plain(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a meaningful index turned into columns and a positional one dropped (a range, or
    the integer positions left by filtering or shuffling rows)."""
    if isinstance(table, pd.Series):
        table = table.to_frame()
    index_names = [n for n in table.index.names if n is not None]
    if index_names:
        return table.reset_index()
    if isinstance(table.index, pd.RangeIndex) or pd.api.types.is_integer_dtype(table.index):
        return table.reset_index(drop=True)
    return table.rename_axis("").reset_index()  # labels without a name (a Series' keys): keep them


# Columns whose cells name a system, and the header words a column of a system's values carries.
SYSTEM_COLUMNS = ("system", "a", "b", "row system", "column system", "judged system", "new system")


def system_names(frame: pd.DataFrame) -> pd.DataFrame:
    """Every system as the page names it (`paper.MODEL_LABELS`: GPT-4 (32k), not gpt4_32k), in the
    cells of a system column and in column headers that are systems (a pivot by system)."""
    from .. import paper

    labels = paper.MODEL_LABELS
    out = frame.rename(columns=lambda c: labels.get(c, c) if isinstance(c, str) else c)
    for column in SYSTEM_COLUMNS:
        if column in out.columns and not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(lambda s: labels.get(s, s) if isinstance(s, str) else s)
    return out


def cell_format(x) -> str:
    """One number of a key-value table (a Series shown as a table), formatted on its own: whole numbers
    as whole numbers, ten and over to one decimal, smaller ones to three."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    x = float(x)
    if x.is_integer():
        return f"{x:,.0f}"
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.3f}"


def readable(
    table: pd.DataFrame,
    *,
    caption: str | None = None,
    na: str = MISSING,
    digits: int = 3,
    columns=None,
    percent: bool | None = None,
):
    """A Styler of `table` for a page: rounded (`column_format`), no index column, `na` where a value
    is missing, only `columns` (in that order) when given, every system under its page name
    (`system_names`). `percent`: the values are percentages (one decimal); by default, when the
    caption says "%". A Series is a key-value table: each value formatted on its own. Once the real
    release was opened in this process, every count column obeys its small-cell rule
    (`describe.suppress_small_counts`)."""
    from ..data.describe import display_min_cell, suppress_small_counts

    key_values = isinstance(table, pd.Series)
    frame = plain(table)
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    if (min_cell := display_min_cell()) is not None:
        frame = suppress_small_counts(frame, min_cell)
    frame = system_names(frame)
    percent = bool(re.search(r"%(?!\s*CI)", caption or "")) if percent is None else percent  # not "95% CI"
    formats = {}
    for name in frame.columns:
        col = frame[name]
        if pd.api.types.is_bool_dtype(col):
            formats[name] = lambda x: "yes" if x else "no"
        elif key_values:
            formats[name] = cell_format
        elif pd.api.types.is_numeric_dtype(col):
            whole = _is_integral(pd.to_numeric(col, errors="coerce").astype(float))
            formats[name] = (
                (lambda x: f"{x:,.1f}") if percent and not whole else column_format(name, col, digits=digits)
            )
        else:
            formats[name] = _text
    styler = frame.style.format(formats, na_rep=na).hide(axis="index")
    return styler.set_caption(caption) if caption else styler


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return cell_format(value)
    return str(value)


def show(table: pd.DataFrame, **kwargs) -> None:
    """Display `table` as `readable` makes it (in a notebook); see `readable` for the settings."""
    from IPython.display import display

    display(readable(table, **kwargs))


def with_ci(table: pd.DataFrame, value: str, low: str, high: str, *, fmt: str = "{:.3f}") -> pd.Series:
    """One column of "value (low–high)" text: a value and its CI in one cell, so a wide table of
    estimates and intervals reads in a third of the columns."""

    def cell(row) -> str:
        v, lo, hi = row[value], row[low], row[high]
        if pd.isna(v):
            return MISSING
        text = fmt.format(v)
        return text if pd.isna(lo) or pd.isna(hi) else f"{text} ({fmt.format(lo)}–{fmt.format(hi)})"

    return table.apply(cell, axis=1)


def _formatted(x, *, fmt: str) -> str:
    return MISSING if pd.isna(x) else fmt.format(x)


def readable_table3(beside: pd.DataFrame) -> pd.DataFrame:
    """Table 3's headline columns, each estimate with its 95% CI in one cell and the paper's value
    beside it: what fits a laptop screen and a printed page. `beside` is `paper.beside_table3`'s
    table (planted values, where present, get a column each too)."""
    from .. import paper

    out = pd.DataFrame({"system": beside.system.map(lambda s: paper.MODEL_LABELS.get(s, s))})
    if "n" in beside:
        out["labelled responses"] = beside["n"].astype(int)
    for value, ci, title, fmt in (
        ("correct_pct", "correct", "correct %", "{:.1f}"),
        ("win_rate", "win_rate", "win rate", "{:.3f}"),
        ("mean_rank", "mean_rank", "mean rank", "{:.2f}"),
    ):
        out[f"{title} (95% CI)"] = with_ci(beside, value, f"{ci}_ci_low", f"{ci}_ci_high", fmt=fmt)
        for source in ("paper", "planted"):
            if f"{source}_{value}" in beside:
                out[f"{title}: {source}"] = beside[f"{source}_{value}"].map(partial(_formatted, fmt=fmt))
    return out
