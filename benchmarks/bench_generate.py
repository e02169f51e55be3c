"""One-at-a-time generation (`model.generate`, one prompt at a time) against the batched engine
(`TransformersBackend`, `generation.decoding`), with SmolLM2-135M-Instruct, on two workloads.

Usage: python benchmarks/bench_generate.py [--model DIR] [--random-weights] [--device cpu|cuda] [--quick]

* decode-heavy: 32 prompts of 64-256 tokens, 256 new tokens each (forced: min_new_tokens);
  floor: batched >= 5x one-at-a-time.
* paper-like: 8 prompts of about 2,000 tokens, 128 new tokens; prefill is a large share on a CPU;
  floor: batched >= 2x one-at-a-time.

The engine runs with its batch size from its memory budget (`batch_size="auto"`) and at 8; the
engine it replaced (`model.generate` on left-padded batches of 8) runs beside them, the before.
Greedy answers must be identical to one-at-a-time's (counted).
Beside each rate: the weight traffic achieved (decoder passes x the weights' bytes, per second)
against a memory bandwidth measured here, and FLOP/s against a matrix-multiply peak measured here,
so that the distance to the machine's limit is a number.

`--ehr-first` measures the record-first prompts instead (issue 37): a patient's instructions answered
with the shared record prefilled once and alone, ending in `ehr_first_shared_prefix_speed_ratio`
(floor 2).

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


class PassCounter:
    """Counts the decoder's forward passes (each reads every weight once) and the tokens they process."""

    def __init__(self, model):
        self.passes = self.tokens = 0
        self.handle = model.model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.passes += 1
        self.tokens += int(ids.numel())

    def reset(self):
        self.passes = self.tokens = 0


def one_at_a_time(backend, prompts, settings: GenerationSettings) -> tuple[list[str], int, float]:
    """The baseline: transformers' own `generate`, one prompt at a time (no padding). Returns the
    answers (decoded as the backend decodes them), the new tokens and the seconds."""
    import torch

    model, tok = backend.model, backend.tokenizer
    eos = backend._eos_ids()
    out, new = [], 0
    t0 = time.perf_counter()
    for p in prompts:
        ids = torch.tensor([backend.encode(p)], device=backend.device)
        with torch.inference_mode():
            gen = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=tok.pad_token_id,
            )
        row = gen[0, ids.shape[1] :].tolist()
        cut = next((k for k, t in enumerate(row) if t in eos), None)
        kept = row[:cut] if cut is not None else row
        out.append(tok.decode(kept, skip_special_tokens=True).strip())
        new += len(kept)
    _sync(backend)
    return out, new, time.perf_counter() - t0


def engine(backend, prompts, batch_size) -> tuple[list[str], float, int, int]:
    """The batched engine: answers, seconds, the largest batch it formed, new tokens."""
    backend.batch_size = backend.AUTO_MAX_BATCH if batch_size == "auto" else batch_size
    ids = [backend.encode(p) for p in prompts]
    batches = backend._plan(ids, None)
    t0 = time.perf_counter()
    answers = backend.generate(prompts)
    _sync(backend)
    seconds = time.perf_counter() - t0
    return [a.text for a in answers], seconds, max(len(b) for b in batches), sum(a.new_tokens for a in answers)


def padded_batches(backend, prompts, batch_size: int = 8) -> tuple[list[str], float, int, int]:
    """The engine this one replaced: `model.generate` on left-padded batches of 8 prompts of similar
    length (what `TransformersBackend` did before; it still does it for sampling)."""
    ids = [backend.encode(p) for p in prompts]
    order = np.argsort([len(x) for x in ids], kind="stable").tolist()
    answers = [None] * len(prompts)
    t0 = time.perf_counter()
    for i in range(0, len(order), batch_size):
        batch = order[i : i + batch_size]
        for j, ans in zip(batch, backend._generate_padded([ids[j] for j in batch])):
            answers[j] = ans
    _sync(backend)
    return [a.text for a in answers], time.perf_counter() - t0, batch_size, sum(a.new_tokens for a in answers)


def _sync(backend) -> None:
    if backend.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


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


def memory_bandwidth(device: str) -> float:
    """Bytes per second one full read of a 1 GiB tensor achieves (the weights' path each decode step)."""
    import torch

    x = torch.ones(2**28, device=device, dtype=torch.float32)
    x.sum()
    if device != "cpu":
        torch.cuda.synchronize()
    reps = 5 if device == "cpu" else 50
    t0 = time.perf_counter()
    for _ in range(reps):
        x.sum()
    if device != "cpu":
        torch.cuda.synchronize()
    return x.numel() * x.element_size() * reps / (time.perf_counter() - t0)


def workload(backend, counter, prompts, settings, *, name: str, limits: dict) -> float:
    """Run one workload both ways; print rates, identity of answers and distance to the limits;
    returns the speed ratio (engine with its budgeted batch over one-at-a-time)."""
    backend.settings = settings
    weight_bytes, n_params = limits["weight_bytes"], limits["n_params"]
    counter.reset()
    ref, one_tok, one_s = one_at_a_time(backend, prompts, settings)
    one_passes = counter.passes
    rows = {}
    for label, run in (
        ("padded8_before", lambda: padded_batches(backend, prompts)),
        ("batched_auto", lambda: engine(backend, prompts, "auto")),
        ("batched_8", lambda: engine(backend, prompts, 8)),
    ):
        counter.reset()
        tokens, seconds, biggest, new = run()
        rows[label] = (tokens, seconds, biggest, new, counter.passes, counter.tokens)
    emit(f"{name}_prompts", len(prompts))
    emit(f"{name}_new_tokens_each", settings.max_new_tokens)
    emit(f"{name}_one_at_a_time_tokens_per_s", one_tok / one_s, "{:.1f}")
    emit(f"{name}_one_at_a_time_weight_gb_per_s", one_passes * weight_bytes / one_s / 1e9, "{:.2f}")
    for kind, (tokens, seconds, biggest, new, passes, processed) in rows.items():
        label = f"{name}_{kind}"
        emit(f"{label}_largest_batch", biggest)
        emit(f"{label}_tokens_per_s", new / seconds, "{:.1f}")
        emit(f"{label}_weight_gb_per_s", passes * weight_bytes / seconds / 1e9, "{:.2f}")
        emit(f"{label}_gflops_per_s", 2 * n_params * processed / seconds / 1e9, "{:.1f}")
        same = sum(a == b for a, b in zip(tokens, ref))
        emit(f"{label}_answers_identical_to_one_at_a_time", f"{same}/{len(ref)}")
        emit(f"{label}_speed_ratio", (new / seconds) / (one_tok / one_s), "{:.2f}")
    _, seconds, _, new, passes, _ = rows["batched_auto"]
    emit(f"{name}_weight_traffic_share_of_bandwidth", passes * weight_bytes / seconds / limits["bandwidth"], "{:.2f}")
    return (new / seconds) / (one_tok / one_s)


def ehr_first(args) -> None:
    """The record first, on the default cohort: the `ehr_first` prompts of `--ehr-first-patients`
    patients' instructions (all of each patient's, `recent` at 2048 tokens of SmolLM2), answered with
    the shared record prefilled once and with every prompt prefilled alone, side by side: prefill
    tokens computed, answers per second, and the same answers each way. The last line is the ratio."""
    from medalign_utils import context as C
    from medalign_utils.config import project_path
    from medalign_utils.data import open_release
    from medalign_utils.synthetic import CohortSpec, make_cohort

    data = project_path("data/synthetic")
    if not (data / "SYNTHETIC").exists():
        make_cohort(data, CohortSpec(), progress=False)
    release = open_release(data)
    tok = C.load_tokenizer("smollm2")
    people = sorted(release.instructions.person_id.unique())[: args.ehr_first_patients]
    instructions = release.instructions[release.instructions.person_id.isin(people)]
    instructions = instructions.groupby("person_id").head(args.ehr_first_per_patient)
    template = C.template_named("ehr_first")
    grid = C.build_prompt_grid(release, tok, C.GridSettings(contexts=(2048,), strategies=("recent",)),
                               template=template, instructions=instructions, progress=False)  # fmt: skip
    prompts = C.materialize_prompts(grid[~grid.dropped], release, tok, template=template).prompt.tolist()
    emit("ehr_first_prompts", len(prompts))
    emit("ehr_first_patients", len(people))
    rates, answers = {}, {}
    for share in (False, True):
        backend = load_backend("smollm2", settings=GenerationSettings(max_new_tokens=args.ehr_first_new_tokens),
                               share_prefix=share)  # fmt: skip
        backend.generate(prompts[:1])  # warm-up
        backend.prefill_stats = {"prefill_tokens": 0, "prefill_computed": 0}
        t0 = time.perf_counter()
        answers[share] = [a.text for a in backend.generate(prompts)]
        rates[share] = len(prompts) / (time.perf_counter() - t0)
        label = "shared" if share else "alone"
        emit(f"ehr_first_{label}_prefill_tokens_computed", backend.prefill_stats["prefill_computed"])
        emit(f"ehr_first_{label}_prompt_tokens", backend.prefill_stats["prefill_tokens"])
        emit(f"ehr_first_{label}_answers_per_s", rates[share], "{:.3f}")
    emit("ehr_first_same_answers", f"{sum(a == b for a, b in zip(answers[True], answers[False]))}/{len(prompts)}")
    emit("ehr_first_shared_prefix_speed_ratio", rates[True] / rates[False], "{:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model folder (default: SmolLM2 from its package)")
    ap.add_argument("--random-weights", action="store_true", help="the architecture with random weights")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    ap.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (CUDA default)")
    ap.add_argument("--quick", action="store_true", help="a quarter of the decode-heavy prompts, half the paper-like")
    ap.add_argument("--ehr-first", action="store_true", help="only the record-first prompts, shared and alone")
    ap.add_argument("--ehr-first-patients", type=int, default=4, help="patients whose instructions are answered")
    ap.add_argument("--ehr-first-per-patient", type=int, default=6, help="instructions of each patient")
    ap.add_argument("--ehr-first-new-tokens", type=int, default=64, help="new tokens (notebook 03's default)")
    args = ap.parse_args()
    if args.ehr_first:
        ehr_first(args)
        return
    import torch

    args.model = args.model or "smollm2"
    rng = np.random.default_rng(0)
    decode_lengths = rng.integers(64, 257, size=8 if args.quick else 32).tolist()
    backend = load_backend(args.model, device=args.device, dtype=args.dtype, random_weights=args.random_weights)
    model = backend.model
    emit("device", backend.device)
    emit("dtype", str(model.dtype).replace("torch.", ""))
    emit("model", f"{args.model}{' (random weights)' if args.random_weights else ''}")
    limits = {
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "n_params": sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
        + model.get_output_embeddings().weight.numel(),  # the head's matmul (tied to the embedding or not)
        "bandwidth": memory_bandwidth(backend.device),
    }
    peak = matmul_peak(backend.device, model.dtype)
    emit("memory_bandwidth_gb_per_s", limits["bandwidth"] / 1e9, "{:.1f}")
    emit(f"matmul_peak_gflops_per_s_{str(model.dtype).replace('torch.', '')}", peak, "{:.1f}")
    emit("weights_mb", limits["weight_bytes"] / 1e6, "{:.0f}")
    emit("weight_traffic_limit_steps_per_s", limits["bandwidth"] / limits["weight_bytes"], "{:.1f}")
    counter = PassCounter(model)
    prompts = make_prompts(backend.tokenizer, decode_lengths)
    backend.settings = GenerationSettings(max_new_tokens=8)
    backend.generate(prompts[:2])  # warm-up
    one_at_a_time(backend, prompts[:1], backend.settings)
    emit("decode_heavy_prompt_tokens", f"{min(decode_lengths)}-{max(decode_lengths)}")
    decode = GenerationSettings(max_new_tokens=256, min_new_tokens=256)
    ratio = workload(backend, counter, prompts, decode, name="decode_heavy", limits=limits)
    long_prompts = make_prompts(backend.tokenizer, [2000] * (4 if args.quick else 8))
    emit("paper_like_prompt_tokens_mean", float(np.mean([len(backend.encode(p)) for p in long_prompts])), "{:.0f}")
    paper = GenerationSettings(max_new_tokens=128, min_new_tokens=128)
    workload(backend, counter, long_prompts, paper, name="paper_like", limits=limits)
    emit("peak_rss_mb", peak_rss_mb(children=False), "{:.0f}")
    if torch.cuda.is_available() and backend.device.startswith("cuda"):
        emit("peak_gpu_mem_mb", torch.cuda.max_memory_allocated() / 2**20, "{:.0f}")
    emit("decode_heavy_speed_ratio", ratio, "{:.2f}")


if __name__ == "__main__":
    main()
