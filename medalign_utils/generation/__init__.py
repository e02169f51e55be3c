"""Generating answers: backends behind one interface, the data guard, resumable result stores.

`backends` holds `Backend` and its kinds (a local Hugging Face model, OpenAI-compatible servers
with replicas, the extractive baseline); `load_backend(spec)` builds one from `"smollm2"`, a model
folder or an `http(s)://.../v1` URL. `guard` is the data guard every endpoint backend requires:
no text leaves for a host the user did not allow. `store` is the single-writer JSONL `ResultStore`
whose `run` loop (chunks, skipping finished keys, appending, counting) serves generation,
refinement and judging; `runner` runs prompts, multi-step refinement and the baseline through it;
`local_server` serves a backend on loopback for tests.
"""

from .backends import (
    Answer,
    Backend,
    ExtractiveBaseline,
    GenerationSettings,
    OpenAICompatibleBackend,
    TransformersBackend,
    backend_name,
    load_backend,
)
from .guard import DataGuard, DataGuardError, check_endpoint, is_loopback
from .local_server import LocalServer
from .request_cache import RequestCache
from .runner import run_extractive, run_generation, run_refinement, throughput_table
from .store import KEY_FIELDS, ResultStore, StoreBusyError, prompt_hash, read_answers, read_results

__all__ = [
    "KEY_FIELDS",
    "Answer",
    "Backend",
    "DataGuard",
    "DataGuardError",
    "ExtractiveBaseline",
    "GenerationSettings",
    "LocalServer",
    "OpenAICompatibleBackend",
    "RequestCache",
    "ResultStore",
    "StoreBusyError",
    "TransformersBackend",
    "backend_name",
    "check_endpoint",
    "is_loopback",
    "load_backend",
    "prompt_hash",
    "read_answers",
    "read_results",
    "run_extractive",
    "run_generation",
    "run_refinement",
    "throughput_table",
]
