"""medalign_utils: the shared package of the MedAlign notebook suite.

One subpackage per stage of the data's path: `data` (reading a release: tables, both XML schemas,
the cohort's description), `synthetic` (the stand-in cohort and its planted truth), `context`
(tokenizers, templates, the paper's budget, strategies, evidence, the prompt grid), `generation`
(backends, the data guard, resumable stores), `evaluation` (clinician labels, metrics, Table 4,
LLM judges) and `reports` (the papermill runner, pages, findings, the share-safe scan); `config`,
`paper`, `plots`, `assets` (where offline models live) and `cli` beside them.

The names most work starts from are here, each one line: `open_release(path)`,
`load_tokenizer("cl100k")`, `load_backend("smollm2")`, `make_metric("rougeL")`,
`Judge.from_spec("smollm2")`, `run_suite()`. They load on first use, so `import medalign_utils`
stays cheap for the command line.
"""

__version__ = "0.1.0"

import importlib as _importlib
import warnings as _warnings

# Progress bars are tqdm.auto's: widgets in JupyterLab (ipywidgets is a dependency), text on a console.
# Where ipywidgets is missing (a trimmed environment) tqdm warns in every notebook; the text bar is fine.
_warnings.filterwarnings("ignore", message="IProgress not found")

_ENTRY_POINTS = {
    "open_release": "medalign_utils.data.release",
    "load_tokenizer": "medalign_utils.context.tokenizers",
    "load_backend": "medalign_utils.generation.backends",
    "make_metric": "medalign_utils.evaluation.metrics",
    "Judge": "medalign_utils.evaluation.judge.settings",
    "run_suite": "medalign_utils.reports.runner",
}

__all__ = ["__version__", *_ENTRY_POINTS]


def __getattr__(name: str):
    if name in _ENTRY_POINTS:
        return getattr(_importlib.import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'medalign_utils' has no attribute {name!r}")
