"""Placing a new system beside the paper's six by a judge's pairwise verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ...stats import BOOTSTRAP, Bootstrap
from .agreement import judge_win_rates, pairwise_battles
from .running import pairwise_items, read_judgments, run_judgments, with_new_system
from .settings import Judge

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


def system_to_place(answers: pd.DataFrame, items: pd.DataFrame, system: str | None = None) -> str | None:
    """The system whose answers to reviewed instructions get placed: `system` when given, else the
    first one in the generations that answered a reviewed instruction without error (None: none did)."""
    if not len(answers):
        return None
    reviewed = answers[answers.instruction_id.isin(items.instruction_id) & answers.error.isna()]
    if system is not None:
        return system if (reviewed.system == system).any() else None
    return reviewed.system.iloc[0] if len(reviewed) else None


def place_new_system(
    judge: Judge,
    items: pd.DataFrame,
    answers: pd.DataFrame,
    system: str,
    release: Release,
    out_path: str | Path,
    *,
    bootstrap: Bootstrap = BOOTSTRAP,
    systems: list[str],
    baseline_judgments=(),
    limit: int | None = None,
    min_instructions: int = 10,
    progress: bool = True,
) -> pd.DataFrame:
    """Judge `system`'s answers (the generation results) pairwise against each of `systems` on the
    reviewed instructions it answered (the first `limit` of them), then rank it among them by the
    judge's win rates over these battles and the six's own (`baseline_judgments`: the judge's
    pairwise files). The new system is named ``new:<system>``; `attrs["n_instructions"]` says how
    many instructions it was judged on; a system judged on fewer than `min_instructions` gets no CI."""
    mine = answers[answers.instruction_id.isin(items.instruction_id) & answers.error.isna()]
    mine = mine[mine.system == system]
    scope = mine.instruction_id.unique()[:limit]
    name = f"new:{system}"
    new_items = with_new_system(items[items.instruction_id.isin(scope)], mine, name)
    run_judgments(
        judge, "pairwise", pairwise_items(new_items, [(name, m) for m in systems]), release, out_path, progress=progress
    )
    battles = pairwise_battles(read_judgments([out_path, *baseline_judgments]), judge=judge.name)
    table = judge_win_rates(
        battles, [*systems, name], bootstrap=bootstrap, patients=release.instructions, min_instructions=min_instructions
    )
    table.attrs["n_instructions"] = len(scope)
    return table
