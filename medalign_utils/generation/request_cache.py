"""Answers kept by what decides them, so a rerun asks no server twice.

A request's key is the backend's identity (kind, model, chat or completions, the structured-output
form), its decoding settings, the shape asked for (a constraint's schema) and the prompt's hash:
the same question under the same settings is the same request. The cache is a JSONL file per
model under a folder the caller names (`data/judge-cache/` for judges: answers hold patient-derived
text on the real release, so they stay under data/). Only answers without an error are kept.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from pathlib import Path

from .backends import Answer
from .store import prompt_hash

# What a backend's `describe()` says that does not change its answers.
NOT_IN_KEY = ("endpoint", "max_concurrency", "batch_size", "device", "replicas")


class RequestCache:
    """A model's answers by request key (`key`), read once, appended as answers come."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self.skipped = 0  # lines that were not an entry (a torn last line): counted, not fatal
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._entries[entry["key"]] = entry["answer"]
                except (ValueError, KeyError, TypeError):
                    self.skipped += 1

    @classmethod
    def for_model(cls, folder: str | Path, name: str) -> RequestCache:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return cls(Path(folder) / f"{safe}.jsonl")

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(backend, prompt: str, constraint=None) -> str:
        identity = {k: v for k, v in backend.describe().items() if k not in NOT_IN_KEY}
        settings = dataclasses.asdict(backend.settings) if backend.settings is not None else None
        shape = getattr(constraint, "schema", None)
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([identity, settings, shape], sort_keys=True, default=str).encode())
        h.update(prompt_hash(prompt).encode())
        return h.hexdigest()

    def get(self, key: str) -> Answer | None:
        found = self._entries.get(key)
        if found is None:
            return None
        fields = {f.name for f in dataclasses.fields(Answer)}
        return Answer(**{k: v for k, v in found.items() if k in fields}, cached=True)

    def put(self, key: str, answer: Answer) -> None:
        if answer.error or answer.cached:
            return
        record = {k: v for k, v in dataclasses.asdict(answer).items() if k != "cached"}
        with self._lock:
            self._entries[key] = record
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "answer": record}, default=str) + "\n")
