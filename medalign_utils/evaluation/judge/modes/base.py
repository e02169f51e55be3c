"""What every judge mode is, and the registry of modes by name."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from ....context import PromptTemplate
from ....generation.constrained import OutputConstraint
from ..json_text import last_json_object

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
# A one-line rationale or explanation: what every mode's schema allows as free text.
LINE = {"type": "string", "maxLength": 300}
# A server's free text is bounded in characters (JSON schema's maxLength), its budget in tokens: a
# token holds at least one character, so this many characters a token keeps a verdict short enough.
RATIONALE_CHARS_PER_TOKEN = 3


def _bounded(schema: dict, max_length: int) -> dict:
    """`schema` with every free-text string (no enum) at most `max_length` characters."""
    import copy

    out = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if node.get("type") == "string" and "enum" not in node:
                node["maxLength"] = min(int(node.get("maxLength", max_length)), max_length)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(out)
    return out


SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5]}
SCORES = ("1", "2", "3", "4", "5")


def strict_object(properties: dict) -> dict:
    """A JSON schema object with exactly these properties, all required."""
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _spoken(values: list) -> str:
    """["A", "B", "tie"] -> "A, B or tie"."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _value_problem(path: str, value, schema: dict) -> str | None:
    """Why `value` at `path` does not fit `schema` (the subset the modes use), or None."""
    kind = schema.get("type")
    if kind == "object":
        props = schema["properties"]
        if not isinstance(value, dict) or set(value) != set(props):
            return f"{path} is not an object with exactly {' and '.join(props)}"
        for key, sub in props.items():
            why = _value_problem(f"{path}.{key}", value[key], sub)
            if why:
                return why
        return None
    if kind == "integer":
        ok = not isinstance(value, bool) and isinstance(value, int) and value in schema.get("enum", [value])
        lo, hi = min(schema["enum"]), max(schema["enum"])
        return None if ok else f"{path} {value!r} is not an integer from {lo} to {hi}"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"{path} {value!r} is not true or false"
    if "enum" in schema:
        return None if value in schema["enum"] else f"{path} {value!r} is not {_spoken(schema['enum'])}"
    return None if isinstance(value, str) else f"{path} is not text"


class JudgeMode:
    """One way of judging: subclasses set `name` and give `schema()` and `skeleton()`; the rest
    (allowed values, parsing, validity, score, expected score, the template's fields) follows from
    those and may be overridden.

    `judges` is ``"response"`` (one answer a prompt) or ``"pair"`` (two answers, judged in both
    orders); `scored` says the verdict is a per-response score (a Table 4 row beside the metrics);
    `higher_is_better` its direction (Table 4 turns a lower-is-better score around)."""

    name: str = ""
    template_file: str | Path | None = None  # default: templates/judge_<name>.txt
    judges: str = "response"
    scored: bool = True
    higher_is_better: bool = True

    def schema(self) -> dict:
        raise NotImplementedError

    def skeleton(self) -> tuple:
        """The verdict as fixed text and choices: ("text", literal), ("choice", key path, values),
        ("free", key path), in the template's key order."""
        raise NotImplementedError

    # ---------------------------------------------------------------- derived from the above

    @cached_property
    def allowed_values(self) -> dict[str, tuple]:
        """Each place a value is chosen (its key path) and the values allowed there, as JSON text."""
        return {seg[1]: tuple(seg[2]) for seg in self.skeleton() if seg[0] == "choice"}

    @cached_property
    def keys(self) -> set[str]:
        """The verdict's top-level keys."""
        return set(self.schema()["properties"])

    def template(self) -> PromptTemplate:
        return PromptTemplate.from_file(self.template_file or TEMPLATES / f"judge_{self.name}.txt")

    def constraint(self, *, free_tokens: int = 48) -> OutputConstraint:
        """What the judge asks of every answer: the schema for servers, the skeleton for local
        constrained decoding (`free_tokens` bounds each free-text field). A server is held to the
        same bound: each free-text field's `maxLength` is `RATIONALE_CHARS_PER_TOKEN` characters a
        token, so a verdict always closes within the tokens it is given (`OutputConstraint.max_chars`)."""
        schema = _bounded(self.schema(), RATIONALE_CHARS_PER_TOKEN * free_tokens)
        return OutputConstraint(f"medalign_{self.name}_verdict", schema, self.skeleton(), free_tokens)

    def fields(self, row) -> dict:
        """The template's fields for one item (a row of `response_items` or `pairwise_items`)."""
        fields = {"question": row.question, "reference": row.reference}
        if self.judges == "pair":
            fields.update(response_a=row.response_a, response_b=row.response_b)
        else:
            fields["response"] = row.response
        return fields

    def check(self, verdict: dict) -> str | None:
        """Why a verdict with the right keys is not valid (a value out of range), or None."""
        for key, sub in self.schema()["properties"].items():
            why = _value_problem(key, verdict[key], sub)
            if why:
                return why
        return None

    def parse(self, output: str) -> tuple[dict | None, str | None]:
        """(verdict, None) when the judge's output ends in a valid verdict, else (None, why). Only
        the last complete JSON object counts; its keys must be exactly the mode's, values in range."""
        found = last_json_object(output)
        if found is None:
            return None, "no JSON object in the judge's output"
        verdict = found[0]
        if set(verdict) != self.keys:
            missing, extra = self.keys - set(verdict), set(verdict) - self.keys
            said = [f"missing {sorted(missing)}" if missing else "", f"unexpected {sorted(extra)}" if extra else ""]
            return None, "keys " + "; ".join(x for x in said if x)
        why = self.check(verdict)
        return (None, why) if why else (verdict, None)

    def _value(self, verdict: dict, path: str):
        for part in path.split("."):
            verdict = verdict[part]
        return verdict

    def score(self, verdict: dict) -> float | None:
        """The number a verdict stands for: the mean of its chosen values (true 1, false 0); None
        for a mode that is not scored."""
        if not self.scored:
            return None
        return float(np.mean([float(self._value(verdict, k)) for k in self.allowed_values]))

    def expected(self, distributions: dict | None) -> float | None:
        """The probability-weighted score (G-Eval): the mean over choices of sum p(v)*v; None
        without distributions."""
        if not distributions:
            return None
        number = {"true": 1, "false": 0}
        return float(np.mean([sum(p * int(number.get(v, v)) for v, p in d.items()) for d in distributions.values()]))

    def signed(self, scores):
        """Scores turned so that higher is better (what Table 4 correlates with the clinicians)."""
        return scores if self.higher_is_better else -scores

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, judges={self.judges!r}, scored={self.scored})"


_MODES: dict[str, JudgeMode] = {}


def register_mode(mode: JudgeMode) -> JudgeMode:
    """Make a mode known by its name (to the CLI's `--mode`, the runner, Table 4); returns it."""
    if not mode.name:
        raise ValueError("a judge mode needs a name")
    _MODES[mode.name] = mode
    return mode


def get_mode(mode: str | JudgeMode) -> JudgeMode:
    """The registered mode of that name (a mode object is returned as it is)."""
    if isinstance(mode, JudgeMode):
        return mode
    try:
        return _MODES[mode]
    except KeyError:
        raise ValueError(f"judge mode must be one of {', '.join(_MODES)}, not {mode!r}") from None


def mode_names(*, scored: bool | None = None) -> tuple[str, ...]:
    """The registered modes' names, in registration order (only the scored ones, or the others)."""
    return tuple(n for n, m in _MODES.items() if scored is None or m.scored == scored)


def mode_for_schema(schema: dict | None) -> JudgeMode | None:
    """The mode whose verdict schema this is (what a server sees of the mode), or None."""
    if schema is None:
        return None
    shape = _without_lengths(schema)  # the free text's bound depends on the judge's free_tokens
    return next((m for m in _MODES.values() if _without_lengths(m.schema()) == shape), None)


def _without_lengths(node):
    if isinstance(node, dict):
        return {k: _without_lengths(v) for k, v in node.items() if k != "maxLength"}
    if isinstance(node, list):
        return [_without_lengths(v) for v in node]
    return node
