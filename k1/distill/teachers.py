"""Teachers: a registry from kind to a class that scores token windows (top-k) and answers prompts.

    "k1"      a k1 / A.X K1 model directory of any size (MoE included), run in this process
    "hf"      any transformers causal-LM directory, run in this process
    "openai"  an OpenAI-compatible endpoint (vLLM, SGLang, k1 serve): chat completions for answers,
              `prompt_logprobs` on /completions (a vLLM extension) for top-k capture

Every teacher offers:

    teacher.top_k(windows, k, temperature) -> TopK   # windows (batch, seq + 1) of token ids
    teacher.complete(requests, on_result)            # think / non-think answers to chat prompts
    teacher.describe()                               # what goes into manifests and reports
    teacher.fingerprint                              # of its tokenizer's id table, or None

Top-k semantics (the reference the KD losses rely on): position t of a window holds the teacher's
distribution over token t + 1 given tokens 0..t, softened by `temperature`: the k most likely ids,
their log-probs, and the leftover mass (the summed probability of every other token).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from k1.distill.config import TeacherConfig
from k1.errors import ConfigError, K1Error, did_you_mean


@dataclass
class TopK:
    ids: np.ndarray
    """(batch, seq, k) int64."""
    logprobs: np.ndarray
    """(batch, seq, k) float32; -inf marks padding when a teacher returned fewer than k."""
    leftover: np.ndarray
    """(batch, seq) float32: probability outside the k ids."""


@dataclass
class GenRequest:
    messages: list[dict]
    think: bool
    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int


@dataclass
class GenResult:
    reasoning: str | None
    answer: str
    closed: bool
    """The reasoning block was closed (or there was none): an answer was given."""
    tokens: int
    """Tokens the teacher generated (its own tokenizer's count)."""
    finish_reason: str


# ------------------------------------------------------------------------------------- tokenizers


def vocab_fingerprint(vocab: dict[str, int]) -> str:
    """sha256 of the token -> id table: two tokenizers with the same one give logits that line up."""
    table = sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(table, ensure_ascii=False).encode("utf-8")).hexdigest()


def tokenizer_fingerprint(path: str | Path) -> tuple[str, int] | None:
    """(fingerprint, vocabulary size) of the tokenizer in a directory, or None when it has none."""
    p = Path(path)
    f = p / "tokenizer.json" if p.is_dir() else p
    if f.is_file():
        from tokenizers import Tokenizer

        try:
            vocab = Tokenizer.from_file(str(f)).get_vocab(with_added_tokens=True)
        except Exception as err:  # tokenizers raises a bare Exception on malformed files
            raise K1Error(f"{f}: not a valid tokenizer.json ({str(err).splitlines()[0][:200]})") from None
        return vocab_fingerprint(vocab), len(vocab)
    if p.is_dir() and any(
        (p / n).is_file() for n in ("tokenizer_config.json", "tokenizer.model", "vocab.json")
    ):
        try:
            from transformers import AutoTokenizer

            vocab = AutoTokenizer.from_pretrained(str(p)).get_vocab()
        except Exception as err:  # noqa: BLE001 - any loader failure is a bad tokenizer dir for the user
            raise K1Error(f"{p}: cannot load its tokenizer ({str(err).splitlines()[0][:200]})") from None
        return vocab_fingerprint(vocab), len(vocab)
    return None


def check_same_tokenizer(
    teacher: dict, student_tokenizer: str | None, student_vocab: int | None = None
) -> None:
    """Logit distillation compares distributions id by id: the student must use the teacher's
    tokenizer. `teacher` is a describe() dict (fingerprint, tokenizer_size, vocab_size)."""
    fp = teacher.get("fingerprint")
    if student_tokenizer:
        got = tokenizer_fingerprint(student_tokenizer)
        if got is None:
            raise K1Error(f"{student_tokenizer}: no tokenizer there (the student's tokenizer)")
        if fp and got[0] != fp:
            raise K1Error(
                f"logit distillation needs the teacher's tokenizer, but the student's ({student_tokenizer}, "
                f"{got[1]} tokens) differs from the teacher's ({teacher.get('tokenizer') or teacher.get('path')}, "
                f"{teacher.get('tokenizer_size')} tokens): train the student with the teacher's tokenizer, or "
                'use method = "sequence" (works across tokenizers)'
            )
    if student_vocab is not None and teacher.get("vocab_size") and teacher["vocab_size"] > student_vocab:
        if teacher.get("tokenizer_size") and teacher["tokenizer_size"] <= student_vocab:
            return  # only the teacher's padding rows lie beyond; capture checks the ids it stores
        raise K1Error(
            f"the teacher scores {teacher['vocab_size']} tokens but the student has vocab_size {student_vocab}; "
            "logit distillation needs the teacher's tokenizer and a student vocabulary at least that large"
        )


# ------------------------------------------------------------------------------------- shared math


def top_k_from_logits(logits: torch.Tensor, k: int, temperature: float, limit: int | None = None) -> TopK:
    """logits (batch, seq, vocab) -> the k most likely ids, their log-probs and the leftover mass.

    `limit` keeps the first `limit` ids only: a model's vocabulary is often padded past its
    tokenizer, and ids no text can contain are not something a student should be taught."""
    if limit is not None and limit < logits.shape[-1]:
        logits = logits[..., :limit]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    k = min(k, logp.shape[-1])
    values, ids = logp.topk(k, dim=-1)
    rest = logp.scatter(-1, ids, float("-inf"))
    # Summed in log space from the tokens themselves, not as 1 - sum(top k): exact zero when k = vocab.
    leftover = torch.logsumexp(rest, dim=-1).exp()
    return TopK(ids.cpu().numpy().astype(np.int64), values.cpu().numpy(), leftover.cpu().numpy())


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"teacher.device {name!r}: use cpu, cuda or cuda:N") from None


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"teacher.dtype {name!r}{did_you_mean(name, list(table))}")
    return table[name]


def _describe_tokenizer(d: dict, tok_dir: str | Path | None) -> dict:
    if tok_dir:
        fp = tokenizer_fingerprint(tok_dir)
        if fp is not None:
            d.update(tokenizer=str(tok_dir), fingerprint=fp[0], tokenizer_size=fp[1])
    return d


class Teacher:
    kind = ""
    fingerprint: str | None = None

    def describe(self) -> dict:
        raise NotImplementedError

    def top_k(self, windows: np.ndarray, k: int, temperature: float, limit: int | None = None) -> TopK:
        raise NotImplementedError

    def complete(
        self,
        requests: Sequence[GenRequest],
        on_result: Callable[[int, GenResult], None],
        batch_size: int = 16,
    ) -> None:
        raise NotImplementedError


# ------------------------------------------------------------------------------------- k1


class K1Teacher(Teacher):
    """A k1 (A.X K1 architecture) model directory, loaded with k1.load."""

    kind = "k1"

    def __init__(self, cfg: TeacherConfig):
        from k1 import checkpoint

        self.path = Path(cfg.path)
        self.device = _device(cfg.device)
        self.model = checkpoint.load(
            self.path, dtype=_dtype(cfg.dtype, self.device), device=self.device
        ).eval()
        tok_dir = cfg.tokenizer or (self.path if (self.path / "tokenizer.json").is_file() else None)
        self.tok_dir = tok_dir
        self._tok = None
        self.info = _describe_tokenizer(
            {
                "kind": self.kind,
                "path": str(self.path),
                "vocab_size": self.model.config.vocab_size,
                "parameters": self.model.num_parameters,
            },
            tok_dir,
        )
        self.fingerprint = self.info.get("fingerprint")

    def describe(self) -> dict:
        return dict(self.info)

    @property
    def tokenizer(self):
        if self._tok is None:
            if not self.tok_dir:
                raise K1Error(f"{self.path}: the teacher has no tokenizer files; set teacher.tokenizer")
            from k1 import tokenizer

            self._tok = tokenizer.load(self.tok_dir)
        return self._tok

    @torch.no_grad()
    def top_k(self, windows: np.ndarray, k: int, temperature: float, limit: int | None = None) -> TopK:
        ids = torch.as_tensor(np.asarray(windows, dtype=np.int64), device=self.device)
        return top_k_from_logits(self.model(ids[:, :-1]), k, temperature, limit)

    def complete(self, requests, on_result, batch_size: int = 16) -> None:
        from k1.generate import SamplingParams, generate
        from k1.thinking import split_reply

        tok = self.tokenizer
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            # One sampling setting per generate call: group the chunk by it.
            groups: dict[tuple, list[int]] = {}
            for j, r in enumerate(chunk):
                groups.setdefault((r.max_new_tokens, r.temperature, r.top_p, r.seed), []).append(j)
            for (max_new, temp, top_p, seed), members in groups.items():
                prompts = [
                    tok.encode(
                        tok.apply_chat_template(
                            chunk[j].messages, add_generation_prompt=True, enable_thinking=chunk[j].think
                        )
                    )
                    for j in members
                ]
                limit = self.model.config.max_position_embeddings - max(len(p) for p in prompts)
                params = SamplingParams(
                    max_new_tokens=max(1, min(max_new, limit)),
                    temperature=temp,
                    top_p=top_p,
                    stop_token_ids=tok.stop_ids,
                    seed=seed,
                )
                for j, out in zip(members, generate(self.model, prompts, params), strict=True):
                    reply = split_reply(tok.decode(out.tokens), chunk[j].think)
                    on_result(
                        start + j,
                        GenResult(
                            reply.reasoning, reply.answer, reply.closed, len(out.tokens), out.finish_reason
                        ),
                    )


# ------------------------------------------------------------------------------------- transformers


class HFTeacher(Teacher):
    """Any transformers causal-LM directory (AutoModelForCausalLM + AutoTokenizer)."""

    kind = "hf"

    def __init__(self, cfg: TeacherConfig):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(cfg.path)
        self.device = _device(cfg.device)
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                str(self.path), dtype=_dtype(cfg.dtype, self.device)
            )
        except (OSError, ValueError) as err:
            raise K1Error(
                f"{self.path}: transformers cannot load it as a causal LM ({str(err).splitlines()[0][:200]})"
            ) from None
        self.model.to(self.device).eval()
        tok_dir = cfg.tokenizer or self.path
        self.hf_tok = AutoTokenizer.from_pretrained(str(tok_dir))
        self.hf_tok.padding_side = "left"
        vocab = self.model.get_output_embeddings().weight.shape[0]
        self.info = _describe_tokenizer(
            {
                "kind": self.kind,
                "path": str(self.path),
                "vocab_size": int(vocab),
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            tok_dir,
        )
        self.fingerprint = self.info.get("fingerprint")

    def describe(self) -> dict:
        return dict(self.info)

    @torch.no_grad()
    def top_k(self, windows: np.ndarray, k: int, temperature: float, limit: int | None = None) -> TopK:
        ids = torch.as_tensor(np.asarray(windows, dtype=np.int64), device=self.device)
        return top_k_from_logits(self.model(input_ids=ids[:, :-1]).logits, k, temperature, limit)

    def _stop_ids(self) -> list[int]:
        tok = self.hf_tok
        stops = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        end = tok.convert_tokens_to_ids("<|end|>") if "<|end|>" in tok.get_vocab() else None
        if end is not None:
            stops.add(end)
        return sorted(stops)

    def complete(self, requests, on_result, batch_size: int = 16) -> None:
        from k1.thinking import split_reply

        tok = self.hf_tok
        stops = self._stop_ids()
        pad = tok.pad_token_id if tok.pad_token_id is not None else (stops[0] if stops else 0)
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            for j, r in enumerate(chunk):  # one at a time: per-request sampling settings and seeds
                text = tok.apply_chat_template(
                    r.messages, tokenize=False, add_generation_prompt=True, enable_thinking=r.think
                )
                enc = tok(text, return_tensors="pt", add_special_tokens=False).to(self.device)
                torch.manual_seed(r.seed)
                sample = r.temperature > 0
                out = self.model.generate(
                    **enc,
                    max_new_tokens=r.max_new_tokens,
                    do_sample=sample,
                    temperature=r.temperature if sample else None,
                    top_p=r.top_p if sample else None,
                    eos_token_id=stops or None,
                    pad_token_id=pad,
                )
                new = out[0, enc["input_ids"].shape[1] :].tolist()
                finish = "length"
                if new and new[-1] in stops:
                    new, finish = new[:-1], "stop"
                reply = split_reply(tok.decode(new, skip_special_tokens=False), r.think)
                on_result(start + j, GenResult(reply.reasoning, reply.answer, reply.closed, len(new), finish))


# ------------------------------------------------------------------------------------- endpoints


class OpenAITeacher(Teacher):
    """An OpenAI-compatible endpoint; the host must be on teacher.allowed_hosts."""

    kind = "openai"

    def __init__(self, cfg: TeacherConfig):
        from k1.distill.client import EndpointClient, api_key_from_env, check_host

        check_host(cfg.path, cfg.allowed_hosts)  # first: a refused host is reported before anything else
        self.client = EndpointClient(
            cfg.path,
            allowed_hosts=cfg.allowed_hosts,
            api_key=api_key_from_env(cfg.api_key_env),
            concurrency=cfg.concurrency,
            max_retries=cfg.max_retries,
            timeout_s=cfg.timeout_s,
        )
        if not cfg.model:
            raise ConfigError("teacher.model is empty: the endpoint's model name (see its /v1/models)")
        self.model_name = cfg.model
        # The URL's host only: paths or query strings may carry tokens and do not belong in reports.
        self.info = _describe_tokenizer(
            {
                "kind": self.kind,
                "host": self.client.host,
                "model": cfg.model,
                "path": f"{self.client.host} ({cfg.model})",
            },
            cfg.tokenizer or None,
        )
        self.info["vocab_size"] = self.info.get("tokenizer_size")
        self.fingerprint = self.info.get("fingerprint")

    def describe(self) -> dict:
        return dict(self.info)

    def top_k(self, windows: np.ndarray, k: int, temperature: float, limit: int | None = None) -> TopK:
        if temperature != 1.0:
            raise K1Error("an endpoint returns log-probs at temperature 1: set capture.temperature = 1.0")
        if self.fingerprint is None:
            raise K1Error(
                "logit capture from an endpoint needs teacher.tokenizer (the tokenizer the endpoint "
                "serves) to check that the student can use its ids"
            )
        windows = np.asarray(windows, dtype=np.int64)
        b, s = windows.shape[0], windows.shape[1] - 1
        ids = np.zeros((b, s, k), dtype=np.int64)
        logprobs = np.full((b, s, k), -np.inf, dtype=np.float32)
        leftover = np.zeros((b, s), dtype=np.float32)
        payloads = [
            {
                "model": self.model_name,
                "prompt": w.tolist(),
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": k,
            }
            for w in windows
        ]

        def take(i: int, body: dict) -> None:
            try:
                entries = body["choices"][0]["prompt_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise K1Error(
                    "the endpoint returned no prompt_logprobs: logit capture needs a server with "
                    'vLLM\'s prompt_logprobs (or use method = "sequence")'
                ) from None
            if not isinstance(entries, list) or len(entries) != s + 1:
                raise K1Error(
                    f"the endpoint returned {len(entries) if isinstance(entries, list) else 'no'} "
                    f"prompt log-prob entries for a {s + 1}-token prompt"
                )
            for t in range(s):
                entry = entries[t + 1]  # entry j: the distribution of prompt token j given those before it
                if not isinstance(entry, dict) or not entry:
                    raise K1Error(f"prompt_logprobs entry {t + 1} is empty")
                pairs = sorted(
                    (
                        (float(v["logprob"] if isinstance(v, dict) else v), int(tid))
                        for tid, v in entry.items()
                        if limit is None or int(tid) < limit
                    ),
                    reverse=True,
                )[:k]
                for j, (lp, tid) in enumerate(pairs):
                    ids[i, t, j], logprobs[i, t, j] = tid, lp
                leftover[i, t] = max(0.0, 1.0 - float(np.exp(np.array([lp for lp, _ in pairs])).sum()))

        self.client.post_many("/completions", payloads, take)
        return TopK(ids, logprobs, leftover)

    def complete(self, requests, on_result, batch_size: int = 16) -> None:
        from k1.thinking import split_reply

        payloads = []
        for r in requests:
            p = {
                "model": self.model_name,
                "messages": r.messages,
                "max_tokens": r.max_new_tokens,
                "temperature": r.temperature,
                "top_p": r.top_p,
                "seed": r.seed,
                # vLLM and SGLang pass these to the chat template (A.X K1, Qwen3 style think switch).
                "chat_template_kwargs": {"enable_thinking": r.think},
            }
            payloads.append(p)

        def take(i: int, body: dict) -> None:
            try:
                choice = body["choices"][0]
                msg = choice["message"]
                content = msg.get("content") or ""
            except (KeyError, IndexError, TypeError, AttributeError):
                raise K1Error("the endpoint's chat completion has no choices[0].message") from None
            reasoning = msg.get("reasoning_content") or msg.get("reasoning")
            if reasoning:  # the server split the reasoning off (a reasoning parser is on)
                reply_r, answer, closed = reasoning.strip(), content.strip(), True
            else:
                reply = split_reply(content, requests[i].think)
                reply_r, answer, closed = reply.reasoning, reply.answer, reply.closed
            usage = body.get("usage") or {}
            tokens = int(usage.get("completion_tokens") or 0) or len(content) + len(reasoning or "")
            on_result(
                i, GenResult(reply_r, answer, closed, tokens, str(choice.get("finish_reason") or "stop"))
            )

        self.client.post_many("/chat/completions", payloads, take)


TEACHERS: dict[str, type[Teacher]] = {"k1": K1Teacher, "hf": HFTeacher, "openai": OpenAITeacher}


def detect_kind(path: str) -> str:
    if path.startswith(("http://", "https://")):
        return "openai"
    p = Path(path)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise K1Error(
            f"teacher.path {path!r}: neither an endpoint URL nor a model directory (no config.json)"
        )
    try:
        model_type = json.loads(cfg.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise K1Error(f"{cfg}: not valid JSON") from None
    return "k1" if model_type == "axk1" else "hf"


def load_teacher(cfg: TeacherConfig) -> Teacher:
    kind = detect_kind(cfg.path) if cfg.kind == "auto" else cfg.kind
    if kind not in TEACHERS:
        raise ConfigError(f"teacher.kind {kind!r}{did_you_mean(kind, list(TEACHERS))}")
    return TEACHERS[kind](cfg)
