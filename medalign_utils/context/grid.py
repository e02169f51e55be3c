"""The prompt grid: every instruction x context x strategy with exact token counts and the evidence
each keeps; rendering fitted prompts (for generation and judges), refinement items, and the prompts
file notebooks 02 and 03 share (`PROMPT_COLUMNS`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .evidence import evidence_items, evidence_retained, instruction_evidence, locate_evidence, retention_table
from .strategies import (
    PEER_STRATEGIES,
    STRATEGY_FUNCTIONS,
    FitRequest,
    Record,
    RecordResources,
    count_prompt,
    record_view,
    strategy_names,
)
from .templates import BudgetError, PromptTemplate, ehr_budget, helm_sent_template, peer_budget, peer_template
from .tokenizers import Tokenizer

if TYPE_CHECKING:  # annotations only
    from ..data.release import Release


@dataclass
class GridSettings:
    """What a prompt grid is built with; recorded beside its results (with the tokenizer's and the
    template's names filled in by `build_prompt_grid`)."""

    contexts: tuple[int, ...]
    strategies: tuple[str, ...] = field(default_factory=strategy_names)
    reserve: int = 256
    use_chat_template: bool = True
    mr_chunk_tokens: int = 30_000
    tokenizer: str = ""
    template: str = "medalign_prompt"


def build_prompt_grid(
    release: Release,
    tokenizer: Tokenizer,
    settings: GridSettings,
    *,
    template: PromptTemplate | None = None,
    instructions=None,
    cache_dir=None,
    progress: bool = True,
    cl100k: Tokenizer | None = None,
):
    """Every instruction x context x strategy: prompt tokens, kept spans and evidence retained.

    Each record is tokenized once per tokenizer (cached on disk); every cell of the grid is a slice
    of those tokens plus exact recounts of the joins. `settings.strategies` are names in
    `STRATEGIES`; `template` (default: the paper's) is the prompt template. Returns a DataFrame
    with one row per cell: instruction_id, person_id, strategy, context, prompt_tokens,
    target_tokens, record_tokens, kept_tokens, base, spans, evidence_retained, dropped, error (and
    n_chunks for `mr_chunks`).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .tokenizers import tokenize_file

    template = template or PromptTemplate.from_file()
    contexts, strategies, reserve = list(settings.contexts), list(settings.strategies), settings.reserve
    unknown = [s for s in strategies if s not in STRATEGY_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; known: {', '.join(strategy_names())}")
    ins = instructions if instructions is not None else release.instructions
    ins = ins[ins.person_id.isin(release.ehr_files.keys())]
    evidence = instruction_evidence(release)
    rows = []
    groups = list(ins.groupby("person_id", sort=True))
    for pid, part in tqdm(groups, desc=f"prompt grid ({tokenizer.name})", unit="record", disable=not progress):
        text = release.ehr_text(pid)
        if not text.strip():
            rows += _empty_record_rows(pid, part.instruction_id, contexts, strategies, reserve=reserve)
            continue
        path = release.ehr_files[pid]
        record = Record(text, tokenize_file(tokenizer, path, cache_dir))
        shared = RecordResources(tokenizer, record, path, cache_dir, cl100k=cl100k)
        fits = [
            _InstructionFit(shared, template, settings, question=question, items=evidence_items(evidence.get(str(iid))))
            for iid, question in zip(part.instruction_id, part.question.fillna("").astype(str))
        ]
        if template.record_first:  # one cut of the record for the patient, beside its longest instruction
            anchor = max(fits, key=lambda f: f.overhead)
            for f in fits:
                f.anchor = anchor
        for iid, fit in zip(part.instruction_id, fits):
            for ctx in contexts:
                rows += fit.cells({"instruction_id": iid, "person_id": pid}, ctx, strategies)
    grid = pd.DataFrame(rows)
    recorded = replace(
        settings,
        contexts=tuple(contexts),
        strategies=tuple(strategies),
        tokenizer=tokenizer.name,
        template=template.name,
    )
    grid.attrs["settings"] = asdict(recorded)
    return grid


def _empty_record_rows(pid, instruction_ids, contexts, strategies, *, reserve: int) -> list[dict]:
    return [
        {
            "instruction_id": iid,
            "person_id": pid,
            "strategy": strat,
            "context": ctx,
            "target_tokens": ctx - reserve,
            "record_tokens": 0,
            "dropped": True,
            "error": "empty EHR: nothing to fit",  # the person_id column says whose; no file name
        }
        for iid in instruction_ids
        for ctx in contexts
        for strat in strategies
    ]


# Strategies whose cut does not depend on the question: with a record-first template a patient's
# instructions share one cut of the record (fitted beside the longest of them), hence one prefix.
SHARED_CUT = ("recent", "oldest", "notes_only", "codes_only")


class _InstructionFit:
    """One instruction over one record: its prompt parts and full count, computed once (the same for
    every context), then every strategy's cell at each context, with the evidence each keeps."""

    def __init__(self, shared: RecordResources, template: PromptTemplate, settings: GridSettings, *, question, items):
        self.shared, self.template, self.settings, self.question, self.items = (
            shared,
            template,
            settings,
            question,
            items,
        )
        self.tokenizer, self.record = shared.tokenizer, shared.record
        self.prefix, self.suffix = template.parts(self.tokenizer, settings.use_chat_template, question=question)
        self.overhead = self.tokenizer.count(self.prefix + self.suffix)
        whole = [(0, len(self.record.text))]
        self.full = count_prompt(self.tokenizer, self.prefix, self.record, whole, suffix=self.suffix)
        self.positions: dict[str, list] = {}
        # A record-first template: the patient's instruction whose cut every instruction of the patient
        # takes for the strategies whose cut does not depend on the question (`SHARED_CUT`).
        self.anchor: _InstructionFit | None = None
        self._views: dict[tuple[int, str], object] = {}

    def view(self, ctx: int, strategy: str, request: FitRequest):
        """This instruction's fit of `strategy` at `ctx` (computed once)."""
        if (ctx, strategy) not in self._views:
            self._views[ctx, strategy] = STRATEGY_FUNCTIONS[strategy](request)
        return self._views[ctx, strategy]

    def request(self, ctx: int) -> FitRequest:
        return FitRequest(
            self.tokenizer,
            self.record,
            self.prefix,
            self.suffix,
            ctx - self.settings.reserve,
            self.question,
            self.full,
            self.overhead,
            self.settings.reserve,
            self.template,
            self.settings.mr_chunk_tokens,
            self.shared,
            self.settings.use_chat_template,
        )

    def fitted(self, ctx: int, strategy: str, request: FitRequest):
        """The strategy's view: the anchor's cut with this instruction's own prompt count where the
        record is cut once for the patient, else this instruction's own fit."""
        anchor = self.anchor
        room = anchor is not None and ctx - self.settings.reserve - anchor.overhead > 0
        if not room or strategy not in SHARED_CUT:  # no anchor, or its question leaves no room: its own cut
            return self.view(ctx, strategy, request)
        v = anchor.view(ctx, strategy, anchor.request(ctx))
        if v.dropped:
            return v
        rec = self.shared.view(v.base)
        own = count_prompt(self.tokenizer, self.prefix, rec, list(v.spans), suffix=self.suffix)
        return replace(v, prompt_tokens=own)

    def cells(self, base_row: dict, ctx: int, strategies) -> list[dict]:
        settings, prefix, suffix = self.settings, self.prefix, self.suffix
        target = ctx - settings.reserve
        row = {
            **base_row,
            "strategy": None,
            "context": ctx,
            "target_tokens": target,
            "record_tokens": self.record.n_tokens,
            "dropped": False,
            "error": None,
        }
        try:
            ehr_budget(
                self.tokenizer, ctx, self.question, self.template, reserve=settings.reserve, parts=(prefix, suffix)
            )
        except BudgetError as err:
            return [{**row, "strategy": strat, "dropped": True, "error": str(err)} for strat in strategies]
        request = self.request(ctx)
        return [self.cell(row, strat, self.fitted(ctx, strat, request)) for strat in strategies]

    def cell(self, row: dict, strategy: str, v) -> dict:
        rec = self.shared.view(v.base)
        for b in {"record", v.base}:
            if b not in self.positions:
                self.positions[b] = locate_evidence(self.shared.view(b).text, self.items)
        kept = sum(rec.token_at_char(b) - rec.token_at_char(a) for a, b in v.spans)
        retained = evidence_retained(self.positions[v.base], v.spans, self.positions["record"])
        if v.dropped and retained is not None:
            retained = 0.0  # a dropped instruction keeps no evidence
        out = {
            **row,
            "strategy": strategy,
            "prompt_tokens": None if v.dropped else v.prompt_tokens,
            "base": v.base,
            "spans": [list(s) for s in v.spans],
            "kept_tokens": 0 if v.dropped else kept,
            "base_tokens": rec.n_tokens,
            "dropped": v.dropped,
            "evidence_retained": retained,
        }
        if v.n_chunks is not None:
            out["n_chunks"] = v.n_chunks
        return out


def render_fitted(
    tokenizer: Tokenizer | None,
    release: Release,
    person_id,
    template: PromptTemplate,
    *,
    fields: dict,
    context_length: int,
    reserve: int,
    strategy: str = "recent",
    use_chat_template: bool = True,
    cache_dir=None,
) -> str:
    """A prompt from `template` and `fields` with the patient's EHR fitted by `strategy` into
    `context_length - reserve` tokens of `tokenizer`, the whole prompt counted (chat template too).
    `strategy="none"`, no tokenizer, or no room leaves the EHR out. For prompts other than the
    grid's (the judge's): the same budget and strategies, one prompt at a time."""
    from .tokenizers import tokenize_file

    chat = use_chat_template and tokenizer is not None
    prefix, suffix = template.parts(tokenizer, chat, **fields)
    path = release.ehr_files.get(str(person_id))
    if strategy == "none" or tokenizer is None or path is None:
        return prefix + suffix
    if strategy not in STRATEGY_FUNCTIONS:
        raise ValueError(f"unknown strategy {strategy!r}; known: none, {', '.join(strategy_names())}")
    text = release.ehr_text(person_id)
    target = context_length - reserve
    overhead = tokenizer.count(prefix + suffix)
    if not text.strip() or target - overhead <= 0:
        return prefix + suffix
    record = Record(text, tokenize_file(tokenizer, path, cache_dir))
    full = count_prompt(tokenizer, prefix, record, [(0, len(text))], suffix=suffix)
    shared = RecordResources(tokenizer, record, path, cache_dir, cl100k=None)
    request = FitRequest(
        tokenizer,
        record,
        prefix,
        suffix,
        target,
        str(fields.get("question", "")),
        full,
        overhead,
        reserve,
        template,
        30_000,
        shared,
        chat,
    )
    view = STRATEGY_FUNCTIONS[strategy](request)
    if view.dropped:
        return prefix + suffix
    base = shared.view(view.base).text
    spans = view.spans[:1] if strategy == "mr_chunks" else view.spans
    return prefix + "".join(base[a:b] for a, b in spans) + suffix


def refinement_items(
    release: Release,
    tokenizer: Tokenizer,
    instruction_ids,
    context_length: int,
    *,
    reserve: int = 256,
    limit: int = 1,
    template: PromptTemplate | None = None,
    use_chat_template: bool = True,
):
    """Items for the paper's multi-step refinement (`generation.runner.run_refinement`): for the
    `limit` instructions among `instruction_ids` whose records are shortest in `tokenizer` (fewest
    steps: MR reads the whole record, a chunk per step), their question, context and chunk texts,
    earliest first, sized as `mr_chunks` sizes them for this context."""
    import pandas as pd

    from .tokenizers import tokenize_file

    ins = release.instructions[release.instructions.instruction_id.isin(list(instruction_ids))]
    ins = ins[ins.person_id.isin(release.ehr_files.keys())]
    sizes = {pid: len(tokenize_file(tokenizer, release.ehr_files[pid])) for pid in ins.person_id.unique()}
    ins = ins.assign(_tokens=ins.person_id.map(sizes)).sort_values(["_tokens", "instruction_id"]).head(limit)
    settings = GridSettings((context_length,), ("mr_chunks",), reserve, use_chat_template)
    grid = build_prompt_grid(release, tokenizer, settings, template=template, instructions=ins, progress=False)
    rows = []
    for row in grid[~grid.dropped].itertuples(index=False):
        text = release.ehr_text(row.person_id)
        question = ins.set_index("instruction_id").question[row.instruction_id]
        rows.append(
            {
                "instruction_id": row.instruction_id,
                "question": question,
                "context": context_length,
                "chunks": [text[int(a) : int(b)] for a, b in row.spans],
            }
        )
    return pd.DataFrame(rows, columns=["instruction_id", "question", "context", "chunks"])


class _HelmCells:
    """The EHR text of `helm` prompts, as HELM cuts it: each record read and encoded once."""

    def __init__(self):
        self.cl100k, self.ids = None, {}

    def ehr(self, release: Release, row, question: str) -> str:
        from .strategies import helm_packed_ehr, helm_read_text
        from .tokenizers import load_tokenizer

        self.cl100k = self.cl100k or load_tokenizer("cl100k")
        pid = str(row.person_id)
        if pid not in self.ids:
            self.ids[pid] = self.cl100k.encode(helm_read_text(release.ehr_files[pid]))
        reserve = int(row.context) - int(row.target_tokens)
        budget = peer_budget(self.cl100k, int(row.context), question, peer_template("helm"), reserve=reserve)
        return helm_packed_ehr(self.cl100k, self.ids[pid], budget)


def materialize_prompts(
    grid,
    release: Release,
    tokenizer: Tokenizer,
    *,
    template: PromptTemplate | None = None,
    use_chat_template: bool = True,
):
    """Add the full prompt text to grid rows (for generation), rebuilt from their spans."""
    template = template or PromptTemplate.from_file()
    texts: dict[tuple[str, str], str] = {}
    out, users = [], []
    questions = release.instructions.set_index("instruction_id").question.fillna("").astype(str)
    helm_cells = _HelmCells()
    for row in grid.itertuples(index=False):
        if row.dropped or not isinstance(row.spans, (list, np.ndarray)):
            out.append(None)
            users.append(None)
            continue
        key = (row.person_id, row.base)
        if key not in texts:
            t = release.ehr_text(row.person_id)
            texts[key] = t if row.base == "record" else record_view(t, "notes" if row.base == "notes_only" else "codes")
        base = texts[key]
        spans = list(row.spans)[:1] if row.strategy == "mr_chunks" else list(row.spans)
        ehr = "".join(base[int(a) : int(b)] for a, b in spans)
        own = peer_template(row.strategy) if row.strategy in PEER_STRATEGIES else template
        if row.strategy == "helm":  # HELM's own reading and cut of the record, and what it sends around it
            ehr, own = helm_cells.ehr(release, row, questions[row.instruction_id]), helm_sent_template()
        prefix, suffix = own.parts(tokenizer, use_chat_template, question=questions[row.instruction_id])
        out.append(prefix + ehr + suffix)
        users.append(own.render(ehr, question=questions[row.instruction_id]))
    # `prompt` is what a local model reads (chat template applied); `user_message` is the same
    # prompt without it, for chat endpoints that apply their own.
    return grid.assign(prompt=out, user_message=users)


def select_prompts(
    prompts: pd.DataFrame, order: list[str], *, tokenizer: str, contexts, strategies, max_items: int
) -> tuple[pd.DataFrame, list[str]]:
    """The prompts of the first `max_items` instructions of `order` that the grid holds for this
    tokenizer, in every given context and strategy (the same instructions in every cell), and
    those instructions."""
    sel = prompts[(prompts.tokenizer == tokenizer) & prompts.context.isin(contexts) & prompts.strategy.isin(strategies)]
    asked = {(int(c), s) for c in contexts for s in strategies}
    missing = sorted(asked - set(zip(sel.context.astype(int), sel.strategy)))
    if missing:
        cells = prompts.groupby(["tokenizer", "strategy", "context"]).size()
        held = ", ".join(f"{t}/{s}@{c}" for (t, s, c) in cells.index) or "none"
        raise ValueError(
            f"no prompts for {', '.join(f'{tokenizer}/{s}@{c}' for c, s in missing)}: the prompts file holds {held}. "
            "Notebook 02 writes the prompts of its export_contexts and export_strategies (each context also in its "
            "context_lengths): add these there, rerun 02, then 03"
        )
    available = set(sel.instruction_id)
    chosen = [i for i in order if i in available][:max_items]
    return sel[sel.instruction_id.isin(chosen)].reset_index(drop=True), chosen


# The columns of the prompts file notebook 02 writes and notebook 03 reads.
PROMPT_COLUMNS = [
    "instruction_id",
    "person_id",
    "tokenizer",
    "strategy",
    "context",
    "prompt_tokens",
    "target_tokens",
    "evidence_retained",
    "prompt",
    "user_message",  # the prompt without the chat template: what a chat endpoint is sent (notebook 03)
    "template",  # the prompt template's name: medalign_prompt (the paper's) or medalign_ehr_first
]


def export_prompts(
    grid: pd.DataFrame, release: Release, tokenizers: dict, *, contexts, strategies, template=None
) -> pd.DataFrame:
    """The prompt text of every kept cell of a grid (its `tokenizer` column naming a key of
    `tokenizers`) in the given contexts and strategies, with `PROMPT_COLUMNS`. A context or strategy
    the grid was not built with is an error (it would otherwise export nothing for it, silently)."""
    for what, asked, built in (
        ("export context", contexts, set(grid.context.astype(int))),
        ("export strategy", strategies, set(grid.strategy)),
    ):
        absent = [a for a in asked if a not in built]
        if absent:
            raise ValueError(
                f"{what} {', '.join(map(str, absent))} is not in the grid "
                f"(built with {', '.join(map(str, sorted(built)))}): "
                f"add it to {'context_lengths' if what == 'export context' else 'strategies'} too"
            )
    cells = grid[grid.context.isin(contexts) & grid.strategy.isin(strategies) & ~grid.dropped]
    parts = [
        materialize_prompts(cells[cells.tokenizer == name], release, tok, template=template)
        for name, tok in tokenizers.items()
    ]
    prompts = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PROMPT_COLUMNS)
    name = (template or PromptTemplate.from_file()).name
    peers = prompts.strategy.isin(PEER_STRATEGIES) if len(prompts) else []
    prompts["template"] = np.where(peers, prompts.get("strategy", ""), name) if len(prompts) else []
    return prompts[PROMPT_COLUMNS]


def write_prompts(prompts: pd.DataFrame, path) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    prompts[PROMPT_COLUMNS].to_parquet(path, index=False)


def read_prompts(path) -> pd.DataFrame:
    """The prompts file notebook 02 wrote; one it wrote before it kept a column is an error naming
    the file and what to rerun."""
    import pyarrow.parquet as pq

    missing = [c for c in PROMPT_COLUMNS if c not in pq.read_schema(path).names]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} column (written by an older notebook 02: rerun 02)")
    return pd.read_parquet(path, columns=PROMPT_COLUMNS)


def grid_summary(grid: pd.DataFrame) -> dict:
    """Cells, cells over budget, cells dropped, and how often `recent` reaches the budget exactly
    on records longer than it (with the largest shortfall)."""
    ok = grid[~grid.dropped]
    cut = ok[(ok.strategy == "recent") & (ok.kept_tokens < ok.base_tokens)]
    slack = cut.target_tokens - cut.prompt_tokens
    return {
        "cells": len(grid),
        "over_budget": int((ok.prompt_tokens > ok.target_tokens).sum()),
        # which strategies those are: the peers' published arithmetic counts in cl100k whatever the model
        "over_budget_by_strategy": ok[ok.prompt_tokens > ok.target_tokens].strategy.value_counts().to_dict(),
        "dropped": int(grid.dropped.sum()),
        "recent_exact_pct": 100 * float((slack == 0).mean()) if len(slack) else float("nan"),
        "recent_max_shortfall": int(slack.max()) if len(slack) else 0,
    }


def peer_comparison(grid: pd.DataFrame, peers=PEER_STRATEGIES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For records `recent` had to cut: the mean EHR tokens each peer keeps fewer than `recent`, and
    the evidence each retains beside it, per tokenizer and context (empty without the strategies)."""
    peers = [s for s in peers if s in set(grid.strategy)]
    if not peers or "recent" not in set(grid.strategy):
        return pd.DataFrame(), pd.DataFrame()
    key = ["tokenizer", "instruction_id", "context"]
    both = grid[grid.strategy.isin(["recent", *peers]) & ~grid.dropped]
    pair = both.pivot_table(index=key, columns="strategy", values="kept_tokens")
    base = both[both.strategy == "recent"].set_index(key).base_tokens
    pair = pair[pair.recent < base.reindex(pair.index)]  # records that had to be cut
    lost = pd.DataFrame({peer: (pair.recent - pair[peer]).groupby(["tokenizer", "context"]).mean() for peer in peers})
    kept = pd.concat([retention_table(g).assign(tokenizer=name) for name, g in both.groupby("tokenizer")]).pivot_table(
        index=["tokenizer", "context"], columns="strategy", values="retained_pct"
    )
    return lost, kept


def record_first_effect(
    release: Release,
    tokenizer: Tokenizer,
    baseline: pd.DataFrame,
    *,
    contexts,
    strategies=("recent",),
    cache_dir=None,
    progress: bool = True,
) -> pd.DataFrame:
    """What the record-first template (`EHR_FIRST_TEMPLATE`: one cut of the record per patient, fitted
    beside its longest instruction) changes in the evidence a prompt keeps, against `baseline` (a grid
    of the paper's template, where each instruction's cut is its own): per strategy and context, the
    evidence retained (%) each way, the share of instructions whose retention changed, and n."""
    from .templates import EHR_FIRST_TEMPLATE

    reserve = baseline.attrs.get("settings", {}).get("reserve", 256)
    settings = GridSettings(contexts=tuple(contexts), strategies=tuple(strategies), reserve=reserve)
    template = PromptTemplate.from_file(EHR_FIRST_TEMPLATE)
    variant = build_prompt_grid(release, tokenizer, settings, template=template, cache_dir=cache_dir, progress=progress)
    keys = ["instruction_id", "strategy", "context"]
    paired = baseline[baseline.strategy.isin(strategies)][[*keys, "evidence_retained"]].merge(
        variant[[*keys, "evidence_retained"]], on=keys, suffixes=("_paper", "_first")
    )
    paired = paired.dropna(subset=["evidence_retained_paper", "evidence_retained_first"])
    paired["changed"] = paired.evidence_retained_paper != paired.evidence_retained_first
    out = paired.groupby(["strategy", "context"]).agg(
        paper_pct=("evidence_retained_paper", "mean"),
        record_first_pct=("evidence_retained_first", "mean"),
        changed_pct=("changed", "mean"),
        n_instructions=("instruction_id", "nunique"),
    )
    out[["paper_pct", "record_first_pct", "changed_pct"]] *= 100
    return out.reset_index()
