"""Training objectives: a small registry from name to loss function.

One training loop serves pretraining, SFT and distillation; what differs is the objective. Each
takes the model and a batch dict and returns (loss, metrics). A batch holds `input_ids`
(batch, seq + 1) and optionally `loss_mask` (batch, seq + 1; 1 where the token is a target) and
`segment_ids` (packed documents that must not attend to each other).

    loss, metrics = OBJECTIVES["pretrain"](model, batch, mtp_weight=0.3)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

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
                position_ids=None if positions is None else positions[:, :-1], return_mtp=use_mtp,
                labels=targets)
    loss = out["loss"]
    metrics = {"ce": loss.item()}
    if out["mtp_losses"]:
        mtp_loss = torch.stack(out["mtp_losses"]).mean()
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
    mtp_targets = None
    if use_mtp:
        s = inputs.shape[1]
        mtp_targets = []
        for k in range(1, len(model.mtp) + 1):
            tg = targets[:, k:]  # position i predicts token i + k + 1
            if seg is not None:
                tg = tg.masked_fill(seg[:, : s - k] != seg[:, k + 1 :], -100)
            mtp_targets.append(tg)
    # The fused loss path: the model never materializes the logits.
    out = model(inputs, attention_mask=None if mask is None else mask[:, None],
                position_ids=None if positions is None else positions[:, :-1], return_mtp=use_mtp,
                labels=targets, mtp_labels=mtp_targets)
    loss = out["loss"]
    metrics = {"ce": loss.item(), "target_tokens": float((targets != -100).sum())}
    if out["mtp_losses"]:
        mtp_loss = torch.stack(out["mtp_losses"]).mean()
        metrics["mtp"] = mtp_loss.item()
        loss = loss + mtp_weight * mtp_loss
    return loss, metrics


# ------------------------------------------------------------------------------ distillation
# The teacher's distribution at each position arrives truncated to its top k tokens: ids, log-probs
# and the leftover mass (the probability of every other token, summed). The losses compare teacher
# and student over k + 1 buckets: the k teacher tokens and one "everything else" bucket, the
# student's share of which is the sum of its probabilities outside the teacher's top k. This is the
# same divergence applied to both distributions coarse-grained onto those buckets; with k = vocab
# the last bucket is empty on both sides and the loss is the full-softmax loss exactly.

# Reverse KL floors the teacher's log-probabilities here: a bucket the teacher gives (numerically)
# zero mass costs the student a large finite amount instead of an infinite one.
KD_LOG_FLOOR = -30.0


def _weighted_log_ratio(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """sum over buckets of a * (log a - log b), with 0 log 0 = 0; (positions,)."""
    a = log_a.exp()
    live = a > 0
    # Dead buckets are replaced before subtracting: -inf - -inf would poison the gradient.
    diff = torch.where(live, log_a, 0.0) - torch.where(live, log_b, 0.0)
    return (a * diff).sum(-1)


def forward_kl(log_p: torch.Tensor, log_q: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """KL(teacher || student): mass-covering; the usual KD loss (Hinton et al. 2015)."""
    return _weighted_log_ratio(log_p, log_q)


def reverse_kl(log_p: torch.Tensor, log_q: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """KL(student || teacher): mode-seeking (MiniLLM, Gu et al. 2024)."""
    return _weighted_log_ratio(log_q, log_p.clamp(min=KD_LOG_FLOOR))


def generalized_jsd(log_p: torch.Tensor, log_q: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """beta KL(P || M) + (1 - beta) KL(Q || M) with M = beta P + (1 - beta) Q (GKD, Agarwal et al.
    2024); beta = 0.5 is the Jensen-Shannon divergence. Bounded, so no bucket can make it explode."""
    dead = (log_p == float("-inf")) & (log_q == float("-inf"))
    lp, lq = log_p.masked_fill(dead, 0.0), log_q.masked_fill(dead, 0.0)
    log_m = torch.logaddexp(lp + math.log(beta), lq + math.log1p(-beta))
    log_m = log_m.masked_fill(dead, float("-inf"))
    return beta * _weighted_log_ratio(log_p, log_m) + (1 - beta) * _weighted_log_ratio(log_q, log_m)


# Divergences between teacher (log_p) and student (log_q) bucket log-probs (positions, buckets) ->
# (positions,). The teacher side carries no gradient.
KD_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "jsd": generalized_jsd,
}


def get_kd_loss(name: str) -> Callable[..., torch.Tensor]:
    if name not in KD_LOSSES:
        raise ConfigError(f"unknown distillation loss {name!r}{did_you_mean(name, list(KD_LOSSES))}")
    return KD_LOSSES[name]


def teacher_buckets(logprobs: torch.Tensor, leftover: torch.Tensor) -> torch.Tensor:
    """Teacher log-probs over the k + 1 buckets, (positions, k + 1), renormalized so that values
    rounded to 16 bits still sum to one. An entry with log-prob -inf is padding (a teacher that
    returned fewer than k tokens) and stays an empty bucket."""
    log_left = torch.log(leftover.float().clamp(min=0.0))[..., None]
    lp = torch.cat((logprobs.float(), log_left), dim=-1)
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True)


def student_buckets(log_q_full: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Student log-probs (positions, vocab) -> over the teacher's k + 1 buckets (positions, k + 1)."""
    # Padding entries point at the row's first real id: marking it twice is harmless.
    ids = torch.where(valid, ids, ids[:, :1].expand_as(ids))
    top = log_q_full.gather(-1, ids).masked_fill(~valid, float("-inf"))
    rest = log_q_full.scatter(-1, ids, float("-inf"))  # (positions, vocab): tokens outside the top k
    if ids.shape[-1] < log_q_full.shape[-1]:  # k distinct ids < vocab: every row keeps some tokens
        return torch.cat((top, torch.logsumexp(rest, dim=-1, keepdim=True)), dim=-1)
    # With k = vocab nothing may be left; logsumexp over an all -inf row has a NaN gradient, so
    # those rows get a finite stand-in that where() then discards.
    empty = torch.isneginf(rest).all(-1, keepdim=True)
    tail = torch.logsumexp(rest.masked_fill(empty, 0.0), dim=-1, keepdim=True)
    tail = torch.where(empty, torch.full_like(tail, float("-inf")), tail)
    return torch.cat((top, tail), dim=-1)


def kd_from_log_probs(
    log_q: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_leftover: torch.Tensor,
    loss: str = "forward_kl",
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence (positions,) from the student's softened log-probs (positions, vocab)
    and the teacher's top-k: ids and log-probs (positions, k), leftover mass (positions,)."""
    if int(teacher_ids.max()) >= log_q.shape[-1]:
        from k1.errors import K1Error

        raise K1Error(
            f"teacher token id {int(teacher_ids.max())} is outside the student's vocabulary "
            f"({log_q.shape[-1]}); logit distillation needs the teacher's tokenizer"
        )
    valid = teacher_logprobs > float("-inf")
    log_p = teacher_buckets(teacher_logprobs, teacher_leftover)
    return get_kd_loss(loss)(log_p, student_buckets(log_q, teacher_ids.long(), valid), beta)


def kd_divergence(
    student_logits: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_leftover: torch.Tensor,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Per-position divergence (positions,) between the student's logits (positions, vocab), softened
    by `temperature`, and the teacher's top-k, which the capture already softened by the same one."""
    log_q = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    return kd_from_log_probs(log_q, teacher_ids, teacher_logprobs, teacher_leftover, loss, beta)


def distill(
    model,
    batch,
    mtp_weight: float = 0.0,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    ce_weight: float = 0.5,
    beta: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Knowledge distillation: (1 - ce_weight) x temperature^2 x mean divergence from the teacher
    (KD_LOSSES[loss]) + ce_weight x cross-entropy on the real next token, plus the MTP losses on the
    real tokens. temperature^2 keeps gradient sizes comparable across temperatures (Hinton et al.).

    The batch carries the teacher's top k per input position: `teacher_ids`, `teacher_logprobs`
    (batch, seq, k) and `teacher_leftover` (batch, seq). A batch without them (validation) gives the
    plain cross-entropy, comparable with a run trained on hard labels only. `loss_mask` and
    `segment_ids` are honoured as in "sft"."""
    inputs, targets = _shifted(batch)
    seg = batch.get("segment_ids")
    if seg is not None:
        targets = targets.masked_fill(seg[:, :-1] != seg[:, 1:], -100)
    mask = _attention_mask(batch, inputs)
    positions = batch.get("position_ids")
    use_mtp = bool(mtp_weight) and len(getattr(model, "mtp", ())) > 0
    out = model(
        inputs,
        attention_mask=None if mask is None else mask[:, None],
        position_ids=None if positions is None else positions[:, :-1],
        return_mtp=use_mtp,
    )
    logits, mtp_logits = out if use_mtp else (out, [])
    keep = (targets != -100).flatten()
    n = keep.sum().clamp(min=1)
    everything = bool(keep.all())

    def rows(t: torch.Tensor) -> torch.Tensor:  # (batch, seq, ...) -> the target positions
        t = t.flatten(0, 1)
        return t if everything else t[keep]

    logits_t = rows(logits).float()
    # One log-softmax serves the cross-entropy and, at temperature 1, the divergence.
    log_q = torch.log_softmax(logits_t, dim=-1)
    ce = -log_q.gather(-1, rows(targets)[:, None]).sum() / n
    metrics = {"ce": ce.item()}
    total = ce
    if "teacher_ids" in batch and bool(keep.any()):
        if temperature != 1.0:
            log_q = torch.log_softmax(logits_t / temperature, dim=-1)
        div = kd_from_log_probs(
            log_q,
            rows(batch["teacher_ids"]),
            rows(batch["teacher_logprobs"]),
            rows(batch["teacher_leftover"]),
            loss,
            beta,
        )
        kd = div.sum() / n
        metrics["kd"] = kd.item()
        total = (1 - ce_weight) * temperature**2 * kd + ce_weight * ce
    if mtp_logits:
        s = inputs.shape[1]
        depth_losses = []
        for k, lg in enumerate(mtp_logits, start=1):
            tg = targets[:, k:]  # position i predicts token i + k + 1
            if seg is not None:
                tg = tg.masked_fill(seg[:, : s - k] != seg[:, k + 1 :], -100)
            depth_ce = torch.nn.functional.cross_entropy(
                lg.float().flatten(0, 1), tg.flatten(), ignore_index=-100, reduction="sum"
            )
            depth_losses.append(depth_ce / (tg != -100).sum().clamp(min=1))
        mtp_loss = torch.stack(depth_losses).mean()
        metrics["mtp"] = mtp_loss.item()
        total = total + mtp_weight * mtp_loss
    return total, metrics


ObjectiveFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

OBJECTIVES: dict[str, ObjectiveFn] = {
    "pretrain": next_token_and_mtp,
    "sft": masked_next_token,
    "kd": distill,
}


def get_objective(name: str) -> ObjectiveFn:
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}{did_you_mean(name, list(OBJECTIVES))}")
    return OBJECTIVES[name]
