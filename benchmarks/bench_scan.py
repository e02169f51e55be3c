"""What the share-safe scan's readings of disguised text cost: pages scanned with every reading
(SVG text by position, right-to-left, CSS escapes, base64 anywhere, split words) against the same
scan without them, side by side in one run on the same pages and index.

Usage: python benchmarks/bench_scan.py [--pages RUN_FOLDER] [--repeat N]
Without --pages, the newest run under reports/ (`make reports` makes one). The index is the
synthetic cohort's, built as for the real release (`SensitiveIndex.from_release`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

from _common import emit, timed

from medalign_utils.config import project_root
from medalign_utils.data import load_release
from medalign_utils.reports import scan


def newest_run() -> Path:
    runs = sorted(p.parent for p in (project_root() / "reports").glob("*/run.json"))
    if not runs:
        raise SystemExit("no run under reports/: run `make reports` first, or pass --pages")
    return runs[-1]


def scan_all(index, pages: list[str], repeat: int) -> tuple[float, list[list[str]]]:
    found = []
    with timed() as t:
        for _ in range(repeat):
            found = [index.scan(page) for page in pages]
    return t["s"] / repeat, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=Path, default=None, help="a run folder holding pages (*.html, *.ipynb)")
    parser.add_argument("--data", type=Path, default=project_root() / "data" / "synthetic")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = args.pages or newest_run()
    pages = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.html")) + sorted(folder.glob("*.ipynb"))]
    index = scan.SensitiveIndex.from_release(load_release(args.data))
    megabytes = sum(len(p.encode()) for p in pages) / 1e6
    emit("pages", len(pages), "{}")
    emit("pages_mb", megabytes)
    # The baseline: the scan as it read before the disguise readings (one reading per text).
    with mock.patch.object(scan, "_alternative_readings", lambda raw: []):
        with mock.patch.object(scan, "_word_views", lambda text: []):
            base_s, base_found = scan_all(index, pages, args.repeat)
    new_s, new_found = scan_all(index, pages, args.repeat)
    emit("scan_without_disguise_readings_s", base_s)
    emit("scan_with_disguise_readings_s", new_s)
    emit("scan_with_disguise_readings_mb_per_s", megabytes / new_s)
    emit("same_findings_on_clean_pages", f"{sum(a == b for a, b in zip(base_found, new_found))}/{len(pages)}")
    emit("disguise_readings_cost_ratio", new_s / base_s, "{:.2f}")


if __name__ == "__main__":
    main()
