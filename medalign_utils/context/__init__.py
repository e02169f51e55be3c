"""Fitting an EHR into a model's context, in the model's own tokenizer.

`tokenizers` puts every offline tokenizer behind one API (`load_tokenizer("cl100k_base")`, a
model folder, `"smollm2"`) and caches each record's tokens once; `templates` holds the prompt
templates and the paper's budget (context - 256 for generation - template - instruction);
`strategies` is the registry of ways to fit a record (`recent`, the paper's, `oldest`, views,
BM25 `retrieval` of encounters from `bm25`, multi-step-refinement chunks, peer variants);
`evidence` says what each fitted prompt still holds of an instruction's evidence; `grid` builds
the instruction x context x strategy prompt grid with exact token counts.
"""

from .bm25 import BM25Index, SnippetIndex, bm25_snippets, record_sentences
from .evidence import evidence_items, evidence_retained, retention_table
from .grid import (
    PROMPT_COLUMNS,
    GridSettings,
    build_prompt_grid,
    export_prompts,
    grid_summary,
    materialize_prompts,
    peer_comparison,
    read_prompts,
    refinement_items,
    render_fitted,
    select_prompts,
    write_prompts,
)
from .strategies import (
    PEER_STRATEGIES,
    STRATEGIES,
    STRATEGY_FUNCTIONS,
    EHRView,
    EncounterIndex,
    FitRequest,
    Record,
    count_prompt,
    encounter_spans,
    fit_recent,
    fit_retrieval,
    mr_chunks,
    record_view,
    register_strategy,
    strategy_names,
)
from .templates import (
    DEFAULT_TEMPLATE,
    REFINE_TEMPLATE,
    TEMPLATES,
    BudgetError,
    PromptTemplate,
    ehr_budget,
)
from .tokenizers import (
    LineTokens,
    TokenizedText,
    Tokenizer,
    load_tokenizer,
    load_tokens,
    pretokenize,
    record_token_counts,
    save_tokens,
    split_at_line_starts,
    tokenize_file,
)

__all__ = [
    "LineTokens",
    "DEFAULT_TEMPLATE",
    "PEER_STRATEGIES",
    "PROMPT_COLUMNS",
    "REFINE_TEMPLATE",
    "STRATEGIES",
    "STRATEGY_FUNCTIONS",
    "register_strategy",
    "strategy_names",
    "TEMPLATES",
    "BM25Index",
    "SnippetIndex",
    "BudgetError",
    "EHRView",
    "EncounterIndex",
    "FitRequest",
    "GridSettings",
    "PromptTemplate",
    "Record",
    "TokenizedText",
    "Tokenizer",
    "bm25_snippets",
    "build_prompt_grid",
    "count_prompt",
    "ehr_budget",
    "encounter_spans",
    "evidence_items",
    "evidence_retained",
    "export_prompts",
    "fit_recent",
    "fit_retrieval",
    "grid_summary",
    "load_tokenizer",
    "load_tokens",
    "materialize_prompts",
    "mr_chunks",
    "peer_comparison",
    "pretokenize",
    "read_prompts",
    "record_sentences",
    "record_token_counts",
    "record_view",
    "refinement_items",
    "render_fitted",
    "retention_table",
    "save_tokens",
    "select_prompts",
    "split_at_line_starts",
    "tokenize_file",
    "write_prompts",
]
