"""Parse a paper-sized release into the parquet cache; compare with a whole-document ElementTree parse.

Usage: python benchmarks/bench_parse.py [--data RELEASE] [--workers N]
Without --data, the full-scale synthetic cohort (276 patients) is generated once under
$MEDALIGN_BENCH_DIR (default ~/.cache/medalign/bench) and reused.

The baseline is what a first loader would do: `xml.etree.ElementTree.parse` of each whole file,
then a walk over every event into the same table, one process. Ours: lxml iterparse with clearing,
files in parallel, straight to parquet. Both produce the same events; the script checks the counts.
Floors (issue 2): cold parse under 60 s, peak RSS under 2 GB, cached load under 3 s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
from _common import default_work_dir, emit, full_cohort, peak_rss_mb, timed

from medalign_utils.data import load_release


def etree_baseline(files: list[Path]) -> int:
    """Whole-document ElementTree parse + the same extraction into a DataFrame; returns the row count."""
    total = 0
    for path in files:
        root = ET.parse(path).getroot()
        rows = []
        for enc_i, enc in enumerate(root.iter("encounter")):
            for entry in enc.iter("entry"):
                ts = entry.get("timestamp")
                for ev in entry.iter("event"):
                    vocab, _, code = (ev.get("code") or "").partition("/")
                    text = ev.text or ""
                    rows.append(
                        {
                            "encounter": enc_i,
                            "timestamp": ts,
                            "event_type": ev.get("type"),
                            "vocabulary": vocab,
                            "code": code,
                            "description": ev.get("name"),
                            "value": text,
                            "unit": ev.get("unit", ""),
                        }
                    )
        df = pd.DataFrame(rows)
        df["timestamp"] = pd.to_datetime(df["timestamp"], format="%Y-%m-%d %H:%M")
        total += len(df)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    data = args.data or full_cohort(default_work_dir() / "full")
    release = load_release(data)
    files = list(release.ehr_files.values())
    mb = sum(p.stat().st_size for p in files) / 1e6
    cache = Path(tempfile.mkdtemp(prefix="medalign-bench-cache-"))
    try:
        with timed() as cold:
            summaries = release.parse_ehrs(cache, workers=args.workers, progress=False)
        n_events = sum(s.n_events for s in summaries.values())
        n_notes = sum(s.n_notes for s in summaries.values())
        with timed() as cached:
            events = load_release(data).events(cache_dir=cache, progress=False)
        assert len(events) == n_events
        del events
        rss = peak_rss_mb()
        with timed() as base:
            base_events = etree_baseline(files)
        assert base_events == n_events, (base_events, n_events)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    emit("patients", len(files))
    emit("xml_mb", mb, "{:.1f}")
    emit("events", n_events)
    emit("notes", n_notes)
    emit("cold_parse_s", cold["s"], "{:.2f}")
    emit("cold_mb_per_s", mb / cold["s"], "{:.1f}")
    emit("cold_events_per_s", n_events / cold["s"], "{:.0f}")
    emit("cached_load_s", cached["s"], "{:.2f}")
    emit("peak_rss_mb", rss, "{:.0f}")
    emit("etree_parse_s", base["s"], "{:.2f}")
    emit("speed_ratio_vs_etree", base["s"] / cold["s"], "{:.2f}")


if __name__ == "__main__":
    main()
