"""The 983 x 7 truncation grid (the paper's `recent` strategy) on the full-scale synthetic cohort,
for cl100k and SmolLM2's tokenizer, against the per-instruction retokenization of published code.

Usage: python benchmarks/bench_context.py [--data RELEASE] [--sample 24]

Ours: one tokenization pass per tokenizer (records over processes, ids and offsets cached), then
every prompt of the grid by slicing cached tokens plus exact recounts of the joins.
Baseline (published code): for every instruction and context length, encode the whole record with
cl100k, cut it to the cl100k budget, decode, encode that with the target tokenizer, cut, decode.
The baseline is timed on a random sample of grid cells and extrapolated to the whole grid (said
in the output). Floors (issue 5): pass + grid >= 25x, grid alone >= 200x and under 30 s, RSS < 4 GB.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _common import default_work_dir, emit, full_cohort, peak_rss_mb, timed

from medalign_utils import paper
from medalign_utils.context import GridSettings, PromptTemplate, build_prompt_grid, load_tokenizer, pretokenize
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
    try:
        for name in ("cl100k", "smollm2"):
            load_tokenizer(name)  # converted models are cached before timing starts
            with timed() as tp:
                counts = pretokenize(release.ehr_files, name, cache_dir=cache, workers=args.workers, progress=False)
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
                "tokens": sum(counts.values()),
                "pass_s": tp["s"],
                "grid_s": tg["s"],
                "cells": len(grid),
                "cut": len(cut),
                "slack": {int(k): int(v) for k, v in slack.items()},
            }
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
    for name, r in results.items():
        emit(f"{name}_tokens", r["tokens"])
        emit(f"{name}_pass_tokens_per_s", r["tokens"] / r["pass_s"], "{:.0f}")
        emit(f"{name}_pass_s", r["pass_s"], "{:.1f}")
        emit(f"{name}_grid_cells", r["cells"])
        emit(f"{name}_grid_s", r["grid_s"], "{:.1f}")
        # Tokens short of the budget among cut prompts (0 = exact): slack -> number of prompts.
        emit(f"{name}_cut_prompts", r["cut"])
        emit(f"{name}_slack_distribution", " ".join(f"{k}:{v}" for k, v in r["slack"].items()))
        emit(f"{name}_exact_pct", 100 * r["slack"].get(0, 0) / max(r["cut"], 1), "{:.2f}")
        emit(f"{name}_baseline_s_extrapolated_from_{args.sample}_cells", r["baseline_s"], "{:.0f}")
    ours_grid = sum(r["grid_s"] for r in results.values())
    ours_total = sum(r["grid_s"] + r["pass_s"] for r in results.values())
    base = sum(r["baseline_s"] for r in results.values())
    emit("peak_rss_mb", rss, "{:.0f}")
    emit("grid_alone_speed_ratio", base / ours_grid, "{:.1f}")
    emit("pass_plus_grid_speed_ratio", base / ours_total, "{:.1f}")


if __name__ == "__main__":
    main()
