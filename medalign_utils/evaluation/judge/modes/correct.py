"""``correct``: the paper's binary label, ``{"correct": true|false, "rationale": ...}``; the score is 1
or 0, the expected score p(true)."""

from __future__ import annotations

from .base import LINE, JudgeMode, strict_object


class CorrectMode(JudgeMode):
    name = "correct"

    def schema(self) -> dict:
        return strict_object({"correct": {"type": "boolean"}, "rationale": LINE})

    def skeleton(self) -> tuple:
        choice = ("choice", "correct", ("true", "false"))
        return ("text", '{"correct": '), choice, ("text", ', "rationale": "'), ("free", "rationale"), ("text", '"}')
