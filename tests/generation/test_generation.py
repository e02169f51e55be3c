"""Generation: batched equals unbatched, resume after SIGKILL, the HTTP backend, the data guard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from helpers import REPO

from medalign_utils.generation import (
    DataGuard,
    DataGuardError,
    ExtractiveBaseline,
    GenerationSettings,
    LocalServer,
    OpenAICompatibleBackend,
    ResultStore,
    TransformersBackend,
    check_endpoint,
    is_loopback,
    read_results,
    run_extractive,
    run_generation,
    run_refinement,
)

LOOPBACK = DataGuard.loopback_only()
PROMPTS = [
    "Question: What was the last glucose?",
    "The patient has hypertension and takes",
    "Instruction: Answer the following question based on the EHR: Question: glucose?",
    "lisinopril",
    '<entry timestamp="2020-01-01 08:00"><event type="measurement" name="Glucose">104.00</event></entry> Q:',
]


def items(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "instruction_id": [f"i{k}" for k in range(n)],
            "strategy": "recent",
            "context": 2048,
            "prompt": [PROMPTS[k % len(PROMPTS)] + f" item {k}" for k in range(n)],
        }
    )


def test_batched_greedy_equals_one_at_a_time(tiny_lm):
    settings = GenerationSettings(max_new_tokens=12)
    batched = TransformersBackend(tiny_lm, settings=settings, batch_size=8).generate(PROMPTS)
    single = TransformersBackend(tiny_lm, settings=settings, batch_size=1).generate(PROMPTS)
    assert [a.text for a in batched] == [a.text for a in single]
    assert [a.new_tokens for a in batched] == [a.new_tokens for a in single]
    assert all(a.prompt_tokens > 0 for a in batched) and any(a.text for a in batched)


def test_out_of_memory_backs_off_instead_of_dying(tiny_lm, monkeypatch):
    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=4), batch_size=4)
    real = backend._greedy_batch
    calls = []

    def flaky(batch, constraint=None):
        calls.append(len(batch))
        if len(batch) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch, constraint)

    monkeypatch.setattr(backend, "_greedy_batch", flaky)
    answers = backend.generate(PROMPTS)
    assert len(answers) == len(PROMPTS) and all(a.error is None for a in answers)
    assert calls[:3] == [4, 2, 1] and backend.batch_size == 1


def test_run_is_resumable_and_records_provenance(tiny_lm, tmp_path):
    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=4), batch_size=3)
    out = tmp_path / "gen.jsonl"
    first = run_generation(items(5), backend, out, "tiny", progress=False, data_fingerprint="abc")
    assert first["generated"] == 5
    again = run_generation(items(7), backend, out, "tiny", progress=False)
    assert again["done_before"] == 5 and again["generated"] == 2
    df = read_results(out)
    assert len(df) == 7 and df.instruction_id.is_unique
    rec = json.loads(out.read_text().splitlines()[0])
    assert rec["model"]["weights_hash"] and rec["model"]["model"] == tiny_lm.name
    assert str(tiny_lm) not in json.dumps(rec["model"])  # no machine path in what pages print
    assert rec["settings"]["max_new_tokens"] == 4 and rec["prompt_tokens"] > 0 and rec["seconds"] >= 0
    assert rec["versions"]["torch"] and rec["data_fingerprint"] == "abc"


def test_a_crash_on_one_item_is_recorded_and_the_run_goes_on(tmp_path):
    class Flaky:
        batch_size, settings = 4, GenerationSettings()

        def describe(self):
            return {"backend": "flaky"}

        def generate(self, prompts):
            if any("item 2" in p for p in prompts):
                raise ValueError("tokenizer exploded on item 2")
            from medalign_utils.generation import Answer

            return [Answer(p[::-1], 1, 1) for p in prompts]

    out = tmp_path / "gen.jsonl"
    res = run_generation(items(6), Flaky(), out, "flaky", progress=False)
    assert res["generated"] == 5 and res["failed"] == 1
    df = read_results(out)
    bad = df[df.instruction_id == "i2"].iloc[0]
    assert "exploded" in bad.error and df.error.notna().sum() == 1


@pytest.mark.slow(seconds=16)
def test_resume_after_sigkill_completes_every_item_exactly_once(tiny_lm, tmp_path):
    out = tmp_path / "gen.jsonl"
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        import pandas as pd
        from medalign_utils.generation import GenerationSettings, TransformersBackend
        from medalign_utils.generation import run_generation

        class Slow(TransformersBackend):
            def generate(self, prompts):
                time.sleep(0.4)  # time for the test to kill us mid-run
                return super().generate(prompts)

        items = pd.DataFrame({{"instruction_id": [f"i{{k}}" for k in range(24)], "strategy": "recent", "context": 2048,
                              "prompt": [f"Question: value {{k}}?" for k in range(24)]}})
        run_generation(items, Slow({str(tiny_lm)!r}, settings=GenerationSettings(max_new_tokens=4), batch_size=2),
                       {str(out)!r}, "tiny", commit_every=2, progress=False)
    """)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_text().splitlines()
    assert 4 <= len(partial) < 24, "the worker was not killed mid-run"
    # A kill mid-write leaves a torn line: simulate the worst case on top.
    with open(out, "a") as f:
        f.write('{"instruction_id": "i9", "system": "ti')
    assert subprocess.run([sys.executable, str(script)], env=env).returncode == 0
    lines = out.read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # every line is whole JSON
    ids = [r["instruction_id"] for r in recs]
    assert sorted(ids) == sorted(f"i{k}" for k in range(24))  # every item exactly once
    with ResultStore(out) as store:
        assert store.repaired_bytes == 0


def test_http_backend_round_trip_with_retry_after_503(tiny_lm):
    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=6), batch_size=1)
    local = backend.generate(PROMPTS[:2])
    with LocalServer(backend, fail_first=1) as srv:
        client = OpenAICompatibleBackend(
            srv.url,
            "tiny",
            GenerationSettings(max_new_tokens=6),
            chat=False,
            guard=LOOPBACK,
            max_concurrency=1,
            backoff=0.01,
        )
        answers = client.generate(PROMPTS[:2])
        assert srv.requests == 3  # one planted 503, then both prompts
    assert [a.text for a in answers] == [a.text for a in local]
    assert answers[0].attempts == 2 and answers[0].new_tokens == local[0].new_tokens
    assert answers[0].prompt_tokens == local[0].prompt_tokens


def test_connections_are_kept_alive_and_one_the_server_dropped_is_replaced_transparently(tiny_lm):
    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=3), batch_size=1)
    prompts = [f"{p} {k}" for k in range(4) for p in PROMPTS]
    with LocalServer(backend) as srv:
        settings = GenerationSettings(max_new_tokens=3)
        client = OpenAICompatibleBackend(
            srv.url, "tiny", settings, chat=False, guard=LOOPBACK, max_concurrency=2, retries=0
        )
        first = client.generate(prompts)
        assert srv.requests == len(prompts) and srv.connections <= 2  # not one connection a request
        # Nagle's algorithm off on every kept-alive connection: else each answer's body waits for the
        # client's delayed ACK of its headers (40 ms a request).
        assert srv._open and all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in srv._open)
        srv.drop_connections()  # as a server closes idle keep-alive connections
        again = client.generate(prompts[:3])
        assert [a.error for a in again] == [None] * 3 and [a.attempts for a in again] == [1] * 3
        assert [a.text for a in again] == [a.text for a in first[:3]]
    # A stopped server answers nothing more, on a kept-alive connection neither.
    assert client._idle[0] and client.generate(prompts[:1])[0].error


def test_http_chat_endpoint_and_giving_up(tmp_path):
    from helpers import make_tiny_lm

    chat_lm = make_tiny_lm(tmp_path / "chat_lm", chat_template=True)
    backend = TransformersBackend(chat_lm, settings=GenerationSettings(max_new_tokens=5), batch_size=1)
    with LocalServer(backend, fail_first=10) as srv:
        client = OpenAICompatibleBackend(
            srv.url, "tiny", GenerationSettings(max_new_tokens=5), chat=True, guard=LOOPBACK, retries=2, backoff=0.01
        )
        failed = client.generate(["hello"])[0]
        assert failed.error.startswith("HTTP 503") and failed.attempts == 3
    with LocalServer(backend) as srv:
        client = OpenAICompatibleBackend(
            srv.url, "tiny", GenerationSettings(max_new_tokens=5), chat=True, guard=LOOPBACK
        )
        ok = client.generate(["hello"])[0]
    assert ok.error is None and ok.prompt_tokens > 1


def test_data_guard_refuses_other_hosts_on_real_data_and_allows_loopback():
    with pytest.raises(DataGuardError, match="HIPAA"):
        check_endpoint("https://api.openai.com/v1", synthetic=False)
    assert check_endpoint("http://127.0.0.1:8000/v1", synthetic=False) == "127.0.0.1"
    assert check_endpoint("http://localhost:8000", synthetic=False) == "localhost"
    assert check_endpoint("http://[::1]:8000", synthetic=False) == "::1"
    zero = [{"host": "phi-llm.hospital.org", "zero_retention": True}]
    assert check_endpoint("https://phi-llm.hospital.org/v1", synthetic=False, allowed_hosts=zero)
    with pytest.raises(DataGuardError, match="zero_retention"):
        check_endpoint("https://phi-llm.hospital.org/v1", synthetic=False, allowed_hosts=["phi-llm.hospital.org"])
    assert check_endpoint("https://api.openai.com/v1", synthetic=True)  # synthetic data may go anywhere
    assert is_loopback("127.8.9.10") and not is_loopback("10.0.0.1")
    with pytest.raises(DataGuardError, match="not an http"):
        check_endpoint("ftp://127.0.0.1", synthetic=False)


def test_multi_step_refinement_runs_every_chunk(tiny_lm, tmp_path):
    from medalign_utils.context import REFINE_TEMPLATE, PromptTemplate

    backend = TransformersBackend(tiny_lm, settings=GenerationSettings(max_new_tokens=3), batch_size=4)
    df = pd.DataFrame(
        {
            "instruction_id": ["a", "b"],
            "question": ["glucose?", "bp?"],
            "context": [2048, 2048],
            "chunks": [["<e>1</e>\n", "<e>2</e>\n", "<e>3</e>\n"], ["<e>9</e>\n"]],
        }
    )
    out = tmp_path / "mr.jsonl"
    res = run_refinement(
        df,
        backend,
        out,
        "tiny",
        first_template=PromptTemplate.from_file(),
        refine_template=PromptTemplate.from_file(REFINE_TEMPLATE),
        progress=False,
    )
    assert res["steps"] == 3
    recs = read_results(out).set_index("instruction_id")
    assert recs.loc["a", "steps"] == 3 and len(recs.loc["a", "intermediate_answers"]) == 2
    assert recs.loc["b", "steps"] == 1
    assert (
        run_refinement(
            df,
            backend,
            out,
            "tiny",
            first_template=PromptTemplate.from_file(),
            refine_template=PromptTemplate.from_file(REFINE_TEMPLATE),
            progress=False,
        )["generated"]
        == 0
    )


def test_extractive_baseline_answers_from_the_record(tiny_cohort, tmp_path):
    from medalign_utils.data import load_release

    release = load_release(tiny_cohort)
    ans = ExtractiveBaseline().answer(
        release.ehr_text(next(iter(release.ehr_files))), "What is the current plan of care for hypertension?"
    )
    assert ans.text and len(ans.text.split()) > 5
    res = run_extractive(release, release.instructions.head(6), tmp_path / "x.jsonl", progress=False)
    assert res["generated"] == 6 and read_results(tmp_path / "x.jsonl").system.eq("bm25_extractive").all()


def test_extractive_baseline_is_a_backend_reading_its_prompts(tiny_cohort):
    from medalign_utils.context import PromptTemplate
    from medalign_utils.data import load_release
    from medalign_utils.generation import Backend

    release = load_release(tiny_cohort)
    text = release.ehr_text(next(iter(release.ehr_files)))
    question = "What is the current plan of care for hypertension?"
    baseline = ExtractiveBaseline()
    assert isinstance(baseline, Backend) and baseline.settings is None
    template = PromptTemplate.from_file()
    assert template.parse(template.render(text, question=question)) == {"question": question, "ehr": text}
    direct = baseline.answer(text, question)
    via_prompt, bad = baseline.generate([template.render(text, question=question), "not a prompt"])
    assert via_prompt.text == direct.text and via_prompt.error is None
    assert bad.text == "" and "does not follow" in bad.error
