"""medalign_utils: the shared package of the MedAlign notebook suite.

One module per stage of the data's path: `release` (reading a release), `ehr` (XML to events),
`synthetic` (the stand-in cohort), `tokenization`, `context`, `generation`, `metrics`,
`human_eval`, `correlation`, `plots`, `reports`, `models`, and `cli` on top.
"""

__version__ = "0.1.0"
