"""Running backends over prompts into a `ResultStore`: generation, multi-step refinement, and the
extractive baseline run like any backend. Every run goes through `ResultStore.run`, the one
resumable loop (skip what is done, append a chunk at a time, count)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from tqdm.auto import tqdm

from ..provenance import package_versions
from .backends import Answer, Backend
from .store import ResultStore, prompt_hash

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release


def run_generation(
    items: pd.DataFrame,
    backend: Backend,
    out_path: str | Path,
    system: str,
    *,
    prompt_column: str = "prompt",
    commit_every: int | None = None,
    progress: bool = True,
    retry_errors: bool = True,
    data_fingerprint: str = "",
    extra: dict | None = None,
) -> dict:
    """Answer every item (columns instruction_id, strategy, context and the prompt column) not yet in
    `out_path`. Returns counts: done_before, generated, failed, seconds, tokens_per_s."""
    items = items.copy()
    items["prompt_hash"] = items[prompt_column].map(prompt_hash)
    items["system"] = system
    # Commit a batch at a time: prompts of one context together (similar lengths), in text order, so
    # prompts that share a prefix (a patient's, with the record first) are in one batch and prefilled once.
    by = ["context", prompt_column] if "context" in items.columns else [prompt_column]
    items = items.sort_values(by, kind="stable")
    identity = {
        "model": backend.describe(),
        "settings": backend.settings.to_dict() if backend.settings else None,
        "versions": dict(package_versions(("torch", "transformers", "medalign-suite"))),
        "data_fingerprint": data_fingerprint,
        **(extra or {}),
    }
    counts = {"generated": 0, "failed": 0, "new_tokens": 0}

    def process(chunk: pd.DataFrame) -> list[dict]:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        answers = _generate_each(backend, chunk[prompt_column].tolist())
        return [
            _answer_record(row, ans, system, started, identity=identity)
            for row, ans in zip(chunk.itertuples(), answers)
        ]

    def tally(records: list[dict]) -> None:
        for rec in records:
            counts["failed" if rec["error"] is not None else "generated"] += 1
            counts["new_tokens"] += rec["new_tokens"] or 0

    with ResultStore(out_path) as store:
        ran = store.run(
            items,
            process,
            chunk_size=commit_every or backend.batch_size,
            retry_failed=retry_errors,
            tally=tally,
            desc=f"generating ({system})",
            progress=progress,
        )
        seconds = ran["seconds"]
        return {
            "done_before": ran["done_before"],
            **counts,
            "seconds": seconds,
            "tokens_per_s": counts["new_tokens"] / seconds if seconds > 0 else 0.0,
            "repaired_bytes": store.repaired_bytes,
        }


def _generate_each(backend: Backend, prompts: list[str]) -> list[Answer]:
    """The backend's answers to a batch; when the batch fails, each prompt alone, so one bad item
    does not sink its batch."""
    try:
        return backend.generate(prompts)
    except Exception:
        answers = []
        for p in prompts:
            try:
                answers.append(backend.generate([p])[0])
            except Exception as err:
                answers.append(Answer("", error=f"{type(err).__name__}: {err}"[:500]))
        return answers


def _answer_record(row, ans: Answer, system: str, started: str, *, identity: dict) -> dict:
    return {
        "instruction_id": row.instruction_id,
        "system": system,
        "strategy": row.strategy,
        "context": int(row.context),
        "template": getattr(row, "template", None),  # which prompt: the paper's, or the record first
        "prompt_hash": row.prompt_hash,
        "answer": ans.text,
        "error": ans.error,
        "finish_reason": ans.finish_reason,
        "prompt_tokens": ans.prompt_tokens,
        "new_tokens": ans.new_tokens,
        "seconds": round(ans.seconds, 4),
        "attempts": ans.attempts,
        "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **identity,
    }


def run_refinement(
    items: pd.DataFrame,
    backend: Backend,
    out_path: str | Path,
    system: str,
    *,
    first_template=None,
    refine_template=None,
    tokenizer=None,
    use_chat_template: bool = True,
    progress: bool = True,
    data_fingerprint: str = "",
) -> dict:
    """The paper's multi-step refinement (MR). `items` has instruction_id, question, context and
    `chunks` (the record's chunks, earliest first). Step 0 answers from the first chunk; each next
    step shows the next chunk and the previous answer and asks to update it if appropriate or keep
    it. All instructions at the same step are generated together. The final answer is recorded with
    every intermediate one, under strategy 'mr_chunks'. The templates default to the paper's."""
    from ..context.templates import DEFAULT_TEMPLATE, REFINE_TEMPLATE, PromptTemplate

    first_template = first_template or PromptTemplate.from_file(DEFAULT_TEMPLATE)
    refine_template = refine_template or PromptTemplate.from_file(REFINE_TEMPLATE)
    rows = pd.DataFrame(
        {
            "instruction_id": items.instruction_id.to_numpy(),
            "system": system,
            "strategy": "mr_chunks",
            "context": items.context.astype(int).to_numpy(),
            "prompt_hash": [prompt_hash(q + "".join(c)) for q, c in zip(items.question, items.chunks)],
            "question": items.question.to_numpy(),
            "chunks": [list(c) for c in items.chunks],
        }
    )
    steps = {"steps": 0}

    def process(chunk: pd.DataFrame) -> list[dict]:
        states = [{"row": r, "answers": [], "errors": [], "tokens": 0} for r in chunk.itertuples(index=False)]
        steps["steps"] = max((len(s["row"].chunks) for s in states), default=0)
        for step in tqdm(range(steps["steps"]), desc=f"refinement steps ({system})", disable=not progress):
            active = [s for s in states if step < len(s["row"].chunks)]
            templates = (first_template, refine_template)
            prompts = [
                _refinement_prompt(s, step, templates, tokenizer=tokenizer, use_chat_template=use_chat_template)
                for s in active
            ]
            for s, ans in zip(active, backend.generate(prompts)):
                s["answers"].append(ans.text if not ans.error else s["answers"][-1] if s["answers"] else "")
                s["errors"].append(ans.error)
                s["tokens"] += ans.new_tokens or 0
        return [_refinement_record(s, backend, data_fingerprint) for s in states]

    with ResultStore(out_path) as store:
        # Every instruction at once: the steps batch across instructions.
        ran = store.run(rows, process, chunk_size=max(1, len(rows)), progress=False)
    n = len(rows) - ran["done_before"]
    return {"generated": n, "steps": steps["steps"], "seconds": ran["seconds"]}


def _refinement_prompt(state: dict, step: int, templates: tuple, *, tokenizer, use_chat_template: bool) -> str:
    row, answers = state["row"], state["answers"]
    first_template, refine_template = templates
    if step == 0:
        pre, suf = first_template.parts(tokenizer, use_chat_template, question=row.question)
    else:
        pre, suf = refine_template.parts(
            tokenizer, use_chat_template, question=row.question, previous_answer=answers[-1]
        )
    return pre + row.chunks[step] + suf


def _refinement_record(state: dict, backend: Backend, data_fingerprint: str) -> dict:
    row, answers = state["row"], state["answers"]
    return {
        "instruction_id": row.instruction_id,
        "system": row.system,
        "strategy": "mr_chunks",
        "context": int(row.context),
        "prompt_hash": row.prompt_hash,
        "answer": answers[-1] if answers else "",
        "error": next((e for e in state["errors"] if e), None) if not answers else None,
        "steps": len(answers),
        "intermediate_answers": answers[:-1],
        "new_tokens": state["tokens"],
        "model": backend.describe(),
        "settings": backend.settings.to_dict(),
        "data_fingerprint": data_fingerprint,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_extractive(
    release: Release,
    instructions: pd.DataFrame,
    out_path: str | Path,
    *,
    baseline: Backend | None = None,
    progress: bool = True,
) -> dict:
    """The model-free BM25 extractive baseline over the whole record, run like any backend and
    recorded like a system (`bm25_extractive`, strategy `whole_record`, context 0). One record's
    prompts are built at a time, so memory holds one record."""
    from .backends import ExtractiveBaseline

    baseline = baseline or ExtractiveBaseline()
    generated = 0
    for pid, part in tqdm(list(instructions.groupby("person_id")), desc="extractive baseline", disable=not progress):
        if pid not in release.ehr_files:
            continue
        text = release.ehr_text(pid)
        items = pd.DataFrame(
            {
                "instruction_id": part.instruction_id.to_numpy(),
                "strategy": "whole_record",
                "context": 0,
                "user_message": [baseline.template.render(text, question=q) for q in part.question.fillna("")],
            }
        )
        generated += run_generation(
            items, baseline, out_path, "bm25_extractive", prompt_column="user_message", progress=False
        )["generated"]
    return {"generated": generated}


def throughput_table(results: pd.DataFrame, system: str) -> pd.DataFrame:
    """One system's answers per strategy and context: items, errors, mean prompt and new tokens,
    seconds per item and new tokens per second of wall time."""
    mine = results[results.system == system]
    table = mine.groupby(["strategy", "context"]).agg(
        items=("answer", "size"),
        errors=("error", lambda e: e.notna().sum()),
        prompt_tokens=("prompt_tokens", "mean"),
        new_tokens=("new_tokens", "mean"),
        seconds_per_item=("seconds", "mean"),
    )
    table["new_tokens_per_s"] = table.new_tokens / table.seconds_per_item
    return table
