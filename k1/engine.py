"""Continuous-batching inference engine: the part of `k1 serve` that runs the model.

One scheduler thread owns the model. Each iteration it drops cancelled requests, admits waiting
ones into free slots (prefilled together, up to a token budget), and advances every running
sequence by one decode step; a request that arrives while others are generating joins at the next
iteration instead of waiting for the batch to drain (continuous batching, Orca, Yu et al. 2022).

Memory is fixed when the engine starts: `max_seqs` slots of `max_context` tokens of MLA latent
cache (`SlotCache`, which duck-types `k1.model.LatentCache`, one length per slot), plus a waiting
queue of at most `max_queue` requests; `submit` raises `QueueFull` beyond that.

Where the model has an MTP module, decoding is speculative (DeepSeek-V3 §2.2, used as a draft
model): the MTP head proposes the token after next, one forward of the main model checks it, and
rejection sampling keeps the output distribution exactly the model's (Leviathan et al. 2023).
`Engine.stats()` counts drafted and accepted tokens.

    engine = Engine(model, tokenizer, EngineConfig(max_seqs=8))
    req = engine.submit(prompt_ids, RequestParams(max_new_tokens=64, temperature=0.7, seed=1))
    for out in req:                       # Output events: new text, token ids, logprobs, the end
        print(out.text, end="")
    engine.close()
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from k1.generate import SamplingParams, filtered_probs
from k1.tokenizer import StreamDecoder

log = logging.getLogger("k1.engine")

# Tokens prefilled in one scheduler iteration (summed over the admitted prompts, padding
# included): bounds how long running streams stall while a new prompt is read in.
DEFAULT_PREFILL_BUDGET = 4096
# Most alternatives reported per token (OpenAI's limit for top_logprobs).
MAX_TOP_LOGPROBS = 20
# Extra cache positions per slot: a speculative step writes one draft token past the last one.
SPEC_SLACK = 2


class QueueFull(Exception):
    """The waiting queue is at its limit; try again later."""


@dataclass
class EngineConfig:
    max_seqs: int = 8
    """Sequences decoded together (slots of latent cache)."""
    max_context: int = 0
    """Prompt + output tokens per sequence; 0: the model's max_position_embeddings."""
    max_queue: int = 64
    """Requests that may wait for a slot; more are refused (QueueFull)."""
    prefill_budget: int = DEFAULT_PREFILL_BUDGET
    """Prompt tokens (with padding) prefilled in one iteration."""
    speculative: str = "auto"
    """auto: MTP speculative decoding when the model has an MTP module; off: never; mtp: require it."""
    spec_max_batch: int = 2
    """Speculate only while at most this many sequences run (0: always). Checking a draft makes a
    step process two tokens per sequence; that is nearly free while a step is bound by reading the
    weights (few sequences), not once it is bound by compute (many)."""

    def validate(self) -> None:
        if self.spec_max_batch < 0:
            raise ValueError("spec_max_batch must be >= 0")
        if self.max_seqs < 1 or self.max_queue < 0 or self.max_context < 0 or self.prefill_budget < 1:
            raise ValueError("need max_seqs >= 1, max_queue >= 0, max_context >= 0, prefill_budget >= 1")
        if self.speculative not in ("auto", "off", "mtp"):
            raise ValueError(f"speculative must be auto, off or mtp, not {self.speculative!r}")


@dataclass
class RequestParams(SamplingParams):
    """Per-request settings: `SamplingParams` plus what a server needs."""

    stop: Sequence[str] = ()
    """Stop strings: the output ends before the first one (it is not returned)."""
    logprobs: bool = False
    top_logprobs: int = 0
    thinking: bool = False
    """The prompt leaves a <think> block open: tokens up to </think> are reasoning."""
    max_thinking_tokens: int | None = None
    """Reasoning tokens allowed; at the cap the engine writes </think> itself and the answer follows."""

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.top_logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"top_logprobs must be in 0..{MAX_TOP_LOGPROBS}")
        if self.max_thinking_tokens is not None and self.max_thinking_tokens < 0:
            raise ValueError("max_thinking_tokens must be >= 0")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Output:
    """One event of a request: text released since the last event, and the state so far."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finished: bool = False
    finish_reason: str | None = None
    """stop (stop token or string), length (max_new_tokens or context), cancelled, error."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0


class Request:
    """A submitted request: the engine's per-sequence state and the consumer's handle.

    Iterate it (blocking) for `Output` events, or pass `on_output` to `Engine.submit` to receive
    them from the engine thread (the server forwards them into its event loop)."""

    _ids = itertools.count(1)

    def __init__(
        self,
        engine: Engine,
        prompt: list[int],
        params: RequestParams,
        on_output: Callable[[Output], None] | None,
    ):
        self.id = next(Request._ids)
        self.engine = engine
        self.prompt = prompt
        self.params = params
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.cancelled = False
        self.finish_reason: str | None = None
        self._on_output = on_output
        self._events: queue.SimpleQueue[Output] | None = None if on_output else queue.SimpleQueue()
        # engine-side state
        self.slot: int | None = None
        self.generated: list[int] = []
        self.last: int | None = None  # newest token, not yet fed to the model
        self.draft: int | None = None  # MTP's guess for the token after `last`
        self.draft_probs: torch.Tensor | None = None
        self.forced: collections.deque[int] = collections.deque()
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self.generator = torch.Generator(device=engine.device).manual_seed(seed)
        self.in_think = params.thinking
        self.reasoning_tokens = 0
        if params.thinking and params.max_thinking_tokens == 0:
            self.forced.extend(engine.think_close)
        # Control tokens (<|end|>, reserved ids) are not text; <think> and tool tags are, and stay.
        self.decoder = StreamDecoder(engine.tokenizer, skip_special=True)
        self.text = ""  # output text decoded so far (cut at a stop string)
        self.sent = 0  # characters of `text` already released
        self._max_stop = max((len(s) for s in params.stop), default=0)

    # -- consumer side

    def cancel(self) -> None:
        """Stop generating and free the slot at the next scheduler iteration (e.g. client gone)."""
        if self.cancelled or self.finish_reason is not None:
            return
        self.cancelled = True
        self.engine._cancel(self)

    def __iter__(self):
        if self._events is None:
            raise RuntimeError("this request delivers its outputs to on_output")
        while True:
            out = self._events.get()
            yield out
            if out.finished:
                return

    def result(self) -> tuple[str, Output]:
        """Block until done; the whole text and the last event."""
        parts, last = [], Output()
        for last in self:
            parts.append(last.text)
        return "".join(parts), last

    # -- engine side

    def _emit(self, out: Output) -> None:
        out.prompt_tokens = len(self.prompt)
        out.completion_tokens = len(self.generated)
        out.reasoning_tokens = self.reasoning_tokens
        if self._on_output is not None:
            self._on_output(out)
        else:
            self._events.put(out)

    @property
    def context_used(self) -> int:
        return len(self.prompt) + len(self.generated)


class SlotCache:
    """Latent cache with a fixed number of slots, each at its own length.

    Duck-types `k1.model.LatentCache` (`update`, `length`, `advance`) for one forward over a
    contiguous run of slots: `bind(first, starts, width)` says which slots and where each one's new
    tokens go; the engine passes explicit position ids and a (batch, 1, width, keys) mask with
    every call, so the model never derives positions from `length`. Lengths are committed by the
    engine (`advance` is a no-op), which lets a speculative step keep only its accepted tokens.
    Layers past the model's last one hold the MTP block's cache (its attention's layer_idx).
    """

    def __init__(self, cfg, layers: int, slots: int, capacity: int, dtype, device):
        self.capacity = capacity
        shape_l, shape_r = (slots, capacity, cfg.kv_lora_rank), (slots, capacity, cfg.qk_rope_head_dim)
        self.latent = [torch.zeros(shape_l, dtype=dtype, device=device) for _ in range(layers)]
        self.rope = [torch.zeros(shape_r, dtype=dtype, device=device) for _ in range(layers)]
        self.first = 0
        self.starts = torch.zeros(0, dtype=torch.long, device=device)
        self.positions = self.starts[:, None]
        self.keys = 0

    def bind(self, first: int, starts: torch.Tensor, width: int) -> None:
        self.first = first
        self.starts = starts
        self.positions = starts[:, None] + torch.arange(width, device=starts.device)  # (batch, width)
        self.keys = int(starts.max()) + width

    def mask(self) -> torch.Tensor:
        """(batch, 1, width, keys): query i of a slot sees that slot's keys up to its own position."""
        keys = torch.arange(self.keys, device=self.starts.device)
        return (keys[None, None, :] <= self.positions[:, :, None])[:, None]

    @property
    def length(self) -> int:
        return self.keys - self.positions.shape[1]

    def update(self, layer: int, latent: torch.Tensor, k_rope: torch.Tensor):
        b = latent.shape[0]
        lat = self.latent[layer][self.first : self.first + b]  # views into the slots
        rope = self.rope[layer][self.first : self.first + b]
        rows = torch.arange(b, device=latent.device)[:, None]
        lat[rows, self.positions] = latent.to(lat.dtype)
        rope[rows, self.positions] = k_rope.to(rope.dtype)
        return lat[:, : self.keys], rope[:, : self.keys]

    def advance(self, n: int) -> None:
        pass

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy one slot's first `length` positions to another slot (keeps running slots contiguous)."""
        for t in (*self.latent, *self.rope):
            t[dst, :length] = t[src, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.latent, *self.rope))


def speculative_sample(
    p: torch.Tensor, q: torch.Tensor, draft: int, generator: torch.Generator
) -> tuple[int, bool]:
    """Keep `draft` (drawn from q) with probability min(1, p/q), else draw from max(p - q, 0):
    the token returned is distributed exactly as p (Leviathan et al. 2023, Theorem 1)."""
    u = float(torch.rand((), generator=generator, device=p.device))
    if u * float(q[draft]) <= float(p[draft]):
        return draft, True
    residual = (p - q).clamp(min=0)
    if float(residual.sum()) <= 0:
        residual = p
    return int(torch.multinomial(residual, 1, generator=generator)), False


class Engine:
    """Continuous batching over a `k1.model.Transformer`; see the module docstring."""

    def __init__(self, model, tokenizer, config: EngineConfig | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config = config or EngineConfig()
        config.validate()
        cfg = model.config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.max_context = min(config.max_context or cfg.max_position_embeddings, cfg.max_position_embeddings)
        has_mtp = len(model.mtp) > 0
        if config.speculative == "mtp" and not has_mtp:
            raise ValueError("speculative='mtp' but the model has no MTP module")
        self.speculative = has_mtp and config.speculative != "off"
        layers = cfg.num_hidden_layers + (1 if self.speculative else 0)
        self.cache = SlotCache(
            cfg, layers, config.max_seqs, self.max_context + SPEC_SLACK, self.dtype, self.device
        )
        self.lengths = [0] * config.max_seqs  # tokens in each slot's cache
        # Which positions of each slot hold an MTP cache entry: steps taken without speculation
        # (too many sequences running) leave gaps that the MTP block must not attend to.
        self.mtp_written = torch.zeros(
            config.max_seqs, self.cache.capacity, dtype=torch.bool, device=self.device
        )
        self.running: list[Request] = []  # running[i] occupies slot i
        self.waiting: collections.deque[Request] = collections.deque()
        self.end_think = tokenizer.end_think_id
        self.think_close = (
            [tokenizer.end_think_id, *tokenizer.encode("\n\n")] if tokenizer.end_think_id is not None else []
        )
        self.counters = collections.Counter()
        self.busy_seconds = 0.0  # time spent in scheduler iterations (the rest is waiting for work)
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="k1-engine", daemon=True)
        self._thread.start()

    # -- public

    def submit(
        self,
        prompt: Sequence[int],
        params: RequestParams | None = None,
        on_output: Callable[[Output], None] | None = None,
    ) -> Request:
        """Queue a request. Raises ValueError for a request that can never run and QueueFull when
        the waiting queue is at its limit."""
        params = params or RequestParams()
        params.validate()
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("the prompt needs at least one token")
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt token ids must be in 0..{vocab - 1}")
        if len(prompt) + params.max_new_tokens > self.max_context:
            raise ValueError(
                f"prompt ({len(prompt)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                f"the context of {self.max_context} tokens"
            )
        req = Request(self, prompt, params, on_output)
        with self._lock:
            if self._closed:
                raise RuntimeError("engine is closed")
            free = self.config.max_seqs - len(self.running)
            if len(self.waiting) >= self.config.max_queue + max(0, free):
                raise QueueFull(f"{len(self.waiting)} requests already waiting")
            self.waiting.append(req)
            self._wakeup.notify()
        return req

    def generate(self, prompt: Sequence[int], params: RequestParams | None = None) -> tuple[str, Output]:
        """Submit and wait: (text, last event)."""
        return self.submit(prompt, params).result()

    def stats(self) -> dict[str, float]:
        c = self.counters
        return {
            "running": len(self.running),
            "waiting": len(self.waiting),
            "slots": self.config.max_seqs,
            "max_context": self.max_context,
            "cache_bytes": self.cache.nbytes(),
            "steps": c["steps"],
            "prefills": c["prefills"],
            "prompt_tokens": c["prompt_tokens"],
            "generated_tokens": c["generated_tokens"],
            "draft_tokens": c["draft_tokens"],
            "accepted_tokens": c["accepted_tokens"],
            "acceptance_rate": c["accepted_tokens"] / c["draft_tokens"] if c["draft_tokens"] else 0.0,
            "busy_seconds": self.busy_seconds,
        }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _cancel(self, req: Request) -> None:
        with self._lock:
            if req in self.waiting:  # never started: leave the queue now
                self.waiting.remove(req)
                req.finish_reason = "cancelled"
                req._emit(Output(finished=True, finish_reason="cancelled"))
            self._wakeup.notify()  # a running one is dropped at the next iteration

    # -- scheduler

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._closed and not self.waiting and not self.running:
                        self._wakeup.wait()
                    if self._closed:
                        break
                try:
                    start = time.perf_counter()
                    self._iteration()
                    self.busy_seconds += time.perf_counter() - start
                except Exception:  # a bug or out of memory: fail what runs, keep serving
                    log.exception("engine step failed; ending the running requests")
                    self.counters["errors"] += 1
                    for req in list(self.running):
                        self._finish(req, "error")
            for req in list(self.running):
                self._finish(req, "cancelled")
            with self._lock:
                pending, self.waiting = list(self.waiting), collections.deque()
            for req in pending:
                req.finish_reason = "cancelled"
                req._emit(Output(finished=True, finish_reason="cancelled"))

    def _iteration(self) -> None:
        for req in [r for r in self.running if r.cancelled]:
            self._finish(req, "cancelled")
        admitted = self._admit()
        if admitted:
            self._prefill(admitted)
        decoding = [r for r in self.running if r not in admitted and r.finish_reason is None]
        if decoding:
            # Slots of requests prefilled this iteration sit after the decoding ones.
            limit = self.config.spec_max_batch
            if self.speculative and (not limit or len(decoding) <= limit):
                self._spec_step(len(decoding))
            else:
                self._step(len(decoding))
            self.counters["steps"] += 1

    def _admit(self) -> list[Request]:
        out: list[Request] = []
        width = 0
        with self._lock:
            while self.waiting and len(self.running) + len(out) < self.config.max_seqs:
                req = self.waiting[0]
                if req.cancelled:
                    self.waiting.popleft()
                    req.finish_reason = "cancelled"
                    req._emit(Output(finished=True, finish_reason="cancelled"))
                    continue
                w = max(width, len(req.prompt))
                if out and w * (len(out) + 1) > self.config.prefill_budget:
                    break
                width = w
                out.append(self.waiting.popleft())
        for req in out:
            req.slot = len(self.running)
            self.running.append(req)
        return out

    def _forward(self, ids: torch.Tensor, first: int, starts: torch.Tensor):
        """Main model over slots first.. with ids (batch, width): hidden states (batch, width, hidden)."""
        self.cache.bind(first, starts, ids.shape[1])
        mask = self.cache.mask()
        h, _, _ = self.model.hidden_states(
            ids, attention_mask=mask, position_ids=self.cache.positions, cache=self.cache
        )
        return h, mask

    def _mtp_logits(self, h: torch.Tensor, next_ids: torch.Tensor, mask: torch.Tensor, pick: torch.Tensor):
        """The first MTP depth at the positions just bound: from the main hidden state at i and token
        i+1, logits for token i+2, at position pick[b] of each row (batch, vocab); every position
        still enters the MTP cache. MTP.forward has no cache argument, so its parts are called here
        with the slot cache (its block attends over this slot's earlier MTP positions)."""
        m, model = self.model.mtp[0], self.model
        x = m.eh_proj(torch.cat((m.enorm(model.model.embed_tokens(next_ids)), m.hnorm(h)), dim=-1))
        rope = model.rotary(self.cache.positions, x.dtype)
        x = m.block(x, rope, mask, self.cache)
        x = x[torch.arange(x.shape[0], device=x.device), pick]  # (batch, hidden)
        return model.lm_head(m.norm(x))

    def _prefill(self, reqs: list[Request]) -> None:
        first = reqs[0].slot
        width = max(len(r.prompt) for r in reqs)
        ids = torch.zeros(len(reqs), width, dtype=torch.long)
        for i, r in enumerate(reqs):
            ids[i, : len(r.prompt)] = torch.tensor(r.prompt)
        ids = ids.to(self.device)
        starts = torch.zeros(len(reqs), dtype=torch.long, device=self.device)
        h, mask = self._forward(ids, first, starts)
        last = torch.tensor([len(r.prompt) - 1 for r in reqs], device=self.device)
        rows = torch.arange(len(reqs), device=self.device)
        logits = self.model.lm_head(h[rows, last])  # (batch, vocab)
        self.counters["prefills"] += len(reqs)
        self.counters["prompt_tokens"] += sum(len(r.prompt) for r in reqs)
        for i, r in enumerate(reqs):
            self.lengths[r.slot] = len(r.prompt)
            tok, _ = self._choose(r, logits[i])
            self._accept_tokens(r, [tok], logits[i : i + 1])
        if self.speculative:
            # The MTP cache gets every prompt position: position i pairs h[i] with token i+1 (the
            # first sampled token after the prompt's last), as in training.
            nxt = torch.zeros_like(ids)
            nxt[:, :-1] = ids[:, 1:]
            for i, r in enumerate(reqs):
                nxt[i, len(r.prompt) - 1] = r.last if r.last is not None else 0
            self.cache.bind(first, starts, width)
            draft_logits = self._mtp_logits(h, nxt, mask, last)
            for i, r in enumerate(reqs):
                self.mtp_written[r.slot] = False
                self.mtp_written[r.slot, : len(r.prompt)] = True
                self._set_draft(r, draft_logits[i])
        self._reap()

    def _step(self, n: int) -> None:
        """One token for the first n slots."""
        reqs = self.running[:n]
        ids = torch.tensor([[r.last] for r in reqs], device=self.device)
        starts = torch.tensor([self.lengths[r.slot] for r in reqs], device=self.device)
        h, _ = self._forward(ids, 0, starts)
        logits = self.model.lm_head(h[:, 0])  # (batch, vocab)
        greedy = logits.max(-1).indices.tolist()
        for i, r in enumerate(reqs):
            self.lengths[r.slot] += 1
            r.draft, r.draft_probs = None, None  # no MTP this step: the next speculative step has no draft
            tok = greedy[i] if r.params.temperature == 0 and not r.forced else self._choose(r, logits[i])[0]
            self._accept_tokens(r, [tok], logits[i : i + 1])
        self._reap()

    def _spec_step(self, n: int) -> None:
        """Feed [last, draft] for the first n slots; keep the draft where the model agrees, plus the
        model's own next token (1 or 2 tokens per sequence per step)."""
        reqs = self.running[:n]
        # A sequence without a draft (its last step was not speculative) checks a stand-in token:
        # almost surely rejected, it still gets its one token, and the MTP head drafts the next.
        ids = torch.tensor(
            [[r.last, r.last if r.draft is None else r.draft] for r in reqs], device=self.device
        )
        starts = torch.tensor([self.lengths[r.slot] for r in reqs], device=self.device)
        h, mask = self._forward(ids, 0, starts)
        logits = self.model.lm_head(h)  # (batch, 2, vocab)
        greedy = logits.max(-1).indices.tolist()  # one op for all greedy rows instead of two per row
        kept: list[list[int]] = []
        for i, r in enumerate(reqs):
            plain = r.params.temperature == 0 and not r.forced
            tok, accepted = (
                (greedy[i][0], greedy[i][0] == r.draft)
                if plain
                else self._choose(r, logits[i, 0], r.draft, r.draft_probs)
            )
            self.counters["draft_tokens"] += r.draft is not None
            toks = [tok]
            self._accept_tokens(r, [tok], logits[i, :1])
            if accepted:
                self.counters["accepted_tokens"] += 1
                if r.finish_reason is None:
                    bonus = greedy[i][1] if plain and not r.forced else self._choose(r, logits[i, 1])[0]
                    toks.append(bonus)
                    self._accept_tokens(r, [bonus], logits[i, 1:2])
            self.lengths[r.slot] += len(toks)
            kept.append(toks)
        # Draft the next token from the MTP head at each sequence's newest fed position.
        nxt = torch.tensor([t + [0] * (2 - len(t)) for t in kept], device=self.device)
        self.cache.bind(0, starts, 2)
        pick = torch.tensor([len(t) - 1 for t in kept], device=self.device)
        rows = torch.arange(n, device=self.device)
        written = self.mtp_written[:n]  # running slots are 0..n-1
        written[rows, starts] = True
        written[rows, starts + 1] = True
        mtp_mask = mask & written[:, None, None, : mask.shape[-1]]
        draft_logits = self._mtp_logits(h, nxt, mtp_mask, pick)  # (batch, vocab)
        written[rows, starts + 1] = pick == 1  # a rejected draft's position is rewritten later
        draft_greedy = draft_logits.max(-1).indices.tolist()
        for i, r in enumerate(reqs):
            if r.finish_reason is not None:
                continue
            if r.params.temperature == 0:
                r.draft, r.draft_probs = draft_greedy[i], None
            else:
                self._set_draft(r, draft_logits[i])
        self._reap()

    def _set_draft(self, r: Request, logits: torch.Tensor) -> None:
        if r.params.temperature == 0:
            r.draft, r.draft_probs = int(logits.argmax()), None
        else:
            probs = filtered_probs(logits, r.params)
            r.draft = int(torch.multinomial(probs, 1, generator=r.generator))
            r.draft_probs = probs

    def _choose(
        self, r: Request, logits: torch.Tensor, draft: int | None = None, q: torch.Tensor | None = None
    ) -> tuple[int, bool]:
        """The next token from logits (vocab,), and whether it confirms `draft`.

        Forced tokens (the think cap's </think>) come first. With sampling, the draft drawn from q
        is kept with probability min(1, p/q), else a token is drawn from max(p - q, 0): the
        result is distributed exactly as p (speculative sampling)."""
        if r.forced:
            tok = r.forced.popleft()
            return tok, tok == draft
        if r.params.temperature == 0:
            tok = int(logits.argmax())
            return tok, tok == draft
        p = filtered_probs(logits, r.params)
        if draft is None or q is None:
            return int(torch.multinomial(p, 1, generator=r.generator)), False
        return speculative_sample(p, q, draft, r.generator)

    def _accept_tokens(self, r: Request, toks: list[int], logits: torch.Tensor) -> None:
        """Record generated tokens, apply stop ids, the think cap and limits, release text."""
        if r.finish_reason is not None:
            return
        params = r.params
        out = Output()
        at_stop_string = False
        for j, tok in enumerate(toks):
            if r.first_token_at is None:
                r.first_token_at = time.perf_counter()
            r.generated.append(tok)
            self.counters["generated_tokens"] += 1
            if tok in params.stop_token_ids:
                r.finish_reason = "stop"  # the stop token itself is counted but not returned
                break
            out.token_ids.append(tok)
            if params.logprobs:
                out.logprobs = out.logprobs or []
                out.logprobs.append(self._logprob(logits[j], tok, params.top_logprobs))
            r.last = tok
            if r.in_think:
                r.reasoning_tokens += 1
                if tok == self.end_think:
                    r.in_think = False
                elif (
                    params.max_thinking_tokens is not None
                    and not r.forced
                    and self.think_close
                    and r.reasoning_tokens >= params.max_thinking_tokens
                ):
                    r.forced.extend(self.think_close)
            if self._release(r, out, r.decoder.feed(tok)):
                at_stop_string = True
                break
            if len(r.generated) >= params.max_new_tokens or r.context_used >= self.max_context:
                r.finish_reason = "length"
                break
        if r.finish_reason is not None:
            if not at_stop_string:
                self._release(r, out, r.decoder.flush(), final=True)
            out.finished, out.finish_reason = True, r.finish_reason
        if out.text or out.token_ids or out.finished:
            r._emit(out)

    def _release(self, r: Request, out: Output, text: str, final: bool = False) -> bool:
        """Append decoded text; release what can no longer be part of a stop string. True at a stop."""
        r.text += text
        stops = r.params.stop
        hold = 0
        if stops:
            found = [i for i in (r.text.find(s, r.sent) for s in stops) if i >= 0]
            if found:
                cut = min(found)
                out.text += r.text[r.sent : cut]
                r.text, r.sent = r.text[:cut], cut
                r.finish_reason = "stop"
                return True
            if not final:
                tail = r.text[max(r.sent, len(r.text) - r._max_stop + 1) :]
                for k in range(len(tail), 0, -1):
                    if any(s.startswith(tail[-k:]) for s in stops):
                        hold = k
                        break
        end = len(r.text) - hold
        out.text += r.text[r.sent : end]
        r.sent = end
        return False

    def _logprob(self, logits: torch.Tensor, tok: int, k: int) -> TokenLogprob:
        logp = logits.float().log_softmax(-1)
        top = []
        if k:
            values, ids = logp.topk(k)
            top = list(zip(ids.tolist(), values.tolist(), strict=True))
        return TokenLogprob(tok, float(logp[tok]), top)

    def _reap(self) -> None:
        for r in [r for r in self.running if r.finish_reason is not None]:
            self._remove(r)

    def _finish(self, r: Request, reason: str) -> None:
        if r.finish_reason is None:
            r.finish_reason = reason
            r._emit(Output(finished=True, finish_reason=reason))
        self._remove(r)

    def _remove(self, r: Request) -> None:
        """Free r's slot; the last running sequence moves into it so running slots stay 0..n-1."""
        if r.slot is None:
            return
        hole, last = r.slot, len(self.running) - 1
        moved = self.running[last]
        if moved is not r:
            self.cache.move(last, hole, self.lengths[last])
            self.mtp_written[hole] = self.mtp_written[last]
            self.lengths[hole] = self.lengths[last]
            moved.slot = hole
            self.running[hole] = moved
        self.running.pop()
        self.lengths[last] = 0
        r.slot = None
        r.finished_at = time.perf_counter()
