"""medalign_utils: the shared package of the MedAlign notebook suite.

One module per stage of the data's path: `release` (reading a release), `ehr` (XML to events),
`synthetic` (the stand-in cohort), `tokenization`, `context`, `generation`, `metrics`,
`human_eval`, `correlation`, `plots`, `reports`, `models`, and `cli` on top.
"""

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto's notebook bars need ipywidgets; without them it warns in every executed notebook. The
# suite's progress bars are plain text, so the warning says nothing useful in a report.
_warnings.filterwarnings("ignore", message="IProgress not found")
