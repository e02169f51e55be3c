"""One instruction as HTML for the viewer: the question, what each strategy kept of the record (a map
of the record with the kept spans and the evidence, the text at each cut, each evidence item in its
place), the answers side by side with the clinicians' ranks and labels and the metric scores, and the
judge's verdicts. Pure functions of `explore.instances`' results; every text is escaped."""

from __future__ import annotations

import html

import pandas as pd

from .instances import KeptView, system_label

KEPT, DROPPED, EVIDENCE = "#1a7f37", "#d0d7de", "#cf222e"
STYLE = """<style>
.mv{font-family:system-ui,sans-serif;font-size:13px;line-height:1.4}
.mv h3{margin:.8em 0 .3em;font-size:15px}.mv h4{margin:.6em 0 .2em;font-size:13px}
.mv .map{position:relative;height:14px;background:#d0d7de;border-radius:2px;margin:4px 0}
.mv .map span{position:absolute;top:0;height:14px}
.mv .map .k{background:#1a7f37}.mv .map .e{background:#cf222e;width:2px;top:-3px;height:20px}
.mv pre{white-space:pre-wrap;background:#f6f8fa;padding:6px;margin:3px 0;max-height:14em;overflow:auto;font-size:12px}
.mv .dropped{color:#8c959f}.mv mark{background:#ffd8b5}.mv .cut{color:#cf222e;font-weight:bold}
.mv table{border-collapse:collapse}.mv td,.mv th{border:1px solid #d0d7de;padding:3px 6px;vertical-align:top}
.mv .answers td{max-width:22em}
</style>"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def record_map(view: KeptView) -> str:
    """A bar the length of the base text: kept spans green, evidence occurrences red ticks."""
    n = max(len(view.base_text), 1)
    parts = [
        f'<span class="k" style="left:{100 * a / n:.2f}%;width:{max(100 * (b - a) / n, 0.3):.2f}%"></span>'
        for a, b in view.spans
    ]
    parts += [f'<span class="e" style="left:{100 * p / n:.2f}%"></span>' for pos in view.positions for p in pos]
    return f'<div class="map" title="record: kept in green, evidence in red">{"".join(parts)}</div>'


def _excerpt(view: KeptView, start: int, end: int, *, marks: list[tuple[int, int]] = (), cut: int | None = None) -> str:
    """The base text between start and end, dropped parts grey, `marks` highlighted, the cut marked."""
    start, end = max(0, start), min(len(view.base_text), end)
    bounds = sorted({start, end, *(p for a, b in view.spans for p in (a, b) if start < p < end)})
    bounds = sorted({*bounds, *(p for a, b in marks for p in (a, b) if start < p < end)})
    out = []
    for a, b in zip(bounds, bounds[1:]):
        if cut is not None and a == cut:
            out.append('<span class="cut">✂ cut ✂</span>')
        chunk = _e(view.base_text[a:b])
        if any(m0 <= a < m1 for m0, m1 in marks):
            chunk = f"<mark>{chunk}</mark>"
        out.append(chunk if view.kept(a) else f'<span class="dropped">{chunk}</span>')
    return "<pre>" + "".join(out) + "</pre>"


def kept_html(view: KeptView, *, window: int = 300) -> str:
    """One strategy's section: its numbers, the record map, the text around each cut (at most three)
    and each evidence item where it occurs, kept or dropped."""
    retained = "n/a (no evidence located)" if view.evidence_retained is None else f"{view.evidence_retained:.0%}"
    head = (
        f"<h4>{_e(view.strategy)} at {view.context:,} tokens: kept {view.kept_tokens:,} of "
        f"{view.record_tokens:,} tokens; evidence kept {retained}</h4>"
    )
    if view.dropped:
        return head + f"<p>dropped: {_e(view.error or 'the instruction does not fit')}</p>"
    body = [record_map(view)]
    for cut in view.cuts[:3]:
        body.append(f"<div>cut at character {cut:,}</div>" + _excerpt(view, cut - window, cut + window, cut=cut))
    if len(view.cuts) > 3:
        body.append(f"<div>… and {len(view.cuts) - 3} more cuts</div>")
    for item, positions in zip(view.evidence, view.positions):
        if not positions:
            body.append(f"<div>evidence {_e(item)!s}: not found in this text</div>")
            continue
        p = positions[0]
        state = "kept" if view.kept(p) else "dropped"
        attribute = len('timestamp="') if view.base_text.startswith('timestamp="', p) else 0
        mark = [(p, p + attribute + len(item))]
        body.append(f"<div>evidence <b>{_e(item)}</b>: {state}</div>" + _excerpt(view, p - 150, p + 250, marks=mark))
    return head + "".join(body)


def answers_html(answers: pd.DataFrame, metrics: pd.DataFrame | None = None) -> str:
    """The answers side by side (one column a system), with each reviewer's rank and label and the
    metric scores under each answer."""
    systems = list(answers.system)
    header = "".join(f"<th>{_e(system_label(s))}</th>" for s in systems)
    rows = [f"<tr><th>answer</th>{''.join(f'<td>{_e(a)}</td>' for a in answers.answer.fillna(''))}</tr>"]
    for col in [c for c in answers.columns if c.startswith(("rank:", "correct:"))]:
        cells = "".join(f"<td>{_label_cell(col, v)}</td>" for v in answers[col])
        rows.append(f"<tr><th>{_e(col.replace(':', ' by ').replace('_', ' '))}</th>{cells}</tr>")
    if metrics is not None and len(metrics.columns):
        for metric in metrics.columns:
            values = metrics[metric].reindex(systems)
            cells = "".join(f"<td>{'—' if pd.isna(v) else f'{v:.3f}'}</td>" for v in values)
            rows.append(f"<tr><th>{_e(metric)}</th>{cells}</tr>")
    return f'<table class="answers"><tr><th></th>{header}</tr>{"".join(rows)}</table>'


def _label_cell(column: str, value) -> str:
    if pd.isna(value):
        return "—"
    if column.startswith("correct:"):
        return "correct" if float(value) >= 0.5 else "incorrect"
    return f"{float(value):g}"


def judgments_html(judgments: pd.DataFrame) -> str:
    if not len(judgments):
        return "<p>No judgments of this instruction (notebook 06 or `medalign judge` makes them).</p>"
    rows = "".join(
        f"<tr><td>{_e(j.judge)}</td><td>{_e(j.mode)}</td><td>{_e(j.judged)}</td>"
        f"<td>{_e(j.verdict) or '—'}{'' if j.valid else ' (invalid)'}</td>"
        f"<td>{_e(j.probabilities) or '—'}</td>"
        f"<td>{'—' if pd.isna(j.expected_score) else f'{float(j.expected_score):.2f}'}</td>"
        f"<td>{_e(j.rationale)}</td></tr>"
        for j in judgments.itertuples()
    )
    head = "<tr><th>judge</th><th>mode</th><th>judged</th><th>verdict</th><th>probabilities</th>"
    return f"<table>{head}<th>expected score</th><th>rationale</th></tr>{rows}</table>"


def instance_html(
    row: dict,
    *,
    views: list[KeptView],
    answers: pd.DataFrame,
    metrics: pd.DataFrame | None,
    judgments: pd.DataFrame,
) -> str:
    """The whole instance: `row` is its line of `instance_table`."""
    facts = (
        f"instruction {_e(row['instruction_id'])} · patient {_e(row['person_id'])} · {_e(row['category'])} · "
        f"EHR {_e(row['ehr_length'])} · {row['n_reviewers']} reviewer(s)"
    )
    parts = [
        STYLE,
        f'<div class="mv" data-instruction="{_e(row["instruction_id"])}">',
        f'<h3 class="question">{_e(row["question"])}</h3><div>{facts}</div>',
        "<h3>What each strategy kept of the record</h3>",
        "".join(kept_html(v) for v in views) or "<p>No EHR file for this patient.</p>",
        "<h3>Answers, clinicians' ranks and labels, metric scores</h3>",
        answers_html(answers, metrics),
        "<h3>The judge's verdicts</h3>",
        judgments_html(judgments),
        "</div>",
    ]
    return "".join(parts)
