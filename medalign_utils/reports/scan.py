"""The share-safe scan: what must never appear in anything a run writes from the real release.

`SensitiveIndex.from_release` collects what identifies patients or is release content: every text
of the input (instructions, reference and model responses, evidence, note text) as hashed word
shingles (every run of `SHINGLE_WORDS` words: pandas' 50-character cut of a cell still shows that
many), texts shorter than that whole, every person_id (matched however it is written: any case,
with spaces, hyphens or underscores inside or around it, inside file names), and every full date
that occurs in a record (event timestamps, birthdates: identifiers under HIPAA's safe harbor) in
any common written form. Years and relative days are fine. Shingles that occur in the texts of
many patients are template phrases, not patient text, and are left out.

`scan` reads what a reader reads: the text an HTML parser extracts (rendered text, attribute
values, script and style contents, comments), the strings of JSON documents (executed notebooks,
`run.json`), JavaScript string literals, and base64 or percent-encoded payloads, each after the
same normalisation as the index (`normalise`: NFKC, format characters removed, Cyrillic and Greek
look-alikes folded to Latin, every dash and space variant folded). It says which kinds of leak a
text holds, never the leaked text itself. Raster images cannot be read, so on real data a page
holding one anywhere (an `<img>`, an SVG `<image>`, a CSS `url(...)`, a notebook output) is
flagged; figures are rendered as SVG with their text kept as text (see `reports.run_suite`).

`ShareSafeWriter` is the one place a run's output passes: pages, `run.json`, `index.html`,
cached copies, files a notebook leaves in its run folder, and console lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import numpy as np

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release


SHINGLE_WORDS = 6
# A shingle found in the texts of at least this share of patients (and at least 3) is a template
# phrase shared across records, not text that identifies one.
COMMON_SHARE = 0.2
_WORD = re.compile(r"\w+")
_MULT = np.uint64(1_000_003)

# ------------------------------------------------------------------ normalisation

# Latin look-alikes among Cyrillic and Greek letters (Unicode's confusables for these scripts).
_CONFUSABLE = dict(
    zip(
        "АВЕКМНОРСТХУЅІЈаеорсхуѕіјԁԛԝһүӏΑΒΕΖΗΙΚΜΝΟΡΤΥΧοαιкмнтвν",
        "ABEKMHOPCTXYSIJaeopcxysijdqwhyIABEZHIKMNOPTYXoaikmhtbv",
    )
)
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d\u058a\u05be\u1806"


@cache
def _fold_table() -> dict[int, str | None]:
    """Format characters (zero-width, bidi controls, soft hyphen) removed; dashes, look-alikes and
    every whitespace character folded. Built once: a scan of the whole code space."""
    import sys

    table: dict[int, str | None] = {
        cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) == "Cf"
    }
    table.update({ord(c): "-" for c in _DASHES})
    table.update({ord(k): v for k, v in _CONFUSABLE.items()})
    table.update({ord(c): " " for c in "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029"})
    return table


def normalise(text: str) -> str:
    """Text as the scan compares it: percent-encoding decoded, NFKC, format characters removed,
    look-alike letters, dashes and spaces folded, lower case."""
    for _ in range(3):  # "%2550" is "%50" is "P": encoded twice or three times reads the same
        if "%" not in text or (decoded := unquote(text, errors="replace")) == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", text).translate(_fold_table())
    return unicodedata.normalize("NFKC", text).casefold()


def _words(text: str) -> list[str]:
    return _WORD.findall(normalise(text))


_WORD_HASHES: dict[str, int] = {}  # word -> its stable hash, each distinct word hashed once a process


def stable_hash(text: str) -> int:
    """A 64-bit hash of a text that is the same in every process (Python's `hash` is salted per
    process, so an index pickled or cached in one would match nothing in another)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _word_hash(word: str) -> int:
    h = _WORD_HASHES.get(word)
    if h is None:
        h = _WORD_HASHES[word] = stable_hash(word)
    return h


def _shingle_hashes(words: list[str], k: int = SHINGLE_WORDS) -> np.ndarray:
    """Hashes of every run of k consecutive words (a polynomial over per-word stable hashes,
    vectorized)."""
    if len(words) < k:
        return np.zeros(0, np.uint64)
    w = np.fromiter((_word_hash(x) for x in words), dtype=np.uint64, count=len(words))
    n = len(w) - k + 1
    h = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            h = h * _MULT + w[j : j + n]
    return h


# ------------------------------------------------------------------ what a reader reads

# A raster image wherever it hides: a data URI of any image type but SVG (in an <img>, an SVG
# <image>, a CSS url(...)), a notebook output of such a type, or an image element whose source is a
# raster file.
_RASTER_DATA = re.compile(r"data:image/(?!svg)[a-z0-9.+-]+[;,][a-z0-9+/=;,]{0,80}", re.I)
_RASTER_MIME = re.compile(r"^image/(?!svg)[a-z0-9.+-]+$", re.I)
_RASTER_FILE = re.compile(r"\.(?:png|jpe?g|gif|bmp|webp|tiff?|ico|avif)(?:[?#]|$)", re.I)
_IMAGE_TAGS = {"img", "image", "input", "source", "object", "embed", "feimage", "picture"}
_DATA_URI = re.compile(r"data:([a-z]+/[a-z0-9.+-]+)?((?:;[a-z0-9=.-]+)*?)(;base64)?,([^\"'\s)<>]+)", re.I)
_JS_STRING = re.compile(r""""((?:[^"\\\n]|\\.){1,100000})"|'((?:[^'\\\n]|\\.){1,100000})'""")
_MAX_DEPTH = 4
# A tag, comment or character reference: text that an HTML parser reads differently from its source.
_MARKUP = re.compile(r"<[a-zA-Z!/?]|&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);?")
# Geometry: an SVG attribute whose value is only numbers, path commands and transform functions
# (the page template's icons: "m9.64 7.64c.23-.5.36" reads as 1936-05-01). No reader sees it as text.
_GEOMETRY_ATTR = re.compile(
    r"""(\s(?:d|points|viewbox|transform|x|y|x1|x2|y1|y2|cx|cy|r|rx|ry|dx|dy|fx|fy|width|height|offset"""
    r"""|stroke-width|stroke-dasharray|stroke-dashoffset|stroke-miterlimit|opacity|fill-opacity)\s*=\s*)"""
    r"""(["'])((?:[\d.,eE+\-\s%()MmLlHhVvCcSsQqTtAaZz]|matrix|translate|scale|rotate|skew[XY])*)\2""",
    re.I,
)


def without_geometry(text: str) -> str:
    """`text` with the values of SVG geometry attributes emptied (`_GEOMETRY_ATTR`)."""
    return _GEOMETRY_ATTR.sub(r"\1\2\2", text) if "=" in text else text


class _Extractor(HTMLParser):
    """Rendered text, attribute values, script and style contents and comments of an HTML or SVG
    document, and how many raster images it shows."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.rasters: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.parts.append(" ")
        for _, value in attrs:
            if value:
                self.parts.append(f" {value} ")
        if tag.lower() in _IMAGE_TAGS:
            sources = [v for k, v in attrs if v and k.lower() in ("src", "href", "xlink:href", "srcset", "data")]
            self.rasters |= {v for v in sources if not v.startswith("data:") and _RASTER_FILE.search(v.split()[0])}

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        self.parts.append(" ")

    def handle_data(self, data):
        self.parts.append(data)

    def handle_comment(self, data):
        self.parts.append(f" {data} ")

    def unknown_decl(self, data):
        self.parts.append(f" {data} ")


@dataclass
class _Reading:
    """Everything the scan reads in one document: its texts (each normalised) and raster count."""

    texts: list[str] = field(default_factory=list)
    rasters: set[str] = field(default_factory=set)  # each image once, however often it is read
    seen: set[int] = field(default_factory=set)


def _json_strings(obj, out: list[str], reading: _Reading) -> None:
    """Every string of a JSON document (a notebook's multi-line strings joined), keys included."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append(k)
            if _RASTER_MIME.match(k):
                reading.rasters.add(f"{k}:{str(v)[:80]}")
            _json_strings(v, out, reading)
    elif isinstance(obj, list):
        if obj and all(isinstance(v, str) for v in obj):
            out.append("".join(obj))
        else:
            for v in obj:
                _json_strings(v, out, reading)
    elif isinstance(obj, str):
        out.append(obj)


def _decoded_payloads(text: str) -> list[str]:
    """The text inside base64 and percent-encoded data URIs, and inside escaped string literals."""
    found = []
    for mime, _, b64, payload in _DATA_URI.findall(text):
        if b64:  # any type: what decodes to text is read (an image's bytes do not)
            try:
                decoded = base64.b64decode(payload + "=" * (-len(payload) % 4)).decode("utf-8", errors="replace")
            except (binascii.Error, ValueError):
                continue
            if mime.lower().startswith(("text/", "image/svg", "application/json", "application/xml")) or _printable(
                decoded
            ):
                found.append(decoded)
        else:
            found.append(unquote(payload, errors="replace"))
    if "\\" in text:
        for double, single in _JS_STRING.findall(text):
            literal = double or single
            if "\\" in literal:
                try:
                    found.append(json.loads('"' + literal.replace('"', '\\"').replace('\\\\"', '\\"') + '"'))
                except ValueError:
                    found.append(literal.encode("utf-8", "backslashreplace").decode("unicode_escape", "replace"))
    return found


def _read(text: str, reading: _Reading, depth: int = 0, markup: bool = True) -> None:
    """Add what a reader reads in `text` to `reading`: the text itself, its markup's text, the
    strings of a JSON document, decoded payloads; each read again, a few levels deep (each
    distinct text once). The parser's own output is not parsed again: a reader sees its "&lt;" as
    written; markup inside string literals and payloads is."""
    key = stable_hash(text) if text else None
    if key is None or key in reading.seen:
        return
    reading.seen.add(key)
    original = text  # what SVG text's positions are read from (`_alternative_readings`)
    if markup and _MARKUP.search(text):
        text = without_geometry(text)
    reading.texts.append(normalise(text))
    reading.rasters |= set(_RASTER_DATA.findall(text))
    if depth >= _MAX_DEPTH:
        return
    inner: list[str] = []
    if text.lstrip()[:1] in "{[":
        try:
            _json_strings(json.loads(text), inner, reading)
        except ValueError:
            pass
    if markup and _MARKUP.search(text):
        parser = _Extractor()
        try:
            parser.feed(text)
            parser.close()
        except (AssertionError, ValueError):  # malformed markup: the text itself is still read
            pass
        reading.rasters |= parser.rasters
        _read("".join(parser.parts), reading, depth + 1, markup=False)
        # he<b>ar</b>t reads "heart": the same text with tags joined tight
        reading.texts.append(normalise("".join(p for p in parser.parts if p.strip())))
    inner += _decoded_payloads(text)
    inner += _alternative_readings(original)
    for t in inner:
        _read(t, reading, depth + 1)


_RTL = re.compile(r"\u202e|\u2067|<bdo\b|dir\s*=\s*[\"']?rtl|bidi-override", re.I)
_CSS_CONTENT = re.compile(r"""content\s*:\s*(["'])((?:\\.|(?!\1).){1,100000}?)\1""", re.I | re.S)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})\s?")
_BASE64_RUN = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_UNDERSCORE_JOINED = re.compile(r"(?:[^\W\d_]+_){3,}[^\W\d_]+(?:_\w+)*")
_WORD_MARKS = re.compile(r"[\u0120\u0121\u2581\u010a\u010b]|(?:\s*##)")  # Ġ ġ ▁ Ċ ċ, WordPiece's ##


def _printable(text: str) -> bool:
    """Whether decoded bytes read as text (not an image, font or hash)."""
    if not text or "\ufffd" in text:
        return False
    shown = sum(ch.isprintable() or ch in "\n\t\r" for ch in text)
    return shown / len(text) > 0.95 and sum(ch.isalpha() for ch in text) / len(text) > 0.5


def _base64_texts(text: str) -> list[str]:
    """Every run of base64 (bare, in a script, in a data URI of any type) that decodes to text."""
    found = []
    for run in _BASE64_RUN.findall(text):
        if len(run) > 2_000_000:
            continue
        body = run.replace("-", "+").replace("_", "/")
        try:
            decoded = base64.b64decode(body + "=" * (-len(body) % 4), validate=False).decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if _printable(decoded):
            found.append(decoded)
    return found


class _Glyphs(HTMLParser):
    """The runs of SVG text placed at absolute x positions (`<text x>`, `<tspan x>`), with their
    line (y): text drawn a letter or a word at a time, which a reader sees as words."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.runs: list[tuple[float, float, str]] = []
        self._at: list[tuple[float | None, float | None]] = []

    @staticmethod
    def _first(value) -> float | None:
        m = re.match(r"\s*(-?[\d.]+(?:e-?\d+)?)", value or "")
        try:
            return float(m.group(1)) if m else None
        except ValueError:
            return None

    def handle_starttag(self, tag, attrs):
        if tag.lower() in ("text", "tspan"):
            a = dict(attrs)
            outer = self._at[-1] if self._at else (None, None)
            x, y = self._first(a.get("x")), self._first(a.get("y"))
            self._at.append((x, y if y is not None else outer[1]))

    def handle_endtag(self, tag):
        if tag.lower() in ("text", "tspan") and self._at:
            self._at.pop()

    def handle_data(self, data):
        if self._at and self._at[-1][0] is not None and data.strip():
            x, y = self._at[-1]
            self.runs.append((y or 0.0, x, data.strip()))


def _positioned_text(raw: str) -> str | None:
    """SVG text put back together by position: runs on one line in x order, a space where the gap
    between two runs is wider than their letters take (`_Glyphs`)."""
    glyphs = _Glyphs()
    try:
        glyphs.feed(raw)
        glyphs.close()
    except (AssertionError, ValueError):
        return None
    if len(glyphs.runs) < 6:
        return None
    lines = []
    for y in sorted({round(y, 1) for y, _, _ in glyphs.runs}):
        row = sorted((x, t) for yy, x, t in glyphs.runs if round(yy, 1) == y)
        steps = [(b[0] - a[0]) / len(a[1]) for a, b in zip(row, row[1:]) if b[0] > a[0]]
        if not steps:
            continue
        advance = float(np.median(steps))
        text = row[0][1]
        for (x0, t0), (x1, t1) in zip(row, row[1:]):
            text += (" " if x1 - x0 > 1.5 * advance * len(t0) else "") + t1
        lines.append(text)
    return "\n".join(lines) or None


def _alternative_readings(raw: str) -> list[str]:
    """What a reader sees where a text's bytes say it otherwise: text shown right to left (an RLO
    character, `<bdo dir=rtl>`, CSS direction) read reversed, CSS escapes (`content: "\\50"`)
    decoded, letters with combining marks read without them, and what base64 runs decode to."""
    views = []
    if _RTL.search(raw):
        views.append(raw[::-1])
    if "\\" in raw and "content" in raw:  # the text CSS puts on the page, escapes decoded
        shown = [_CSS_ESCAPE.sub(lambda m: _css_char(m.group(1)), v) for _, v in _CSS_CONTENT.findall(raw)]
        views += [v for v in shown if len(v) > 1]
    if _COMBINING.search(raw):
        views.append("".join(ch for ch in unicodedata.normalize("NFKD", raw) if not unicodedata.combining(ch)))
    if "<svg" in raw.lower() and (placed := _positioned_text(raw)):
        views.append(placed)
    return views + _base64_texts(raw)


def _css_char(code: str) -> str:
    value = int(code, 16)
    return chr(value) if 0 < value <= 0x10FFFF and not 0xD800 <= value <= 0xDFFF else " "


def _word_views(text: str) -> list[str]:
    """A normalised text read as words are split and joined to hide them: "_" as a space, a
    tokenizer's word marks (Ġword, ▁word, ##piece) undone, and without the bare numbers between
    words (a one-word-per-row table shown with its index)."""
    views = []
    if "_" in text and (joined := _UNDERSCORE_JOINED.findall(text)):  # not every CSS class or JSON key
        views.append(" | ".join(run.replace("_", " ") for run in joined))
    if _WORD_MARKS.search(text):
        views.append(_WORD_MARKS.sub(lambda m: "" if "#" in m.group() else " ", text))
    words = _WORD.findall(text)
    if sum(w.isdigit() for w in words) * 4 >= len(words) > 8:  # numbers between most words
        views.append(" ".join(w for w in words if not w.isdigit()))
    return views


def page_text(raw: str) -> str:
    """All the text the scan reads in a page, normalised (see the module docstring)."""
    reading = _Reading()
    _read(raw, reading)
    return "\n".join(reading.texts)


# ------------------------------------------------------------------ dates in every common form

_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        [
            "jan january",
            "feb february",
            "mar march",
            "apr april",
            "may",
            "jun june",
            "jul july",
            "aug august",
            "sep sept september",
            "oct october",
            "nov november",
            "dec december",
        ]
    )
    for m in names.split()
}
_MON = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_SEP = r"[\s\-/.,]+"
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_NUMERIC_YMD = re.compile(r"(?<!\d)(\d{4})([-/. ])(\d{1,2})\2(\d{1,2})(?!\d)")
_NUMERIC_XXY = re.compile(r"(?<![\d.])(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?![\d])")
_COMPACT = re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?:t\d|(?!\d))")
_DAY_MON_YEAR = re.compile(rf"(?<![\w]){_DAY}{_SEP}(?:of{_SEP})?{_MON}{_SEP}(\d{{4}}|\d{{2}})(?!\d)")
# Seconds, milliseconds or nanoseconds since 1970 standing alone (a table's timestamp column).
_EPOCH = re.compile(r"(?<![\d.])-?(\d{9,10}|\d{12,13}|\d{18,19})(?:\.\d+)?(?![\d.])")
_MON_DAY_YEAR = re.compile(rf"(?<![a-z]){_MON}{_SEP}{_DAY}{_SEP}(\d{{4}})(?!\d)")
_YEAR_MON_DAY = re.compile(rf"(?<!\d)(\d{{4}}){_SEP}{_MON}{_SEP}{_DAY}(?!\d)")
# matplotlib's yearless date tick labels ("Aug-03", "03-Aug"): compared with the records' month-days.
_MON_DAY = re.compile(rf"(?<![\w-]){_MON}-(\d{{2}})(?![\w-])")
_DAY_MON = re.compile(rf"(?<![\w-])(\d{{2}})-{_MON}(?![\w-])")


def _iso(y, m, d) -> str | None:
    try:
        return date(int(y), int(m), int(d)).isoformat()
    except ValueError:
        return None


def _years(y: str) -> list[int]:
    return [int(y)] if len(y) == 4 else [1900 + int(y), 2000 + int(y)]  # "08/03/14": either century


def _full_dates(text: str) -> set[str]:
    found = {_iso(y, m, d) for y, _, m, d in _NUMERIC_YMD.findall(text)}
    for a, sep, b, y in _NUMERIC_XXY.findall(text):  # month-first and day-first both
        if sep == "." and len(y) == 2 and (len(a) < 2 or len(b) < 2):
            continue  # a version ("linux-6.18.44"), not a date: dotted dates pad day and month
        for year in _years(y):
            found |= {_iso(year, a, b), _iso(year, b, a)}
        if len(a) == 2 and len(y) == 2:  # year first: "%y-%m-%d"
            found |= {_iso(year, b, y) for year in _years(a)}
    found |= {_iso(y, m, d) for y, m, d in _COMPACT.findall(text)}
    for d, mon, y in _DAY_MON_YEAR.findall(text):
        found |= {_iso(year, _MONTHS[mon], d) for year in _years(y)}
    found |= {_iso(y, _MONTHS[mon], d) for mon, d, y in _MON_DAY_YEAR.findall(text)}
    found |= {_iso(y, _MONTHS[mon], d) for y, mon, d in _YEAR_MON_DAY.findall(text)}
    found |= {_epoch_date(m.group()) for m in _EPOCH.finditer(text)}
    return found - {None}


@cache
def _epoch_date(number: str) -> str | None:
    """The UTC date of a count of seconds, milliseconds or nanoseconds since 1970 (years 1900-2100)."""
    digits = len(number.lstrip("-").split(".")[0])
    scale = 1 if digits <= 10 else 1_000 if digits <= 13 else 1_000_000_000
    seconds = float(number) / scale
    if not -2_208_988_800 <= seconds <= 4_102_444_800:
        return None
    from datetime import UTC, datetime, timedelta

    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%d")


def _month_days(text: str) -> set[str]:
    found = {f"{_MONTHS[mon]:02d}-{int(d):02d}" for mon, d in _MON_DAY.findall(text)}
    return found | {f"{_MONTHS[mon]:02d}-{int(d):02d}" for d, mon in _DAY_MON.findall(text)}


def dates_in(text: str) -> set[str]:
    """Every full date in a text, in any common written form ("2014-08-03", "8/3/2014", "08/03/14",
    "03 Aug 2014", "August 3, 2014", "2014-Aug-03", "20140803", "3.8.2014", ISO with a time), as
    YYYY-MM-DD; an ambiguous form gives each date it can mean."""
    return _full_dates(normalise(text))


# ------------------------------------------------------------------ person_ids


def _compact(pid: str) -> str:
    return "".join(re.findall(r"[a-z0-9]", normalise(pid)))


_ALNUM_RUN = re.compile(r"[a-z0-9]+")


def _ids_in(text: str, compact_ids: set[str], prefixes: set[str]) -> set[str]:
    """The person_ids in a normalised text, matched as whole runs of letters and digits that may be
    split by up to three other characters ("PT 0042x", "pt_0042x", "P-T-0042-X")."""
    runs = [(m.start(), m.end(), m.group()) for m in _ALNUM_RUN.finditer(text)]
    found = set()
    for i, (_, end, token) in enumerate(runs):
        s = token
        if s in compact_ids:
            found.add(s)
        elif token.isdigit() and token.startswith("0") and token.lstrip("0") in compact_ids:
            found.add(token.lstrip("0"))  # zero-padded: "0010004134"
        j = i + 1
        while s in prefixes and j < len(runs) and runs[j][0] - end <= 3:
            nxt = runs[j][2]
            unpadded = nxt.lstrip("0") if nxt.isdigit() else nxt
            s += unpadded if unpadded and (s + unpadded in prefixes or s + unpadded in compact_ids) else nxt
            end = runs[j][1]
            if s in compact_ids:
                found.add(s)
            j += 1
    return found


# ------------------------------------------------------------------ the index and the writer


@dataclass
class SensitiveIndex:
    """What must not appear in anything a run writes from the real release. Built once per run."""

    shingles: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    short_texts: set = field(default_factory=set)
    person_ids: list = field(default_factory=list)
    dates: set = field(default_factory=set)
    n_texts: int = 0
    n_common_shingles: int = 0
    _ids: set = field(default_factory=set, repr=False)
    _id_prefixes: set = field(default_factory=set, repr=False)
    _month_days: set = field(default_factory=set, repr=False)

    def __post_init__(self):
        self._ids = {c for c in (_compact(str(p)) for p in self.person_ids) if c}
        self._id_prefixes = {c[:k] for c in self._ids for k in range(1, len(c))}
        self._month_days = {d[5:] for d in self.dates}

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
    def from_release(cls, release: Release, progress: bool = False) -> SensitiveIndex:
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
        reading = _Reading()
        _read(raw, reading)
        found = []
        # Words are also read as they are split and joined to hide them; ids and dates as written.
        words = [_WORD.findall(t) for t in reading.texts + [v for t in reading.texts for v in _word_views(t)]]
        if len(self.shingles):
            hashes = np.unique(np.concatenate([_shingle_hashes(w) for w in words] or [np.zeros(0, np.uint64)]))
            hits = int(np.isin(hashes, self.shingles).sum())
            if hits:
                found.append(f"{hits} passages of record, instruction or response text")
        joined = " " + " | ".join(" ".join(w) for w in words) + " "
        n_short = sum(1 for s in self.short_texts if f" {s} " in joined)
        if n_short:
            found.append(f"{n_short} short instruction or response texts")
        if self._ids:
            n_ids = len(set().union(*(_ids_in(t, self._ids, self._id_prefixes) for t in reading.texts)))
            if n_ids:
                found.append(f"{n_ids} person_ids")
        n_dates = len(set().union(*(_full_dates(t) for t in reading.texts)) & self.dates)
        if n_dates:
            found.append(f"{n_dates} full dates from the records")
        n_month_days = len(set().union(*(_month_days(t) for t in reading.texts)) & self._month_days)
        if n_month_days:
            found.append(f"{n_month_days} month-day dates from the records (date tick labels)")
        if reading.rasters:
            found.append(f"{len(reading.rasters)} raster images (their text cannot be scanned)")
        return found


def _scannable_text(path: Path) -> str | None:
    """A file's text, or None when it is not UTF-8 text (a PDF, an archive, an image)."""
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file beside `path`, so a concurrent reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class ShareSafeWriter:
    """Everything a run writes goes through here. With an index (the real release, share_safe on),
    every text and every file name is scanned: a file that leaks is not written (and any earlier
    copy is removed), a message that leaks is replaced by a note naming what kinds it held. Without
    one, it writes. Either way each file written or passed is admitted to the run's `manifest`
    (path -> hash of its bytes; `manifest.RunJournal` keeps it on disk as the run goes), and
    everything withheld is counted in `withheld`: a run that withheld anything fails."""

    def __init__(self, index: SensitiveIndex | None, journal=None):
        self.index, self.journal = index, journal
        self.manifest: dict[Path, str] = {}
        self.own_folders: set[Path] = set()  # folders the run made for its output (kept when empty)
        self.withheld: list[str] = []

    def leaks(self, text: str) -> list[str]:
        return self.index.scan(text) if self.index is not None and text else []

    def name_leaks(self, path: Path) -> list[str]:
        """What a file's name holds (a person_id, a record date): names are read too."""
        return [f"its name: {kind}" for kind in self.leaks(Path(path).name.replace("_", " "))]

    def message(self, text: str | None) -> str | None:
        """A console line or error message, or a note in its place when it held input text."""
        if text is None:
            return None
        kinds = self.leaks(text)
        if kinds:
            self.withheld.append(f"a message that held {', '.join(kinds)}")
            return f"[withheld by the share-safe scan: it held {', '.join(kinds)}]"
        return text

    def record(self, obj):
        """A JSON-like record with every string passed through `message`."""
        if isinstance(obj, dict):
            return {k: self.record(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.record(v) for v in obj]
        return self.message(obj) if isinstance(obj, str) else obj

    def _withhold(self, path: Path, kinds: list[str]) -> list[str]:
        shown = "a file" if any(k.startswith("its name") for k in kinds) else Path(path).name
        self.withheld.append(f"{shown} that held {', '.join(kinds)}")
        return kinds

    def admit(self, path: Path) -> None:
        """Record a file as scanned (or written on data that needs no scan), with its bytes' hash."""
        from .manifest import file_digest

        digest = file_digest(Path(path))
        self.manifest[Path(path).resolve()] = digest
        if self.journal is not None:
            self.journal.admit(Path(path), digest)

    def write(self, path: Path, text: str) -> list[str]:
        """Write `text` to `path` unless it (or the file's name) leaks; returns the kinds of leak
        (empty when written)."""
        kinds = self.name_leaks(path) + self.leaks(text)
        if kinds:
            Path(path).unlink(missing_ok=True)
            return self._withhold(path, kinds)
        _atomic_write(Path(path), text)
        self.admit(path)
        return []

    def write_json(self, path: Path, record) -> list[str]:
        return self.write(path, json.dumps(self.record(record), indent=1, default=str))

    def check_file(self, path: Path) -> list[str]:
        """Scan a file already written by another program (papermill, nbconvert, a notebook's own
        code) and its name; remove it if it leaks, or, on the real release, if it is not text the
        scan can read; admit it otherwise."""
        path = Path(path)
        if not path.is_file():
            return []
        if self.index is None:
            self.admit(path)
            return []
        text = _scannable_text(path)
        kinds = self.name_leaks(path) + (
            ["content the scan cannot read (not UTF-8 text)"] if text is None else self.leaks(text)
        )
        if kinds:
            path.unlink()
            return self._withhold(path, kinds)
        self.admit(path)
        return []

    def copy(self, source: Path, target: Path) -> None:
        """Copy an admitted file (through a temporary name, so a concurrent reader never sees half
        of it); the copy is admitted with the same bytes. A source not admitted is scanned first."""
        import shutil

        source, target = Path(source), Path(target)
        if source.resolve() not in self.manifest and self.check_file(source):
            return
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        self.manifest[target.resolve()] = self.manifest[source.resolve()]
        if self.journal is not None:
            self.journal.admit(target, self.manifest[target.resolve()])

    def sweep(self, folder: Path, before, exclude=()) -> dict[str, list[str]]:
        """Remove every file under `folder` that is new or changed since the snapshot `before` and
        not admitted with its present bytes, whatever its time stamps, and new folders left empty
        of admitted files (real release only); returns what was removed (its path under `folder`)
        and what it held (`[]`: nothing the scan found, but nothing the run wrote either). Files in
        `exclude` (what notebooks still running are writing) are left for their own sweep."""
        from .manifest import debris, remove

        if self.index is None:
            return {}
        files, folders = debris(Path(folder), before, self.manifest, self.own_folders)
        skip = {Path(p).resolve() for p in exclude}
        files = [f for f in files if f.resolve() not in skip]
        folders = [d for d in folders if not any(d.resolve() in p.parents for p in skip)]
        removed = {}
        for n, path in enumerate(files + folders, start=1):
            kinds = self.name_leaks(path)
            if path.is_file() and not path.is_symlink():
                text = _scannable_text(path)
                kinds += ["content the scan cannot read (not UTF-8 text)"] if text is None else self.leaks(text)
            rel = path.relative_to(folder).as_posix() + ("/" if path in folders else "")
            if kinds:
                self._withhold(path, kinds)
            removed[f"(a name withheld, {n})" if self.leaks(rel.replace("_", " ")) else rel] = kinds
        remove(files, folders)
        return removed
