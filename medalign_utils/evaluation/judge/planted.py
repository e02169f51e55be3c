"""A test judge for the synthetic cohort: verdicts from each response's planted quality plus noise.

`PlantedJudge` is a backend, registered as ``"planted"`` (`Judge.from_spec("planted", release=...)`
serves it on loopback, as a real judge's server would be, like inspect_ai's ``mockllm``). It knows
the mode from the verdict schema the request asks for, as a server's structured output does, reads
the response(s) out of the prompt, and answers a verdict in the mode's JSON: the rubric level
`synthetic.labels.judge_rubric_level(quality, noise)`, correct when quality plus noise is above a
threshold, the better of two in a pairwise prompt. Its noise is drawn from the prompt's own hash,
so a verdict does not depend on order or concurrency. With `source="clinician_ranks"` it scores the
primary clinician's own ranking and correct label instead (its agreement with the clinicians is then
exactly 1: the most a judge could give).
Its agreement with the clinicians under the label model is `synthetic.labels.expected_judge_tau`.
It also answers MedHELM's prompt (`medhelm` mode), and serves token log-probabilities from its own
noise model: of its noise, a part (`belief_share` of the sd) is an error in what it believes and
the rest is sampling; it serves the distribution it samples from, and its verdict is a sample of
it (a judge at temperature > 0). Its probability-weighted score averages the sampling out, as a
real judge's does (G-Eval).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import TYPE_CHECKING

import numpy as np

from ... import paper
from ...generation.backends import Answer, Backend, GenerationSettings
from ...synthetic.grading import planted_values, value_match
from ...synthetic.labels import judge_rubric_level
from .modes import RUBRIC_KEYS, mode_for_schema
from .verdicts import verdict_token_logprobs

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


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
    follows_response_format = True

    def __init__(
        self,
        release: Release,
        *,
        noise_sd: float = 0.5,
        scale: float = 1.0,
        seed: int = 0,
        service_time: float = 0.0,
        source: str = "quality",
        correct_threshold: float = 0.6,
        tie_margin: float = 0.15,
        belief_share: float = 0.6,
        system_bias: dict | None = None,
    ):
        planted = release.planted_truth
        if planted is None or "response_quality" not in planted:
            raise ValueError("the planted test judge needs a synthetic cohort with planted response quality")
        if source not in ("quality", "clinician_ranks"):
            raise ValueError("source must be 'quality' or 'clinician_ranks'")
        from .running import response_items

        items = response_items(release)
        self.clinician_correct: dict = {}  # with source="clinician_ranks": the primary clinician's labels
        if source == "quality":
            q = planted["response_quality"]
            values = [q.get(i, {}).get(m, np.nan) for i, m in zip(items.instruction_id, items.system)]
        else:
            from ..clinicians import combine_raters

            ranks = combine_raters(release.model_responses, "primary").set_index(["instruction_id", "system"])
            values = [-ranks.model_rank.get((i, m), np.nan) for i, m in zip(items.instruction_id, items.system)]
            # Its correct verdict is the primary clinician's label: the most any judge could agree.
            self.clinician_correct = {
                (r, t): ranks.binary_correct.get((i, m), np.nan)
                for r, t, i, m in zip(
                    items.reference.astype(str), items.response.astype(str), items.instruction_id, items.system
                )
            }
        # Keyed by (reference, response), both of which the prompt shows: the same answer text can
        # answer two instructions ("I could not find this in the EHR"); their references differ.
        # Two systems that gave one instruction the very same text cannot be told apart by any
        # judge; they share the last value.
        # `system_bias` (system -> added quality): a judge whose error depends on the system, as real
        # judges' does (a test of the transfer error).
        bias = system_bias or {}
        self.quality = {
            (r, t): v + bias.get(m, 0.0)
            for r, t, m, v in zip(items.reference.astype(str), items.response.astype(str), items.system, values)
            if not np.isnan(v)
        }
        # An answer it has no planted quality for (a new system's) is graded against the planted value
        # where the instruction has one: stating the value reads as a good answer, else a poor one.
        values_by_iid = planted_values(planted).dropna(subset=["value"]).set_index("instruction_id").value
        first = items.drop_duplicates("instruction_id")
        self.planted_value = {
            str(r): values_by_iid[i] for r, i in zip(first.reference, first.instruction_id) if i in values_by_iid.index
        }
        self.noise_sd, self.scale, self.seed, self.source = noise_sd, scale, seed, source
        self.service_time, self.correct_threshold, self.tie_margin = service_time, correct_threshold, tie_margin
        # The share (in sd) of its noise that the judge believes; the rest is sampling, which its
        # probability-weighted score averages out.
        self.belief_share = belief_share
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

    def _belief(self, prompt: str, noise: np.ndarray) -> tuple[np.ndarray, float]:
        """The judge's noise split into what it believes (its reading's error, shared by every value
        it might say) and what sampling adds: given the drawn `noise`, the belief part is drawn from
        its conditional law, so the verdict is exactly a sample from the distribution it serves.
        Returns (belief error, the sampling sd)."""
        sd_belief, sd_sample = self.belief_share * self.noise_sd, math.sqrt(1 - self.belief_share**2) * self.noise_sd
        if self.noise_sd == 0:
            return np.zeros_like(noise), 1e-3
        digest = hashlib.blake2b(f"{self.seed}|belief|{prompt}".encode(), digest_size=8).digest()
        z = np.random.default_rng(int.from_bytes(digest, "little")).standard_normal(len(noise))
        mean = (sd_belief / self.noise_sd) ** 2 * noise
        return mean + sd_belief * sd_sample / self.noise_sd * z, max(sd_sample, 1e-3)

    def _quality(self, reference: str, response: str) -> float | None:
        q = self.quality.get((reference, response))
        if q is None and reference in self.planted_value:
            q = 1.0 if value_match(response, self.planted_value[reference]) else -1.0
        return q

    def verdict(self, prompt: str, mode: str) -> tuple[dict, dict]:
        """(verdict, distributions) in `mode`: the judge's verdict, sampled from the distribution
        over each value that it serves as logprobs (its noise model: the reading it believes, plus
        what sampling adds)."""
        m = _REFERENCE.search(prompt)
        reference = (m.group(1) or m.group(2) or "") if m else ""  # what tells instructions apart
        if mode == "pairwise":
            two = _TWO.search(prompt)
            return self._pairwise(prompt, reference, two.groups() if two else ("", ""))
        one = _ONE.search(prompt)
        response = (one.group(1) or one.group(2)) if one else ""
        q = self._quality(reference, response) if one else None
        label = self.clinician_correct.get((reference, response))
        if mode == "correct" and label is not None and not np.isnan(label):
            verdict = {"correct": bool(label), "rationale": "the primary clinician's label"}
            return verdict, {"correct": {"true": 0.9 if label else 0.1, "false": 0.1 if label else 0.9}}
        if mode == "correct":
            noise = self._noise(prompt, 1)
            seen = (q if q is not None else 0.0) + noise[0]
            belief, sd = self._belief(prompt, noise)
            p = _phi(((q if q is not None else 0.0) + belief[0] - self.correct_threshold) / sd)
            verdict = {"correct": bool(seen > self.correct_threshold), "rationale": "planted quality"}
            return verdict, {"correct": {"true": p, "false": 1 - p}}
        levels, dists = self._levels(q, prompt)
        why = "planted quality" if q is not None else "unknown response"
        if mode == "medhelm":
            verdict = {k: {"score": lv, "explanation": why} for k, lv in zip(RUBRIC_KEYS, levels)}
            return verdict, {f"{k}.score": d for k, d in zip(RUBRIC_KEYS, dists)}
        verdict = {**dict(zip(RUBRIC_KEYS, levels)), "rationale": why}
        return verdict, dict(zip(RUBRIC_KEYS, dists))

    def _pairwise(self, prompt: str, reference: str, answers) -> tuple[dict, dict]:
        qa, qb = (self._quality(reference, t) for t in answers)
        if qa is None or qb is None:
            return {"winner": "tie", "rationale": "unknown response"}, {"winner": dict(_TIE)}
        noise = self._noise(prompt, 2)
        d, margin = (qa + noise[0]) - (qb + noise[1]), self.tie_margin
        winner = "A" if d > margin else "B" if d < -margin else "tie"
        belief, sd = self._belief(prompt, noise)
        mean, sd = qa + belief[0] - qb - belief[1], sd * math.sqrt(2)
        p = {"A": 1 - _phi((margin - mean) / sd), "B": _phi((-margin - mean) / sd)}
        p["tie"] = max(0.0, 1 - p["A"] - p["B"])
        return {"winner": winner, "rationale": "planted quality"}, {"winner": p}

    def _levels(self, q: float | None, prompt: str) -> tuple[list[int], list[dict]]:
        """The three criteria's levels and the distribution each was sampled from."""
        if q is None:
            return [3] * 3, [_levels_distribution(3.0, 0.35)] * 3
        if self.source == "clinician_ranks":
            total = int(round(15 + 2 * (q + 1)))  # rank 1 -> 15 ... rank 6 -> 5: strictly by rank, ties kept
            base, extra = divmod(total, 3)
            levels = [base + (i < extra) for i in range(3)]
            return levels, [_levels_distribution(float(lv), 0.35) for lv in levels]
        noise = self._noise(prompt, 1)
        level = int(judge_rubric_level(np.array(q), noise[0], self.scale))  # the label model's verdict
        belief, sd = self._belief(prompt, noise)
        centre, sd = 3 + self.scale * (q + belief[0]), self.scale * sd
        edges = [-np.inf, 1.5, 2.5, 3.5, 4.5, np.inf]
        p = [_phi((edges[s + 1] - centre) / sd) - _phi((edges[s] - centre) / sd) for s in range(5)]
        return [level] * 3, [{str(s + 1): float(x) for s, x in enumerate(p)}] * 3

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        mode = mode_for_schema(constraint.schema if constraint is not None else None)
        out = []
        for p in prompts:
            t0 = time.perf_counter()
            if self.service_time:
                time.sleep(self.service_time)  # what a real judge's server would take
            if mode is None or mode.name not in _PLANTED_MODES:
                asked = "no verdict schema" if mode is None else f"mode {mode.name!r}"
                out.append(
                    Answer("", error=f"the planted test judge answers {', '.join(_PLANTED_MODES)}; asked {asked}")
                )
                continue
            verdict, dists = self.verdict(p, mode.name)
            text = json.dumps(verdict)
            tokens = verdict_token_logprobs(mode, verdict, dists)
            out.append(
                Answer(text, len(p) // 4, len(text) // 4, time.perf_counter() - t0, "stop", token_logprobs=tokens)
            )
        return out


_TIE = {"A": 0.0, "B": 0.0, "tie": 1.0}
_PLANTED_MODES = ("rubric", "correct", "pairwise", "medhelm")
_OPTIONS = (
    "noise_sd",
    "scale",
    "seed",
    "service_time",
    "source",
    "correct_threshold",
    "tie_margin",
    "belief_share",
    "system_bias",
)


def planted_backend(
    spec, settings: GenerationSettings, *, release: Release | None = None, model=None, batch_size=8, **options
):
    """The registered ``"planted"`` backend: a `PlantedJudge` on `release` served on loopback for as
    long as the backend is open (`close`, or the judge's ``with`` block, stops it). `options` are
    the planted judge's (``noise_sd``, ``service_time``, ``source``...) and the client's
    (``max_concurrency``...)."""
    from ...generation.local_server import LoopbackClient

    if release is None:
        raise TypeError("the planted test judge needs release= (a synthetic cohort with planted quality)")
    planted = {k: options.pop(k) for k in _OPTIONS if k in options}
    planted.setdefault("seed", settings.seed)
    options.pop("guard", None)  # loopback only, whatever the caller allows
    backend = LoopbackClient(PlantedJudge(release, **planted), model or "planted", settings, **options)
    backend.batch_size = batch_size if isinstance(batch_size, int) else 8
    return backend


def planted_judge(
    release: Release,
    *,
    name: str = "planted",
    noise_sd: float = 0.5,
    seed: int = 0,
    max_concurrency: int = 8,
    batch_size: int = 8,
    service_time: float = 0.0,
    source: str = "quality",
    **settings,
):
    """The planted test judge as a `Judge` (a context manager: its loopback server stops with the
    block): ``with planted_judge(release) as judge: run_judgments(judge, ...)``. It reads no record
    and is never asked twice; `settings` are any other `JudgeSettings` (prices...)."""
    from .settings import Judge

    options = {"noise_sd": noise_sd, "service_time": service_time, "source": source}
    return Judge.from_spec(
        "planted",
        release=release,
        name=name,
        seed=seed,
        concurrency=max_concurrency,
        batch_size=batch_size,
        strategy="none",
        retries=0,
        max_new_tokens=64,
        backend_options=options,
        **settings,
    )


def oracle_label_plan(
    release: Release, out_path, *, ks=(10, 20, 40, 80), n_draws: int = 100, seed: int = 0, progress=True
):
    """The most any judge could save in clinician labels: the label-budget planner for an oracle-like
    planted judge that repeats the primary clinician's own correct label (its verdicts written to
    `out_path`)."""
    from ..clinicians import combine_raters
    from .estimates import label_budget
    from .running import read_judgments, response_items, run_judgments

    with planted_judge(release, name="planted-oracle", source="clinician_ranks", seed=seed) as oracle:
        run_judgments(oracle, "correct", response_items(release), release, out_path, progress=progress)
    labels = combine_raters(release.model_responses, "primary")
    plan = {"systems": paper.in_paper_order(labels.system), "ks": ks, "n_draws": n_draws, "seed": seed}
    return label_budget(read_judgments(out_path), labels, judge="planted-oracle", **plan)
