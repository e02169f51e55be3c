"""Instructions with answers derived from a patient's record: one function per kind (a latest lab, the
current medications, a BMI, a CKD stage...), drawn per Table 2 category, each with its evidence
timestamps and, where the answer is one value of the record, that value planted for grading.
"""

from __future__ import annotations

import numpy as np

from .. import paper
from .records import DRUGS, LAB_SHORT, PatientFacts

SPECIALTIES = [
    "Internal Medicine",
    "Cardiology",
    "Oncology",
    "Neurology",
    "Family Medicine",
    "Emergency Medicine",
    "Pediatrics",
]

# Paper categories (Table 2) -> the subcategories used for them, and the instruction kinds.
CATEGORY_KINDS = {
    "Retrieve & Summarize": [
        ("retrieve laboratory studies", "latest_lab"),
        ("retrieve laboratory studies", "first_lab"),
        ("retrieve vitals", "latest_bp"),
        ("retrieve medication information", "current_meds"),
        ("retrieve appointment information", "last_visit"),
        ("retrieve medical history", "first_diagnosis"),
        ("retrieve social history", "smoking"),
        ("retrieve demographics", "demographics"),
        ("retrieve imaging studies", "last_procedure"),
        ("retrieve medical history", "problem_summary"),
    ],
    "Care Planning": [("determine plan of care", "plan")],
    "Calculation & Scoring": [("calculate numerical measures", "bmi"), ("provide risk assessment", "egfr_stage")],
    "Diagnosis Support": [("provide diagnosis assistance", "differential")],
    "Translation": [("translate materials", "translate")],
    "Other": [("other", "last_visit_summary")],
}
SPANISH = {
    "continue": "continuar",
    "and": "y",
    "daily": "diariamente",
    "check": "revisar",
    "in": "en",
    "months": "meses",
    "weeks": "semanas",
    "as needed": "según sea necesario",
    "follow up": "seguimiento",
}


# ------------------------------------------------------------------ instructions and answers


def planted_value(value, unit: str | None = None, date: str | None = None) -> dict:
    """The answer of a gradable instruction as data: what an answer must state, its unit and date."""
    return {"value": str(value), "unit": unit, "date": date}


Instruction = tuple[str, str, list[str], dict | None]  # question, reference, evidence timestamps, planted value


def instruction_for_kind(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    """(question, reference answer, evidence timestamps, planted value) for one kind, or None if the
    record lacks it. The planted value is set for the kinds whose answer is one value of the record
    (`synthetic.grading.GRADABLE_KINDS`); grading reads it, never the reference's wording."""
    if kind not in INSTRUCTION_KINDS:
        raise ValueError(kind)
    return INSTRUCTION_KINDS[kind](kind, f, rng)


def _lab(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    labs = f.labs_last if kind == "latest_lab" else f.labs_first
    if not labs:
        return None
    code = sorted(labs)[int(rng.integers(0, len(labs)))]
    ts, val, unit = labs[code]
    which = "most recent" if kind == "latest_lab" else "first recorded"
    q = [
        f"What was the {which} {LAB_SHORT[code]} value?",
        f'What is the patient\'s {which} "{LAB_SHORT[code]}"?',
        f"Can you tell me the {which} {LAB_SHORT[code]} and when it was drawn?",
    ][int(rng.integers(0, 3))]
    question = q
    reference = f"The {which} {LAB_SHORT[code]} was {val} {unit}, on {ts[:10]}."
    return question, reference, [ts], planted_value(val, unit, ts[:10])


def _latest_bp(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not f.bp_last:
        return None
    ts, s, d = f.bp_last
    question = "What was the patient's last recorded blood pressure?"
    reference = f"The last recorded blood pressure was {s}/{d} mm Hg on {ts[:10]}."
    return question, reference, [ts], planted_value(f"{s}/{d}", "mm Hg", ts[:10])


def _current_meds(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not f.meds_last:
        return None
    last = max(f.meds_last.values())
    current = sorted(d for d, ts in f.meds_last.items() if ts == last)
    question = "List the medications the patient is currently taking."
    reference = "Current medications: " + ", ".join(DRUGS[d][1] for d in current) + "."
    return question, reference, [last], None


def _last_visit(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    name = sorted(f.visits_last)[int(rng.integers(0, len(f.visits_last)))]
    ts = f.visits_last[name]
    question = f"When was the patient's last {name.lower()}?"
    reference = f"The last {name.lower()} was on {ts[:10]}."
    return question, reference, [ts], planted_value(ts[:10], None, ts[:10])


def _first_diagnosis(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    known = [c for c in f.conditions if c[2]]
    if not known:
        return None
    code, name, ts, _ = known[int(rng.integers(0, len(known)))]
    question = f"When was {name.split(',')[0].lower()} first documented?"
    reference = f"{name} ({code}) was first documented on {ts[:10]}."
    return question, reference, [ts], planted_value(ts[:10], None, ts[:10])


def _problem_summary(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not (known := [c for c in f.conditions if c[2]]):
        return None
    items = "; ".join(f"{name} since {ts[:10]}" for code, name, ts, _ in known)
    question = "Summarize this patient's chronic medical problems."
    reference = f"Chronic problems: {items}."
    return question, reference, [c[2] for c in known], None


def _smoking(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not f.smoking_last:
        return None
    ts, status = f.smoking_last
    question = "Does the patient smoke?"
    reference = f"Smoking status is documented as {status.lower()} (last on {ts[:10]})."
    return question, reference, [ts], planted_value(status.lower(), None, ts[:10])


def _demographics(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    sex = "female" if f.gender == "FEMALE" else "male"
    question = "What is the patient's age and sex?"
    reference = f"The patient is a {f.age_years}-year-old {sex} (born {f.birthdate})."
    return question, reference, [f.last_ts], planted_value(f.age_years, "years", f.last_ts[:10])


def _last_procedure(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not f.procedure_last:
        return None
    ts, name, impression = f.procedure_last
    question = f"What did the most recent {name} show?"
    reference = f"The {name} on {ts[:10]} showed {impression}."
    return question, reference, [ts], planted_value(impression.rstrip("."), None, ts[:10])


def _latest_note(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    # the three kinds about the latest note
    if not f.last_note:
        return None
    ts, ntype, plan = f.last_note
    if kind == "plan":
        question = "What is the current plan of care according to the latest note?"
        reference = f"Per the {ntype.lower()} of {ts[:10]}: {plan}"
        return question, reference, [ts], None
    if kind == "translate":
        spanish = " ".join(SPANISH.get(w.lower().strip(".,"), w) for w in plan.split())
        question = "Translate the plan from the latest note into Spanish for the patient."
        reference = f"Plan: {spanish}"
        return question, reference, [ts], None
    question = "Draft a two-sentence summary of the most recent visit for the referring physician."
    reference = f"The patient was last seen on {ts[:10]} ({ntype.lower()}). {plan}"
    return question, reference, [ts], None


def _bmi(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not f.weight_last or not f.height_last:
        return None
    (tw, w), (th, h) = f.weight_last, f.height_last
    bmi = w / (h / 100) ** 2
    question = "Calculate the patient's BMI from the most recent weight and height."
    reference = f"BMI is {bmi:.1f} kg/m2 (weight {w} kg, height {h} cm)."
    return question, reference, sorted({tw, th}), planted_value(f"{bmi:.1f}", "kg/m2", max(tw, th)[:10])


def _egfr_stage(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if "33914-3" not in f.labs_last:
        return None
    ts, val, _ = f.labs_last["33914-3"]
    stage = (
        "G1"
        if val >= 90
        else "G2"
        if val >= 60
        else "G3a"
        if val >= 45
        else "G3b"
        if val >= 30
        else "G4"
        if val >= 15
        else "G5"
    )
    question = "What CKD stage does the most recent eGFR correspond to?"
    reference = f"The most recent eGFR was {val} mL/min/1.73m2 on {ts[:10]}, which corresponds to CKD stage {stage}."
    return question, reference, [ts], planted_value(stage, None, ts[:10])


def _differential(kind: str, f: PatientFacts, rng: np.random.Generator) -> Instruction | None:
    if not f.acute_last:
        return None
    ts, dx, diff, _ = f.acute_last
    question = f"Given the presentation documented on {ts[:10]}, what is a reasonable differential diagnosis?"
    reference = f"For {dx.lower()}, the differential includes {diff}."
    return question, reference, [ts], None


INSTRUCTION_KINDS = {
    "latest_lab": _lab,
    "first_lab": _lab,
    "latest_bp": _latest_bp,
    "current_meds": _current_meds,
    "last_visit": _last_visit,
    "first_diagnosis": _first_diagnosis,
    "problem_summary": _problem_summary,
    "smoking": _smoking,
    "demographics": _demographics,
    "last_procedure": _last_procedure,
    "plan": _latest_note,
    "translate": _latest_note,
    "last_visit_summary": _latest_note,
    "bmi": _bmi,
    "egfr_stage": _egfr_stage,
    "differential": _differential,
}


def category_counts(n: int, column: str) -> dict[str, int]:
    """Split n instructions over the paper's categories in Table 2's proportions (largest remainder)."""
    t = paper.TABLE2.set_index("category")[column]
    raw = t / t.sum() * n
    counts = np.floor(raw).astype(int)
    rest = n - counts.sum()
    for cat in (raw - counts).sort_values(ascending=False).index[:rest]:
        counts[cat] += 1
    return counts.to_dict()
