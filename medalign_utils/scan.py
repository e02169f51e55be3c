"""The share-safe scan: what must never appear in a report made from the real release.

`SensitiveIndex.from_release` collects every text of the input (instructions, reference and model
responses, evidence, note text) as hashed word shingles, short texts whole, and the person_ids;
`scan` says which kinds of leak a page holds, never the leaked text itself. The runner scans every
page it writes (`reports.run_suite`); the scan, not notebook discipline, is what enforces it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np

SHINGLE_WORDS = 8


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _page_text(raw: str) -> str:
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S | re.I)
    text = re.sub(r"<[^>]+>", " ", text)
    text = html.unescape(text)
    # Executed .ipynb files escape text as JSON strings.
    return text.replace("\\n", " ").replace('\\"', '"')


@dataclass
class SensitiveIndex:
    """What must not appear in a shareable page: hashed word shingles of every text of the input,
    short texts whole, and person_ids. Built once per run from the release."""

    shingles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    short_texts: set = field(default_factory=set)
    person_ids: set = field(default_factory=set)
    n_texts: int = 0

    @classmethod
    def from_release(cls, release, progress: bool = False) -> SensitiveIndex:
        texts = []
        for df, cols in (
            (release.instructions, ["question"]),
            (release.references, ["clinician_response", "evidence"]),
            (release.model_responses, ["model_response", "clinician_response", "question"]),
        ):
            for c in cols:
                if c in df.columns:
                    texts += [t for t in df[c].dropna().astype(str).unique() if t.strip()]
        events = release.events(columns=["event_type", "text"], progress=progress)
        texts += events.loc[events.event_type == "note", "text"].dropna().astype(str).tolist()
        hashes, short = [], set()
        for t in texts:
            w = _words(t)
            if len(w) < SHINGLE_WORDS:
                if len(" ".join(w)) >= 12:  # shorter strings ("yes", "85 bpm") say nothing about a patient
                    short.add(" ".join(w))
                continue
            # Shingles at a stride of SHINGLE_WORDS: any leaked run of 2*SHINGLE_WORDS-1 words holds one.
            hashes += [
                hash(" ".join(w[i : i + SHINGLE_WORDS])) for i in range(0, len(w) - SHINGLE_WORDS + 1, SHINGLE_WORDS)
            ]
        pids = {str(p) for p in release.ehr_files if len(str(p)) >= 6}
        return cls(np.unique(np.asarray(hashes, dtype=np.int64)), short, pids, len(texts))

    def scan(self, raw: str) -> list[str]:
        """Kinds of leak found in a page (never the leaked text itself)."""
        text = _page_text(raw)
        w = _words(text)
        found = []
        if len(w) >= SHINGLE_WORDS and len(self.shingles):
            page = np.asarray(
                [hash(" ".join(w[i : i + SHINGLE_WORDS])) for i in range(len(w) - SHINGLE_WORDS + 1)], np.int64
            )
            hits = int(np.isin(page, self.shingles).sum())
            if hits:
                found.append(f"{hits} passages of record, instruction or response text")
        joined = " " + " ".join(w) + " "
        n_short = sum(1 for s in self.short_texts if f" {s} " in joined)
        if n_short:
            found.append(f"{n_short} short instruction or response texts")
        n_ids = len(self.person_ids.intersection(w))
        if n_ids:
            found.append(f"{n_ids} person_ids")
        return found
