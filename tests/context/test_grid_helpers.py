"""The grid summaries and the prompt file notebooks 02 and 03 share."""

from __future__ import annotations

import pandas as pd
import pytest

from medalign_utils.context import (
    PROMPT_COLUMNS,
    GridSettings,
    build_prompt_grid,
    export_prompts,
    grid_summary,
    load_tokenizer,
    peer_comparison,
    read_prompts,
    retention_table,
    select_prompts,
    write_prompts,
)
from medalign_utils.data import data_line, instruction_length_bins, load_release, release_label


@pytest.fixture(scope="module")
def grid_and_release(tiny_cohort):
    release = load_release(tiny_cohort)
    tok = load_tokenizer("cl100k")
    ins = release.instructions.head(8)
    grid = build_prompt_grid(release, tok, GridSettings((2048, 8192), ("recent", "helm", "timer")), instructions=ins,
                             progress=False).assign(tokenizer="cl100k")  # fmt: skip
    return grid, release, tok


def test_grid_summary_counts_what_the_grid_holds(grid_and_release):
    grid, _, _ = grid_and_release
    s = grid_summary(grid)
    ok = grid[~grid.dropped]
    assert s["cells"] == len(grid) and s["dropped"] == grid.dropped.sum()
    assert s["over_budget"] == (ok.prompt_tokens > ok.target_tokens).sum() == 0
    assert s["over_budget_by_strategy"] == {}
    cut = ok[(ok.strategy == "recent") & (ok.kept_tokens < ok.base_tokens)]
    assert s["recent_exact_pct"] == pytest.approx(100 * (cut.prompt_tokens == cut.target_tokens).mean())


def test_peer_comparison_is_the_mean_token_gap_on_cut_records(grid_and_release):
    grid, _, _ = grid_and_release
    lost, kept = peer_comparison(grid)
    assert set(lost.columns) == {"helm", "timer"} and (lost.values >= 0).all()
    cell = grid[(grid.context == 2048) & ~grid.dropped].pivot(
        index="instruction_id", columns="strategy", values="kept_tokens"
    )
    base = grid[(grid.context == 2048) & (grid.strategy == "recent")].set_index("instruction_id").base_tokens
    cut = cell[cell.recent < base.reindex(cell.index)]
    assert lost.loc[("cl100k", 2048), "helm"] == pytest.approx((cut.recent - cut.helm).mean())
    expected = retention_table(grid[~grid.dropped]).set_index(["strategy", "context"]).retained_pct
    assert kept.loc[("cl100k", 8192), "recent"] == pytest.approx(expected[("recent", 8192)])
    assert peer_comparison(grid[grid.strategy == "recent"])[0].empty


def test_exported_prompts_round_trip_with_the_shared_columns(grid_and_release, tmp_path):
    grid, release, tok = grid_and_release
    prompts = export_prompts(grid, release, {"cl100k": tok}, contexts=[2048], strategies=["recent"])
    assert list(prompts.columns) == PROMPT_COLUMNS and (prompts.context == 2048).all()
    assert all(tok.count(p) == n for p, n in zip(prompts.prompt, prompts.prompt_tokens))
    # What a chat endpoint is sent (notebook 03's chat path): the same prompt, no chat template.
    assert prompts.user_message.notna().all() and all(m in p for m, p in zip(prompts.user_message, prompts.prompt))
    write_prompts(prompts.assign(extra=1), tmp_path / "p" / "prompts.parquet")
    back = read_prompts(tmp_path / "p" / "prompts.parquet")
    pd.testing.assert_frame_equal(back, prompts.reset_index(drop=True))
    order = list(reversed(prompts.instruction_id.unique()))
    items, chosen = select_prompts(back, order, tokenizer="cl100k", contexts=[2048], strategies=["recent"], max_items=3)
    assert chosen == order[:3] and set(items.instruction_id) == set(chosen)
    # A cell 02 did not export is an error naming what the file holds and how to make the rest
    prompts.drop(columns="user_message").to_parquet(tmp_path / "old.parquet")
    with pytest.raises(ValueError, match=r"old.parquet: no user_message column .*rerun 02"):
        read_prompts(tmp_path / "old.parquet")
    for tokenizer, contexts in (("other", [2048]), ("cl100k", [8192])):
        with pytest.raises(ValueError, match=r"holds cl100k/recent@2048\..*export_contexts") as err:
            select_prompts(back, order, tokenizer=tokenizer, contexts=contexts, strategies=["recent"], max_items=3)
        assert f"{tokenizer}/recent@{contexts[0]}" in str(err.value)


def test_exporting_a_context_or_strategy_the_grid_lacks_is_an_error(grid_and_release):
    grid, release, tok = grid_and_release
    with pytest.raises(ValueError, match="export context 4096 is not in the grid .*context_lengths"):
        export_prompts(grid, release, {"cl100k": tok}, contexts=[2048, 4096], strategies=["recent"])
    with pytest.raises(ValueError, match="export strategy retrieval"):
        export_prompts(grid, release, {"cl100k": tok}, contexts=[2048], strategies=["retrieval"])


def test_the_data_line_and_length_bands(grid_and_release):
    _, release, _ = grid_and_release
    assert release_label(release) == "synthetic cohort"
    assert data_line(release) == f"data: synthetic cohort; fingerprint {release.fingerprint()}"
    counts = pd.DataFrame({"person_id": sorted(release.ehr_files), "n_tokens": 40_000})
    counts.loc[0, "n_tokens"] = 1000
    bands = instruction_length_bins(release.instructions, counts)
    first = release.instructions.person_id == counts.person_id[0]
    assert (bands[first.to_numpy()] == "≤32k").all() and (bands[~first.to_numpy()] == "32k–64k").all()
