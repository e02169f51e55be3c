"""EHR XML (both MedAlign schemas) -> one events table, with a parquet cache.

Two schemas exist (data/README.md describes both):

* the release's LUMIA schema: ``<eventstream>/<encounter>/<events>/<entry timestamp>/<event ...>``;
* the paper-era schema of the public sample: ``<record>/<visit>/<day>/<table start>/<code>`` and
  ``<note>``, where a code is one string ``[VOCAB/CODE] description value unit``.

Both become the same table, one row per event (`EVENT_COLUMNS`). Files are parsed with lxml's
``iterparse``, clearing elements as it goes, so memory stays flat however long a record is. Each
file's events are cached as parquet named by the hash of the file's bytes, so a second load does no
XML work, and a changed file is parsed again. Parse problems travel with the cache, so a cached
load reports exactly what a cold one did.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from lxml import etree

from ..parallel import process_map
from .problems import Problem

CACHE_VERSION = "3"  # 3: a line of undecodable bytes no longer ends the record (read with U+FFFD)

# One row per event. `value` keeps the text as written; `value_num` is its number when it is one.
# name:type, in column order (types: pyarrow's).
_EVENT_FIELDS = (
    "person_id:string encounter:int32 timestamp:timestamp event_type:string vocabulary:string code:string "
    "description:string value:string value_num:float64 unit:string note_id:string note_type:string text:string "
    "provider_id:string care_site_id:string sourceline:int32"
).split()
EVENT_COLUMNS = [f.split(":")[0] for f in _EVENT_FIELDS]
_DICTIONARY_COLUMNS = ["person_id", "event_type", "vocabulary", "unit", "note_type"]

_ARROW_TYPES = {"string": pa.string(), "int32": pa.int32(), "float64": pa.float64(), "timestamp": pa.timestamp("s")}
EVENTS_SCHEMA = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in (f.split(":") for f in _EVENT_FIELDS)])

TIMESTAMP_FORMATS = (
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
    "%Y-%m-%dT%H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %I:%M %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y",
)

# `[VOCAB/CODE] rest` in the paper-era schema.
_PAPER_CODE = re.compile(r"^\s*\[(?P<vocab>[^/\]]*)/(?P<code>[^\]]*)\]\s*(?P<rest>.*?)\s*$", re.S)
# A trailing number and an optional unit without digits: "Body weight 80 kg", "Heart rate 85".
_TRAILING_VALUE = re.compile(
    r"^(?P<desc>.*?)\s+(?P<value>[-+]?\d+(?:\.\d+)?)(?:\s+(?P<unit>[^\d\s][^\d]*?))?\s*$", re.S
)
_VALUE_TABLES = {"measurement", "observation"}
_PERSON_FIELDS = {
    "birth": "birthdate",
    "race": "race",
    "gender": "gender",
    "ethnicity": "ethnicity",
    "age in days": "age_days",
    "age in years": "age_years",
}


def parse_timestamp(text: str | None) -> datetime | None:
    """Parse any date format seen in MedAlign files; None when it is none of them."""
    if not text:
        return None
    text = text.strip()
    for fmt in TIMESTAMP_FORMATS:
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None


def split_paper_code(text: str, table: str) -> tuple[str, str, str, str, float | None, str]:
    """Split a paper-era ``[VOCAB/CODE] description value unit`` string.

    Returns (vocabulary, code, description, value, value_num, unit). Values are read only for
    measurement and observation rows, where they exist; odd values are kept as written, not judged.
    """
    m = _PAPER_CODE.match(text or "")
    if not m:
        return "", "", (text or "").strip(), "", None, ""
    vocab, code, rest = m.group("vocab"), m.group("code"), m.group("rest")
    if table in _VALUE_TABLES:
        v = _TRAILING_VALUE.match(rest)
        if v:
            return vocab, code, v.group("desc"), v.group("value"), float(v.group("value")), (v.group("unit") or "")
    return vocab, code, rest, "", None, ""


def _to_number(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


@dataclass
class ParsedEHR:
    """One patient's record: its events, its demographics, and what went wrong reading it."""

    person_id: str
    schema: str
    events: pa.Table
    patient: dict = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        return self.events.num_rows

    @property
    def n_notes(self) -> int:
        return sum(1 for t in self.events.column("event_type").to_pylist() if t == "note")


class _Rows:
    """Column lists for the events table (faster than a dict per row)."""

    def __init__(self, person_id: str):
        self.person_id = person_id
        self.cols: dict[str, list] = {c: [] for c in EVENT_COLUMNS if c != "person_id"}

    def add(
        self,
        *,
        encounter,
        timestamp,
        event_type,
        sourceline,
        vocabulary="",
        code="",
        description="",
        value="",
        value_num=None,
        unit="",
        note_id="",
        note_type="",
        text="",
        provider_id="",
        care_site_id="",
    ) -> None:
        """One event, its fields by name; what it lacks stays empty (value fields for a note, note
        fields for a coded event)."""
        c = self.cols
        c["encounter"].append(encounter)
        c["timestamp"].append(timestamp)
        c["event_type"].append(event_type)
        c["vocabulary"].append(vocabulary)
        c["code"].append(code)
        c["description"].append(description)
        c["value"].append(value)
        c["value_num"].append(value_num)
        c["unit"].append(unit)
        c["note_id"].append(note_id)
        c["note_type"].append(note_type)
        c["text"].append(text)
        c["provider_id"].append(provider_id)
        c["care_site_id"].append(care_site_id)
        c["sourceline"].append(sourceline)

    def to_table(self, file: str, problems: list[Problem]) -> pa.Table:
        raw_ts = self.cols["timestamp"]
        parsed: dict[str, datetime | None] = {}
        for s in set(raw_ts):
            parsed[s] = parse_timestamp(s)
        bad = sorted({s for s, v in parsed.items() if v is None and s})
        for s in bad:
            line = self.cols["sourceline"][raw_ts.index(s)]
            problems.append(
                Problem(file, f"timestamp {s!r} is in no known format; kept with an empty time", f"line {line}")
            )
        arrays = {"person_id": pa.array([self.person_id] * len(raw_ts), pa.string())}
        for name in EVENT_COLUMNS[1:]:
            values = [parsed[s] for s in raw_ts] if name == "timestamp" else self.cols[name]
            arrays[name] = pa.array(values, EVENTS_SCHEMA.field(name).type)
        return pa.table(arrays, schema=EVENTS_SCHEMA)


def _clear(elem) -> None:
    # Free what has been read: the element and the siblings before it.
    elem.clear(keep_tail=False)
    parent = elem.getparent()
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


def _person_from_lumia(elem) -> dict:
    out = {}
    for child in elem.iter():
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag in ("birthdate", "gender", "ethnicity", "race", "payerplan") and (child.text or "").strip():
            out[tag] = child.text.strip()
        elif tag == "years" and (child.text or "").strip():
            out["age_years"] = child.text.strip()
        elif tag == "days" and (child.text or "").strip():
            out["age_days"] = child.text.strip()
    return out


def _person_from_paper(text: str) -> dict:
    out = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and key in _PERSON_FIELDS:
            out[_PERSON_FIELDS[key]] = value.strip()
    return out


def _read_lumia(events, rows: _Rows, patient: dict) -> None:
    """Every event of a LUMIA `<eventstream>` (after its root) into `rows`, the patient into
    `patient` (filled in place, so a fault later in the file keeps it)."""
    encounter, entry_ts = -1, ""
    add = rows.add
    for action, elem in events:
        tag = elem.tag
        if action == "start":
            if tag == "entry":
                entry_ts = elem.get("timestamp", "")
            elif tag == "encounter":
                encounter += 1
            continue
        if tag == "event":
            etype, name, text = elem.get("type", ""), elem.get("name", ""), elem.text or ""
            vocab, _, code = (elem.get("code") or "").partition("/")
            note = etype == "note"  # a note: value fields empty; its id, type and text
            value = "" if note else text.strip()
            add(
                encounter=encounter,
                timestamp=entry_ts,
                event_type=etype,
                vocabulary=vocab,
                code=code,
                description=name,
                value=value,
                value_num=_to_number(value) if value else None,
                unit="" if note else elem.get("unit", ""),
                note_id=elem.get("note_id", "") if note else "",
                note_type=name if note else "",
                text=text if note else "",
                provider_id=elem.get("provider_id", ""),
                care_site_id=elem.get("care_site_id", ""),
                sourceline=elem.sourceline,
            )
        elif tag == "person":
            if not patient:
                patient.update(_person_from_lumia(elem))
            _clear(elem)
        elif tag in ("entry", "encounter", "caresites", "providers"):
            _clear(elem)


# What `split_paper_code` returns, in order: the fields of a paper-era coded event.
_PAPER_CODE_FIELDS = ("vocabulary", "code", "description", "value", "value_num", "unit")


def _read_paper(events, rows: _Rows, patient: dict) -> None:
    """Every event of a paper-era `<record>` (after its root) into `rows`, the patient into `patient`."""
    encounter, table, table_ts = -1, "", ""
    add = rows.add
    for action, elem in events:
        tag = elem.tag
        if action == "start":
            if tag == "visit":
                encounter += 1
            elif tag not in ("code", "note", "person", "day", "record") and elem.get("start") is not None:
                table, table_ts = tag, elem.get("start", "")
            continue
        if tag == "code":
            coded = dict(zip(_PAPER_CODE_FIELDS, split_paper_code(elem.text or "", table)))
            add(encounter=encounter, timestamp=table_ts, event_type=table, sourceline=elem.sourceline, **coded)
        elif tag == "note":
            ntype, text = elem.get("type", ""), (elem.text or "").strip()
            start = elem.get("start", "")
            add(
                encounter=encounter,
                timestamp=start,
                event_type="note",
                sourceline=elem.sourceline,
                description=ntype,
                note_type=ntype,
                text=text,
            )
        elif tag == "person":
            if not patient:
                patient.update(_person_from_paper(elem.text or ""))
            _clear(elem)
        elif tag in ("day", "visit"):
            _clear(elem)


_SCHEMA_READERS = {"eventstream": ("lumia", _read_lumia), "record": ("paper", _read_paper)}


def _encoding_problem(path: Path, file: str) -> list[Problem]:
    try:
        with open(path, "rb") as f:
            encoding = xml_encoding(f.read(200))
    except OSError:
        return []  # reported where the parse fails to open it
    if encoding in ("utf-8", "utf-8-sig"):
        return []
    return [Problem(file, f"encoded as {encoding}, not UTF-8: read as {encoding} (prompts get the decoded text)")]


def parse_ehr(path: str | Path, person_id: str | None = None, display_name: str | None = None) -> ParsedEHR:
    """Parse one EHR file of either schema into a `ParsedEHR`: the root element picks the schema's
    reader, which reads the rest of the file.

    A file cut off or malformed keeps every event read before the fault and reports the fault with
    its line; nothing read is thrown away.
    """
    path = Path(path)
    file = display_name or path.name
    problems = _encoding_problem(path, file)
    source, bad_lines = path, []
    for _attempt in range(2):
        rows = _Rows(person_id or _person_id_from_name(path.name))
        found: list[Problem] = []
        schema, patient = _parse_into(source, rows, found, file=file, person_id=person_id)
        if bad_lines or not any(p.message.startswith("XML is malformed") for p in found):
            break
        # Bytes that are not text in the file's encoding stop the XML parser where they stand: read
        # the file with each such byte replaced (U+FFFD), keep every event, and count the lines.
        source, bad_lines = _repaired(path)
        if not bad_lines:
            break
    if bad_lines:
        where = f"line {bad_lines[0]}" + (f" and {len(bad_lines) - 1} more" if len(bad_lines) > 1 else "")
        problems.append(
            Problem(file, f"{len(bad_lines)} lines hold bytes that are not text; each read with U+FFFD", where)
        )
    problems += found
    if schema == "unknown" and not problems:
        problems.append(Problem(file, "holds no XML elements"))
    table_out = rows.to_table(file, problems)
    return ParsedEHR(rows.person_id, schema, table_out, patient, problems)


def _repaired(path: Path):
    """The file's bytes as UTF-8 with undecodable bytes replaced (and the declaration saying so), and
    the lines (1-based) that held such bytes; (path, []) when every byte decodes."""
    import io

    raw = path.read_bytes()
    encoding = xml_encoding(raw)
    bad_lines = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError:
            bad_lines.append(number)
    if not bad_lines or encoding.startswith(("utf-16", "utf-32")):
        return path, []
    text = raw.decode(encoding, errors="replace").removeprefix("\ufeff")
    text = _DECLARED_TEXT.sub(lambda m: m.group(0).replace(m.group(1), "utf-8"), text, count=1)
    return io.BytesIO(text.encode("utf-8")), bad_lines


def _parse_into(source, rows: _Rows, problems: list[Problem], *, file: str, person_id: str | None):
    """Read every event of `source` into `rows`; a fault is one problem, and what came before stays."""
    schema, patient = "unknown", {}
    try:
        where = str(source) if isinstance(source, Path) else source  # a path, or repaired bytes
        events = etree.iterparse(where, events=("start", "end"), huge_tree=True)
        for _, root in events:
            if root.tag not in _SCHEMA_READERS:
                msg = f"root element <{root.tag}> is neither <eventstream> nor <record>; no events read"
                problems.append(Problem(file, msg, f"line {root.sourceline}"))
                break
            schema, read = _SCHEMA_READERS[root.tag]
            if schema == "lumia" and root.get("person_id") and person_id is None:
                rows.person_id = root.get("person_id")
            read(events, rows, patient)
    except etree.XMLSyntaxError as err:
        line = err.lineno if getattr(err, "lineno", None) else "?"
        n_read = len(rows.cols["encounter"])
        msg = f"XML is malformed or cut off ({err.msg}); kept the {n_read} events read before it"
        problems.append(Problem(file, msg, f"line {line}"))
    except OSError as err:
        problems.append(Problem(file, f"cannot be read: {err}"))
    return schema, patient


def _person_id_from_name(name: str) -> str:
    stem = name.rsplit(".", 1)[0]
    return stem[4:] if stem.startswith("EHR_") else stem


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """Content hash of a file (the cache key): blake2b of its bytes, 32 hex digits. Remembered per
    path, size and modification time, so hashing a release twice in one process reads it once."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    return _DIGESTS[key]


_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)
_DECLARED = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_DECLARED_TEXT = re.compile(r"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def xml_encoding(raw: bytes) -> str:
    """The encoding of an XML file's bytes: by its byte-order mark, by the NUL pattern of UTF-16
    without one, by its XML declaration, else UTF-8."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name
    if raw[:4] == b"<\x00?\x00":
        return "utf-16-le"
    if raw[:4] == b"\x00<\x00?":
        return "utf-16-be"
    m = _DECLARED.match(raw[:200])
    if m:
        import codecs

        try:
            return codecs.lookup(m.group(1).decode("ascii")).name
        except LookupError:
            return "utf-8"
    return "utf-8"


def read_ehr_text(path: str | Path) -> str:
    """The XML text of a record: what a prompt contains. Decoded by its byte-order mark or XML
    declaration (a UTF-16 record must not reach a prompt as NUL-interleaved bytes); undecodable
    bytes become U+FFFD."""
    raw = Path(path).read_bytes()
    return raw.decode(xml_encoding(raw), errors="replace").removeprefix("\ufeff")  # the byte-order mark is no text


# ---------------------------------------------------------------- cache


def _cache_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / f"{digest}.v{CACHE_VERSION}.parquet"


def _write_cache(parsed: ParsedEHR, target: Path) -> None:
    meta = {
        "person_id": parsed.person_id,
        "schema": parsed.schema,
        "patient": parsed.patient,
        "n_notes": parsed.n_notes,
        "problems": [[p.file, p.message, p.where, p.fatal] for p in parsed.problems],
    }
    table = parsed.events.replace_schema_metadata({"medalign": json.dumps(meta)})
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, target)  # atomic: a killed run never leaves a half-written cache file


@dataclass
class EHRSummary:
    """What parsing one file produced, without its events (cheap to pass between processes)."""

    person_id: str
    schema: str
    cache_file: str
    n_events: int
    n_notes: int
    patient: dict
    problems: list[Problem]


def _summary_from_cache(target: Path) -> EHRSummary:
    # Everything a summary needs is in the footer: no column is read.
    md = pq.read_metadata(target)
    meta = json.loads(md.metadata[b"medalign"])
    problems = [Problem(f, m, w, bool(x)) for f, m, w, x in meta["problems"]]
    return EHRSummary(
        meta["person_id"], meta["schema"], str(target), md.num_rows, meta["n_notes"], meta["patient"], problems
    )


def _parse_to_cache(args: tuple[str, str, str, str]) -> EHRSummary:
    path, person_id, display_name, cache_dir = args
    # Keyed by content *and* person: two byte-identical files of two patients are two entries.
    digest = hashlib.blake2b(f"{file_digest(path)}|{person_id}".encode(), digest_size=16).hexdigest()
    target = _cache_path(Path(cache_dir), digest)
    if target.exists():
        return _summary_from_cache(target)
    parsed = parse_ehr(path, person_id, display_name)
    _write_cache(parsed, target)
    return EHRSummary(
        parsed.person_id, parsed.schema, str(target), parsed.n_events, parsed.n_notes, parsed.patient, parsed.problems
    )


def parse_ehrs_to_cache(
    files: dict[str, Path],
    cache_dir: str | Path,
    *,
    workers: int | None = None,
    progress: bool = True,
    root: Path | None = None,
) -> dict[str, EHRSummary]:
    """Parse every EHR file into the parquet cache (in parallel) and summarise each one.

    ``files`` maps person_id to path. Files already cached (same bytes) are not parsed again.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), pid, str(p.relative_to(root)) if root else p.name, str(cache_dir)) for pid, p in files.items()]
    summaries = process_map(
        _parse_to_cache,
        jobs,
        workers=workers,
        size=lambda j: os.path.getsize(j[0]),
        desc="parsing EHRs",
        unit="file",
        progress=progress,
    )
    return dict(zip(files, summaries))


def load_cached_events(summaries: dict[str, EHRSummary], columns: list[str] | None = None) -> pd.DataFrame:
    """Concatenate cached events into one DataFrame (categoricals for the repetitive columns)."""
    files = [s.cache_file for s in summaries.values()]
    if not files:
        return empty_events()
    # One multi-threaded read; repetitive columns arrive dictionary-encoded and become categoricals.
    dictionary = [c for c in _DICTIONARY_COLUMNS if columns is None or c in columns]
    table = pq.ParquetDataset(files, read_dictionary=dictionary).read(columns=columns, use_threads=True)
    return table.replace_schema_metadata(None).to_pandas(self_destruct=True)


def empty_events() -> pd.DataFrame:
    return EVENTS_SCHEMA.empty_table().to_pandas()
