"""Judging throughput: the loopback test judge at concurrency 8 against 1, and the local SmolLM2 judge
batched against one prompt at a time.

Usage: python benchmarks/bench_judge.py [--service-time 0.05] [--items 96] [--local-items 16]
A small synthetic cohort is made in a temporary folder. SmolLM2 judges with a 512-token context
(the EHR fitted by `recent`) and 32 new tokens. The loopback judge (`synthetic.planted_judge`: the planted test
judge served by `generation.local_server`) takes a fixed service time per request, as a remote judge
would; the client is the suite's OpenAI-compatible backend. Floors (issue 14): concurrency 8 at least
6x concurrency 1; SmolLM2 batched at least 2x one at a time. Token and cost lines (at example prices
of $0.005 and $0.015 per 1,000 prompt and completion tokens) come before the headline ratio, last.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import emit, peak_rss_mb

from medalign_utils.data import load_release
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge import Judge
from medalign_utils.generation import GenerationSettings
from medalign_utils.synthetic import CohortSpec, make_cohort, planted_judge

PRICE_PROMPT, PRICE_COMPLETION = 0.005, 0.015


def timed_run(judge: J.Judge, items, release, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    stats = J.run_judgments(judge, "rubric", items, release, out, progress=False)
    return time.perf_counter() - t0, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--service-time", type=float, default=0.05, help="seconds the loopback judge takes per request")
    ap.add_argument("--items", type=int, default=96, help="responses judged through the loopback judge")
    ap.add_argument("--local-items", type=int, default=16, help="responses judged by SmolLM2")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medalign-bench-judge-"))
    try:
        spec = CohortSpec(patients=4, instructions=60, gold=40, multi_rated=5, seed=0, length_log_median=9.0,
                          length_log_sigma=0.5, min_tokens=3000, max_tokens=20_000)  # fmt: skip
        make_cohort(work / "cohort", spec, workers=1, progress=False)
        release = load_release(work / "cohort")
        items = J.response_items(release).head(args.items)
        rates = {}
        prices = {"price_prompt_per_1k": PRICE_PROMPT, "price_completion_per_1k": PRICE_COMPLETION}
        for concurrency in (1, 8):
            # 16 judgments committed per batch; requests in flight = concurrency.
            with planted_judge(
                release,
                name=f"c{concurrency}",
                service_time=args.service_time,
                max_concurrency=concurrency,
                batch_size=16,
                **prices,
            ) as judge:
                seconds, stats = timed_run(judge, items, release, work / f"c{concurrency}.jsonl")
            rates[concurrency] = stats["judgments"] / seconds
            emit(f"loopback_concurrency{concurrency}_judgments_per_s", rates[concurrency], "{:.1f}")
        j = J.read_judgments(work / "c8.jsonl")
        cost = J.cost_table(j).iloc[0]
        emit("loopback_prompt_tokens", int(cost.prompt_tokens))
        emit("loopback_completion_tokens", int(cost.completion_tokens))
        emit("loopback_cost_usd_at_example_prices", float(cost.cost), "{:.4f}")

        local_items = J.response_items(release).head(args.local_items)
        local = {}
        for batch in (1, 8):
            judge = Judge.from_spec(
                "smollm2",
                name=f"smollm2-b{batch}",
                context=512,
                strategy="recent",
                reserve=32,
                retries=0,
                batch_size=batch,
                settings=GenerationSettings(max_new_tokens=32, min_new_tokens=32),
            )
            seconds, stats = timed_run(judge, local_items, release, work / f"b{batch}.jsonl")
            local[batch] = stats["judgments"] / seconds
            emit(f"smollm2_batch{batch}_judgments_per_s", local[batch], "{:.3f}")
            emit(f"smollm2_batch{batch}_prompt_tokens", stats["prompt_tokens"])
            emit(f"smollm2_batch{batch}_invalid", stats["invalid"])
        emit("smollm2_batched_speed_ratio", local[8] / local[1], "{:.2f}")
        emit("peak_rss_mb", peak_rss_mb(), "{:.0f}")
        emit("concurrency_speed_ratio", rates[8] / rates[1], "{:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
