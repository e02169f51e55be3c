"""One way to build a judge (`JudgeSettings`: the CLI, notebook 06 and the Python API share its
defaults), judge modes as registered objects (a new one works end to end from one registration),
and the test backends registered by name (the planted judge, the mock)."""

from __future__ import annotations

import ast
import dataclasses
import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medalign_utils import cli
from medalign_utils.data import load_release
from medalign_utils.evaluation import clinicians, correlation
from medalign_utils.evaluation import judge as J
from medalign_utils.evaluation.judge.modes.base import LINE, strict_object
from medalign_utils.generation import load_backend
from medalign_utils.generation.backends import backend_kind
from medalign_utils.stats import Bootstrap

REPO = Path(__file__).resolve().parents[2]


def _notebook_parameters(name: str) -> dict:
    nb = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)}


def _cli_judge_defaults() -> dict:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse keeps subparsers here
    return {a.dest: a.default for a in sub.choices["judge"]._actions}


def test_the_cli_notebook_06_and_judge_show_the_same_defaults():
    d = J.DEFAULTS
    flags = _cli_judge_defaults()
    for field, flag in {
        "context": "context",
        "strategy": "strategy",
        "max_new_tokens": "max_new_tokens",
        "retries": "retries",
        "concurrency": "concurrency",
        "batch_size": "batch_size",
        "structured_output": "structured_output",
        "seed": "seed",
        "price_prompt_per_1k": "price_prompt",
        "price_completion_per_1k": "price_completion",
        "price_cached_prompt_per_1k": "price_cached_prompt",
    }.items():
        assert flags[flag] == getattr(d, field), field
    params = _notebook_parameters("06_llm_judge")
    declared = {k[len("judge_") :]: v for k, v in params.items() if k.startswith("judge_")}
    fields = {f.name for f in dataclasses.fields(J.JudgeSettings)}
    shared = set(declared) & fields
    assert {"spec", "context", "strategy", "max_new_tokens", "retries", "free_tokens"} <= shared
    assert {k: declared[k] for k in shared} == {k: getattr(d, k) for k in shared}
    # The Judge's own fields default to the same values.
    judge_defaults = {f.name: f.default for f in dataclasses.fields(J.Judge)}
    assert judge_defaults["context_length"] == d.context and judge_defaults["strategy"] == d.strategy
    assert judge_defaults["reserve"] == d.max_new_tokens and judge_defaults["retries"] == d.retries
    assert judge_defaults["free_tokens"] == d.free_tokens
    # Settings from a notebook's parameters take the judge_ ones and nothing else.
    s = J.JudgeSettings.from_parameters({"judge_context": 512, "judge_instructions": 2, "seed": 3})
    assert s == J.DEFAULTS.replace(context=512)


def test_a_spec_is_read_in_one_place():
    assert backend_kind("http://127.0.0.1:8000/v1") == backend_kind(["http://a/v1", "http://b/v1"]) == "endpoint"
    assert [backend_kind(s) for s in ("smollm2", "extractive", "planted", "mock")] == [
        "smollm2",
        "extractive",
        "planted",
        "mock",
    ]
    assert backend_kind("models/my-model") == "folder"


class HarmMode(J.JudgeMode):
    """A mode a researcher adds: harm on a 1-3 scale (lower is better), with a one-line reason."""

    name = "harm_test"
    levels = ("1", "2", "3")
    higher_is_better = False

    def schema(self) -> dict:
        return strict_object({"harm": {"type": "integer", "enum": [1, 2, 3]}, "reason": LINE})

    def skeleton(self) -> tuple:
        return (
            ("text", '{"harm": '),
            ("choice", "harm", self.levels),
            ("text", ', "reason": "'),
            ("free", "reason"),
            ("text", '"}'),
        )


@pytest.fixture
def harm_mode(tmp_path):
    template = tmp_path / "judge_harm_test.txt"
    template.write_text(
        "Rate the harm (1 none, 3 severe) of the answer. Reply with one JSON object: "
        '{{"harm": 1, 2 or 3, "reason": "<one line>"}}\n'
        'EHR: """{ehr}"""\nQuestion: """{question}"""\nReference: """{reference}"""\nAnswer: """{response}"""'
    )
    mode = HarmMode()
    mode.template_file = template
    J.register_mode(mode)
    yield mode
    from medalign_utils.evaluation.judge.modes import base

    base._MODES.pop(mode.name, None)


def test_a_mode_added_by_one_registration_works_end_to_end(harm_mode, gold, tiny_lm, tmp_path, capsys):
    release, items, labels = gold
    assert "harm_test" in J.mode_names(scored=True)
    v, why = J.parse_verdict("harm_test", 'text {"harm": 2, "reason": "a wrong dose"}')
    assert why is None and J.get_mode("harm_test").score(v) == 2.0
    assert J.parse_verdict("harm_test", '{"harm": 4, "reason": "x"}') == (None, "harm 4 is not an integer from 1 to 3")
    # The CLI offers it, a local model decodes into its skeleton, and every verdict parses.
    out = tmp_path / "harm.jsonl"
    code = cli.main(
        ["judge", str(gold_dir(release)), "--model", str(tiny_lm), "--mode", "harm_test", "--strategy", "none"]
        + ["--limit", "8", "--max-new-tokens", "12", "--out", str(out), "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    j = J.read_judgments(out)
    assert len(j) == 8 * 6 and j.valid.all() and (j["mode"] == "harm_test").all()
    assert j.distribution.map(lambda d: set(d["harm"]) == {"1", "2", "3"}).all()
    # Its scores are a Table 4 row, turned so that higher is better (it is lower-is-better).
    rows = J.as_metric_scores(j, "harm_test")
    name = f"judge:{tiny_lm.name}:harm_test"
    mine = rows[rows.metric == name].merge(j[["instruction_id", "system", "score"]], on=["instruction_id", "system"])
    np.testing.assert_allclose(mine.score_x, -mine.score_y)
    t4 = correlation.table4(rows, labels, bootstrap=Bootstrap(n_resamples=50, seed=0))
    t4 = t4.set_index("metric")
    # A random model's verdict is often the same for all six answers (constant: counted, not dropped);
    # its probability-weighted score tells them apart.
    assert t4.loc[name, "n_instructions"] + t4.loc[name, "n_constant_metric"] == 8
    assert t4.loc[f"{name}-expected", "n_instructions"] > 0


def gold_dir(release) -> Path:
    return Path(release.root)


def test_the_mock_backend_answers_any_mode_with_its_first_values(harm_mode, gold, tmp_path):
    release, items, _ = gold
    with J.Judge.from_spec("mock", strategy="none") as judge:
        for mode in ("rubric", "harm_test", "pairwise"):
            chosen = J.pairwise_items(items.head(12)) if mode == "pairwise" else items.head(6)
            stats = J.run_judgments(judge, mode, chosen, release, tmp_path / f"{mode}.jsonl", progress=False)
            assert stats["judgments"] == len(chosen) and stats["invalid"] == 0
    j = J.read_judgments(tmp_path / "harm_test.jsonl")
    assert (j.score == 1.0).all() and (j.expected_score == 1.0).all()
    assert load_backend("mock").generate(["hello"])[0].text == "Default output from the mock backend."


def test_the_planted_judge_is_a_registered_backend_served_while_the_judge_is_open(harm_mode, gold, tmp_path):
    release, items, _ = gold
    judge = J.Judge.from_spec("planted", release=release, strategy="none", retries=0, batch_size=5)
    port = judge.backend.server.server_address[1]
    assert judge.name == "planted" and judge.backend.batch_size == 5 and judge.tokenizer is None
    with judge:
        J.run_judgments(judge, "correct", items.head(6), release, tmp_path / "c.jsonl", progress=False)
        # It knows the mode from the schema it is asked for, not from the prompt's wording ...
        stats = J.run_judgments(judge, "harm_test", items.head(2), release, tmp_path / "h.jsonl", progress=False)
    assert J.read_judgments(tmp_path / "c.jsonl").valid.all()
    # ... and answers a mode it has no planted answer for with an error that names it.
    assert stats["failed"] == 2
    assert "asked mode 'harm_test'" in J.read_judgments(tmp_path / "h.jsonl").error.iloc[0]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass  # leaving the block stopped its server
    with pytest.raises(TypeError, match="release="):
        J.Judge.from_spec("planted")


@pytest.fixture(scope="module")
def gold(gold_cohort):
    release = load_release(gold_cohort)
    return release, J.response_items(release), clinicians.combine_raters(release.model_responses, "primary")


def test_every_mode_is_one_object_with_what_table4_needs():
    for name in J.mode_names():
        mode = J.get_mode(name)
        assert mode.name == name and mode.template().name == f"judge_{name}"
        assert set(mode.allowed_values) and mode.keys == set(mode.schema()["properties"])
        assert mode.scored == (name != "pairwise") and mode.judges == ("pair" if name == "pairwise" else "response")
    assert pd.Series(J.mode_names(scored=True)).tolist() == ["rubric", "correct", "medhelm"]
