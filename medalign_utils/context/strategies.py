"""Fitting an EHR into a model's context: the paper's exact budget, other strategies, evidence.

Budget (the paper's): EHR tokens = context length - generation reserve (256) - the tokens of the
prompt filled with the instruction and an *empty* EHR, all in the target model's own tokenizer,
chat-template tokens included when the model has a chat template.

Strategies (each a function of one record, returning an `EHRView`: the text that goes between the
EHR quotes and the character spans of its base text that it keeps):

* `recent` (the paper's): the most recent tokens, cut from the start;
* `oldest`: the earliest tokens;
* `notes_only`, `codes_only`: the record without coded events, or without notes, then `recent`;
* `retrieval`: the record's encounters ranked by BM25 against the instruction, the best that fit
  the budget, put back in time order;
* `mr_chunks`: the paper's multi-step refinement chunks (~30k tokens, earliest first);
* peer variants, reproducing published code's arithmetic token for token: `helm` (HELM's MedAlign
  prompt; budget = context - 256 - cl100k tokens of the raw template text *with* its `{ehr}` and
  `{question}` placeholders - cl100k tokens of the instruction; the last that many cl100k tokens
  of the record), `timer` (the same on the MedAlign template file read as is, its trailing
  newline included), and `drop_if_too_long` (skip the instruction when the record does not fit,
  as MedHELM did).

Exactness: every prompt's token count is <= context - reserve and, when the record is long enough,
equal to it wherever a cut gives it. The count is not monotonic in the cut (a cut inside a token's
text can merge or split differently), so when the cut at a token start falls short, `fit_recent`
tries every character position within a few tokens either side and takes one that reaches the
target. What slack remains is where no nearby cut gives the target at all (the count steps over it
by two); a cut never splits a character. Counts are exact, not estimated: the tokens of the
record are cached once (`context.tokenizers.tokenize_file`), and only the few hundred characters where
the prompt's parts join are encoded again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bm25 import BM25Index, plain_text
from .templates import PromptTemplate, peer_budget, peer_template
from .tokenizers import TokenizedText, Tokenizer

_ENCOUNTER = re.compile(r"<(encounter|visit)\b.*?</\1>", re.S)


CUT_SEARCH_TOKENS = 6  # how far before a short cut `fit_recent` looks for an exact one


# ------------------------------------------------------------------ a record with its tokens


@dataclass
class Record:
    """A record's text and its cached tokens, with the safe line starts used for exact counting."""

    text: str
    tokens: TokenizedText
    _safe_chars: np.ndarray = field(default=None, repr=False)
    _safe_tokens: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        # Safe line starts are token starts with a newline before and '<' at them: found from the
        # cached offsets in one vectorized pass, not by scanning the text.
        offs = self.tokens.char_offsets
        if len(offs) == 0:
            self._safe_chars, self._safe_tokens = np.zeros(0, np.int64), np.zeros(0, np.int64)
            return
        codes = (
            np.frombuffer(self.text.encode("ascii"), dtype=np.uint8)
            if self.text.isascii()
            else np.frombuffer(self.text.encode("utf-32-le"), dtype=np.uint32)
        )
        safe = (offs > 0) & (codes[offs] == ord("<")) & (codes[np.maximum(offs - 1, 0)] == ord("\n"))
        idx = np.flatnonzero(safe)
        self._safe_chars, self._safe_tokens = offs[idx].astype(np.int64), idx.astype(np.int64)

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    def token_at_char(self, char: int) -> int:
        """Index of the first token starting at or after `char`."""
        return int(np.searchsorted(self.tokens.char_offsets, char))

    def char_start(self, k: int) -> int:
        return len(self.text) if k >= self.n_tokens else int(self.tokens.char_offsets[k])

    def next_char_start(self, k: int) -> int:
        """The first token at or after k that begins a character (never split a character)."""
        starts = self.tokens.starts_char
        while k < self.n_tokens and not starts[k]:
            k += 1
        return k

    def prev_char_start(self, k: int) -> int:
        starts = self.tokens.starts_char
        while 0 < k < self.n_tokens and not starts[k]:
            k -= 1
        return k

    def safe_after(self, char: int) -> tuple[int, int] | None:
        """(char, token index) of the first safe line start strictly after `char`."""
        i = np.searchsorted(self._safe_chars, char, side="right")
        return (int(self._safe_chars[i]), int(self._safe_tokens[i])) if i < len(self._safe_chars) else None

    def safe_before(self, char: int) -> tuple[int, int] | None:
        """(char, token index) of the last safe line start at or before `char`."""
        i = np.searchsorted(self._safe_chars, char, side="right") - 1
        return (int(self._safe_chars[i]), int(self._safe_tokens[i])) if i >= 0 else None


def count_prompt(
    tokenizer: Tokenizer, prefix: str, record: Record, spans: list[tuple[int, int]], *, suffix: str
) -> int:
    """Exact token count of prefix + the record's `spans` (concatenated) + suffix.

    Between two safe line starts of the record (a newline before '<', where both tokenizers'
    pre-tokenizers always split) the cached tokens are exactly the tokens of that text on its own,
    so only the text around the joins is encoded again.
    """
    total = 0
    pending = prefix
    for a, b in spans:
        head, tail = record.safe_after(a), record.safe_before(b)
        if head is None or tail is None or head[0] > tail[0] or head[0] >= b:
            pending += record.text[a:b]
            continue
        total += tokenizer.count(pending + record.text[a : head[0]]) + (tail[1] - head[1])
        pending = record.text[tail[0] : b]
    return total + tokenizer.count(pending + suffix)


# ------------------------------------------------------------------ strategies


@dataclass
class EHRView:
    """What a strategy puts between the EHR quotes: its text, the spans of the base text it keeps
    (for evidence retention), and the tokens of the full prompt."""

    text: str
    spans: list[tuple[int, int]]
    base: str  # "record", "notes_only" or "codes_only": which text the spans index
    prompt_tokens: int | None = None
    dropped: bool = False
    n_chunks: int | None = None  # mr_chunks only
    template: str | None = None  # a peer's own prompt template (peer variants only)


def _whole_record(
    tokenizer, record: Record, prefix, suffix, *, target: int, full_total: int | None, base: str = "record"
):
    """(prompt tokens with the whole record, the whole-record view when it fits the target else None)."""
    if full_total is None:
        full_total = count_prompt(tokenizer, prefix, record, [(0, len(record.text))], suffix=suffix)
    return full_total, (
        EHRView(record.text, [(0, len(record.text))], base, full_total) if full_total <= target else None
    )


def fit_recent(
    tokenizer: Tokenizer,
    record: Record,
    prefix: str,
    suffix: str,
    *,
    target: int,
    base: str = "record",
    full_total: int | None = None,
) -> EHRView:
    """The paper's truncation: keep the most recent tokens so that the whole prompt has `target`
    tokens (context - reserve), or fewer when the record is shorter. `full_total` (the prompt's
    tokens with the whole record) saves a count when the caller has it."""
    n = record.n_tokens
    total, whole = _whole_record(tokenizer, record, prefix, suffix, target=target, full_total=full_total, base=base)
    if whole:
        return whole
    overhead = tokenizer.count(prefix + suffix)
    k = record.next_char_start(max(0, n - (target - overhead)))
    for _ in range(8):  # joins can add or save a token or two: settle by exact recounts
        start = record.char_start(k)
        total = count_prompt(tokenizer, prefix, record, [(start, len(record.text))], suffix=suffix)
        if total <= target:
            # Take back tokens while it still fits (equality when possible).
            while k > 0:
                k2 = record.prev_char_start(k - 1)
                t2 = count_prompt(tokenizer, prefix, record, [(record.char_start(k2), len(record.text))], suffix=suffix)
                if t2 > target:
                    break
                k, total = k2, t2
            break
        k = record.next_char_start(k + (total - target))
    start = record.char_start(k)
    if total < target and k > 0:
        start, total = _closest_cut(tokenizer, record, prefix, suffix, target=target, k=k, start=start, total=total)
    return EHRView(record.text[start:], [(start, len(record.text))], base, total)


def _closest_cut(tokenizer, record: Record, prefix, suffix, *, target: int, k: int, start: int, total: int):
    """A cut that reaches the target exactly where one exists near the token-boundary cut.

    The prompt's token count is not monotonic in the cut: a cut inside the text of a token near the
    boundary can merge or split differently, so a few characters earlier or later can give exactly
    the target where no cut at a token start does. Every character position within
    `CUT_SEARCH_TOKENS` tokens either side is tried (positions are whole characters, so none splits
    one); the most tokens that still fit win, the earliest position (most text) among equals."""
    lo = record.char_start(max(0, k - CUT_SEARCH_TOKENS))
    hi = record.char_start(min(record.n_tokens, k + CUT_SEARCH_TOKENS))
    best_start, best_total = start, total
    for c in range(lo, hi + 1):
        if c == start:
            continue
        t = count_prompt(tokenizer, prefix, record, [(c, len(record.text))], suffix=suffix)
        if best_total < t <= target or (t == best_total and c < best_start):
            best_start, best_total = c, t
            if t == target and c < start:
                break  # the earliest exact cut: nothing earlier is tried after it
    return best_start, best_total


def fit_oldest(
    tokenizer: Tokenizer, record: Record, prefix: str, suffix: str, *, target: int, full_total: int | None = None
) -> EHRView:
    """Keep the earliest tokens (the opposite of the paper's choice)."""
    total, whole = _whole_record(tokenizer, record, prefix, suffix, target=target, full_total=full_total)
    if whole:
        return whole
    overhead = tokenizer.count(prefix + suffix)
    k = record.prev_char_start(min(record.n_tokens - 1, target - overhead))
    for _ in range(8):
        end = record.char_start(k)
        total = count_prompt(tokenizer, prefix, record, [(0, end)], suffix=suffix)
        if total <= target:
            break
        k = record.prev_char_start(k - (total - target))
    end = record.char_start(k)
    return EHRView(record.text[:end], [(0, end)], "record", total)


def encounter_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the record's encounters (LUMIA) or visits (paper-era), in time order."""
    return [(m.start(), m.end()) for m in _ENCOUNTER.finditer(text)]


class EncounterIndex(BM25Index):
    """BM25 over one record's encounters, built once per record and queried per instruction."""

    def __init__(self, text: str):
        self.spans = encounter_spans(text) or [(0, len(text))]
        super().__init__([plain_text(text[a:b]) for a, b in self.spans])


def fit_retrieval(
    tokenizer: Tokenizer,
    record: Record,
    prefix: str,
    suffix: str,
    *,
    target: int,
    question: str,
    index: EncounterIndex | None = None,
    full_total: int | None = None,
) -> EHRView:
    """Fill the budget with the encounters BM25 ranks best for the instruction, in time order."""
    total, whole = _whole_record(tokenizer, record, prefix, suffix, target=target, full_total=full_total)
    if whole:
        return whole
    index = index or EncounterIndex(record.text)
    overhead = tokenizer.count(prefix + suffix)
    room = target - overhead
    # Each encounter with the newline after it: consecutive pieces then join at safe line starts.
    spans = [(a, b + 1 if record.text[b : b + 1] == "\n" else b) for a, b in index.spans]
    sizes = [record.token_at_char(b) - record.token_at_char(a) for a, b in spans]
    order = np.argsort(-index.scores(question), kind="stable")
    chosen, used = [], 0
    for i in order:
        if used + sizes[i] <= room:
            chosen.append(i)
            used += sizes[i]
    chosen.sort()  # back in time order
    total = count_prompt(tokenizer, prefix, record, [spans[i] for i in chosen], suffix=suffix)
    while total > target and chosen:  # rare: the joins cost a token or two more than counted
        chosen.pop(int(np.argmin([sizes[i] for i in chosen])))
        total = count_prompt(tokenizer, prefix, record, [spans[i] for i in chosen], suffix=suffix)
    text = "".join(record.text[spans[i][0] : spans[i][1]] for i in chosen)
    return EHRView(text, [spans[i] for i in chosen], "record", total)


def mr_chunks(record: Record, chunk_tokens: int = 30_000) -> list[tuple[int, int]]:
    """The paper's multi-step refinement chunks: about `chunk_tokens` each, earliest first, cut at
    the nearest line start before each boundary (no XML validity is sought, as in the paper)."""
    spans, start_k, n = [], 0, record.n_tokens
    while start_k < n:
        end_k = min(n, start_k + chunk_tokens)
        if end_k < n:
            safe = record.safe_before(record.char_start(end_k))
            if safe and safe[1] > start_k:
                end_k = safe[1]
            else:
                end_k = record.prev_char_start(end_k)
        spans.append((record.char_start(start_k), record.char_start(end_k)))
        start_k = end_k
    return spans


# ------------------------------------------------------------------ views of a record


def record_view(text: str, keep: str) -> str:
    """The record with only its notes (`keep='notes'`) or only its coded events (`keep='codes'`);
    entries left empty are dropped, the rest of the structure is kept."""
    if keep not in ("notes", "codes"):
        raise ValueError("keep must be 'notes' or 'codes'")
    if "<eventstream" in text[:2000]:
        events = re.compile(r'<event\b[^>]*?type="([^"]*)"[^>]*?(?:/>|>.*?</event>)\n?', re.S)
        out = events.sub(lambda m: m.group(0) if (m.group(1) == "note") == (keep == "notes") else "", text)
        return re.sub(r"<entry\b[^>]*>\s*</entry>\n?", "", out)
    # Paper-era: notes are <note>, codes are <code> inside their table elements.
    if keep == "notes":
        out = re.sub(r"<code>.*?</code>\s*", "", text, flags=re.S)
        return re.sub(r"<(\w+)\b[^>]*>\s*</\1>\s*", "", out)
    return re.sub(r"<note\b.*?</note>\s*", "", text, flags=re.S)


@dataclass
class FitRequest:
    """Everything a strategy may use to fit one record for one instruction and context. Views of the
    record, its encounter index and its tokens in a peer's tokenizer are built on first use and
    shared by every instruction of the record."""

    tokenizer: Tokenizer
    record: Record
    prefix: str
    suffix: str
    target: int  # context - reserve: the most tokens the whole prompt may have
    question: str
    full_total: int  # the prompt's tokens with the whole record
    overhead: int  # the prompt's tokens with an empty EHR
    reserve: int
    template: PromptTemplate
    mr_chunk_tokens: int
    shared: RecordResources
    use_chat_template: bool = True


class RecordResources:
    """Per-record objects that strategies build lazily and share across instructions."""

    def __init__(self, tokenizer: Tokenizer, record: Record, path: Path, cache_dir, *, cl100k: Tokenizer | None):
        self.tokenizer, self.record, self.path, self.cache_dir, self._cl100k = (
            tokenizer,
            record,
            path,
            cache_dir,
            cl100k,
        )
        self.views: dict[str, Record] = {"record": record}
        self._helm_ids = None
        self._helm_tails: dict[int, str] = {}
        self._encounters: EncounterIndex | None = None
        self._cl_record: Record | None = None

    def view(self, base: str) -> Record:
        """The record (`record`) or its notes-only / codes-only view, with its tokens."""
        from .tokenizers import tokenize_text

        if base not in self.views:
            vt = record_view(self.record.text, "notes" if base == "notes_only" else "codes")
            self.views[base] = Record(vt, tokenize_text(self.tokenizer, vt, self.cache_dir))
        return self.views[base]

    def encounters(self) -> EncounterIndex:
        if self._encounters is None:
            self._encounters = EncounterIndex(self.record.text)
        return self._encounters

    def helm_ids(self) -> tuple[Tokenizer, list[int]]:
        """cl100k and the record's cl100k ids as HELM reads it (the cached ids when it reads the same text)."""
        cl100k, cl_record = self.cl100k()
        if self._helm_ids is None:
            text = helm_read_text(self.path)
            self._helm_ids = cl_record.tokens.ids if text == cl_record.text else cl100k.encode(text)
        return cl100k, self._helm_ids

    def helm_ehr(self, budget: int) -> str:
        """`helm_packed_ehr` of this record, decoded once per distinct cut: every budget at or
        above the record's length keeps all of it, so most of a record's instructions and contexts
        share one decode."""
        cl100k, ids = self.helm_ids()
        key = max(0, min(budget, len(ids)))
        if key not in self._helm_tails:
            self._helm_tails[key] = helm_packed_ehr(cl100k, ids, key)
        return self._helm_tails[key]

    def cl100k(self) -> tuple[Tokenizer, Record]:
        from .tokenizers import load_tokenizer, tokenize_file

        if self._cl_record is None:
            self._cl100k = self._cl100k or load_tokenizer("cl100k")
            self._cl_record = Record(self.record.text, tokenize_file(self._cl100k, self.path, self.cache_dir))
        return self._cl100k, self._cl_record


def _strategy_recent(r: FitRequest) -> EHRView:
    return fit_recent(r.tokenizer, r.record, r.prefix, r.suffix, target=r.target, full_total=r.full_total)


def _strategy_oldest(r: FitRequest) -> EHRView:
    return fit_oldest(r.tokenizer, r.record, r.prefix, r.suffix, target=r.target, full_total=r.full_total)


def _strategy_view(base: str):
    def fit(r: FitRequest) -> EHRView:
        return fit_recent(r.tokenizer, r.shared.view(base), r.prefix, r.suffix, target=r.target, base=base)

    fit.__doc__ = f"`recent` over the record's {base.replace('_only', '')}-only view."
    return fit


def _strategy_retrieval(r: FitRequest) -> EHRView:
    return fit_retrieval(
        r.tokenizer,
        r.record,
        r.prefix,
        r.suffix,
        target=r.target,
        question=r.question,
        index=r.shared.encounters(),
        full_total=r.full_total,
    )


def _strategy_mr_chunks(r: FitRequest) -> EHRView:
    refine_overhead = r.overhead + r.reserve + 64  # the previous answer and the refine wording
    size = max(256, min(r.mr_chunk_tokens, r.target - refine_overhead))
    chunks = mr_chunks(r.record, size)
    first = count_prompt(r.tokenizer, r.prefix, r.record, [chunks[0]], suffix=r.suffix)
    return EHRView(r.record.text[chunks[0][0] : chunks[0][1]], chunks, "record", first, n_chunks=len(chunks))


def helm_read_text(path) -> str:
    """A record as HELM's loader reads it: the file in text mode (CRLF and CR become LF; a
    byte-order mark is kept as U+FEFF), where the suite's own reader keeps line ends and drops the mark."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def helm_packed_ehr(cl100k: Tokenizer, ids, budget: int) -> str:
    """HELM's truncation of a record's cl100k `ids` (of `helm_read_text`): `decode(ids[-budget:])`,
    so a character the cut splits becomes U+FFFD as tiktoken's decode makes it."""
    return cl100k.decode(ids[-budget:]) if budget > 0 else ""


def _strategy_helm(r: FitRequest) -> EHRView:
    """HELM's MedAlign prompt as HELM sends it (see `helm_read_text`, `helm_packed_ehr`,
    `templates.helm_sent_template`); its spans mark the same tail of the suite's record text."""
    from .templates import helm_sent_template

    cl100k, _ = r.shared.cl100k()
    budget = peer_budget(cl100k, r.target + r.reserve, r.question, peer_template("helm"), reserve=r.reserve)
    ehr = r.shared.helm_ehr(budget)
    prefix, suffix = helm_sent_template().parts(r.tokenizer, r.use_chat_template, question=r.question)
    start = max(0, len(r.record.text) - len(ehr))
    if ehr == r.record.text[start:]:  # the usual case: a tail of the suite's own text, counted from its cached tokens
        total = count_prompt(r.tokenizer, prefix, r.record, [(start, len(r.record.text))], suffix=suffix)
    else:  # HELM read it otherwise (CR line ends, a byte-order mark, a split character): counted whole
        total = r.tokenizer.count(prefix + ehr + suffix)
    return EHRView(ehr, [(start, len(r.record.text))], "record", total, template="helm")


def _strategy_peer(name: str):
    def fit(r: FitRequest) -> EHRView:
        cl100k, cl_record = r.shared.cl100k()
        template = peer_template(name)
        budget = peer_budget(cl100k, r.target + r.reserve, r.question, template, reserve=r.reserve)
        n, text = cl_record.n_tokens, r.record.text
        # The last `budget` cl100k tokens, as `tokens[-budget:]` keeps them (a budget of 0 or less
        # keeps nothing here; a character split by the cut starts at its next whole character).
        start = len(text) if budget <= 0 else cl_record.char_start(cl_record.next_char_start(max(0, n - budget)))
        prefix, suffix = template.parts(r.tokenizer, r.use_chat_template, question=r.question)
        total = count_prompt(r.tokenizer, prefix, r.record, [(start, len(text))], suffix=suffix)
        return EHRView(text[start:], [(start, len(text))], "record", total, template=name)

    fit.__doc__ = f"{name}'s published truncation arithmetic (see the module docstring)."
    return fit


def _strategy_drop_if_too_long(r: FitRequest) -> EHRView:
    text = r.record.text
    return EHRView(text, [(0, len(text))], "record", r.full_total, dropped=r.full_total > r.target)


# The one list of strategies: name -> fit(FitRequest) -> EHRView. The grid, its settings and
# notebook 02 all read it.
STRATEGY_FUNCTIONS = {
    "recent": _strategy_recent,
    "oldest": _strategy_oldest,
    "notes_only": _strategy_view("notes_only"),
    "codes_only": _strategy_view("codes_only"),
    "retrieval": _strategy_retrieval,
    "mr_chunks": _strategy_mr_chunks,
    "helm": _strategy_helm,
    "timer": _strategy_peer("timer"),
    "drop_if_too_long": _strategy_drop_if_too_long,
}
STRATEGIES = tuple(STRATEGY_FUNCTIONS)  # the suite's own; `strategy_names()` adds any registered since
PEER_STRATEGIES = ("helm", "timer")  # prompts in the peer's own template


def register_strategy(name: str, fit) -> None:
    """Make a strategy known by name (`fit(FitRequest) -> EHRView`) to the grid, notebook 02 and
    the judges, as the suite's own are."""
    STRATEGY_FUNCTIONS[name] = fit


def strategy_names() -> tuple[str, ...]:
    """Every strategy known now, the suite's own first."""
    return tuple(STRATEGY_FUNCTIONS)
