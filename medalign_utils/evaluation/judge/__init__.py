"""LLM judges of MedAlign responses, measured against the release's own clinician labels.

`verdicts` holds the three modes' templates (rubric, correct, pairwise) and the defensive parsing
of a judge's output; `running` builds judges (`Judge.from_spec("smollm2")`, an endpoint URL, a
model folder), the items they judge and the resumable run; `agreement` measures a judge against
the clinicians (Table 4 rows, kappa and per-system bias, pairwise agreement and position bias,
the judge's win rates from the clinicians' head-to-head code, self-preference, cost).
"""

from .agreement import (
    as_metric_scores,
    battle_counts,
    correct_agreement,
    cost_table,
    invalid_counts,
    judge_scores,
    judge_win_matrix,
    judge_win_rates,
    jury_scores,
    pairwise_agreement,
    pairwise_battles,
    pairwise_summary,
    position_bias,
    self_preference,
)
from .placement import place_new_system, system_to_place
from .running import (
    KEY_FIELDS,
    Judge,
    judge_all_modes,
    judge_prompts,
    judgments_file,
    pairwise_items,
    read_judgments,
    response_items,
    run_judgments,
    upgrade_judgment,
    with_new_system,
)
from .verdicts import MODES, RUBRIC_KEYS, VERDICT_KEYS, json_objects, judge_template, parse_verdict, verdict_score

__all__ = [
    "KEY_FIELDS",
    "MODES",
    "RUBRIC_KEYS",
    "VERDICT_KEYS",
    "Judge",
    "as_metric_scores",
    "battle_counts",
    "correct_agreement",
    "cost_table",
    "invalid_counts",
    "json_objects",
    "judge_all_modes",
    "judge_prompts",
    "judge_scores",
    "judge_template",
    "judge_win_matrix",
    "judge_win_rates",
    "judgments_file",
    "jury_scores",
    "pairwise_agreement",
    "pairwise_battles",
    "pairwise_items",
    "pairwise_summary",
    "place_new_system",
    "system_to_place",
    "parse_verdict",
    "position_bias",
    "read_judgments",
    "response_items",
    "run_judgments",
    "self_preference",
    "upgrade_judgment",
    "verdict_score",
    "with_new_system",
]
