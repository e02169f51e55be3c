"""Fitting an EHR into a model's context, in the model's own tokenizer.

`tokenizers` puts every offline tokenizer behind one API (`load_tokenizer("cl100k_base")`, a
model folder, `"smollm2"`) and caches each record's tokens once; `templates` holds the prompt
templates and the paper's budget (context - 256 for generation - template - instruction);
`strategies` is the registry of ways to fit a record (`recent`, the paper's, `oldest`, views,
BM25 `retrieval` of encounters from `bm25`, multi-step-refinement chunks, peer variants);
`evidence` says what each fitted prompt still holds of an instruction's evidence; `grid` builds
the instruction x context x strategy prompt grid with exact token counts.
"""

from .bm25 import BM25Index, bm25_snippets, plain_text, record_sentences
from .evidence import evidence_items, evidence_retained, instruction_evidence, locate_evidence, retention_table
from .grid import GridSettings, build_prompt_grid, materialize_prompts, refinement_items, render_fitted, select_prompts
from .strategies import (
    PEER_STRATEGIES,
    STRATEGIES,
    STRATEGY_FUNCTIONS,
    EHRView,
    EncounterIndex,
    FitRequest,
    Record,
    RecordResources,
    count_prompt,
    encounter_spans,
    fit_oldest,
    fit_recent,
    fit_retrieval,
    mr_chunks,
    record_view,
)
from .templates import (
    DEFAULT_TEMPLATE,
    HELM_TEMPLATE,
    REFINE_TEMPLATE,
    TEMPLATES,
    BudgetError,
    PromptTemplate,
    ehr_budget,
    peer_budget,
    peer_template,
)
from .tokenizers import (
    TokenizedText,
    Tokenizer,
    load_tokenizer,
    pretokenize,
    record_token_counts,
    split_at_line_starts,
    tokenize_file,
    tokenize_text,
)

__all__ = [
    "DEFAULT_TEMPLATE",
    "HELM_TEMPLATE",
    "PEER_STRATEGIES",
    "REFINE_TEMPLATE",
    "STRATEGIES",
    "STRATEGY_FUNCTIONS",
    "TEMPLATES",
    "BM25Index",
    "BudgetError",
    "EHRView",
    "EncounterIndex",
    "FitRequest",
    "GridSettings",
    "PromptTemplate",
    "Record",
    "RecordResources",
    "TokenizedText",
    "Tokenizer",
    "bm25_snippets",
    "build_prompt_grid",
    "count_prompt",
    "ehr_budget",
    "encounter_spans",
    "evidence_items",
    "evidence_retained",
    "fit_oldest",
    "fit_recent",
    "fit_retrieval",
    "instruction_evidence",
    "load_tokenizer",
    "locate_evidence",
    "materialize_prompts",
    "mr_chunks",
    "peer_budget",
    "peer_template",
    "plain_text",
    "pretokenize",
    "record_sentences",
    "record_token_counts",
    "record_view",
    "refinement_items",
    "render_fitted",
    "retention_table",
    "select_prompts",
    "split_at_line_starts",
    "tokenize_file",
    "tokenize_text",
]
