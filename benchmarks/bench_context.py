"""The 983 x 7 truncation grid (the paper's `recent` strategy) on the full-scale synthetic cohort,
for cl100k and SmolLM2's tokenizer, against the per-instruction retokenization of published code.

Usage: python benchmarks/bench_context.py [--data RELEASE] [--sample 24]

Ours: one tokenization pass for both tokenizers (each record read once, records over processes,
lines shared across records encoded once, ids and offsets cached compressed), then every prompt of
the grid by slicing cached tokens plus exact recounts of the joins.
Baseline (published code): for every instruction and context length, encode the whole record with
cl100k, cut it to the cl100k budget, decode, encode that with the target tokenizer, cut, decode.
The baseline is timed on a random sample of grid cells and extrapolated to the whole grid (said
in the output). Floors: pass + grid >= 50x (issue 23), grid alone >= 150x, RSS < 4 GB.

The token cache: its size against the XML it caches (floor: <= 4x), and the time to load every
record's tokens from it against the format it replaced (a 9-byte structured .npy a token, written
here from the same tokens), warm and cold, both measured in this run (floor: no slower).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _common import default_work_dir, emit, full_cohort, peak_rss_mb, timed

from medalign_utils import paper
from medalign_utils.context import (
    GridSettings,
    PromptTemplate,
    build_prompt_grid,
    load_tokenizer,
    load_tokens,
    pretokenize,
)
from medalign_utils.data import load_release

CONTEXTS = paper.CONTEXT_LENGTHS


def published_cell(cl100k, target, template, text: str, question: str, context: int, reserve: int = 256) -> str:
    """One grid cell the way public MedAlign code builds it: two full passes per instruction."""
    prefix, suffix = template.parts(None, False, question=question)
    budget_cl = context - reserve - cl100k.count(prefix + suffix)
    ids = cl100k.encode(text)
    text_cl = cl100k.decode(ids[-budget_cl:]) if budget_cl > 0 else ""
    t_prefix, t_suffix = template.parts(target, True, question=question)
    budget_t = context - reserve - target.count(t_prefix + t_suffix)
    ids_t = target.encode(text_cl)
    return t_prefix + target.decode(ids_t[-budget_t:]) + t_suffix


def token_cache_stats(cache: Path, release) -> dict:
    """The cache's size against the XML it caches, and loading every record's tokens from it against
    loading the same tokens from the format it replaced (one 9-byte structured .npy record a token,
    read as its reader did), each loaded and dropped one record at a time: warm (from the page
    cache, best of three passes alternating the two) and cold."""
    files = sorted(cache.glob("tokens/*/*.arrow"))
    xml_bytes = sum(p.stat().st_size for p in release.ehr_files.values())
    cache_bytes = sum(p.stat().st_size for p in files)
    old_dir = Path(tempfile.mkdtemp(prefix="medalign-bench-npy-"))
    try:
        old_files = []
        for k, path in enumerate(files):
            tt = load_tokens(path)
            rec = np.empty(len(tt), dtype=[("id", "<i4"), ("offset", "<i4"), ("starts_char", "?")])
            rec["id"], rec["offset"], rec["starts_char"] = tt.ids, tt.char_offsets, tt.starts_char
            old_files.append(old_dir / f"{k}.npy")
            np.save(old_files[-1], rec)
        old_bytes = sum(p.stat().st_size for p in old_files)
        new_s, old_s = [], []
        for _ in range(3):
            new_s.append(time_loads(load_tokens, files))
            old_s.append(time_loads(old_npy_load, old_files))
        cold_new, cold_old = time_loads(load_tokens, files, cold=True), time_loads(old_npy_load, old_files, cold=True)
    finally:
        shutil.rmtree(old_dir, ignore_errors=True)
    return {
        "xml_mb": xml_bytes / 1e6,
        "token_cache_files": len(files),
        "token_cache_mb": cache_bytes / 1e6,
        "old_npy_cache_mb": old_bytes / 1e6,
        "old_npy_cache_to_xml_ratio": old_bytes / xml_bytes,
        "token_cache_to_xml_ratio": cache_bytes / xml_bytes,
        "old_npy_cache_load_s": min(old_s),
        "token_cache_load_s": min(new_s),
        "token_cache_load_speed_ratio": min(old_s) / min(new_s),
        "old_npy_cache_cold_load_s": cold_old,
        "token_cache_cold_load_s": cold_new,
        "token_cache_cold_load_speed_ratio": cold_old / cold_new,
    }


def time_loads(load, files, *, cold: bool = False) -> float:
    """Seconds to load every file one after another (each result dropped); `cold`: each file's pages
    evicted from the page cache first (posix_fadvise), as after a reboot or on a busy machine."""
    if cold:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
    with timed() as t:
        for path in files:
            load(path)
    return t["s"]


def old_npy_load(path: Path):
    """What the replaced cache's reader did with each record."""
    rec = np.load(path)
    return np.ascontiguousarray(rec["id"]), rec["offset"].astype(np.int64), np.ascontiguousarray(rec["starts_char"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--sample", type=int, default=24, help="baseline cells timed per tokenizer")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    data = args.data or full_cohort(default_work_dir() / "full")
    release = load_release(data)
    template = PromptTemplate.from_file()
    cache = Path(tempfile.mkdtemp(prefix="medalign-bench-tokens-"))
    results = {}
    names = ("cl100k", "smollm2")
    try:
        for name in names:
            load_tokenizer(name)  # converted models are cached before timing starts
        with timed() as tp:
            counts = pretokenize(release.ehr_files, list(names), cache_dir=cache, workers=args.workers, progress=False)
        for name in names:
            tok = load_tokenizer(name)
            with timed() as tg:
                grid = build_prompt_grid(
                    release,
                    tok,
                    GridSettings(tuple(CONTEXTS), ("recent",)),
                    template=template,
                    cache_dir=cache,
                    progress=False,
                )
            assert (grid.prompt_tokens <= grid.target_tokens).all()
            cut = grid[grid.kept_tokens < grid.base_tokens]
            slack = (cut.target_tokens - cut.prompt_tokens).value_counts().sort_index()
            results[name] = {
                "tokens": int(counts[counts.tokenizer == name].n_tokens.sum()),
                "grid_s": tg["s"],
                "cells": len(grid),
                "cut": len(cut),
                "slack": {int(k): int(v) for k, v in slack.items()},
            }
        cache_stats = token_cache_stats(cache, release)
        rss = peak_rss_mb()
        # Baseline on a random sample of cells, extrapolated to the grid.
        cl100k = load_tokenizer("cl100k")
        rng = np.random.default_rng(0)
        ins = release.instructions[release.instructions.person_id.isin(release.ehr_files.keys())].reset_index(drop=True)
        for name in ("cl100k", "smollm2"):
            target = load_tokenizer(name)
            picks = rng.choice(len(ins), size=args.sample, replace=True)
            ctxs = rng.choice(CONTEXTS, size=args.sample)
            texts = {pid: release.ehr_text(pid) for pid in set(ins.person_id.iloc[picks])}
            with timed() as tb:
                for i, c in zip(picks, ctxs):
                    published_cell(cl100k, target, template, texts[ins.person_id.iat[i]], ins.question.iat[i], int(c))
            results[name]["baseline_s"] = tb["s"] / args.sample * results[name]["cells"]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    emit("pass_s_both_tokenizers", tp["s"], "{:.1f}")
    emit("pass_tokens_per_s", sum(r["tokens"] for r in results.values()) / tp["s"], "{:.0f}")
    for key, value in cache_stats.items():
        emit(key, value, "{:.3f}" if isinstance(value, float) else "{}")
    for name, r in results.items():
        emit(f"{name}_tokens", r["tokens"])
        emit(f"{name}_grid_cells", r["cells"])
        emit(f"{name}_grid_s", r["grid_s"], "{:.1f}")
        # Tokens short of the budget among cut prompts (0 = exact): slack -> number of prompts.
        emit(f"{name}_cut_prompts", r["cut"])
        emit(f"{name}_slack_distribution", " ".join(f"{k}:{v}" for k, v in r["slack"].items()))
        emit(f"{name}_exact_pct", 100 * r["slack"].get(0, 0) / max(r["cut"], 1), "{:.2f}")
        emit(f"{name}_baseline_s_extrapolated_from_{args.sample}_cells", r["baseline_s"], "{:.0f}")
    ours_grid = sum(r["grid_s"] for r in results.values())
    ours_total = ours_grid + tp["s"]
    base = sum(r["baseline_s"] for r in results.values())
    emit("peak_rss_mb", rss, "{:.0f}")
    emit("grid_alone_speed_ratio", base / ours_grid, "{:.1f}")
    emit("pass_plus_grid_speed_ratio", base / ours_total, "{:.1f}")


if __name__ == "__main__":
    main()
