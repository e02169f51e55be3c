"""Measuring answers: the clinicians' labels, automated metrics, their agreement, LLM judges.

`clinicians` combines raters and computes Table 3 and Figure 2 (correct %, win rate, mean rank
with bootstrap CIs), McNemar, Bradley-Terry, breakdowns and inter-rater agreement; `metrics` holds
the metric objects (ROUGE-L, BLEU, chrF(++), GoogleBLEU, METEOR, BERTScore, a source-augmented
score, COMET optional) whose signatures record their settings; `correlation` correlates any per-response
score with the clinicians' ranks (Table 4, Figure 3); `judge` runs LLM judges and measures them
against the clinicians; the vectorized Kendall tau-b and percentile bootstrap they share live in the top-level `stats`.
"""

from ..stats import Bootstrap, bootstrap_ci, kendall_tau_b_rows
from . import judge
from .clinicians import (
    agreement_summary,
    bradley_terry,
    breakdown,
    check_labels,
    cohens_kappa,
    combine_raters,
    correctness_agreement,
    fit_bradley_terry,
    fit_bradley_terry_many,
    fleiss_kappa,
    head_to_head,
    head_to_head_ci,
    inter_rater_tau,
    mcnemar,
    mcnemar_table,
    table3,
    win_matrix,
    win_rates,
)
from .correlation import (
    bm25_sources,
    generated_systems,
    metric_induced_labels,
    per_instruction_tau,
    preset_sensitivity,
    rank_systems,
    score_responses,
    system_level,
    table4,
    table4_for_release,
)
from .displays import BreakdownDisplay, ContextLossDisplay, Figure2Display, Table3Display
from .judge import Judge
from .metrics import PRESETS, MetricSignature, make_metric, metric_info, metric_names, register_metric

__all__ = [
    "PRESETS",
    "Bootstrap",
    "ContextLossDisplay",
    "Figure2Display",
    "Judge",
    "MetricSignature",
    "Table3Display",
    "BreakdownDisplay",
    "agreement_summary",
    "bm25_sources",
    "bootstrap_ci",
    "bradley_terry",
    "breakdown",
    "check_labels",
    "cohens_kappa",
    "combine_raters",
    "correctness_agreement",
    "fit_bradley_terry",
    "fit_bradley_terry_many",
    "fleiss_kappa",
    "generated_systems",
    "head_to_head",
    "head_to_head_ci",
    "inter_rater_tau",
    "judge",
    "kendall_tau_b_rows",
    "make_metric",
    "metric_info",
    "metric_names",
    "mcnemar",
    "mcnemar_table",
    "metric_induced_labels",
    "per_instruction_tau",
    "preset_sensitivity",
    "register_metric",
    "rank_systems",
    "score_responses",
    "system_level",
    "table3",
    "table4",
    "table4_for_release",
    "win_matrix",
    "win_rates",
]
