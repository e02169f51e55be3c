"""One-at-a-time generation against the batched engine, with SmolLM2-135M-Instruct, on two workloads.

Usage: python benchmarks/bench_generate.py [--model DIR] [--random-weights] [--device cpu|cuda] [--quick]

* decode-heavy: 32 prompts of 64-256 tokens, 256 new tokens each (forced: min_new_tokens), batch 8;
  floor: batched >= 3x one-at-a-time.
* paper-like: 8 prompts of about 2,000 tokens, 128 new tokens; prefill dominates on a CPU, so the
  floor is only that batching is not slower (>= 1.0x). The achieved prefill GFLOP/s is printed
  beside a float32 matrix-multiply peak measured on the same machine.

`--random-weights` builds the model from its config with random weights: the same architecture and
cost, for a machine the weights cannot travel to (the GPU check). The last line is the
decode-heavy ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import emit, peak_rss_mb

from medalign_utils.generation import GenerationSettings, load_backend

TEXT = (
    "Patient is a 67-year-old woman with a history of type 2 diabetes mellitus, essential hypertension and "
    "hyperlipidemia. Current medications include metformin, lisinopril and atorvastatin. Vitals: blood pressure "
    "142/88, heart rate 76, weight 81.2 kg. Labs notable for hemoglobin A1c 7.4 % and creatinine 1.10 mg/dL. "
    "Plan: continue metformin and recheck hemoglobin A1c in 3 months; low sodium diet; repeat lipid panel. "
)


def make_prompts(tokenizer, lengths: list[int]) -> list[str]:
    ids = tokenizer(TEXT * 200, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[i * 37 : i * 37 + n]) for i, n in enumerate(lengths)]


def timed_generate(backend, prompts, batch_size: int):
    backend.batch_size = batch_size
    t0 = time.perf_counter()
    answers = backend.generate(prompts)
    seconds = time.perf_counter() - t0
    return sum(a.new_tokens for a in answers), seconds, answers


def matmul_peak(device: str, dtype) -> float:
    import torch

    n = 4096 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    reps = 3 if device == "cpu" else 20
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def prefill_gflops(backend, prompts) -> tuple[float, float]:
    """(GFLOP/s, seconds) of one forward pass over the batch (the prefill)."""
    import torch

    enc = backend.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(backend.device)
    cfg = backend.model.config
    n_params = sum(p.numel() for n, p in backend.model.named_parameters() if "embed" not in n)
    tokens = int(enc["attention_mask"].sum())
    length = enc["input_ids"].shape[1]
    attn = 2 * 2 * cfg.num_hidden_layers * length * length * cfg.hidden_size * len(prompts) / 2  # causal QK^T and AV
    flops = 2 * n_params * tokens + attn
    with torch.inference_mode():
        backend.model(**enc)
        if backend.device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        backend.model(**enc)
        if backend.device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    return flops / seconds / 1e9, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2 from its package)")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the decode-heavy prompts")
    args = ap.parse_args()
    import torch

    args.model = args.model or "smollm2"
    rng = np.random.default_rng(0)
    n_decode = 8 if args.quick else 32
    decode_lengths = rng.integers(64, 257, size=n_decode).tolist()
    settings = GenerationSettings(max_new_tokens=256, min_new_tokens=256)
    backend = load_backend(
        args.model, settings, device=args.device, dtype=args.dtype, random_weights=args.random_weights
    )
    emit("device", backend.device)
    emit("dtype", str(backend.model.dtype).replace("torch.", ""))
    emit("model", f"{args.model}{' (random weights)' if args.random_weights else ''}")
    prompts = make_prompts(backend.tokenizer, decode_lengths)
    backend.generate(prompts[:2])  # warm-up
    one_tok, one_s, _ = timed_generate(backend, prompts, 1)
    bat_tok, bat_s, _ = timed_generate(backend, prompts, 8)
    emit("decode_heavy_prompts", len(prompts))
    emit("decode_heavy_prompt_tokens", f"{min(decode_lengths)}-{max(decode_lengths)}")
    emit("decode_heavy_new_tokens_each", 256)
    emit("decode_heavy_one_at_a_time_tokens_per_s", one_tok / one_s, "{:.1f}")
    emit("decode_heavy_batched8_tokens_per_s", bat_tok / bat_s, "{:.1f}")
    # Paper-like: long prompts, prefill-dominated.
    backend.settings = GenerationSettings(max_new_tokens=128, min_new_tokens=128)
    long_prompts = make_prompts(backend.tokenizer, [2000] * 8)
    n_long = [len(backend.encode(p)) for p in long_prompts]
    p_one_tok, p_one_s, _ = timed_generate(backend, long_prompts, 1)
    p_bat_tok, p_bat_s, _ = timed_generate(backend, long_prompts, 8)
    gflops, prefill_s = prefill_gflops(backend, long_prompts)
    peak = matmul_peak(backend.device, backend.model.dtype)
    emit("paper_like_prompts", len(long_prompts))
    emit("paper_like_prompt_tokens_mean", float(np.mean(n_long)), "{:.0f}")
    emit("paper_like_new_tokens_each", 128)
    emit("paper_like_one_at_a_time_tokens_per_s", p_one_tok / p_one_s, "{:.1f}")
    emit("paper_like_batched8_tokens_per_s", p_bat_tok / p_bat_s, "{:.1f}")
    emit("paper_like_speed_ratio", (p_bat_tok / p_bat_s) / (p_one_tok / p_one_s), "{:.2f}")
    emit("prefill_batch_seconds", prefill_s, "{:.2f}")
    emit("prefill_gflops_per_s", gflops, "{:.1f}")
    emit(f"matmul_peak_gflops_per_s_{str(backend.model.dtype).replace('torch.', '')}", peak, "{:.1f}")
    emit("prefill_share_of_peak", gflops / peak, "{:.2f}")
    emit("peak_rss_mb", peak_rss_mb(children=False), "{:.0f}")
    if torch.cuda.is_available() and backend.device.startswith("cuda"):
        emit("peak_gpu_mem_mb", torch.cuda.max_memory_allocated() / 2**20, "{:.0f}")
    emit("decode_heavy_speed_ratio", (bat_tok / bat_s) / (one_tok / one_s), "{:.2f}")


if __name__ == "__main__":
    main()
