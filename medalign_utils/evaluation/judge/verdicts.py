"""The judge's modes and their verdicts: templates (files in templates/), the keys and values each
mode allows, and defensive parsing (the last complete JSON object of the judge's own output).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...context import PromptTemplate

TEMPLATES = Path(__file__).parent / "templates"

MODES = ("rubric", "correct", "pairwise")
RUBRIC_KEYS = ("accuracy", "completeness", "clarity")
VERDICT_KEYS = {
    "rubric": {*RUBRIC_KEYS, "rationale"},
    "correct": {"correct", "rationale"},
    "pairwise": {"winner", "rationale"},
}


def judge_template(mode: str) -> PromptTemplate:
    if mode not in MODES:
        raise ValueError(f"judge mode must be one of {', '.join(MODES)}, not {mode!r}")
    return PromptTemplate.from_file(TEMPLATES / f"judge_{mode}.txt")


# ------------------------------------------------------------------ parsing verdicts


def json_objects(text: str) -> list[dict]:
    """Every complete JSON object in a text, in order (braces inside strings are respected)."""
    out, depth, start, in_str, esc = [], 0, None, False, False
    for i, ch in enumerate(text or ""):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth:
            in_str = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    obj = json.loads(text[start : i + 1])
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    out.append(obj)
    return out


def parse_verdict(mode: str, output: str) -> tuple[dict | None, str | None]:
    """(verdict, None) when the judge's output ends in a valid verdict, else (None, why). Only the
    last complete JSON object counts; its keys must be exactly the mode's, its values in range."""
    objects = json_objects(output)
    if not objects:
        return None, "no JSON object in the judge's output"
    v = objects[-1]
    keys = set(v)
    if keys != VERDICT_KEYS[mode]:
        missing, extra = VERDICT_KEYS[mode] - keys, keys - VERDICT_KEYS[mode]
        return None, "keys " + "; ".join(
            x
            for x in (f"missing {sorted(missing)}" if missing else "", f"unexpected {sorted(extra)}" if extra else "")
            if x
        )
    if not isinstance(v["rationale"], str):
        return None, "rationale is not text"
    if mode == "rubric":
        for k in RUBRIC_KEYS:
            if isinstance(v[k], bool) or not isinstance(v[k], int) or not 1 <= v[k] <= 5:
                return None, f"{k} {v[k]!r} is not an integer from 1 to 5"
    elif mode == "correct":
        if not isinstance(v["correct"], bool):
            return None, f"correct {v['correct']!r} is not true or false"
    elif v["winner"] not in ("A", "B", "tie"):
        return None, f"winner {v['winner']!r} is not A, B or tie"
    return v, None


def verdict_score(mode: str, verdict: dict) -> float:
    """The number a verdict stands for: the rubric's mean of three, 1/0 for correct."""
    if mode == "rubric":
        return float(np.mean([verdict[k] for k in RUBRIC_KEYS]))
    if mode == "correct":
        return float(verdict["correct"])
    raise ValueError("a pairwise verdict has no score of its own")
