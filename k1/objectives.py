"""Training objectives: a small registry from name to loss function.

One training loop serves pretraining, SFT and distillation; what differs is the objective. Each
takes the model and a batch dict and returns (loss, metrics). A batch holds `input_ids`
(batch, seq + 1) and optionally `loss_mask` (batch, seq + 1; 1 where the token is a target) and
`segment_ids` (packed documents that must not attend to each other).

    loss, metrics = OBJECTIVES["pretrain"](model, batch, mtp_weight=0.3)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from k1.errors import ConfigError, did_you_mean


def _shifted(batch: dict[str, torch.Tensor]):
    ids = batch["input_ids"]
    inputs, targets = ids[:, :-1], ids[:, 1:].clone()
    if "loss_mask" in batch:
        targets = targets.masked_fill(batch["loss_mask"][:, 1:] == 0, -100)
    return inputs, targets


def _attention_mask(batch, inputs):
    """Packed segments attend only within themselves: a (batch, 1, seq, seq) boolean mask."""
    seg = batch.get("segment_ids")
    if seg is None:
        return None
    seg = seg[:, :-1]
    causal = torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool, device=inputs.device).tril()
    return (seg[:, :, None] == seg[:, None, :]) & causal


def next_token_and_mtp(model, batch, mtp_weight: float = 0.3) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy on the next token, plus lambda * mean over depths of the MTP losses
    (DeepSeek-V3 eq. 25): depth k at position i predicts token i + k + 1."""
    inputs, targets = _shifted(batch)
    mask = _attention_mask(batch, inputs)
    positions = batch.get("position_ids")
    use_mtp = bool(mtp_weight) and len(getattr(model, "mtp", ())) > 0
    out = model(inputs, attention_mask=None if mask is None else mask[:, None],
                position_ids=None if positions is None else positions[:, :-1], return_mtp=use_mtp)
    logits, mtp_logits = out if use_mtp else (out, [])
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    metrics = {"ce": loss.item()}
    if mtp_logits:
        depth_losses = [
            F.cross_entropy(lg.float().flatten(0, 1), targets[:, k:].flatten(), ignore_index=-100)
            for k, lg in enumerate(mtp_logits, start=1)
        ]
        mtp_loss = torch.stack(depth_losses).mean()
        metrics["mtp"] = mtp_loss.item()
        loss = loss + mtp_weight * mtp_loss
    return loss, metrics


def masked_next_token(model, batch, mtp_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT: cross-entropy on the target tokens only (loss_mask), averaged over them, plus the MTP
    losses when mtp_weight > 0. In packed rows no target crosses from one conversation into the
    next, for the next-token head or any MTP depth; a batch without targets gives a zero loss."""
    inputs, targets = _shifted(batch)
    seg = batch.get("segment_ids")
    if seg is not None:
        targets = targets.masked_fill(seg[:, :-1] != seg[:, 1:], -100)
    mask = _attention_mask(batch, inputs)
    positions = batch.get("position_ids")
    use_mtp = bool(mtp_weight) and len(getattr(model, "mtp", ())) > 0
    out = model(inputs, attention_mask=None if mask is None else mask[:, None],
                position_ids=None if positions is None else positions[:, :-1], return_mtp=use_mtp)
    logits, mtp_logits = out if use_mtp else (out, [])

    def mean_ce(lg, tg):
        total = F.cross_entropy(lg.float().flatten(0, 1), tg.flatten(), ignore_index=-100, reduction="sum")
        return total / (tg != -100).sum().clamp(min=1)

    loss = mean_ce(logits, targets)
    metrics = {"ce": loss.item(), "target_tokens": float((targets != -100).sum())}
    if mtp_logits:
        s = inputs.shape[1]
        depth_losses = []
        for k, lg in enumerate(mtp_logits, start=1):
            tg = targets[:, k:]  # position i predicts token i + k + 1
            if seg is not None:
                tg = tg.masked_fill(seg[:, : s - k] != seg[:, k + 1 :], -100)
            depth_losses.append(mean_ce(lg, tg))
        mtp_loss = torch.stack(depth_losses).mean()
        metrics["mtp"] = mtp_loss.item()
        loss = loss + mtp_weight * mtp_loss
    return loss, metrics


ObjectiveFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

OBJECTIVES: dict[str, ObjectiveFn] = {
    "pretrain": next_token_and_mtp,
    "sft": masked_next_token,
}


def get_objective(name: str) -> ObjectiveFn:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}{did_you_mean(name, list(OBJECTIVES))}")
    return OBJECTIVES[name]
