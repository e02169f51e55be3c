"""TODO docstring."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ..provenance import package_versions
from .backends import Answer, Backend
from .store import ResultStore, prompt_hash


def run_generation(
    items: pd.DataFrame,
    backend: Backend,
    out_path: str | Path,
    system: str,
    prompt_column: str = "prompt",
    commit_every: int | None = None,
    progress: bool = True,
    retry_errors: bool = True,
    data_fingerprint: str = "",
    extra: dict | None = None,
) -> dict:
    """Answer every item (columns instruction_id, strategy, context and the prompt column) not yet in
    `out_path`. Returns counts: done_before, generated, failed, seconds, tokens_per_s."""
    from tqdm import tqdm

    with ResultStore(out_path) as store:
        items = items.copy()
        items["prompt_hash"] = items[prompt_column].map(prompt_hash)
        items["system"] = system
        keys = items.apply(lambda r: store.key(r), axis=1)
        skip = store.done | (set() if retry_errors else store.failed)
        todo = items[~keys.isin(skip)]
        done_before = len(items) - len(todo)
        # Commit a batch at a time, prompts of similar length together (the backend batches the same way).
        size = commit_every or backend.batch_size
        todo = todo.assign(_len=todo[prompt_column].str.len()).sort_values("_len", kind="stable")
        desc = backend.describe()
        settings = backend.settings
        versions = {k: v for k, v in package_versions(("torch", "transformers", "medalign-suite")).items()}
        n_new = n_failed = tokens = 0
        t_start = time.perf_counter()
        bar = tqdm(total=len(todo), desc=f"generating ({system})", unit="item", disable=not progress)
        for start in range(0, len(todo), size):
            chunk = todo.iloc[start : start + size]
            prompts = chunk[prompt_column].tolist()
            started = datetime.now(UTC).isoformat(timespec="seconds")
            try:
                answers = backend.generate(prompts)
            except Exception:
                answers = []
                for p in prompts:  # one bad item must not sink its batch
                    try:
                        answers.append(backend.generate([p])[0])
                    except Exception as err:
                        answers.append(Answer("", error=f"{type(err).__name__}: {err}"[:500]))
            records = []
            for row, ans in zip(chunk.itertuples(index=False), answers):
                rec = {
                    "instruction_id": row.instruction_id,
                    "system": system,
                    "strategy": row.strategy,
                    "context": int(row.context),
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
                    "model": desc,
                    "settings": settings.to_dict() if settings else None,
                    "versions": versions,
                    "data_fingerprint": data_fingerprint,
                    **(extra or {}),
                }
                records.append(rec)
                n_failed += ans.error is not None
                n_new += ans.error is None
                tokens += ans.new_tokens or 0
            store.append(records)
            bar.update(len(chunk))
        bar.close()
        seconds = time.perf_counter() - t_start
        return {
            "done_before": done_before,
            "generated": n_new,
            "failed": n_failed,
            "seconds": seconds,
            "new_tokens": tokens,
            "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
            "repaired_bytes": store.repaired_bytes,
        }


def run_refinement(
    items: pd.DataFrame,
    backend: Backend,
    out_path: str | Path,
    system: str,
    first_template,
    refine_template,
    tokenizer=None,
    use_chat_template: bool = True,
    progress: bool = True,
    data_fingerprint: str = "",
) -> dict:
    """The paper's multi-step refinement (MR). `items` has instruction_id, question, context and
    `chunks` (the record's chunks, earliest first). Step 0 answers from the first chunk; each next
    step shows the next chunk and the previous answer and asks to update it if appropriate or keep
    it. All instructions at the same step are generated together. The final answer is recorded with
    every intermediate one, under strategy 'mr_chunks'."""
    from tqdm import tqdm

    with ResultStore(out_path) as store:
        rows = []
        for r in items.itertuples(index=False):
            chunks = list(r.chunks)
            rows.append(
                {
                    "iid": r.instruction_id,
                    "q": r.question,
                    "ctx": int(r.context),
                    "chunks": chunks,
                    "hash": prompt_hash(r.question + "".join(chunks)),
                    "answers": [],
                }
            )
        rows = [
            r
            for r in rows
            if store.key(
                {
                    "instruction_id": r["iid"],
                    "system": system,
                    "strategy": "mr_chunks",
                    "context": r["ctx"],
                    "prompt_hash": r["hash"],
                }
            )
            not in store.done
        ]
        steps = max((len(r["chunks"]) for r in rows), default=0)
        t0 = time.perf_counter()
        for step in tqdm(range(steps), desc=f"refinement steps ({system})", disable=not progress):
            active = [r for r in rows if step < len(r["chunks"])]
            prompts = []
            for r in active:
                if step == 0:
                    pre, suf = first_template.parts(tokenizer, use_chat_template, question=r["q"])
                else:
                    pre, suf = refine_template.parts(
                        tokenizer, use_chat_template, question=r["q"], previous_answer=r["answers"][-1]
                    )
                prompts.append(pre + r["chunks"][step] + suf)
            for r, ans in zip(active, backend.generate(prompts)):
                r["answers"].append(ans.text if not ans.error else r["answers"][-1] if r["answers"] else "")
                r.setdefault("errors", []).append(ans.error)
                r["tokens"] = r.get("tokens", 0) + (ans.new_tokens or 0)
        records = [
            {
                "instruction_id": r["iid"],
                "system": system,
                "strategy": "mr_chunks",
                "context": r["ctx"],
                "prompt_hash": r["hash"],
                "answer": r["answers"][-1] if r["answers"] else "",
                "error": next((e for e in r.get("errors", []) if e), None) if not r["answers"] else None,
                "steps": len(r["answers"]),
                "intermediate_answers": r["answers"][:-1],
                "new_tokens": r.get("tokens", 0),
                "model": backend.describe(),
                "settings": backend.settings.to_dict(),
                "data_fingerprint": data_fingerprint,
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            for r in rows
        ]
        store.append(records)
        return {"generated": len(records), "steps": steps, "seconds": time.perf_counter() - t0}


def run_extractive(
    release, instructions: pd.DataFrame, out_path: str | Path, baseline: Backend | None = None, progress: bool = True
) -> dict:
    """The model-free BM25 extractive baseline over the whole record, run like any backend and
    recorded like a system (`bm25_extractive`, strategy `whole_record`, context 0). One record's
    prompts are built at a time, so memory holds one record."""
    from tqdm import tqdm

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
