"""The batched greedy engine: its answers are one-at-a-time `model.generate`'s, token for token,
whatever the batch, rows that finish early, forced lengths or a judge's skeleton; its batches
follow the memory budget; SmolLM2's answers are pinned to what the engine before it gave."""

from __future__ import annotations

import hashlib

import pytest
import torch

from medalign_utils.generation import GenerationSettings, TransformersBackend
from medalign_utils.generation.decoding import decode_greedy, kv_bytes_per_token, plan_batches

PROMPTS = [
    "Question: What was the last glucose?",
    "The patient has hypertension and takes",
    "Instruction: Answer the following question based on the EHR: Question: glucose? " * 3,
    "lisinopril",
    '<entry timestamp="2020-01-01 08:00"><event type="measurement" name="Glucose">104.00</event></entry> Q:',
    "The patient",
]


def generate_one_at_a_time(model, ids, *, max_new_tokens, min_new_tokens=0, eos_ids=None):
    """transformers' own greedy `generate`, one prompt at a time: the reference."""
    eos = sorted(eos_ids) if eos_ids is not None else model.generation_config.eos_token_id
    out = []
    for x in ids:
        t = torch.tensor([x])
        with torch.inference_mode():
            gen = model.generate(
                input_ids=t,
                attention_mask=torch.ones_like(t),
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                eos_token_id=eos,
                pad_token_id=0,
            )
        row = gen[0, len(x) :].tolist()
        eos_set = set(eos) if isinstance(eos, list) else {eos}
        cut = next((k for k, tok in enumerate(row) if tok in eos_set), None)
        out.append(row[:cut] if cut is not None else row)
    return out


@pytest.fixture(scope="module")
def tiny(tiny_lm):
    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=24))
    return backend, [backend.encode(p) for p in PROMPTS]


def test_the_engine_gives_one_at_a_time_answers_token_for_token(tiny):
    backend, ids = tiny
    reference = generate_one_at_a_time(backend.model, ids, max_new_tokens=24, min_new_tokens=24)
    with torch.inference_mode():
        decoded = decode_greedy(backend.model, ids, max_new_tokens=24, min_new_tokens=24, eos_ids={0})
    assert [d.tokens for d in decoded] == reference
    assert {d.finish_reason for d in decoded} == {"length"}


def test_rows_that_finish_early_leave_the_batch_and_the_rest_are_unchanged(tiny):
    backend, ids = tiny
    free = generate_one_at_a_time(backend.model, ids, max_new_tokens=24, eos_ids={10_000})
    # A token the first prompt produces at step 3 ends every row where it appears, at different steps.
    stop = free[0][3]
    reference = generate_one_at_a_time(backend.model, ids, max_new_tokens=24, eos_ids={stop})
    assert len({len(r) for r in reference}) > 1, "rows should finish at different steps"
    with torch.inference_mode():
        decoded = decode_greedy(backend.model, ids, max_new_tokens=24, eos_ids={stop})
    assert [d.tokens for d in decoded] == reference
    assert decoded[0].finish_reason == "stop" and len(decoded[0].tokens) == 3


@pytest.mark.parametrize("batch_size", [1, 2, "auto"])
def test_the_backend_answers_are_the_same_at_every_batch_size(tiny_lm, batch_size):
    settings = GenerationSettings(max_new_tokens=16, min_new_tokens=16)
    one = TransformersBackend(tiny_lm, settings=settings, batch_size=1).generate(PROMPTS)
    other = TransformersBackend(tiny_lm, settings=settings, batch_size=batch_size).generate(PROMPTS)
    assert [a.text for a in other] == [a.text for a in one]
    assert [a.new_tokens for a in other] == [16] * len(PROMPTS)
    assert [a.prompt_tokens for a in other] == [a.prompt_tokens for a in one]


def test_batches_follow_the_memory_budget_and_the_batch_cap():
    lengths = [100, 10, 50, 400, 20, 30]
    per_row = (400 + 16) * 10
    assert plan_batches(lengths, max_new_tokens=16, bytes_per_token=10, budget=10**9, max_batch=64) == [
        [1, 4, 5, 2, 0, 3]
    ]
    capped = plan_batches(lengths, max_new_tokens=16, bytes_per_token=10, budget=10**9, max_batch=4)
    assert capped == [[1, 4, 5, 2], [0, 3]]
    tight = plan_batches(lengths, max_new_tokens=16, bytes_per_token=10, budget=per_row, max_batch=64)
    for batch in tight:  # every batch's cache fits, or it is one prompt alone
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * (longest + 16) * 10 <= per_row
    assert sorted(i for b in tight for i in b) == list(range(len(lengths)))
    assert [3] in tight  # the longest alone


def test_the_cache_budget_counts_every_layers_keys_and_values(tiny_lm):
    backend = TransformersBackend(tiny_lm)
    cfg = backend.model.config
    assert kv_bytes_per_token(backend.model) == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * 8 * 4


def test_sampling_still_runs_model_generate_seeded(tiny_lm):
    settings = GenerationSettings(max_new_tokens=8, do_sample=True, temperature=0.9, seed=3)
    a = TransformersBackend(tiny_lm, settings=settings, batch_size=2).generate(PROMPTS)
    b = TransformersBackend(tiny_lm, settings=settings, batch_size=2).generate(PROMPTS)
    assert [x.text for x in a] == [x.text for x in b]


def test_a_judges_skeleton_decodes_to_the_same_verdicts_and_probabilities_as_model_generate(tiny_lm):
    from medalign_utils.evaluation.judge import get_mode

    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=8))
    constraint = get_mode("rubric").constraint(free_tokens=6)
    ids = [backend.encode(p) for p in PROMPTS]
    engine = backend._greedy_batch(ids, constraint)
    generate = backend._generate_padded(ids, constraint)  # model.generate with the same processor, greedy
    assert [a.text for a in engine] == [a.text for a in generate]
    for a, b in zip(engine, generate):
        assert a.choice_probs.keys() == b.choice_probs.keys()
        for key in a.choice_probs:
            for value, p in a.choice_probs[key].items():
                assert p == pytest.approx(b.choice_probs[key][value], abs=1e-5)


# SmolLM2's greedy answers to these prompts, as the engine before this one (model.generate on a
# left-padded batch of 8) and one-at-a-time decoding both gave them: sha256 of the answers joined by
# NUL. Pinned so that any change to decoding that changes an answer is seen.
SMOLLM2_PINNED = "16137e8cdace515e35f9bbf0b65663a6269f23e79b9777ddb9a68d91a22289bd"


@pytest.mark.slow(seconds=6)
def test_smollm2_answers_are_pinned():
    from medalign_utils.generation import load_backend

    backend = load_backend("smollm2", GenerationSettings(max_new_tokens=48))
    prompts = [backend.chat_prompt(p) for p in PROMPTS]
    answers = [a.text for a in backend.generate(prompts)]
    digest = hashlib.sha256("\0".join(answers).encode()).hexdigest()
    assert digest == SMOLLM2_PINNED, answers


class _FirstScores:
    """A logits processor that changes nothing and keeps the scores of the first step (the prefill's)."""

    def __init__(self):
        self.first = None

    def __call__(self, input_ids, scores):
        if self.first is None:
            self.first = torch.softmax(scores.float(), dim=-1).clone()
        return scores


def test_a_shared_prefix_is_prefilled_once_with_the_same_answers(tiny):
    """Prompts that share a long prefix (a judge's prompts of one instruction) and prompts that share
    nothing: with sharing, the shared part is computed once; the answers are token for token those
    of prefilling each prompt alone, and the first step's probabilities agree within 1e-5."""
    backend, _ = tiny
    prefix = backend.encode(PROMPTS[2] * 4)
    suffixes = [backend.encode(p) for p in PROMPTS]
    prompts = [prefix + s for s in suffixes] + [suffixes[1], suffixes[4] + prefix[:5]]
    runs = {}
    for share in (True, False):
        stats, seen = {}, _FirstScores()
        with torch.inference_mode():
            out = decode_greedy(backend.model, prompts, max_new_tokens=16, min_new_tokens=16, eos_ids={0},
                                processor=seen, share_prefix=share, stats=stats)  # fmt: skip
        runs[share] = ([d.tokens for d in out], seen.first, stats)
    assert runs[True][0] == runs[False][0]
    assert float((runs[True][1] - runs[False][1]).abs().max()) < 1e-5
    total = sum(len(p) for p in prompts)
    assert runs[False][2] == {"prefill_tokens": total, "prefill_computed": total}
    # The prefix is computed once: the other five of its six prompts compute at most their own tails;
    # exactly, each prompt computes what it does not share with the one before it in token order.
    ordered = sorted(prompts)
    common = [0] + [next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    for a, b in zip(ordered, ordered[1:])]  # fmt: skip
    reused = sum(min(c, len(p) - 1) for c, p in zip(common, ordered) if c >= 16)
    assert runs[True][2]["prefill_computed"] == total - reused <= total - 5 * len(prefix)
    reference = generate_one_at_a_time(backend.model, prompts, max_new_tokens=16, min_new_tokens=16, eos_ids={0})
    assert runs[True][0] == reference


def test_batches_keep_prompts_that_share_a_prefix_together():
    prompts = [[1, 2, 3, 9], [7, 7], [1, 2, 3, 4], [7, 7, 1], [1, 2, 3, 5]]
    lengths = [len(p) for p in prompts]
    plan = plan_batches(lengths, max_new_tokens=1, bytes_per_token=1, budget=10**6, max_batch=3, prompts=prompts)
    assert plan == [[2, 4, 0], [1, 3]]  # the three [1, 2, 3, ...] prompts in one batch, in token order


@pytest.mark.slow(seconds=40)
def test_smollm2_judge_verdicts_are_the_same_with_the_prefix_shared(gold_cohort, tmp_path):
    """SmolLM2 judging one instruction's six responses (rubric and pairwise, constrained) with its
    prompts' shared prefix prefilled once and with every prompt prefilled alone: the same verdicts,
    every allowed value's probability within 1e-5, and fewer prompt tokens computed."""
    from medalign_utils.data import load_release
    from medalign_utils.evaluation import judge as J

    release = load_release(gold_cohort)
    items = J.response_items(release)
    items = items[items.instruction_id == sorted(items.instruction_id)[0]]
    pairs = J.pairwise_items(items).head(6)  # three pairs, both orders
    outputs, computed = {}, {}
    for share in (True, False):
        judge = J.Judge.from_spec("smollm2", name=f"s{share:d}", context=768, reserve=64, max_new_tokens=64,
                                  retries=0, free_tokens=12, backend_options={"share_prefix": share})  # fmt: skip
        files = []
        for mode, what in (("rubric", items), ("pairwise", pairs)):
            files.append(tmp_path / f"{share}-{mode}.jsonl")
            J.run_judgments(judge, mode, what, release, files[-1], progress=False)
        j = J.read_judgments(files).sort_values(["mode", "system", "pair", "order"])
        outputs[share] = j
        computed[share] = judge.backend.prefill_stats["prefill_computed"]
    a, b = outputs[True], outputs[False]
    assert a.output.tolist() == b.output.tolist() and a.valid.all()
    for da, db in zip(a.distribution, b.distribution):
        for key in da:
            for value, p in da[key].items():
                assert abs(p - db[key][value]) < 1e-5, (key, value)
    assert computed[True] < 0.6 * computed[False]
