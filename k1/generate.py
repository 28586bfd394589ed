"""Token generation: prefill, then one step at a time against the latent cache.

`stream` yields each step's new tokens so a chat or a server can show them as they come;
`generate` collects them. Prompts of different lengths are left-padded into one batch; positions
count real tokens only, so a padded prompt continues exactly as it would alone.

    out = generate(model, [[1, 5, 9], [1, 7]], max_new_tokens=32, temperature=0.7, top_p=0.9)
    out[0].tokens, out[0].finish_reason
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

# Generation must not silently run past what a request can afford.
MAX_NEW_TOKENS_LIMIT = 1 << 20


@dataclass
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    """0 is greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 keeps all tokens."""
    stop_token_ids: Sequence[int] = ()
    seed: int | None = None
    quantized_cache: bool = False
    """Keep the latent cache in int8 (about half the bytes; see model.LatentCache)."""

    def validate(self) -> None:
        if not 0 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ValueError(f"max_new_tokens must be in 0..{MAX_NEW_TOKENS_LIMIT}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0")


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" when a stop token ended it (the stop token is not included)


_MIN_TEMPERATURE = 1e-6


def filtered_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution sampling draws from (temperature, then top-k, then top-p), as probs;
    logits (..., vocab), temperature > 0. The serving engine's speculative sampling needs the
    distribution itself, not only a draw."""
    logits = logits.float()
    # A tiny temperature (1e-186 arrived through the API) is 0 in fp32, and raw logits divided by
    # it overflowed to +-inf and the softmax to NaN. So each row's best logit is moved to 0 first,
    # and the temperature floored at 1e-6, where the rest already fall to -inf unless within
    # about 1e-4 of the best: the same one-hot distribution, up to such near-ties.
    logits = (logits - logits.amax(-1, keepdim=True)) / max(params.temperature, _MIN_TEMPERATURE)
    if params.top_k:
        kth = logits.topk(min(params.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the tokens ranked above it already hold top_p of the mass.
        drop = probs.cumsum(-1) - probs > params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits.softmax(-1)


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """logits (batch, vocab) -> token ids (batch,)."""
    if params.temperature == 0:
        # max(-1).indices: argmax's index (the first of ties) at a quarter of its cost on bf16 rows
        return logits.max(-1).indices
    return torch.multinomial(filtered_probs(logits, params), 1, generator=generator)[:, 0]


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def stream(model, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None,
           **kwargs) -> Iterator[list[int | None]]:
    """Yield, per step, each sequence's new token (None once that sequence has finished)."""
    params = params or SamplingParams(**kwargs)
    params.validate()
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    cfg = model.config
    device = next(model.parameters()).device
    longest = max(len(p) for p in prompts)
    if longest + params.max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"prompt ({longest}) + max_new_tokens ({params.max_new_tokens}) exceeds the "
                         f"context of {cfg.max_position_embeddings} tokens")
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device=device).manual_seed(params.seed)
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    ids, mask = _left_pad(prompts, pad, device)
    ragged = not bool(mask.all())
    cache = model.new_cache(len(prompts), capacity=longest + params.max_new_tokens, quantized=params.quantized_cache)
    logits = model(ids, attention_mask=mask if ragged else None, cache=cache, last_only=True)[:, -1]
    stops = set(params.stop_token_ids)
    done = [False] * len(prompts)
    for _ in range(params.max_new_tokens):
        nxt = sample_next(logits, params, generator)
        step: list[int | None] = []
        for i, t in enumerate(nxt.tolist()):
            if done[i]:
                step.append(None)
                continue
            step.append(t)
            if t in stops:
                done[i] = True
        yield step
        if all(done):
            return
        mask = torch.cat((mask, torch.ones_like(mask[:, :1])), dim=1)
        logits = model(nxt[:, None], attention_mask=mask if ragged else None, cache=cache, last_only=True)[:, -1]


def generate(model, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None,
             **kwargs) -> list[Generation]:
    """Generate for each prompt (lists of token ids); options as in `SamplingParams`."""
    params = params or SamplingParams(**kwargs)
    stops = set(params.stop_token_ids)
    out = [Generation() for _ in prompts]
    for step in stream(model, prompts, params):
        for g, t in zip(out, step, strict=True):
            if t is None or g.finish_reason == "stop":
                continue
            if t in stops:
                g.finish_reason = "stop"
            else:
                g.tokens.append(t)
    return out
