"""Where an instruction's evidence lies in a record (timestamps, or clauses of free text) and how much
of it a fitted prompt keeps: the measure notebook 02 compares strategies by.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release


# ------------------------------------------------------------------ evidence

_TS = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}|\d{1,2}/\d{1,2}/\d{4}(?: \d{1,2}:\d{2}(?: [AP]M)?)?")


def evidence_items(evidence) -> list[str]:
    """Split an `evidence` field into the items to look for: timestamps when it holds them (the
    synthetic cohort's form), else its clauses (free text in the real release)."""
    if evidence is None or (isinstance(evidence, float) and np.isnan(evidence)):
        return []
    text = str(evidence).strip()
    if not text:
        return []
    stamps = _TS.findall(text)
    if stamps:
        return list(dict.fromkeys(stamps))
    parts = [p.strip().strip('"') for p in re.split(r"[;\n]|\s\|\s", text)]
    return [p for p in parts if len(p) >= 8]


def locate_evidence(text: str, items: list[str]) -> list[list[int]]:
    """For each item, the character positions where it occurs in the text (timestamps are matched
    as entry timestamps when the text has them; free text case- and space-insensitively)."""
    out = []
    low = None
    for item in items:
        if _TS.fullmatch(item):
            pos = [m.start() for m in re.finditer(re.escape(f'timestamp="{item}'), text)] or [
                m.start() for m in re.finditer(re.escape(item), text)
            ]
        else:
            if low is None:
                low = text.lower()
            pat = r"\s+".join(re.escape(w) for w in item.lower().split())
            pos = [m.start() for m in re.finditer(pat, low)]
        out.append(pos)
    return out


def evidence_retained(
    positions: list[list[int]], spans: list[tuple[int, int]], in_record: list[list[int]] | None = None
) -> float | None:
    """Share of the evidence items found in the record that have an occurrence inside the kept
    spans. `positions` index the text the spans refer to (a view of the record, or the record);
    `in_record` says which items the full record holds (default: `positions`). None when the record
    holds none of them."""
    in_record = positions if in_record is None else in_record
    found = [p for p, r in zip(positions, in_record) if r]
    if not found:
        return None
    kept = sum(any(a <= x < b for x in p for a, b in spans) for p in found)
    return kept / len(found)


# ------------------------------------------------------------------ the prompt grid


def instruction_evidence(release: Release) -> dict[str, str]:
    """Each instruction's `evidence` field: the primary reference's (`release.primary_reviewer_rows`),
    else the primary reviewer's of the reviewed responses."""
    from ..data.release import primary_reviewer_rows

    out: dict[str, str] = {}
    for df in (release.model_responses, release.references):
        if "evidence" in df.columns:
            rows = primary_reviewer_rows(df, ("evidence",)).drop_duplicates("instruction_id")
            for iid, ev in rows[["instruction_id", "evidence"]].itertuples(index=False):
                if isinstance(ev, str) and ev.strip():
                    out[str(iid)] = ev
    return out


def retention_table(grid):
    """Share (%) of instructions whose evidence is in the prompt, per strategy and context
    (instructions without locatable evidence are left out and counted)."""
    g = grid.dropna(subset=["evidence_retained"])
    out = (
        g.groupby(["strategy", "context"])
        .evidence_retained.agg(retained_pct=lambda s: 100 * s.mean(), n="size")
        .reset_index()
    )
    return out
