"""Turning executed notebooks into reports that are safe to share.

`runner.run_suite` runs the notebooks with papermill in dependency order (reusing results whose
inputs did not change) and writes the index and `run.json`; `pages` renders reader's pages (code
collapsed, no stderr, no machine paths) and the bundle; `findings` is what a notebook records for
the index (`record_finding`) and `medalign compare`; `scan` is the one place output passes on its
way to disk or console: `ShareSafeWriter` fails a run whose output holds record text, person_ids
or record dates.
"""

from .findings import FINDINGS_ENV, Finding, compare_findings, load_run_findings, read_findings, record_finding
from .pages import bundle_run, relative_paths, render_page
from .runner import declared_parameters, index_html, run_suite
from .scan import SensitiveIndex, ShareSafeWriter, dates_in

__all__ = [
    "FINDINGS_ENV",
    "Finding",
    "SensitiveIndex",
    "ShareSafeWriter",
    "bundle_run",
    "compare_findings",
    "dates_in",
    "declared_parameters",
    "index_html",
    "load_run_findings",
    "read_findings",
    "record_finding",
    "relative_paths",
    "render_page",
    "run_suite",
]
