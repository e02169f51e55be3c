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

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

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


DIFFERENTIALS = {
    "Chest pain, unspecified": "acute coronary syndrome, pulmonary embolism, gastroesophageal reflux, and musculoskeletal pain",
    "Headache, unspecified": "tension headache, migraine, medication overuse headache, and less likely intracranial hemorrhage",
    "Pneumonia, unspecified organism": "community acquired pneumonia, acute bronchitis, and heart failure exacerbation",
    "Urinary tract infection, site not specified": "cystitis, pyelonephritis, and nephrolithiasis",
    "Acute upper respiratory infection, unspecified": "viral upper respiratory infection, allergic rhinitis, and sinusitis",
    "Sprain of unspecified ligament of right ankle, initial encounter": "ankle sprain, fracture of the lateral malleolus, and tendon injury",
}


def fmt_ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M")


def fmt_date(t: datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _num(value: float, decimals: int) -> str:
    return f"{value:.2f}" if decimals else f"{round(value):.2f}"


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


def patient_record(args: tuple) -> tuple[str, bytes, PatientFacts]:
    """Generate one patient's XML and facts (a pure function of seed and index)."""
    seed, index, target_tokens, start_year = args
    return _PatientWriter(seed, index, target_tokens, start_year).write()


_IMPRESSIONS = {
    "12 lead ECG": "normal sinus rhythm without acute ST changes",
    "chest X-ray": "patchy right lower lobe opacity",
    "CT of head": "no acute intracranial abnormality",
    "X-ray of ankle": "soft tissue swelling without fracture",
}
_NOTE_REPEATS = {"History and Physical": 6, "Discharge Summary": 5, "ED Provider Note": 4, "Progress Note": 3}


@dataclass
class _Encounter:
    """One encounter being written: its kind, times, provider, and what its notes will mention."""

    kind: str
    vcode: str
    vname: str
    note_types: list
    t: datetime
    t_end: datetime
    acute: tuple | None
    stay_days: int
    prov_i: int
    site: tuple
    age_days: int
    active: list
    parts: list
    pid_attr: str
    vitals_today: dict = field(default_factory=dict)
    labs_today: dict = field(default_factory=dict)
    meds_today: list = field(default_factory=list)


class _PatientWriter:
    """One patient: demographics drawn first, then encounters until the record reaches its byte
    target. Every draw comes from one generator in a fixed order, so the same seed and index give
    the same bytes."""

    def __init__(self, seed: int, index: int, target_tokens: int, start_year: int):
        rng = self.rng = np.random.default_rng([seed, 1, index])
        self.person_id = str(10_000_000 + index * 7919 + int(rng.integers(0, 7919)))
        self.gender = "FEMALE" if rng.random() < 0.52 else "MALE"
        self.ethnicity = "Hispanic or Latino" if rng.random() < 0.18 else "Not Hispanic or Latino"
        races = ["White", "Asian", "Black or African American", "Other Race"]
        self.race = races[int(rng.choice(4, p=[0.55, 0.25, 0.08, 0.12]))]
        age0 = int(rng.integers(25, 80))
        self.target_bytes = int(target_tokens * BYTES_PER_TOKEN)
        years = float(np.clip(1.5 + math.log10(max(target_tokens, 3000) / 3000) * 3.2 + rng.normal(0, 1.0), 1.0, 16.0))
        self.start = datetime(start_year, 1, 1) + timedelta(days=int(rng.integers(0, 365)))
        self.end = self.start + timedelta(days=int(years * 365))
        self.birth = self.start - timedelta(days=age0 * 365 + int(rng.integers(0, 365)))
        self.conditions = self._draw_conditions()
        self.weight = float(rng.normal(82 if self.gender == "MALE" else 70, 14))
        self.height = float(rng.normal(176 if self.gender == "MALE" else 163, 7))
        self.smoking = SMOKING[int(rng.choice(3, p=[0.55, 0.3, 0.15]))]
        specialties = PROVIDER_SPECIALTIES
        self.providers = [
            (str(5000 + int(rng.integers(0, 900))), specialties[int(rng.integers(0, len(specialties)))])
            for _ in range(4)
        ]
        self.provider_names = [
            f"{FIRST_NAMES[int(rng.integers(0, 10))]} {LAST_NAMES[int(rng.integers(0, 10))]}, MD" for _ in range(4)
        ]
        self.facts = PatientFacts(
            self.person_id, fmt_date(self.birth), self.gender, 0, "", "", [], {}, {}, (), (), (), {}, {}, (), (), (), ()
        )
        for c, _onset in self.conditions:
            self.facts.conditions.append((c[0], c[1], None, c[2]))
        self.n_events = self.n_notes = 0
        self.lab_state: dict = {}

    def _draw_conditions(self) -> list:
        rng, start, end = self.rng, self.start, self.end
        n_chronic = int(rng.integers(2, 6))
        chronic_idx = rng.choice(len(CONDITIONS), size=n_chronic, replace=False)
        # Onsets: the first at the start, the others spread over the record.
        onsets = sorted(
            [start]
            + [start + timedelta(days=int(rng.integers(0, max(1, (end - start).days)))) for _ in range(n_chronic - 1)]
        )
        return [(CONDITIONS[i], onsets[k]) for k, i in enumerate(chronic_idx)]

    def write(self) -> tuple[str, bytes, PatientFacts]:
        facts = self.facts
        out: list[str] = [f'<eventstream person_id="{self.person_id}">\n']
        size = len(out[0])
        kinds_p = np.array([k[3] for k in VISIT_KINDS])
        # Encounter spacing from the byte target: about 2.3 kB per encounter on average.
        mean_gap = max(1, (self.end - self.start).days) / max(3, self.target_bytes // 2300)
        self.t, self.enc = self.start, 0
        while size < self.target_bytes or self.enc < 3:
            kind_i = int(self.rng.choice(len(VISIT_KINDS), p=kinds_p)) if self.enc else 0
            if self.target_bytes - size < 60_000 and VISIT_KINDS[kind_i][0] == "inpatient":
                kind_i = 0  # near the target, a multi-day stay would overshoot it by far
            chunk = self._encounter(VISIT_KINDS[kind_i], mean_gap)
            out.append(chunk)
            size += len(chunk)
            if not facts.first_ts:
                facts.first_ts = fmt_ts(self.t)
            self.enc += 1
        out.append("</eventstream>\n")
        facts.age_years = (self.t - self.birth).days // 365
        facts.n_events, facts.n_notes = self.n_events, self.n_notes
        data = "".join(out).encode("utf-8")
        facts.n_bytes = len(data)
        return self.person_id, data, facts

    # ------------------------------------------------------------------ one encounter

    def _encounter(self, visit_kind: tuple, mean_gap: float) -> str:
        rng = self.rng
        kind, vcode, vname, _, note_types = visit_kind
        t = self.t + timedelta(minutes=int(rng.exponential(mean_gap) * 1440) + 30)
        t = t.replace(minute=(t.minute // 5) * 5, second=0, microsecond=0)
        if t.hour < 7 or t.hour > 19:
            t = t.replace(hour=int(rng.integers(8, 17)))
        self.t = t
        active = [(c, onset) for c, onset in self.conditions if onset <= t]
        acute = ACUTE[int(rng.integers(0, len(ACUTE)))] if kind in ("emergency", "inpatient") else None
        stay_days = int(rng.integers(2, 6)) if kind == "inpatient" else 0
        t_end = t + timedelta(days=stay_days, hours=1 if kind != "inpatient" else 0)
        prov_i = int(rng.integers(0, 4))
        site = CARE_SITES[{"outpatient": 0, "lab": 1, "telephone": 0, "emergency": 2, "inpatient": 3}[kind]]
        pid_attr = f'provider_id="{self.providers[prov_i][0]}" care_site_id="{site[0]}"'
        e = _Encounter(
            kind,
            vcode,
            vname,
            note_types,
            t,
            t_end,
            acute,
            stay_days,
            prov_i,
            site,
            (t - self.birth).days,
            active,
            [],
            pid_attr,
        )
        e.parts.append(self._encounter_header(e))
        self._entry(
            e, t, [self._ev(e, "visit", vcode, vname), self._ev(e, "visit_detail", f"CARE_SITE/{site[0]}", site[1])]
        )
        self.facts.visits_last[vname] = fmt_ts(t)
        days = [t + timedelta(days=d, hours=2 * d % 5) for d in range(stay_days + 1)]
        for d_i, day in enumerate(days):
            self._day(e, d_i, day)
        self._notes(e)
        e.parts.append("</events>\n</encounter>\n")
        return "".join(e.parts)

    def _encounter_header(self, e: _Encounter) -> str:
        age_days, site, prov = e.age_days, e.site, self.providers[e.prov_i]
        return (
            f'<encounter start_timestamp="{fmt_ts(e.t)}" end_timestamp="{fmt_ts(e.t_end)}">\n'
            f"<person><birthdate>{fmt_date(self.birth)}</birthdate><age><days>{age_days}</days><years>{age_days // 365}</years></age>"
            f"<demographics><ethnicity>{self.ethnicity}</ethnicity><gender>{self.gender}</gender><race>{self.race}</race></demographics>"
            f"<payerplan>{'Medicare' if age_days > 65 * 365 else 'Commercial'}</payerplan></person>\n"
            f'<caresites><caresite care_site_id="{site[0]}" care_site_name="{site[1]}"/></caresites>\n'
            f'<providers><provider provider_id="{prov[0]}" gender="" speciality="{prov[1]}" '
            f'year_of_birth="{1950 + e.prov_i * 7}" care_site_name="{site[1]}"/></providers>\n<events>\n'
        )

    def _entry(self, e: _Encounter, ts: datetime, events: list[str]) -> None:
        self.n_events += len(events)
        self.facts.last_ts = max(self.facts.last_ts, fmt_ts(ts))
        e.parts.append(f'<entry timestamp="{fmt_ts(ts)}">\n' + "".join(events) + "</entry>\n")

    def _ev(self, e: _Encounter, etype, code, name, *, value="", unit="") -> str:
        # Provider and care site only where they matter (visits, notes): keeps records compact.
        u = f' unit="{unit}"' if unit else ""
        who = f" {e.pid_attr}" if etype.startswith("visit") else ""
        return f'<event type="{etype}" code="{code}" name="{_xml_escape(name)}"{u}{who}>{value}</event>\n'

    def _note(self, e: _Encounter, ts: datetime, *, name: str, note_id: str, text: str) -> None:
        e.parts.append(
            f'<entry timestamp="{fmt_ts(ts)}">\n<event type="note" code="" name="{name}" '
            f'note_id="{note_id}" {e.pid_attr}>{_xml_escape(text)}</event>\n</entry>\n'
        )
        self.n_events += 1
        self.n_notes += 1
        self.facts.last_ts = max(self.facts.last_ts, fmt_ts(ts))

    # ------------------------------------------------------------------ one day of an encounter

    def _day(self, e: _Encounter, d_i: int, day: datetime) -> None:
        kind = e.kind
        if kind != "lab" and kind != "telephone":
            self._vitals(e, day)
        if kind in ("outpatient", "lab", "inpatient", "emergency") and (
            kind != "outpatient" or self.rng.random() < 0.6
        ):
            self._labs(e, day)
        if kind in ("outpatient", "emergency", "inpatient") and d_i == 0:
            self._conditions_and_drugs(e)
        if e.acute and e.acute[3] and d_i == 0:
            self._acute_procedure(e)
        elif kind == "outpatient" and self.rng.random() < 0.04:
            proc = ["Echocardiography", "Colonoscopy", "MRI of knee", "Influenza vaccination"][
                int(self.rng.integers(0, 4))
            ]
            self._entry(e, e.t + timedelta(minutes=55), [self._ev(e, "procedure", f"SNOMED/{PROCEDURES[proc]}", proc)])

    def _vitals(self, e: _Encounter, day: datetime) -> None:
        rng, facts = self.rng, self.facts
        t_v = day + timedelta(minutes=10)
        evs = []
        for code, name, unit, mean, sd, dec in VITALS:
            shift = 12 if (code == "8480-6" and any(c[0] == "I10" for c, _ in e.active)) else 0
            val = rng.normal(mean + shift, sd)
            e.vitals_today[code] = (t_v, round(val, dec))
            evs.append(self._ev(e, "measurement", f"LOINC/{code}", name, value=_num(val, dec), unit=unit))
        self.weight += rng.normal(0, 0.6)
        evs.append(self._ev(e, "measurement", "LOINC/29463-7", "Body weight", value=f"{self.weight:.2f}", unit="kg"))
        e.vitals_today["29463-7"] = (t_v, round(self.weight, 1))
        facts.weight_last = (fmt_ts(t_v), round(self.weight, 1))
        if self.enc % 4 == 0:
            evs.append(self._ev(e, "measurement", "LOINC/8302-2", "Body height", value=f"{self.height:.2f}", unit="cm"))
            facts.height_last = (fmt_ts(t_v), round(self.height, 1))
        facts.bp_last = (fmt_ts(t_v), int(round(e.vitals_today["8480-6"][1])), int(round(e.vitals_today["8462-4"][1])))
        if e.kind == "inpatient":
            self._inpatient_charting(e, day)
        self._entry(e, t_v, evs)

    def _inpatient_charting(self, e: _Encounter, day: datetime) -> None:
        # Inpatient days chart vitals every two hours and record each dose given: most of a real
        # record's events are of this kind.
        acute = e.acute
        drugs = sorted({d for c, _ in e.active for d in c[3]} | ({acute[2]} if acute and acute[2] else set()))
        for h in range(1, 24, 2):
            evs_h = [
                self._ev(e, "measurement", f"LOINC/{c}", n, value=_num(self.rng.normal(m, s), dc), unit=u)
                for c, n, u, m, s, dc in VITALS
            ]
            if h % 6 == 1:
                evs_h += [self._ev(e, "drug_exposure", f"RxNorm/{DRUGS[d][0]}", DRUGS[d][1]) for d in drugs]
            self._entry(e, day + timedelta(hours=h), evs_h)

    def _labs(self, e: _Encounter, day: datetime) -> None:
        t_l = day + timedelta(minutes=40)
        wanted = {"2345-7", "718-7"} | {lab for c, _ in e.active for lab in c[4]}
        evs = []
        for panel in PANELS:
            if not (wanted.intersection(panel) or (e.kind != "outpatient" and panel in PANELS[:2])):
                continue
            for code in panel:
                name, unit, mean, sd, dec = LABS[code]
                shift = sum(DISEASE_LAB_SHIFT.get(c[0], {}).get(code, 0) for c, _ in e.active)
                drift = self.lab_state.get(code, 0.0) * 0.6 + self.rng.normal(0, sd * 0.5)
                self.lab_state[code] = drift
                val = round(max(0.1, mean + shift + drift), dec)
                evs.append(self._ev(e, "measurement", f"LOINC/{code}", name, value=_num(val, dec), unit=unit))
                e.labs_today[code] = (t_l, val, unit)
                self.facts.labs_last[code] = (fmt_ts(t_l), val, unit)
                self.facts.labs_first.setdefault(code, (fmt_ts(t_l), val, unit))
        if evs:
            self._entry(e, t_l, evs)

    def _conditions_and_drugs(self, e: _Encounter) -> None:
        facts, acute = self.facts, e.acute
        t_c = e.t + timedelta(minutes=20)
        evs = []
        for c, _onset in e.active:
            evs.append(self._ev(e, "condition", f"ICD10CM/{c[0]}", c[1]))
            for k, (code, name, first, plan) in enumerate(facts.conditions):
                if code == c[0] and first is None:
                    facts.conditions[k] = (code, name, fmt_ts(t_c), plan)
        if acute:
            evs.append(self._ev(e, "condition", f"ICD10CM/{acute[0]}", acute[1]))
        for c, _onset in e.active:
            for drug in c[3]:
                rx, full = DRUGS[drug]
                evs.append(self._ev(e, "drug_exposure", f"RxNorm/{rx}", full))
                e.meds_today.append(drug)
                facts.meds_last[drug] = fmt_ts(t_c)
        if acute and acute[2]:
            rx, full = DRUGS[acute[2]]
            evs.append(self._ev(e, "drug_exposure", f"RxNorm/{rx}", full))
            e.meds_today.append(acute[2])
        if self.rng.random() < 0.3:
            evs.append(self._ev(e, "observation", "LOINC/72166-2", "Tobacco smoking status", value=self.smoking))
            facts.smoking_last = (fmt_ts(t_c), self.smoking)
        pain = f"{int(self.rng.integers(0, 8)):.2f}"
        evs.append(self._ev(e, "observation", "LOINC/38208-5", "Pain severity - Reported", value=pain))
        self._entry(e, t_c, evs)

    def _acute_procedure(self, e: _Encounter) -> None:
        acute = e.acute
        t_p = e.t + timedelta(minutes=55)
        impression = _IMPRESSIONS[acute[3]]
        self._entry(e, t_p, [self._ev(e, "procedure", f"SNOMED/{PROCEDURES[acute[3]]}", acute[3])])
        self.facts.procedure_last = (fmt_ts(t_p), acute[3], impression)
        if e.kind == "emergency" or self.rng.random() < 0.5:
            report = (
                f"{acute[3].upper()} REPORT. Indication: {acute[1].lower()}. Comparison: none available. "
                f"Findings and impression: {impression}. Electronically signed by the reading physician."
            )
            note_id = f"{self.person_id}{self.enc:05d}9"
            self._note(e, t_p + timedelta(minutes=30), name="Radiology Report", note_id=note_id, text=report)

    # ------------------------------------------------------------------ notes

    def _notes(self, e: _Encounter) -> None:
        """Prose that mentions the coded facts of this encounter."""
        note_types = e.note_types
        if e.kind == "outpatient" and self.rng.random() < 0.25:
            note_types = []  # not every clinic visit has a note in the extract
        if e.kind == "inpatient":
            note_types = note_types[:1] + ["Progress Note"] * e.stay_days + note_types[2:]
        for n_i, ntype in enumerate(note_types):
            t_n = e.t + timedelta(hours=1 + n_i * 24 if e.kind == "inpatient" else 1)
            if t_n > e.t_end + timedelta(hours=2):
                t_n = e.t_end
            text, plan = self._note_text(e, ntype, t_n)
            self._note(e, t_n, name=ntype, note_id=f"{self.person_id}{self.enc:05d}{n_i}", text=text)
            self.facts.last_note = (fmt_ts(t_n), ntype, plan)

    def _note_text(self, e: _Encounter, ntype: str, t_n: datetime) -> tuple[str, str]:
        acute, vitals = e.acute, e.vitals_today
        problems = ", ".join(c[1].lower() for c, _ in e.active) or "no chronic conditions"
        meds = ", ".join(sorted(set(e.meds_today))) or "no current medications"
        person = "woman" if self.gender == "FEMALE" else "man"
        sentences = [
            f"{ntype}. {self.provider_names[e.prov_i]}, {self.providers[e.prov_i][1]}.",
            f"Patient is a {e.age_days // 365}-year-old {person} with a history of {problems}.",
        ]
        if acute:
            sentences.append(f"Presents with symptoms consistent with {acute[1].lower()}.")
        if e.kind == "telephone":
            sentences.append(
                "Called to review recent results and medication questions. Patient reports feeling well overall."
            )
        if "8480-6" in vitals:
            sentences.append(
                f"Vitals: blood pressure {int(vitals['8480-6'][1])}/{int(vitals['8462-4'][1])}, "
                f"heart rate {int(vitals['8867-4'][1])}, weight {vitals['29463-7'][1]} kg."
            )
        if e.labs_today:
            code = sorted(e.labs_today)[int(self.rng.integers(0, len(e.labs_today)))]
            sentences.append(f"Labs notable for {LAB_SHORT[code]} {e.labs_today[code][1]} {e.labs_today[code][2]}.")
        sentences.append(f"Current medications: {meds}.")
        sentences.append(f"Social history: {self.smoking.lower()}.")
        plan_bits = [f"{c[1]}: {c[2]}." for c, _ in e.active]
        if acute:
            diff = DIFFERENTIALS[acute[1]]
            sentences.append(f"Assessment: differential includes {diff}.")
            treat = "treat with " + acute[2] if acute[2] else "supportive care"
            plan_bits.append(f"{acute[1]}: {treat} and return precautions.")
            self.facts.acute_last = (fmt_ts(t_n), acute[1], diff, ntype)
        plan = " ".join(plan_bits) or "Routine health maintenance."
        sentences.append("Plan: " + plan)
        # Filler of the kind real notes carry (review of systems, exam), sized by note type.
        reps = _NOTE_REPEATS.get(ntype, 1)
        sentences.extend(
            REVIEW_OF_SYSTEMS[int(j)] for j in self.rng.choice(len(REVIEW_OF_SYSTEMS), size=reps, replace=False)
        )
        if ntype == "Discharge Summary":
            sentences.append(
                f"Discharge instructions: take {meds} as directed, follow up in clinic in 1 week, "
                "return for fever, chest pain or shortness of breath."
            )
        return " ".join(sentences), plan


REVIEW_OF_SYSTEMS = [
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
