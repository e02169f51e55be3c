"""Resumable generation runs: one JSONL line per finished item, nothing lost, nothing twice.

Each item is keyed by (instruction_id, system, strategy, context, prompt hash). Finished items are
appended a batch at a time, flushed and fsynced; a rerun skips every key already answered, so a
run killed with SIGKILL loses at most the batch in flight. A half-written last line (the kill
landing mid-write) is cut off by the next writer, under its lock, before anything is appended;
readers (`read_results`) never write, so reading a file a live run appends to loses nothing, and
a second writer on the same file is refused. An item that fails is recorded with its error and the
run goes on; a rerun tries it again (`retry_errors`), and `read_results` keeps one record per key,
the latest answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pandas as pd

KEY_FIELDS = ("instruction_id", "system", "strategy", "context", "prompt_hash")


def prompt_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", errors="replace"), digest_size=12).hexdigest()


class StoreBusyError(RuntimeError):
    """Another writer holds the results file."""


def read_records(path: str | Path, *, required: tuple[str, ...] = (), skipped: list | None = None):
    """The complete records of a JSONL results file, never writing to it: a last line still being
    written (no newline yet) is left for its writer, not cut. A line that is not a JSON object
    (torn by a killed writer, or garbage), or lacks a `required` field, is skipped; with a
    `skipped` list, each is named there ("FILE line N: why")."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        data = f.read()
    for number, line in enumerate(data[: data.rfind(b"\n") + 1].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            rec, why = None, "not JSON"
        else:
            missing = [f for f in required if f not in rec] if isinstance(rec, dict) else None
            why = "not a JSON object" if missing is None else f"missing {', '.join(missing)}" if missing else ""
        if why:
            if skipped is not None:
                skipped.append(f"{path} line {number}: {why}, skipped")
            continue
        yield rec


class ResultStore:
    """The JSONL file of a run, opened by its one writer: takes an exclusive lock (a second writer
    on the same file is refused, not duplicated), repairs a torn last line left by a killed writer,
    knows which keys are done, appends durably. Use as a context manager, or `close()`."""

    def __init__(self, path: str | Path, key_fields: tuple[str, ...] = KEY_FIELDS, *, upgrade=None):
        import fcntl

        self.path = Path(path)
        self.key_fields = key_fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreBusyError(f"{self.path} is being written by another run: refusing a second writer") from None
        self.repaired_bytes = self._repair()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        for rec in read_records(self.path):
            rec = upgrade(rec) if upgrade else rec
            (self.failed if rec.get("error") else self.done).add(self.key(rec))
        self.failed -= self.done

    def key(self, rec) -> str:
        return "|".join(str(rec[k]) for k in self.key_fields)

    def sync(self) -> None:
        """Make everything appended so far durable (fsync)."""
        if self.path.exists():
            with open(self.path, "rb") as f:
                os.fsync(f.fileno())

    def close(self) -> None:
        if not self._lock.closed:
            self._lock.close()  # releases the lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _repair(self) -> int:
        """Cut an incomplete last line (no newline) left by a killed writer; only the writer, under
        its lock, ever does this."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return 0
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            tail = data[end:]
            if tail:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            return len(tail)

    def todo(self, items: pd.DataFrame, *, retry_failed: bool = True) -> pd.DataFrame:
        """The items (rows holding the key fields) not yet done; failed ones too unless `retry_failed`
        is False."""
        if not len(items):
            return items
        skip = self.done | (set() if retry_failed else self.failed)
        return items[~items.apply(self.key, axis=1).isin(skip)]

    def run(
        self,
        items: pd.DataFrame,
        process,
        *,
        chunk_size: int,
        retry_failed: bool = True,
        tally=None,
        desc: str = "",
        unit: str = "item",
        progress: bool = True,
    ) -> dict:
        """The one resumable loop: skip the items already done, hand the rest to `process(chunk) ->
        records` `chunk_size` at a time, append each chunk's records as soon as they exist (a kill
        loses at most the chunk in flight; a `process` that yields its records one by one has each
        written as it comes, so a kill loses only what is in flight), and call `tally(records)`.
        Returns done_before and seconds."""
        from tqdm.auto import tqdm

        todo = self.todo(items, retry_failed=retry_failed)
        chunk_size = max(1, int(chunk_size))
        bar = tqdm(total=len(todo), desc=desc, unit=unit, disable=not progress)
        t0 = time.perf_counter()
        for start in range(0, len(todo), chunk_size):
            chunk = todo.iloc[start : start + chunk_size]
            records = process(chunk)
            if isinstance(records, list):
                self.append(records)
                if tally is not None:
                    tally(records)
                bar.update(len(chunk))
                continue
            synced = time.monotonic()
            for rec in records:  # a generator: each record is written as soon as it is final
                # Written and flushed at once (a killed process loses nothing written); made
                # durable against a machine crash at most a second later, and at the chunk's end.
                self.append([rec], sync=time.monotonic() - synced > 1.0)
                synced = time.monotonic() if time.monotonic() - synced > 1.0 else synced
                if tally is not None:
                    tally([rec])
                bar.update(1)
            self.sync()
        bar.close()
        return {"done_before": len(items) - len(todo), "seconds": time.perf_counter() - t0}

    def append(self, records: list[dict], *, sync: bool = True) -> None:
        """Append records; with `sync` (the default) fsynced before returning."""
        if not records:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(payload)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        for r in records:
            k = self.key(r)
            if r.get("error"):
                self.failed.add(k)
            else:
                self.done.add(k)
                self.failed.discard(k)


def read_results(
    path: str | Path, key_fields: tuple[str, ...] = KEY_FIELDS, *, upgrade=None, required=(), skipped=None
) -> pd.DataFrame:
    """A run's records, one per key (the latest answer; an error only where no answer exists).
    Reads only: safe while a run is appending to the file. `required` and `skipped` as in
    `read_records`."""
    recs = [upgrade(r) if upgrade else r for r in read_records(path, required=required, skipped=skipped)]
    if not recs:
        return pd.DataFrame(columns=[*key_fields, "answer", "error"])
    df = pd.DataFrame(recs)
    for col in (*key_fields, "error"):
        if col not in df.columns:
            df[col] = None
    df["_ok"] = df["error"].isna()
    df["_order"] = range(len(df))
    df = df.sort_values(["_ok", "_order"]).drop_duplicates([*key_fields], keep="last")
    return df.sort_values("_order").drop(columns=["_ok", "_order"]).reset_index(drop=True)


def read_answers(path: str | Path, *, system: str | None = None, missing_ok: bool = False) -> pd.DataFrame:
    """Stored answers from any generations file: notebook 03's or an imported run's JSONL, or a
    TSV/CSV with `instruction_id` and `answer` (its system: `system`, else the file's stem).
    Returns instruction_id, system, answer, error (one row per instruction and system, the latest);
    with `system`, only that system's; with `missing_ok`, no rows when the file does not exist.
    `attrs["skipped"]` names each unreadable line or row."""
    path = Path(path)
    skipped: list[str] = []
    if not path.is_file() and missing_ok:  # no answers yet (notebook 03 not run): nothing to judge
        out = pd.DataFrame(columns=["instruction_id", "system", "answer", "error"])
        out.attrs["skipped"] = skipped
        return out
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such generations file")
    if path.suffix in (".tsv", ".csv", ".txt"):
        table = pd.read_csv(path, sep="\t" if path.suffix != ".csv" else ",", dtype=str, keep_default_na=False)
        missing = {"instruction_id", "answer"} - set(table.columns)
        if missing:
            raise ValueError(
                f"{path}: needs the columns instruction_id and answer (missing {', '.join(sorted(missing))})"
            )
        if "system" not in table.columns:
            table["system"] = system or path.stem
        blank = table.instruction_id.str.strip() == ""
        skipped += [f"{path} row {k + 2}: no instruction_id, skipped" for k in table.index[blank]]
        out = table[~blank].assign(error=None)
    else:
        out = read_results(path, skipped=skipped)
        if "answer" not in out.columns:
            out["answer"] = None
    out = out.assign(instruction_id=out.instruction_id.astype(str), system=out.system.astype(str))
    if system is not None:
        out = out[out.system == system]
    answered = out[out.error.isna()] if out.error.notna().any() else out
    out = pd.concat([answered, out[~out.instruction_id.isin(answered.instruction_id)]])
    earlier = int(out.duplicated(["instruction_id", "system"], keep="last").sum())
    if earlier:  # several strategies or contexts answered the same instruction: the latest is kept
        skipped.append(f"{path}: {earlier} earlier answers to the same instruction and system left out (latest kept)")
    out = out.drop_duplicates(["instruction_id", "system"], keep="last")
    out = out[["instruction_id", "system", "answer", "error"]].reset_index(drop=True)
    out.attrs["skipped"] = skipped
    return out
