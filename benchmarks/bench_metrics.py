"""Every metric over 1,818 response-reference pairs (303 x 6) of realistic length, and the suite's
BERTScore path against a plain `bert_score.score` call on the same pairs and encoder.

Usage: python benchmarks/bench_metrics.py [--pairs-per-instruction 6]

Pairs: the synthetic cohort's 303 gold instructions, each with its reference and six responses,
lengthened with clinical sentences from the synthetic notes to a log-normal length (median about
60 words, up to about 250), as LLM answers run. Floors (issue 8): all metrics under 120 s, ratio
>= 1.5x.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import emit, peak_rss_mb, timed

from medalign_utils.assets import minilm_path
from medalign_utils.data import load_release
from medalign_utils.evaluation import metrics as M
from medalign_utils.synthetic import CohortSpec, make_cohort
from medalign_utils.synthetic.records import REVIEW_OF_SYSTEMS


def realistic_pairs(root: Path, seed: int = 0):
    release = load_release(root)
    mr = release.model_responses
    mr = mr[mr.annotator_num == "Annotator_1"]
    refs = (
        release.references[release.references.annotator_num == "Annotator_1"]
        .set_index("instruction_id")
        .clinician_response
    )
    rng = np.random.default_rng(seed)
    pool = REVIEW_OF_SYSTEMS + [s for s in refs.tolist()]
    hyps, ref_lists = [], []
    for row in mr.itertuples(index=False):
        words = int(np.clip(rng.lognormal(np.log(60), 0.6), 8, 250))
        text = row.model_response
        while len(text.split()) < words:
            text += " " + pool[int(rng.integers(0, len(pool)))]
        hyps.append(" ".join(text.split()[:words]))
        ref_lists.append([refs[row.instruction_id]])
    return hyps, ref_lists


def sources_lines(root: Path) -> None:
    """Source-augmented metrics' sources (BM25 snippets of each gold instruction's record): one index
    per record against the replaced way, one index per instruction, side by side."""
    import bm25s  # noqa: F401  (imported before either side is timed: the first would pay for it)

    from medalign_utils.context import bm25_snippets
    from medalign_utils.evaluation.correlation import bm25_sources

    release = load_release(root)
    gold = release.instructions[release.instructions.has_model_responses]
    with timed() as before:
        old = {
            iid: " ".join(bm25_snippets(release.ehr_text(pid), q, k=3))[:2000]
            for iid, pid, q in zip(gold.instruction_id, gold.person_id, gold.question.fillna(""))
            if pid in release.ehr_files
        }
    with timed() as after:
        new = bm25_sources(release, gold)
    emit("bm25_sources_instructions", len(new))
    emit("bm25_sources_index_per_instruction_before_s", before["s"], "{:.2f}")
    emit("bm25_sources_s", after["s"], "{:.2f}")
    emit("bm25_sources_identical_to_before", str(new == old))
    emit("bm25_sources_speed_ratio", before["s"] / after["s"], "{:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = CohortSpec(
            patients=6,
            instructions=400,
            gold=303,
            multi_rated=0,
            seed=0,
            length_log_median=9.0,
            length_log_sigma=0.5,
            min_tokens=3000,
            max_tokens=30000,
        )
        make_cohort(tmp, spec, workers=1, progress=False)
        hyps, refs = realistic_pairs(Path(tmp))
        sources_lines(Path(tmp))
    emit("pairs", len(hyps))
    emit("mean_response_words", float(np.mean([len(h.split()) for h in hyps])), "{:.0f}")
    total = 0.0
    # The suite's BERTScore path, fresh (no embedding cached).
    M._ENCODERS.clear()
    with timed() as ours:
        ours_scores = M.BertScore(num_layers=6).score_prf(hyps, refs)
    total += ours["s"]
    emit("bertscore_s", ours["s"], "{:.2f}")
    # src_embed shares the encoder (and its embeddings of responses and references) as in the suite.
    for name in ("rougeL", "bleu", "chrf", "chrf++", "google_bleu", "meteor", "src_embed"):
        metric = M.make_metric(name)
        if not metric.available:
            emit(f"{name}_s", f"unavailable ({metric.reason})")
            continue
        with timed() as t:
            metric.score(hyps, refs)
        total += t["s"]
        emit(f"{name}_s", t["s"], "{:.2f}")
    emit("all_metrics_s", total, "{:.1f}")
    rss = peak_rss_mb()
    import bert_score

    with timed() as plain:
        P, R, F = bert_score.score(hyps, [r[0] for r in refs], model_type=str(minilm_path()), num_layers=6)
    emit("bert_score_plain_s", plain["s"], "{:.2f}")
    emit("bertscore_max_abs_diff_F", float(np.max(np.abs(ours_scores[:, 2] - F.numpy()))), "{:.2e}")
    emit("peak_rss_mb", rss, "{:.0f}")
    emit("bertscore_speed_ratio", plain["s"] / ours["s"], "{:.2f}")


if __name__ == "__main__":
    main()
