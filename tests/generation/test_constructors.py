"""One-line constructors and the one resumable loop."""

from __future__ import annotations

import pandas as pd
import pytest

from medalign_utils import Judge, load_backend
from medalign_utils.generation import (
    DataGuard,
    DataGuardError,
    ExtractiveBaseline,
    GenerationSettings,
    OpenAICompatibleBackend,
    ResultStore,
    TransformersBackend,
    backend_name,
    throughput_table,
)


def test_load_backend_takes_a_model_folder_an_endpoint_or_the_baseline(tiny_lm):
    local = load_backend(tiny_lm, GenerationSettings(max_new_tokens=3), batch_size=2)
    assert isinstance(local, TransformersBackend) and local.batch_size == 2 and local.settings.max_new_tokens == 3
    assert backend_name(tiny_lm) == tiny_lm.name and backend_name("smollm2") == "smollm2"
    guard = DataGuard.loopback_only()
    remote = load_backend(["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"], guard=guard, model="m", chat=False)
    assert isinstance(remote, OpenAICompatibleBackend) and len(remote.base_urls) == 2 and not remote.chat
    assert backend_name("http://127.0.0.1:9/v1", "m") == "m@endpoint"
    assert isinstance(load_backend("extractive"), ExtractiveBaseline)
    with pytest.raises(TypeError, match="guard"):
        load_backend("http://127.0.0.1:9/v1", model="m")
    with pytest.raises(ValueError, match="model="):
        load_backend("http://127.0.0.1:9/v1", guard=guard)
    with pytest.raises(DataGuardError):
        load_backend("https://api.example.com/v1", guard=guard, model="m")
    with pytest.raises(FileNotFoundError, match="no folder"):
        load_backend("no/such/model")


def test_judge_from_spec_builds_backend_tokenizer_and_budget(tiny_lm):
    judge = Judge.from_spec(tiny_lm, context=512, reserve=32, max_new_tokens=16, retries=1, family="x")
    assert judge.name == tiny_lm.name and judge.context_length == 512 and judge.reserve == 32
    assert judge.backend.settings.max_new_tokens == 16 and judge.retries == 1 and judge.family == "x"
    assert judge.tokenizer is not None and judge.use_chat_template
    remote = Judge.from_spec("http://127.0.0.1:9/v1", model="gpt", guard=DataGuard.loopback_only(), strategy="none")
    assert remote.name == "gpt" and remote.tokenizer is None and not remote.use_chat_template
    assert Judge.from_spec(
        "http://127.0.0.1:9/v1", model="gpt", guard=DataGuard.loopback_only()
    ).tokenizer.name.startswith("cl100k")


def test_the_store_runs_in_chunks_skips_what_is_done_and_counts(tmp_path):
    items = pd.DataFrame(
        {"instruction_id": list("abcde"), "system": "s", "strategy": "x", "context": 1, "prompt_hash": "h"}
    )
    seen = []

    def process(chunk):
        seen.append(list(chunk.instruction_id))
        return [{**r, "answer": r["instruction_id"], "error": "boom" if r["instruction_id"] == "c" else None}
                for r in chunk.to_dict("records")]  # fmt: skip

    tallied = []
    with ResultStore(tmp_path / "r.jsonl") as store:
        ran = store.run(items, process, chunk_size=2, tally=tallied.extend, progress=False)
    assert seen == [["a", "b"], ["c", "d"], ["e"]] and ran["done_before"] == 0 and len(tallied) == 5
    seen.clear()
    with ResultStore(tmp_path / "r.jsonl") as store:
        assert store.run(items, process, chunk_size=2, retry_failed=False, progress=False)["done_before"] == 5
        assert seen == []
        assert store.run(items, process, chunk_size=2, progress=False)["done_before"] == 4  # the failed one again
    assert seen == [["c"]]


def test_throughput_table_per_strategy_and_context():
    res = pd.DataFrame(
        {
            "system": ["s", "s", "s", "t"],
            "strategy": ["recent", "recent", "retrieval", "recent"],
            "context": [2048] * 4,
            "answer": ["a", "b", "c", "d"],
            "error": [None, "x", None, None],
            "prompt_tokens": [100, 200, 300, 1],
            "new_tokens": [10, 30, 20, 1],
            "seconds": [1.0, 3.0, 2.0, 1.0],
        }
    )
    table = throughput_table(res, "s")
    row = table.loc[("recent", 2048)]
    assert row["items"] == 2 and row.errors == 1 and row.prompt_tokens == 150 and row.new_tokens_per_s == 10.0
    assert len(table) == 2  # the other system is not counted
