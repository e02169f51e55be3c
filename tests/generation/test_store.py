"""The results store under a live run: readers lose nothing, a second writer is refused."""

from __future__ import annotations

import pytest


def test_reading_a_file_a_live_run_appends_to_loses_nothing_and_two_writers_are_refused(tmp_path):
    from medalign_utils.generation import ResultStore, StoreBusyError, read_results

    out = tmp_path / "g.jsonl"
    rec = {"instruction_id": "i1", "system": "s", "strategy": "recent", "context": 1, "prompt_hash": "h"}
    with ResultStore(out) as writer:
        writer.append([{**rec, "answer": "a", "error": None}])
        with open(out, "a") as f:
            f.write('{"instruction_id": "i2", "system": "s", "strat')  # a line still being written
        size = out.stat().st_size
        assert list(read_results(out).instruction_id) == ["i1"]
        assert out.stat().st_size == size  # the reader cut nothing
        with pytest.raises(StoreBusyError, match="refusing a second writer"):
            ResultStore(out)
    with ResultStore(out) as again:  # the next writer repairs, under its lock
        assert again.repaired_bytes > 0
