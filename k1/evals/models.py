"""Model backends: one small protocol, so a k1 directory, a transformers directory and a served model
are measured by the same code.

    model = load_model("runs/demo/student")                       # a model directory ("hf" backend)
    model = load_model("http://127.0.0.1:8000/v1", served_model="k1")   # an OpenAI-compatible endpoint
    model.loglikelihood([("하늘은", " 파랗다")])                    # [-3.2]
    model.generate([Prompt(messages=[...], enable_thinking=True)], max_new_tokens=512)

The protocol (`Model`):
  chat                  whether prompts go through a chat template (else raw text + stop strings)
  loglikelihood(reqs)   (context, continuation) -> summed log-probability of the continuation
  generate(prompts, max_new_tokens, temperature, top_p, stop, n, seed) -> per prompt, n Completions
  count_tokens(text)    tokens of a piece of output, or None when the backend cannot tell

Backends are a registry (`BACKENDS`). `TokenizerModel` holds everything that needs only a tokenizer
and a logits function (log-likelihoods, chat rendering, decoding, token counting); a backend for a
new model family is a subclass with `_logits` and `_generate_ids`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from k1.errors import ConfigError, K1Error, did_you_mean
from k1.evals.extract import THINK_CLOSE, THINK_OPEN
from k1.evals.tasks import Prompt

# Requests a caller may make of a backend; beyond these a config is wrong, not ambitious.
MAX_NEW_TOKENS = 1 << 20
MAX_SAMPLES = 1024
# An endpoint reply larger than this is refused (a broken or hostile server).
MAX_RESPONSE_BYTES = 64 << 20


@dataclass
class Completion:
    text: str
    """The generated text. If the prompt opened a reasoning block, the text starts with "<think>"."""
    n_tokens: int | None
    """Tokens generated (the end-of-turn token excluded); None when the backend cannot tell."""
    finish_reason: str = "stop"
    """"stop" (end of turn or a stop string) or "length" (ran out of max_new_tokens)."""
    n_reasoning_tokens: int | None = None
    """Reasoning tokens when the backend reports them (an endpoint's usage details)."""


class Model(Protocol):
    name: str
    backend: str
    chat: bool

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]: ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        n: int = 1,
        seed: int = 0,
    ) -> list[list[Completion]]: ...

    def count_tokens(self, text: str) -> int | None: ...


def check_generation_args(max_new_tokens: int, temperature: float, top_p: float, n: int) -> None:
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ConfigError(f"max_new_tokens={max_new_tokens} is out of range 1..{MAX_NEW_TOKENS}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ConfigError(f"need temperature >= 0 and 0 < top_p <= 1 (got {temperature}, {top_p})")
    if not 1 <= n <= MAX_SAMPLES:
        raise ConfigError(f"n={n} samples per problem is out of range 1..{MAX_SAMPLES}")


def _truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _opened_think(rendered: str) -> bool:
    """The rendered prompt leaves the model inside a reasoning block (the template opened it)."""
    return rendered.rfind(THINK_OPEN) > rendered.rfind(THINK_CLOSE)


# ---------------------------------------------------------------------------------------------
# Tokenizer-based backends


class TokenizerModel:
    """Shared machinery for backends that own a tokenizer and a forward pass."""

    backend = "tokenizer"

    def __init__(self, name: str, tokenizer, device: str, max_length: int, batch_size: int = 8):
        self.name, self.tokenizer, self.device = name, tokenizer, device
        self.max_length, self.batch_size = max_length, max(1, batch_size)
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        eos = tokenizer.eos_token_id
        self.eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        self.pad_id = (
            tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else (min(self.eos_ids) if self.eos_ids else 0)
        )
        # Special tokens that are formatting, not content; reasoning markers are kept.
        self._strip = [t for t in (tokenizer.all_special_tokens or []) if t not in (THINK_OPEN, THINK_CLOSE)]

    # -- to implement --------------------------------------------------------------------------
    def _logits(self, ids, mask):
        """(batch, seq) ids and mask -> (batch, seq, vocab) logits."""
        raise NotImplementedError

    def _generate_ids(
        self,
        batch: list[list[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        n: int,
        seed: int,
        stop: Sequence[str],
    ) -> list[list[tuple[list[int], bool]]]:
        """Per prompt, n (generated ids without the end token, ended_by_eos) pairs."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def render(self, prompt: Prompt) -> str:
        if prompt.messages is None:
            return prompt.text or ""
        if not self.chat:
            raise K1Error(
                f"{self.name}: the tokenizer has no chat template; use a chat model or raw-text prompts"
            )
        return self.tokenizer.apply_chat_template(
            prompt.messages,
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=prompt.enable_thinking,
        )

    def _encode(self, text: str, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def count_tokens(self, text: str) -> int | None:
        return len(self._encode(text, False)) if text else 0

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        for token in self._strip:
            text = text.replace(token, "")
        return text

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        import torch

        items = []
        for context, continuation in requests:
            # Spaces end up attached to the following word by BPE: score them with the continuation.
            n = len(context) - len(context.rstrip(" "))
            if n:
                context, continuation = context[:-n], context[-n:] + continuation
            whole = self._encode(context + continuation, True)
            ctx = self._encode(context, True)
            cont = whole[len(ctx) :]
            if not ctx:
                ctx = [min(self.eos_ids) if self.eos_ids else self.pad_id]
            seq = (ctx + cont)[-(self.max_length + 1) :]
            items.append((seq, len(cont)))
        out = [0.0] * len(items)
        order = sorted(range(len(items)), key=lambda i: -len(items[i][0]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                width = max(len(items[i][0]) for i in chunk) - 1
                ids = torch.full((len(chunk), max(width, 1)), self.pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(chunk):
                    seq = items[i][0][:-1]
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                logits = self._logits(ids.to(self.device), mask.to(self.device))
                for row, i in enumerate(chunk):
                    seq, n_cont = items[i]
                    if n_cont == 0:
                        continue
                    positions = torch.arange(len(seq) - 1 - n_cont, len(seq) - 1)
                    # log_softmax over the continuation rows only: the full (seq, vocab) tensor is large
                    logp = torch.log_softmax(logits[row, positions.to(logits.device)].float(), dim=-1)
                    target = torch.tensor(seq[len(seq) - n_cont :], device=logp.device)
                    out[i] = float(logp.gather(1, target[:, None]).sum())
        return out

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        n: int = 1,
        seed: int = 0,
    ) -> list[list[Completion]]:
        check_generation_args(max_new_tokens, temperature, top_p, n)
        rendered = [self.render(p) for p in prompts]
        budget = max(1, self.max_length - max_new_tokens)
        encoded = [
            self._encode(r, p.messages is None)[-budget:] for r, p in zip(rendered, prompts, strict=True)
        ]
        stops = [tuple(dict.fromkeys([*p.stop, *stop])) for p in prompts]
        results: list[list[Completion]] = [[] for _ in prompts]
        # Batch prompts that share stop strings (generation stops per batch on them).
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, s in enumerate(stops):
            groups.setdefault(s, []).append(i)
        for group_stops, members in groups.items():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start : start + self.batch_size]
                outs = self._generate_ids(
                    [encoded[i] for i in chunk],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    n=n,
                    seed=seed + start,
                    stop=group_stops,
                )
                for i, samples in zip(chunk, outs, strict=True):
                    opened = _opened_think(rendered[i])
                    for ids, ended in samples:
                        text, stopped = _truncate_at_stop(self._decode(ids), group_stops)
                        finish = "stop" if ended or stopped or len(ids) < max_new_tokens else "length"
                        results[i].append(
                            Completion((THINK_OPEN + "\n" + text) if opened else text, len(ids), finish)
                        )
        return results

    def _split_generated(self, row: list[int]) -> tuple[list[int], bool]:
        """Generated ids up to the first end token; whether an end token was reached."""
        for j, t in enumerate(row):
            if t in self.eos_ids:
                return row[:j], True
        while row and row[-1] == self.pad_id and self.pad_id not in self.eos_ids:
            row = row[:-1]
        return row, False


class HFModel(TokenizerModel):
    """A transformers directory (k1 model directories are transformers A.X K1 directories)."""

    backend = "hf"

    def __init__(
        self, path: str, device: str | None = None, dtype: str | None = None, batch_size: int = 8, **_
    ):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise K1Error(f"the hf backend needs transformers ({err}); pip install transformers") from None
        p = Path(path)
        if not (p / "config.json").is_file():
            raise K1Error(f"{path}: not a model directory (no config.json)")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = (
            getattr(torch, dtype)
            if dtype
            else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        )
        try:
            tokenizer = AutoTokenizer.from_pretrained(p)
            model = AutoModelForCausalLM.from_pretrained(p, dtype=torch_dtype).to(device).eval()
        except (OSError, ValueError) as err:
            raise K1Error(f"{path}: cannot load with transformers: {str(err).splitlines()[0]}") from None
        self.model = model
        max_length = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
        super().__init__(p.name or str(p), tokenizer, device, max_length, batch_size)
        gen_eos = getattr(model.generation_config, "eos_token_id", None)
        self.eos_ids |= {gen_eos} if isinstance(gen_eos, int) else set(gen_eos or [])

    def _logits(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask).logits

    def _generate_ids(self, batch, *, max_new_tokens, temperature, top_p, n, seed, stop):
        import torch

        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, x in enumerate(batch):
            ids[row, width - len(x) :] = torch.tensor(x)
            mask[row, width - len(x) :] = 1
        torch.manual_seed(seed)
        kwargs = dict(
            max_new_tokens=max_new_tokens,
            num_return_sequences=n,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
        )
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if stop:
            kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs
            )
        gen = out[:, width:].tolist()
        return [[self._split_generated(gen[b * n + j]) for j in range(n)] for b in range(len(batch))]


class K1Model(TokenizerModel):
    """A k1 model directory through k1's own model code (`k1.load`) and generation (`k1.generate`).

    Reads the same directories as "hf"; differs only in which implementation runs the forward pass.
    """

    backend = "k1"

    def __init__(
        self, path: str, device: str | None = None, dtype: str | None = None, batch_size: int = 8,
        quantize: str | None = None, compile: bool = False, **_
    ):
        try:
            import torch

            from k1.checkpoint import load
            from k1.generate import SamplingParams, generate
        except ImportError as err:
            raise K1Error(
                f"the k1 backend needs k1.checkpoint and k1.generate ({err}); use --backend hf, "
                "which reads the same directory"
            ) from None
        try:
            from transformers import AutoTokenizer
        except ImportError as err:
            raise K1Error(f"reading the tokenizer needs transformers ({err})") from None
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load(path, dtype=dtype, device=device, quantize=quantize)
        if compile:
            self.model.compile_decode()
        self._sampling, self._generate = SamplingParams, generate
        tokenizer = AutoTokenizer.from_pretrained(path)
        max_length = int(getattr(self.model.config, "max_position_embeddings", 4096))
        super().__init__(Path(path).name, tokenizer, device, max_length, batch_size)

    def _logits(self, ids, mask):
        return self.model(ids, attention_mask=mask)

    def _generate_ids(self, batch, *, max_new_tokens, temperature, top_p, n, seed, stop):
        # k1.generate stops on tokens only; stop strings are applied to the text afterwards, so raw-text
        # prompts may count a few tokens past their stop string.
        params = self._sampling(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            stop_token_ids=sorted(self.eos_ids),
            seed=seed,
        )
        flat = [x for x in batch for _ in range(n)]
        gens = self._generate(self.model, flat, params)
        return [
            [(list(gens[b * n + j].tokens), gens[b * n + j].finish_reason == "stop") for j in range(n)]
            for b in range(len(batch))
        ]


# ---------------------------------------------------------------------------------------------
# OpenAI-compatible endpoints


class OpenAIModel:
    """A served model behind /v1/chat/completions and /v1/completions (vLLM, SGLang, k1 serve, ...).

    Think mode is requested the way open servers accept it (`chat_template_kwargs.enable_thinking`);
    a separate `reasoning_content` / `reasoning` field is folded back into "<think>...</think>" so
    answers are scored the same way as local models. The API key is read from an environment
    variable, never from the command line or a config file.
    """

    backend = "openai"

    def __init__(
        self,
        url: str,
        served_model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 600.0,
        max_retries: int = 4,
        chat: bool = True,
        **_,
    ):
        import httpx

        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise K1Error(f"{url}: an endpoint URL starts with http:// or https://")
        if not base.endswith("/v1"):
            base += "/v1"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.url, self.chat, self.max_retries = base, chat, max_retries
        self.concurrency = max(1, concurrency)
        self.client = httpx.Client(base_url=base, headers=headers, timeout=timeout_s)
        self.served_model = served_model or self._first_model()
        self.name = self.served_model

    def _post(self, path: str, body: dict) -> dict:
        import httpx

        delay = 0.5
        for attempt in range(self.max_retries + 1):
            try:
                response = self.client.post(path, json=body)
            except httpx.TransportError as err:
                if attempt == self.max_retries:
                    raise K1Error(f"{self.url}{path}: cannot reach the endpoint ({err})") from None
            else:
                if response.status_code == 200:
                    if len(response.content) > MAX_RESPONSE_BYTES:
                        raise K1Error(f"{self.url}{path}: reply larger than {MAX_RESPONSE_BYTES} bytes")
                    try:
                        data = response.json()
                    except ValueError:
                        raise K1Error(f"{self.url}{path}: the reply is not JSON") from None
                    if not isinstance(data, dict):
                        raise K1Error(f"{self.url}{path}: the reply is not a JSON object")
                    return data
                if response.status_code in (401, 403):
                    raise K1Error(
                        f"{self.url}{path}: HTTP {response.status_code}; set the API key in the "
                        "environment variable named by --api-key-env"
                    )
                retryable = response.status_code in (408, 409, 429) or response.status_code >= 500
                if not retryable or attempt == self.max_retries:
                    raise K1Error(f"{self.url}{path}: HTTP {response.status_code}: {response.text[:200]}")
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def _first_model(self) -> str:
        try:
            response = self.client.get("/models")
            data = response.json()["data"]
            return str(data[0]["id"])
        except Exception:
            raise K1Error(
                f"{self.url}/models: cannot list the served models; pass --served-model NAME"
            ) from None

    def count_tokens(self, text: str) -> int | None:
        return None

    def _one(self, prompt: Prompt, max_new_tokens, temperature, top_p, stop, seed) -> Completion:
        common = {
            "model": self.served_model,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "n": 1,
        }
        if stop:
            common["stop"] = list(stop)
        if prompt.messages is not None and self.chat:
            body = {
                **common,
                "messages": prompt.messages,
                "chat_template_kwargs": {"enable_thinking": bool(prompt.enable_thinking)},
            }
            data = self._post("/chat/completions", body)
            choice = _first_choice(data)
            message = choice.get("message") or {}
            content = message.get("content") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            text = (
                f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{content}"
                if isinstance(reasoning, str) and reasoning
                else str(content)
            )
        else:
            text_prompt = (
                prompt.text
                if prompt.messages is None
                else "\n\n".join(m.get("content", "") for m in prompt.messages)
            )
            data = self._post("/completions", {**common, "prompt": text_prompt})
            choice = _first_choice(data)
            text = str(choice.get("text") or "")
        usage = data.get("usage") or {}
        n_tokens = usage.get("completion_tokens")
        details = usage.get("completion_tokens_details") or {}
        reasoning_tokens = details.get("reasoning_tokens") if isinstance(details, dict) else None
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            text,
            int(n_tokens) if isinstance(n_tokens, int) else None,
            finish,
            int(reasoning_tokens) if isinstance(reasoning_tokens, int) else None,
        )

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        n: int = 1,
        seed: int = 0,
    ) -> list[list[Completion]]:
        check_generation_args(max_new_tokens, temperature, top_p, n)
        jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]

        def run(job):
            i, j = job
            p = prompts[i]
            return self._one(
                p, max_new_tokens, temperature, top_p, tuple(dict.fromkeys([*p.stop, *stop])), seed + j
            )

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            done = list(pool.map(run, jobs))
        out: list[list[Completion]] = [[] for _ in prompts]
        for (i, _), completion in zip(jobs, done, strict=True):
            out[i].append(completion)
        return out

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        def run(req):
            context, continuation = req
            full = context + continuation
            data = self._post(
                "/completions",
                {
                    "model": self.served_model,
                    "prompt": full,
                    "max_tokens": 1,
                    "echo": True,
                    "logprobs": 0,
                    "temperature": 0.0,
                },
            )
            logprobs = _first_choice(data).get("logprobs") or {}
            offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
            if not isinstance(offsets, list) or not isinstance(values, list):
                raise K1Error(
                    f"{self.url}/completions: no prompt log-probabilities (echo + logprobs); "
                    "multiple-choice tasks need an endpoint that returns them"
                )
            # Tokens that start inside the continuation; echo also returns the one generated token.
            return float(
                sum(
                    v
                    for o, v in zip(offsets, values, strict=False)
                    if v is not None and len(context) <= o < len(full)
                )
            )

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(run, requests))


def _first_choice(data: dict) -> dict:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return {}
    return choices[0]


# ---------------------------------------------------------------------------------------------
# Registry

BACKENDS: dict[str, type] = {"hf": HFModel, "k1": K1Model, "openai": OpenAIModel}


def _directory_backend(path: str) -> str:
    """k1 runs A.X K1 directories natively; any other architecture goes through transformers."""
    import json

    cfg = Path(path) / "config.json"
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return "hf"
    return "k1" if model_type == "axk1" else "hf"


def load_model(spec: str, backend: str = "auto", **options) -> Model:
    """Open a model: a directory (hf / k1 backends) or an http(s) URL (openai backend)."""
    if backend == "auto":
        backend = "openai" if spec.startswith(("http://", "https://")) else _directory_backend(spec)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}" + did_you_mean(backend, list(BACKENDS)))
    for option in ("quantize", "compile"):
        if options.get(option) and backend != "k1":
            raise ConfigError(f"{option} runs k1's own model code: use --backend k1 (not {backend})")
    if backend != "openai" and not Path(spec).is_dir():
        raise K1Error(f"{spec}: no such model directory")
    return BACKENDS[backend](spec, **options)
