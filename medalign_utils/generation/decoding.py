"""Batched greedy decoding of a local causal LM, near what the machine allows.

`model.generate` on a left-padded batch leaves most of a batch's possible speed unused on a CPU:
its cache grows by concatenation (every step copies every layer's keys and values), the prompts
are prefilled padded to the longest, and rows that have finished keep being computed. Here:

* each prompt is prefilled alone, unpadded (the attention kernels' causal path, exactly the
  computation one-at-a-time decoding does), and its keys and values are copied into one batch
  cache, right-aligned so that every row writes the same column at each step;
* the batch cache is allocated once for the longest prompt plus the new tokens: a step writes one
  column and attends over a view of the filled part, nothing is concatenated;
* prompts that share a prefix (the judge's prompts of one instruction share everything before the
  responses; `ehr_first` prompts of one patient share the record) have it prefilled once: each
  prompt continues from the keys and values of the prompt before it in token order, as far as the
  two agree (`share_prefix`), and only its own rest is computed;
* a row that has finished leaves the batch, its cache row with it, so a batch costs what its
  unfinished rows cost;
* how many prompts share a batch comes from a memory budget for their cache (`plan_batches`),
  prompts sorted by length so that a batch holds prompts of similar length.

Greedy decoding only: each step takes the highest-scoring token after the logits processors (the
judge's skeleton) and, below `min_new_tokens`, with end-of-sequence masked, as transformers does.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import numpy as np


@dataclass
class Decoded:
    """One prompt's new tokens (end-of-sequence excluded) and why decoding stopped."""

    tokens: list[int]
    finish_reason: str  # "stop": an end-of-sequence token; "length": max_new_tokens reached


def kv_bytes_per_token(model) -> int:
    """Bytes of cached keys and values one token takes in every layer of `model`."""
    cfg = model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    itemsize = next(model.parameters()).element_size()
    return 2 * cfg.num_hidden_layers * heads * head_dim * itemsize


def memory_budget(device: str, *, share: float = 0.25) -> int:
    """Bytes the batch caches may take: `share` of the memory free now on `device`."""
    if str(device).startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * share)
    import psutil

    return int(psutil.virtual_memory().available * share)


# Below this many tokens in common a prompt is prefilled whole: copying a short prefix saves nothing.
MIN_SHARED_PREFIX = 16


def plan_batches(
    lengths, *, max_new_tokens: int, bytes_per_token: int, budget: int, max_batch: int, prompts=None
) -> list[list[int]]:
    """Prompts (by index) in batches: sorted by length, each batch as many prompts as `max_batch`
    allows and whose cache (longest prompt + new tokens, per row) fits in `budget` bytes. A prompt
    alone over the budget still gets a batch of its own. With `prompts` (their token ids), sorted by
    their tokens instead, so prompts that share a prefix are neighbours in one batch."""
    if prompts is not None:
        order = sorted(range(len(lengths)), key=lambda i: prompts[i])
    else:
        order = np.argsort(np.asarray(lengths), kind="stable").tolist()
    batches: list[list[int]] = []
    for i in order:
        cur = batches[-1] if batches else None
        if cur is not None and len(cur) < max_batch:
            rows = len(cur) + 1
            if rows * (lengths[i] + max_new_tokens) * bytes_per_token <= budget:
                cur.append(i)
                continue
        batches.append([i])
    return batches


def decode_greedy(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    min_new_tokens: int = 0,
    eos_ids,
    processor=None,
    share_prefix: bool = True,
    stats: dict | None = None,
) -> list[Decoded]:
    """Greedy continuations of `prompts` (token ids) decoded as one batch; `processor` is a
    transformers-style logits processor (`processor(input_ids, scores)`) that may also implement
    `select(rows)` to follow rows leaving the batch. `share_prefix`: a prefix two prompts share is
    prefilled once (the answers are the same; the logits differ by float rounding only). `stats`,
    when given, gains `prefill_tokens` (the prompts' tokens) and `prefill_computed` (those computed)."""
    import torch

    device = next(model.parameters()).device
    eos = torch.tensor(sorted(eos_ids), device=device)
    width = max(len(p) for p in prompts)
    cache, logits, computed = _prefill(model, prompts, width + max_new_tokens, share_prefix=share_prefix)
    if stats is not None:
        stats["prefill_tokens"] = stats.get("prefill_tokens", 0) + sum(len(p) for p in prompts)
        stats["prefill_computed"] = stats.get("prefill_computed", 0) + computed
    rows = list(range(len(prompts)))  # which prompt each batch row is
    positions = torch.tensor([len(p) for p in prompts], device=device)
    mask = torch.zeros(len(prompts), width + max_new_tokens, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        mask[b, width - len(p) : width] = 1
    history = torch.zeros(len(prompts), max_new_tokens, dtype=torch.long, device=device)
    out: list[Decoded | None] = [None] * len(prompts)
    for step in range(max_new_tokens):
        scores = logits.float()
        if processor is not None:
            scores = processor(_processor_ids(prompts, rows, history, step=step, device=device), scores)
        if step < min_new_tokens:
            scores[:, eos] = float("-inf")
        token = scores.argmax(dim=-1)
        history[:, step] = token
        done = torch.isin(token, eos) | (step + 1 == max_new_tokens)
        if bool(done.any()):
            for b in done.nonzero().flatten().tolist():
                ended = bool(torch.isin(token[b], eos))
                new = history[b, : step + (0 if ended else 1)].tolist()
                out[rows[b]] = Decoded(new, "stop" if ended else "length")
            keep = (~done).nonzero().flatten()
            if len(keep) == 0:
                break
            rows = [rows[b] for b in keep.tolist()]
            cache.batch_select_indices(keep)
            token, positions, mask, history = token[keep], positions[keep], mask[keep], history[keep]
            if processor is not None and hasattr(processor, "select"):
                processor.select(keep.tolist())
        mask[:, width + step] = 1
        logits = _step(model, cache, token, positions=positions + step, mask=mask[:, : width + step + 1])
    return out  # type: ignore[return-value]


def _processor_ids(prompts, rows, history, *, step: int, device):
    """The ids a logits processor sees: each row's prompt (left-padded) and its tokens so far."""
    import torch

    width = max(len(prompts[r]) for r in rows)
    ids = torch.zeros(len(rows), width + step, dtype=torch.long, device=device)
    for b, r in enumerate(rows):
        ids[b, width - len(prompts[r]) : width] = torch.tensor(prompts[r], device=device)
    ids[:, width:] = history[:, :step]
    return ids


def _cache_kwarg(model) -> str:
    """transformers 5 calls the cache `cache` (`past_key_values` before, deprecated since)."""
    return _cache_kwarg_of(type(model))


@functools.cache
def _cache_kwarg_of(model_class) -> str:  # once per class: a signature costs more than a small step's ops
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def shared_prefix_length(a: list[int], b: list[int]) -> int:
    """How many leading tokens two prompts have in common."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]: halve the gap (list slices compare in C)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if a[:mid] == b[:mid] else (lo, mid)
    return lo


def _prefill(model, prompts: list[list[int]], capacity: int, *, share_prefix: bool = True):
    """Each prompt's keys and values, copied right-aligned into one batch cache with room for
    `capacity` columns; returns the cache, the last position's logits of every prompt and the
    prompt tokens computed. Prompts are taken in token order; with `share_prefix`, each one
    continues from the keys and values of the one before it as far as the two agree (at least
    `MIN_SHARED_PREFIX` tokens, its last token always computed), so a shared prefix is computed once."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import Cache

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    layers, last, computed = None, [None] * len(prompts), 0
    kwarg = _cache_kwarg(model)
    previous, previous_kv = None, None
    for b in sorted(range(len(prompts)), key=lambda i: prompts[i]) if share_prefix else range(len(prompts)):
        p = prompts[b]
        shared = min(shared_prefix_length(previous, p), len(p) - 1) if share_prefix and previous else 0
        own = DynamicCache(config=model.config)
        if shared >= MIN_SHARED_PREFIX:
            for i, (k, v) in enumerate(previous_kv):
                own.update(k[:, :, :shared], v[:, :, :shared], i)
        else:
            shared = 0
        ids = torch.tensor([p[shared:]], device=device)
        result = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{kwarg: own})
        computed += len(p) - shared
        last[b] = result.logits[:, -1]
        if layers is None:
            layers = [_batch_layer_class().empty(x.keys, len(prompts), width, capacity) for x in own.layers]
        for layer, src in zip(layers, own.layers):
            layer.put(b, src.keys, src.values)
        if share_prefix:
            previous, previous_kv = p, [(x.keys, x.values) for x in own.layers]
    return Cache(layers=layers), torch.cat(last), computed


def _step(model, cache, token, *, positions, mask):
    result = model(
        input_ids=token[:, None],
        position_ids=positions[:, None],
        attention_mask=mask,
        use_cache=True,
        logits_to_keep=1,
        **{_cache_kwarg(model): cache},
    )
    return result.logits[:, -1]


@functools.cache
def _batch_layer_class():
    """The cache layer class, made on first use (transformers is imported only when a model runs)."""
    from transformers.cache_utils import DynamicLayer

    class BatchLayer(DynamicLayer):
        """A layer's keys and values for a whole batch in buffers allocated once: `update` writes the
        new columns and returns views of the filled part (no concatenation, no copy)."""

        @classmethod
        def empty(cls, like, batch: int, width: int, capacity: int):
            layer = cls()
            shape = (batch, like.shape[1], capacity, like.shape[-1])
            layer.k_buf, layer.v_buf = like.new_zeros(shape), like.new_zeros(shape)
            layer.length, layer.is_initialized, layer.device = width, True, like.device
            layer._views()
            return layer

        def put(self, row: int, keys, values) -> None:
            n = keys.shape[-2]
            self.k_buf[row, :, self.length - n : self.length] = keys[0]
            self.v_buf[row, :, self.length - n : self.length] = values[0]

        def _views(self) -> None:
            self.keys, self.values = self.k_buf[:, :, : self.length], self.v_buf[:, :, : self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            n = key_states.shape[-2]
            if self.length + n > self.k_buf.shape[2]:
                raise RuntimeError("batch cache full: decode_greedy sizes it for the longest prompt and max_new_tokens")
            self.k_buf[:, :, self.length : self.length + n] = key_states
            self.v_buf[:, :, self.length : self.length + n] = value_states
            self.length += n
            self._views()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices) -> None:
            self.k_buf, self.v_buf = self.k_buf[indices], self.v_buf[indices]
            self._views()

    return BatchLayer
