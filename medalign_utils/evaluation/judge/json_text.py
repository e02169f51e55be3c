"""Reading JSON objects out of a judge's free text: every complete top-level object (braces inside
strings respected, raw control characters inside strings tolerated), the last one, and where each
value of an object begins (for reading a value's token probabilities)."""

from __future__ import annotations

import json
from json.decoder import scanstring

# Raw control characters inside strings (a newline in a rationale, which llama.cpp's grammar lets
# through) do not make a verdict unreadable: its keys and values are intact.
_LENIENT = json.JSONDecoder(strict=False)


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


def _objects(text: str, spans) -> list[tuple[dict, int]]:
    out = []
    for start, end in spans:
        try:
            obj = _LENIENT.decode(text[start:end])
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append((obj, start))
    return out


def last_json_object(text: str) -> tuple[dict, int] | None:
    """The last complete JSON object of a text and where it starts."""
    spans = _object_spans(text)
    for span in reversed(spans):
        found = _objects(text, [span])
        if found:
            return found[0]
    return None


def json_objects(text: str) -> list[dict]:
    """Every complete JSON object in a text, in order (braces inside strings are respected)."""
    return [obj for obj, _ in _objects(text, _object_spans(text))]


def value_positions(text: str, start: int, prefix: str = "") -> dict[str, int]:
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
            out.update(value_positions(text, i, path + "."))
            _, i = decoder.raw_decode(text, i)
            continue
        out[path] = i + 1 if text[i] == '"' else i
        _, i = decoder.raw_decode(text, i)
