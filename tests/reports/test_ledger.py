"""The usage ledger: every request recorded where it leaves (host, tokens, cost), kept in run.json
and on the index, never on a page; and the real release goes to no API that keeps what it is sent."""

from __future__ import annotations

import json

import pytest
from helpers import write_notebook

from medalign_utils.config import SuiteConfig
from medalign_utils.generation import DataGuard, LocalServer, OpenAICompatibleBackend, load_backend
from medalign_utils.generation.ledger import LEDGER, Ledger
from medalign_utils.reports.runner import run_suite


def test_each_request_is_recorded_with_its_host_tokens_and_cost():
    LEDGER.reset()
    with LocalServer(load_backend("mock")) as srv:
        backend = OpenAICompatibleBackend(srv.url + "/v1", "m", guard=DataGuard.loopback_only(), backoff=0.01)
        answers = backend.generate(["one", "two", "three"])
        sent = srv.requests
    (entry,) = LEDGER.entries()
    assert (entry["host"], entry["model"], entry["requests"]) == ("127.0.0.1", "m", sent) and sent == 3
    assert entry["prompt_tokens"] == sum(a.prompt_tokens or 0 for a in answers)
    assert entry["completion_tokens"] == sum(a.new_tokens or 0 for a in answers)
    assert LEDGER.hosts() == ["127.0.0.1"]
    # Cost at the configured prices, cached prompt tokens at theirs (per 1,000 tokens).
    ledger = Ledger()
    ledger.set_prices("gpt", prompt=1.0, completion=2.0, cached=0.1)
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 400}}
    ledger.record(backend="openai-compatible", model="gpt", host="api.example.org", usage=usage, seconds=1.0)
    (row,) = ledger.entries()
    assert row["cached_prompt_tokens"] == 400 and row["cost"] == pytest.approx(0.6 + 0.04 + 1.0)


ASKS = """
from medalign_utils.generation import DataGuard, LocalServer, OpenAICompatibleBackend, load_backend
with LocalServer(load_backend("mock")) as srv:
    backend = OpenAICompatibleBackend(srv.url + "/v1", "served-model", guard=DataGuard.loopback_only())
    backend.generate(["a question", "another"])
print("asked")
"""


def test_a_run_keeps_each_notebooks_usage_and_hosts_in_run_json_and_the_index_not_the_page(tmp_path, tiny_cohort):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_notebook(nbs / "01_asks.ipynb", ASKS)
    write_notebook(nbs / "02_quiet.ipynb", "print('nothing asked')")
    out = tmp_path / "reports"
    assert run_suite(config=SuiteConfig(data_dir=str(tiny_cohort)), out=out, progress=False, notebooks_dir=nbs)
    record = json.loads((out / "run.json").read_text())
    ledger = record["ledger"]
    (usage,) = ledger["usage"]
    assert (usage["notebook"], usage["model"], usage["host"], usage["requests"]) == (
        "01_asks",
        "served-model",
        "127.0.0.1",
        2,
    )
    assert ledger["hosts_that_received_text"] == ["127.0.0.1"] and ledger["totals"]["requests"] == 2
    index = (out / "index.html").read_text()
    assert "Where the data went" in index and "served-model" in index and "127.0.0.1" in index
    run_dir = out / record["run_id"]
    page = (run_dir / "01_asks.html").read_text()
    assert "asked" in page and "display_ledger" not in page and "usage ledger" not in page
    executed = json.loads((run_dir / "01_asks.ipynb").read_text())
    assert executed["metadata"]["papermill"]["input_path"].endswith("01_asks.ipynb")
    assert "medalign-kernel-" not in json.dumps(executed["metadata"])  # the suite's notebook, not the copy


def test_run_estimate_counts_each_endpoints_requests_and_sends_nothing(tiny_cohort, tmp_path, capsys):
    import yaml

    from medalign_utils import cli
    from medalign_utils.config import project_root
    from medalign_utils.data import load_release
    from medalign_utils.evaluation.judge import PlantedJudge
    from medalign_utils.reports.notebooks import parameter_defaults

    defaults = parameter_defaults(project_root() / "notebooks" / "06_llm_judge.ipynb")
    assert defaults["judge_modes"] == ["rubric", "correct", "medhelm"] and defaults["judge_instructions"] == 2
    release = load_release(tiny_cohort)
    with LocalServer(PlantedJudge(release)) as srv:
        config = {
            "extends": str(project_root() / "configs" / "synthetic.yaml"),
            "data_dir": str(tiny_cohort),
            "prompts_path": str(tmp_path / "missing.parquet"),
            "notebooks": {
                "03_model_generation": {"endpoint": srv.url + "/v1", "endpoint_model": "m"},
                "06_llm_judge": {
                    "judge_spec": srv.url + "/v1",
                    "judge_model": "planted",
                    "judge_modes": ["rubric", "pairwise"],
                },
            },
        }
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(config))
        assert cli.main(["run", "--config", str(path), "--estimate"]) == 0
        assert srv.requests == 0  # nothing sent
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines()[1:]]
    assert "missing.parquet not made yet: run 02 first" in out
    by_what = {" ".join(line[1:3]): line for line in lines if line[0] == "06_llm_judge"}
    # Two instructions: 6 responses each for rubric, 15 pairs in both orders each for pairwise.
    assert by_what["judge (rubric)"][4] == "12" and by_what["judge (pairwise)"][4] == "60"
