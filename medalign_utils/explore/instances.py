"""One instruction at a time, for error analysis: which instructions to look at (filters over a table
of every instruction), and for one of them what each truncation strategy kept of the record, every
system's answer, the clinicians' ranks and labels, the judge's verdicts and the metric scores.

Small pure functions over the release's tables and the suite's outputs (notebook 03's answers,
notebook 06's judgments); `explore.viewer` puts them behind widgets, a test reads them directly.
Everything here holds patient text: it is for the researcher's own session, never for a page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import paper

if TYPE_CHECKING:  # annotations only
    from ..context import Tokenizer
    from ..data.release import Release

# What the disagreement filter offers, and what each keeps.
DISAGREEMENTS = {
    "any": "every instruction",
    "judge vs clinicians": "the judge's correct verdict differs from the clinicians' label on some answer",
    "clinicians among themselves": "two clinicians gave one answer different correctness labels",
    "both": "both of the above",
}
ANY = "any"


def system_label(system: str) -> str:
    """A system as a reader names it: the paper's label where it has one (GPT-4 (32k)), else as given."""
    return paper.MODEL_LABELS.get(system, system)


def instance_table(
    release: Release,
    *,
    judgments: pd.DataFrame | None = None,
    generations: pd.DataFrame | None = None,
    length_bands: pd.Series | None = None,
) -> pd.DataFrame:
    """One row per instruction with reviewed answers: its category (Table 2's), EHR length band, the
    systems that answered it (the six and any generated or imported ones), its number of reviewers,
    and two disagreement shares over its answers: between clinicians (answers whose reviewers'
    correctness labels differ; NaN with one reviewer) and between the judge and the primary
    clinician (answers whose `correct` verdict differs from the label; NaN without verdicts).
    `length_bands` maps instruction_id to a band (`describe.instruction_length_bins`)."""
    from ..data import describe
    from ..evaluation import clinicians

    responses = release.model_responses
    ins = release.instructions.set_index("instruction_id")
    ids = pd.Index(responses.instruction_id.unique(), name="instruction_id")
    table = pd.DataFrame(index=ids)
    table["person_id"] = ins.person_id.reindex(ids).astype(str)
    table["category"] = ins.category.reindex(ids).map(describe.to_paper_category).fillna("unknown")
    bands = length_bands.reindex(ids) if length_bands is not None else pd.Series(index=ids, dtype=object)
    table["ehr_length"] = bands.astype(object).fillna("unknown")
    systems = responses.groupby("instruction_id").system.apply(lambda s: sorted(set(s)))
    if generations is not None and len(generations):
        extra = generations[generations.answer.notna()].groupby("instruction_id").system.apply(set)
        systems = systems.combine(extra.reindex(systems.index), lambda a, b: sorted(set(a) | (b if b == b else set())))
    table["systems"] = systems.reindex(ids)
    table["question"] = ins.question.reindex(ids).fillna("").astype(str)
    table["n_reviewers"] = _reviewers(responses).reindex(ids).fillna(1).astype(int)
    table["clinician_disagreement"] = clinician_disagreement(responses).reindex(ids)
    primary = clinicians.combine_raters(responses, "primary")
    table["judge_disagreement"] = judge_disagreement(judgments, primary).reindex(ids)
    return table.reset_index()


def _reviewers(responses: pd.DataFrame) -> pd.Series:
    if "annotator_num" not in responses.columns:
        return pd.Series(dtype=int)
    return responses.groupby("instruction_id").annotator_num.nunique()


def clinician_disagreement(responses: pd.DataFrame) -> pd.Series:
    """Per instruction reviewed by two or more clinicians: the share of its answers whose reviewers'
    correctness labels are not all the same (NaN for one reviewer)."""
    if "annotator_num" not in responses.columns:
        return pd.Series(dtype=float)
    labelled = responses[responses.binary_correct.notna()]
    per_answer = labelled.groupby(["instruction_id", "system"]).binary_correct.agg(["nunique", "size"])
    per_answer["differ"] = (per_answer["nunique"] > 1).astype(float)
    per_answer.loc[per_answer["size"] < 2, "differ"] = np.nan
    return per_answer.groupby(level="instruction_id").differ.mean()


def judge_disagreement(judgments: pd.DataFrame | None, labels: pd.DataFrame) -> pd.Series:
    """Per instruction: the share of its answers whose valid `correct` verdict (any judge) differs from
    the clinicians' combined label."""
    if judgments is None or not len(judgments) or "mode" not in judgments.columns:
        return pd.Series(dtype=float)
    correct = judgments[(judgments["mode"] == "correct") & judgments.valid.astype(bool)]
    if not len(correct):
        return pd.Series(dtype=float)
    truth = labels.set_index(["instruction_id", "system"]).binary_correct
    key = pd.MultiIndex.from_arrays([correct.instruction_id.astype(str), correct.system.astype(str)])
    label = truth.reindex(key).to_numpy(float)
    verdict = correct.score.to_numpy(float)
    seen = ~np.isnan(label)
    differ = pd.Series((verdict[seen] >= 0.5) != (label[seen] >= 0.5), dtype=float)
    return differ.groupby(correct.instruction_id.astype(str).to_numpy()[seen]).mean()


def filter_instances(
    table: pd.DataFrame,
    *,
    category: str = ANY,
    system: str = ANY,
    ehr_length: str = ANY,
    disagreement: str = ANY,
) -> pd.DataFrame:
    """The rows of `instance_table` that match every filter (`"any"` keeps all)."""
    if disagreement not in DISAGREEMENTS:
        raise ValueError(f"disagreement {disagreement!r}: one of {', '.join(DISAGREEMENTS)}")
    keep = pd.Series(True, index=table.index)
    if category != ANY:
        keep &= table.category == category
    if ehr_length != ANY:
        keep &= table.ehr_length == ehr_length
    if system != ANY:
        keep &= table.systems.map(lambda s: system in s)
    judge = table.judge_disagreement.fillna(0) > 0
    among = table.clinician_disagreement.fillna(0) > 0
    keep &= {"any": True, "judge vs clinicians": judge, "clinicians among themselves": among, "both": judge & among}[
        disagreement
    ]
    return table[keep]


def filter_choices(table: pd.DataFrame) -> dict[str, list[str]]:
    """What each filter can be set to, in a reader's order (EHR length bands short to long)."""
    from ..data import describe

    bands = [b for b in [*describe.LENGTH_LABELS, "unknown"] if (table.ehr_length == b).any()]
    systems = sorted({s for row in table.systems for s in row}, key=lambda s: (s not in paper.MODEL_LABELS, s))
    return {
        "category": [ANY, *sorted(table.category.unique())],
        "system": [ANY, *systems],
        "ehr_length": [ANY, *bands],
        "disagreement": list(DISAGREEMENTS),
    }


# ------------------------------------------------------------------ one instruction


def instance_answers(release: Release, instruction_id: str, *, generations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every answer to one instruction: the release's systems with each reviewer's rank and
    correctness label (`rank:<reviewer>`, `correct:<reviewer>`), then any generated or imported system
    (no labels). Ordered by the primary reviewer's rank."""
    r = release.model_responses
    part = r[r.instruction_id == str(instruction_id)]
    reviewer = part.annotator_num if "annotator_num" in part.columns else pd.Series("Annotator_1", index=part.index)
    answers = (
        part.drop_duplicates("system")
        .set_index("system")[["model_response"]]
        .rename(columns={"model_response": "answer"})
    )
    for who in sorted(reviewer.unique()):
        mine = part[reviewer == who].set_index("system")
        answers[f"rank:{who}"] = mine.model_rank.reindex(answers.index)
        answers[f"correct:{who}"] = mine.binary_correct.reindex(answers.index)
    rank_cols = [c for c in answers.columns if c.startswith("rank:")]
    answers = answers.sort_values(rank_cols[:1]) if rank_cols else answers
    answers["source"] = "release"
    if generations is not None and len(generations):
        mine = generations[(generations.instruction_id == str(instruction_id)) & generations.answer.notna()]
        extra = mine.drop_duplicates("system", keep="last").set_index("system")[["answer"]].assign(source="generated")
        answers = pd.concat([answers, extra[~extra.index.isin(answers.index)]])
    return answers.reset_index().rename(columns={"index": "system"})


def instance_judgments(judgments: pd.DataFrame | None, instruction_id: str) -> pd.DataFrame:
    """One instruction's judgments: judge, mode, what was judged (a system, or a pair and its order),
    the score, the probability of each allowed value where the judge gave them, the expected score
    and the rationale."""
    columns = ["judge", "mode", "judged", "valid", "verdict", "score", "expected_score", "probabilities", "rationale"]
    if judgments is None or not len(judgments):
        return pd.DataFrame(columns=columns)
    part = judgments[judgments.instruction_id.astype(str) == str(instruction_id)]
    rows = []
    for j in part.to_dict("records"):
        verdict = j.get("verdict") if isinstance(j.get("verdict"), dict) else {}
        rows.append(
            {
                "judge": j["judge"],
                "mode": j["mode"],
                "judged": _judged(j),
                "valid": bool(j.get("valid")),
                "verdict": _verdict_text(verdict),
                "score": j.get("score"),
                "expected_score": j.get("expected_score"),
                "probabilities": _probabilities(j.get("distribution")),
                "rationale": str(verdict.get("rationale") or verdict.get("explanation") or ""),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _judged(judgment: dict) -> str:
    """A system's label, or a pair as "A vs B" with the order it was shown in."""
    if judgment.get("system"):
        return system_label(str(judgment["system"]))
    a, _, b = str(judgment.get("pair", "")).partition("|")
    shown = "B shown first" if str(judgment.get("order", "")).lower() == "ba" else "A shown first"
    return f"A {system_label(a)} vs B {system_label(b)} ({shown})"


def _verdict_text(verdict: dict) -> str:
    """The verdict's values, its rationale apart: `correct: false`, `winner: A`, or a rubric's scores."""
    parts = []
    for key, value in verdict.items():
        if key in ("rationale", "explanation"):
            continue
        value = value.get("score") if isinstance(value, dict) else value
        parts.append(f"{key}: {str(value).lower() if isinstance(value, bool) else value}")
    return ", ".join(parts)


def _probabilities(distribution) -> str:
    """`{"correct": {"true": 0.9, "false": 0.1}}` as `correct: true 0.90, false 0.10`."""
    if not isinstance(distribution, dict):
        return ""
    return "; ".join(
        f"{key}: " + ", ".join(f"{value} {p:.2f}" for value, p in sorted(probs.items(), key=lambda kv: -kv[1]))
        for key, probs in distribution.items()
        if isinstance(probs, dict)
    )


def instance_metrics(
    release: Release,
    instruction_id: str,
    *,
    answers: pd.DataFrame,
    metrics=("rougeL", "chrf++", "bleu"),
) -> pd.DataFrame:
    """Each answer's automated metric scores against the primary reviewer's reference (the paper's
    settings), one column per metric; empty when the instruction has no reference."""
    from ..evaluation import score_responses

    responses = answers.assign(instruction_id=str(instruction_id), model_response=answers.answer.fillna(""))
    refs = release.references[release.references.instruction_id == str(instruction_id)]
    if not len(refs):
        return pd.DataFrame(index=answers.system)
    scores, _ = score_responses(responses, refs, list(metrics), progress=False)
    return scores.pivot_table(index="system", columns="metric", values="score").reindex(answers.system)


# ------------------------------------------------------------------ what each strategy kept


@dataclass
class KeptView:
    """What one strategy kept of one record for one instruction at one context: the spans of its base
    text (the record, or its notes-only or codes-only view) and where the evidence lies in it."""

    strategy: str
    context: int
    base_text: str
    spans: list[tuple[int, int]]
    evidence: list[str]  # the evidence items looked for
    positions: list[list[int]]  # each item's occurrences in base_text
    kept_tokens: int = 0
    record_tokens: int = 0
    evidence_retained: float | None = None
    dropped: bool = False
    error: str | None = None
    cuts: list[int] = field(default_factory=list)  # characters of base_text where kept text meets dropped text

    def kept(self, position: int) -> bool:
        return any(a <= position < b for a, b in self.spans)


def strategy_views(
    release: Release,
    instruction_id: str,
    *,
    tokenizer: Tokenizer,
    context: int,
    strategies=("recent", "oldest", "retrieval", "notes_only"),
    reserve: int = 256,
    cache_dir: str | Path | None = None,
) -> list[KeptView]:
    """What each strategy keeps of the instruction's record at `context` tokens of `tokenizer`, with
    the paper's prompt and budget (the grid of notebook 02, for this one instruction)."""
    from ..context import GridSettings, build_prompt_grid, evidence_items
    from ..context.evidence import instruction_evidence, locate_evidence
    from ..context.strategies import record_view

    ins = release.instructions[release.instructions.instruction_id == str(instruction_id)]
    if not len(ins) or str(ins.person_id.iloc[0]) not in release.ehr_files:
        return []
    settings = GridSettings(contexts=(int(context),), strategies=tuple(strategies), reserve=reserve)
    grid = build_prompt_grid(release, tokenizer, settings, instructions=ins, cache_dir=cache_dir, progress=False)
    text = release.ehr_text(ins.person_id.iloc[0])
    items = evidence_items(instruction_evidence(release).get(str(instruction_id)))
    views, texts = [], {"record": text}
    for row in grid.to_dict("records"):
        base = row.get("base") if isinstance(row.get("base"), str) else "record"
        if base not in texts:
            texts[base] = record_view(text, base.removesuffix("_only"))
        spans = [tuple(s) for s in (row.get("spans") if isinstance(row.get("spans"), list) else [])]
        n = len(texts[base])
        cuts = sorted({p for a, b in spans for p in (a, b) if 0 < p < n})
        views.append(
            KeptView(
                strategy=row["strategy"],
                context=int(context),
                base_text=texts[base],
                spans=spans,
                evidence=items,
                positions=locate_evidence(texts[base], items),
                kept_tokens=int(row.get("kept_tokens") or 0),
                record_tokens=int(row.get("base_tokens") or row.get("record_tokens") or 0),
                evidence_retained=_number(row.get("evidence_retained")),
                dropped=bool(row.get("dropped")),
                error=row.get("error") if isinstance(row.get("error"), str) else None,
                cuts=cuts,
            )
        )
    return views


def _number(x) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(f) else f
