"""The usage ledger: what each backend was asked and where text went, recorded where it leaves.

Every request an endpoint backend sends is recorded in this process's `LEDGER` as it is made
(`OpenAICompatibleBackend._post`, the one place requests leave), with the host it went to and
the server's `usage` (prompt, cached prompt and completion tokens); a local model's batches are
recorded as host ``local`` (nothing leaves the machine). `medalign run` adds a last cell to every
notebook it executes that shows the kernel's ledger as a MIME output (`display_ledger`), reads it
back, and keeps it in run.json and on the index; a page never shows that cell.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

LEDGER_MIME = "application/vnd.medalign.ledger+json"
LEDGER_CELL_TAG = "medalign-ledger"
LOCAL = "local"


@dataclass
class Usage:
    backend: str
    model: str
    host: str
    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cost: float = 0.0


class Ledger:
    """Usage by (backend, model, host), and prices per model (per 1,000 tokens) for its cost."""

    def __init__(self):
        self._lock = threading.Lock()
        self._rows: dict[tuple, Usage] = {}
        self._prices: dict[str, tuple[float, float, float | None]] = {}

    def set_prices(self, model: str, *, prompt: float = 0.0, completion: float = 0.0, cached: float | None = None):
        with self._lock:
            self._prices[model] = (prompt, completion, cached)

    def record(self, *, backend: str, model: str, host: str, usage: dict | None, seconds: float, ok: bool = True):
        """One request (or a local batch): its tokens as the server's `usage` reports them."""
        usage = usage or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or usage.get("cached_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        with self._lock:
            row = self._rows.setdefault((backend, model, host), Usage(backend, model, host))
            row.requests += 1
            row.failed += not ok
            row.prompt_tokens += prompt
            row.cached_prompt_tokens += cached
            row.completion_tokens += completion
            row.seconds += seconds
            p, c, k = self._prices.get(model, (0.0, 0.0, None))
            row.cost += ((prompt - cached) * p + cached * (p if k is None else k) + completion * c) / 1000

    def entries(self) -> list[dict]:
        with self._lock:
            return [asdict(r) for r in self._rows.values()]

    def hosts(self) -> list[str]:
        """Every host that received text (a request), loopback included; never `local`."""
        return sorted({e["host"] for e in self.entries() if e["host"] != LOCAL})

    def reset(self) -> None:
        with self._lock:
            self._rows.clear()


LEDGER = Ledger()


def display_ledger() -> None:
    """Show this kernel's ledger as a MIME output the runner reads back (`ledger_in`)."""
    from IPython.display import display

    display({LEDGER_MIME: {"usage": LEDGER.entries()}, "text/plain": "usage ledger"}, raw=True)


def ledger_in(executed_notebook) -> list[dict]:
    """The ledger an executed notebook showed (its `display_ledger` output), or none."""
    import json
    from pathlib import Path

    nb = json.loads(Path(executed_notebook).read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if LEDGER_CELL_TAG in cell.get("metadata", {}).get("tags", []):
            for out in cell.get("outputs", []):
                data = out.get("data", {})
                if LEDGER_MIME in data:
                    return list(data[LEDGER_MIME].get("usage", []))
    return []


def with_ledger_cell(notebook_json: dict) -> dict:
    """The notebook with a last cell that shows the kernel's ledger (tagged, so pages drop it)."""
    cell = {
        "cell_type": "code",
        "execution_count": None,
        "id": "medalign-ledger",
        "metadata": {"tags": [LEDGER_CELL_TAG]},
        "outputs": [],
        "source": "from medalign_utils.generation.ledger import display_ledger\ndisplay_ledger()",
    }
    return {**notebook_json, "cells": [*notebook_json.get("cells", []), cell]}
