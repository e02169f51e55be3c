"""Right by default against a llama.cpp-style server: one that answers `json_schema` with HTTP 500,
has no `/props` to say its context, and refuses a request over its 2048-token context with HTTP 400
and its context message. The judge, with every setting at its default, gets a valid verdict for
every item, refits to the context the server names once (not three times by a quarter), never
ends a verdict inside its rationale, and notebook 03 answers through the same server."""

from __future__ import annotations

import json

import pytest

from medalign_utils.context import load_tokenizer
from medalign_utils.data import load_release
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge import PlantedJudge
from medalign_utils.generation import DataGuard, GenerationSettings, TransformersBackend
from medalign_utils.generation.backends import context_limit
from medalign_utils.generation.local_server import LocalServer

N_CTX = 2048


def llamacpp_like(backend, cl100k):
    """A loopback server shaped like llama-cpp-python's: `{"type": "json_object", "schema": ...}` is
    its structured output (json_schema: HTTP 500), a 2048-token context counted with the request's
    max_tokens, and no /props."""
    return LocalServer(backend, accept_formats={"json_object+schema"}, refusal_status=500, context_limit=N_CTX,
                       count=cl100k.count)  # fmt: skip


def test_the_context_a_server_names_is_read_from_its_message():
    assert context_limit("This model's maximum context length is 2048 tokens; the request has 3456") == 2048
    assert context_limit("Requested tokens (3456) exceed context window of 2048") == 2048
    assert context_limit("the request exceeds the available context size, try increasing it") is None


def test_a_judge_with_every_default_gets_valid_verdicts_from_a_llamacpp_like_server(gold_cohort, tmp_path):
    release = load_release(gold_cohort)
    cl100k = load_tokenizer("cl100k")
    items = J.response_items(release)
    items = items[items.instruction_id.isin(sorted(items.instruction_id.unique())[:2])]
    assert min(len(release.ehr_text(p)) for p in items.person_id) > 4 * N_CTX  # every record needs cutting
    with llamacpp_like(PlantedJudge(release), cl100k) as server:
        judge = J.Judge.from_spec(server.url + "/v1", model="planted", guard=DataGuard.loopback_only())
        assert judge.context_length == J.DEFAULTS.context  # no /props: the server says nothing first
        stats = {}
        for mode, what in (("rubric", items), ("correct", items), ("medhelm", items),
                           ("pairwise", J.pairwise_items(items).head(8))):  # fmt: skip
            stats[mode] = J.run_judgments(judge, mode, what, release, tmp_path / f"{mode}.jsonl", progress=False)
        bodies = list(server.bodies)
    records = J.read_judgments(sorted(tmp_path.glob("*.jsonl")))
    assert records.valid.all() and (records.error.isna()).all(), records[~records.valid].error.tolist()
    assert sum(s["failed"] for s in stats.values()) == 0
    # One refusal of json_schema (HTTP 500), then llama.cpp's form for good.
    forms = [b["response_format"]["type"] + ("+schema" if "schema" in b["response_format"] else "") for b in bodies]
    assert forms[0] == "json_schema" and forms.count("json_schema") == 1
    assert set(forms[1:]) == {"json_object+schema"}
    # A prompt too long is refitted to the 2048 tokens the server named, once (not three shrinks by a
    # quarter); the judge keeps that context, so the next modes' prompts fit from the start.
    refused = [b for b in bodies if cl100k.count(b["messages"][-1]["content"]) + b["max_tokens"] > N_CTX]
    assert len(refused) <= len(items) + 1 and judge.context_length == N_CTX
    assert records.shrinks.max() == 1 and (records[records["mode"] != "rubric"].shrinks == 0).all()
    assert (records[records.shrinks == 1].context_used == N_CTX).all()
    # Room for the whole verdict: a rationale bounded in characters, max_tokens covering the skeleton.
    for b in bodies[1:]:
        schema = b["response_format"]["schema"]
        name = next(
            m for m in ("rubric", "correct", "medhelm", "pairwise") if J.get_mode(m).keys == set(schema["properties"])
        )
        assert b["max_tokens"] >= J.get_mode(name).constraint(free_tokens=judge.free_tokens).max_chars
    for text in records.output:
        json.loads(text)  # closed JSON: no verdict ends inside its rationale


@pytest.mark.slow(seconds=60)
def test_notebook_03_answers_through_a_llamacpp_like_server(tiny_cohort, tiny_lm, tmp_path):
    from medalign_utils.reports import run_suite

    cl100k = load_tokenizer("cl100k")
    model = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=8))
    with llamacpp_like(model, cl100k) as server:
        overrides = {
            "data_dir": str(tiny_cohort),
            "synthetic": {"generate_if_missing": False},
            "context_lengths": [2048],
            "tokenizers": ["cl100k"],
            "prompts_path": str(tmp_path / "data" / "prompts.parquet"),  # not there: `--only 03` runs 02 first
            "generations_path": str(tmp_path / "data" / "generations.jsonl"),
            "notebooks": {
                "02_context_truncation": {"export_contexts": [2048], "export_strategies": ["recent"]},
                "03_model_generation": {
                    "endpoint": server.url + "/v1", "endpoint_model": "tiny", "endpoint_chat": True,
                    "prompt_tokenizer": "cl100k", "generation_contexts": [2048], "generation_strategies": ["recent"],
                    "max_items": 2, "max_new_tokens": 8, "run_extractive_baseline": False, "mr_items": 0,
                },
            },
        }  # fmt: skip
        ok = run_suite(overrides=overrides, out=tmp_path / "out", progress=False, only=["03"])
        answered = [b for b in server.bodies if "messages" in b]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    statuses = {n["name"]: (n["status"], n["error"]) for n in record["notebooks"]}
    assert ok, statuses
    assert "03_model_generation" in statuses and answered
    assert all(b["messages"][-1]["content"] for b in answered)  # the chat path sends the prompt's user message
