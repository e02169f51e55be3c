"""Judge modes: each one object that knows its prompt, the verdict it asks for and what the verdict
is worth. A mode holds its template (a file in ``templates/``), the verdict's JSON schema (what a
server's structured output enforces) and skeleton (what local constrained decoding follows), the
values allowed at each choice, the validity check and parsing of a judge's output, the score a
verdict stands for and its direction, and whether its scores are a Table 4 row. Everything that
runs or measures a judge asks the mode, never its name.

Adding a mode is one file (a `JudgeMode` subclass) and one `register_mode` call; the four here are
MedHELM's rubric, the paper's binary correctness, A/B/tie comparison and MedHELM's own prompt.
"""

from __future__ import annotations

from .base import JudgeMode, get_mode, mode_for_schema, mode_names, register_mode
from .correct import CorrectMode
from .medhelm import MedhelmMode
from .pairwise import PairwiseMode
from .rubric import RUBRIC_KEYS, RubricMode

for _mode in (RubricMode(), CorrectMode(), PairwiseMode(), MedhelmMode()):
    register_mode(_mode)

__all__ = [
    "RUBRIC_KEYS",
    "CorrectMode",
    "JudgeMode",
    "MedhelmMode",
    "PairwiseMode",
    "RubricMode",
    "get_mode",
    "mode_for_schema",
    "mode_names",
    "register_mode",
]
