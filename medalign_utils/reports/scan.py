"""The share-safe scan: what must never appear in anything a run writes from the real release.

`SensitiveIndex.from_release` collects what identifies patients or is release content: every text
of the input (instructions, reference and model responses, evidence, note text) as hashed word
shingles (every run of `SHINGLE_WORDS` words), texts shorter than that whole, every person_id
(matched as a whole token however it is written: any case, with letters or hyphens, inside file
names, whatever its length), and every full date that occurs in a record (event timestamps,
birthdates: identifiers under HIPAA's safe harbor; years and relative days are fine). Shingles that
occur in the texts of many patients are template phrases, not patient text, and are left out.

`scan` says which kinds of leak a text holds, never the leaked text itself. It reads everything in
the file (script and style elements, SVG text, JSON strings of executed notebooks). Raster images
cannot be read, so on real data a page holding one is flagged; figures are rendered as SVG with
their text kept as text (see `reports.run_suite`).

`ShareSafeWriter` is the one place a run's output passes: pages, `run.json`, `index.html`,
cached copies and console lines.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SHINGLE_WORDS = 8
# A shingle found in the texts of at least this share of patients (and at least 3) is a template
# phrase shared across records, not text that identifies one.
COMMON_SHARE = 0.2
_WORD = re.compile(r"\w+")
_ISO_DATE = re.compile(r"(?<!\d)(\d{4})-(\d{2})-(\d{2})(?!\d)")
_US_DATE = re.compile(r"(?<!\d)(\d{1,2})/(\d{1,2})/(\d{4})(?!\d)")
# A raster image shown on a page (an HTML <img>, or a notebook output of that type). Images inside
# an SVG figure (a colorbar, an imshow) are drawn data; the figure's text is SVG text, scanned.
_RASTER = re.compile(
    r"""<img\b[^>]*src=\\?["']data:image/(?:png|jpe?g|gif|webp)|"image/(?:png|jpeg|gif|webp)"\s*:""", re.I
)
# An SVG figure that the HTML exporter embedded as a base64 data URI: decoded, so its text is read.
_SVG_DATA = re.compile(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)")
_MULT = np.uint64(1_000_003)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _shingle_hashes(words: list[str], k: int = SHINGLE_WORDS) -> np.ndarray:
    """Hashes of every run of k consecutive words (a polynomial over per-word hashes, vectorized)."""
    if len(words) < k:
        return np.zeros(0, np.uint64)
    w = np.fromiter((hash(x) for x in words), dtype=np.int64, count=len(words)).view(np.uint64)
    n = len(w) - k + 1
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * _MULT + w[j : j + n]
    return h


def page_text(raw: str) -> str:
    """All the text of a page, markup removed and entities and JSON escapes undone; nothing is
    skipped (script and style contents, SVG text and attributes included)."""
    import base64

    for payload in _SVG_DATA.findall(raw):
        try:
            raw += " " + base64.b64decode(payload).decode("utf-8", errors="replace")
        except ValueError:
            continue
    text = html.unescape(raw)
    text = text.replace("\\n", " ").replace('\\"', '"').replace("\\u003c", "<").replace("\\u003e", ">")
    return re.sub(r"<[^>]*>", " ", text) + " " + " ".join(re.findall(r'"([^"]{1,200})"', text))


def _iso(y: str, m: str, d: str) -> str:
    return f"{int(y):04d}-{int(m):02d}-{int(d):02d}"


def dates_in(text: str) -> set[str]:
    """Every full date in a text (YYYY-MM-DD or M/D/YYYY), as YYYY-MM-DD."""
    return {_iso(*m) for m in _ISO_DATE.findall(text)} | {_iso(y, m, d) for m, d, y in _US_DATE.findall(text)}


@dataclass
class SensitiveIndex:
    """What must not appear in anything a run writes from the real release. Built once per run."""

    shingles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    short_texts: set = field(default_factory=set)
    person_ids: list = field(default_factory=list)
    dates: set = field(default_factory=set)
    n_texts: int = 0
    n_common_shingles: int = 0
    _ids: re.Pattern | None = field(default=None, repr=False)

    def __post_init__(self):
        ids = sorted({str(p) for p in self.person_ids if str(p)}, key=len, reverse=True)
        if ids:
            # Whole tokens: not inside a longer run of letters or digits (file names and hyphens are fine).
            alt = "|".join(re.escape(i) for i in ids)
            self._ids = re.compile(rf"(?<![A-Za-z0-9])(?:{alt})(?![A-Za-z0-9])", re.I)

    @classmethod
    def from_texts(
        cls, texts_by_patient: dict[str, list[str]], person_ids, dates=(), common_share: float = COMMON_SHARE
    ) -> SensitiveIndex:
        """From each patient's texts (key "" for texts tied to no patient), their ids and record dates."""
        per_patient, short, n_texts = [], set(), 0
        for texts in texts_by_patient.values():
            hashes = []
            for t in texts:
                n_texts += 1
                w = _words(t)
                if len(w) < SHINGLE_WORDS:
                    if len(" ".join(w)) >= 12:  # shorter strings ("yes", "85 bpm") say nothing about a patient
                        short.add(" ".join(w))
                    continue
                hashes.append(_shingle_hashes(w))
            if hashes:
                per_patient.append(np.unique(np.concatenate(hashes)))
        if per_patient:
            allh, counts = np.unique(np.concatenate(per_patient), return_counts=True)
            threshold = max(3, int(np.ceil(common_share * len(texts_by_patient))))
            common = counts >= threshold
            shingles, n_common = allh[~common], int(common.sum())
        else:
            shingles, n_common = np.zeros(0, np.uint64), 0
        return cls(shingles, short, list(person_ids), set(dates), n_texts, n_common)

    @classmethod
    def from_release(cls, release, progress: bool = False) -> SensitiveIndex:
        texts: dict[str, list[str]] = {}
        for df, cols in (
            (release.instructions, ["question"]),
            (release.references, ["clinician_response", "evidence"]),
            (release.model_responses, ["model_response", "clinician_response", "question", "evidence"]),
        ):
            for c in cols:
                if c in df.columns:
                    pids = df["person_id"].astype(str) if "person_id" in df.columns else [""] * len(df)
                    for pid, t in zip(pids, df[c]):
                        if isinstance(t, str) and t.strip():
                            texts.setdefault(pid, []).append(t)
        events = release.events(columns=["person_id", "event_type", "timestamp", "text"], progress=progress)
        notes = events[events.event_type == "note"]
        for pid, t in zip(notes.person_id.astype(str), notes.text):
            if isinstance(t, str) and t.strip():
                texts.setdefault(pid, []).append(t)
        dates = set(events.timestamp.dropna().dt.strftime("%Y-%m-%d").unique())
        patients = release.patients(progress=progress)
        for col in ("birthdate", "birth", "date_of_birth"):
            if col in patients.columns:
                for v in patients[col].dropna().astype(str):
                    dates |= dates_in(v)
        return cls.from_texts(texts, release.ehr_files.keys(), dates)

    def scan(self, raw: str) -> list[str]:
        """Kinds of leak found in a text or page (never the leaked text itself)."""
        text = page_text(raw)
        found = []
        w = _words(text)
        if len(self.shingles):
            hits = int(np.isin(_shingle_hashes(w), self.shingles).sum())
            if hits:
                found.append(f"{hits} passages of record, instruction or response text")
        joined = " " + " ".join(w) + " "
        n_short = sum(1 for s in self.short_texts if f" {s} " in joined)
        if n_short:
            found.append(f"{n_short} short instruction or response texts")
        if self._ids is not None:
            n_ids = len({m.lower() for m in self._ids.findall(raw + " " + text)})
            if n_ids:
                found.append(f"{n_ids} person_ids")
        n_dates = len(dates_in(raw + " " + text) & self.dates)
        if n_dates:
            found.append(f"{n_dates} full dates from the records")
        n_raster = len(_RASTER.findall(raw))
        if n_raster:
            found.append(f"{n_raster} raster images (their text cannot be scanned)")
        return found


class ShareSafeWriter:
    """Everything a run writes goes through here. With an index (the real release, share_safe on),
    every text is scanned: a file that leaks is not written (and any earlier copy is removed), a
    message that leaks is replaced by a note naming what kinds it held. Without one, it writes."""

    def __init__(self, index: SensitiveIndex | None):
        self.index = index

    def leaks(self, text: str) -> list[str]:
        return self.index.scan(text) if self.index is not None and text else []

    def message(self, text: str | None) -> str | None:
        """A console line or error message, or a note in its place when it held input text."""
        if text is None:
            return None
        kinds = self.leaks(text)
        return f"[withheld by the share-safe scan: it held {', '.join(kinds)}]" if kinds else text

    def record(self, obj):
        """A JSON-like record with every string passed through `message`."""
        if isinstance(obj, dict):
            return {k: self.record(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.record(v) for v in obj]
        return self.message(obj) if isinstance(obj, str) else obj

    def write(self, path: Path, text: str) -> list[str]:
        """Write `text` to `path` unless it leaks; returns the kinds of leak (empty when written)."""
        kinds = self.leaks(text)
        if kinds:
            Path(path).unlink(missing_ok=True)
            return kinds
        Path(path).write_text(text, encoding="utf-8")
        return []

    def write_json(self, path: Path, record: dict) -> list[str]:
        return self.write(path, json.dumps(self.record(record), indent=1, default=str))

    def check_file(self, path: Path) -> list[str]:
        """Scan a file already written by another program (papermill, nbconvert); remove it if it leaks."""
        path = Path(path)
        if not path.exists():
            return []
        kinds = self.leaks(path.read_text(encoding="utf-8", errors="replace"))
        if kinds:
            path.unlink()
        return kinds
