"""Looking at one instruction at a time, for error analysis in the researcher's own session.

`instances` holds small functions over the release's tables and the suite's outputs: a table of every
instruction to filter (`instance_table`, `filter_instances`), and for one of them what each
truncation strategy kept (`strategy_views`), the answers with the clinicians' ranks and labels
(`instance_answers`), the judge's verdicts (`instance_judgments`) and the metric scores
(`instance_metrics`); `render` makes HTML of them; `viewer` puts them behind ipywidgets
(`notebooks/explore.ipynb`). All of it shows patient text: the viewer refuses to run in a kernel
`medalign run` started, so none of it reaches a page.
"""

from .instances import (
    DISAGREEMENTS,
    KeptView,
    clinician_disagreement,
    filter_choices,
    filter_instances,
    instance_answers,
    instance_judgments,
    instance_metrics,
    instance_table,
    judge_disagreement,
    strategy_views,
    system_label,
)
from .render import answers_html, instance_html, judgments_html, kept_html, record_map
from .viewer import REFUSAL, InstanceSource, ViewerRefused, in_runner_kernel, viewer

__all__ = [
    "DISAGREEMENTS",
    "REFUSAL",
    "InstanceSource",
    "KeptView",
    "ViewerRefused",
    "answers_html",
    "clinician_disagreement",
    "filter_choices",
    "filter_instances",
    "in_runner_kernel",
    "instance_answers",
    "instance_html",
    "instance_judgments",
    "instance_metrics",
    "instance_table",
    "judge_disagreement",
    "judgments_html",
    "kept_html",
    "record_map",
    "strategy_views",
    "system_label",
    "viewer",
]
