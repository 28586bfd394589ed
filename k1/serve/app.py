"""The OpenAI-compatible HTTP API over `k1.engine.Engine`: routes, the access gate, audit, metrics.

    server = Server.load(ServeConfig(model="runs/sft/model"))   # or Server(engine, tokenizer, ...)
    app = create_app(server)                                    # a FastAPI app; `k1 serve` runs it

Routes: POST /v1/chat/completions (scope chat), POST /v1/completions (scope completions),
GET /v1/models (any key), GET /metrics (scope admin, Prometheus text), GET /health (open).

Every request passes `Gate` first, an ASGI middleware that denies by default: no key 401, a
revoked or unknown key 401, a key without the route's scope 403, over its rate 429 with
Retry-After, a body over MAX_BODY_BYTES 413 — before any route code runs; a route added later is
protected without doing anything. The gate also writes the request's audit line when it ends
(however it ends) and cancels its engine work if the client went away.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from k1.engine import Engine, EngineConfig, Output, QueueFull, RequestParams, TokenLogprob
from k1.errors import K1Error

from . import limits
from .audit import AuditLog, redact
from .auth import KeyRecord, KeyStore, Limited, Limiter
from .config import ServeConfig
from .parse import OutputParser
from .schemas import ChatCompletionRequest, ChatMessage, CompletionRequest

log = logging.getLogger("k1.serve")

PUBLIC_PATHS = frozenset({"/health"})
# Scopes a key needs per route; any other path needs a valid key of any scope (then 404 if unknown).
ROUTE_SCOPES: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/metrics": "admin",
}
METRIC_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/metrics", "/health")
LOGPROB_FLOOR = -9999.0  # JSON has no -inf; OpenAI reports this floor too

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    499: "client_closed_request",
    500: "server_error",
    503: "server_overloaded",
}


class ApiError(Exception):
    """An error answer in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.headers = status, message, code, param, headers

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# ------------------------------------------------------------------------------------ the server


class Server:
    """What the routes share: engine, tokenizer, keys, limiter, audit log, metrics, config."""

    def __init__(
        self, engine: Engine, tokenizer, config: ServeConfig, keys: KeyStore, audit: AuditLog | None
    ):
        self.engine, self.tokenizer, self.config = engine, tokenizer, config
        self.keys, self.audit = keys, audit
        self.limiter = Limiter(keys)
        self.model_name = config.model_name or "k1"
        self.created = int(time.time())
        self.metrics = Metrics(self)
        controls = sorted((tokenizer.id_to_token(i) for i in tokenizer.special_ids), key=len, reverse=True)
        self._controls = [c for c in controls if c]

    @classmethod
    def load(cls, config: ServeConfig) -> Server:
        """Model, tokenizer, engine, key store and audit log from a config (what `k1 serve` does)."""
        from pathlib import Path

        import torch

        import k1
        from k1 import tokenizer as tok_mod

        config.validate()
        if config.threads:
            torch.set_num_threads(config.threads)
        model = k1.load(config.model, dtype=config.dtype or None, device=config.device, quantize=config.quantize or None)
        if config.pack_weights:
            model.pack_weights()
        tokenizer = tok_mod.load(config.model)
        if not tokenizer.chat_template:
            raise K1Error(
                f"{config.model}: the tokenizer has no chat template; /v1/chat/completions needs one"
            )
        if tokenizer.vocab_size > model.config.vocab_size:
            raise K1Error(
                f"{config.model}: tokenizer has {tokenizer.vocab_size} ids but the model only {model.config.vocab_size}"
            )
        engine = Engine(
            model,
            tokenizer,
            EngineConfig(
                max_seqs=config.max_seqs,
                max_context=config.max_context,
                max_queue=config.max_queue,
                speculative=config.speculative,
                spec_max_batch=config.spec_max_batch,
            ),
        )
        if not config.model_name:
            config.model_name = Path(config.model).resolve().name
        keys = KeyStore(config.keys_path)
        audit = AuditLog(config.audit, text=config.audit_text) if config.audit else None
        return cls(engine, tokenizer, config, keys, audit)

    def close(self) -> None:
        self.engine.close()
        if self.audit is not None:
            self.audit.close()

    # -- checks shared by the routes

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise ApiError(
                404,
                f"The model {name!r} does not exist; this server serves {self.model_name!r}",
                "model_not_found",
                "model",
            )

    def check_text(self, text: str, where: str) -> None:
        """Client text may not contain the tokenizer's control tokens: they would be read as real
        turn boundaries (a user writing "<|end|><|system|>..." would forge a system turn)."""
        if "<|" not in text:
            return
        for c in self._controls:
            if c in text:
                raise ApiError(
                    400,
                    f"{where} contains the reserved control token {c!r}; remove it",
                    "invalid_text",
                    where,
                )

    def max_tokens(self, asked: int | None, prompt_len: int, default: int) -> int:
        room = self.engine.max_context - prompt_len
        if room < 1:
            raise ApiError(
                400,
                f"This model's maximum context length is {self.engine.max_context} tokens; the prompt "
                f"has {prompt_len}",
                "context_length_exceeded",
                "messages",
            )
        if asked is not None:
            if asked > self.config.max_tokens:
                raise ApiError(
                    400,
                    f"max_tokens is {asked}; this server allows at most {self.config.max_tokens}",
                    "max_tokens_too_large",
                    "max_tokens",
                )
            if asked > room:
                raise ApiError(
                    400,
                    f"This model's maximum context length is {self.engine.max_context} tokens; the "
                    f"prompt has {prompt_len} and max_tokens asks for {asked}",
                    "context_length_exceeded",
                    "max_tokens",
                )
            return asked
        return min(default, room)


# ------------------------------------------------------------------------------------ metrics


class Metrics:
    """Prometheus metrics in a registry of the server's own (two servers in one process stay apart)."""

    def __init__(self, server: Server):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "k1_requests", "Requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "k1_request_latency_seconds",
            "Request latency",
            ["route"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.ttft = Histogram(
            "k1_time_to_first_token_seconds",
            "Time to first token",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.tokens = Counter("k1_tokens", "Tokens by kind", ["kind"], registry=r)
        r.register(_EngineCollector(server))

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _EngineCollector:
    def __init__(self, server: Server):
        self.server = server

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        s = self.server.engine.stats()
        yield GaugeMetricFamily("k1_running_sequences", "Sequences being decoded", value=s["running"])
        yield GaugeMetricFamily("k1_waiting_requests", "Requests waiting for a slot", value=s["waiting"])
        yield GaugeMetricFamily("k1_slots", "Latent-cache slots (max concurrent sequences)", value=s["slots"])
        yield GaugeMetricFamily("k1_cache_bytes", "Latent-cache memory", value=s["cache_bytes"])
        yield CounterMetricFamily("k1_engine_steps", "Decode steps", value=s["steps"])
        yield CounterMetricFamily("k1_spec_draft_tokens", "MTP draft tokens checked", value=s["draft_tokens"])
        yield CounterMetricFamily(
            "k1_spec_accepted_tokens", "MTP draft tokens accepted", value=s["accepted_tokens"]
        )
        audit = self.server.audit
        if audit is not None:
            yield InfoMetricFamily(
                "k1_audit",
                "Audit log head (compare with `k1 audit verify`)",
                value={"head": audit.prev, "lines": str(audit.seq)},
            )


# ------------------------------------------------------------------------------------ the gate


@dataclass
class Context:
    """Per-request state the gate and the route share (scope["state"]["k1"])."""

    request_id: str
    route: str
    key: KeyRecord | None = None
    status: int | None = None
    outcome: str = "ok"
    fields: dict = field(default_factory=dict)
    engine_requests: list = field(default_factory=list)
    finalizers: list[Callable[[], None]] = field(default_factory=list)


class Gate:
    """Pure ASGI middleware: authentication, scopes, rate limits, body limit, audit, cancellation."""

    def __init__(self, app, server: Server):
        self.app, self.server = app, server
        # client address -> times of its recent failed key checks (bounded in both directions)
        self.failures: collections.OrderedDict[str, collections.deque] = collections.OrderedDict()

    def _throttled(self, client: str) -> bool:
        times = self.failures.get(client)
        now = time.monotonic()
        while times and now - times[0] > 60:
            times.popleft()
        return bool(times) and len(times) >= limits.AUTH_FAILURES_PER_MINUTE

    def _failed(self, client: str) -> None:
        times = self.failures.setdefault(client, collections.deque(maxlen=limits.AUTH_FAILURES_PER_MINUTE))
        times.append(time.monotonic())
        self.failures.move_to_end(client)
        while len(self.failures) > limits.AUTH_FAILURE_CLIENTS:
            self.failures.popitem(last=False)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.app(scope, receive, send)
        if scope["type"] != "http":  # no websockets here
            await send({"type": "websocket.close", "code": 1008})
            return
        path = scope.get("path", "")
        ctx = Context(
            request_id=f"req-{secrets.token_hex(8)}", route=path if path in METRIC_ROUTES else "other"
        )
        scope.setdefault("state", {})["k1"] = ctx
        start = time.perf_counter()

        async def send_tracked(message):
            if message["type"] == "http.response.start":
                ctx.status = message["status"]
            await send(message)

        try:
            refusal, receive = await self._admit(scope, receive, ctx)
            if refusal is not None:
                await refusal.response()(scope, receive, send_tracked)
                return
            await self.app(scope, receive, send_tracked)
        except (OSError, anyio.ClosedResourceError, _ClientGone) as err:
            # The client went away (reading the body or mid-stream): not an error of ours.
            ctx.outcome = "client_disconnected"
            if ctx.status is None:
                ctx.status = 499
            log.debug("client gone: %r", err)
        except Exception:
            ctx.outcome = "error"
            if ctx.status is None:
                ctx.status = 500
            raise
        finally:
            for r in ctx.engine_requests:
                r.cancel()  # no-op for finished ones; frees the slot of a client that left
            await self._record(scope, ctx, time.perf_counter() - start)

    async def _admit(self, scope, receive, ctx: Context):
        """An ApiError to answer with, or None and a receive that replays the (bounded) body."""
        path = scope.get("path", "")
        if path in PUBLIC_PATHS:
            return None, receive
        srv = self.server
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = auth.partition(" ")
        if not auth:
            return ApiError(
                401,
                "No API key: send the header 'Authorization: Bearer <key>' (see `k1 keys create`)",
                "missing_api_key",
            ), receive
        if scheme.lower() != "bearer" or not key.strip():
            return ApiError(
                401, "Malformed Authorization header; use 'Bearer <key>'", "invalid_api_key"
            ), receive
        client = (scope.get("client") or ("?", 0))[0]
        if self._throttled(client) and not srv.keys.is_cached(key.strip()):
            return ApiError(
                429,
                "Too many failed key checks from this address; wait a minute",
                "auth_throttled",
                headers={"Retry-After": "60"},
            ), receive
        key = key.strip()
        # A key seen before needs one indexed read (done here); a new one needs scrypt (a thread).
        record = srv.keys.verify(key, slow=False) if srv.keys.is_cached(key) else None
        if record is None:
            record = await anyio.to_thread.run_sync(srv.keys.verify, key)
        if record is None:
            self._failed(client)
            return ApiError(401, "Invalid or revoked API key", "invalid_api_key"), receive
        ctx.key = record
        need = ROUTE_SCOPES.get(path)
        if need is not None and need not in record.scopes:
            return ApiError(
                403, f"This key lacks the {need!r} scope needed for {path}", "insufficient_scope"
            ), receive
        try:
            srv.limiter.check_rate(record)
        except Limited as err:
            return ApiError(429, str(err), err.code, headers={"Retry-After": str(err.retry_after)}), receive
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return ApiError(400, "Content-Length is not a number", "invalid_request"), receive
            if declared > limits.MAX_BODY_BYTES:
                return ApiError(
                    413, f"Request body over {limits.MAX_BODY_BYTES} bytes", "body_too_large"
                ), receive
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return None, receive
        body = await _read_body(receive, limits.MAX_BODY_BYTES)
        if body is None:
            return ApiError(
                413, f"Request body over {limits.MAX_BODY_BYTES} bytes", "body_too_large"
            ), receive
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay

    async def _record(self, scope, ctx: Context, seconds: float) -> None:
        srv = self.server
        status = ctx.status if ctx.status is not None else 499
        if ctx.outcome == "client_disconnected" and status == 200:
            status = 499
        srv.metrics.requests.labels(ctx.route, str(status)).inc()
        srv.metrics.latency.labels(ctx.route).observe(seconds)

        def finish():  # in a worker thread: key-store writes, PII scrubbing and fsync stay off the loop
            for fn in ctx.finalizers:
                try:
                    fn()
                except Exception:
                    log.exception("finalizer failed")
            if srv.audit is None:
                return
            record = {
                "request_id": ctx.request_id,
                "key_id": ctx.key.id if ctx.key else None,
                "method": scope.get("method"),
                "path": scope.get("path", "")[:200],
                "status": status,
                "outcome": ctx.outcome,
                "latency_ms": round(seconds * 1000, 2),
                **ctx.fields,
            }
            texts = record.pop("_texts", None)
            if texts is not None:
                record["prompt"] = redact(texts[0])
                record["output"] = [redact(t) for t in texts[1]]
            try:
                srv.audit.write(record)
            except OSError:
                log.exception("cannot write the audit log")

        await anyio.to_thread.run_sync(finish)


class _ClientGone(Exception):
    pass


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# ------------------------------------------------------------------------------------ jobs


@dataclass
class Choice:
    """One output sequence being collected."""

    index: int
    parser: OutputParser | None
    raw: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    def absorb(self, out: Output) -> list[tuple[str, object]]:
        """Take one engine event; return the parsed pieces it adds."""
        self.raw.append(out.text)
        self.completion_tokens, self.reasoning_tokens = out.completion_tokens, out.reasoning_tokens
        if out.logprobs:
            self.logprobs.extend(out.logprobs)
        if self.parser is None:
            pieces = [("content", out.text)] if out.text else []
        else:
            pieces = self.parser.feed(out.text) if out.text else []
            if out.finished:
                pieces += self.parser.close()
        for kind, value in pieces:
            if kind == "tool_call":
                self.tool_calls.append(value)
            else:
                (self.reasoning if kind == "reasoning" else self.content).append(value)
        if out.finished:
            self.finish_reason = (
                "tool_calls" if self.tool_calls and out.finish_reason == "stop" else out.finish_reason
            )
        return pieces


@dataclass
class Job:
    kind: str  # "chat" or "text"
    prompts: list[list[int]]  # distinct prompts (counted once each in usage)
    choices: list[tuple[int, RequestParams, OutputParser | None]]  # (prompt index, params, parser)
    stream: bool
    include_usage: bool
    prompt_text: str
    chat_logprobs: bool = False
    text_logprobs: int | None = None

    @property
    def prompt_tokens(self) -> int:
        return sum(len(p) for p in self.prompts)


def _seed(seed: int | None, i: int) -> int | None:
    return None if seed is None else (seed + i) % (1 << 63)


def _thinking_open(ids: list[int], tok) -> bool:
    """Does the prompt end inside a <think> block (the template's thinking generation prompt)?"""
    for t in reversed(ids):
        if t == tok.think_id:
            return True
        if t == tok.end_think_id:
            return False
    return False


def _message(m: ChatMessage) -> dict:
    d = m.model_dump(exclude_none=True)
    if d["role"] == "developer":  # OpenAI's newer name for the system role
        d["role"] = "system"
    return d


def prepare_chat(srv: Server, body: ChatCompletionRequest) -> Job:
    tok, cfg = srv.tokenizer, srv.config
    messages = [_message(m) for m in body.messages]
    for i, m in enumerate(messages):
        srv.check_text(json.dumps(m, ensure_ascii=False), f"messages[{i}]")
    tools = None
    if body.tools and body.tool_choice != "none":
        tools = [t.model_dump(exclude_none=True) for t in body.tools]
        srv.check_text(json.dumps(tools, ensure_ascii=False), "tools")
    thinking = cfg.enable_thinking
    if body.chat_template_kwargs is not None and body.chat_template_kwargs.enable_thinking is not None:
        thinking = body.chat_template_kwargs.enable_thinking
    try:
        text = tok.apply_chat_template(
            messages, enable_thinking=thinking, add_generation_prompt=True, tools=tools
        )
    except K1Error as err:
        raise ApiError(400, str(err), "invalid_messages", "messages") from None
    ids = tok.encode(text)
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    max_tokens = srv.max_tokens(asked, len(ids), cfg.max_tokens)
    open_think = _thinking_open(ids, tok)
    cap = body.max_thinking_tokens if body.max_thinking_tokens is not None else cfg.max_thinking_tokens
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "invalid_request", "top_logprobs")
    choices = []
    for i in range(body.n):
        params = RequestParams(
            max_new_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            stop_token_ids=tuple(tok.stop_ids),
            seed=_seed(body.seed, i),
            stop=_stops(body.stop),
            logprobs=body.logprobs,
            top_logprobs=body.top_logprobs or 0,
            thinking=open_think,
            max_thinking_tokens=cap if open_think else None,
        )
        choices.append((0, params, OutputParser(reasoning=open_think, tools=tools is not None)))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return Job("chat", [ids], choices, body.stream, include_usage, text, chat_logprobs=body.logprobs)


def prepare_completion(srv: Server, body: CompletionRequest) -> Job:
    tok = srv.tokenizer
    texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    prompts = []
    for i, t in enumerate(texts):
        # Raw text: control tokens written in it stay plain text (special=False), never turn markers.
        ids = ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(t, special=False)
        if not ids:
            raise ApiError(400, f"prompt[{i}] is empty", "invalid_prompt", "prompt")
        prompts.append(ids)
    # one max_tokens for all prompts: what the longest prompt leaves room for
    max_tokens = min(
        srv.max_tokens(body.max_tokens, len(ids), limits.DEFAULT_COMPLETIONS_MAX_TOKENS) for ids in prompts
    )
    choices = []
    for p in range(len(prompts)):
        for i in range(body.n):
            params = RequestParams(
                max_new_tokens=max_tokens,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                top_k=body.top_k or 0,
                stop_token_ids=tuple(tok.stop_ids),
                seed=_seed(body.seed, p * body.n + i),
                stop=_stops(body.stop),
                logprobs=body.logprobs is not None,
                top_logprobs=body.logprobs or 0,
            )
            choices.append((p, params, None))
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return Job(
        "text", prompts, choices, body.stream, include_usage, "\n\n".join(texts), text_logprobs=body.logprobs
    )


def _stops(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


# ------------------------------------------------------------------------------------ responses


class Inbox:
    """Engine events for one request, handed from the engine thread to the event loop. The loop is
    woken once per batch of events (not once per token), so a busy engine costs few wakeups."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: list = []
        self.lock = threading.Lock()
        self.ready = asyncio.Event()

    def put(self, item) -> None:  # engine thread
        with self.lock:
            self.items.append(item)
            first = len(self.items) == 1
        if first:
            self.loop.call_soon_threadsafe(self.ready.set)

    async def take(self, timeout: float) -> list | None:
        """Everything waiting ([] after a spurious wakeup), or None after `timeout` seconds of nothing."""
        if not self.items:
            try:
                async with asyncio.timeout(timeout):
                    await self.ready.wait()
            except TimeoutError:
                return None
        with self.lock:
            items, self.items = self.items, []
            self.ready.clear()
        return items


class Runner:
    """Submits a job's sequences to the engine and turns their events into OpenAI responses."""

    def __init__(self, srv: Server, request: Request, job: Job):
        self.srv, self.request, self.job = srv, request, job
        self.ctx: Context = request.scope["state"]["k1"]
        self.model = srv.model_name
        self.id = ("chatcmpl-" if job.kind == "chat" else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.choices = [Choice(i, parser) for i, (_, _, parser) in enumerate(job.choices)]
        self.inbox = Inbox(asyncio.get_running_loop())
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.submitted = False

    def start(self) -> None:
        srv, job, ctx = self.srv, self.job, self.ctx
        key = ctx.key
        max_tokens = job.choices[0][1].max_new_tokens
        try:
            allowed, reserved = srv.limiter.reserve(key, job.prompt_tokens, len(job.choices), max_tokens)
        except Limited as err:
            raise ApiError(429, str(err), err.code, headers={"Retry-After": str(err.retry_after)}) from None
        ctx.finalizers.append(partial(self._settle, key, reserved))
        ctx.fields.update(
            model=self.model, n=len(job.choices), stream=job.stream, prompt_tokens=job.prompt_tokens
        )
        try:
            for i, (p, params, _) in enumerate(job.choices):
                params.max_new_tokens = allowed

                def deliver(out: Output, i=i) -> None:
                    self.inbox.put((i, out))

                ctx.engine_requests.append(srv.engine.submit(job.prompts[p], params, on_output=deliver))
            self.submitted = True
        except QueueFull:
            raise ApiError(
                503,
                "The server is busy (request queue full); retry later",
                "queue_full",
                headers={"Retry-After": str(limits.RETRY_AFTER_BUSY_S)},
            ) from None
        except ValueError as err:
            raise ApiError(400, str(err), "invalid_request") from None

    def _settle(self, key: KeyRecord, reserved: int) -> None:
        completion = sum(c.completion_tokens for c in self.choices)
        used = self.job.prompt_tokens + completion if self.submitted else 0  # a 503 costs nothing
        reasoning = sum(c.reasoning_tokens for c in self.choices)
        self.srv.limiter.settle(key, reserved, used)
        m = self.srv.metrics
        m.tokens.labels("prompt").inc(self.job.prompt_tokens)
        m.tokens.labels("completion").inc(completion)
        m.tokens.labels("reasoning").inc(reasoning)
        self.ctx.fields.update(
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            finish_reasons=[c.finish_reason for c in self.choices],
        )
        if self.first_token is not None:
            self.ctx.fields["ttft_ms"] = round((self.first_token - self.started) * 1000, 2)
        if self.srv.audit is not None and self.srv.audit.text:
            self.ctx.fields["_texts"] = (self.job.prompt_text, ["".join(c.raw) for c in self.choices])

    async def batches(self):
        """Lists of (choice, pieces, event), all that arrived since the last one; stops early when
        the client has gone."""
        done = 0
        while done < len(self.choices):
            items = await self.inbox.take(limits.DISCONNECT_POLL_S)
            if items is None:
                if await self.request.is_disconnected():
                    self.ctx.outcome = "client_disconnected"
                    return
                continue
            batch = []
            for i, out in items:
                if self.first_token is None and out.token_ids:
                    self.first_token = time.perf_counter()
                    self.srv.metrics.ttft.observe(self.first_token - self.started)
                pieces = self.choices[i].absorb(out)
                if out.finished:
                    done += 1
                    if out.finish_reason == "error":
                        self.ctx.outcome = "error"
                batch.append((self.choices[i], pieces, out))
            if batch:
                yield batch

    def usage(self) -> dict:
        completion = sum(c.completion_tokens for c in self.choices)
        return {
            "prompt_tokens": self.job.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.job.prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": sum(c.reasoning_tokens for c in self.choices)},
        }

    # -- logprobs in the two OpenAI shapes

    def _token(self, i: int) -> tuple[str, bytes]:
        b = self.srv.tokenizer.id_bytes[i] if 0 <= i < len(self.srv.tokenizer.id_bytes) else b""
        return b.decode("utf-8", "replace"), b

    def chat_logprobs(self, items: list[TokenLogprob]) -> dict:
        def entry(i, lp):
            text, b = self._token(i)
            return {"token": text, "logprob": max(lp, LOGPROB_FLOOR), "bytes": list(b)}

        return {
            "content": [
                {**entry(t.token, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                for t in items
            ]
        }

    def text_logprobs(self, items: list[TokenLogprob], offset: int) -> dict:
        tokens, offsets = [], []
        for t in items:
            text, _ = self._token(t.token)
            offsets.append(offset)
            offset += len(text)
            tokens.append(text)
        return {
            "tokens": tokens,
            "token_logprobs": [max(t.logprob, LOGPROB_FLOOR) for t in items],
            "top_logprobs": [{self._token(i)[0]: max(lp, LOGPROB_FLOOR) for i, lp in t.top} for t in items],
            "text_offset": offsets,
        }

    # -- whole answers

    async def complete(self) -> Response:
        async for _ in self.batches():
            pass
        if self.ctx.outcome == "client_disconnected":
            return Response(status_code=499)
        if self.ctx.outcome == "error":
            raise ApiError(500, "The engine failed while generating; see the server log", "engine_error")
        choices = []
        for c in self.choices:
            if self.job.kind == "chat":
                message = {
                    "role": "assistant",
                    "content": "".join(c.content) or (None if c.tool_calls else ""),
                    "reasoning_content": "".join(c.reasoning) or None,
                }
                if c.tool_calls:
                    message["tool_calls"] = c.tool_calls
                choices.append(
                    {
                        "index": c.index,
                        "message": message,
                        "finish_reason": c.finish_reason,
                        "logprobs": self.chat_logprobs(c.logprobs) if self.job.chat_logprobs else None,
                    }
                )
            else:
                lp = self.text_logprobs(c.logprobs, 0) if self.job.text_logprobs is not None else None
                choices.append(
                    {
                        "index": c.index,
                        "text": "".join(c.content),
                        "finish_reason": c.finish_reason,
                        "logprobs": lp,
                    }
                )
        obj = "chat.completion" if self.job.kind == "chat" else "text_completion"
        return JSONResponse(
            {
                "id": self.id,
                "object": obj,
                "created": self.created,
                "model": self.model,
                "choices": choices,
                "usage": self.usage(),
            }
        )

    # -- streams (server-sent events)

    def stream(self) -> StreamingResponse:
        return StreamingResponse(
            self._sse(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> str:
        obj = "chat.completion.chunk" if self.job.kind == "chat" else "text_completion"
        body = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.job.include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    def _event_chunks(
        self, c: Choice, pieces, out: Output, offsets: list[int], calls: list[int]
    ) -> list[str]:
        """The SSE events for one engine event of choice c."""
        chat = self.job.kind == "chat"
        deltas = []
        for kind, value in pieces:
            if not chat:
                deltas.append({"text": value})
            elif kind == "tool_call":
                deltas.append({"tool_calls": [{"index": calls[c.index], **value}]})
                calls[c.index] += 1
            else:
                deltas.append({"reasoning_content" if kind == "reasoning" else "content": value})
        lp = None
        if out.logprobs and chat and self.job.chat_logprobs:
            lp = self.chat_logprobs(out.logprobs)
        elif out.logprobs and not chat and self.job.text_logprobs is not None:
            lp = self.text_logprobs(out.logprobs, offsets[c.index])
            offsets[c.index] += len(out.text)
        if lp is not None and not deltas:
            deltas.append({} if chat else {"text": ""})
        chunks = []
        for j, delta in enumerate(deltas):
            entry = {"index": c.index, "logprobs": lp if j == 0 else None, "finish_reason": None}
            entry.update({"delta": delta} if chat else delta)
            chunks.append(self._chunk([entry]))
        if out.finished:
            if out.finish_reason == "error":
                err = {
                    "message": "The engine failed while generating",
                    "type": "server_error",
                    "param": None,
                    "code": "engine_error",
                }
                chunks.append(f"data: {json.dumps({'error': err})}\n\n")
            else:
                entry = {"index": c.index, "logprobs": None, "finish_reason": c.finish_reason}
                entry.update({"delta": {}} if chat else {"text": ""})
                chunks.append(self._chunk([entry]))
        return chunks

    async def _sse(self):
        chat = self.job.kind == "chat"
        offsets = [0] * len(self.choices)
        calls = [0] * len(self.choices)
        completed = False
        try:
            if chat:
                yield self._chunk(
                    [
                        {
                            "index": c.index,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                        for c in self.choices
                    ]
                )
            async for batch in self.batches():
                out_text = []  # all events that arrived together go out in one write
                for c, pieces, out in batch:
                    out_text.extend(self._event_chunks(c, pieces, out, offsets, calls))
                yield "".join(out_text)
            if self.ctx.outcome == "client_disconnected":
                return
            if self.job.include_usage:
                yield self._chunk([], self.usage())
            yield "data: [DONE]\n\n"
            completed = True
        finally:
            if not completed:  # cancelled by Starlette when the client disconnected, or it left
                self.ctx.outcome = "client_disconnected"
            for r in self.ctx.engine_requests:
                r.cancel()


# ------------------------------------------------------------------------------------ the app


ERROR_RESPONSES = {code: {"description": ERROR_TYPES[code]} for code in (400, 401, 403, 404, 413, 429, 503)}


def create_app(srv: Server) -> FastAPI:
    app = FastAPI(
        title="k1", summary="OpenAI-compatible, access-controlled k1 server", docs_url=None, redoc_url=None
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        param = ".".join(loc) or None
        msg = first.get("msg", "invalid request")
        kind = first.get("type", "")
        if kind == "extra_forbidden":
            msg = f"unknown field {param!r}: this server does not accept it"
        elif kind == "json_invalid":
            msg = "the body is not valid JSON"
        return ApiError(
            400,
            f"{param}: {msg}" if param and kind != "extra_forbidden" else msg,
            kind or "invalid_request",
            param,
        ).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        message = err.detail if isinstance(err.detail, str) else "request error"
        if err.status_code == 400 and "parsing the body" in message:
            message = "the body is not valid UTF-8 JSON"
        return ApiError(err.status_code, message, None, headers=getattr(err, "headers", None)).response()

    @app.get("/health")
    async def health():
        """Liveness, open to all (reveals nothing but whether the engine runs)."""
        alive = srv.engine._thread.is_alive()
        return JSONResponse(
            {"status": "ok" if alive else "engine stopped"}, status_code=200 if alive else 503
        )

    @app.get("/v1/models", responses=ERROR_RESPONSES)
    async def models():
        return {"object": "list", "data": [_model_card(srv)]}

    @app.get("/v1/models/{model}", responses=ERROR_RESPONSES)
    async def model(model: str):
        srv.check_model(model)
        return _model_card(srv)

    @app.get("/metrics", responses=ERROR_RESPONSES)
    async def metrics():
        return Response(srv.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions", responses=ERROR_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        srv.check_model(body.model)
        job = await anyio.to_thread.run_sync(prepare_chat, srv, body)
        return await _run(srv, request, job)

    @app.post("/v1/completions", responses=ERROR_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        srv.check_model(body.model)
        job = await anyio.to_thread.run_sync(prepare_completion, srv, body)
        return await _run(srv, request, job)

    base_openapi = app.openapi

    def openapi():
        # The schema names the one model served, so clients (and schemathesis) see the valid value.
        schema = base_openapi()
        for name in ("ChatCompletionRequest", "CompletionRequest"):
            model = schema["components"]["schemas"][name]["properties"]["model"]
            model["enum"] = [srv.model_name]
        return schema

    app.openapi = openapi
    app.add_middleware(Gate, server=srv)
    return app


def _model_card(srv: Server) -> dict:
    return {
        "id": srv.model_name,
        "object": "model",
        "created": srv.created,
        "owned_by": "k1",
        "max_model_len": srv.engine.max_context,
    }


async def _run(srv: Server, request: Request, job: Job) -> Response:
    runner = Runner(srv, request, job)
    runner.start()
    return runner.stream() if job.stream else await runner.complete()


# ------------------------------------------------------------------------------------ running


def run(config: ServeConfig, log_level: str = "info") -> None:
    """Load everything and serve until interrupted (what `k1 serve` calls)."""
    import uvicorn

    server = Server.load(config)
    if not server.keys.list():
        log.warning(
            "the key store %s has no keys: every request but /health will be refused; "
            "create one with `k1 keys create --name NAME --scopes chat`",
            server.keys.path,
        )
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "listening on %s: this server speaks plain HTTP; put a TLS proxy in front of it", config.host
        )
    app = create_app(server)
    try:
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=limits.SHUTDOWN_GRACE_S,
        )
    finally:
        server.close()
