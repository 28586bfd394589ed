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
from typing import NamedTuple

import torch

from k1.errors import ConfigError, did_you_mean
from k1.kernels import _compute_dtype, precomputed_grads


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
    out = model(
        inputs,
        attention_mask=None if mask is None else mask[:, None],
        position_ids=None if positions is None else positions[:, :-1],
        return_mtp=use_mtp,
        labels=targets,
    )
    loss = out["loss"]
    metrics = {"ce": loss.item()}
    if out["mtp_losses"]:
        mtp_loss = torch.stack(out["mtp_losses"]).mean()
        metrics["mtp"] = mtp_loss.item()
        loss = loss + mtp_weight * mtp_loss
    return loss, metrics


class _Packed(NamedTuple):
    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor | None
    positions: torch.Tensor | None
    use_mtp: bool
    mtp_targets: list[torch.Tensor] | None


def _packed_targets(model, batch, mtp_weight: float) -> _Packed:
    """Inputs and next-token targets of a masked (possibly packed) batch: no target crosses from one
    segment into the next, for the next-token head or any MTP depth (position i of depth k predicts
    token i + k + 1)."""
    inputs, targets = _shifted(batch)
    seg = batch.get("segment_ids")
    if seg is not None:
        targets = targets.masked_fill(seg[:, :-1] != seg[:, 1:], -100)
    use_mtp = bool(mtp_weight) and len(getattr(model, "mtp", ())) > 0
    mtp_targets = None
    if use_mtp:
        s = inputs.shape[1]
        mtp_targets = []
        for k in range(1, len(model.mtp) + 1):
            tg = targets[:, k:]
            if seg is not None:
                tg = tg.masked_fill(seg[:, : s - k] != seg[:, k + 1 :], -100)
            mtp_targets.append(tg)
    return _Packed(inputs, targets, _attention_mask(batch, inputs), batch.get("position_ids"), use_mtp, mtp_targets)


def masked_next_token(model, batch, mtp_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """SFT: cross-entropy on the target tokens only (loss_mask), averaged over them, plus the MTP
    losses when mtp_weight > 0. In packed rows no target crosses from one conversation into the
    next, for the next-token head or any MTP depth; a batch without targets gives a zero loss."""
    prepared = _packed_targets(model, batch, mtp_weight)
    metrics = {"target_tokens": float((prepared.targets != -100).sum())}
    return _fused_forward(model, prepared, mtp_weight, metrics), metrics


def _fused_forward(model, prepared: _Packed, mtp_weight: float, metrics: dict[str, float], head_loss=None) -> torch.Tensor:
    """One forward on the fused loss path (the model never materializes the logits): the head's loss
    (cross-entropy, or head_loss) plus mtp_weight x the MTP depths' mean; fills metrics ce / mtp."""
    mask, positions = prepared.mask, prepared.positions
    out = model(
        prepared.inputs,
        attention_mask=None if mask is None else mask[:, None],
        position_ids=None if positions is None else positions[:, :-1],
        return_mtp=prepared.use_mtp,
        labels=prepared.targets,
        mtp_labels=prepared.mtp_targets,
        head_loss=head_loss,
    )
    total = out["loss"]
    metrics.setdefault("ce", total.item())
    if out["mtp_losses"]:
        mtp_loss = torch.stack(out["mtp_losses"]).mean()
        metrics["mtp"] = mtp_loss.item()
        total = total + mtp_weight * mtp_loss
    return total


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


# Rows of the (rows, vocab) fp32 logit block one chunk of linear_kd works on: about 64 MiB of it,
# as kernels.linear_cross_entropy; a small vocabulary (2,048) takes a whole batch in one chunk.
KD_CHUNK_BYTES = 64 << 20


def _kd_chunk_sums(hidden, weight, targets, t_ids, t_logprobs, t_leftover, loss, temperature, beta):
    """(sum of cross-entropy, sum of divergence) over one chunk of target rows, from the student's
    hidden states (rows, h) and output weight (vocab, h): the plain reference, chunk-sized."""
    logits = (hidden @ weight.t()).float()  # (rows, vocab)
    log_q = torch.log_softmax(logits, dim=-1)
    ce = -log_q.gather(-1, targets[:, None]).sum()
    if temperature != 1.0:
        log_q = torch.log_softmax(logits / temperature, dim=-1)
    div = kd_from_log_probs(log_q, t_ids, t_logprobs, t_leftover, loss, beta).sum()
    return ce, div


class _LinearKD(torch.autograd.Function):
    """ce_weight x CE + kd_scale x divergence, both averaged over the rows, from hidden states and the
    output weight, chunk by chunk. Each chunk's logits and log-softmax live only while it is worked:
    the forward pass also takes that chunk's gradients (autograd on the chunk), so backward only
    scales them. Memory O(chunk x vocab) instead of several (rows x vocab) fp32 tensors."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, t_ids, t_logprobs, t_leftover, options):
        loss, temperature, beta, ce_weight, kd_scale, chunk, dtype = options
        n = max(1, hidden.shape[0])
        needs_grad = hidden.requires_grad or weight.requires_grad
        grad_h = torch.zeros_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        w = weight.detach().to(dtype)
        ce_total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        kd_total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            hc = hidden[part].detach().to(dtype).requires_grad_(needs_grad)
            wc = w.requires_grad_(needs_grad)
            with torch.enable_grad():
                ce, div = _kd_chunk_sums(
                    hc,
                    wc,
                    targets[part],
                    t_ids[part],
                    t_logprobs[part],
                    t_leftover[part],
                    loss,
                    temperature,
                    beta,
                )
                part_loss = (ce_weight * ce + kd_scale * div) / n
            if needs_grad:
                g_h, g_w = torch.autograd.grad(part_loss, (hc, wc))
                grad_h[part] = g_h.to(hidden.dtype)
                grad_w += g_w.float()
            ce_total += ce.detach()
            kd_total += div.detach()
        ctx.grads = [grad_h, grad_w.to(weight.dtype)]
        ce_mean, kd_mean = ce_total / n, kd_total / n
        ctx.mark_non_differentiable(ce_mean, kd_mean)
        return ce_weight * ce_mean + kd_scale * kd_mean, ce_mean, kd_mean

    @staticmethod
    def backward(ctx, grad_total, _grad_ce, _grad_kd):
        return (*precomputed_grads(ctx, grad_total), None, None, None, None, None)


def linear_kd(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    teacher_leftover: torch.Tensor,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    ce_weight: float = 0.5,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused output projection + distillation loss over target rows: hidden (rows, h), weight
    (vocab, h), targets (rows,), the teacher's top k (rows, k) and leftover (rows,). Returns
    (loss, mean CE, mean divergence) with loss = ce_weight x CE + (1 - ce_weight) x temperature^2 x
    divergence; only loss carries a gradient. The same numbers as the logits path (kd_divergence on
    hidden @ weight.T) without ever holding more than `chunk` rows of logits: at A.X K1's 163,840-entry
    vocabulary an 8 x 4,096-token batch would otherwise keep about 20 GiB per fp32 copy."""
    get_kd_loss(loss)
    if not chunk:
        chunk = max(64, KD_CHUNK_BYTES // (4 * max(1, weight.shape[0])))
    options = (
        loss,
        temperature,
        beta,
        ce_weight,
        (1 - ce_weight) * temperature**2,
        chunk,
        _compute_dtype(hidden),
    )
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearKD.apply(
            hidden, weight, targets, teacher_ids, teacher_logprobs, teacher_leftover, options
        )


def distill(
    model,
    batch,
    mtp_weight: float = 0.0,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    ce_weight: float = 0.5,
    beta: float = 0.5,
    chunk: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Knowledge distillation: (1 - ce_weight) x temperature^2 x mean divergence from the teacher
    (KD_LOSSES[loss]) + ce_weight x cross-entropy on the real next token, plus the MTP losses on the
    real tokens. temperature^2 keeps gradient sizes comparable across temperatures (Hinton et al.).

    The batch carries the teacher's top k per input position: `teacher_ids`, `teacher_logprobs`
    (batch, seq, k) and `teacher_leftover` (batch, seq). A batch without them (validation) gives the
    plain cross-entropy, comparable with a run trained on hard labels only. `loss_mask` and
    `segment_ids` are honoured as in "sft". The loss is computed inside the model's forward from its
    hidden states (`linear_kd`, `chunk` rows of logits at a time): the logits are never materialized."""
    get_kd_loss(loss)
    prepared = _packed_targets(model, batch, mtp_weight)
    targets = prepared.targets
    keep = (targets != -100).flatten()
    metrics: dict[str, float] = {}
    head_loss = None
    if "teacher_ids" in batch:
        rows = keep.nonzero()[:, 0]  # the target positions; teacher fields are (batch, seq, ...)
        teacher = [
            batch[f].flatten(0, 1)[rows] for f in ("teacher_ids", "teacher_logprobs", "teacher_leftover")
        ]

        def head_loss(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            total, ce, kd = linear_kd(
                hidden[rows],
                weight,
                targets.flatten()[rows],
                *teacher,
                loss,
                temperature,
                beta,
                ce_weight,
                chunk,
            )
            metrics.update(ce=ce.item(), kd=kd.item())
            return total

    return _fused_forward(model, prepared, mtp_weight, metrics, head_loss), metrics


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
