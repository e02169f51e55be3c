"""``pairwise``: A, B or tie between two responses to one instruction, each pair judged in both
orders (a verdict that flips with the order counts as a tie). Not a per-response score: its
verdicts become battles (win rates, Figure 2); the expected score is p(A) - p(B)."""

from __future__ import annotations

from .base import LINE, JudgeMode, strict_object

WINNERS = ("A", "B", "tie")


class PairwiseMode(JudgeMode):
    name = "pairwise"
    judges = "pair"
    scored = False

    def schema(self) -> dict:
        return strict_object({"winner": {"type": "string", "enum": list(WINNERS)}, "rationale": LINE})

    def skeleton(self) -> tuple:
        choice = ("choice", "winner", WINNERS)
        return ("text", '{"winner": "'), choice, ("text", '", "rationale": "'), ("free", "rationale"), ("text", '"}')

    def expected(self, distributions: dict | None) -> float | None:
        if not distributions:
            return None
        d = distributions["winner"]
        return float(d["A"] - d["B"])
