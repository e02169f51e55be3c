"""A synthetic MedAlign cohort in the release's exact layout, with its planted truth.

`make_cohort` writes what `release.load_release` reads unchanged:

* ``ehrs/<person_id>.xml`` in the LUMIA schema: encounters over years, with visits, conditions
  (ICD-10), drugs (RxNorm), labs and vitals (LOINC, values and units), procedures (SNOMED),
  observations, and notes whose prose mentions the coded facts;
* ``all-instructions-rouge.tsv`` (every instruction), ``clinician-instruction-responses.tsv``
  (reference answers of the gold subset, a share with a second annotator) and
  ``clinician-reviewed-model-responses.tsv`` (six systems' responses, ranks and correctness; a
  subset reviewed by three clinicians);
* ``SYNTHETIC`` (the marker that tells the suite this is not patient data), ``README.md`` and
  ``planted_truth.json`` (every parameter and expected statistic the analyses should recover).

Every reference answer is derived from the generated record (a latest lab value, the current
medication list, a date, a BMI from recorded weight and height, the plan of the latest note), and
its ``evidence`` column lists the entry timestamps where the answer lives, some early in the record
and some late. Record lengths follow a log-normal fitted to the paper: about 80% of records exceed
32k cl100k tokens, none is under 2k. Everything is drawn from vocabularies and templates written in
this module: no real patient text. The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from . import paper
from .parallel import iter_process_map
from .synthetic_labels import (
    TIE_CONVENTION,
    LabelModel,
    expected_inter_rater_tau,
    expected_table3,
    simulate_labels,
)

GENERATOR_VERSION = "2"  # 2: gradable answers planted as values (value, unit, date)

# ------------------------------------------------------------------ vocabularies (illustrative codes)

CONDITIONS = [  # code, name, plan sentence, drugs, labs followed
    (
        "E11.9",
        "Type 2 diabetes mellitus without complications",
        "continue metformin and recheck hemoglobin A1c in 3 months",
        ["metformin"],
        ["4548-4", "2345-7"],
    ),
    (
        "I10",
        "Essential (primary) hypertension",
        "continue lisinopril, low sodium diet, home blood pressure log",
        ["lisinopril", "amlodipine"],
        ["2160-0", "2823-3"],
    ),
    (
        "E78.5",
        "Hyperlipidemia, unspecified",
        "continue atorvastatin and repeat lipid panel in 6 months",
        ["atorvastatin"],
        ["2093-3", "2089-1"],
    ),
    (
        "I48.91",
        "Unspecified atrial fibrillation",
        "continue apixaban for stroke prevention and rate control with metoprolol",
        ["apixaban", "metoprolol"],
        ["2160-0"],
    ),
    (
        "N18.30",
        "Chronic kidney disease, stage 3 unspecified",
        "avoid NSAIDs, renal function panel every 3 months",
        [],
        ["2160-0", "33914-3", "2823-3"],
    ),
    (
        "J44.9",
        "Chronic obstructive pulmonary disease, unspecified",
        "continue tiotropium, albuterol as needed, pulmonary rehab referral",
        ["tiotropium", "albuterol"],
        [],
    ),
    (
        "I50.9",
        "Heart failure, unspecified",
        "continue furosemide, daily weights, fluid restriction 2 liters",
        ["furosemide", "metoprolol"],
        ["30934-4", "2951-2"],
    ),
    (
        "F32.9",
        "Major depressive disorder, single episode, unspecified",
        "continue sertraline and follow up with behavioral health",
        ["sertraline"],
        [],
    ),
    (
        "E03.9",
        "Hypothyroidism, unspecified",
        "continue levothyroxine and check TSH in 6 weeks",
        ["levothyroxine"],
        ["3016-3"],
    ),
    (
        "K21.9",
        "Gastro-esophageal reflux disease without esophagitis",
        "continue omeprazole and avoid late meals",
        ["omeprazole"],
        [],
    ),
    (
        "M17.11",
        "Unilateral primary osteoarthritis, right knee",
        "physical therapy and acetaminophen as needed",
        ["acetaminophen"],
        [],
    ),
    (
        "J45.909",
        "Unspecified asthma, uncomplicated",
        "continue inhaled fluticasone and albuterol as needed",
        ["fluticasone", "albuterol"],
        [],
    ),
    ("G47.33", "Obstructive sleep apnea", "continue CPAP nightly", [], []),
    ("D64.9", "Anemia, unspecified", "start ferrous sulfate and repeat CBC in 4 weeks", ["ferrous sulfate"], ["718-7"]),
]
ACUTE = [
    ("J18.9", "Pneumonia, unspecified organism", "ceftriaxone", "chest X-ray"),
    ("N39.0", "Urinary tract infection, site not specified", "nitrofurantoin", None),
    ("R07.9", "Chest pain, unspecified", None, "12 lead ECG"),
    ("R51.9", "Headache, unspecified", "acetaminophen", "CT of head"),
    ("J06.9", "Acute upper respiratory infection, unspecified", None, None),
    ("S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter", "ibuprofen", "X-ray of ankle"),
]
DRUGS = {  # name -> (RxNorm code, full name)
    "metformin": ("861007", "metformin hydrochloride 500 MG Oral Tablet"),
    "lisinopril": ("314076", "lisinopril 10 MG Oral Tablet"),
    "amlodipine": ("197361", "amlodipine 5 MG Oral Tablet"),
    "atorvastatin": ("617310", "atorvastatin 20 MG Oral Tablet"),
    "apixaban": ("1364445", "apixaban 5 MG Oral Tablet"),
    "metoprolol": ("866924", "metoprolol succinate 25 MG Extended Release Oral Tablet"),
    "tiotropium": ("1552004", "tiotropium 2.5 MCG/ACTUAT Inhalation Spray"),
    "albuterol": ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    "furosemide": ("310429", "furosemide 40 MG Oral Tablet"),
    "sertraline": ("312940", "sertraline 50 MG Oral Tablet"),
    "levothyroxine": ("966222", "levothyroxine sodium 0.05 MG Oral Tablet"),
    "omeprazole": ("198053", "omeprazole 20 MG Delayed Release Oral Capsule"),
    "acetaminophen": ("313782", "acetaminophen 325 MG Oral Tablet"),
    "fluticasone": ("896188", "fluticasone propionate 0.11 MG/ACTUAT Inhalation Aerosol"),
    "ferrous sulfate": ("310325", "ferrous sulfate 325 MG Oral Tablet"),
    "ceftriaxone": ("1665021", "ceftriaxone 1000 MG Injection"),
    "nitrofurantoin": ("1648755", "nitrofurantoin 100 MG Oral Capsule"),
    "ibuprofen": ("197806", "ibuprofen 600 MG Oral Tablet"),
    "ondansetron": ("312086", "ondansetron 4 MG Oral Tablet"),
}
LABS = {  # LOINC -> (name, unit, normal mean, sd, decimals)
    "2345-7": ("Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 98, 14, 0),
    "4548-4": ("Hemoglobin A1c/Hemoglobin.total in Blood", "%", 5.6, 0.4, 1),
    "2160-0": ("Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.95, 0.2, 2),
    "3094-0": ("Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 15, 4, 0),
    "2951-2": ("Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 139, 2.5, 0),
    "2823-3": ("Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 4.2, 0.35, 1),
    "718-7": ("Hemoglobin [Mass/volume] in Blood", "g/dL", 13.6, 1.3, 1),
    "6690-2": ("Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 7.2, 1.8, 1),
    "777-3": ("Platelets [#/volume] in Blood by Automated count", "10*3/uL", 250, 50, 0),
    "2093-3": ("Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 185, 30, 0),
    "2089-1": ("Cholesterol in LDL [Mass/volume] in Serum or Plasma", "mg/dL", 105, 25, 0),
    "3016-3": ("Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 2.1, 0.9, 2),
    "33914-3": ("Glomerular filtration rate/1.73 sq M predicted", "mL/min/{1.73_m2}", 85, 15, 0),
    "30934-4": ("Natriuretic peptide B [Mass/volume] in Serum or Plasma", "pg/mL", 60, 30, 0),
}
LAB_SHORT = {
    "2345-7": "glucose",
    "4548-4": "hemoglobin A1c",
    "2160-0": "creatinine",
    "3094-0": "BUN",
    "2951-2": "sodium",
    "2823-3": "potassium",
    "718-7": "hemoglobin",
    "6690-2": "white blood cell count",
    "777-3": "platelet count",
    "2093-3": "total cholesterol",
    "2089-1": "LDL cholesterol",
    "3016-3": "TSH",
    "33914-3": "eGFR",
    "30934-4": "BNP",
}
# Diseases shift their labs: diabetics have higher glucose and A1c, and so on.
DISEASE_LAB_SHIFT = {
    "E11.9": {"2345-7": 45, "4548-4": 2.0},
    "N18.30": {"2160-0": 0.8, "33914-3": -38},
    "I50.9": {"30934-4": 420},
    "E78.5": {"2093-3": 45, "2089-1": 40},
    "D64.9": {"718-7": -3.0},
}
PANELS = [
    ["2345-7", "2160-0", "3094-0", "2951-2", "2823-3"],
    ["718-7", "6690-2", "777-3"],
    ["2093-3", "2089-1"],
    ["4548-4"],
    ["3016-3"],
    ["33914-3"],
    ["30934-4"],
]
VITALS = [
    ("8867-4", "Heart rate", "/min", 76, 10, 0),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 128, 14, 0),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 78, 9, 0),
    ("8310-5", "Body temperature", "Cel", 36.8, 0.3, 1),
    ("9279-1", "Respiratory rate", "/min", 16, 2, 0),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 97, 1.5, 0),
]
PROCEDURES = {
    "12 lead ECG": "268400002",
    "chest X-ray": "399208008",
    "CT of head": "303653007",
    "X-ray of ankle": "168596005",
    "Echocardiography": "40701008",
    "Colonoscopy": "73761001",
    "MRI of knee": "241615005",
    "Influenza vaccination": "86198006",
}
SMOKING = ["Never smoker", "Former smoker", "Current every day smoker"]
VISIT_KINDS = [  # kind, OMOP code, name, weight, note types
    ("outpatient", "Visit/OP", "Outpatient Visit", 0.55, ["Progress Note"]),
    ("lab", "Visit/OP", "Laboratory Visit", 0.22, []),
    ("telephone", "Visit/OP", "Telephone Encounter", 0.06, ["Telephone Encounter"]),
    ("emergency", "Visit/ER", "Emergency Room Visit", 0.09, ["ED Provider Note"]),
    ("inpatient", "Visit/IP", "Inpatient Visit", 0.08, ["History and Physical", "Progress Note", "Discharge Summary"]),
]
CARE_SITES = [
    ("3001", "Oak Valley Internal Medicine Clinic"),
    ("3002", "Oak Valley Laboratory"),
    ("3003", "Riverside Emergency Department"),
    ("3004", "Riverside Hospital 4 West"),
    ("3005", "Oak Valley Cardiology Clinic"),
    ("3006", "Oak Valley Radiology"),
]
PROVIDER_SPECIALTIES = [
    "Internal Medicine",
    "Family Medicine",
    "Cardiology",
    "Emergency Medicine",
    "Nephrology",
    "Endocrinology",
    "Pulmonology",
    "Hospital Medicine",
]
FIRST_NAMES = ["Avery", "Jordan", "Riley", "Morgan", "Casey", "Quinn", "Rowan", "Emerson", "Harper", "Sawyer"]
LAST_NAMES = ["Alder", "Birch", "Cedar", "Dale", "Elm", "Fenn", "Grove", "Hale", "Ives", "Juniper"]
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
DIFFERENTIALS = {
    "Chest pain, unspecified": "acute coronary syndrome, pulmonary embolism, gastroesophageal reflux, and musculoskeletal pain",
    "Headache, unspecified": "tension headache, migraine, medication overuse headache, and less likely intracranial hemorrhage",
    "Pneumonia, unspecified organism": "community acquired pneumonia, acute bronchitis, and heart failure exacerbation",
    "Urinary tract infection, site not specified": "cystitis, pyelonephritis, and nephrolithiasis",
    "Acute upper respiratory infection, unspecified": "viral upper respiratory infection, allergic rhinitis, and sinusitis",
    "Sprain of unspecified ligament of right ankle, initial encounter": "ankle sprain, fracture of the lateral malleolus, and tendon injury",
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


def fmt_ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def fmt_date(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _num(value: float, decimals: int) -> str:
    return f"{value:.2f}" if decimals else f"{round(value):.2f}"


@dataclass(frozen=True)
class CohortSpec:
    """How big a cohort to make. `full` matches the paper; `default` keeps the shapes, fewer patients."""

    patients: int
    instructions: int
    gold: int
    multi_rated: int
    seed: int = 0
    # log-normal of record length in cl100k tokens: median exp(mu); sigma fitted to 19.6% <= 32k.
    length_log_median: float = 11.657
    length_log_sigma: float = 1.5
    min_tokens: int = 3_000
    max_tokens: int = 2_500_000

    @classmethod
    def for_scale(cls, scale: str = "default", patients: int | None = None, seed: int = 0) -> CohortSpec:
        if scale == "full":
            n = patients or paper.N_PATIENTS
            return cls(n, paper.N_INSTRUCTIONS, paper.N_GOLD, 50, seed)
        if scale == "default":
            n = patients or 24
            # Fewer patients (records are what costs), more instructions per patient (20, the gold
            # 31% of them as in the paper), so the label analyses still have ~150 instructions.
            n_instr = min(paper.N_INSTRUCTIONS, max(12, n * 20))
            n_gold = min(paper.N_GOLD, max(6, round(n_instr * 0.31)))
            return cls(n, n_instr, n_gold, min(50, max(3, n_gold // 6)), seed)
        raise ValueError(f"unknown scale {scale!r}: use 'default' or 'full'")


# ------------------------------------------------------------------ one patient's record

# Roughly 3.2 bytes of this XML per cl100k token (measured on generated records).
BYTES_PER_TOKEN = 3.19


@dataclass
class PatientFacts:
    """What instructions about a patient may ask, each with the entry timestamps it lives at."""

    person_id: str
    birthdate: str
    gender: str
    age_years: int
    first_ts: str
    last_ts: str
    conditions: list  # (code, name, first_ts, plan)
    labs_first: dict  # loinc -> (ts, value, unit)
    labs_last: dict
    bp_last: tuple  # (ts, sys, dia)
    weight_last: tuple  # (ts, kg)
    height_last: tuple  # (ts, cm)
    meds_last: dict  # drug -> ts of last exposure
    visits_last: dict  # visit name -> ts
    smoking_last: tuple  # (ts, status)
    procedure_last: tuple  # (ts, name, impression)
    acute_last: tuple  # (ts, diagnosis, differential, note type)
    last_note: tuple  # (ts, note type, plan text)
    n_events: int = 0
    n_notes: int = 0
    n_bytes: int = 0


def _patient_record(args: tuple) -> tuple[str, bytes, PatientFacts]:
    """Generate one patient's XML and facts (a pure function of seed and index)."""
    seed, index, target_tokens, start_year = args
    rng = np.random.default_rng([seed, 1, index])
    person_id = str(10_000_000 + index * 7919 + int(rng.integers(0, 7919)))
    gender = "FEMALE" if rng.random() < 0.52 else "MALE"
    ethnicity = "Hispanic or Latino" if rng.random() < 0.18 else "Not Hispanic or Latino"
    race = ["White", "Asian", "Black or African American", "Other Race"][int(rng.choice(4, p=[0.55, 0.25, 0.08, 0.12]))]
    age0 = int(rng.integers(25, 80))
    target_bytes = int(target_tokens * BYTES_PER_TOKEN)
    years = float(np.clip(1.5 + math.log10(max(target_tokens, 3000) / 3000) * 3.2 + rng.normal(0, 1.0), 1.0, 16.0))
    start = datetime(start_year, 1, 1) + timedelta(days=int(rng.integers(0, 365)))
    end = start + timedelta(days=int(years * 365))
    birth = start - timedelta(days=age0 * 365 + int(rng.integers(0, 365)))
    n_chronic = int(rng.integers(2, 6))
    chronic_idx = rng.choice(len(CONDITIONS), size=n_chronic, replace=False)
    # Onsets: the first at the start, the others spread over the record.
    onsets = sorted(
        [start]
        + [start + timedelta(days=int(rng.integers(0, max(1, (end - start).days)))) for _ in range(n_chronic - 1)]
    )
    conditions = [(CONDITIONS[i], onsets[k]) for k, i in enumerate(chronic_idx)]
    weight = float(rng.normal(82 if gender == "MALE" else 70, 14))
    height = float(rng.normal(176 if gender == "MALE" else 163, 7))
    smoking = SMOKING[int(rng.choice(3, p=[0.55, 0.3, 0.15]))]
    providers = [
        (str(5000 + int(rng.integers(0, 900))), PROVIDER_SPECIALTIES[int(rng.integers(0, len(PROVIDER_SPECIALTIES)))])
        for _ in range(4)
    ]
    provider_names = [
        f"{FIRST_NAMES[int(rng.integers(0, 10))]} {LAST_NAMES[int(rng.integers(0, 10))]}, MD" for _ in range(4)
    ]

    # The visit schedule: enough encounters to reach the byte target.
    kinds_p = np.array([k[3] for k in VISIT_KINDS])
    out: list[str] = [f'<eventstream person_id="{person_id}">\n']
    size = len(out[0])
    facts = PatientFacts(person_id, fmt_date(birth), gender, 0, "", "", [], {}, {}, (), (), (), {}, {}, (), (), (), ())
    for c, _onset in conditions:
        facts.conditions.append((c[0], c[1], None, c[2]))
    n_events = n_notes = 0
    t = start
    span_days = max(1, (end - start).days)
    # Encounter spacing from the byte target: about 2.3 kB per encounter on average.
    n_enc_expected = max(3, target_bytes // 2300)
    mean_gap = span_days / n_enc_expected
    enc = 0
    lab_state = {}
    while size < target_bytes or enc < 3:
        kind_i = int(rng.choice(len(VISIT_KINDS), p=kinds_p)) if enc else 0
        if target_bytes - size < 60_000 and VISIT_KINDS[kind_i][0] == "inpatient":
            kind_i = 0  # near the target, a multi-day stay would overshoot it by far
        kind, vcode, vname, _, note_types = VISIT_KINDS[kind_i]
        t = t + timedelta(minutes=int(rng.exponential(mean_gap) * 1440) + 30)
        t = t.replace(minute=(t.minute // 5) * 5, second=0, microsecond=0)
        if t.hour < 7 or t.hour > 19:
            t = t.replace(hour=int(rng.integers(8, 17)))
        active = [(c, onset) for c, onset in conditions if onset <= t]
        acute = ACUTE[int(rng.integers(0, len(ACUTE)))] if kind in ("emergency", "inpatient") else None
        stay_days = int(rng.integers(2, 6)) if kind == "inpatient" else 0
        t_end = t + timedelta(days=stay_days, hours=1 if kind != "inpatient" else 0)
        prov_i = int(rng.integers(0, 4))
        site = CARE_SITES[{"outpatient": 0, "lab": 1, "telephone": 0, "emergency": 2, "inpatient": 3}[kind]]
        age_days = (t - birth).days
        parts = [
            f'<encounter start_timestamp="{fmt_ts(t)}" end_timestamp="{fmt_ts(t_end)}">\n'
            f"<person><birthdate>{fmt_date(birth)}</birthdate><age><days>{age_days}</days><years>{age_days // 365}</years></age>"
            f"<demographics><ethnicity>{ethnicity}</ethnicity><gender>{gender}</gender><race>{race}</race></demographics>"
            f"<payerplan>{'Medicare' if age_days > 65 * 365 else 'Commercial'}</payerplan></person>\n"
            f'<caresites><caresite care_site_id="{site[0]}" care_site_name="{site[1]}"/></caresites>\n'
            f'<providers><provider provider_id="{providers[prov_i][0]}" gender="" speciality="{providers[prov_i][1]}" '
            f'year_of_birth="{1950 + prov_i * 7}" care_site_name="{site[1]}"/></providers>\n<events>\n'
        ]
        pid_attr = f'provider_id="{providers[prov_i][0]}" care_site_id="{site[0]}"'

        def entry(ts: datetime, events: list[str]) -> None:
            nonlocal n_events
            n_events += len(events)
            facts.last_ts = max(facts.last_ts, fmt_ts(ts))
            parts.append(f'<entry timestamp="{fmt_ts(ts)}">\n' + "".join(events) + "</entry>\n")

        def ev(etype, code, name, value="", unit=""):
            # Provider and care site only where they matter (visits, notes): keeps records compact.
            u = f' unit="{unit}"' if unit else ""
            who = f" {pid_attr}" if etype.startswith("visit") else ""
            return f'<event type="{etype}" code="{code}" name="{_xml_escape(name)}"{u}{who}>{value}</event>\n'

        entry(t, [ev("visit", vcode, vname), ev("visit_detail", f"CARE_SITE/{site[0]}", site[1])])
        facts.visits_last[vname] = fmt_ts(t)
        days = [t + timedelta(days=d, hours=2 * d % 5) for d in range(stay_days + 1)]
        vitals_today = {}
        labs_today = {}
        meds_today = []
        t_v = t
        for d_i, day in enumerate(days):
            t_v = day + timedelta(minutes=10)
            if kind != "lab" and kind != "telephone":
                evs = []
                for code, name, unit, mean, sd, dec in VITALS:
                    shift = 12 if (code == "8480-6" and any(c[0] == "I10" for c, _ in active)) else 0
                    val = rng.normal(mean + shift, sd)
                    vitals_today[code] = (t_v, round(val, dec))
                    evs.append(ev("measurement", f"LOINC/{code}", name, _num(val, dec), unit))
                weight += rng.normal(0, 0.6)
                evs.append(ev("measurement", "LOINC/29463-7", "Body weight", f"{weight:.2f}", "kg"))
                vitals_today["29463-7"] = (t_v, round(weight, 1))
                facts.weight_last = (fmt_ts(t_v), round(weight, 1))
                if enc % 4 == 0:
                    evs.append(ev("measurement", "LOINC/8302-2", "Body height", f"{height:.2f}", "cm"))
                    facts.height_last = (fmt_ts(t_v), round(height, 1))
                facts.bp_last = (
                    fmt_ts(t_v),
                    int(round(vitals_today["8480-6"][1])),
                    int(round(vitals_today["8462-4"][1])),
                )
                if kind == "inpatient":
                    # Inpatient days chart vitals every two hours and record each dose given: most
                    # of a real record's events are of this kind.
                    inpatient_drugs = sorted(
                        {d for c, _ in active for d in c[3]} | ({acute[2]} if acute and acute[2] else set())
                    )
                    for h in range(1, 24, 2):
                        t_h = day + timedelta(hours=h)
                        evs_h = [
                            ev("measurement", f"LOINC/{c}", n, _num(rng.normal(m, s), dc), u)
                            for c, n, u, m, s, dc in VITALS
                        ]
                        if h % 6 == 1:
                            evs_h += [
                                ev("drug_exposure", f"RxNorm/{DRUGS[d][0]}", DRUGS[d][1]) for d in inpatient_drugs
                            ]
                        entry(t_h, evs_h)
                entry(t_v, evs)
            if kind in ("outpatient", "lab", "inpatient", "emergency") and (kind != "outpatient" or rng.random() < 0.6):
                t_l = day + timedelta(minutes=40)
                wanted = {"2345-7", "718-7"} | {lab for c, _ in active for lab in c[4]}
                evs = []
                for panel in PANELS:
                    if wanted.intersection(panel) or (kind != "outpatient" and panel in PANELS[:2]):
                        for code in panel:
                            name, unit, mean, sd, dec = LABS[code]
                            shift = sum(DISEASE_LAB_SHIFT.get(c[0], {}).get(code, 0) for c, _ in active)
                            drift = lab_state.get(code, 0.0) * 0.6 + rng.normal(0, sd * 0.5)
                            lab_state[code] = drift
                            val = max(0.1, mean + shift + drift)
                            val = round(val, dec)
                            evs.append(ev("measurement", f"LOINC/{code}", name, _num(val, dec), unit))
                            labs_today[code] = (t_l, val, unit)
                            facts.labs_last[code] = (fmt_ts(t_l), val, unit)
                            facts.labs_first.setdefault(code, (fmt_ts(t_l), val, unit))
                if evs:
                    entry(t_l, evs)
            if kind in ("outpatient", "emergency", "inpatient") and d_i == 0:
                t_c = t + timedelta(minutes=20)
                evs = []
                for c, _onset in active:
                    evs.append(ev("condition", f"ICD10CM/{c[0]}", c[1]))
                    for k, (code, name, first, plan) in enumerate(facts.conditions):
                        if code == c[0] and first is None:
                            facts.conditions[k] = (code, name, fmt_ts(t_c), plan)
                if acute:
                    evs.append(ev("condition", f"ICD10CM/{acute[0]}", acute[1]))
                for c, _onset in active:
                    for drug in c[3]:
                        rx, full = DRUGS[drug]
                        evs.append(ev("drug_exposure", f"RxNorm/{rx}", full))
                        meds_today.append(drug)
                        facts.meds_last[drug] = fmt_ts(t_c)
                if acute and acute[2]:
                    rx, full = DRUGS[acute[2]]
                    evs.append(ev("drug_exposure", f"RxNorm/{rx}", full))
                    meds_today.append(acute[2])
                if rng.random() < 0.3:
                    evs.append(ev("observation", "LOINC/72166-2", "Tobacco smoking status", smoking))
                    facts.smoking_last = (fmt_ts(t_c), smoking)
                evs.append(
                    ev("observation", "LOINC/38208-5", "Pain severity - Reported", f"{int(rng.integers(0, 8)):.2f}")
                )
                entry(t_c, evs)
            if acute and acute[3] and d_i == 0:
                t_p = t + timedelta(minutes=55)
                impression = {
                    "12 lead ECG": "normal sinus rhythm without acute ST changes",
                    "chest X-ray": "patchy right lower lobe opacity",
                    "CT of head": "no acute intracranial abnormality",
                    "X-ray of ankle": "soft tissue swelling without fracture",
                }[acute[3]]
                entry(t_p, [ev("procedure", f"SNOMED/{PROCEDURES[acute[3]]}", acute[3])])
                facts.procedure_last = (fmt_ts(t_p), acute[3], impression)
                if kind == "emergency" or rng.random() < 0.5:
                    report = (
                        f"{acute[3].upper()} REPORT. Indication: {acute[1].lower()}. Comparison: none available. "
                        f"Findings and impression: {impression}. Electronically signed by the reading physician."
                    )
                    parts.append(
                        f'<entry timestamp="{fmt_ts(t_p + timedelta(minutes=30))}">\n'
                        f'<event type="note" code="" name="Radiology Report" note_id="{person_id}{enc:05d}9" {pid_attr}>'
                        f"{_xml_escape(report)}</event>\n</entry>\n"
                    )
                    n_events += 1
                    n_notes += 1
                    facts.last_ts = max(facts.last_ts, fmt_ts(t_p + timedelta(minutes=30)))
            elif kind == "outpatient" and rng.random() < 0.04:
                proc = ["Echocardiography", "Colonoscopy", "MRI of knee", "Influenza vaccination"][
                    int(rng.integers(0, 4))
                ]
                t_p = t + timedelta(minutes=55)
                entry(t_p, [ev("procedure", f"SNOMED/{PROCEDURES[proc]}", proc)])
        # Notes: prose that mentions the coded facts of this encounter.
        age_years = age_days // 365
        if kind == "outpatient" and rng.random() < 0.25:
            note_types = []  # not every clinic visit has a note in the extract
        for n_i, ntype in enumerate(
            note_types if kind != "inpatient" else note_types[:1] + ["Progress Note"] * stay_days + note_types[2:]
        ):
            t_n = t + timedelta(hours=1 + n_i * 24 if kind == "inpatient" else 1)
            if t_n > t_end + timedelta(hours=2):
                t_n = t_end
            problems = ", ".join(c[1].lower() for c, _ in active) or "no chronic conditions"
            meds = ", ".join(sorted(set(meds_today))) or "no current medications"
            sentences = [
                f"{ntype}. {provider_names[prov_i]}, {providers[prov_i][1]}.",
                f"Patient is a {age_years}-year-old {'woman' if gender == 'FEMALE' else 'man'} with a history of {problems}.",
            ]
            if acute:
                sentences.append(f"Presents with symptoms consistent with {acute[1].lower()}.")
            if kind == "telephone":
                sentences.append(
                    "Called to review recent results and medication questions. Patient reports feeling well overall."
                )
            if "8480-6" in vitals_today:
                sentences.append(
                    f"Vitals: blood pressure {int(vitals_today['8480-6'][1])}/{int(vitals_today['8462-4'][1])}, "
                    f"heart rate {int(vitals_today['8867-4'][1])}, weight {vitals_today['29463-7'][1]} kg."
                )
            if labs_today:
                code = sorted(labs_today)[int(rng.integers(0, len(labs_today)))]
                sentences.append(f"Labs notable for {LAB_SHORT[code]} {labs_today[code][1]} {labs_today[code][2]}.")
            sentences.append(f"Current medications: {meds}.")
            sentences.append(f"Social history: {smoking.lower()}.")
            plan_bits = [f"{c[1]}: {c[2]}." for c, _ in active]
            if acute:
                diff = DIFFERENTIALS[acute[1]]
                sentences.append(f"Assessment: differential includes {diff}.")
                plan_bits.append(
                    f"{acute[1]}: {'treat with ' + acute[2] if acute[2] else 'supportive care'} and return precautions."
                )
                facts.acute_last = (fmt_ts(t_n), acute[1], diff, ntype)
            plan = " ".join(plan_bits) or "Routine health maintenance."
            sentences.append("Plan: " + plan)
            # Filler of the kind real notes carry (review of systems, exam), sized by note type.
            reps = {"History and Physical": 6, "Discharge Summary": 5, "ED Provider Note": 4, "Progress Note": 3}.get(
                ntype, 1
            )
            sentences.extend(_ROS[int(j)] for j in rng.choice(len(_ROS), size=reps, replace=False))
            if ntype == "Discharge Summary":
                sentences.append(
                    f"Discharge instructions: take {meds} as directed, follow up in clinic in 1 week, "
                    "return for fever, chest pain or shortness of breath."
                )
            text = " ".join(sentences)
            parts.append(
                f'<entry timestamp="{fmt_ts(t_n)}">\n<event type="note" code="" name="{ntype}" '
                f'note_id="{person_id}{enc:05d}{n_i}" {pid_attr}>{_xml_escape(text)}</event>\n</entry>\n'
            )
            n_events += 1
            n_notes += 1
            facts.last_ts = max(facts.last_ts, fmt_ts(t_n))
            facts.last_note = (fmt_ts(t_n), ntype, plan)
        parts.append("</events>\n</encounter>\n")
        chunk = "".join(parts)
        out.append(chunk)
        size += len(chunk)
        if not facts.first_ts:
            facts.first_ts = fmt_ts(t)
        enc += 1
    out.append("</eventstream>\n")
    facts.age_years = (t - birth).days // 365
    facts.n_events, facts.n_notes = n_events, n_notes
    data = "".join(out).encode("utf-8")
    facts.n_bytes = len(data)
    return person_id, data, facts


_ROS = [
    "Review of systems: negative for fever, chills, chest pain and shortness of breath except as noted.",
    "Physical exam: alert and oriented, no acute distress, lungs clear to auscultation bilaterally.",
    "Cardiovascular exam: regular rate and rhythm, no murmurs, rubs or gallops.",
    "Abdomen soft, non-tender, non-distended, normal bowel sounds.",
    "Extremities without edema; distal pulses intact.",
    "Neurologic exam: cranial nerves grossly intact, strength 5/5 in all extremities.",
    "Skin warm and dry without rash.",
    "Medication reconciliation completed with the patient; allergies reviewed: no known drug allergies.",
    "Patient counseled on diet, exercise and medication adherence; questions answered.",
    "Care coordinated with nursing and pharmacy; patient agrees with the plan.",
]


def record_lengths(spec: CohortSpec) -> np.ndarray:
    """Target length of each record in cl100k tokens (log-normal, clipped)."""
    rng = np.random.default_rng([spec.seed, 0])
    draws = rng.lognormal(spec.length_log_median, spec.length_log_sigma, size=spec.patients)
    return np.clip(draws, spec.min_tokens, spec.max_tokens).astype(int)


# ------------------------------------------------------------------ instructions and answers


def _value(value, unit: str | None = None, date: str | None = None) -> dict:
    """The answer of a gradable instruction as data: what an answer must state, its unit and date."""
    return {"value": str(value), "unit": unit, "date": date}


def _instruction(
    kind: str, f: PatientFacts, rng: np.random.Generator
) -> tuple[str, str, list[str], dict | None] | None:
    """(question, reference answer, evidence timestamps, planted value) for one kind, or None if the
    record lacks it. The planted value is set for the kinds whose answer is one value of the record
    (`synthetic_grading.GRADABLE_KINDS`); grading reads it, never the reference's wording."""
    if kind in ("latest_lab", "first_lab"):
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
        return q, f"The {which} {LAB_SHORT[code]} was {val} {unit}, on {ts[:10]}.", [ts], _value(val, unit, ts[:10])
    if kind == "latest_bp":
        if not f.bp_last:
            return None
        ts, s, d = f.bp_last
        return ("What was the patient's last recorded blood pressure?",
                f"The last recorded blood pressure was {s}/{d} mm Hg on {ts[:10]}.", [ts],
                _value(f"{s}/{d}", "mm Hg", ts[:10]))  # fmt: skip
    if kind == "current_meds":
        if not f.meds_last:
            return None
        last = max(f.meds_last.values())
        current = sorted(d for d, ts in f.meds_last.items() if ts == last)
        return ("List the medications the patient is currently taking.",
                "Current medications: " + ", ".join(DRUGS[d][1] for d in current) + ".", [last], None)  # fmt: skip
    if kind == "last_visit":
        name = sorted(f.visits_last)[int(rng.integers(0, len(f.visits_last)))]
        ts = f.visits_last[name]
        return (f"When was the patient's last {name.lower()}?",
                f"The last {name.lower()} was on {ts[:10]}.", [ts], _value(ts[:10], None, ts[:10]))  # fmt: skip
    if kind == "first_diagnosis":
        known = [c for c in f.conditions if c[2]]
        if not known:
            return None
        code, name, ts, _ = known[int(rng.integers(0, len(known)))]
        return (f"When was {name.split(',')[0].lower()} first documented?",
                f"{name} ({code}) was first documented on {ts[:10]}.", [ts],
                _value(ts[:10], None, ts[:10]))  # fmt: skip
    if kind == "problem_summary":
        known = [c for c in f.conditions if c[2]]
        if not known:
            return None
        items = "; ".join(f"{name} since {ts[:10]}" for code, name, ts, _ in known)
        return ("Summarize this patient's chronic medical problems.", f"Chronic problems: {items}.",
                [c[2] for c in known], None)  # fmt: skip
    if kind == "smoking":
        if not f.smoking_last:
            return None
        ts, status = f.smoking_last
        return ("Does the patient smoke?",
                f"Smoking status is documented as {status.lower()} (last on {ts[:10]}).", [ts],
                _value(status.lower(), None, ts[:10]))  # fmt: skip
    if kind == "demographics":
        sex = "female" if f.gender == "FEMALE" else "male"
        return ("What is the patient's age and sex?",
                f"The patient is a {f.age_years}-year-old {sex} (born {f.birthdate}).", [f.last_ts],
                _value(f.age_years, "years", f.last_ts[:10]))  # fmt: skip
    if kind == "last_procedure":
        if not f.procedure_last:
            return None
        ts, name, impression = f.procedure_last
        return (f"What did the most recent {name} show?",
                f"The {name} on {ts[:10]} showed {impression}.", [ts],
                _value(impression.rstrip("."), None, ts[:10]))  # fmt: skip
    if kind in ("plan", "translate", "last_visit_summary"):  # the three kinds about the latest note
        if not f.last_note:
            return None
        ts, ntype, plan = f.last_note
        if kind == "plan":
            return ("What is the current plan of care according to the latest note?",
                    f"Per the {ntype.lower()} of {ts[:10]}: {plan}", [ts], None)  # fmt: skip
        if kind == "translate":
            spanish = " ".join(SPANISH.get(w.lower().strip(".,"), w) for w in plan.split())
            return (
                "Translate the plan from the latest note into Spanish for the patient.",
                f"Plan: {spanish}",
                [ts],
                None,
            )
        return ("Draft a two-sentence summary of the most recent visit for the referring physician.",
                f"The patient was last seen on {ts[:10]} ({ntype.lower()}). {plan}", [ts], None)  # fmt: skip
    if kind == "bmi":
        if not f.weight_last or not f.height_last:
            return None
        (tw, w), (th, h) = f.weight_last, f.height_last
        bmi = w / (h / 100) ** 2
        return ("Calculate the patient's BMI from the most recent weight and height.",
                f"BMI is {bmi:.1f} kg/m2 (weight {w} kg, height {h} cm).", sorted({tw, th}),
                _value(f"{bmi:.1f}", "kg/m2", max(tw, th)[:10]))  # fmt: skip
    if kind == "egfr_stage":
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
        return ("What CKD stage does the most recent eGFR correspond to?",
                f"The most recent eGFR was {val} mL/min/1.73m2 on {ts[:10]}, which corresponds to CKD stage {stage}.",
                [ts], _value(stage, None, ts[:10]))  # fmt: skip
    if kind == "differential":
        if not f.acute_last:
            return None
        ts, dx, diff, _ = f.acute_last
        return (f"Given the presentation documented on {ts[:10]}, what is a reasonable differential diagnosis?",
                f"For {dx.lower()}, the differential includes {diff}.", [ts], None)  # fmt: skip
    raise ValueError(kind)


def _category_counts(n: int, column: str) -> dict[str, int]:
    """Split n instructions over the paper's categories in Table 2's proportions (largest remainder)."""
    t = paper.TABLE2.set_index("category")[column]
    raw = t / t.sum() * n
    counts = np.floor(raw).astype(int)
    rest = n - counts.sum()
    for cat in (raw - counts).sort_values(ascending=False).index[:rest]:
        counts[cat] += 1
    return counts.to_dict()


def _perturb_answer(reference: str, quality: float, correct: bool, style: int, rng: np.random.Generator) -> str:
    """A system's response: close to the reference when quality is high, drifting when low; wrong
    facts when incorrect. Closeness follows quality with noise, so metrics agree with clinicians
    positively but imperfectly."""
    words = reference.split()
    keep = float(np.clip(0.55 + 0.18 * quality + rng.normal(0, 0.15), 0.15, 1.0))
    kept = [w for w in words if rng.random() < keep] or words[:1]
    if not correct:
        mode = int(rng.integers(0, 3))
        if mode == 0:
            kept = ["I could not find this information in the provided EHR."]
        else:
            out = []
            for w in kept:
                digits = "".join(ch for ch in w if ch.isdigit())
                if digits and rng.random() < 0.7:
                    w = w.replace(digits[-1], str((int(digits[-1]) + int(rng.integers(1, 9))) % 10), 1)
                out.append(w)
            kept = out
            if mode == 2:
                kept = kept[: max(2, len(kept) // 2)] + ["though", "this", "is", "uncertain."]
    prefix = ["", "Based on the EHR, ", "According to the record, ", "Answer: ", "", "The EHR indicates that "][
        style % 6
    ]
    filler_n = int(np.clip(rng.normal(4 - quality * 2, 2), 0, 12))
    filler = " ".join(
        _FILLER[int(j)] for j in rng.choice(len(_FILLER), size=min(filler_n, len(_FILLER)), replace=False)
    )
    return (prefix + " ".join(kept) + (" " + filler if filler else "")).strip()


_FILLER = [
    "Please consult the treating physician.",
    "Further evaluation may be needed.",
    "This should be confirmed clinically.",
    "Other details are not available.",
    "The record contains several related entries.",
    "Follow-up is recommended.",
    "No other abnormalities were noted.",
    "Clinical correlation is advised.",
    "The patient should discuss this with their care team.",
    "This is based on the available documentation.",
    "Trends over time may also be relevant.",
    "Some information may be missing from the record.",
]


def _paraphrase(reference: str, rng: np.random.Generator) -> str:
    swaps = {"was": "is", "The": "Their", "on": "dated", "documented": "recorded", "includes": "would include"}
    return " ".join(swaps.get(w, w) if rng.random() < 0.5 else w for w in reference.split())


# ------------------------------------------------------------------ writing the release


def _tsv(path: Path, header: list[str], rows: list[list]) -> None:
    def clean(v) -> str:
        return str(v).replace("\t", " ").replace("\n", " ").replace("\r", " ")

    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for r in rows:
            f.write("\t".join(clean(v) for v in r) + "\n")


def make_cohort(
    out: str | Path,
    spec: CohortSpec,
    workers: int | None = None,
    progress: bool = True,
    label_model: LabelModel | None = None,
) -> dict:
    """Write a synthetic release to `out` and return its planted truth (label model: the default
    `LabelModel` unless given)."""
    label_model = label_model or LabelModel()
    out = Path(out)
    ehr_dir = out / "ehrs"
    ehr_dir.mkdir(parents=True, exist_ok=True)
    for old in ehr_dir.glob("*.xml"):
        old.unlink()
    lengths = record_lengths(spec)
    start_years = np.random.default_rng([spec.seed, 2]).integers(2008, 2016, size=spec.patients)
    jobs = [(spec.seed, i, int(lengths[i]), int(start_years[i])) for i in range(spec.patients)]
    facts: list[PatientFacts] = [None] * spec.patients  # type: ignore[list-item]
    # Records are written as they come, so memory holds one record per worker, not the cohort.
    for i, (pid, data, f) in iter_process_map(
        _patient_record, jobs, workers, size=lambda j: j[2], desc="synthesizing EHRs", unit="patient", progress=progress
    ):
        (ehr_dir / f"{pid}.xml").write_bytes(data)
        facts[i] = f

    truth = _write_tables(out, spec, facts, label_model)
    truth["records"] = {
        "patients": spec.patients,
        "events": int(sum(f.n_events for f in facts)),
        "notes": int(sum(f.n_notes for f in facts)),
        "xml_bytes": int(sum(f.n_bytes for f in facts)),
        "target_tokens": {f.person_id: int(n) for f, n in zip(facts, lengths)},
        "length_model": {
            "distribution": "lognormal (cl100k tokens)",
            "log_median": spec.length_log_median,
            "log_sigma": spec.length_log_sigma,
            "min": spec.min_tokens,
            "max": spec.max_tokens,
            "bytes_per_token": BYTES_PER_TOKEN,
        },
    }
    (out / "planted_truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    from .release import SYNTHETIC_MARKER, find_layout, synthetic_marker

    (out / SYNTHETIC_MARKER).unlink(missing_ok=True)
    (out / SYNTHETIC_MARKER).write_text(synthetic_marker(find_layout(out, []).fingerprint()))
    (out / "README.md").write_text(_readme(spec, truth))
    return truth


def _write_tables(out: Path, spec: CohortSpec, facts: list[PatientFacts], label_model: LabelModel) -> dict:
    rng = np.random.default_rng([spec.seed, 3])
    # Choose instruction kinds per category (Table 2 proportions), gold first.
    gold_counts = _category_counts(spec.gold, "gold")
    all_counts = _category_counts(spec.instructions, "all")
    # A small cohort with many gold instructions: every category needs room for its gold ones;
    # the room is taken from the largest category so the total stays as asked.
    for cat, g in gold_counts.items():
        short = g - all_counts[cat]
        if short > 0:
            all_counts[cat] = g
            all_counts["Retrieve & Summarize"] -= short
    if all_counts["Retrieve & Summarize"] < gold_counts["Retrieve & Summarize"]:
        raise ValueError(f"{spec.instructions} instructions cannot hold {spec.gold} gold ones in Table 2's proportions")
    plan = []
    for cat, n_all in all_counts.items():
        n_gold = min(gold_counts.get(cat, 0), n_all)
        plan += [(cat, True)] * n_gold + [(cat, False)] * (n_all - n_gold)
    instructions = []
    used_ids = set()
    for cat, gold in plan:
        for _ in range(50):  # find a patient whose record holds this kind of fact
            sub, kind = CATEGORY_KINDS[cat][int(rng.integers(0, len(CATEGORY_KINDS[cat])))]
            f = facts[int(rng.integers(0, len(facts)))]
            made = _instruction(kind, f, rng)
            if made:
                break
        else:
            raise RuntimeError(f"no record supports a {cat} instruction")
        iid = int(rng.integers(1_000_000_000, 9_999_999_999))
        while iid in used_ids:
            iid += 1
        used_ids.add(iid)
        q, answer, evidence, value = made
        instructions.append(
            {
                "instruction_id": str(iid),
                "person_id": f.person_id,
                "question": q,
                "category": cat,
                "subcategory": sub,
                "kind": kind,
                "gold": gold,
                "answer": answer,
                "value": value,
                "evidence": "; ".join(evidence),
                "specialty": SPECIALTIES[int(rng.integers(0, len(SPECIALTIES)))],
            }
        )
    order = rng.permutation(len(instructions))
    instructions = [instructions[i] for i in order]

    _tsv(
        out / "all-instructions-rouge.tsv",
        [
            "instruction_id",
            "person_id",
            "question",
            "category",
            "human_assigned_subcategory_1",
            "submitter_specialty",
            "max_rouge_l_to_other",
        ],
        [
            [
                r["instruction_id"],
                r["person_id"],
                r["question"],
                r["category"],
                r["subcategory"],
                r["specialty"],
                f"{rng.uniform(0.1, 0.69):.3f}",
            ]
            for r in instructions
        ],
    )

    gold = [r for r in instructions if r["gold"]]
    ref_rows = []
    second = set(rng.choice(len(gold), size=len(gold) // 4, replace=False).tolist()) if gold else set()
    for k, r in enumerate(gold):
        for a, text in enumerate([r["answer"]] + ([_paraphrase(r["answer"], rng)] if k in second else []), start=1):
            ref_rows.append(
                [
                    r["instruction_id"],
                    r["person_id"],
                    r["question"],
                    f"Annotator_{a}",
                    text,
                    r["evidence"],
                    f"{r['person_id']}.xml",
                    r["specialty"],
                    "yes",
                    "yes",
                ]
            )
    _tsv(
        out / "clinician-instruction-responses.tsv",
        [
            "instruction_id",
            "person_id",
            "question",
            "annotator_num",
            "clinician_response",
            "evidence",
            "filename",
            "submitter_specialty",
            "is_applicable",
            "is_sufficient",
        ],
        ref_rows,
    )

    n_raters = 3
    sim = simulate_labels(label_model, len(gold), np.random.default_rng([spec.seed, 4]), n_raters=n_raters)
    multi = set(
        np.random.default_rng([spec.seed, 5])
        .choice(len(gold), size=min(spec.multi_rated, len(gold)), replace=False)
        .tolist()
    )
    resp_rows = []
    style_rng = np.random.default_rng([spec.seed, 6])
    for k, r in enumerate(gold):
        texts = [
            _perturb_answer(r["answer"], float(sim.latent[k, m]), bool(sim.base_correct[k, m]), m, style_rng)
            for m in range(len(label_model.models))
        ]
        for rater in range(n_raters if k in multi else 1):
            for m, model in enumerate(label_model.models):
                resp_rows.append(
                    [
                        r["instruction_id"],
                        r["question"],
                        r["person_id"],
                        f"{r['person_id']}.xml",
                        r["answer"],
                        r["evidence"],
                        model,
                        texts[m],
                        f"{sim.rank[rater, k, m]:g}",  # averaged ties: 2.5
                        int(sim.correct[rater, k, m]),
                        "yes",
                        r["specialty"],
                        f"Annotator_{rater + 1}",
                    ]
                )
    _tsv(
        out / "clinician-reviewed-model-responses.tsv",
        (
            "instruction_id question person_id filename clinician_response evidence model_name model_response "
            "model_rank binary_correct is_used_eval submitter_specialty annotator_num"
        ).split(),
        resp_rows,
    )

    # Planted truth: the label model, its expected statistics, and per-instruction facts.
    early_late = []
    for r in instructions:
        f = next(x for x in facts if x.person_id == r["person_id"])
        ts0, ts1 = datetime.strptime(f.first_ts, "%Y-%m-%d %H:%M"), datetime.strptime(f.last_ts, "%Y-%m-%d %H:%M")
        ev = datetime.strptime(r["evidence"].split("; ")[0], "%Y-%m-%d %H:%M")
        early_late.append((ev - ts0) / max(ts1 - ts0, timedelta(minutes=1)))
    return {
        "generator": {
            "name": "medalign_utils.synthetic",
            "version": GENERATOR_VERSION,
            "seed": spec.seed,
            "spec": spec.__dict__,
        },
        "label_model": {**label_model.to_dict(), "tie_convention": TIE_CONVENTION},
        "expected_table3": expected_table3(label_model),
        "expected_inter_rater_tau": round(expected_inter_rater_tau(label_model), 4),
        "instructions": {
            "total": len(instructions),
            "gold": len(gold),
            "multi_rated": len(multi),
            "categories_all": all_counts,
            "categories_gold": gold_counts,
            "evidence_position_quantiles": np.quantile(early_late, [0.1, 0.25, 0.5, 0.75, 0.9]).round(3).tolist(),
        },
        # Each reviewed response's latent quality (what its text and its clinician ranks follow):
        # the planted signal a test judge scores from (`synthetic_judge`).
        "response_quality": {
            r["instruction_id"]: {m: round(float(sim.latent[k, j]), 4) for j, m in enumerate(label_model.models)}
            for k, r in enumerate(gold)
        },
        "answers": {
            r["instruction_id"]: {
                "kind": r["kind"],
                "answer": r["answer"],
                "evidence": r["evidence"],
                "value": r["value"],
            }
            for r in instructions
        },
    }


def _readme(spec: CohortSpec, truth: dict) -> str:
    rec = truth["records"]
    return f"""# Synthetic MedAlign cohort

Made by `medalign synth` (medalign_utils.synthetic, generator version {GENERATOR_VERSION}), seed {spec.seed}.
Nothing here comes from a patient: records, notes, instructions and answers are drawn from vocabularies
and templates written in the project.

- {rec["patients"]} patients, {rec["events"]:,} events, {rec["notes"]:,} notes, {rec["xml_bytes"] / 1e6:.1f} MB of LUMIA XML in `ehrs/`.
- {truth["instructions"]["total"]} instructions in `all-instructions-rouge.tsv`; {truth["instructions"]["gold"]} with clinician
  reference answers (`clinician-instruction-responses.tsv`) and six systems' responses
  (`clinician-reviewed-model-responses.tsv`), {truth["instructions"]["multi_rated"]} of them reviewed by three clinicians
  (`annotator_num`).
- Reference answers are derived from the records; `evidence` lists the entry timestamps where each answer lives.
- `planted_truth.json` holds the label model, the expected Table 3 statistics under it (Monte Carlo), the expected
  inter-rater Kendall's tau, and each instruction's answer kind: what the analyses should recover.
"""
