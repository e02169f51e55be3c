"""A synthetic cohort in the release's exact layout, with its truth planted as data.

`cohort.make_cohort(out, CohortSpec.for_scale(...))` writes records (`records`: LUMIA-schema XML
whose notes mention the coded facts), instructions with answers derived from each record
(`instructions`), six systems' responses (`responses`), clinician labels from a planted label
model (`labels`, with the statistics the analyses should recover), and `planted_truth.json`.
`grading` grades answers against the planted values. It stands right after `data` and uses only
`data` and the top-level helpers: it writes what `data` reads, and the stages after it read its
planted truth (the planted test judge, `evaluation.judge.planted`, grades by it).
"""

from .cohort import CohortSpec, make_cohort, record_lengths
from .grading import GRADABLE_KINDS, accuracy_table, generation_order, grade_answers, planted_values, value_match
from .labels import (
    LabelModel,
    expected_inter_rater_tau,
    expected_judge_tau,
    expected_table3,
    judge_rubric_level,
    planted_coverage,
    simulate_labels,
)

__all__ = [
    "GRADABLE_KINDS",
    "CohortSpec",
    "LabelModel",
    "accuracy_table",
    "expected_inter_rater_tau",
    "expected_judge_tau",
    "expected_table3",
    "generation_order",
    "grade_answers",
    "judge_rubric_level",
    "make_cohort",
    "planted_coverage",
    "planted_values",
    "record_lengths",
    "simulate_labels",
    "value_match",
]
