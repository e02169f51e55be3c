"""``rubric``: accuracy, completeness and clarity, integers 1-5, and a one-line rationale (MedHELM's
criteria); the score is the mean of the three."""

from __future__ import annotations

from .base import LINE, SCORE, SCORES, JudgeMode, strict_object

RUBRIC_KEYS = ("accuracy", "completeness", "clarity")


class RubricMode(JudgeMode):
    name = "rubric"

    def schema(self) -> dict:
        return strict_object({**{k: SCORE for k in RUBRIC_KEYS}, "rationale": LINE})

    def skeleton(self) -> tuple:
        segs: list = []
        for i, k in enumerate(RUBRIC_KEYS):
            segs += [("text", ("{" if i == 0 else ", ") + f'"{k}": '), ("choice", k, SCORES)]
        return (*segs, ("text", ', "rationale": "'), ("free", "rationale"), ("text", '"}'))
