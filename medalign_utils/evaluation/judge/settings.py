"""One way to build a judge: `JudgeSettings`, every setting with its default in one place (the
CLI's `medalign judge`, notebook 06's parameters and the Python API all read them here), and
`Judge.from_settings` / `Judge.from_spec`, which build the backend through the backend registry
(`generation.load_backend`) and the judge's tokenizer from the backend's own."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...generation.backends import Backend, GenerationSettings, backend_kind, backend_name, load_backend

if TYPE_CHECKING:  # annotations only
    from ...data.release import Release


@dataclass(frozen=True)
class JudgeSettings:
    """Every setting of one judge. `spec` is a backend spec, as `generation.load_backend` takes it:
    ``"smollm2"``, a model folder, an OpenAI-compatible endpoint URL (or a list of replicas) serving
    `model`, ``"planted"`` (the synthetic cohort's test judge) or ``"mock"``. Prices are per 1,000
    tokens."""

    spec: str | list = "smollm2"
    model: str | None = None  # the model name an endpoint serves
    name: str | None = None  # default: the endpoint's model, else the backend's name
    tokenizer: str | None = None  # the EHR budget's tokenizer; default the model's own (cl100k + margin for endpoints)
    context: int = 8192  # the judge's context length: the EHR is fitted into it
    strategy: str = "recent"  # how the EHR is fitted (context.STRATEGIES), or "none"
    max_new_tokens: int = 128  # the verdict's room
    reserve: int | None = None  # tokens of the context kept for the verdict (None: max_new_tokens)
    retries: int = 2  # times an invalid verdict is asked again
    concurrency: int = 8  # an endpoint's requests in flight
    batch_size: int | str = "auto"  # a local model's prompts decoded together ("auto": a memory budget)
    structured_output: str = "json_schema"  # how an endpoint is first asked for the JSON (a refusal falls back)
    constrained: bool = True  # ask for the verdict's shape (servers: its JSON schema; local: decoding)
    free_tokens: int = 48  # the rationale's bound under constrained local decoding
    chat: bool = True  # chat completions (False: /v1/completions)
    seed: int = 0
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0
    price_cached_prompt_per_1k: float | None = None  # a repeated prefix served from the server's cache
    family: str | None = None  # the judged systems it is related to (the self-preference check)
    backend_options: dict = field(default_factory=dict)  # the backend's own (timeout, device, noise_sd...)
    # Where answers are kept by request (model, prompt, decoding, shape), so a rerun asks nothing
    # twice; under data/ (answers hold patient-derived text on the real release). None: no cache.
    cache_dir: str | None = None

    @classmethod
    def from_parameters(cls, parameters: dict, prefix: str = "judge_") -> JudgeSettings:
        """Settings from a notebook's parameters: each `<prefix><field>` that is set (others keep
        their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(
            **{k[len(prefix) :]: v for k, v in parameters.items() if k.startswith(prefix) and k[len(prefix) :] in names}
        )

    def replace(self, **changes) -> JudgeSettings:
        return dataclasses.replace(self, **changes)


DEFAULTS = JudgeSettings()


@dataclass
class Judge:
    """One juror: a backend, the tokenizer and budget its prompts are fitted to, and its settings.
    A context manager: leaving the block closes its backend (a served test judge's server stops).
    Build one with `Judge.from_spec` or `Judge.from_settings`; the fields' defaults are
    `JudgeSettings`'."""

    name: str
    backend: Backend
    tokenizer: object = None  # a context.Tokenizer; None: no EHR context
    context_length: int = DEFAULTS.context
    strategy: str = DEFAULTS.strategy  # any of context.STRATEGIES, or "none"
    reserve: int = DEFAULTS.max_new_tokens  # tokens kept for the verdict
    retries: int = DEFAULTS.retries  # times an invalid verdict is asked again
    use_chat_template: bool = True
    family: str | None = None
    price_prompt_per_1k: float = 0.0
    price_completion_per_1k: float = 0.0
    price_cached_prompt_per_1k: float | None = None
    # Share of the context held back when the EHR is counted in a stand-in tokenizer (cl100k for an
    # endpoint whose own tokenizer is not given): clinical XML takes up to ~1.25x the tokens there.
    budget_margin: float = 0.0
    shrink_retries: int = 3  # times a prompt the server finds too long is refitted into 3/4 of it
    constrained: bool = True
    free_tokens: int = DEFAULTS.free_tokens
    cache: object = None  # a generation.RequestCache: first asks are answered from it where it can

    @classmethod
    def from_settings(cls, settings: JudgeSettings = DEFAULTS, *, guard=None, release: Release | None = None) -> Judge:
        """The judge `settings` describe. An endpoint passes the data `guard`; the planted test judge
        needs the `release`. Its tokenizer (for fitting the EHR) is the backend's own, else cl100k
        with a 25% safety margin. A local judge decodes `batch_size` prompts together; verdicts do
        not depend on it, their probabilities only by float rounding."""
        from ...config import project_path
        from ...context import load_tokenizer
        from ...generation.request_cache import RequestCache

        s = settings
        endpoint = backend_kind(s.spec) == "endpoint"
        options = dict(s.backend_options)
        if endpoint:
            options.update(guard=guard, structured_output=s.structured_output)
        if release is not None:
            options["release"] = release
        backend = load_backend(
            s.spec,
            GenerationSettings(max_new_tokens=s.max_new_tokens, seed=s.seed),
            model=s.model,
            chat=s.chat,
            batch_size=s.batch_size,
            max_concurrency=s.concurrency,
            **options,
        )
        context = s.context
        if endpoint:  # a server that says its context (llama.cpp's /props, vLLM's /v1/models) is fitted to it
            served = backend.server_info().get("context")
            context = min(context, served) if served else context
        stand_in = s.tokenizer is None and backend.tokenizer_spec is None
        tokenizer = None if s.strategy == "none" else load_tokenizer(s.tokenizer or backend.tokenizer_spec or "cl100k")
        name = s.name or (s.model if endpoint else backend_name(s.spec))
        if endpoint:  # the run's usage ledger prices this model's requests as the judge does
            from ...generation.ledger import LEDGER

            LEDGER.set_prices(
                s.model,
                prompt=s.price_prompt_per_1k,
                completion=s.price_completion_per_1k,
                cached=s.price_cached_prompt_per_1k,
            )
        return cls(
            name,
            backend,
            tokenizer,
            context,
            s.strategy,
            reserve=s.max_new_tokens if s.reserve is None else s.reserve,
            retries=s.retries,
            use_chat_template=backend.kind != "openai-compatible",
            family=s.family,
            price_prompt_per_1k=s.price_prompt_per_1k,
            price_completion_per_1k=s.price_completion_per_1k,
            price_cached_prompt_per_1k=s.price_cached_prompt_per_1k,
            budget_margin=0.25 if endpoint and stand_in else 0.0,
            constrained=s.constrained,
            free_tokens=s.free_tokens,
            cache=RequestCache.for_model(project_path(s.cache_dir), name) if s.cache_dir else None,
        )

    @classmethod
    def from_spec(cls, spec, *, guard=None, release: Release | None = None, **settings) -> Judge:
        """A judge from one spec and any `JudgeSettings` by keyword: ``Judge.from_spec("smollm2")``,
        ``Judge.from_spec(url, model="m", guard=guard)``,
        ``Judge.from_spec("planted", release=release)``."""
        return cls.from_settings(JudgeSettings(spec=spec, **settings), guard=guard, release=release)

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the backend's connections (and stop a served test judge's server)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def describe(self) -> dict:
        return {
            "judge": self.name,
            **self.backend.describe(),
            "settings": self.backend.settings.to_dict() if self.backend.settings else None,
            "context_length": self.context_length,
            "strategy": self.strategy,
            "tokenizer": getattr(self.tokenizer, "name", None),
            "budget_margin": self.budget_margin,
            "retries": self.retries,
            "constrained": self.constrained,
        }
