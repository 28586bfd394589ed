"""Fast paths for the model, each beside the plain reference it must agree with.

- `moe_experts`: tokens sorted by expert and run as one grouped matmul per projection
  (`torch.nn.functional.grouped_mm`, forward and backward), instead of a Python loop over experts.
  `moe_experts_reference` is the loop, kept for tests.
- `absorbed_decode`: one decode step of Multi-head Latent Attention computed against the cached
  latent directly. kv_b_proj's key half is folded into the query and its value half into the
  output (DeepSeek-V2 §2.1.2), so the cache is never decompressed into per-head keys and values.
  The reference is the decompressing path in `model.Attention.forward`.

tests/test_kernels.py checks outputs and gradients of each pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Decode steps (one new token) attend in latent space; set False to use the decompressing path.
ABSORBED_DECODE = True

_HAS_GROUPED_MM = hasattr(F, "grouped_mm")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # grouped_mm has no autocast rule: follow autocast by hand, else the activations' dtype.
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def moe_experts_reference(x, idx, weights, gate_up, down):
    """Plain loop over experts. x (tokens, hidden); idx, weights (tokens, k);
    gate_up (experts, 2 * inner, hidden); down (experts, hidden, inner)."""
    out = torch.zeros_like(x)
    for e in idx.unique().tolist():
        token, slot = (idx == e).nonzero(as_tuple=True)
        gate, up = F.linear(x[token], gate_up[e]).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, down[e]) * weights[token, slot, None]
        out.index_add_(0, token, y.to(out.dtype))
    return out


def moe_experts_gathered(x, idx, weights, gate_up, down):
    """Few tokens (a decode step): copy out just the chosen experts' weights and run two batched
    matmuls, rather than visiting every expert group. Same contract as `moe_experts_reference`."""
    n, k = idx.shape
    flat = idx.reshape(-1)
    dtype = _compute_dtype(x)
    xs = x.to(dtype).repeat_interleave(k, dim=0).unsqueeze(-1)  # (tokens * k, hidden, 1)
    h = torch.bmm(gate_up.index_select(0, flat).to(dtype), xs).squeeze(-1)  # (tokens * k, 2 * inner)
    gate, up = h.chunk(2, dim=-1)
    y = torch.bmm(down.index_select(0, flat).to(dtype), (F.silu(gate) * up).unsqueeze(-1)).squeeze(-1)
    return torch.bmm(weights.to(dtype).unsqueeze(1), y.view(n, k, -1)).squeeze(1).to(x.dtype)


def moe_experts(x, idx, weights, gate_up, down):
    """Grouped-matmul MoE: same contract as `moe_experts_reference`."""
    n, k = idx.shape
    if not torch.is_grad_enabled() and 2 * n * k <= gate_up.shape[0]:
        return moe_experts_gathered(x, idx, weights, gate_up, down)  # most experts idle: skip them
    if not _HAS_GROUPED_MM or x.device.type not in ("cpu", "cuda"):
        return moe_experts_reference(x, idx, weights, gate_up, down)
    num_experts = gate_up.shape[0]
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)  # token-slots grouped by expert
    token = order // k
    offsets = torch.bincount(flat, minlength=num_experts).cumsum(0).to(torch.int32)
    dtype = _compute_dtype(x)
    xs = x[token].to(dtype)  # (tokens * k, hidden), expert by expert
    h = F.grouped_mm(xs, gate_up.to(dtype).transpose(1, 2), offs=offsets)  # (tokens * k, 2 * inner)
    gate, up = h.chunk(2, dim=-1)
    y = F.grouped_mm(F.silu(gate) * up, down.to(dtype).transpose(1, 2), offs=offsets)  # (tokens * k, hidden)
    # Back to token order, then a plain weighted sum over each token's k slots: no scatter-add.
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    y = y.index_select(0, inverse).view(n, k, -1)  # (tokens, k, hidden)
    return torch.bmm(weights.to(dtype).unsqueeze(1), y).squeeze(1).to(x.dtype)


def absorbed_decode(attn, q_nope, q_rope, latent, k_rope, mask):
    """One query per sequence against the latent cache.

    q_nope (batch, heads, 1, dn), q_rope (batch, heads, 1, dr), latent (batch, t, r),
    k_rope (batch, t, dr), mask None or bool (batch, 1, 1, t). Returns (batch, 1, heads * dv).
    """
    cfg = attn.cfg
    nh, dn, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim
    w = attn.kv_b_proj.weight.view(nh, dn + dv, cfg.kv_lora_rank)
    w_uk, w_uv = w[:, :dn], w[:, dn:]  # (heads, dn, r), (heads, dv, r)
    q_latent = torch.einsum("bhd,hdr->bhr", q_nope[:, :, 0], w_uk)  # (batch, heads, r)
    scores = torch.bmm(q_latent, latent.transpose(1, 2))  # (batch, heads, t)
    scores = scores + torch.bmm(q_rope[:, :, 0], k_rope.transpose(1, 2))
    scores = scores.float() * attn.scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, 0], float("-inf"))
    probs = scores.softmax(-1).to(latent.dtype)
    context = torch.bmm(probs, latent)  # (batch, heads, r)
    out = torch.einsum("bhr,hvr->bhv", context, w_uv)  # (batch, heads, dv)
    return out.reshape(out.shape[0], 1, nh * dv)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (hidden @ weight.T) against targets, computed chunk by chunk.

    Each chunk's logits live only while that chunk is processed: the forward pass also computes the
    gradients (softmax - one_hot) / n for hidden and weight, so backward only scales them. Memory is
    O(chunk x vocab) instead of several (tokens x vocab) tensors (logits, their fp32 copy, the saved
    log-softmax), for the same arithmetic as the plain path.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, ignore_index: int, dtype):
        n_valid = (targets != ignore_index).sum().clamp(min=1)
        h = hidden.to(dtype)
        w = weight.to(dtype)
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        needs_grad = hidden.requires_grad or weight.requires_grad
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start : start + chunk], targets[start : start + chunk]
            valid = tc != ignore_index
            safe = tc.clamp(min=0)
            # One (chunk, vocab) fp32 buffer, worked in place: logits -> exp -> gradient.
            buf = (hc @ w.t()).float()
            picked = buf.gather(1, safe[:, None])[:, 0]
            top = buf.amax(dim=-1, keepdim=True)
            buf.sub_(top).clamp_(min=-80.0).exp_()  # e^-80 ~ 2e-35: no denormal slow path, no visible change
            norm = buf.sum(dim=-1, keepdim=True)
            lse = (norm.log() + top)[:, 0]
            total += ((lse - picked) * valid).sum()
            if needs_grad:
                # softmax - one_hot, scaled by 1/n for targets and 0 for ignored positions
                row_scale = (valid.float() / n_valid)[:, None]
                buf.mul_(row_scale / norm)
                buf[torch.arange(len(tc), device=buf.device), safe] -= row_scale[:, 0]
                g = buf.to(dtype)
                grad_h[start : start + chunk] = (g @ w).to(hidden.dtype)
                grad_w += (g.t() @ hc).float()
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None, None


def linear_cross_entropy(hidden, weight, targets, chunk: int | None = None, ignore_index: int = -100):
    """Fused output projection + mean cross-entropy. hidden (tokens, h), weight (vocab, h), targets
    (tokens,). Follows autocast for the matmuls; softmax and the loss are fp32. The default chunk
    keeps the (chunk, vocab) fp32 buffer near 256 MB: every chunk converts the weight gradient to
    fp32 once, and on this CPU those conversions cost more than larger, cache-missing softmax
    passes (8 x 512 tokens, 32K vocab: 1.40 s at 256 rows, 0.92 s at 2048)."""
    if chunk is None:
        chunk = max(64, (64 << 20) // max(1, weight.shape[0]))
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, ignore_index, dtype)


def linear_cross_entropy_reference(hidden, weight, targets, ignore_index: int = -100):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=ignore_index)
