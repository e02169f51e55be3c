"""Finding and reading a MedAlign release folder (real or synthetic) into DataFrames.

The layout varies between versions (data/README.md): TSV or CSV, several EHR folder and
file names, columns that come and go. `load_release` finds what is there, reads it without
guessing, and lists every problem as a `Problem`; it raises `UnusableReleaseError` only when the
release cannot be used at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import cache_root, project_path, writable_dir
from . import ehr as ehr_mod
from .describe import DEFAULT_MIN_CELL
from .problems import Problem, UnusableReleaseError

RESPONSES_STEM = "clinician-reviewed-model-responses"
REFERENCES_STEM = "clinician-instruction-responses"
ROUGE_STEM = "all-instructions-rouge"
RELEVANCE_STEM = "ehr-relevance-labels"
EHR_DIR_NAMES = ("ehrs", "medalign_ehr_xml", "full_ehrs", "full_patient_ehrs")
RELEASE_DIR_NAMES = ("medalign_instructions_v1_3",)
SYNTHETIC_MARKER = "SYNTHETIC"

# The response text column's name is not certain across versions; the first one present is used.
RESPONSE_TEXT_ALIASES = ("model_response", "response", "model_output", "llm_response", "output")
CATEGORY_ALIASES = ("category", "subcategory", "human_assigned_subcategory_1", "instruction_category")

REQUIRED_COLUMNS = {
    RESPONSES_STEM: ("instruction_id", "person_id", "model_name"),
    REFERENCES_STEM: ("instruction_id", "person_id", "clinician_response"),
    ROUGE_STEM: ("instruction_id",),
    RELEVANCE_STEM: ("instruction_id",),
}

_EHR_FILE = re.compile(r"^(?:EHR_)?(?P<pid>[A-Za-z0-9_\-]+)\.xml$")
_TRUE = {"1", "1.0", "true", "t", "yes", "y", "correct"}
_FALSE = {"0", "0.0", "false", "f", "no", "n", "incorrect"}


@dataclass
class ReleaseLayout:
    """Which files of a release folder hold what."""

    root: Path
    tables: dict[str, Path] = field(default_factory=dict)  # stem -> file
    ehr_dir: Path | None = None
    ehr_files: dict[str, Path] = field(default_factory=dict)  # person_id -> file

    @property
    def disclosure(self) -> dict:
        """What the disclosure rules of `describe` read from a table's ``attrs``: whether the data is
        the synthetic cohort's, and the smallest number of patients a shown cell may describe."""
        return {"synthetic": self.is_synthetic, "min_cell_patients": self.min_cell_patients}

    def fingerprint(self) -> str:
        """A short hash of every table and EHR file's bytes: identifies the data a result came from."""
        h = hashlib.blake2b(digest_size=8)
        for stem, path in sorted(self.tables.items()):
            h.update(stem.encode())
            h.update(ehr_mod.file_digest(path).encode())
        for pid, path in sorted(self.ehr_files.items()):
            h.update(pid.encode())
            h.update(ehr_mod.file_digest(path).encode())
        return h.hexdigest()


MARKER_GENERATOR = "medalign_utils.synthetic"


def synthetic_marker(fingerprint: str) -> str:
    """The `SYNTHETIC` marker `medalign synth` writes: a sentence for people, then a JSON line with the
    fingerprint of the cohort's files, so that no other file or folder named SYNTHETIC (nor a real
    release someone marked) turns the data guard and the share-safe scan off."""
    meta = {"generator": MARKER_GENERATOR, "fingerprint": fingerprint}
    return (
        "This folder is a synthetic MedAlign cohort made by `medalign synth`. No real patient data.\n"
        + json.dumps(meta)
        + "\n"
    )


def marker_status(layout: ReleaseLayout) -> tuple[bool, str | None]:
    """(whether the release counts as synthetic, why a marker present does not count)."""
    marker = layout.root / SYNTHETIC_MARKER
    if not marker.exists() and not marker.is_symlink():
        return False, None
    if marker.is_symlink() or not marker.is_file():
        return False, "is not a plain file"
    try:
        meta = json.loads(marker.read_text(encoding="utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError, UnicodeDecodeError):
        return False, "is not the marker `medalign synth` writes"
    if not isinstance(meta, dict) or meta.get("generator") != MARKER_GENERATOR:
        return False, "is not the marker `medalign synth` writes"
    if meta.get("fingerprint") != layout.fingerprint():
        return False, "records a fingerprint the files no longer have (they changed since `medalign synth`)"
    return True, None


def _find_release_root(root: Path) -> Path:
    if any(
        (root / f"{RESPONSES_STEM}{ext}").exists() or (root / f"{REFERENCES_STEM}{ext}").exists()
        for ext in (".tsv", ".csv")
    ):
        return root
    for name in RELEASE_DIR_NAMES:
        if (root / name).is_dir():
            return root / name
    return root


_LINK_SKIPPED = (
    "is a link to a file outside the release folder; skipped (set follow_external_links: true in the config to read it)"
)


def _outside(path: Path, root: Path) -> bool:
    """Whether a link leads outside the release folder."""
    return path.is_symlink() and not path.resolve().is_relative_to(root.resolve())


def find_layout(root: str | Path, problems: list[Problem], follow_external_links: bool = False) -> ReleaseLayout:
    """Locate the tables and the EHR folder; files in the EHR folder that are not EHRs are skipped
    and each is reported. A link that leads outside the release folder is reported and skipped,
    unless `follow_external_links` (the config's setting, a parameter of every notebook) allows it."""
    follow = bool(follow_external_links)
    root = Path(root)
    if not root.is_dir():
        why = "is a file, not a release folder (give the folder that holds it)" if root.is_file() else "no such folder"
        raise UnusableReleaseError(Problem(str(root), why, fatal=True))
    root = _find_release_root(root)
    layout = ReleaseLayout(root=root)
    for stem in REQUIRED_COLUMNS:
        for ext in (".tsv", ".csv"):
            if (root / f"{stem}{ext}").is_file():
                if _outside(root / f"{stem}{ext}", root) and not follow:
                    problems.append(Problem(f"{stem}{ext}", _LINK_SKIPPED))
                    break
                layout.tables[stem] = root / f"{stem}{ext}"
                break
    if RESPONSES_STEM not in layout.tables and REFERENCES_STEM not in layout.tables:
        links = [p.file for p in problems if p.message == _LINK_SKIPPED]
        why = (
            f"required file {links[0]} is a link to {(root / links[0]).resolve()}, outside the release folder, "
            "so it was skipped (pass --follow-external-links, or set follow_external_links: true, to read it)"
            if links
            else f"required file {RESPONSES_STEM}.tsv (or {REFERENCES_STEM}.tsv, or .csv) is missing"
        )
        raise UnusableReleaseError(Problem(str(root), why, fatal=True))
    for name in EHR_DIR_NAMES:
        if (root / name).is_dir():
            layout.ehr_dir = root / name
            break
    if layout.ehr_dir is None:
        raise UnusableReleaseError(
            Problem(
                str(root), f"no EHR folder: expected one of {', '.join(n + '/' for n in EHR_DIR_NAMES)}", fatal=True
            )
        )
    for path in sorted(layout.ehr_dir.iterdir()):
        rel = f"{layout.ehr_dir.name}/{path.name}"
        m = _EHR_FILE.match(path.name)
        if not path.is_file() or not m:
            problems.append(Problem(rel, "not an EHR file (<person_id>.xml or EHR_<person_id>.xml); skipped"))
            continue
        pid = m.group("pid")
        if _outside(path, root):
            if not follow:
                problems.append(Problem(rel, _LINK_SKIPPED))
                continue
            problems.append(Problem(rel, "is a link to a file outside the release folder; followed (config allows it)"))
        if pid in layout.ehr_files:
            problems.append(
                Problem(rel, f"a second file for person_id {pid} (also {layout.ehr_files[pid].name}); skipped")
            )
            continue
        layout.ehr_files[pid] = path
    return layout


def read_table(path: str | Path, problems: list[Problem], required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a release TSV (quoting off: fields hold bare quote characters) or CSV (standard quoting).

    Every column is read as text and kept, extra ones included. Non-UTF-8 bytes are replaced and
    reported with their line; rows with the wrong number of fields are skipped and reported.
    Raises `UnusableReleaseError` when a required column is missing.
    """
    path = Path(path)
    name = path.name
    text = _decode_table(path.read_bytes(), name, problems)
    is_tsv = path.suffix.lower() == ".tsv"
    csv.field_size_limit(2**31 - 1)  # clinical notes and long responses exceed the 128 KB default
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter="\t" if is_tsv else ",",
        quoting=csv.QUOTE_NONE if is_tsv else csv.QUOTE_MINIMAL,
    )
    header = _read_header(reader, name, required)
    rows, row_numbers = _read_rows(reader, name, problems, n=len(header), sep="\t" if is_tsv else ",")
    df = pd.DataFrame(rows, columns=header, dtype=object)
    df.attrs["source_file"] = name
    df.attrs["row_numbers"] = RowNumbers(row_numbers)
    # Identifiers stay text: person_ids are long integers that must not become floats.
    for col in df.columns:
        df[col] = (
            df[col].astype(str).str.strip()
            if col in ("instruction_id", "person_id", "model_name", "annotator_num")
            else df[col]
        )
    return df


def _decode_table(raw: bytes, name: str, problems: list[Problem]) -> str:
    """The table's text (BOM dropped); every non-UTF-8 byte reported with its line and replaced."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for i, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as err:
            problems.append(
                Problem(
                    name,
                    f"byte 0x{line[err.start]:02x} at column {err.start + 1} is not UTF-8 "
                    f"(data row {i - 1}); replaced by U+FFFD",
                    f"line {i}",
                )
            )
    return raw.decode("utf-8", errors="replace")


def _read_header(reader, name: str, required: tuple[str, ...]) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise UnusableReleaseError(Problem(name, "is empty: no header row", fatal=True)) from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise UnusableReleaseError(
            Problem(
                name,
                f"required column {', '.join(missing)} is missing (columns: {', '.join(header)})",
                "line 1",
                fatal=True,
            )
        )
    return header


class RowNumbers(tuple):
    """The file's line number of each row of a table, kept in its `attrs` for messages. pandas deep-copies
    `attrs` into the result of every operation on a table; being immutable, this is shared instead of
    copied (a list was copied element by element, thousands of times a second in the judge's loop)."""

    def __deepcopy__(self, memo):
        return self


def _read_rows(reader, name: str, problems: list[Problem], *, n: int, sep: str) -> tuple[list, list]:
    """The data rows with their row numbers; rows of the wrong width are reported and skipped, and
    rows an unbalanced quote swallowed into a field are reported by line."""
    rows, row_numbers = [], []
    row_no = 0
    last_line = reader.line_num
    for fields in reader:
        first_line, last_line = last_line + 1, reader.line_num
        if not fields or fields == [""]:
            continue
        row_no += 1
        if last_line > first_line:
            # A quoted field spanning lines: lines inside it that look like whole rows were swallowed
            # by an unbalanced quote. Each is reported; none is lost silently.
            swallowed = [
                first_line + k
                for f in fields
                for k, line in enumerate(f.split("\n")[1:], start=1)
                if line.count(sep) >= n - 1
            ]
            for line_no in swallowed:
                problems.append(
                    Problem(
                        name,
                        f"row lost: an unbalanced quote on line {first_line} made it part of row {row_no}'s field",
                        f"line {line_no}",
                    )
                )
        if len(fields) != n:
            # A trailing empty field from a trailing tab is harmless; anything else is not.
            if len(fields) == n + 1 and fields[-1] == "":
                fields = fields[:-1]
            else:
                problems.append(
                    Problem(
                        name,
                        f"row {row_no} has {len(fields)} fields, the header has {n}; row skipped",
                        f"line {reader.line_num}",
                    )
                )
                continue
        rows.append(fields)
        row_numbers.append(row_no)
    return rows, row_numbers


def coerce_numeric(df: pd.DataFrame, column: str, problems: list[Problem], boolean: bool = False) -> pd.Series:
    """Turn a text column into numbers; every unparseable value is reported with its row, blanks are
    counted in one line. Booleans accept 1/0, true/false, yes/no."""
    name = df.attrs.get("source_file", "?")
    row_numbers = df.attrs.get("row_numbers") or list(range(1, len(df) + 1))
    values = df[column].astype(str).str.strip()
    out = np.full(len(values), np.nan)
    blank_rows = []
    for i, v in enumerate(values):
        low = v.lower()
        if low in ("", "nan", "none", "na", "null"):
            blank_rows.append(row_numbers[i])
            continue
        if boolean and low in _TRUE:
            out[i] = 1.0
        elif boolean and low in _FALSE:
            out[i] = 0.0
        else:
            try:
                out[i] = float(v)
            except ValueError:
                problems.append(
                    Problem(name, f"{column} {v!r} is not a number; kept as missing", f"row {row_numbers[i]}")
                )
    if blank_rows:
        shown = ", ".join(map(str, blank_rows[:10])) + (", …" if len(blank_rows) > 10 else "")
        problems.append(Problem(name, f"{len(blank_rows)} rows have no {column} (rows {shown}); kept as missing"))
    return pd.Series(out, index=df.index, name=column)


def _first_present(df: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((c for c in names if c in df.columns), None)


def _tidy_responses(df: pd.DataFrame, problems: list[Problem]) -> pd.DataFrame:
    out = df.copy()
    text_col = _first_present(out, RESPONSE_TEXT_ALIASES)
    if text_col is None:
        problems.append(
            Problem(
                df.attrs["source_file"],
                f"no response text column (looked for {', '.join(RESPONSE_TEXT_ALIASES)}); responses are empty",
            )
        )
        out["model_response"] = ""
    elif text_col != "model_response":
        out = out.rename(columns={text_col: "model_response"})
    for col, boolean in (("model_rank", False), ("binary_correct", True)):
        if col in out.columns:
            out[col] = coerce_numeric(df, col, problems, boolean=boolean)
        else:
            out[col] = np.nan
    out.attrs = df.attrs
    _drop_out_of_range_labels(out, problems)
    return out


def _drop_out_of_range_labels(df: pd.DataFrame, problems: list[Problem]) -> None:
    """Labels outside their range become missing, each reported with its row: `binary_correct` must
    be 0 or 1; `model_rank` must lie between 1 and the number of systems that reviewer had for that
    instruction (its rows), in whole or half steps (halves are averaged ties)."""
    name = df.attrs.get("source_file", "?")
    rows = df.attrs.get("row_numbers") or list(range(1, len(df) + 1))
    correct = df["binary_correct"]
    bad_correct = correct.notna() & ~correct.isin([0.0, 1.0])
    rank = df["model_rank"]
    keys = ["instruction_id"] + ([rater_column(df)] if rater_column(df) else [])
    # The systems that reviewer had for the instruction: its rows, whether or not each rank parsed.
    n_ranked = rank.groupby([df[k] for k in keys]).transform("size")
    bad_rank = rank.notna() & (~np.isfinite(rank) | (rank < 1) | (rank > n_ranked) | ((rank * 2) % 1 != 0))
    for col, bad, rule in (
        ("binary_correct", bad_correct, "must be 0 or 1"),
        ("model_rank", bad_rank, "must lie between 1 and the number of systems ranked for the instruction"),
    ):
        for i in np.flatnonzero(bad.to_numpy()):
            problems.append(Problem(name, f"{col} {df[col].iat[i]:g} {rule}; left out (as missing)", f"row {rows[i]}"))
        df.loc[bad, col] = np.nan


def build_instructions(tables: dict[str, pd.DataFrame], problems: list[Problem]) -> pd.DataFrame:
    """One row per instruction_id from every table that names instructions."""
    parts = []
    for stem in (RESPONSES_STEM, REFERENCES_STEM, ROUGE_STEM):
        df = tables.get(stem)
        if df is None or df.empty:
            continue
        cols = {"instruction_id": df["instruction_id"]}
        for c in ("question", "person_id", "submitter_specialty"):
            if c in df.columns:
                cols[c] = df[c]
        cat = _first_present(df, CATEGORY_ALIASES)
        if cat:
            cols["category"] = df[cat]
        sub = _first_present(df, ("human_assigned_subcategory_1", "subcategory"))
        if sub and sub != cat:
            cols["subcategory"] = df[sub]
        part = pd.DataFrame(cols)
        part["source"] = stem
        parts.append(part)
    if not parts:
        return pd.DataFrame(
            columns=["instruction_id", "question", "person_id", "category", "has_reference", "has_model_responses"]
        )
    allrows = pd.concat(parts, ignore_index=True)
    # Person conflicts: an instruction tied to two patients in different files.
    if "person_id" in allrows.columns:
        pids = allrows.dropna(subset=["person_id"]).groupby("instruction_id")["person_id"].nunique()
        for iid in pids[pids > 1].index:
            found = sorted(allrows.loc[allrows.instruction_id == iid, "person_id"].unique())
            problems.append(
                Problem(
                    RESPONSES_STEM,
                    f"instruction {iid} is tied to several person_ids ({', '.join(found)}); the first is used",
                )
            )
    first = allrows.groupby("instruction_id", sort=False).first().reset_index()
    first = first.drop(columns=["source"])
    for c in ("question", "person_id", "category"):
        if c not in first.columns:
            first[c] = pd.NA
    refs = tables.get(REFERENCES_STEM)
    resp = tables.get(RESPONSES_STEM)
    first["has_reference"] = first.instruction_id.isin(refs.instruction_id) if refs is not None else False
    first["has_model_responses"] = first.instruction_id.isin(resp.instruction_id) if resp is not None else False
    return first


# ------------------------------------------------------------------ reviewers

RATER_COLUMNS = ("annotator_num", "reviewer", "rater", "annotator")
PRIMARY_REVIEWER = "Annotator_1"


def rater_column(df: pd.DataFrame) -> str | None:
    """The column naming the reviewer (annotator) of each row, where the table has one."""
    return next((c for c in RATER_COLUMNS if c in df.columns), None)


def primary_reviewer_rows(df: pd.DataFrame, label_columns: tuple[str, ...]) -> pd.DataFrame:
    """One reviewer's rows per instruction: the rule every analysis uses to pick "the primary".

    Per instruction, the primary reviewer is `Annotator_1` (as public code does) when they gave any
    of `label_columns` for it; otherwise the first other reviewer (in the table's order) who did.
    That reviewer's rows are kept whole and as they are: a label the chosen reviewer left empty
    stays missing, never filled from another reviewer (which would make rankings nobody gave).
    Instructions no reviewer labelled keep the primary's (empty) rows. Tables without a reviewer
    column are returned unchanged.
    """
    col = rater_column(df)
    if col is None or df.empty:
        return df
    raters = df[col].astype(str)
    order = {r: i for i, r in enumerate(dict.fromkeys(raters))}
    order[PRIMARY_REVIEWER] = -1
    present = [c for c in label_columns if c in df.columns]
    labelled = df[present].apply(lambda s: s.notna() & s.astype(str).str.strip().ne(""))
    gave_any = labelled.any(axis=1).groupby([df.instruction_id, raters]).transform("any")
    rank = raters.map(order) + np.where(gave_any, 0, len(order) + 1)  # reviewers who gave labels first
    chosen = rank.groupby(df.instruction_id).transform("min")
    return df[rank == chosen]


@dataclass
class Release:
    """A MedAlign release: its tables as DataFrames, its EHR files, and every problem found.

    Attributes
    ----------
    instructions : one row per instruction_id (question, person_id, category where present).
    references : clinician reference responses, one row per instruction x annotator.
    model_responses : one row per instruction x model (x reviewer where several reviewed):
        ``model_response``, ``model_rank`` (1 = best, ties allowed), ``binary_correct`` (1/0).
    """

    root: Path
    layout: ReleaseLayout
    instructions: pd.DataFrame
    references: pd.DataFrame
    model_responses: pd.DataFrame
    rouge: pd.DataFrame | None
    problems: list[Problem]
    # The small-cell rule every table describing patients follows on the real release (`describe`):
    # the config's `min_cell_patients`, which reaches each notebook as a parameter of `open_release`.
    min_cell_patients: int = DEFAULT_MIN_CELL

    @property
    def is_synthetic(self) -> bool:
        """True only when the folder holds the marker `medalign synth` wrote for exactly these
        files; anything else (no marker, a folder or link named SYNTHETIC, a marker for other
        files) counts as the real release, with the data guard and the share-safe scan on."""
        if not hasattr(self, "_synthetic"):
            self._synthetic, why = marker_status(self.layout)
            if why:
                self.problems.append(
                    Problem(SYNTHETIC_MARKER, f"{why}: the data counts as the real release (guard and scan on)")
                )
        return self._synthetic

    @property
    def planted_truth(self) -> dict | None:
        """The synthetic cohort's planted truth (`planted_truth.json`: the label model, expected
        statistics, each instruction's answer as a value); None for the real release."""
        path = self.root / "planted_truth.json"
        if not self.is_synthetic or not path.exists():
            return None
        if not hasattr(self, "_planted"):
            self._planted = json.loads(path.read_text(encoding="utf-8"))
        return self._planted

    @property
    def ehr_files(self) -> dict[str, Path]:
        return self.layout.ehr_files

    def ehr_text(self, person_id: str) -> str:
        """The raw XML of a patient's record, as it goes into prompts."""
        return ehr_mod.read_ehr_text(self.layout.ehr_files[str(person_id)])

    def parse_ehrs(
        self, cache_dir: str | Path | None = None, workers: int | None = None, progress: bool = True
    ) -> dict[str, ehr_mod.EHRSummary]:
        """Parse (or find cached) every EHR; parse problems are added to `problems` once."""
        summaries = ehr_mod.parse_ehrs_to_cache(
            self.ehr_files,
            writable_dir(cache_dir or cache_root() / "events", "parsed-EHR cache"),
            workers=workers,
            progress=progress,
            root=self.root,
        )
        if not getattr(self, "_parse_problems_added", False):
            for s in summaries.values():
                self.problems.extend(s.problems)
            self._parse_problems_added = True
        return summaries

    def events(
        self, columns: list[str] | None = None, cache_dir: str | Path | None = None, progress: bool = True
    ) -> pd.DataFrame:
        """Every patient's events in one DataFrame (see `ehr.EVENT_COLUMNS`)."""
        table = ehr_mod.load_cached_events(self.parse_ehrs(cache_dir, progress=progress), columns)
        table.attrs.update(self.disclosure)  # the disclosure rules of `describe` read it
        return table

    def patients(self, cache_dir: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
        """One row per patient: demographics as written in the record, event and note counts."""
        rows = []
        for pid, s in self.parse_ehrs(cache_dir, progress=progress).items():
            rows.append(
                {"person_id": pid, "schema": s.schema, "n_events": s.n_events, "n_notes": s.n_notes, **s.patient}
            )
        table = pd.DataFrame(rows)
        table.attrs.update(self.disclosure)  # the disclosure rules of `describe` read it
        return table

    @property
    def disclosure(self) -> dict:
        """What the disclosure rules of `describe` read from a table's ``attrs``: whether the data is
        the synthetic cohort's, and the smallest number of patients a shown cell may describe."""
        return {"synthetic": self.is_synthetic, "min_cell_patients": self.min_cell_patients}

    def fingerprint(self) -> str:
        """A short hash of every table and EHR file's bytes: identifies the data a result came from."""
        return self.layout.fingerprint()


def open_release(
    data_dir: str | Path, *, follow_external_links: bool = False, min_cell_patients: int = DEFAULT_MIN_CELL
) -> Release:
    """The release at `data_dir` (relative to the repository root unless absolute), as notebooks
    open it. It only reads: a synthetic cohort is made by an explicit step (`make data`,
    `medalign synth DIR`, or `medalign run` with `synthetic.generate_if_missing`). The settings are
    the config's, which `medalign run` passes to every notebook as parameters."""
    path = project_path(data_dir)
    if not path.exists():
        raise UnusableReleaseError(
            Problem(
                str(data_dir),
                "no release here: point data_dir at your copy of the release, "
                "or make the synthetic cohort with `make data` or "
                f"`medalign synth {data_dir}`",
                fatal=True,
            )
        )
    release = load_release(path, follow_external_links=follow_external_links, min_cell_patients=min_cell_patients)
    from .describe import register_display_rule

    register_display_rule(release)  # every table shown after this follows the release's small-cell rule
    return release


def load_release(
    root: str | Path, follow_external_links: bool = False, min_cell_patients: int = DEFAULT_MIN_CELL
) -> Release:
    """Read a release folder (or the folder holding `medalign_instructions_v1_3/`).

    Raises `UnusableReleaseError` for a missing folder, a missing required file or column; every
    other problem is collected in `Release.problems` and the data is kept.
    """
    problems: list[Problem] = []
    layout = find_layout(root, problems, follow_external_links)
    tables: dict[str, pd.DataFrame] = {}
    for stem, path in layout.tables.items():
        tables[stem] = read_table(path, problems, REQUIRED_COLUMNS[stem])
    responses = tables.get(RESPONSES_STEM)
    responses = (
        _tidy_responses(responses, problems)
        if responses is not None
        else pd.DataFrame(
            columns=["instruction_id", "person_id", "model_name", "model_response", "model_rank", "binary_correct"]
        )
    )
    # The release calls the compared thing `model_name`; everything downstream calls it `system`.
    responses = responses.rename(columns={"model_name": "system"})
    tables[RESPONSES_STEM] = responses
    references = tables.get(
        REFERENCES_STEM, pd.DataFrame(columns=["instruction_id", "person_id", "clinician_response"])
    )
    instructions = build_instructions(tables, problems)
    # Every instruction's patient must have a record.
    for stem, df in ((RESPONSES_STEM, responses), (REFERENCES_STEM, references), (ROUGE_STEM, tables.get(ROUGE_STEM))):
        if df is None or "person_id" not in df.columns or df.empty:
            continue
        rows = df.attrs.get("row_numbers") or list(range(1, len(df) + 1))
        missing = ~df["person_id"].isin(layout.ehr_files.keys())
        seen: set[str] = set()
        fname = layout.tables[stem].name
        for i in np.flatnonzero(missing.to_numpy()):
            pid = df["person_id"].iat[i]
            if pid in seen:
                continue
            seen.add(pid)
            n = int((df["person_id"] == pid).sum())
            problems.append(
                Problem(
                    fname,
                    f"person_id {pid} has no EHR file in {layout.ehr_dir.name}/ "
                    f"({n} rows of instruction {df['instruction_id'].iat[i]} and others)",
                    f"row {rows[i]}",
                )
            )
    rouge = tables.get(ROUGE_STEM)
    return Release(layout.root, layout, instructions, references, responses, rouge, problems, min_cell_patients)


def validate_release(
    root: str | Path, cache_dir: str | Path | None = None, progress: bool = False
) -> tuple[dict, list[Problem]]:
    """Read everything, parse every EHR, and return (summary, problems) for `medalign validate`."""
    release = load_release(root)
    summaries = release.parse_ehrs(cache_dir, progress=progress)
    schemas = sorted({s.schema for s in summaries.values()}) or ["none"]
    summary = {
        "schema": "+".join(schemas),
        "patients": len(release.ehr_files),
        "instructions": len(release.instructions),
        "reference_responses": len(release.references),
        "model_responses": len(release.model_responses),
        "events": sum(s.n_events for s in summaries.values()),
        "notes": sum(s.n_notes for s in summaries.values()),
        "synthetic": "yes" if release.is_synthetic else "no",
        "layout": ", ".join(p.name for p in release.layout.tables.values()) + f", {release.layout.ehr_dir.name}/",
    }
    return summary, release.problems
