"""Judging throughput: the loopback test judge at concurrency 8 against 1, and the local SmolLM2 judge
batched against one prompt at a time.

Usage: python benchmarks/bench_judge.py [--service-time 0.05] [--items 96] [--local-items 16]
A small synthetic cohort is made in a temporary folder. SmolLM2 judges with a 512-token context
(the EHR fitted by `recent`) and 32 new tokens. The loopback judge (`evaluation.judge.planted_judge`: the planted test
judge served by `generation.local_server`) takes a fixed service time per request, as a remote judge
would; the client is the suite's OpenAI-compatible backend. Floors (issue 14): concurrency 8 at least
6x concurrency 1; SmolLM2 batched at least 2x one at a time (both unconstrained, 32 tokens forced, as
measured then). Token and cost lines (at example prices of $0.005 and $0.015 per 1,000 prompt and
completion tokens) come before the headline ratio, last. Issue 37 adds the shared prefix: SmolLM2 at the judge's default
context with each instruction's shared prefix prefilled once against every prompt alone
(`shared_prefix_speed_ratio_rubric`, floor 3; `..._pairwise`), with the prefill tokens computed
each way (`--only-shared-prefix` runs that part alone). Issue 20 adds SmolLM2's valid share with
constrained decoding (floor 0.99) and unconstrained beside it, and the planted test judge's Table 4
tau for its verdicts (argmax) against its probability-weighted scores (expected at least argmax).
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
from medalign_utils.evaluation.judge import Judge, planted_judge
from medalign_utils.generation import GenerationSettings
from medalign_utils.stats import Bootstrap
from medalign_utils.synthetic import CohortSpec, make_cohort

PRICE_PROMPT, PRICE_COMPLETION = 0.005, 0.015


def timed_run(judge: J.Judge, items, release, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    stats = J.run_judgments(judge, "rubric", items, release, out, progress=False)
    return time.perf_counter() - t0, stats


def validity(release, items, work: Path) -> None:
    """SmolLM2's share of valid verdicts with constrained decoding and without, in every scored mode."""
    for constrained in (True, False):
        judge = Judge.from_spec("smollm2", name=f"smollm2-c{constrained:d}", context=512, reserve=64, retries=0,
                                max_new_tokens=48, constrained=constrained, free_tokens=16)  # fmt: skip
        valid = total = 0
        t0 = time.perf_counter()
        for mode in ("rubric", "correct", "medhelm"):
            stats = J.run_judgments(
                judge, mode, items, release, work / f"v{constrained:d}-{mode}.jsonl", progress=False
            )
            valid, total = valid + stats["judgments"] - stats["invalid"], total + stats["judgments"]
        label = "smollm2_valid_share" if constrained else "smollm2_unconstrained_valid_share"
        if constrained:
            emit("smollm2_constrained_judgments_per_s", total / (time.perf_counter() - t0), "{:.3f}")
        emit(label, valid / max(1, total), "{:.3f}")


def loopback_overhead(release, items, work: Path) -> None:
    """The loopback judge answering at once: what the HTTP round trip itself costs, with Nagle's
    algorithm on the server's kept-alive connections as it was (each answer's body waited for the
    client's delayed ACK) and off, as now."""
    from medalign_utils.generation.local_server import _Handler

    rates = {}
    for nagle_off in (False, True):
        _Handler.disable_nagle_algorithm = nagle_off
        try:
            with planted_judge(release, name=f"n{nagle_off:d}", max_concurrency=8, batch_size=16) as judge:
                seconds, stats = timed_run(judge, items, release, work / f"nagle{nagle_off:d}.jsonl")
        finally:
            _Handler.disable_nagle_algorithm = True
        rates[nagle_off] = stats["judgments"] / seconds
    emit("loopback_no_service_time_nagle_on_before_judgments_per_s", rates[False], "{:.1f}")
    emit("loopback_no_service_time_judgments_per_s", rates[True], "{:.1f}")
    emit("loopback_no_service_time_speed_ratio", rates[True] / rates[False], "{:.2f}")


def local_batches(release, work: Path) -> None:
    """SmolLM2 judging as notebook 06 does by default (two instructions: twelve responses, constrained,
    three modes) with batches of 8, the replaced default, and "auto", side by side; same verdicts."""
    items = J.response_items(release)
    items = items[items.instruction_id.isin(sorted(items.instruction_id.unique())[:2])]
    rates, verdicts, modes = {}, {}, ("rubric", "correct", "medhelm")
    for batch in (8, "auto"):
        judge = Judge.from_spec("smollm2", name=f"smollm2-{batch}", context=512, reserve=48, max_new_tokens=48,
                                retries=0, free_tokens=16, batch_size=batch)  # fmt: skip
        files = [work / f"a{batch}-{mode}.jsonl" for mode in modes]
        t0 = time.perf_counter()
        n = sum(J.run_judgments(judge, m, items, release, f, progress=False)["judgments"] for m, f in zip(modes, files))
        rates[batch] = n / (time.perf_counter() - t0)
        j = J.read_judgments(files)
        verdicts[batch] = j.sort_values(["mode", "instruction_id", "system"]).output.tolist()
    emit("smollm2_judge_06_default_batch8_before_judgments_per_s", rates[8], "{:.3f}")
    emit("smollm2_judge_06_default_auto_judgments_per_s", rates["auto"], "{:.3f}")
    same = sum(a == b for a, b in zip(verdicts[8], verdicts["auto"]))
    emit("smollm2_judge_06_default_auto_same_verdicts", f"{same}/{len(verdicts[8])}")
    emit("smollm2_judge_06_default_auto_speed_ratio", rates["auto"] / rates[8], "{:.2f}")


def planted_taus(release, work: Path) -> None:
    """The planted test judge's Table 4 tau: its verdicts against its probability-weighted scores."""
    from medalign_utils.evaluation import clinicians, correlation

    labels = clinicians.combine_raters(release.model_responses, "primary")
    with planted_judge(release, name="planted") as judge:
        J.run_judgments(judge, "rubric", J.response_items(release), release, work / "planted.jsonl", progress=False)
    scores = J.as_metric_scores(J.read_judgments(work / "planted.jsonl"), "rubric")
    t4 = correlation.table4(scores, labels, bootstrap=Bootstrap(n_resamples=200, seed=0)).set_index("metric").mean_tau
    emit("planted_tau_argmax", t4["judge:planted:rubric"], "{:.3f}")
    emit("planted_tau_expected", t4["judge:planted:rubric-expected"], "{:.3f}")


def shared_prefix(release, work: Path, *, context: int, pairs: int) -> None:
    """SmolLM2 judging one instruction at `context` tokens (the judge's default, the EHR fitted by
    `recent`), constrained, with its prompts' shared prefix prefilled once and with every prompt
    prefilled alone, side by side: judgments per second, prompt tokens computed, and whether the
    verdicts are the same. Rubric: the instruction's six responses; pairwise: `pairs` pairs in both
    orders (each prompt prefilled alone costs the same whatever their number, so a few show its rate)."""
    items = J.response_items(release)
    first = sorted(items.instruction_id.unique())[0]
    items = items[items.instruction_id == first]
    ratios = {}
    for mode, what in (("rubric", items), ("pairwise", J.pairwise_items(items).head(2 * pairs))):
        rates, outputs = {}, {}
        for share in (False, True):
            judge = Judge.from_spec("smollm2", name=f"share{share:d}-{mode}", context=context, retries=0,
                                    backend_options={"share_prefix": share})  # fmt: skip
            out = work / f"share{share:d}-{mode}.jsonl"
            seconds, stats = timed_run_mode(judge, mode, what, release, out)
            rates[share] = stats["judgments"] / seconds
            computed = judge.backend.prefill_stats
            outputs[share] = J.read_judgments(out).sort_values(["system", "pair", "order"]).output.tolist()
            label = "shared" if share else "alone"
            emit(f"shared_prefix_{mode}_{label}_judgments_per_s", rates[share], "{:.4f}")
            emit(f"shared_prefix_{mode}_{label}_prefill_tokens_computed", computed["prefill_computed"])
            emit(f"shared_prefix_{mode}_{label}_prompt_tokens", computed["prefill_tokens"])
        same = sum(a == b for a, b in zip(outputs[True], outputs[False]))
        emit(f"shared_prefix_{mode}_same_verdicts", f"{same}/{len(outputs[False])}")
        ratios[mode] = rates[True] / rates[False]
    emit("shared_prefix_speed_ratio_rubric", ratios["rubric"], "{:.2f}")
    emit("shared_prefix_speed_ratio_pairwise", ratios["pairwise"], "{:.2f}")


def timed_run_mode(judge: J.Judge, mode: str, items, release, out: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    stats = J.run_judgments(judge, mode, items, release, out, progress=False)
    return time.perf_counter() - t0, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--service-time", type=float, default=0.05, help="seconds the loopback judge takes per request")
    ap.add_argument("--items", type=int, default=96, help="responses judged through the loopback judge")
    ap.add_argument("--local-items", type=int, default=16, help="responses judged by SmolLM2")
    ap.add_argument("--only-shared-prefix", action="store_true", help="the shared-prefix comparison alone")
    ap.add_argument("--share-context", type=int, default=J.JudgeSettings().context, help="the judge's context")
    ap.add_argument("--share-pairs", type=int, default=3, help="pairs (both orders) in the pairwise comparison")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medalign-bench-judge-"))
    try:
        spec = CohortSpec(patients=4, instructions=60, gold=40, multi_rated=5, seed=0, length_log_median=9.0,
                          length_log_sigma=0.5, min_tokens=3000, max_tokens=20_000)  # fmt: skip
        make_cohort(work / "cohort", spec, workers=1, progress=False)
        release = load_release(work / "cohort")
        if args.only_shared_prefix:
            shared_prefix(release, work, context=args.share_context, pairs=args.share_pairs)
            return
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
                constrained=False,
            )
            seconds, stats = timed_run(judge, local_items, release, work / f"b{batch}.jsonl")
            local[batch] = stats["judgments"] / seconds
            emit(f"smollm2_batch{batch}_judgments_per_s", local[batch], "{:.3f}")
            emit(f"smollm2_batch{batch}_prompt_tokens", stats["prompt_tokens"])
            emit(f"smollm2_batch{batch}_invalid", stats["invalid"])
        emit("smollm2_batched_speed_ratio", local[8] / local[1], "{:.2f}")
        validity(release, local_items, work)
        local_batches(release, work)
        planted_taus(release, work)
        loopback_overhead(release, J.response_items(release), work)
        shared_prefix(release, work, context=args.share_context, pairs=args.share_pairs)
        emit("peak_rss_mb", peak_rss_mb(), "{:.0f}")
        emit("concurrency_speed_ratio", rates[8] / rates[1], "{:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
