"""Structured output: what a caller asks of a backend's answer (`OutputConstraint`), how each kind
of server is asked for it (`response_format` forms), and constrained decoding for local models.

A constraint carries the answer's JSON schema (sent to servers) and its *skeleton*: the answer's
fixed text with the places where a value is chosen among a few allowed ones or free text is
written. A local Hugging Face model is forced through the skeleton by a logits processor (the
transformers generation hook), so its answer always parses; at each choice it records the
probability of every allowed value (the model's next-token distribution, renormalised over them).

Skeleton segments: ``("text", literal)``, ``("choice", key, values)``, ``("free", key)``; keys may
be paths ("accuracy.score") for nested answers.
"""

from __future__ import annotations

from dataclasses import dataclass

# The ways a server is asked for JSON, in the order a refusal falls back through them.
STRUCTURED_FORMS = ("json_schema", "llama.cpp", "tgi", "json_object", "none")


@dataclass(frozen=True)
class OutputConstraint:
    """What an answer must look like: `name` and `schema` (JSON schema) for servers, `skeleton`
    for local constrained decoding, `free_tokens` bounding each free-text field, and how many
    `top_logprobs` to ask a server for at each token."""

    name: str
    schema: dict
    skeleton: tuple
    free_tokens: int = 48
    top_logprobs: int = 20

    @property
    def max_chars(self) -> int:
        """The most characters an answer in the schema can take: the skeleton's text, its longest
        choices and each free-text field's `maxLength`. A token holds at least one character, so a
        server given this many new tokens always closes the JSON."""
        total = 0
        for seg in self.skeleton:
            if seg[0] == "text":
                total += len(seg[1])
            elif seg[0] == "choice":
                total += max(len(str(v)) for v in seg[2])
            elif seg[0] == "free":
                total += _max_length(self.schema, seg[1]) or 3 * self.free_tokens
        return total


def _max_length(schema: dict, key: str) -> int | None:
    """The `maxLength` of the string at `key` (a top-level or a nested property name)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            props = node.get("properties") or {}
            if key in props and "maxLength" in props[key]:
                return int(props[key]["maxLength"])
            stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
        elif isinstance(node, list):
            stack.extend(node)
    return None


def response_format(form: str, constraint: OutputConstraint) -> dict | None:
    """The `response_format` field asking a server of one kind for the constraint's JSON:
    ``json_schema`` (the OpenAI API, vLLM), ``llama.cpp`` (llama.cpp's server, llama-cpp-python),
    ``tgi`` (Text Generation Inference), ``json_object`` (any JSON), ``none`` (no field)."""
    if form == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": constraint.name, "schema": constraint.schema, "strict": True},
        }
    if form == "llama.cpp":
        return {"type": "json_object", "schema": constraint.schema}
    if form == "tgi":
        return {"type": "json_object", "value": constraint.schema}
    if form == "json_object":
        return {"type": "json_object"}
    if form == "none":
        return None
    raise ValueError(f"structured output form must be one of {', '.join(STRUCTURED_FORMS)}, not {form!r}")


# ------------------------------------------------------------------ local constrained decoding


@dataclass(frozen=True)
class _Choice:
    key: str
    first: dict  # first token id -> (value, the rest of its token ids)


@dataclass(frozen=True)
class _Free:
    key: str
    limit: int


def compile_skeleton(tokenizer, constraint: OutputConstraint) -> list:
    """The skeleton as token steps for one tokenizer: an int (a forced token), a `_Choice` or a
    `_Free`. A choice's values are encoded in the context of the text before them; tokens all
    values share are forced, and the first token after must tell every value apart."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    steps: list = []
    literal = ""
    for seg in constraint.skeleton:
        if seg[0] == "text":
            literal += seg[1]
            continue
        if seg[0] == "free":
            steps += encode(literal)
            literal = ""
            steps.append(_Free(seg[1], constraint.free_tokens))
            continue
        key, values = seg[1], seg[2]
        head = literal.rstrip(" ")
        space = literal[len(head) :]
        head_ids = encode(head) if head else []
        seqs = []
        for v in values:
            ids = encode(head + space + v)
            seqs.append(ids[len(head_ids) :] if ids[: len(head_ids)] == head_ids else encode(space + v))
        steps += head_ids
        shared = 0
        while all(len(s) > shared + 1 for s in seqs) and len({s[shared] for s in seqs}) == 1:
            shared += 1
        steps += seqs[0][:shared]
        first = {}
        for v, s in zip(values, seqs):
            if s[shared] in first:
                raise ValueError(f"values {first[s[shared]][0]!r} and {v!r} of {key} start with the same token")
            first[s[shared]] = (v, tuple(s[shared + 1 :]))
        steps.append(_Choice(key, first))
        literal = ""
    steps += encode(literal)
    return steps


def free_text_mask(tokenizer, vocab_size: int):
    """Tokens a free-text field may use: no quote, backslash or control character (so the JSON
    string stays valid), no special token, no partial character."""
    import torch

    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    special = set(tokenizer.all_special_ids)
    ok = [
        i not in special and bool(t) and '"' not in t and "\\" not in t and "\ufffd" not in t
        and all(ord(c) >= 32 for c in t)
        for i, t in enumerate(texts)
    ]  # fmt: skip
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[: len(ok)] = torch.tensor(ok[:vocab_size])
    return mask


class _Row:
    """Where one sequence of a batch stands in the skeleton."""

    def __init__(self, steps: list):
        self.steps, self.i, self.queue, self.free, self.probs = steps, 0, [], 0, {}

    def step(self):
        return self.steps[self.i] if self.i < len(self.steps) else None

    def advance(self, token: int) -> None:
        if self.queue:
            self.queue.pop(0)
            return
        step = self.step()
        if step is None:
            return
        if isinstance(step, int):
            self.i += 1
        elif isinstance(step, _Choice):
            self.queue = list(step.first[token][1]) if token in step.first else []
            self.i += 1
        elif self._closes(token):
            self.i += 2  # the free field and the first token of the text that closes it
            self.free = 0
        else:
            self.free += 1

    def _closes(self, token: int) -> bool:
        nxt = self.steps[self.i + 1] if self.i + 1 < len(self.steps) else None
        return isinstance(nxt, int) and token == nxt

    def close_token(self):
        nxt = self.steps[self.i + 1] if self.i + 1 < len(self.steps) else None
        return nxt if isinstance(nxt, int) else None


class SkeletonLogitsProcessor:
    """A transformers logits processor forcing each row of a left-padded batch through the
    skeleton, then end-of-sequence; `rows[b].probs` holds each choice's value probabilities."""

    def __init__(self, steps: list, free_mask, eos_id: int, batch: int):
        self.rows = [_Row(steps) for _ in range(batch)]
        self.free_mask, self.eos_id, self.started = free_mask, eos_id, False

    def select(self, rows: list[int]) -> None:
        """Keep only these rows (in this order): the batch they were in lost its finished rows."""
        self.rows = [self.rows[b] for b in rows]

    def __call__(self, input_ids, scores):
        import torch

        if self.started:
            for row, token in zip(self.rows, input_ids[:, -1].tolist()):
                row.advance(int(token))
        self.started = True
        out = torch.full_like(scores, float("-inf"))
        for b, row in enumerate(self.rows):
            step = row.step()
            if row.queue:
                allowed = [row.queue[0]]
            elif step is None:
                allowed = [self.eos_id]
            elif isinstance(step, int):
                allowed = [step]
            elif isinstance(step, _Choice):
                allowed = list(step.first)
                logp = torch.log_softmax(scores[b].float(), dim=-1)[allowed]
                p = torch.softmax(logp, dim=-1).tolist()
                row.probs.setdefault(step.key, {step.first[t][0]: q for t, q in zip(allowed, p)})
            else:
                close = row.close_token()
                if row.free >= step.limit or close is None:
                    allowed = [close if close is not None else self.eos_id]
                else:
                    mask = self.free_mask[: scores.shape[-1]].to(scores.device)
                    out[b] = torch.where(mask, scores[b], out[b])
                    allowed = [close]
            out[b, allowed] = scores[b, allowed]
        return out
