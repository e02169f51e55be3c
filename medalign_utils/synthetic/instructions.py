"""Instructions with answers derived from a patient's record: one function per kind (a latest lab, the
current medications, a BMI, a CKD stage...), drawn per Table 2 category, each with its evidence
timestamps and, where the answer is one value of the record, that value planted for grading.
"""

from __future__ import annotations

from collections import Counter

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
# Submitters are drawn with the paper's skew: 492/402/320/71/14/12/3 instructions over seven
# specialties, largest first (SPECIALTIES is in that order).
SPECIALTY_WEIGHTS = np.array(paper.SPECIALTY_COUNTS, float) / sum(paper.SPECIALTY_COUNTS)


def draw_specialty(rng: np.random.Generator) -> str:
    return SPECIALTIES[int(rng.choice(len(SPECIALTIES), p=SPECIALTY_WEIGHTS))]


# Clinicians write their requests in their own words, around their own task: a lead-in and a tail
# drawn per instruction vary the wording the way the release's free text does, so that templated
# questions pass the paper's deduplication (no two above ROUGE-L 0.7) as the release's did.
LEAD_INS = (
    "",
    "Quick question:",
    "Before clinic tomorrow,",
    "For the tumor board,",
    "I'm covering overnight:",
    "Ahead of the family meeting,",
    "For my discharge summary,",
    "While I review the chart,",
    "For the referral letter,",
    "Pre-op check:",
    "For morning rounds,",
    "I'm seeing {who} today;",
    "Regarding {who},",
    "For this {who},",
    "Covering for a colleague:",
    "Prior authorization needs this:",
    "From the chart,",
    "Please check the record:",
    "For the care coordination huddle,",
    "Telehealth follow-up:",
    "Our pharmacist asks:",
    "For the insurance form,",
    "Handoff question:",
    "I need this for the consult note:",
    "Second opinion request:",
    "Before I call the patient back,",
    "For the quality audit,",
    "At today's visit I want to know:",
    "Triage question:",
    "Looking at {who},",
)
TAILS = (
    "",
    "Thanks.",
    "Please cite the date.",
    "Keep it brief.",
    "One line is enough.",
    "Include the source note.",
    "If it is not documented, say so.",
    "Answer from the record only.",
    "I need it for my note.",
    "Be specific.",
    "Quote the value.",
    "No need for detail.",
    "Please double-check.",
    "Use the chart's wording.",
    "Short answer please.",
    "As of the latest encounter.",
    "If unclear, tell me what is missing.",
)


# Other words for the questions whose text is fixed (the templated ones vary by lab, visit or condition).
REWORDINGS = {
    "What was the patient's last recorded blood pressure?": (
        "Latest BP?",
        "Give me the most recent blood pressure reading.",
        "What did the last vitals show for blood pressure?",
        "How was the blood pressure at the last check?",
        "Most recent systolic and diastolic numbers?",
    ),
    "List the medications the patient is currently taking.": (
        "Current med list?",
        "What meds is this patient on right now?",
        "Which drugs are active on the medication list?",
        "Summarize the active prescriptions.",
        "What is on the present medication list?",
    ),
    "Summarize this patient's chronic medical problems.": (
        "What chronic conditions does this patient have?",
        "Give me the problem list.",
        "Which long-term diagnoses are documented?",
        "Outline the ongoing medical issues.",
        "Chronic problems?",
    ),
    "Does the patient smoke?": (
        "Smoking status?",
        "Is there any tobacco use documented?",
        "Is this patient a current or former smoker?",
        "What does the social history say about cigarettes?",
        "Any nicotine use?",
    ),
    "What is the patient's age and sex?": (
        "How old is the patient, and what sex?",
        "Age and gender please.",
        "Give me the demographics: age, sex.",
        "Patient age/sex?",
        "What age and sex does the record list?",
    ),
    "What is the current plan of care according to the latest note?": (
        "What's the plan from the last note?",
        "Summarize the treatment plan documented most recently.",
        "What did the most recent provider plan next?",
        "Next steps per the newest documentation?",
        "What management was decided at the last encounter?",
    ),
    "Translate the plan from the latest note into Spanish for the patient.": (
        "Can you put the latest plan into Spanish for the family?",
        "Spanish translation of the most recent care plan, please.",
        "Write the plan from the last visit in Spanish.",
        "The patient speaks Spanish: translate the newest plan.",
        "Render the last note's plan in plain Spanish.",
    ),
    "Draft a two-sentence summary of the most recent visit for the referring physician.": (
        "Write a brief recap of the last encounter for the referring doctor.",
        "Summarize the latest visit in two sentences for a referral.",
        "Two-line summary of the most recent appointment for the PCP?",
        "Give the referring clinician a short note on the last visit.",
        "Condense the newest encounter into a couple of sentences.",
    ),
    "Calculate the patient's BMI from the most recent weight and height.": (
        "What's the BMI using the latest height and weight?",
        "Compute body mass index from current measurements.",
        "BMI from the last recorded weight/height?",
        "Work out the body mass index.",
        "Using the newest vitals, what is the BMI?",
    ),
    "What CKD stage does the most recent eGFR correspond to?": (
        "Which CKD stage fits the latest eGFR?",
        "Stage the kidney disease from the newest eGFR.",
        "Based on recent kidney function, what CKD stage?",
        "What does the last eGFR imply for CKD staging?",
        "CKD stage by the most recent GFR?",
    ),
}


def vary_question(question: str, f: PatientFacts, rng: np.random.Generator) -> str:
    """`question` in a clinician's framing: other words for a fixed question (`REWORDINGS`), a lead-in
    and a tail, some naming the patient by age and sex."""
    options = (question, *REWORDINGS.get(question, ()))
    question = options[int(rng.integers(0, len(options)))]
    who = f"{f.age_years}-year-old {'woman' if f.gender == 'FEMALE' else 'man'}"
    lead = LEAD_INS[int(rng.integers(0, len(LEAD_INS)))].format(who=who)
    tail = TAILS[int(rng.integers(0, len(TAILS)))]
    if lead and not lead.endswith((":", ";", ",")):
        lead += " "
    body = question[0].lower() + question[1:] if lead.endswith((",", ";")) else question
    return " ".join(part for part in (lead, body, tail) if part)


def rouge_l_tokens(text: str) -> list[str]:
    """The tokens ROUGE-L compares (rouge_score's tokenizer, as `data.describe` counts duplicates)."""
    from rouge_score import tokenize

    return tokenize.tokenize(text, None)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


class DedupGate:
    """The paper's deduplication as a gate: a question is accepted only if its ROUGE-L F with every
    accepted one is at most `threshold` (F = 2·LCS/(m+n); the bag-of-words overlap bounds it first)."""

    def __init__(self, threshold: float = paper.DEDUP_ROUGE_L):
        self.threshold = threshold
        self.kept: list[tuple[list[str], Counter]] = []

    def accepts(self, question: str) -> bool:
        tokens = rouge_l_tokens(question)
        words = Counter(tokens)
        for other, other_words in self.kept:
            total = len(tokens) + len(other)
            # the multiset overlap bounds the LCS: where even it cannot pass, no LCS is computed
            # (a margin: rouge_score's F, computed from P and R in floating point, can land just above)
            if not total or 2 * sum((words & other_words).values()) / total <= self.threshold - 1e-6:
                continue
            if 2 * _lcs(tokens, other) / total > self.threshold - 1e-6:
                return False
        return True

    def add(self, question: str) -> None:
        tokens = rouge_l_tokens(question)
        self.kept.append((tokens, Counter(tokens)))


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
