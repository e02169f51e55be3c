"""Re-judging and re-scoring from stored answers: the judge's request cache (a rerun sends no
request, and each judgment says it came from the cache) and `medalign score --generations`."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from medalign_utils import cli
from medalign_utils.data import load_release
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge import PlantedJudge
from medalign_utils.generation import DataGuard, LocalServer, RequestCache
from medalign_utils.generation.backends import OpenAICompatibleBackend


@pytest.fixture(scope="module")
def release(gold_cohort):
    return load_release(gold_cohort)


def test_a_rerun_with_the_same_judge_sends_no_request_and_says_so(release, tmp_path):
    items = J.response_items(release)
    sample = items[items.instruction_id.isin(sorted(items.instruction_id.unique())[:3])]
    cache_dir = tmp_path / "judge-cache"
    with LocalServer(PlantedJudge(release)) as srv:
        backend = OpenAICompatibleBackend(srv.url + "/v1", "planted", guard=DataGuard.loopback_only(), backoff=0.01)
        judge = J.Judge("planted", backend, strategy="none", cache=RequestCache.for_model(cache_dir, "planted"))
        first = J.run_judgments(judge, "rubric", sample, release, tmp_path / "a.jsonl", progress=False)
        sent = srv.requests
        assert first["cached"] == 0 and sent == len(sample)
        # Another judgments file (a re-judge into a new run): every answer comes from the cache.
        judge = J.Judge("planted", backend, strategy="none", cache=RequestCache.for_model(cache_dir, "planted"))
        again = J.run_judgments(judge, "rubric", sample, release, tmp_path / "b.jsonl", progress=False)
        assert srv.requests == sent and again["cached"] == len(sample)
        a, b = (J.read_judgments(tmp_path / f).set_index(["instruction_id", "system"]) for f in ("a.jsonl", "b.jsonl"))
        assert (a.score == b.score.reindex(a.index)).all() and b.cached.all() and not a.cached.any()
        # Other decoding settings are another request: asked afresh.
        backend.settings = backend.settings.__class__(max_new_tokens=backend.settings.max_new_tokens + 1)
        judge = J.Judge("planted", backend, strategy="none", cache=RequestCache.for_model(cache_dir, "planted"))
        J.run_judgments(judge, "rubric", sample.head(2), release, tmp_path / "c.jsonl", progress=False)
        assert srv.requests == sent + 2


def test_the_cache_key_is_the_model_the_prompt_the_decoding_and_the_shape(tmp_path):
    from medalign_utils.generation import Answer, Backend, GenerationSettings

    class B(Backend):
        settings = GenerationSettings(max_new_tokens=8)

        def __init__(self, model, endpoint):
            self.model, self.endpoint = model, endpoint

        def describe(self):
            return {"backend": "b", "model": self.model, "endpoint": self.endpoint, "max_concurrency": 4}

    key = RequestCache.key
    assert key(B("m", "http://a"), "p") == key(B("m", "http://b"), "p")  # a replica answers the same
    assert key(B("m", "http://a"), "p") != key(B("n", "http://a"), "p")
    assert key(B("m", "http://a"), "p") != key(B("m", "http://a"), "q")

    class Shape:
        schema = {"type": "object"}

    assert key(B("m", "x"), "p") != key(B("m", "x"), "p", Shape())
    io_path = tmp_path / "c.jsonl"
    cache = RequestCache(io_path)
    cache.put("k", Answer("text", 3, 2))
    cache.put("bad", Answer("", error="HTTP 500"))  # an error is never kept
    reread = RequestCache(io_path)
    assert len(reread) == 1 and reread.get("k").text == "text" and reread.get("k").cached
    with io_path.open("a") as f:
        f.write('{"key": "torn"')  # a torn last line: counted, not fatal
    assert RequestCache(io_path).skipped == 1


def test_score_generations_computes_the_metrics_on_stored_answers(release, gold_cohort, tmp_path, capsys):
    refs = release.references[release.references.annotator_num == "Annotator_1"].drop_duplicates("instruction_id")
    iids = list(refs.instruction_id[:12])
    reference = refs.set_index("instruction_id").clinician_response
    tsv = tmp_path / "mine.tsv"
    rows = [(i, reference[i]) for i in iids[:6]] + [(i, "no idea") for i in iids[6:]]
    pd.DataFrame(rows, columns=["instruction_id", "answer"]).to_csv(tsv, sep="\t", index=False)
    per_answer = tmp_path / "scores.csv"
    argv = ["score", str(gold_cohort), "--generations", str(tsv), "--metrics", "rougeL", "--quiet"]
    assert cli.main([*argv, "--per-answer", str(per_answer), "--resamples", "200"]) == 0
    summary = pd.read_csv(io.StringIO(capsys.readouterr().out))
    row = summary.iloc[0]
    assert (row.system, row.metric, row.n) == ("mine", "rougeL", 12)
    scores = pd.read_csv(per_answer, dtype={"instruction_id": str}).set_index("instruction_id").score
    assert scores[iids[:6]].min() == pytest.approx(1.0)  # the reference itself scores 1
    assert row["mean"] == pytest.approx(scores.mean()) and row.ci_low < row["mean"] < row.ci_high
    assert np.isclose(row["mean"], (6 + scores[iids[6:]].sum()) / 12)
    json.dumps(summary.to_dict())  # plain values


def test_judge_estimate_counts_what_it_would_send_and_sends_nothing(release, gold_cohort, capsys):
    with LocalServer(PlantedJudge(release)) as srv:
        argv = ["judge", str(gold_cohort), "--endpoint", srv.url + "/v1", "--judge-model", "planted", "--mode"]
        argv += ["rubric", "--limit", "5", "--price-prompt", "2.0", "--estimate", "--quiet"]
        assert cli.main(argv) == 0
        assert srv.requests == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    items = J.response_items(release)
    items = items[items.instruction_id.isin(sorted(items.instruction_id.unique())[:5])]
    assert int(lines["requests"]) == len(items)
    assert (
        int(lines["prompt_tokens"]) > 0
        # a server is given room for the whole verdict (a rationale bounded in characters)
        and int(lines["completion_tokens_at_most"])
        == len(items)
        * max(J.DEFAULTS.max_new_tokens, J.get_mode("rubric").constraint(free_tokens=J.DEFAULTS.free_tokens).max_chars)
    )
    assert float(lines["cost_at_most"]) >= int(lines["prompt_tokens"]) / 1000 * 2.0
