"""``medhelm``: MedHELM's own MedAlign prompt and criteria, each criterion an object of a 1-5 score
and an explanation; the score is the mean of the three (several `medhelm` judges form MedHELM's
jury)."""

from __future__ import annotations

from .base import LINE, SCORE, SCORES, JudgeMode, strict_object
from .rubric import RUBRIC_KEYS


class MedhelmMode(JudgeMode):
    name = "medhelm"

    def schema(self) -> dict:
        return strict_object({k: strict_object({"score": SCORE, "explanation": LINE}) for k in RUBRIC_KEYS})

    def skeleton(self) -> tuple:
        segs: list = []
        for i, k in enumerate(RUBRIC_KEYS):
            segs += [("text", ("{" if i == 0 else ", ") + f'"{k}": {{"score": '), ("choice", f"{k}.score", SCORES)]
            segs += [("text", ', "explanation": "'), ("free", f"{k}.explanation"), ("text", '"}')]
        return (*segs, ("text", "}"))
