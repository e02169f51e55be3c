"""LLM judges of MedAlign responses, measured against the release's own clinician labels.

`settings` is the one way to build a judge (`JudgeSettings`, its defaults in one place;
`Judge.from_spec("smollm2")`, an endpoint URL, a model folder, ``"planted"``); `modes` holds the
registered judge modes (rubric, correct, pairwise, medhelm: each one object with its template,
schema, skeleton, parsing, score and direction); `verdicts` reads value distributions from token
probabilities; `running` builds the items judges see and the resumable run; `planted` is the
synthetic cohort's test judge (a registered backend); `helm` brings a HELM run's completions and
jurors' annotations in; `agreement` measures a judge against the clinicians (Table 4 rows, kappa
and per-system bias, pairwise agreement and position bias, win rates, cost); `trust` says how far
to trust it (CIs on every agreement figure, its percentile among the clinicians, the alternative
annotator test, MedHELM's statistics); `estimates` places a new system with the judge's transfer
error inside the interval, PPI from a few labels, a label planner; `placement` judges a new system
against the six; `displays` holds the result objects notebook 06 shows (Table 4 rows, trust,
placement: computed once, then `.table`, `.findings()`, `.plot()`).
"""

from .agreement import (
    as_metric_scores,
    correct_agreement,
    cost_table,
    distribution_counts,
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
from .displays import (
    JudgeTable4Display,
    JudgeTrustDisplay,
    LabelPlanDisplay,
    PlacementDisplay,
    correct_agreement_table,
    design_widths,
)
from .estimates import (
    label_budget,
    place_summary,
    ppi_mean_ci,
    ppi_win_rate,
    read_new_labels,
    transfer_table,
)
from .helm import (
    HelmRunError,
    default_system_name,
    helm_instance_ids,
    helm_instances,
    helm_jury_score,
    import_helm_run,
    read_helm_run,
    read_run_spec,
)
from .json_text import json_objects
from .labelplans import (
    DESIGNS,
    LabelPlan,
    expected_width,
    inclusion_probabilities,
    ipw_ppi_ci,
    jury_effective_size,
    label_saving_ceiling,
    plan_labels,
    planted_predictions,
    simulate_designs,
    stratified_ppi_ci,
)
from .modes import RUBRIC_KEYS, JudgeMode, get_mode, mode_names, register_mode
from .placement import place_new_system, system_to_place
from .planted import PlantedJudge, oracle_label_plan, planted_judge
from .running import (
    estimate_judgments,
    generation_items,
    judge_all_modes,
    judge_prompts,
    judgments_file,
    pairwise_items,
    read_judgments,
    response_items,
    run_judgments,
    with_new_system,
)
from .settings import DEFAULTS, Judge, JudgeSettings
from .trust import (
    agreement_report,
    alt_test,
    correct_agreement_intervals,
    icc3k,
    judge_among_clinicians,
    macro_f1,
    medhelm_agreement,
    pairwise_agreement_intervals,
    quadratic_kappa,
)
from .verdicts import parse_verdict

__all__ = [
    "DESIGNS",
    "LabelPlan",
    "expected_width",
    "inclusion_probabilities",
    "ipw_ppi_ci",
    "jury_effective_size",
    "label_saving_ceiling",
    "plan_labels",
    "planted_predictions",
    "simulate_designs",
    "stratified_ppi_ci",
    "DEFAULTS",
    "estimate_judgments",
    "RUBRIC_KEYS",
    "Judge",
    "JudgeMode",
    "JudgeTable4Display",
    "JudgeTrustDisplay",
    "LabelPlanDisplay",
    "PlacementDisplay",
    "JudgeSettings",
    "PlantedJudge",
    "agreement_report",
    "alt_test",
    "as_metric_scores",
    "correct_agreement",
    "correct_agreement_table",
    "correct_agreement_intervals",
    "cost_table",
    "distribution_counts",
    "generation_items",
    "get_mode",
    "HelmRunError",
    "default_system_name",
    "design_widths",
    "helm_instance_ids",
    "helm_instances",
    "helm_jury_score",
    "read_helm_run",
    "read_run_spec",
    "icc3k",
    "import_helm_run",
    "invalid_counts",
    "judge_all_modes",
    "judge_among_clinicians",
    "judge_prompts",
    "judge_scores",
    "judge_win_matrix",
    "judge_win_rates",
    "judgments_file",
    "json_objects",
    "jury_scores",
    "label_budget",
    "macro_f1",
    "medhelm_agreement",
    "mode_names",
    "pairwise_agreement",
    "pairwise_agreement_intervals",
    "pairwise_battles",
    "pairwise_items",
    "pairwise_summary",
    "parse_verdict",
    "place_new_system",
    "place_summary",
    "oracle_label_plan",
    "planted_judge",
    "position_bias",
    "ppi_mean_ci",
    "ppi_win_rate",
    "quadratic_kappa",
    "read_judgments",
    "read_new_labels",
    "register_mode",
    "response_items",
    "run_judgments",
    "self_preference",
    "system_to_place",
    "transfer_table",
    "with_new_system",
]
