"""Turning executed notebooks into reports that are safe to share.

`runner.run_suite` runs the notebooks with papermill in the order their declarations give
(`notebooks`: what each reads and writes, in its parameters cell), reusing results whose inputs
did not change, and writes the index and `run.json`; `pages` renders reader's pages (code
collapsed, no stderr, no machine paths) and the bundle; `findings` is what a notebook records for
the index (`record_finding`, `record_table` for the bundle's CSVs) and `medalign compare`; `tables`
makes a DataFrame readable on a page (`show`); `scan` is the one place output passes on its
way to disk or console: `ShareSafeWriter` fails a run whose output holds record text, person_ids
or record dates.
"""

from .findings import (
    Finding,
    compare_findings,
    load_run_findings,
    record_finding,
    record_table,
)
from .notebooks import NotebookSpec, plan_notebooks
from .pages import SYNTHETIC_BANNER, render_page
from .runner import RUNNER_KERNEL_MARKER, declared_parameters, index_html, run_suite
from .scan import SensitiveIndex, ShareSafeWriter, dates_in
from .tables import readable, readable_table3, show

__all__ = [
    "Finding",
    "NotebookSpec",
    "RUNNER_KERNEL_MARKER",
    "SYNTHETIC_BANNER",
    "SensitiveIndex",
    "ShareSafeWriter",
    "compare_findings",
    "dates_in",
    "declared_parameters",
    "index_html",
    "load_run_findings",
    "plan_notebooks",
    "readable",
    "readable_table3",
    "record_finding",
    "record_table",
    "render_page",
    "run_suite",
    "show",
]
