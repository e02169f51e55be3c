"""The whole suite on a cohort that counts as the real release (no SYNTHETIC marker, `PT-` person_ids,
one empty EHR): every output file and console line checked for leaks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import set_record_dates, template_dates

from medalign_utils.data import load_release
from medalign_utils.reports.scan import dates_in

# ------------------------------------------------------------------ the whole suite on an unmarked cohort


@pytest.mark.slow(seconds=90)
def test_whole_suite_on_an_unmarked_cohort_leaks_nothing_anywhere(real_like, tmp_path):
    """Person_ids with letters and hyphens, one EHR empty: no person_id, note fragment, question,
    reference, response or full record date anywhere under the output folder, console included."""
    root, ids = real_like
    work = tmp_path / "work"
    shutil.copytree(root, work / "release")
    release_dir = work / "release"
    empty = sorted((release_dir / "ehrs").glob("*.xml"))[-1]
    empty.write_text("")
    # A false-alarm cohort too: its record dates include every date the page template's icon
    # geometry and a kernel version string could be read as; every notebook must still pass.
    (work / "template").mkdir()
    false_alarms = template_dates(work / "template")
    set_record_dates(sorted((release_dir / "ehrs").glob("*.xml"))[0], false_alarms)
    out = work / "reports"
    overrides = {
        "data_dir": str(release_dir),
        "context_lengths": [2048, 8192],
        "n_resamples": 100,
        "prompts_path": str(work / "data" / "prompts.parquet"),
        "generations_path": str(work / "data" / "generations.jsonl"),
        "notebooks": {
            "02_context_truncation": {"export_contexts": [2048], "export_strategies": ["recent"]},
            # Multi-step refinement and the judge's other modes run in test_reports' suite run; here
            # every notebook runs once, as briefly as its outputs can still be checked for leaks.
            "03_model_generation": {
                "max_items": 2,
                "max_new_tokens": 8,
                "generation_strategies": ["recent"],
                "mr_items": 0,
            },
            "05_metric_correlation": {"metrics": ["rougeL", "chrf++"]},
            "06_llm_judge": {
                "judgments_dir": str(work / "data" / "judgments"),
                "judge_cache_dir": str(work / "data" / "judge-cache"),
                "label_plans_dir": str(work / "data" / "label-plans"),
                "judge_instructions": 1,
                "judge_modes": ["rubric"],
            },
        },
    }
    script = (
        "import json, sys\n"
        "from medalign_utils.reports import run_suite\n"
        f"ok = run_suite(overrides=json.loads({json.dumps(json.dumps(overrides))}), out={str(out)!r}, progress=True)\n"
        "sys.exit(0 if ok else 1)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    console = proc.stdout + proc.stderr
    record = json.loads((out / "run.json").read_text())
    statuses = {n["name"]: (n["status"], n["error"]) for n in record["notebooks"]}
    assert proc.returncode == 0 and all(s == "ok" for s, _ in statuses.values()), statuses
    assert record["scanned"] is True and record["data"]["synthetic"] is False

    release = load_release(release_dir)
    events = release.events(progress=False)
    texts = []
    for df, cols in (
        (release.instructions, ["question"]),
        (release.references, ["clinician_response"]),
        (release.model_responses, ["model_response"]),
    ):
        for c in cols:
            texts += [t for t in df[c].dropna().astype(str).unique() if len(t.split()) >= 4]
    notes = events[events.event_type == "note"].text.dropna().tolist()
    rng = np.random.default_rng(1)
    for note in rng.choice(notes, size=min(30, len(notes)), replace=False):
        words = note.split()
        i = int(rng.integers(0, max(1, len(words) - 12)))
        texts.append(" ".join(words[i : i + 12]))
    dates = set(events.timestamp.dropna().dt.strftime("%Y-%m-%d"))
    assert false_alarms <= dates
    outputs = {str(p): p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()}
    outputs["console"] = console
    pid_pattern = re.compile("|".join(re.escape(p) for p in ids.values()), re.I)
    for where, content in outputs.items():
        flat = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", content.replace("\\n", " ")))
        assert not pid_pattern.search(content), (where, "person_id")
        assert not (dates & dates_in(content)), (where, "record date")
        for t in texts:
            assert re.sub(r"\s+", " ", t) not in flat, (where, t[:40])
