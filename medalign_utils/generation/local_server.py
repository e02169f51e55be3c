"""A minimal OpenAI-compatible server on loopback that answers with a local transformers model.

For tests of the HTTP backend, and for a quick local endpoint without vLLM:
``python -m medalign_utils.generation.local_server MODEL_DIR --port 8011``. It serves
``/v1/completions`` and ``/v1/chat/completions`` (non-streaming), binds to 127.0.0.1 only, and can
be told to fail its first N requests with a 503 (`fail_first`) to exercise client retries, to
refuse `response_format` forms as a given server does (`accept_formats`, `refusal_status`), and
to answer prompts over `context_limit` characters (or tokens, by `count`) with a context-length error. It keeps every
request body (`bodies`), and returns token log-probabilities when asked and the backend has them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .backends import Backend, GenerationSettings, OpenAICompatibleBackend, TransformersBackend
from .constrained import OutputConstraint
from .guard import DataGuard


def request_constraint(body: dict) -> OutputConstraint | None:
    """The schema a request's `response_format` asks for (any form that carries one), as a
    constraint without a skeleton: what a server that enforces structured output knows of it."""
    fmt = body.get("response_format") or {}
    if "json_schema" in fmt:
        return OutputConstraint(fmt["json_schema"].get("name", ""), fmt["json_schema"].get("schema"), ())
    schema = fmt.get("schema") or fmt.get("value")
    return OutputConstraint("", schema, ()) if schema else None


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"  # keep-alive: a client's connection serves request after request
    # On a kept-alive connection the body's write, after the headers', would wait for the client's
    # delayed ACK (Nagle's algorithm): 40 ms a request.
    disable_nagle_algorithm = True

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        with srv.lock:
            srv.requests += 1
            srv.bodies.append(body)
            if srv.requests <= srv.fail_first:
                return self._send(503, {"error": "warming up (planted failure)"})
        refusal = srv.refusal(body)
        if refusal:
            return self._send(*refusal)
        chat = self.path.endswith("/chat/completions")
        if chat:
            prompt = srv.backend.chat_prompt(body["messages"][-1]["content"])
        elif self.path.endswith("/completions"):
            prompt = body["prompt"]
        else:
            return self._send(404, {"error": f"no route {self.path}"})
        n = srv.count(prompt) + int(body.get("max_tokens", 16)) if srv.count is not len else len(prompt)
        if srv.context_limit is not None and n > srv.context_limit:
            message = f"This model's maximum context length is {srv.context_limit} tokens; the request has {n}"
            return self._send(400, {"error": {"message": message, "code": "context_length_exceeded"}})
        # A model backend answers one request at a time; a thread-safe one (the planted test judge)
        # serves requests concurrently, as a real deployment does.
        with srv.lock if not srv.backend.thread_safe else contextlib.nullcontext():
            settings = GenerationSettings(
                max_new_tokens=int(body.get("max_tokens", 16)),
                do_sample=float(body.get("temperature", 0)) > 0,
                temperature=float(body.get("temperature", 1.0)) or 1.0,
                top_p=float(body.get("top_p", 1.0)),
                seed=int(body.get("seed", 0)),
            )
            srv.backend.settings = settings
            # A backend that enforces the requested schema, as a server's structured output does, is told it.
            constraint = request_constraint(body) if srv.backend.follows_response_format else None
            try:
                ans = (
                    srv.backend.generate([prompt], constraint=constraint)
                    if constraint is not None
                    else srv.backend.generate([prompt])
                )[0]
            except Exception as err:  # an answer the client can retry, not a dropped connection
                return self._send(500, {"error": f"{type(err).__name__}: {err}"[:300]})
        if ans.error:  # a request the backend cannot answer (not its shape: no other form is tried)
            return self._send(501, {"error": {"message": ans.error, "type": "not_implemented"}})
        choice = {"index": 0, "finish_reason": ans.finish_reason}
        choice.update({"message": {"role": "assistant", "content": ans.text}} if chat else {"text": ans.text})
        if body.get("logprobs") and ans.token_logprobs:
            k = int(body.get("top_logprobs", 0) or 0)
            content = [{**t, "top_logprobs": t.get("top_logprobs", [])[:k]} for t in ans.token_logprobs]
            choice["logprobs"] = {"content": content}
        self._send(
            200,
            {
                "object": "chat.completion" if chat else "text_completion",
                "model": body.get("model"),
                "choices": [choice],
                "usage": {
                    "prompt_tokens": ans.prompt_tokens,
                    "completion_tokens": ans.new_tokens,
                    "total_tokens": (ans.prompt_tokens or 0) + (ans.new_tokens or 0),
                },
            },
        )


class LocalServer(ThreadingHTTPServer):
    """Serve `backend` on 127.0.0.1:`port` (0: any free port) in a background thread."""

    daemon_threads = True

    def __init__(
        self,
        backend: Backend,
        port: int = 0,
        fail_first: int = 0,
        *,
        accept_formats: set | None = None,
        refusal_status: int = 400,
        context_limit: int | None = None,
        count=len,
    ):
        super().__init__(("127.0.0.1", port), _Handler)
        self.backend, self.fail_first, self.requests = backend, fail_first, 0
        self.bodies: list[dict] = []
        # None: every response_format is taken; else only these types ("json_object+schema" for
        # llama.cpp's form), the others refused with `refusal_status` and a validation error.
        self.accept_formats, self.refusal_status, self.context_limit = accept_formats, refusal_status, context_limit
        # How a prompt is measured against `context_limit`: characters (`len`), or a tokenizer's count
        # of the prompt plus the tokens the request asks for, as llama.cpp's server measures it.
        self.count = count
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._open: set = set()  # accepted connections: closed with the server, kept-alive or not
        self.connections = 0  # accepted in all

    def process_request(self, request, client_address):
        with self.lock:
            self._open.add(request)
            self.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def refusal(self, body: dict) -> tuple[int, dict] | None:
        fmt = body.get("response_format")
        if fmt is None or self.accept_formats is None:
            return None
        kind = fmt.get("type", "") + ("+schema" if "schema" in fmt else "+value" if "value" in fmt else "")
        if kind in self.accept_formats:
            return None
        accepted = sorted(self.accept_formats)
        message = f"1 validation error: response_format: input should be one of {accepted}, not {kind}"
        return self.refusal_status, {"error": {"message": message, "type": "invalid_request_error"}}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        self.drop_connections()  # a stopped server answers nothing more, on a kept-alive connection neither

    def drop_connections(self) -> None:
        """Close every open connection, as a server does with idle keep-alive connections."""
        with self.lock:
            for request in list(self._open):
                try:
                    request.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class LoopbackClient(OpenAICompatibleBackend):
    """The client of a backend served on loopback for as long as the client is open (`close`
    stops the server): a test backend reached as a real judge's server would be."""

    def __init__(self, served: Backend, model: str, settings: GenerationSettings, **options):
        self.server = LocalServer(served).__enter__()
        options.setdefault("guard", DataGuard.loopback_only())
        super().__init__(self.server.url + "/v1", model, settings, **options)
        self.served_backend = served

    def close(self) -> None:
        super().close()
        if self.server is not None:
            self.server.__exit__(None, None, None)
            self.server = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=8011)
    args = ap.parse_args()
    with LocalServer(TransformersBackend(args.model), args.port) as srv:
        print(f"serving {args.model} at {srv.url}/v1 (Ctrl-C to stop)", flush=True)
        srv._thread.join()


if __name__ == "__main__":
    main()
