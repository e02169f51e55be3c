"""The judge's modes and their verdicts: templates (files in templates/), the keys and values each
mode allows (as a JSON schema for servers and a skeleton for local constrained decoding),
defensive parsing (the last complete JSON object of the judge's own output), and the value
distributions read from token probabilities with the expected scores they give.
"""

from __future__ import annotations

import json
from json.decoder import scanstring
from pathlib import Path

import numpy as np

from ...context import PromptTemplate
from ...generation.constrained import OutputConstraint

TEMPLATES = Path(__file__).parent / "templates"
# Raw control characters inside strings (a newline in a rationale, which llama.cpp's grammar lets
# through) do not make a verdict unreadable: its keys and values are intact.
_LENIENT = json.JSONDecoder(strict=False)

MODES = ("rubric", "correct", "pairwise", "medhelm")
RUBRIC_KEYS = ("accuracy", "completeness", "clarity")
SCORES = ("1", "2", "3", "4", "5")
VERDICT_KEYS = {
    "rubric": {*RUBRIC_KEYS, "rationale"},
    "correct": {"correct", "rationale"},
    "pairwise": {"winner", "rationale"},
    "medhelm": set(RUBRIC_KEYS),
}
# Each place a value is chosen, by its key path, and the values allowed there (as JSON text).
ALLOWED_VALUES = {
    "rubric": {k: SCORES for k in RUBRIC_KEYS},
    "correct": {"correct": ("true", "false")},
    "pairwise": {"winner": ("A", "B", "tie")},
    "medhelm": {f"{k}.score": SCORES for k in RUBRIC_KEYS},
}


def judge_template(mode: str) -> PromptTemplate:
    if mode not in MODES:
        raise ValueError(f"judge mode must be one of {', '.join(MODES)}, not {mode!r}")
    return PromptTemplate.from_file(TEMPLATES / f"judge_{mode}.txt")


# ------------------------------------------------------------------ what a verdict must look like


def _strict(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def verdict_schema(mode: str) -> dict:
    """The mode's verdict as a strict JSON schema (what a server's structured output enforces)."""
    score = {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    line = {"type": "string", "maxLength": 300}
    if mode == "rubric":
        return _strict({**{k: score for k in RUBRIC_KEYS}, "rationale": line})
    if mode == "correct":
        return _strict({"correct": {"type": "boolean"}, "rationale": line})
    if mode == "pairwise":
        return _strict({"winner": {"type": "string", "enum": ["A", "B", "tie"]}, "rationale": line})
    if mode == "medhelm":
        return _strict({k: _strict({"score": score, "explanation": line}) for k in RUBRIC_KEYS})
    raise ValueError(f"judge mode must be one of {', '.join(MODES)}, not {mode!r}")


def verdict_skeleton(mode: str) -> tuple:
    """The mode's verdict as fixed text and choices, in the template's key order."""
    if mode == "rubric":
        segs = [("text", '{"accuracy": '), ("choice", "accuracy", SCORES)]
        segs += [("text", ', "completeness": '), ("choice", "completeness", SCORES)]
        segs += [("text", ', "clarity": '), ("choice", "clarity", SCORES)]
        return (*segs, ("text", ', "rationale": "'), ("free", "rationale"), ("text", '"}'))
    if mode == "correct":
        choice = ("choice", "correct", ALLOWED_VALUES["correct"]["correct"])
        return ("text", '{"correct": '), choice, ("text", ', "rationale": "'), ("free", "rationale"), ("text", '"}')
    if mode == "pairwise":
        choice = ("choice", "winner", ALLOWED_VALUES["pairwise"]["winner"])
        return ("text", '{"winner": "'), choice, ("text", '", "rationale": "'), ("free", "rationale"), ("text", '"}')
    if mode == "medhelm":
        segs: list = []
        for i, k in enumerate(RUBRIC_KEYS):
            segs += [("text", ("{" if i == 0 else ", ") + f'"{k}": {{"score": '), ("choice", f"{k}.score", SCORES)]
            segs += [("text", ', "explanation": "'), ("free", f"{k}.explanation"), ("text", '"}')]
        return (*segs, ("text", "}"))
    raise ValueError(f"judge mode must be one of {', '.join(MODES)}, not {mode!r}")


def verdict_constraint(mode: str, *, free_tokens: int = 48) -> OutputConstraint:
    """What the judge asks of every answer in `mode`: the schema for servers, the skeleton for
    local constrained decoding."""
    return OutputConstraint(f"medalign_{mode}_verdict", verdict_schema(mode), verdict_skeleton(mode), free_tokens)


# ------------------------------------------------------------------ parsing verdicts


def _object_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every complete top-level {...} in a text (braces inside strings respected)."""
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
                out.append((start, i + 1))
    return out


def _last_object(text: str) -> tuple[dict, int] | None:
    """The last complete JSON object of a text and where it starts."""
    for start, end in reversed(_object_spans(text)):
        try:
            obj = _LENIENT.decode(text[start:end])
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj, start
    return None


def json_objects(text: str) -> list[dict]:
    """Every complete JSON object in a text, in order (braces inside strings are respected)."""
    out = []
    for start, end in _object_spans(text):
        try:
            obj = _LENIENT.decode(text[start:end])
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _is_score(x) -> bool:
    return not isinstance(x, bool) and isinstance(x, int) and 1 <= x <= 5


def _check_values(mode: str, v: dict) -> str | None:
    if mode == "medhelm":
        for k in RUBRIC_KEYS:
            c = v[k]
            if not isinstance(c, dict) or set(c) != {"score", "explanation"}:
                return f"{k} is not an object with exactly score and explanation"
            if not _is_score(c["score"]):
                return f"{k}.score {c['score']!r} is not an integer from 1 to 5"
            if not isinstance(c["explanation"], str):
                return f"{k}.explanation is not text"
        return None
    if not isinstance(v["rationale"], str):
        return "rationale is not text"
    if mode == "rubric":
        bad = next((k for k in RUBRIC_KEYS if not _is_score(v[k])), None)
        return f"{bad} {v[bad]!r} is not an integer from 1 to 5" if bad else None
    if mode == "correct":
        return None if isinstance(v["correct"], bool) else f"correct {v['correct']!r} is not true or false"
    return None if v["winner"] in ("A", "B", "tie") else f"winner {v['winner']!r} is not A, B or tie"


def parse_verdict(mode: str, output: str) -> tuple[dict | None, str | None]:
    """(verdict, None) when the judge's output ends in a valid verdict, else (None, why). Only the
    last complete JSON object counts; its keys must be exactly the mode's, its values in range."""
    found = _last_object(output)
    if found is None:
        return None, "no JSON object in the judge's output"
    v = found[0]
    keys = set(v)
    if keys != VERDICT_KEYS[mode]:
        missing, extra = VERDICT_KEYS[mode] - keys, keys - VERDICT_KEYS[mode]
        return None, "keys " + "; ".join(
            x
            for x in (f"missing {sorted(missing)}" if missing else "", f"unexpected {sorted(extra)}" if extra else "")
            if x
        )
    why = _check_values(mode, v)
    return (None, why) if why else (v, None)


def verdict_score(mode: str, verdict: dict) -> float:
    """The number a verdict stands for: the mean of the three criteria (rubric, medhelm), 1/0 for
    correct."""
    if mode == "rubric":
        return float(np.mean([verdict[k] for k in RUBRIC_KEYS]))
    if mode == "medhelm":
        return float(np.mean([verdict[k]["score"] for k in RUBRIC_KEYS]))
    if mode == "correct":
        return float(verdict["correct"])
    raise ValueError("a pairwise verdict has no score of its own")


# ------------------------------------------------------------------ probabilities of the values


def _value_positions(text: str, start: int, prefix: str = "") -> dict[str, int]:
    """Where each value of the JSON object at `start` begins (a string's first character inside
    its quotes), by key path; nested objects are followed."""
    decoder, out = _LENIENT, {}
    i = start + 1
    while True:
        while text[i] in " \t\r\n,":
            i += 1
        if text[i] == "}":
            return out
        key, i = scanstring(text, i + 1, False)
        while text[i] in " \t\r\n:":
            i += 1
        path = prefix + key
        if text[i] == "{":
            out.update(_value_positions(text, i, path + "."))
            _, i = decoder.raw_decode(text, i)
            continue
        out[path] = i + 1 if text[i] == '"' else i
        _, i = decoder.raw_decode(text, i)


def _match_value(piece: str, values: tuple) -> str | None:
    """The allowed value a token's text at a value's position stands for (a prefix that only one
    value has, or a whole value followed by JSON punctuation)."""
    if not piece:
        return None
    whole = [v for v in values if piece.startswith(v) and piece[len(v) :].strip() in ("", '"', ",", "}", '",', '"}')]
    if whole:
        return max(whole, key=len)
    prefixed = [v for v in values if v.startswith(piece)]
    return prefixed[0] if len(prefixed) == 1 else None


def value_distributions(mode: str, tokens: list[dict] | None) -> dict[str, dict[str, float]] | None:
    """The probability of every allowed value at each value's position, renormalised over the
    allowed values, from a server's token log-probabilities (`choices[0].logprobs.content`: token,
    logprob, top_logprobs). None when there are none, or the tokens do not spell a verdict."""
    if not tokens:
        return None
    text = "".join(t.get("token", "") for t in tokens)
    found = _last_object(text)
    if found is None:
        return None
    try:
        positions = _value_positions(text, found[1])
    except (ValueError, IndexError):
        return None
    starts = np.cumsum([0] + [len(t.get("token", "")) for t in tokens])
    out = {}
    for key, values in ALLOWED_VALUES[mode].items():
        if key not in positions:
            return None
        c = positions[key]
        k = int(np.searchsorted(starts, c, side="right") - 1)
        offset, own = c - starts[k], tokens[k].get("token", "")
        candidates = tokens[k].get("top_logprobs") or [{"token": own, "logprob": tokens[k].get("logprob", 0.0)}]
        mass = dict.fromkeys(values, 0.0)
        for cand in candidates:
            t = cand.get("token", "")
            value = _match_value(t[offset:], values) if t[:offset] == own[:offset] else None
            if value is not None and cand.get("logprob") is not None:
                mass[value] += float(np.exp(cand["logprob"]))
        total = sum(mass.values())
        if total <= 0:
            return None
        out[key] = {v: m / total for v, m in mass.items()}
    return out


def expected_score(mode: str, distributions: dict | None) -> float | None:
    """The probability-weighted score (G-Eval): the mean over criteria of sum p(s)*s (rubric,
    medhelm), p(true) (correct), p(A) - p(B) (pairwise); None without distributions."""
    if not distributions:
        return None
    if mode in ("rubric", "medhelm"):
        return float(np.mean([sum(p * int(s) for s, p in d.items()) for d in distributions.values()]))
    if mode == "correct":
        return float(distributions["correct"]["true"])
    d = distributions["winner"]
    return float(d["A"] - d["B"])


def verdict_token_logprobs(mode: str, verdict: dict, distributions: dict) -> list[dict]:
    """A verdict's JSON as a server returns it with logprobs: each value one token whose
    `top_logprobs` are its distribution over the allowed values, the text between in tokens of
    log-probability 0 (what the planted test judge serves, and what tests compute by hand)."""
    text = json.dumps(verdict)
    positions = _value_positions(text, 0)
    tokens, at = [], 0
    for c, key in sorted((positions[k], k) for k in ALLOWED_VALUES[mode]):
        chosen = max((v for v in ALLOWED_VALUES[mode][key] if text.startswith(v, c)), key=len)
        if c > at:
            tokens.append({"token": text[at:c], "logprob": 0.0, "top_logprobs": []})
        ranked = sorted(distributions[key].items(), key=lambda kv: -kv[1])
        tops = [{"token": v, "logprob": float(np.log(p))} for v, p in ranked if p > 0]
        tokens.append({"token": chosen, "logprob": float(np.log(distributions[key][chosen])), "top_logprobs": tops})
        at = c + len(chosen)
    tokens.append({"token": text[at:], "logprob": 0.0, "top_logprobs": []})
    return tokens
