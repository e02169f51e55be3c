"""What a run would send, before it sends anything: `medalign run --estimate`.

For each notebook that asks an endpoint (a server, not a local model): the requests it would make,
their prompt tokens, the most completion tokens and the most cost at the configured prices. It
reads the notebooks' own parameters and selects their items with the package's functions the
notebooks call (notebook 03: `select_prompts` over notebook 02's prompts; notebook 06: the judge's
sample in each of its modes), and builds no backend that could send: endpoint judges are built
(their URLs pass the data guard) but never asked. Local models send nothing and cost no tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from ..config import SuiteConfig, project_path
from .notebooks import NotebookSpec, parameter_defaults

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release

COLUMNS = [
    "notebook",
    "what",
    "endpoint",
    "requests",
    "prompt_tokens",
    "completion_tokens_at_most",
    "cost_at_most",
    "note",
]


def estimate_run(cfg: SuiteConfig, release: Release, plan: list[NotebookSpec]) -> pd.DataFrame:
    """One row per endpoint a notebook of `plan` would ask (and a row saying so where none)."""
    rows = []
    for spec in plan:
        params = {**parameter_defaults(spec.path), **cfg.notebook_parameters(spec.name, set(spec.parameters))}
        if spec.name.startswith("03_") and params.get("endpoint"):
            rows.append(_generation_row(spec.name, params, release))
        elif spec.name.startswith("06_") and _is_endpoint(params.get("judge_spec")):
            rows += _judge_rows(spec.name, params, release)
    out = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("requests", "prompt_tokens", "completion_tokens_at_most"):  # counts, "<NA>" where none
        out[col] = out[col].astype("Int64")
    out.attrs["note"] = "no notebook asks an endpoint: local models send nothing" if not rows else ""
    return out


def _is_endpoint(spec) -> bool:
    from ..generation.backends import backend_kind

    return spec is not None and backend_kind(spec) == "endpoint"


def _generation_row(name: str, params: dict, release: Release) -> dict:
    from ..context import read_prompts, select_prompts
    from ..synthetic import grading

    path = project_path(params["prompts_path"])
    if not path.exists():
        return {
            "notebook": name,
            "what": "answers",
            "endpoint": params["endpoint"],
            "note": f"{path.name} not made yet: run 02 first",
        }
    cells = {
        "tokenizer": params["prompt_tokenizer"],
        "contexts": params["generation_contexts"],
        "strategies": params["generation_strategies"],
    }
    order = grading.generation_order(release.instructions, release.planted_truth)
    items, _ = select_prompts(read_prompts(path), order, **cells, max_items=params["max_items"])
    note = "multi-step refinement not counted" if params.get("mr_items") else ""
    return {
        "notebook": name,
        "what": "answers",
        "endpoint": params["endpoint"],
        "requests": len(items),
        "prompt_tokens": int(items.prompt_tokens.sum()),
        "completion_tokens_at_most": len(items) * int(params["max_new_tokens"]),
        "cost_at_most": 0.0,
        "note": note or "prompt tokens in the prompt tokenizer; no prices configured for generation",
    }


def _judge_rows(name: str, params: dict, release: Release) -> list[dict]:
    from ..evaluation.judge import Judge, JudgeSettings, estimate_judgments, get_mode, pairwise_items, response_items
    from ..generation.guard import DataGuard

    settings = JudgeSettings.from_parameters(params)
    judge = Judge.from_settings(settings, guard=DataGuard.for_release(release, params.get("allowed_hosts") or []))
    items = response_items(release)
    items = items[items.instruction_id.isin(sorted(items.instruction_id.unique())[: params["judge_instructions"]])]
    rows = []
    for mode in params["judge_modes"]:
        its = pairwise_items(items) if get_mode(mode).judges == "pair" else items
        e = estimate_judgments(judge, mode, its, release)
        rows.append(
            {
                "notebook": name,
                "what": f"judge ({mode})",
                "endpoint": settings.spec,
                "requests": e["requests"],
                "prompt_tokens": e["prompt_tokens"],
                "completion_tokens_at_most": e["completion_tokens_at_most"],
                "cost_at_most": e["cost_at_most"],
                "note": "retries and the new system's placement and label plan not counted",
            }
        )
    return rows
