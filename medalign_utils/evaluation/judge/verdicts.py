"""A verdict read out of a judge's answer: parsed from its text (the last complete JSON object,
checked by its mode), and its value distributions read from a server's token probabilities (with
the token stream the planted test judge serves for a verdict and its distributions).
"""

from __future__ import annotations

import json

import numpy as np

from .json_text import last_json_object, value_positions
from .modes import JudgeMode, get_mode


def parse_verdict(mode: str | JudgeMode, output: str) -> tuple[dict | None, str | None]:
    """(verdict, None) when the judge's output ends in a valid verdict of `mode`, else (None, why)."""
    return get_mode(mode).parse(output)


# ------------------------------------------------------------------ probabilities of the values


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


def value_distributions(mode: str | JudgeMode, tokens: list[dict] | None) -> dict[str, dict[str, float]] | None:
    """The probability of every allowed value at each value's position, renormalised over the
    allowed values, from a server's token log-probabilities (`choices[0].logprobs.content`: token,
    logprob, top_logprobs). None when there are none, or the tokens do not spell a verdict."""
    if not tokens:
        return None
    text = "".join(t.get("token", "") for t in tokens)
    found = last_json_object(text)
    if found is None:
        return None
    try:
        positions = value_positions(text, found[1])
    except (ValueError, IndexError):
        return None
    starts = np.cumsum([0] + [len(t.get("token", "")) for t in tokens])
    out = {}
    for key, values in get_mode(mode).allowed_values.items():
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


def verdict_token_logprobs(mode: str | JudgeMode, verdict: dict, distributions: dict) -> list[dict]:
    """A verdict's JSON as a server returns it with logprobs: each value one token whose
    `top_logprobs` are its distribution over the allowed values, the text between in tokens of
    log-probability 0 (what the planted test judge serves, and what tests compute by hand)."""
    allowed = get_mode(mode).allowed_values
    text = json.dumps(verdict)
    positions = value_positions(text, 0)
    tokens, at = [], 0
    for c, key in sorted((positions[k], k) for k in allowed):
        chosen = max((v for v in allowed[key] if text.startswith(v, c)), key=len)
        if c > at:
            tokens.append({"token": text[at:c], "logprob": 0.0, "top_logprobs": []})
        ranked = sorted(distributions[key].items(), key=lambda kv: -kv[1])
        tops = [{"token": v, "logprob": float(np.log(p))} for v, p in ranked if p > 0]
        tokens.append({"token": chosen, "logprob": float(np.log(distributions[key][chosen])), "top_logprobs": tops})
        at = c + len(chosen)
    tokens.append({"token": text[at:], "logprob": 0.0, "top_logprobs": []})
    return tokens
