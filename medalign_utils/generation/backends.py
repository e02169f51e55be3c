"""Generation backends behind one interface (`Backend`): a local Hugging Face causal LM
(transformers), an OpenAI-compatible server (vLLM, TGI, llama.cpp's server, a HIPAA-compliant
hosted deployment), and an extractive BM25 baseline that needs no model. Each takes a list of
prompts and returns one `Answer` per prompt; `describe()` says what made the answers."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from .constrained import STRUCTURED_FORMS, response_format
from .guard import DataGuard


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings, recorded with every answer. Greedy by default, 256 new tokens (the paper)."""

    max_new_tokens: int = 256
    min_new_tokens: int = 0  # > 0 forces that many tokens (benchmarks); 0 stops at end-of-sequence
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Answer:
    text: str
    prompt_tokens: int | None = None
    new_tokens: int | None = None
    seconds: float = 0.0
    finish_reason: str | None = None
    error: str | None = None
    attempts: int = 1
    choice_probs: dict | None = None  # constrained local decoding: each choice's value probabilities
    token_logprobs: list | None = None  # a server's logprobs.content (token, logprob, top_logprobs)
    structured_output: str | None = None  # the response_format form the server accepted
    context_exceeded: bool = False  # the server said the prompt is longer than its context
    context_limit: int | None = None  # the context length it named when it said so
    cached: bool = False  # served from a request cache (`request_cache`): no request was sent


class Backend:
    """What every backend offers the runners: `generate(prompts) -> answers` (one per prompt, in
    order), `describe()` (the identity recorded with each answer), its decoding `settings`, and the
    `batch_size` the runners commit results in."""

    kind = "backend"
    settings: GenerationSettings | None = None  # None: no decoding (the extractive baseline)
    batch_size: int = 8
    thread_safe = False  # whether `generate` may run in several threads at once (a server asks)
    has_chat_template = False
    # The tokenizer a judge fits its prompts with (`context.load_tokenizer`'s spec); None: unknown
    # (an endpoint's), so a stand-in counts with a safety margin.
    tokenizer_spec: str | None = None
    follows_response_format = False  # served on loopback: handed the request's schema (a server's structured output)
    _takes_constraint: dict = {}  # per class: whether its `generate` takes a constraint

    def chat_prompt(self, user_message: str) -> str:
        """The prompt this backend reads for one user turn of a chat request."""
        return user_message

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        """One answer per prompt; a `constraint` (`constrained.OutputConstraint`) asks for answers
        in its shape, where the backend can (local models decode into it, servers are asked for it)."""
        raise NotImplementedError

    def iter_generate(self, prompts: list[str], *, constraint=None):
        """(index, answer) pairs as answers are final; one batch at a time unless the backend serves
        requests concurrently. A backend whose `generate` takes no constraint is asked plainly."""
        cls = type(self)
        if cls not in Backend._takes_constraint:
            import inspect

            Backend._takes_constraint[cls] = "constraint" in inspect.signature(cls.generate).parameters
        takes = Backend._takes_constraint[cls]
        yield from enumerate(self.generate(prompts, constraint=constraint) if takes else self.generate(prompts))

    def describe(self) -> dict:
        raise NotImplementedError


def _is_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


class TransformersBackend(Backend):
    """Any local causal LM folder. Greedy decoding (the default, the paper's) runs on the batched
    engine of `decoding`: prompts sorted by length, as many to a batch as `batch_size` and a memory
    budget for their cache allow (`batch_size="auto"`: the budget alone, up to `AUTO_MAX_BATCH`),
    each prefilled alone, finished rows leaving the batch; its answers are one-at-a-time greedy
    decoding's. Sampling runs `model.generate` on left-padded batches of `batch_size`. A batch that
    runs out of memory is split in two and retried instead of killing the run. Prompts already
    carry the chat template when the model has one (context.PromptTemplate.parts applies it), so no
    BOS is added to those."""

    kind = "transformers"
    AUTO_MAX_BATCH = 64  # past this a CPU step is compute-bound: larger batches gain nothing

    def __init__(
        self,
        model_path: str | Path,
        *,
        settings: GenerationSettings = GenerationSettings(),
        batch_size: int | str = "auto",
        device: str | None = None,
        dtype: str | None = None,
        random_weights: bool = False,
        memory_budget: int | None = None,
        share_prefix: bool = True,
    ):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the suite shows its own progress

        self.model_path = str(model_path)
        self.tokenizer_spec = self.model_path  # what `context.load_tokenizer` fits its prompts with
        self._skeletons: dict = {}  # (skeleton, free_tokens) -> compiled for this tokenizer
        self._free_mask = None  # the tokens free text may use, made on first constrained request
        if batch_size != "auto" and not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', not {batch_size!r}")
        self.batch_setting = batch_size  # as asked, recorded with the answers
        self.settings = settings
        self.batch_size = self.AUTO_MAX_BATCH if batch_size == "auto" else batch_size
        self.memory_budget = memory_budget  # bytes for a batch's cache; None: a share of free memory
        # Greedy decoding prefills a prefix its prompts share once (decoding.decode_greedy); what it
        # computed and what it reused is counted here.
        self.share_prefix = share_prefix
        self.prefill_stats = {"prefill_tokens": 0, "prefill_computed": 0}
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = (
            getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        )
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if random_weights:  # the architecture only: for throughput where the weights cannot travel
            torch.manual_seed(settings.seed)
            config = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
            self.model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(self.model_path, local_files_only=True, dtype=torch_dtype)
        self.model.eval().to(self.device)
        self.random_weights = random_weights
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self._weights_hash = None

    def chat_prompt(self, user_message: str) -> str:
        if not self.has_chat_template:
            return user_message
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False, add_generation_prompt=True
        )

    def describe(self) -> dict:
        from ..assets import weights_hash

        if self._weights_hash is None:
            self._weights_hash = "random-init" if self.random_weights else weights_hash(self.model_path)
        return {
            "backend": self.kind,
            "model": Path(self.model_path).name,  # the folder's name: a page holds no machine path
            "weights_hash": self._weights_hash,
            "device": self.device,
            "dtype": str(self.model.dtype).replace("torch.", ""),
            "batch_size": self.batch_setting,
            "share_prefix": self.share_prefix,
        }

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=not self.has_chat_template)["input_ids"]

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        ids = [self.encode(p) for p in prompts]
        decode = self._generate_padded if self.settings.do_sample else self._greedy_batch
        out: list[Answer | None] = [None] * len(prompts)
        pending = self._plan(ids, constraint)
        while pending:
            batch = pending.pop(0)
            try:
                for j, ans in zip(batch, decode([ids[j] for j in batch], constraint)):
                    out[j] = ans
            except Exception as err:
                if not _is_oom(err):
                    raise
                self._free()
                if len(batch) > 1:  # back off: this batch in halves, smaller batches from here on
                    half = len(batch) // 2
                    pending[:0] = [batch[:half], batch[half:]]
                    self.batch_size = max(1, min(self.batch_size, half))
                else:
                    out[batch[0]] = Answer("", len(ids[batch[0]]), 0, error=f"out of memory even alone: {err}"[:500])
        from .ledger import LEDGER, LOCAL

        for ans in out:  # a local model's prompts: in the ledger as host `local`, nothing left the machine
            usage = {"prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.new_tokens}
            LEDGER.record(
                backend=self.kind, model=Path(self.model_path).name, host=LOCAL, usage=usage, seconds=ans.seconds
            )
        return out  # type: ignore[return-value]

    def _plan(self, ids: list[list[int]], constraint) -> list[list[int]]:
        """Batches of prompt indices: for greedy decoding sized by the cache's memory budget, for
        sampling `batch_size` prompts of similar length (as `model.generate` always ran them)."""
        from .decoding import kv_bytes_per_token, memory_budget, plan_batches

        lengths = [len(x) for x in ids]
        if self.settings.do_sample:
            order = np.argsort(lengths, kind="stable").tolist()
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return plan_batches(
            lengths,
            max_new_tokens=self._max_new_tokens(constraint),
            bytes_per_token=kv_bytes_per_token(self.model),
            budget=self.memory_budget or memory_budget(self.device),
            max_batch=self.batch_size,
            prompts=ids if self.share_prefix else None,  # prompts sharing a prefix: one batch
        )

    def _max_new_tokens(self, constraint, processor=None) -> int:
        if constraint is None:
            return self.settings.max_new_tokens
        processor = processor or self._skeleton_processor(constraint, 1)
        steps = len(processor.rows[0].steps) + constraint.free_tokens * 3 + 8
        return max(self.settings.max_new_tokens, steps)  # room for the whole skeleton

    def _greedy_batch(self, batch_ids: list[list[int]], constraint=None) -> list[Answer]:
        import torch

        from .decoding import decode_greedy

        s = self.settings
        processor = self._skeleton_processor(constraint, len(batch_ids)) if constraint is not None else None
        rows = list(processor.rows) if processor is not None else None  # the processor drops rows as they finish
        t0 = time.perf_counter()
        with torch.inference_mode():
            decoded = decode_greedy(
                self.model,
                batch_ids,
                max_new_tokens=self._max_new_tokens(constraint, processor),
                min_new_tokens=s.min_new_tokens if constraint is None else 0,  # a skeleton ends where it ends
                eos_ids=self._eos_ids(),
                processor=processor,
                share_prefix=self.share_prefix,
                stats=self.prefill_stats,
            )
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / len(batch_ids)
        return [
            Answer(
                self.tokenizer.decode(d.tokens, skip_special_tokens=True).strip(),
                len(x),
                len(d.tokens),
                seconds,
                d.finish_reason,
                choice_probs=rows[b].probs if rows is not None else None,
            )
            for b, (d, x) in enumerate(zip(decoded, batch_ids))
        ]

    def _eos_ids(self) -> set[int]:
        return set(np.atleast_1d(self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id).tolist())

    def _free(self) -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _skeleton_processor(self, constraint, batch: int):
        """A logits processor forcing `batch` rows through the constraint's skeleton (compiled once
        per constraint for this tokenizer)."""
        from .constrained import SkeletonLogitsProcessor, compile_skeleton, free_text_mask

        cache = self._skeletons
        key = (constraint.skeleton, constraint.free_tokens)
        if key not in cache:
            cache[key] = compile_skeleton(self.tokenizer, constraint)
        if self._free_mask is None:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            self._free_mask = free_text_mask(self.tokenizer, max(vocab, len(self.tokenizer)))
        eos = self.tokenizer.eos_token_id
        return SkeletonLogitsProcessor(cache[key], self._free_mask, eos, batch)

    def _generate_padded(self, batch_ids: list[list[int]], constraint=None) -> list[Answer]:
        """Answers from `model.generate` on a left-padded batch (seeded per batch): how sampling runs."""
        import torch

        s = self.settings
        width = max(len(x) for x in batch_ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch_ids], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch_ids], device=self.device)
        torch.manual_seed(s.seed)
        kwargs = dict(max_new_tokens=s.max_new_tokens, do_sample=s.do_sample, pad_token_id=pad)
        if s.min_new_tokens and constraint is None:  # a skeleton ends where it ends
            kwargs["min_new_tokens"] = s.min_new_tokens
        if s.do_sample:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        processor = self._skeleton_processor(constraint, len(batch_ids)) if constraint is not None else None
        if processor is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([processor])
            kwargs["max_new_tokens"] = self._max_new_tokens(constraint, processor)
        t0 = time.perf_counter()
        with torch.inference_mode():
            gen = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / len(batch_ids)
        eos = self._eos_ids()
        answers = []
        for b, (row, x) in enumerate(zip(gen[:, width:].tolist(), batch_ids)):
            n = next((k for k, t in enumerate(row) if t in eos), None)
            new = row[:n] if n is not None else [t for t in row if t != pad]
            answers.append(
                Answer(
                    self.tokenizer.decode(new, skip_special_tokens=True).strip(),
                    len(x),
                    len(new),
                    seconds,
                    "stop" if n is not None else "length",
                    choice_probs=processor.rows[b].probs if processor is not None else None,
                )
            )
        return answers


class OpenAICompatibleBackend(Backend):
    """A server speaking the OpenAI completions or chat-completions API (vLLM, TGI, a HIPAA-compliant
    deployment), with bounded concurrency, retries with exponential backoff (429, 5xx, timeouts,
    dropped connections), and token usage recorded from the server's `usage`.

    `base_url` may be several URLs, replicas of one deployment: requests are spread over them in
    turn, and a request whose replica fails goes on to the next one, so a run finishes while any
    replica is up. Every URL passes the `guard` when the backend is built. Plain http.client: no
    redirect is followed and no proxy variable is read, so only the checked hosts are contacted.
    Connections are kept alive and reused (a pool per replica, as many as the concurrency), so a
    request costs no new TCP or TLS handshake.
    (An httpx transport's retries cover connection errors only, not the 429/5xx status codes this
    retries on, so it would not make this simpler.)"""

    kind = "openai-compatible"
    RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

    def __init__(
        self,
        base_url: str | list[str],
        model: str,
        settings: GenerationSettings = GenerationSettings(),
        chat: bool = True,
        *,
        guard: DataGuard,
        max_concurrency: int = 4,
        timeout: float | None = None,
        retries: int = 5,
        backoff: float = 0.5,
        api_key: str | None = None,
        structured_output: str = "json_schema",
        logprobs: bool = True,
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("no endpoint given")
        if not isinstance(guard, DataGuard):
            raise TypeError("an endpoint backend needs a DataGuard (DataGuard.for_release(release, allowed_hosts))")
        self._parsed = []
        for url in urls:
            parsed = urlparse(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"endpoint {url!r} is not an http(s) URL")
            guard.check(url)  # raises DataGuardError before anything is sent
            self._parsed.append(parsed)
        self.base_urls = [u.rstrip("/") for u in urls]
        self.base_url = self.base_urls[0]
        self.model, self.settings, self.chat, self.guard = model, settings, chat, guard
        self.max_concurrency, self.timeout, self.retries, self.backoff = max_concurrency, timeout, retries, backoff
        # None: each request may wait `MIN_TIMEOUT` seconds, or longer when the server is slow: as long
        # as every request in flight ahead of it takes at the server's measured pace (`request_timeout`).
        self._pace: float | None = None  # seconds a request has taken, smoothed
        self.server_facts: dict | None = None  # what the server says of itself (`server_info`), asked once
        self.cache_prompt = False  # llama.cpp's server: `cache_prompt` sent (set by `server_info`)
        # The first constrained request finds the form the server takes; the others wait for it, so a
        # server that refuses the first form is asked in it once, not once per request in flight.
        self._form_found = threading.Event()
        self._probing = threading.Lock()
        self._api_key = api_key
        self._rng = np.random.default_rng(settings.seed)
        self._next = 0
        self._lock = threading.Lock()
        self._idle: list[list] = [[] for _ in self.base_urls]  # kept-alive connections per replica
        self.served = {u: 0 for u in self.base_urls}  # answers each replica gave
        self.failures = {u: 0 for u in self.base_urls}
        if structured_output not in STRUCTURED_FORMS:
            raise ValueError(
                f"structured_output must be one of {', '.join(STRUCTURED_FORMS)}, not {structured_output!r}"
            )
        # The form asked first; a server that refuses it moves this on to the next form, for good.
        self.structured_output, self.logprobs = structured_output, logprobs
        self.refusals: list[str] = []

    def describe(self) -> dict:
        return {
            "backend": self.kind,
            "endpoint": self.base_url if len(self.base_urls) == 1 else self.base_urls,
            "model": self.model,
            "chat": self.chat,
            "max_concurrency": self.max_concurrency,
            "structured_output": self.structured_output,
            "logprobs": self.logprobs,
        }

    MIN_TIMEOUT = 120.0

    def request_timeout(self) -> float:
        """How long a request may wait for its answer: the `timeout` given, else `MIN_TIMEOUT` or, on a
        slow server, three times the measured time of a request for each request that can be in
        flight (a server answering one at a time queues them), so none fails by waiting its turn."""
        if self.timeout is not None:
            return float(self.timeout)
        if self._pace is None:
            return self.MIN_TIMEOUT
        return max(self.MIN_TIMEOUT, 3.0 * self._pace * max(1, self.max_concurrency))

    def _measured(self, seconds: float) -> None:
        with self._lock:
            self._pace = seconds if self._pace is None else 0.7 * self._pace + 0.3 * seconds

    def server_info(self) -> dict:
        """What the first replica says of itself, asked once (nothing of the data is sent): its
        context length and kind, from llama.cpp's `/props` (`n_ctx`, and `cache_prompt` is then
        sent with every request) or vLLM's `/v1/models` (`max_model_len`). {} when it says neither."""
        if self.server_facts is not None:
            return self.server_facts
        info: dict = {}
        props = self._get(0, "/props")
        if isinstance(props, dict) and props:
            n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx") or props.get("n_ctx")
            if n_ctx:
                info = {"kind": "llama.cpp", "context": int(n_ctx)}
        if not info:
            models = self._get(0, "/v1/models")
            for entry in (models or {}).get("data", []) if isinstance(models, dict) else []:
                if entry.get("id") == self.model and entry.get("max_model_len"):
                    info = {"kind": "vllm", "context": int(entry["max_model_len"])}
        self.server_facts = info
        self.cache_prompt = info.get("kind") == "llama.cpp"
        return info

    def _get(self, replica: int, path: str):
        """A GET of `path` on the replica's server (its root, not under /v1 unless given); the JSON
        body, or None when the server does not answer it."""
        parsed = self._parsed[replica]
        root = parsed.path.rstrip("/").removesuffix("/v1")
        conn_cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(parsed.hostname, parsed.port, timeout=10)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            conn.request("GET", f"{root}{path}", headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return json.loads(data) if resp.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()

    def _post(self, replica: int, path: str, body: dict) -> tuple[int, dict]:
        """POST on a kept-alive connection to the replica (one is taken from its idle pool, or opened);
        a pooled connection the server has closed meanwhile is replaced once, transparently."""
        parsed = self._parsed[replica]
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        prefix = parsed.path.rstrip("/")
        if not prefix.endswith("/v1"):
            prefix += "/v1"
        payload = json.dumps(body)
        t0 = time.perf_counter()
        while True:
            conn, reused = self._checkout(replica)
            try:
                conn.timeout = self.request_timeout()  # a kept-alive socket too: set on the socket below
                if conn.sock is not None:
                    conn.sock.settimeout(conn.timeout)
                conn.request("POST", f"{prefix}{path}", body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status == 200:
                    self._measured(time.perf_counter() - t0)
                # Recorded where the text left: the host it went to and what the server says it used.
                self._record(parsed.hostname, resp.status, data, time.perf_counter() - t0)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if reused:  # closed while idle in the pool: not this request's failure
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if resp.will_close:
                conn.close()
            else:
                self._checkin(replica, conn)
            try:
                return resp.status, json.loads(data or b"{}")
            except json.JSONDecodeError:
                return resp.status, {"error": data[:200].decode(errors="replace")}

    def _record(self, host: str, status: int, data: bytes, seconds: float) -> None:
        from .ledger import LEDGER

        try:
            usage = json.loads(data or b"{}").get("usage")
        except (ValueError, AttributeError):
            usage = None
        LEDGER.record(backend=self.kind, model=self.model, host=host, usage=usage, seconds=seconds, ok=status < 400)

    def _checkout(self, replica: int):
        """An idle kept-alive connection to the replica and True, or a new one and False."""
        with self._lock:
            if self._idle[replica]:
                return self._idle[replica].pop(), True
        parsed = self._parsed[replica]
        conn_cls = http.client.HTTPSConnection if parsed.scheme == "https" else http.client.HTTPConnection
        return conn_cls(parsed.hostname, parsed.port, timeout=self.request_timeout()), False

    def _checkin(self, replica: int, conn) -> None:
        with self._lock:
            if len(self._idle[replica]) < max(1, self.max_concurrency):
                self._idle[replica].append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections (they are also closed when the backend is collected)."""
        with self._lock:
            idle = [c for conns in self._idle for c in conns]
            self._idle = [[] for _ in self.base_urls]
        for conn in idle:
            conn.close()

    def _body(self, prompt: str, constraint) -> tuple[str, dict]:
        s = self.settings
        body = {
            "model": self.model,
            "max_tokens": s.max_new_tokens,
            "seed": s.seed,
            "temperature": s.temperature if s.do_sample else 0.0,
            "top_p": s.top_p if s.do_sample else 1.0,
        }
        if self.chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if constraint is not None:  # room for the whole verdict: it never ends inside its rationale
            body["max_tokens"] = max(s.max_new_tokens, constraint.max_chars)
        if self.cache_prompt:  # llama.cpp's server: reuse the cached prefix of the previous prompt
            body["cache_prompt"] = True
        if constraint is not None and self.logprobs:
            # Chat completions take a flag and a count; completions take the count alone.
            body.update({"logprobs": True, "top_logprobs": constraint.top_logprobs} if self.chat else {})
            body.update({} if self.chat else {"logprobs": min(constraint.top_logprobs, 5)})
        return ("/chat/completions" if self.chat else "/completions"), body

    def _next_replica(self) -> int:
        with self._lock:  # spread requests over the replicas in turn
            first = self._next
            self._next = (self._next + 1) % len(self.base_urls)
        return first

    def _refused(self, body: dict, form: str | None, *, constraint, status: int | None, message: str) -> bool:
        """Whether a refusal was of the structured-output field (or of logprobs), in which case the
        next form is chosen for this and every later request and True is returned: asked again at
        once, never retried as if transient."""
        if constraint is None or status is None or not _is_validation_error(status, message):
            return False
        with self._lock:
            if form is not None and form != "none":
                if self.structured_output == form:
                    self.structured_output = STRUCTURED_FORMS[STRUCTURED_FORMS.index(form) + 1]
                    self.refusals.append(f"{form}: HTTP {status}: {' '.join(message[:300].split())}")
                return True
            if self.logprobs and "logprobs" in body:
                self.logprobs = False
                self.refusals.append(f"logprobs: HTTP {status}: {' '.join(message[:300].split())}")
                return True
        return False

    def _one(self, prompt: str, constraint=None) -> Answer:
        if constraint is None or self._form_found.is_set():
            return self._ask(prompt, constraint)
        if self._probing.acquire(blocking=False):
            try:
                return self._ask(prompt, constraint)
            finally:
                self._form_found.set()
                self._probing.release()
        self._form_found.wait(self.request_timeout())
        return self._ask(prompt, constraint)

    def _ask(self, prompt: str, constraint=None) -> Answer:
        path, body = self._body(prompt, constraint)
        first = self._next_replica()
        t0 = time.perf_counter()
        last, attempt, refusals = "", 0, 0
        while attempt <= self.retries:
            attempt += 1
            replica = (first + attempt - 1) % len(self.base_urls)  # a retry goes to the next replica
            if constraint is not None:
                form = self.structured_output
                fmt = response_format(form, constraint)
                body.pop("response_format", None)
                if fmt is not None:
                    body["response_format"] = fmt
                if not self.logprobs:
                    body.pop("logprobs", None)
                    body.pop("top_logprobs", None)
            try:
                status, payload = self._post(replica, path, body)
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out
                status, payload, last = None, {}, f"{type(err).__name__}: {err}"
            if status == 200:
                with self._lock:
                    self.served[self.base_urls[replica]] += 1
                return self._answer(payload, time.perf_counter() - t0, attempt, form if constraint else None)
            with self._lock:
                self.failures[self.base_urls[replica]] += 1
            if status is not None:
                message = _error_message(payload)
                last = f"HTTP {status}: {message[:300]}"
                if _is_context_exceeded(status, message):
                    limit = context_limit(message) or _n_ctx(payload)
                    return Answer("", error=last, seconds=time.perf_counter() - t0, attempts=attempt,
                                  context_exceeded=True, context_limit=limit)  # fmt: skip
                if refusals < len(STRUCTURED_FORMS) and self._refused(
                    body, form if constraint else None, constraint=constraint, status=status, message=message
                ):
                    refusals += 1
                    attempt -= 1  # the same request in the next form: not a retry of a transient failure
                    continue
                if status not in self.RETRY_STATUS:
                    break
            if attempt <= self.retries and (attempt % len(self.base_urls) == 0):
                # Back off once every replica has been tried in this round.
                time.sleep(
                    self.backoff * 2 ** (attempt // len(self.base_urls) - 1) * (1 + 0.25 * float(self._rng.random()))
                )
        return Answer("", error=last or "no answer", seconds=time.perf_counter() - t0, attempts=attempt)

    def _answer(self, payload: dict, seconds: float, attempt: int, form: str | None) -> Answer:
        choice = (payload.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") if self.chat else choice.get("text")
        usage = payload.get("usage") or {}
        return Answer(
            (text or "").strip(),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            seconds,
            choice.get("finish_reason"),
            attempts=attempt,
            token_logprobs=_token_logprobs(choice.get("logprobs")),
            structured_output=form,
        )

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        out: list[Answer | None] = [None] * len(prompts)
        for i, ans in self.iter_generate(prompts, constraint=constraint):
            out[i] = ans
        return out  # type: ignore[return-value]

    def iter_generate(self, prompts: list[str], *, constraint=None):
        from concurrent.futures import as_completed

        with ThreadPoolExecutor(max_workers=max(1, self.max_concurrency)) as pool:
            futures = {pool.submit(self._one, p, constraint): i for i, p in enumerate(prompts)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()


def _error_message(payload: dict) -> str:
    err = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(err, dict):
        err = err.get("message") or json.dumps(err)
    return str(err)


def _is_context_exceeded(status: int, message: str) -> bool:
    """The server's way of saying the prompt does not fit (OpenAI, vLLM, llama.cpp, TGI)."""
    m = message.lower()
    return status in (400, 413, 422, 500) and any(
        s in m
        for s in (
            "context_length_exceeded",
            "maximum context length",
            "exceed context window",
            "exceeds the available context",
            "exceed_context_size",
            "input validation error: `inputs` tokens",
        )
    )


_CONTEXT_LIMIT = re.compile(
    r"(?:maximum context length is|context window of|context length of|context size(?: is| of)?|n_ctx\W+)\s*(\d{3,7})",
    re.I,
)


def context_limit(message: str) -> int | None:
    """The context length a server's refusal names ("maximum context length is 2048 tokens",
    "exceed context window of 2048"), or None."""
    m = _CONTEXT_LIMIT.search(message or "")
    return int(m.group(1)) if m else None


def _n_ctx(payload) -> int | None:
    """llama.cpp's `exceed_context_size_error` carries the context as a field."""
    err = payload.get("error") if isinstance(payload, dict) else None
    value = err.get("n_ctx") if isinstance(err, dict) else None
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _is_validation_error(status: int, message: str) -> bool:
    """A refusal of the request's shape (400, 422, or the 500 some servers give a body they cannot
    validate), as opposed to an overloaded or failing server."""
    if status in (400, 422):
        return True
    m = message.lower()
    return status == 500 and any(
        s in m
        for s in (
            "validation error",
            "response_format",
            "json_schema",
            "input should be",
            "extra inputs",
            "unsupported",
            "not supported",
            "invalid",
        )
    )


def _token_logprobs(logprobs) -> list | None:
    """A server's token log-probabilities as chat completions give them (token, logprob,
    top_logprobs as a list), whichever API answered."""
    if not logprobs:
        return None
    if isinstance(logprobs, dict) and logprobs.get("content"):
        return [
            {"token": t.get("token", ""), "logprob": t.get("logprob"), "top_logprobs": t.get("top_logprobs") or []}
            for t in logprobs["content"]
        ]
    if isinstance(logprobs, dict) and logprobs.get("tokens"):  # the completions API
        tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
        return [
            {"token": t, "logprob": lp, "top_logprobs": [{"token": k, "logprob": v} for k, v in (top or {}).items()]}
            for t, lp, top in zip(logprobs["tokens"], logprobs.get("token_logprobs") or [], tops)
        ]
    return None


class ExtractiveBaseline(Backend):
    """A cheap reference system without a model: the `n_sentences` sentences of the EHR that BM25
    ranks best for the question, in record order. It reads the question and the EHR out of each
    prompt through the prompt's `template` (prompts without a chat template: `user_message`)."""

    kind = "bm25-extractive"

    def __init__(self, template=None, n_sentences: int = 3, batch_size: int = 64):
        from ..context import PromptTemplate

        self.template = template or PromptTemplate.from_file()
        self.n_sentences, self.batch_size = n_sentences, batch_size
        self._last: tuple[int, list[str], object] | None = None  # one record at a time: memory stays small

    def describe(self) -> dict:
        return {"backend": self.kind, "n_sentences": self.n_sentences, "template": self.template.name}

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        out = []
        for prompt in prompts:
            fields = self.template.parse(prompt)
            if fields is None:
                out.append(Answer("", error=f"prompt does not follow the {self.template.name} template"))
                continue
            out.append(self.answer(fields["ehr"], fields.get("question", "")))
        return out

    def answer(self, ehr_text: str, question: str) -> Answer:
        from ..context.bm25 import BM25Index, record_sentences

        t0 = time.perf_counter()
        key = hash(ehr_text)
        if self._last is None or self._last[0] != key:
            sentences = record_sentences(ehr_text)
            self._last = (key, sentences, BM25Index(sentences))
        _, sentences, index = self._last
        best = sorted(index.top(question, self.n_sentences))
        text = " ".join(sentences[i] for i in best)
        return Answer(text, None, len(text.split()), time.perf_counter() - t0, "stop")


# ------------------------------------------------------------------ building a backend from a spec

# Backends by name, each a factory `(spec, settings, **options) -> Backend` or the "module:function"
# path of one, imported on first use (a backend outside this stage, such as the planted test judge,
# registers itself by path without this stage importing it). "endpoint" and "folder" are what a URL
# and any other spec name.
_BACKENDS: dict[str, object] = {}


def register_backend(name: str, factory) -> None:
    """Make `load_backend(name)` build a backend with `factory(spec, settings, **options)` (a
    callable, or its "package.module:function" path, imported when first used)."""
    _BACKENDS[name] = factory


def backend_kind(spec) -> str:
    """The one reading of a spec: "endpoint" (an http(s) URL, or a list of replicas), a registered
    backend's name ("smollm2", "extractive", "planted", "mock"), else "folder" (a local model)."""
    if isinstance(spec, list | tuple) or (isinstance(spec, str) and spec.startswith(("http://", "https://"))):
        return "endpoint"
    return spec if isinstance(spec, str) and spec in _BACKENDS else "folder"


def load_backend(spec: str | Path | list[str], settings: GenerationSettings | None = None, **options) -> Backend:
    """A backend from one spec, as `load_tokenizer` takes one: ``"smollm2"`` (the packaged
    SmolLM2-135M-Instruct), a local model folder (relative to the project), ``"extractive"`` (the
    baseline), ``"mock"`` (a test backend answering every constraint's first values), or an
    ``http(s)://.../v1`` URL (a list of them for replicas) of an OpenAI-compatible server, which
    needs ``model=`` (the name it serves) and the data ``guard=`` it is checked against. `options`
    go to the backend's constructor (``batch_size``, ``max_concurrency``, ``device``, ``timeout``...)."""
    import importlib

    factory = _BACKENDS[backend_kind(spec)]
    if isinstance(factory, str):
        module, _, name = factory.partition(":")
        factory = _BACKENDS[backend_kind(spec)] = getattr(importlib.import_module(module), name)
    return factory(spec, settings or GenerationSettings(), **options)


def _endpoint(spec, settings, *, guard=None, model=None, chat=True, batch_size=None, **options) -> Backend:
    if not model:
        raise ValueError("an endpoint backend needs model= (the name of the model the server serves)")
    if guard is None:
        raise TypeError("an endpoint backend needs guard= (DataGuard.for_release(release, allowed_hosts))")
    backend = OpenAICompatibleBackend(
        spec if isinstance(spec, str) else list(spec), model, settings, chat, guard=guard, **options
    )
    if isinstance(batch_size, int):
        backend.batch_size = batch_size
    return backend


def _folder(spec, settings, *, guard=None, model=None, chat=True, max_concurrency=None, **options) -> Backend:
    from ..assets import smollm2_path
    from ..config import project_path

    path = smollm2_path() if spec == "smollm2" else project_path(spec)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model {spec}: no folder at {path} (give 'smollm2', a model folder or a URL)")
    backend = TransformersBackend(path, settings=settings, **options)
    if spec == "smollm2":
        backend.tokenizer_spec = "smollm2"  # the packaged tokenizer by name (the same files, one fingerprint)
    return backend


def _extractive(spec, settings, *, guard=None, model=None, chat=True, max_concurrency=None, batch_size=None, **options):
    return ExtractiveBaseline(**options)


def _mock(spec, settings, *, guard=None, model=None, chat=True, max_concurrency=None, batch_size=8, **options):
    return MockBackend(settings, batch_size=batch_size if isinstance(batch_size, int) else 8)


for _name, _factory in (
    ("endpoint", _endpoint),
    ("folder", _folder),
    ("smollm2", _folder),
    ("extractive", _extractive),
    ("mock", _mock),
    ("planted", "medalign_utils.evaluation.judge.planted:planted_backend"),
):
    register_backend(_name, _factory)


def backend_name(spec: str | Path | list[str], model: str | None = None) -> str:
    """The system name answers from `load_backend(spec, model=...)` are recorded under."""
    kind = backend_kind(spec)
    if kind == "endpoint":
        return f"{model}@endpoint"
    return str(spec) if kind != "folder" else Path(str(spec)).name


class MockBackend(Backend):
    """A test backend in the spirit of inspect_ai's ``mockllm``: it answers a constrained request
    with the constraint's first allowed value at every choice and "mock" in every free field (so
    any judge mode's verdict parses), and anything else with a fixed sentence. Its value
    probabilities put everything on the first value."""

    kind = "mock"
    thread_safe = True
    follows_response_format = True
    DEFAULT_OUTPUT = "Default output from the mock backend."

    def __init__(self, settings: GenerationSettings | None = None, *, batch_size: int = 8):
        self.settings, self.batch_size = settings or GenerationSettings(), batch_size

    def describe(self) -> dict:
        return {"backend": self.kind}

    def generate(self, prompts: list[str], *, constraint=None) -> list[Answer]:
        out = []
        for prompt in prompts:
            if constraint is None or not constraint.skeleton:
                out.append(Answer(self.DEFAULT_OUTPUT, len(prompt) // 4, 8, 0.0, "stop"))
                continue
            text, probs = "", {}
            for seg in constraint.skeleton:
                if seg[0] == "text":
                    text += seg[1]
                elif seg[0] == "choice":
                    text += seg[2][0]
                    probs[seg[1]] = {v: float(i == 0) for i, v in enumerate(seg[2])}
                else:
                    text += "mock"
            out.append(Answer(text, len(prompt) // 4, len(text) // 4, 0.0, "stop", choice_probs=probs))
        return out
