"""HIPAA's safe harbor and the small-cell rule on real data: ages over 89 only as "90+", no cell of
fewer than their release's `min_cell_patients` patients; synthetic tables are shown as they are."""

from __future__ import annotations

import pandas as pd

from medalign_utils.data import describe, load_release
from medalign_utils.stats import Bootstrap


def _cohort(ages, genders, synthetic):
    last = pd.Timestamp("2020-01-01")
    patients = pd.DataFrame(
        {
            "person_id": [f"p{i}" for i in range(len(ages))],
            "gender": genders,
            "birthdate": [str((last - pd.Timedelta(days=round(a * 365.25))).date()) for a in ages],
            "n_events": 3,
            "n_notes": 1,
        }
    )
    events = pd.DataFrame(
        {"person_id": patients.person_id, "timestamp": last, "encounter": 1, "event_type": "note", "text": "x"}
    )
    patients.attrs["synthetic"] = events.attrs["synthetic"] = synthetic
    return patients, events


def test_ages_over_89_read_90_plus_and_small_gender_cells_are_suppressed_on_real_data():
    ages = [94.7, 91.0, *[50.0 + i for i in range(20)]]
    genders = ["female"] * 12 + ["male"] * 8 + ["unknown"] * 2
    patients, events = _cohort(ages, genders, synthetic=False)
    table = describe.cohort_table(patients, events)
    assert table.age_at_last_event.max() == 90.0  # top-coded
    summary = describe.cohort_summary(table)
    assert summary.loc["age_at_last_event", "max"] == "90+" and "94.7" not in summary.to_string()
    per = describe.patients_per(table, "gender")
    assert per.loc["female", "patients"] == 12 and per.loc["male", "patients"] == "<11"
    assert per.loc["unknown", "patients"] == "<11"
    # The threshold is the release's (the config's, passed to open_release), carried by its tables.
    patients.attrs["min_cell_patients"] = 5
    table = describe.cohort_table(patients, events)
    assert table.attrs["min_cell_patients"] == 5
    assert describe.patients_per(table, "gender").loc["male", "patients"] == 8
    assert describe.patients_per(table, "gender").loc["unknown", "patients"] == "<5"


def test_synthetic_tables_are_shown_as_they_are_and_an_unmarked_table_counts_as_real():
    patients, events = _cohort([94.7, 50.0], ["female", "male"], synthetic=True)
    table = describe.cohort_table(patients, events)
    assert describe.cohort_summary(table).loc["age_at_last_event", "max"] == 94.7
    assert describe.patients_per(table, "gender").patients.tolist() == [1, 1]
    patients.attrs.clear()
    assert describe.patients_per(describe.cohort_table(patients, events), "gender").patients.tolist() == ["<11"] * 2


def test_note_types_of_few_patients_are_suppressed_on_the_unmarked_cohort(real_like, tiny_cohort):
    real = describe.notes_per_type(load_release(real_like[0]).events(progress=False))
    assert len(real) and (real.patients == "<11").all() and (real.n == "<11").all()  # 4 patients in all
    synthetic = describe.notes_per_type(load_release(tiny_cohort).events(progress=False))
    assert pd.api.types.is_numeric_dtype(synthetic.n)


def test_the_release_setting_reaches_every_table_it_makes(real_like):
    release = load_release(real_like[0], min_cell_patients=3)
    assert release.disclosure == {"synthetic": False, "min_cell_patients": 3}
    events = release.events(progress=False)
    assert events.attrs["min_cell_patients"] == 3
    notes = describe.notes_per_type(events)  # 4 patients in all: cells of 3 or more show
    assert (notes.patients.map(lambda v: v == "<3" or v >= 3)).all() and (notes.patients != "<11").all()
    cohort = describe.cohort_table(release.patients(progress=False), events)
    assert cohort.attrs == {"synthetic": False, "min_cell_patients": 3}


def test_demographic_cells_count_patients_not_instructions(real_like):
    from medalign_utils.evaluation.clinicians import breakdown

    release = load_release(real_like[0])
    groups = release.instructions.set_index("instruction_id").person_id.astype(str).str[-1]
    out = breakdown(release.model_responses, groups, min_cell=2, bootstrap=Bootstrap(n_resamples=20))
    assert (out.n_patients == 1).all() and (out.n_instructions > 1).any()
    assert out.correct_pct.isna().all()  # every cell describes one patient, however many instructions


def test_every_shown_table_obeys_the_small_cell_rule_once_the_real_release_is_open(real_like, monkeypatch):
    """Four patients, so every category is rare: no count column of a table `show` displays holds
    a count from 1 to 10, whichever package function made it."""
    from medalign_utils.data import open_release
    from medalign_utils.evaluation import clinicians
    from medalign_utils.reports.tables import readable

    monkeypatch.setattr(describe, "_DISPLAY_RULE", {"min_cell_patients": None})
    release = open_release(real_like[0])
    assert describe.display_min_cell() == 11
    events = release.events(progress=False)
    cohort = describe.cohort_table(release.patients(progress=False), events)
    labels = clinicians.combine_raters(release.model_responses, "primary")
    demographics = describe.instruction_demographics(release)
    by = clinicians.breakdown(labels, demographics["sex"], bootstrap=Bootstrap(n_resamples=20), min_cell=11)
    as_in_04 = by.pivot(index="group", columns="system", values="correct_pct")
    as_in_04["patients"] = by.groupby("group").n_patients.max()
    tables = {
        "cohort_summary": describe.cohort_summary(cohort),
        "patients_per": describe.patients_per(cohort, "gender"),
        "notes_per_type": describe.notes_per_type(events),
        "category_table": describe.category_table(release.instructions),
        "specialty_table": describe.specialty_table(release.instructions),
        "breakdown": by,
        "04 demographics": as_in_04,
        "table3": clinicians.table3(labels, bootstrap=Bootstrap(n_resamples=20)),
    }
    counted = 0
    for name, table in tables.items():
        shown = readable(table).data
        for column in [c for c in shown.columns if describe.is_count_column(c)]:
            values = pd.to_numeric(shown[column], errors="coerce")
            assert not ((values >= 1) & (values < 11)).any(), (name, column, shown[column].tolist())
            counted += int(shown[column].astype(str).str.startswith("<").sum())
    assert counted >= 5  # the rule had cells to act on
    # A synthetic cohort opened in a fresh process shows its counts as they are.
    monkeypatch.setattr(describe, "_DISPLAY_RULE", {"min_cell_patients": None})
    assert readable(pd.DataFrame({"patients": [3]})).data.patients.tolist() == [3]
