"""Grading answers on the synthetic cohort against its planted values.

For the instruction kinds whose reference answer is one value of the record (a lab value, a blood
pressure, a date, a stage), `planted_truth.json` stores that value as data (`value`, `unit`,
`date`). Grading reads those values, never the wording of a reference sentence, so rewording the
generator's sentences cannot drop an instruction from grading. An instruction of a gradable kind
without a planted value (a cohort made by an older generator) is counted and reported.
"""

from __future__ import annotations

import re
import warnings

import pandas as pd

# Kinds whose answer is one value from the record (the others are summaries, plans, translations).
GRADABLE_KINDS = frozenset(
    {
        "latest_lab",
        "first_lab",
        "latest_bp",
        "bmi",
        "egfr_stage",
        "last_visit",
        "first_diagnosis",
        "smoking",
        "demographics",
        "last_procedure",
    }
)
_NUM = re.compile(r"[-+]?\d+(?:\.\d+)?")


def value_match(answer: str, value: str) -> bool:
    """Whether an answer states the value: numbers compared as numbers (7.2 = 7.20), text
    case-insensitively."""
    answer = answer or ""
    if _NUM.fullmatch(value):
        target = float(value)
        return any(abs(float(x) - target) < 1e-9 for x in _NUM.findall(answer))
    return value.lower() in answer.lower()


def planted_values(planted: dict) -> pd.DataFrame:
    """One row per instruction of a gradable kind: instruction_id, kind, value, unit, date (value
    None where the cohort planted none). Warns with the count of such instructions."""
    rows = [
        {"instruction_id": iid, "kind": a["kind"], **(a.get("value") or {"value": None, "unit": None, "date": None})}
        for iid, a in planted.get("answers", {}).items()
        if a.get("kind") in GRADABLE_KINDS
    ]
    df = pd.DataFrame(rows, columns=["instruction_id", "kind", "value", "unit", "date"])
    missing = int(df.value.isna().sum())
    if missing:
        warnings.warn(
            f"{missing} instructions of gradable kinds have no planted value (a cohort from an older "
            "generator?): they are not graded; regenerate the cohort with `medalign synth`",
            stacklevel=2,
        )
    return df


def grade_answers(results: pd.DataFrame, planted: dict) -> pd.DataFrame:
    """The answers (rows with instruction_id, answer, error) to instructions with a planted value,
    with `kind`, `value` and `correct` (the answer states the value). Answers that errored are left
    out and counted in `attrs['n_errors']`."""
    values = planted_values(planted).dropna(subset=["value"])
    graded = results.merge(values[["instruction_id", "kind", "value"]], on="instruction_id", how="inner")
    errors = graded.error.notna() if "error" in graded.columns else pd.Series(False, index=graded.index)
    out = graded[~errors].copy()
    out["correct"] = [value_match(a, v) for a, v in zip(out.answer.fillna(""), out.value)]
    out.attrs["n_errors"] = int(errors.sum())
    return out


def accuracy_table(graded: pd.DataFrame, by: tuple[str, ...] = ("system", "strategy", "context")) -> pd.DataFrame:
    """Share of graded answers that state the value, with the number graded, per group; beside it the
    same as a percentage with its 95% Wilson interval (a handful of answers per cell: no bootstrap)."""
    from statsmodels.stats.proportion import proportion_confint

    out = graded.groupby(list(by)).correct.agg(["mean", "size"]).rename(columns={"mean": "accuracy", "size": "graded"})
    hits = (out.accuracy * out.graded).round().astype(int)
    low, high = proportion_confint(hits, out.graded, alpha=0.05, method="wilson")
    return out.assign(accuracy_pct=100 * out.accuracy, ci_low=100 * low, ci_high=100 * high)


def beside_evidence(accuracy: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """`accuracy_table` (reset) with the share (%) of each strategy and context's prompts that hold
    the instruction's evidence at all: the most a model answering from them could state."""
    held = prompts.assign(held=100 * pd.to_numeric(prompts.evidence_retained, errors="coerce"))
    held = held.groupby(["strategy", "context"]).held.mean().rename("evidence in prompt").reset_index()
    return accuracy.drop(columns="accuracy").merge(held, on=["strategy", "context"], how="left")


def generation_order(instructions: pd.DataFrame, planted: dict | None) -> list[str]:
    """Instruction ids in the order a small generation sample takes them: on the synthetic cohort
    those with a planted value first (they can be graded automatically), then those with reference
    answers, then by id."""
    gradable = set(planted_values(planted).dropna(subset=["value"]).instruction_id) if planted else set()
    ranked = instructions.assign(
        not_gradable=~instructions.instruction_id.isin(gradable), no_reference=~instructions.has_reference.astype(bool)
    )
    return ranked.sort_values(["not_gradable", "no_reference", "instruction_id"]).instruction_id.tolist()
