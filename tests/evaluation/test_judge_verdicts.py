"""Judge verdicts that always parse and carry their probabilities: the schema on every endpoint
request and the fallback when a server refuses it, constrained local decoding, expected scores
from token probabilities, the budget and refit against a server's context, per-judgment writes,
and MedHELM's jury (HELM runs brought in: test_helm_import.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import jsonschema
import numpy as np
import pandas as pd
import pytest

from medalign_utils.context import load_tokenizer
from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians, correlation
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge import PlantedJudge, planted_judge
from medalign_utils.generation import Answer, Backend, DataGuard, GenerationSettings, LocalServer
from medalign_utils.generation.backends import OpenAICompatibleBackend
from medalign_utils.stats import Bootstrap


@pytest.fixture(scope="module")
def gold(gold_cohort):
    release = load_release(gold_cohort)
    return release, J.response_items(release), clinicians.combine_raters(release.model_responses, "primary")


def _served_judge(server, name="served", **options):
    backend = OpenAICompatibleBackend(
        server.url + "/v1",
        name,
        GenerationSettings(max_new_tokens=64),
        guard=DataGuard.loopback_only(),
        max_concurrency=4,
        retries=3,
        backoff=5.0,  # a backoff would show in the time taken
        **options,
    )
    return J.Judge(name, backend, strategy="none", retries=0)


# ------------------------------------------------------------------ what a verdict must look like


@pytest.mark.parametrize("mode", J.mode_names())
def test_every_mode_skeleton_filled_with_any_allowed_value_is_valid_and_matches_its_schema(mode):
    schema = J.get_mode(mode).schema()
    for pick in range(3):
        text = ""
        for seg in J.get_mode(mode).constraint().skeleton:
            text += seg[1] if seg[0] == "text" else seg[2][pick % len(seg[2])] if seg[0] == "choice" else "why"
        verdict, why = J.parse_verdict(mode, text)
        assert why is None, (mode, text, why)
        jsonschema.validate(verdict, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**verdict, "extra": 1}, schema)  # strict: no other key


def test_a_raw_newline_inside_a_rationale_does_not_make_the_verdict_unreadable():
    # What llama.cpp's server returned under its JSON grammar (llama-cpp-python 0.3.36, SmolLM2).
    text = '{"accuracy":1, "completeness":2, "clarity":3, "rationale": "}\n```\nThe user asked for `{"}'
    verdict, why = J.parse_verdict("rubric", text)
    assert why is None and verdict["clarity"] == 3 and verdict["rationale"].startswith("}\n")


def test_medhelm_verdicts_are_checked_like_any_other():
    good = {k: {"score": 4, "explanation": "fine"} for k in J.RUBRIC_KEYS}
    v, why = J.parse_verdict("medhelm", "Here: " + json.dumps(good))
    assert why is None and J.get_mode("medhelm").score(v) == 4.0
    bad = {**good, "clarity": {"score": 6, "explanation": "x"}}
    assert J.parse_verdict("medhelm", json.dumps(bad)) == (None, "clarity.score 6 is not an integer from 1 to 5")
    flat = {**good, "accuracy": 4}
    assert "accuracy is not an object" in J.parse_verdict("medhelm", json.dumps(flat))[1]


# ------------------------------------------------------------------ structured outputs on every request


def test_every_endpoint_request_asks_for_the_modes_json_schema(gold, tmp_path):
    release, items, _ = gold
    sample = items.head(12)
    with LocalServer(PlantedJudge(release)) as server:
        judge = _served_judge(server)
        for mode in ("rubric", "correct"):
            J.run_judgments(judge, mode, sample, release, tmp_path / f"{mode}.jsonl", progress=False)
        J.run_judgments(judge, "pairwise", J.pairwise_items(sample).head(6), release, tmp_path / "p.jsonl")
        bodies = list(server.bodies)
    assert len(bodies) == 12 + 12 + 6
    for body in bodies:
        fmt = body["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        mode = fmt["json_schema"]["name"].split("_")[1]
        asked = J.get_mode(mode).constraint(free_tokens=judge.free_tokens)
        assert fmt["json_schema"]["schema"] == asked.schema
        # The rationale is bounded in characters and the request has room for the whole verdict.
        assert asked.schema["properties"]["rationale"]["maxLength"] == 3 * judge.free_tokens
        assert body["max_tokens"] >= asked.max_chars
        assert body["logprobs"] is True and body["top_logprobs"] == 20
    recs = J.read_judgments(tmp_path / "rubric.jsonl")
    assert recs.valid.all() and (recs.structured_output == "json_schema").all()


@pytest.mark.parametrize("status", [400, 500])
def test_a_server_refusing_the_schema_form_is_asked_once_in_the_next_and_that_form_is_kept(gold, tmp_path, status):
    release, items, _ = gold
    sample = items.head(10)
    # llama.cpp's server takes {"type": "json_object", "schema": ...} and refuses the OpenAI form
    # (llama-cpp-python answers it with HTTP 500 and a validation error).
    with LocalServer(PlantedJudge(release), accept_formats={"json_object+schema"}, refusal_status=status) as server:
        judge = _served_judge(server)
        t0 = time.perf_counter()
        stats = J.run_judgments(judge, "rubric", sample, release, tmp_path / "j.jsonl", progress=False)
        elapsed = time.perf_counter() - t0
        bodies = list(server.bodies)
    assert stats["failed"] == 0 and stats["invalid"] == 0
    kinds = [b["response_format"]["type"] + ("+schema" if "schema" in b["response_format"] else "") for b in bodies]
    refused = [k for k in kinds if k == "json_schema"]
    assert 1 <= len(refused) <= judge.backend.max_concurrency  # only the requests already in flight
    assert len(kinds) == 10 + len(refused)  # one more request per refusal, no retry loop
    assert elapsed < 5.0, "a refusal was backed off as if transient"
    recs = J.read_judgments(tmp_path / "j.jsonl")
    assert (recs.structured_output == "llama.cpp").all()
    assert judge.backend.structured_output == "llama.cpp" and judge.backend.refusals
    assert recs.judge_identity.iloc[-1]["structured_output"] == "llama.cpp"


def test_a_transient_500_is_still_retried_with_backoff_not_taken_for_a_refusal(gold, tmp_path):
    release, items, _ = gold
    with LocalServer(PlantedJudge(release), fail_first=1) as server:
        backend = OpenAICompatibleBackend(
            server.url + "/v1",
            "x",
            GenerationSettings(),
            guard=DataGuard.loopback_only(),
            max_concurrency=1,
            backoff=0.01,
        )
        stats = J.run_judgments(
            J.Judge("x", backend, strategy="none"), "rubric", items.head(2), release, tmp_path / "j"
        )
    assert stats["failed"] == 0 and backend.structured_output == "json_schema" and not backend.refusals


# ------------------------------------------------------------------ constrained local decoding


def _local_items(gold, n_instructions=2):
    release, items, _ = gold
    first = sorted(items.instruction_id.unique())[:n_instructions]
    return release, items[items.instruction_id.isin(first)]


def _check_constrained(judge, release, items, tmp_path, modes):
    for mode in modes:
        todo = J.pairwise_items(items).head(6) if mode == "pairwise" else items
        stats = J.run_judgments(judge, mode, todo, release, tmp_path / f"{mode}.jsonl", progress=False)
        recs = J.read_judgments(tmp_path / f"{mode}.jsonl")
        assert stats["invalid"] == 0 and stats["failed"] == 0 and len(recs) == len(todo), mode
        assert recs.valid.all() and (recs.probabilities == "model").all()
        for rec in recs.itertuples():
            assert J.parse_verdict(mode, rec.output)[0] == rec.verdict
            for key, dist in rec.distribution.items():
                assert set(dist) == set(J.get_mode(mode).allowed_values[key]) and sum(dist.values()) == pytest.approx(
                    1, abs=1e-5
                )
                chosen = rec.verdict
                for part in key.split("."):
                    chosen = chosen[part]
                assert json.dumps(chosen).strip('"') == max(dist, key=dist.get)  # greedy: the argmax
            assert rec.expected_score == pytest.approx(J.get_mode(mode).expected(rec.distribution))


def test_constrained_decoding_gives_a_tiny_random_model_a_valid_verdict_on_every_item(gold, tiny_lm, tmp_path):
    release, items = _local_items(gold)
    judge = J.Judge.from_spec(str(tiny_lm), tokenizer=str(tiny_lm), context=384, reserve=64, max_new_tokens=24)
    judge.free_tokens = 12
    _check_constrained(judge, release, items, tmp_path, J.mode_names())
    # A local judge decodes as many prompts together as memory allows: its verdicts are one-at-a-time
    # decoding's, their probabilities too up to float32 rounding (a batch's matrix products round
    # differently from a single row's).
    assert judge.describe()["batch_size"] == "auto"
    alone = J.Judge.from_spec(str(tiny_lm), tokenizer=str(tiny_lm), context=384, reserve=64, batch_size=1)
    alone.free_tokens = 12
    J.run_judgments(alone, "rubric", items, release, tmp_path / "alone.jsonl", progress=False)
    one, batched = (
        J.read_judgments(tmp_path / f).set_index(["instruction_id", "system"]).sort_index()
        for f in ("alone.jsonl", "rubric.jsonl")
    )
    assert len(one) == len(items) and one.output.to_dict() == batched.output.to_dict()
    for item, dists in one.distribution.items():
        for key, dist in dists.items():
            assert batched.distribution[item][key] == pytest.approx(dist, abs=1e-5), (item, key)


@pytest.mark.slow(seconds=50)
def test_constrained_decoding_gives_smollm2_a_valid_verdict_on_every_item(gold, tmp_path):
    release, items = _local_items(gold, 1)
    judge = J.Judge.from_spec("smollm2", context=384, reserve=64, max_new_tokens=24)
    judge.free_tokens = 12
    _check_constrained(judge, release, items, tmp_path, ("rubric", "correct", "pairwise", "medhelm"))
    # Without the constraint, the same model's verdicts mostly do not parse: what this is for.
    judge.constrained = False
    stats = J.run_judgments(judge, "rubric", items, release, tmp_path / "free.jsonl", progress=False)
    assert stats["invalid"] >= 1


# ------------------------------------------------------------------ probabilities and expected scores


class _LogprobBackend(Backend):
    """Answers every prompt with one fixed rubric verdict and fixed token log-probabilities."""

    thread_safe = True

    def __init__(self, tokens):
        self.tokens, self.settings = tokens, GenerationSettings()

    def describe(self):
        return {"backend": "fixed-logprobs"}

    def generate(self, prompts):
        text = "".join(t["token"] for t in self.tokens)
        return [Answer(text, 10, 5, 0.0, "stop", token_logprobs=self.tokens) for _ in prompts]


def _tok(text, alternatives=None):
    tops = [{"token": t, "logprob": math.log(p)} for t, p in (alternatives or {}).items()]
    return {"token": text, "logprob": tops[0]["logprob"] if tops else 0.0, "top_logprobs": tops}


def test_expected_scores_equal_a_hand_computation_from_the_servers_top_logprobs(gold, tmp_path):
    release, items, _ = gold
    # Tokens as a server splits them, with a leading space on the digit and an unrelated candidate.
    tokens = [
        _tok('{"accuracy":'),
        _tok(" 4", {" 4": 0.5, " 3": 0.2, " 5": 0.1, " x": 0.1}),
        _tok(', "completeness": '),
        _tok("2", {"2": 0.6, "1": 0.3}),
        _tok(', "clarity": '),
        _tok("5", {"5": 0.9}),
        _tok(', "rationale": "ok"}'),
    ]
    with LocalServer(_LogprobBackend(tokens)) as server:
        judge = _served_judge(server)
        J.run_judgments(judge, "rubric", items.head(3), release, tmp_path / "j.jsonl", progress=False)
    recs = J.read_judgments(tmp_path / "j.jsonl")
    # By hand: renormalise over the allowed values seen, then sum p*s, then the mean of the three.
    acc = (4 * 0.5 + 3 * 0.2 + 5 * 0.1) / 0.8
    comp = (2 * 0.6 + 1 * 0.3) / 0.9
    clar = 5.0
    assert (recs.probabilities == "server").all()
    assert recs.expected_score.tolist() == pytest.approx([(acc + comp + clar) / 3] * 3)
    assert recs.distribution.iloc[0]["accuracy"]["3"] == pytest.approx(0.2 / 0.8)
    assert recs.score.tolist() == [11 / 3] * 3  # the argmax verdict's own score, beside it


def test_a_server_without_logprobs_gets_no_made_up_expected_score(gold, tmp_path):
    release, items, _ = gold
    with LocalServer(PlantedJudge(release)) as server:
        judge = _served_judge(server, logprobs=False)
        J.run_judgments(judge, "rubric", items.head(4), release, tmp_path / "j.jsonl", progress=False)
    recs = J.read_judgments(tmp_path / "j.jsonl")
    assert recs.valid.all() and recs.expected_score.isna().all() and recs.distribution.isna().all()
    assert (recs.probabilities == "none: the server returned no token probabilities").all()
    scores = J.as_metric_scores(recs, "rubric")
    assert set(scores.metric) == {"judge:served:rubric"}  # no -expected row without probabilities


def test_the_planted_judges_expected_score_agrees_with_the_clinicians_better_than_its_argmax(gold, tmp_path):
    release, items, labels = gold
    with planted_judge(release, noise_sd=0.5) as judge:
        J.run_judgments(judge, "rubric", items, release, tmp_path / "j.jsonl", progress=False)
    recs = J.read_judgments(tmp_path / "j.jsonl")
    scores = J.as_metric_scores(recs, "rubric")
    t4 = correlation.table4(scores, labels, bootstrap=Bootstrap(n_resamples=200, seed=0)).set_index("metric")
    argmax, expected = t4.loc["judge:planted:rubric"], t4.loc["judge:planted:rubric-expected"]
    assert expected.mean_tau > argmax.mean_tau + 0.02, (expected.mean_tau, argmax.mean_tau)
    # The planted judge samples its verdict from the distribution it serves: never a value it gives p 0.
    for rec in recs.head(100).itertuples():
        assert all(d[str(rec.verdict[k])] > 0 for k, d in rec.distribution.items())


# ------------------------------------------------------------------ budgets and refitting


def test_an_endpoint_budget_in_a_stand_in_tokenizer_keeps_a_safety_margin(gold, tmp_path):
    release, items, _ = gold
    with LocalServer(PlantedJudge(release)) as server:
        url = server.url + "/v1"
        stand_in = J.Judge.from_spec(url, model="m", guard=DataGuard.loopback_only(), context=1024, reserve=64)
        own = J.Judge.from_spec(
            url, model="m", guard=DataGuard.loopback_only(), context=1024, reserve=64, tokenizer="cl100k"
        )
    assert stand_in.budget_margin == 0.25 and own.budget_margin == 0.0
    cl100k = load_tokenizer("cl100k")
    row = items.head(1)
    loose = cl100k.count(J.judge_prompts(own, "rubric", row, release)[0])
    tight = cl100k.count(J.judge_prompts(stand_in, "rubric", row, release)[0])
    assert loose <= 1024 - 64 and tight <= 0.75 * 1024 - 64 < loose


def test_a_prompt_the_server_finds_too_long_is_refitted_smaller_and_judged(gold, tmp_path):
    release, items, _ = gold
    sample = items.head(4)
    with LocalServer(PlantedJudge(release), context_limit=6000) as server:
        judge = _served_judge(server)
        judge.tokenizer, judge.strategy, judge.context_length = load_tokenizer("cl100k"), "recent", 4096
        long = J.judge_prompts(judge, "rubric", sample, release)
        assert min(map(len, long)) > 6000  # every first prompt is refused
        stats = J.run_judgments(judge, "rubric", sample, release, tmp_path / "j.jsonl", progress=False)
        sent = [b["messages"][-1]["content"] for b in server.bodies]
    recs = J.read_judgments(tmp_path / "j.jsonl")
    assert stats["failed"] == 0 and stats["shrunk"] == 4 and recs.valid.all()
    assert (recs.shrinks >= 1).all() and (recs.context_used < 4096).all()
    assert (recs.sent_prompt_hash != recs.prompt_hash).all()  # the key stays the item's, so it resumes
    assert max(len(p) for p in sent if len(p) <= 6000) <= 6000
    assert J.run_judgments(judge, "rubric", sample, release, tmp_path / "j.jsonl", progress=False)["done_before"] == 4


def test_a_sigkill_mid_chunk_loses_only_the_requests_in_flight(gold_cohort, tmp_path):
    out = tmp_path / "j.jsonl"
    script = tmp_path / "run.py"
    script.write_text(
        "from medalign_utils.evaluation import judge as J\n"
        "from medalign_utils.data import load_release\n"
        "from medalign_utils.evaluation.judge import planted_judge\n"
        f"release = load_release({str(gold_cohort)!r})\n"
        "items = J.response_items(release).head(24)\n"
        "with planted_judge(release, max_concurrency=2, service_time=0.25) as judge:\n"
        f"    print(J.run_judgments(judge, 'rubric', items, release, {str(out)!r}, progress=False)['done_before'])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(out.read_text().splitlines())
    # The run is one chunk (max(8, 16 x 2) = 32 >= 24): what is on disk before it ends was written one by one.
    assert 3 <= written < 24
    rerun = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and int(rerun.stdout.split()[-1]) == written  # nothing written was lost
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    keys = [(r["instruction_id"], r["system"]) for r in recs]
    assert len(keys) == len(set(keys)) == 24


# ------------------------------------------------------------------ MedHELM's jury


def _juror(judge, iid, system, scores):
    valid = scores is not None
    verdict = {k: {"score": s, "explanation": "-"} for k, s in zip(J.RUBRIC_KEYS, scores)} if valid else None
    return {
        "judge": judge,
        "mode": "medhelm",
        "instruction_id": iid,
        "system": system,
        "pair": "",
        "order": "",
        "valid": valid,
        "verdict": verdict,
        "score": float(np.mean(scores)) if valid else None,
        "error": None,
    }


def test_the_medhelm_jury_is_the_mean_of_every_criterion_of_every_valid_juror_never_a_default():
    j = pd.DataFrame(
        [
            _juror("gpt", "1", "s", (5, 4, 3)),
            _juror("llama", "1", "s", (2, 2, 2)),
            _juror("claude", "1", "s", None),  # invalid: counted, left out
            _juror("gpt", "2", "s", None),
            _juror("llama", "2", "s", None),  # no valid juror: no score (MedHELM would give 1.0)
        ]
    )
    jury = J.jury_scores(j, "medhelm")
    assert jury.set_index("instruction_id").score.to_dict() == {"1": pytest.approx((5 + 4 + 3 + 2 + 2 + 2) / 6)}
    assert jury.n_judges.tolist() == [2] and jury.n_invalid.tolist() == [1]
    assert jury.attrs["n_unscored"] == 1
    metrics = set(J.as_metric_scores(j, "medhelm").metric)
    assert {"judge:gpt:medhelm", "judge:llama:medhelm", "jury:medhelm"} <= metrics


def test_the_planted_judge_answers_the_medhelm_prompt_and_its_row_reaches_table4(gold, gold_cohort, tmp_path):
    release, items, labels = gold
    with planted_judge(release) as judge:
        stats = J.run_judgments(judge, "medhelm", items, release, tmp_path / "m.jsonl", progress=False)
    assert stats["invalid"] == 0 and stats["with_distribution"] == len(items)
    scores, problems = correlation.judgment_scores([tmp_path / "m.jsonl"], release)
    assert {"judge:planted:medhelm", "judge:planted:medhelm-expected"} <= set(scores.metric) and not problems
    t4 = correlation.table4(scores, labels, bootstrap=Bootstrap(n_resamples=100, seed=0)).set_index("metric")
    assert t4.loc["judge:planted:medhelm"].mean_tau > 0.2


# ------------------------------------------------------------------ judging at scale


def test_the_prompts_of_one_instruction_share_their_prefix_and_the_cost_table_counts_it(gold, tmp_path):
    release, items, _ = gold
    one = items[items.instruction_id == sorted(items.instruction_id.unique())[0]]
    pairs = J.pairwise_items(one)
    with LocalServer(PlantedJudge(release)) as server:
        judge = _served_judge(server)
        judge.tokenizer, judge.strategy, judge.context_length = load_tokenizer("cl100k"), "recent", 2048
        judge.price_prompt_per_1k, judge.price_cached_prompt_per_1k = 0.01, 0.001
        prompts = J.judge_prompts(judge, "pairwise", pairs, release)
        shared = os.path.commonprefix(prompts)
        # The instructions, the EHR, the question and the reference come first: only the answers differ.
        assert shared.endswith('Answer A: """') and "EHR: " in shared and len(prompts) == 30
        J.run_judgments(judge, "pairwise", pairs, release, tmp_path / "p.jsonl", progress=False)
    cost = J.cost_table(J.read_judgments(tmp_path / "p.jsonl")).iloc[0]
    tokens = J.read_judgments(tmp_path / "p.jsonl").set_index(["pair", "order"]).prompt_tokens
    # Every prompt after the first sends the shared prefix again: its share of the prompt's tokens.
    expected_repeated = sum(
        round(tokens[(r.pair, r.order)] * len(shared) / len(p))
        for r, p in zip(list(pairs.itertuples())[1:], prompts[1:])
    )
    assert cost.repeated_prefix_tokens == expected_repeated and 0.5 < cost.repeated_prefix_share < 1
    saved = expected_repeated / 1000 * (0.01 - 0.001)
    assert cost.cost_with_prefix_cache == pytest.approx(cost.cost - saved)
