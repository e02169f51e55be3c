"""Describing a cohort: demographics, events, notes, timelines, and what fits in which context.

Small pure functions over the tables `release.Release` gives (patients, events, instructions) and
`context.tokenizers.record_token_counts` (tokens per record).

Disclosure rules hold here, where the tables are made, for every table not marked synthetic
(`Release` marks its tables' ``.attrs`` with `Release.disclosure`; a table without the mark counts
as real): ages over 89 are shown only as "90+" (HIPAA's safe harbor), and a cell of fewer patients
than the table's ``min_cell_patients`` (the release's: 11 unless the config says otherwise, the
small-cell rule of CMS and most data use agreements) shows only that it is small. A table made
from marked tables carries their marks on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import paper

if TYPE_CHECKING:  # annotations only
    from .release import Release


TOP_AGE = 90
DEFAULT_MIN_CELL = 11


def is_real(table: pd.DataFrame) -> bool:
    """Whether disclosure rules apply: every table but one a synthetic release marked as its own."""
    return not table.attrs.get("synthetic", False)


def min_cell_patients(table: pd.DataFrame) -> int:
    """The smallest number of patients a shown cell of `table` may describe (its release's setting)."""
    return int(table.attrs.get("min_cell_patients", DEFAULT_MIN_CELL))


# The small-cell rule where tables are shown. Opening the real release (`open_release`, what every
# notebook does first) sets it for the process, so that every table `reports.show` displays
# obeys it, whichever function made the table: a count of 1 to min_cell - 1 reads "<min_cell".
_DISPLAY_RULE: dict = {"min_cell_patients": None}
_COUNT_COLUMN = re.compile(
    r"^(n|count|counts|patients|instructions|responses|records|notes|encounters)$|^n[_ ]|_count$|^labelled ", re.I
)


def register_display_rule(release: Release) -> None:
    """After `release` was opened: on the real release, every shown table follows its small-cell
    rule (the strictest of every real release this process opened)."""
    if not release.is_synthetic:
        current = _DISPLAY_RULE["min_cell_patients"] or 0
        _DISPLAY_RULE["min_cell_patients"] = max(current, release.min_cell_patients)


def display_min_cell() -> int | None:
    """The small-cell threshold shown tables follow (None: no real data was opened here)."""
    return _DISPLAY_RULE["min_cell_patients"]


def is_count_column(name) -> bool:
    label = " ".join(map(str, name)) if isinstance(name, tuple) else str(name)
    return bool(_COUNT_COLUMN.search(label.strip()))


def suppress_small_counts(frame: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """`frame` with every count column's values from 1 to `min_cell` - 1 shown as "<min_cell"."""
    out = frame
    for name in frame.columns:
        col = frame[name]
        if not is_count_column(name) or pd.api.types.is_bool_dtype(col):
            continue
        values = pd.to_numeric(col, errors="coerce")  # a column of numbers and words ("90+") too
        small = (values > 0) & (values < min_cell)
        if small.any():
            out = out.copy() if out is frame else out
            out[name] = col.astype(object).where(~small, f"<{min_cell}")
    return out


def _disclosure(table: pd.DataFrame) -> dict:
    """The marks a table made from `table` carries on."""
    return {"synthetic": not is_real(table), "min_cell_patients": min_cell_patients(table)}


def cohort_table(patients: pd.DataFrame, events: pd.DataFrame) -> pd.DataFrame:
    """One row per patient: gender, age at the last event, first and last event, years covered,
    events, notes, encounters."""
    ts = events.groupby("person_id", observed=True).timestamp.agg(["min", "max"])
    enc = events.groupby("person_id", observed=True).encounter.nunique().rename("encounters")
    p = patients.set_index("person_id")
    out = pd.DataFrame(index=p.index)
    out["gender"] = p.get("gender", pd.Series(index=p.index, dtype=object)).fillna("unknown").str.lower()
    birth = pd.to_datetime(p.get("birthdate", pd.Series(index=p.index, dtype=object)), errors="coerce", format="mixed")
    out["first_event"] = ts["min"]
    out["last_event"] = ts["max"]
    out["age_at_last_event"] = ((out.last_event - birth).dt.days / 365.25).round(1)
    out["years_covered"] = ((out.last_event - out.first_event).dt.days / 365.25).round(2)
    out["events"] = p["n_events"]
    out["notes"] = p["n_notes"]
    out["encounters"] = enc
    out = out.reset_index()
    out.attrs.update(_disclosure(patients))
    if is_real(patients):  # top-coded: 90 stands for 90 or over
        out["age_at_last_event"] = out.age_at_last_event.clip(upper=TOP_AGE)
    return out


def cohort_summary(cohort: pd.DataFrame) -> pd.DataFrame:
    """Median and range of the cohort table's numeric columns. On real data ages are top-coded
    (`cohort_table`) and every age statistic of 90 reads "90+"."""
    num = cohort[["age_at_last_event", "years_covered", "events", "notes", "encounters"]]
    summary = num.describe(percentiles=[0.25, 0.5, 0.75]).T[["count", "min", "25%", "50%", "75%", "max", "mean"]]
    summary = summary.round(1)
    if is_real(cohort):
        summary = summary.astype(object)
        age = summary.loc["age_at_last_event"]
        summary.loc["age_at_last_event"] = age.where(~((age >= TOP_AGE) & (age.index != "count")), f"{TOP_AGE}+")
    return summary


def patients_per(cohort: pd.DataFrame, column: str) -> pd.DataFrame:
    """Patients per value of a column of the cohort table (gender...); on real data a value held by
    fewer than the cohort's `min_cell_patients` patients shows only that it is small."""
    counts = cohort[column].value_counts().rename("patients").to_frame()
    return _suppress_small(counts, "patients", ["patients"], source=cohort)


def _suppress_small(table: pd.DataFrame, patients_col: str, cols: list[str], *, source: pd.DataFrame) -> pd.DataFrame:
    """`cols` of rows describing fewer than `source`'s `min_cell_patients` patients replaced by "<N",
    when `source` is real data."""
    if not is_real(source) or table.empty:
        return table
    threshold = min_cell_patients(source)
    small = table[patients_col] < threshold
    out = table.astype({c: object for c in cols})
    out.loc[small, cols] = f"<{threshold}"
    return out


def events_per_type(events: pd.DataFrame) -> pd.DataFrame:
    """Events of each type: total, share, and per patient (median, max)."""
    counts = events.groupby(["person_id", "event_type"], observed=True).size().rename("n").reset_index()
    per = counts.groupby("event_type", observed=True).n.agg(
        total="sum", per_patient_median="median", per_patient_max="max"
    )
    per["share_pct"] = 100 * per.total / per.total.sum()
    return per.sort_values("total", ascending=False)


def notes_per_type(events: pd.DataFrame) -> pd.DataFrame:
    """Notes of each type, with their median length in characters (small cells suppressed on real data)."""
    notes = events[events.event_type == "note"]
    if notes.empty:
        return pd.DataFrame(columns=["n", "patients", "median_chars"])
    table = (
        notes.assign(chars=notes.text.str.len())
        .groupby("note_type", observed=True)
        .agg(n=("text", "size"), patients=("person_id", "nunique"), median_chars=("chars", "median"))
        .sort_values("n", ascending=False)
    )
    return _suppress_small(table, "patients", ["n", "patients", "median_chars"], source=events)


def fit_shares(token_counts: pd.DataFrame, context_lengths=paper.CONTEXT_LENGTHS, reserve: int = 0) -> pd.DataFrame:
    """Share (%) of records that fit entirely in each context length, per tokenizer. `reserve`
    subtracts what the prompt and the answer need (0: the record alone, as the paper counted)."""
    rows = []
    for tok, part in token_counts.groupby("tokenizer"):
        for c in context_lengths:
            rows.append(
                {
                    "tokenizer": tok,
                    "context": c,
                    "fit_pct": 100 * float(np.mean(part.n_tokens <= c - reserve)),
                    "n_records": len(part),
                }
            )
    return pd.DataFrame(rows)


def share_visible(token_counts: pd.DataFrame, context_lengths=paper.CONTEXT_LENGTHS) -> pd.DataFrame:
    """Per record and context length, the share of the record's tokens a context can hold."""
    rows = []
    for _, r in token_counts.iterrows():
        for c in context_lengths:
            rows.append(
                {
                    "person_id": r.person_id,
                    "tokenizer": r.tokenizer,
                    "context": c,
                    "visible_pct": 100 * min(1.0, c / max(r.n_tokens, 1)),
                }
            )
    return pd.DataFrame(rows)


def category_table(instructions: pd.DataFrame) -> pd.DataFrame:
    """Instruction categories (gold / all) beside the paper's Table 2. Subcategory labels of the
    public taxonomy are mapped to the paper's six categories."""
    cat = instructions.category.map(to_paper_category).fillna("Other")
    ours = pd.DataFrame({"gold": cat[instructions.has_reference].value_counts(), "all": cat.value_counts()})
    table = paper.TABLE2.set_index("category").join(ours.add_prefix("ours_"), how="outer").fillna(0)
    for col in ("gold", "all", "ours_gold", "ours_all"):
        table[col] = table[col].astype(int)
    table["paper_all_pct"] = (100 * table["all"] / table["all"].sum()).round(1)
    table["ours_all_pct"] = (100 * table["ours_all"] / max(table["ours_all"].sum(), 1)).round(1)
    return table.reindex(paper.TABLE2.category)


_SUBCATEGORY_TO_CATEGORY = {
    "determine plan of care": "Care Planning",
    "calculate numerical measures": "Calculation & Scoring",
    "provide risk assessment": "Calculation & Scoring",
    "provide diagnosis assistance": "Diagnosis Support",
    "translate materials": "Translation",
    "other": "Other",
}


def to_paper_category(label) -> str | None:
    """Map a category or subcategory label (the paper's, or the public taxonomy's) to Table 2's."""
    if label is None or (isinstance(label, float) and np.isnan(label)):
        return None
    text = str(label).strip()
    if text in set(paper.TABLE2.category):
        return text
    low = text.lower()
    if low in _SUBCATEGORY_TO_CATEGORY:
        return _SUBCATEGORY_TO_CATEGORY[low]
    if low.startswith("retrieve") or low.startswith("provide patient education") or low == "information retrieval":
        return "Retrieve & Summarize"
    return "Other"


# ------------------------------------------------------------------ the paper's remaining descriptive analyses


def specialty_table(instructions: pd.DataFrame) -> pd.DataFrame:
    """Instructions per submitter specialty, largest first, beside the paper's counts in the same
    order of size (the paper gives 492/402/320/71/14/12/3 over seven specialties, unnamed here)."""
    if "submitter_specialty" not in instructions.columns:
        return pd.DataFrame(columns=["specialty", "instructions", "share_pct", "paper_instructions"])
    counts = instructions.submitter_specialty.fillna("unknown").value_counts()
    out = counts.rename_axis("specialty").reset_index(name="instructions")
    out["share_pct"] = 100 * out.instructions / out.instructions.sum()
    paper_counts = list(paper.SPECIALTY_COUNTS) + [None] * max(0, len(out) - len(paper.SPECIALTY_COUNTS))
    out["paper_instructions"] = paper_counts[: len(out)]
    return out


def subcategory_table(instructions: pd.DataFrame) -> pd.DataFrame:
    """Instructions per subcategory (the 20 of Table 2's appendix), where the release has them."""
    if "subcategory" not in instructions.columns:
        return pd.DataFrame(columns=["category", "subcategory", "instructions"])
    g = instructions.assign(category=instructions.category.map(to_paper_category))
    return g.groupby(["category", "subcategory"], dropna=False).size().rename("instructions").reset_index()


def near_duplicate_instructions(instructions: pd.DataFrame, threshold: float = 0.7, top: int = 10):
    """The paper's deduplication rule: no two instructions above ROUGE-L `threshold`. Returns (the
    number of pairs above it, the `top` closest pairs with their ROUGE-L). Every pair is bounded by
    its bag-of-words overlap first (ROUGE-L F cannot exceed 2*overlap/(m+n)), so exact ROUGE-L is
    computed only where the bound can reach the closest pairs or the threshold."""
    from rouge_score import rouge_scorer, tokenize
    from scipy import sparse

    questions = instructions.question.fillna("").astype(str).tolist()
    ids = instructions.instruction_id.tolist()
    tokens = [tokenize.tokenize(q, None) for q in questions]
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, toks in enumerate(tokens):
        for t, c in pd.Series(toks, dtype=object).value_counts().items():
            rows.append(i)
            cols.append(vocab.setdefault(t, len(vocab)))
            vals.append(c)
    lengths = np.array([len(t) for t in tokens], float)
    n = len(questions)
    if n < 2:
        return 0, pd.DataFrame(columns=["instruction_a", "instruction_b", "rougeL", "question_a", "question_b"])
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(n, len(vocab)))
    # Multiset overlap = sum of min counts; with counts mostly 1, min(a, b) <= a*b is a valid bound's input.
    overlap = (m.minimum(1) @ m.minimum(1).T).toarray()
    bound = np.where((lengths[:, None] + lengths[None, :]) > 0, 2 * overlap / (lengths[:, None] + lengths[None, :]), 0)
    iu = np.triu_indices(n, 1)
    order = np.argsort(-bound[iu], kind="stable")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    exact = []
    for k in order:
        b = bound[iu][k]
        if len(exact) >= top and b < min(threshold, sorted(s for s, _, _ in exact)[-top]):
            break
        i, j = iu[0][k], iu[1][k]
        exact.append((scorer.score(questions[i], questions[j])["rougeL"].fmeasure, i, j))
    exact.sort(reverse=True)
    above = sum(1 for s, _, _ in exact if s > threshold)
    closest = pd.DataFrame(
        [(ids[i], ids[j], s, questions[i], questions[j]) for s, i, j in exact[:top]],
        columns=["instruction_a", "instruction_b", "rougeL", "question_a", "question_b"],
    )
    return above, closest


AGE_BANDS = [0, 18, 40, 65, 80, 200]
AGE_LABELS = ["<18", "18-39", "40-64", "65-79", "80+"]


def instruction_demographics(release: Release, progress: bool = False) -> pd.DataFrame:
    """Each instruction's patient's sex, race, ethnicity and age band (as written in the record),
    for breakdowns of correctness; indexed by instruction_id."""
    patients = release.patients(progress=progress).set_index("person_id")
    ins = release.instructions.set_index("instruction_id").person_id.astype(str)
    out = pd.DataFrame(index=ins.index)
    for col, names in (("sex", ("gender", "sex")), ("race", ("race",)), ("ethnicity", ("ethnicity",))):
        src = next((c for c in names if c in patients.columns), None)
        out[col] = ins.map(patients[src]) if src else np.nan
    age = next((c for c in ("age_years", "age") if c in patients.columns), None)
    years = pd.to_numeric(ins.map(patients[age]), errors="coerce") if age else pd.Series(np.nan, index=ins.index)
    out["age_band"] = pd.cut(years, AGE_BANDS, labels=AGE_LABELS, right=False).astype(object)
    return out.fillna("unknown")


def release_label(release: Release) -> str:
    """What a page says the data is: 'synthetic cohort' or 'MedAlign release'."""
    return "synthetic cohort" if release.is_synthetic else "MedAlign release"


def data_line(release: Release) -> str:
    """The line every notebook prints first: which data, and its fingerprint."""
    return f"data: {release_label(release)}; fingerprint {release.fingerprint()}"


LENGTH_BINS = [0, 32768, 65536, 131072, float("inf")]
LENGTH_LABELS = ["≤32k", "32k–64k", "64k–128k", ">128k"]


def instruction_length_bins(instructions: pd.DataFrame, counts: pd.DataFrame) -> pd.Series:
    """Each instruction's EHR length band (`LENGTH_LABELS`) from a record token count table
    (person_id, n_tokens), indexed by instruction_id."""
    length = instructions.set_index("instruction_id").person_id.map(counts.set_index("person_id").n_tokens)
    return pd.cut(length, LENGTH_BINS, labels=LENGTH_LABELS).astype(object)
