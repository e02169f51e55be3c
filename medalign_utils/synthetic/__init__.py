"""A synthetic cohort in the release's exact layout, with its truth planted as data.

`cohort.make_cohort(out, CohortSpec.for_scale(...))` writes records (`records`: LUMIA-schema XML
whose notes mention the coded facts), instructions with answers derived from each record
(`instructions`), six systems' responses (`responses`), clinician labels from a planted label
model (`labels`, with the statistics the analyses should recover), and `planted_truth.json`.
`grading` grades answers against the planted values; `planted_judge` is a loopback test judge
whose agreement with the clinicians is known in advance. This is the one stage that may know every
other: it writes what `data` reads, and its planted judge serves `evaluation`'s tests.
"""

from .cohort import GENERATOR_VERSION, CohortSpec, make_cohort, record_lengths
from .grading import GRADABLE_KINDS, accuracy_table, generation_order, grade_answers, planted_values, value_match
from .labels import (
    TIE_CONVENTION,
    LabelModel,
    expected_inter_rater_tau,
    expected_judge_tau,
    expected_table3,
    judge_rubric_level,
    planted_coverage,
    simulate_labels,
)
from .planted_judge import PlantedJudge, planted_judge

__all__ = [
    "GENERATOR_VERSION",
    "GRADABLE_KINDS",
    "TIE_CONVENTION",
    "CohortSpec",
    "LabelModel",
    "PlantedJudge",
    "accuracy_table",
    "expected_inter_rater_tau",
    "expected_judge_tau",
    "expected_table3",
    "generation_order",
    "grade_answers",
    "judge_rubric_level",
    "make_cohort",
    "planted_coverage",
    "planted_judge",
    "planted_values",
    "record_lengths",
    "simulate_labels",
    "value_match",
]
