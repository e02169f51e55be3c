"""The record-first template (`ehr_first`): one cut of a patient's record for all its instructions,
fitted beside the longest, exact prompt counts, prompts that share the record as a token prefix,
the variant recorded in what is exported and answered, and what it changes in kept evidence."""

from __future__ import annotations

import pytest

from medalign_utils import context as C
from medalign_utils.data import load_release
from medalign_utils.generation.decoding import shared_prefix_length


@pytest.fixture(scope="module")
def setting(tiny_cohort):
    release = load_release(tiny_cohort)
    tok = C.load_tokenizer("smollm2")
    template = C.template_named("ehr_first")
    settings = C.GridSettings(contexts=(2048, 4096), strategies=("recent", "oldest", "retrieval"))
    grid = C.build_prompt_grid(release, tok, settings, template=template, progress=False)
    return release, tok, template, grid


def test_templates_by_name():
    assert C.template_named("ehr_first").record_first and not C.template_named("paper").record_first
    assert (
        C.template_named(None).name == "medalign_prompt" and C.template_named("ehr_first").name == "medalign_ehr_first"
    )
    text = C.template_named("ehr_first").render("RECORD", question="Q?")
    assert text.index("RECORD") < text.index("Q?")


def test_a_patients_instructions_share_one_cut_fitted_beside_the_longest(setting):
    release, tok, template, grid = setting
    questions = release.instructions.set_index("instruction_id").question
    for (pid, strategy, ctx), part in grid[~grid.dropped].groupby(["person_id", "strategy", "context"]):
        spans = {str(s) for s in part.spans}
        if strategy in ("recent", "oldest"):
            assert len(spans) == 1, (pid, strategy, ctx)  # one cut for the patient
            assert (part.prompt_tokens <= part.target_tokens).all()
            longest = part.instruction_id.map(lambda i: len(tok.encode(template.render("", question=questions[i]))))
            anchor = part.loc[longest.idxmax()]
            if anchor.record_tokens > ctx:  # cut: the longest instruction's prompt fills the budget
                assert anchor.prompt_tokens >= anchor.target_tokens - 2
    retrieval = grid[(grid.strategy == "retrieval") & ~grid.dropped]
    assert retrieval.groupby(["person_id", "context"]).spans.apply(lambda s: len({str(x) for x in s})).max() > 1


def test_counts_are_exact_and_prompts_share_the_record_as_a_prefix(setting):
    release, tok, template, grid = setting
    cells = grid[(grid.strategy == "recent") & (grid.context == 2048) & ~grid.dropped]
    pid = cells.person_id.value_counts().index[0]
    prompts = C.materialize_prompts(cells[cells.person_id == pid], release, tok, template=template)
    ids = [tok.encode(p) for p in prompts.prompt]
    assert [len(x) for x in ids] == prompts.prompt_tokens.astype(int).tolist()  # the grid's count, exactly
    kept = int(prompts.prompt_tokens.min()) - 64  # all but the question and the template's tail
    assert min(shared_prefix_length(ids[0], x) for x in ids[1:]) >= kept


def test_the_variant_is_recorded_in_the_prompts_and_the_answers(setting, tmp_path):
    from medalign_utils.generation import ExtractiveBaseline, run_generation

    release, tok, template, grid = setting
    prompts = C.export_prompts(grid.assign(tokenizer="smollm2"), release, {"smollm2": tok}, contexts=[2048],
                               strategies=["recent"], template=template)  # fmt: skip
    assert set(prompts.template) == {"medalign_ehr_first"}
    C.write_prompts(prompts, tmp_path / "p.parquet")
    back = C.read_prompts(tmp_path / "p.parquet")
    assert (back.template == "medalign_ehr_first").all()
    baseline = ExtractiveBaseline(template)
    run_generation(back.head(3), baseline, tmp_path / "g.jsonl", "bm25", prompt_column="user_message", progress=False)
    from medalign_utils.generation import read_results

    assert (read_results(tmp_path / "g.jsonl").template == "medalign_ehr_first").all()


def test_what_the_record_first_changes_in_kept_evidence(tiny_cohort):
    release = load_release(tiny_cohort)
    tok = C.load_tokenizer("cl100k")
    settings = C.GridSettings(contexts=(2048, 8192), strategies=("recent",))
    paper = C.build_prompt_grid(release, tok, settings, progress=False)
    effect = C.record_first_effect(release, tok, paper, contexts=[2048, 8192], progress=False).set_index("context")
    ours = C.retention_table(paper).set_index("context").retained_pct
    for ctx in (2048, 8192):
        assert effect.loc[ctx, "paper_pct"] == pytest.approx(ours[ctx])
        assert 0 <= effect.loc[ctx, "changed_pct"] <= 100 and effect.loc[ctx, "n_instructions"] > 0
    # One cut beside the longest instruction keeps at most what each instruction's own cut keeps, or
    # a little less: never more evidence on average for the recent end of the record.
    assert (effect.record_first_pct <= effect.paper_pct + 1e-9).all()
