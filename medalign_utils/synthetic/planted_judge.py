"""A test judge for the synthetic cohort: verdicts from each response's planted quality plus noise.

`PlantedJudge` is a backend (serve it on loopback with `generation.local_server.LocalServer`, as a
real judge would be served) that reads the judge prompts the suite writes, finds the response(s)
in them, and answers a verdict in the judge's JSON: the rubric level
`synthetic.labels.judge_rubric_level(quality, noise)`, correct when quality plus noise is above a
threshold, the better of two in a pairwise prompt. Its noise is drawn from the prompt's own hash,
so a verdict does not depend on order or concurrency. With `source="clinician_ranks"` it scores the
primary clinician's own ranking instead (its agreement with the clinicians is then exactly 1).
Its agreement with the clinicians under the label model is `synthetic.labels.expected_judge_tau`.
It also answers MedHELM's prompt (`medhelm` mode), and serves token log-probabilities from its own
noise model: a reading near a level's boundary is uncertain (its argmax is always the verdict), so
the probability-weighted score keeps what rounding to a level throws away.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from contextlib import contextmanager

import numpy as np

from ..evaluation.judge.verdicts import RUBRIC_KEYS, verdict_token_logprobs
from ..generation.backends import Answer, Backend, GenerationSettings

_REFERENCE = re.compile(r'reference answer: """(.*?)"""|<gold_response>\n(.*?)\n</gold_response>', re.S)
_ONE = re.compile(r'Answer to (?:rate|judge): """(.*)"""|<response>\n(.*)\n</response>', re.S)
_TWO = re.compile(r'Answer A: """(.*)"""\s*Answer B: """(.*)"""', re.S)


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _levels_distribution(level: float, spread: float) -> dict[str, float]:
    """The judge's belief over 1-5 around its reading: argmax the nearest level, as a greedy judge's."""
    w = np.exp(-((np.arange(1, 6) - level) ** 2) / (2 * spread**2))
    return {str(s): float(p) for s, p in zip(range(1, 6), w / w.sum())}


class PlantedJudge(Backend):
    kind = "planted-test-judge"
    thread_safe = True

    def __init__(
        self,
        release,
        *,
        noise_sd: float = 0.5,
        scale: float = 1.0,
        seed: int = 0,
        service_time: float = 0.0,
        source: str = "quality",
        correct_threshold: float = 0.6,
        tie_margin: float = 0.15,
        spread: float = 0.35,
    ):
        planted = release.planted_truth
        if planted is None or "response_quality" not in planted:
            raise ValueError("the planted test judge needs a synthetic cohort with planted response quality")
        if source not in ("quality", "clinician_ranks"):
            raise ValueError("source must be 'quality' or 'clinician_ranks'")
        from ..evaluation.judge import response_items

        items = response_items(release)
        if source == "quality":
            q = planted["response_quality"]
            values = [q.get(i, {}).get(m, np.nan) for i, m in zip(items.instruction_id, items.system)]
        else:
            from ..evaluation.clinicians import combine_raters

            ranks = combine_raters(release.model_responses, "primary").set_index(["instruction_id", "system"])
            values = [-ranks.model_rank.get((i, m), np.nan) for i, m in zip(items.instruction_id, items.system)]
        # Keyed by (reference, response), both of which the prompt shows: the same answer text can
        # answer two instructions ("I could not find this in the EHR"); their references differ.
        # Two systems that gave one instruction the very same text cannot be told apart by any
        # judge; they share the last value.
        self.quality = {
            (r, t): v
            for r, t, v in zip(items.reference.astype(str), items.response.astype(str), values)
            if not np.isnan(v)
        }
        # An answer it has no planted quality for (a new system's) is graded against the planted value
        # where the instruction has one: stating the value reads as a good answer, else a poor one.
        from .grading import planted_values

        values_by_iid = planted_values(planted).dropna(subset=["value"]).set_index("instruction_id").value
        first = items.drop_duplicates("instruction_id")
        self.planted_value = {
            str(r): values_by_iid[i] for r, i in zip(first.reference, first.instruction_id) if i in values_by_iid.index
        }
        self.noise_sd, self.scale, self.seed, self.source = noise_sd, scale, seed, source
        self.service_time, self.correct_threshold, self.tie_margin = service_time, correct_threshold, tie_margin
        self.spread = spread  # how unsure the judge is of its own reading (its logprobs' width)
        self.settings = GenerationSettings(max_new_tokens=64)
        self.batch_size = 16

    def describe(self) -> dict:
        return {
            "backend": self.kind,
            "noise_sd": self.noise_sd,
            "scale": self.scale,
            "seed": self.seed,
            "source": self.source,
        }

    def _noise(self, prompt: str, k: int) -> np.ndarray:
        digest = hashlib.blake2b(f"{self.seed}|{prompt}".encode(), digest_size=8).digest()
        return self.noise_sd * np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(k)

    def _quality(self, reference: str, response: str) -> float | None:
        q = self.quality.get((reference, response))
        if q is None and reference in self.planted_value:
            from .grading import value_match

            q = 1.0 if value_match(response, self.planted_value[reference]) else -1.0
        return q

    def verdict(self, prompt: str) -> tuple[str, dict, dict]:
        """(mode, verdict, distributions): the verdict a greedy judge would give, and its belief
        over each value (its own noise model: a reading near a boundary is uncertain)."""
        m = _REFERENCE.search(prompt)
        reference = (m.group(1) or m.group(2) or "") if m else ""  # what tells instructions apart
        two = _TWO.search(prompt)
        if two:
            qa, qb = (self._quality(reference, t) for t in two.groups())
            if qa is None or qb is None:
                return "pairwise", {"winner": "tie", "rationale": "unknown response"}, {"winner": _TIE}
            na, nb = self._noise(prompt, 2)
            d, m_ = (qa + na) - (qb + nb), self.tie_margin
            winner = "A" if d > m_ else "B" if d < -m_ else "tie"
            w = {"A": _phi((d - m_) / self.spread), "B": _phi((-d - m_) / self.spread)}
            w["tie"] = _phi((m_ - abs(d)) / self.spread)
            total = sum(w.values())
            return (
                "pairwise",
                {"winner": winner, "rationale": "planted quality"},
                {"winner": {k: v / total for k, v in w.items()}},
            )
        one = _ONE.search(prompt)
        q = self._quality(reference, (one.group(1) or one.group(2)) if one else "") if one else None
        if "Answer to judge:" in prompt:
            seen = (q if q is not None else 0.0) + self._noise(prompt, 1)[0]
            p = _phi((seen - self.correct_threshold) / self.spread)
            verdict = {"correct": bool(seen > self.correct_threshold), "rationale": "planted quality"}
            return "correct", verdict, {"correct": {"true": p, "false": 1 - p}}
        mode = "medhelm" if "<gold_response>" in prompt else "rubric"
        levels = self._levels(q, prompt)
        if mode == "medhelm":
            why = "planted quality" if q is not None else "unknown response"
            verdict = {k: {"score": int(np.rint(lv)), "explanation": why} for k, lv in zip(RUBRIC_KEYS, levels)}
            keys = [f"{k}.score" for k in RUBRIC_KEYS]
        else:
            verdict = {k: int(np.rint(lv)) for k, lv in zip(RUBRIC_KEYS, levels)}
            verdict["rationale"] = "planted quality" if q is not None else "unknown response"
            keys = list(RUBRIC_KEYS)
        return mode, verdict, {k: _levels_distribution(lv, self.spread) for k, lv in zip(keys, levels)}

    def _levels(self, q: float | None, prompt: str) -> list[float]:
        """The three criteria's readings (continuous: the verdict rounds them)."""
        if q is None:
            return [3.0] * 3
        if self.source == "clinician_ranks":
            total = int(round(15 + 2 * (q + 1)))  # rank 1 -> 15 ... rank 6 -> 5: strictly by rank, ties kept
            base, extra = divmod(total, 3)
            return [float(base + (i < extra)) for i in range(3)]
        # Rounded, this reading is judge_rubric_level's verdict (the label model's); around it, the belief.
        return [float(np.clip(3 + self.scale * (q + self._noise(prompt, 1)[0]), 1, 5))] * 3

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        out = []
        for p in prompts:
            t0 = time.perf_counter()
            if self.service_time:
                time.sleep(self.service_time)  # what a real judge's server would take
            mode, verdict, dists = self.verdict(p)
            text = json.dumps(verdict)
            tokens = verdict_token_logprobs(mode, verdict, dists)
            out.append(
                Answer(text, len(p) // 4, len(text) // 4, time.perf_counter() - t0, "stop", token_logprobs=tokens)
            )
        return out


_TIE = {"A": 0.0, "B": 0.0, "tie": 1.0}


@contextmanager
def planted_judge(
    release,
    *,
    name: str = "planted",
    noise_sd: float = 0.5,
    seed: int = 0,
    guard=None,
    max_concurrency: int = 8,
    batch_size: int = 8,
    service_time: float = 0.0,
    source: str = "quality",
    **judge_fields,
):
    """A `Judge` backed by the planted test judge, served on loopback for the block's duration, as a
    real judge's server would be: ``with planted_judge(release) as judge: run_judgments(judge, ...)``.
    `batch_size` judgments are committed at a time, `max_concurrency` requests in flight;
    `judge_fields` are the `Judge`'s other fields (prices...)."""
    from ..evaluation.judge import Judge
    from ..generation.backends import OpenAICompatibleBackend
    from ..generation.guard import DataGuard
    from ..generation.local_server import LocalServer

    served = PlantedJudge(release, noise_sd=noise_sd, seed=seed, service_time=service_time, source=source)
    with LocalServer(served) as server:
        settings = GenerationSettings(max_new_tokens=64, seed=seed)
        backend = OpenAICompatibleBackend(
            server.url + "/v1",
            name,
            settings,
            guard=guard or DataGuard.loopback_only(),
            max_concurrency=max_concurrency,
        )
        backend.batch_size = batch_size
        yield Judge(name, backend, strategy="none", retries=0, **judge_fields)
