"""Fast paths for the model, each beside the plain reference it must agree with.

- `moe_experts`: tokens sorted by expert and run as one grouped matmul per projection
  (`torch.nn.functional.grouped_mm`, forward and backward), instead of a Python loop over experts.
  `moe_experts_reference` is the loop, kept for tests.
- `absorbed_decode`: one decode step of Multi-head Latent Attention computed against the cached
  latent directly. kv_b_proj's key half is folded into the query and its value half into the
  output (DeepSeek-V2 §2.1.2), so the cache is never decompressed into per-head keys and values.
  The reference is the decompressing path in `model.Attention.forward`.

- `linear_cross_entropy`: the output projection and the loss fused chunk by chunk, the logits
  never materialized whole; the reference is `F.linear` + `F.cross_entropy`.
- `rms_norm`: RMSNorm with a hand-written backward (saves the input and one scale per row, four
  passes back instead of autograd's chain of ten); the reference is the plain formula.
- `linear_int8` / `moe_experts_int8`: weight-only int8 inference (one scale per output row);
  decode-sized calls read the int8 weights directly (torch's int8 matrix-vector kernel), larger
  ones dequantize; the reference is the same layer on the dequantized weights.
- `linear_packed` / `moe_dense_packed`: bf16 inference from weights packed once in oneDNN's
  blocked layout (`Transformer.pack_weights`), where a plain weight is re-laid-out inside every
  call; references: `F.linear` and `moe_experts_reference` plus the shared expert
  (tests/test_packed_weights.py).
- Compiled decoding (`Transformer.compile_decode`): under torch.compile, one-row linears become
  a multiply-and-sum (`linear_fused`) and few-token MoE layers index the chosen experts inside
  one (`moe_experts_indexed`), which the compiler turns into loops streaming the weights;
  `moe_experts_dense` runs every expert when most are chosen anyway (eager too). References:
  `F.linear` and `moe_experts_reference`.

- `causal_attention`: in bf16 training below 768 tokens, SDPA's flash forward and a
  backward of bf16 batched matmuls whose scores are computed as an exact bf16 pair; the
  references are flash's backward and fp32 autograd (tests/test_attention_backward.py).

tests/test_kernels.py checks outputs and gradients of each pair.
"""

from __future__ import annotations

import functools
import math
import shutil
import threading
import warnings

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Decode steps (one new token) attend in latent space; set False to use the decompressing path.
ABSORBED_DECODE = True

_HAS_GROUPED_MM = hasattr(F, "grouped_mm")


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # grouped_mm has no autocast rule: follow autocast by hand, else the activations' dtype.
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalize in fp32 (bf16 squares overflow their precision), scale in the input dtype: the
    # released model's (and transformers') order of operations.
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, rstd, weight)
        return weight * (x32 * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        # y = w * x * r with r = (mean(x^2) + eps)^-1/2 per row, so
        #   dx = r * g * w - x * r^3 / H * sum(g * w * x),   dw = sum over rows of g * x * r.
        # Both sums come from one product t = g * x (two matrix-vector products read it): five
        # passes over the activations where the formula as written takes ten.
        x, rstd, weight = ctx.saved_tensors
        width = x.shape[-1]
        x32, g32, w32 = x.reshape(-1, width).float(), grad.reshape(-1, width).float(), weight.float()
        rstd = rstd.reshape(-1, 1)
        t = g32 * x32
        grad_w = torch.mv(t.t(), rstd[:, 0]).to(weight.dtype) if ctx.needs_input_grad[1] else None
        coef = (rstd**3).mul_(torch.mv(t, w32)[:, None]).div_(width)
        grad_x = torch.mul(g32, w32).mul_(rstd).addcmul_(x32, coef, value=-1)
        return grad_x.to(x.dtype).view(x.shape), grad_w, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as `rms_norm_reference` computes it, with a fused backward."""
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return rms_norm_reference(x, weight, eps)  # no backward to serve: skip the Function's overhead
    return _RMSNorm.apply(x, weight, eps)


# Rows up to which an inference matmul runs as weight @ x.T (see `linear`).
SMALL_ROWS = 16
# Above this (one expert's gate/up weight), visiting the chosen experts one by one beats
# copying them out or running every expert's group: reading the weights outweighs the calls.
_LARGE_EXPERT_BYTES = 256 << 10


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with a fast path for decode-sized inputs in inference.

    For a handful of rows, oneDNN's bf16 x @ W.T on this CPU runs at a fraction of memory speed;
    the same product as a matrix-vector (one row) or as W @ x.T (a few rows) takes another kernel
    that streams the weight once, 1.5-3x faster. Training, autocast and other shapes take F.linear.
    Under torch.compile (decode steps), one row takes `linear_fused` and more rows F.linear: the
    compiler fuses the first, and miscompiled a reduction fed by the transposed `W @ x.T`.
    """
    rows = x.numel() // max(1, x.shape[-1])
    if torch.compiler.is_compiling() and not torch.is_grad_enabled():
        if rows == 1 and weight.numel() <= FUSED_LINEAR_MAX:
            return linear_fused(x, weight, bias)
        return F.linear(x, weight, bias)
    if (
        rows > SMALL_ROWS
        or rows == 0
        or x.dtype != weight.dtype
        or x.device.type != "cpu"
        or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        or torch.is_autocast_enabled("cpu")
    ):
        return F.linear(x, weight, bias)
    if rows == 1:  # the fewest calls: a decode step makes hundreds of these
        y = torch.mv(weight, x.reshape(-1))
    else:
        y = (weight @ x.reshape(rows, x.shape[-1]).t()).t().contiguous()
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], weight.shape[0])


# Weights up to this many elements take `linear_fused` under torch.compile; larger ones (an output
# head) stream from memory at the same speed through torch's own kernels, and stay out of the
# compiler's fusions (which would recompute the head's normed input per output row).
FUSED_LINEAR_MAX = 1 << 22


def linear_fused(x, weight, bias=None, scale=None):
    """x @ weight.T for one row, written as a multiply-and-sum: torch.compile makes it one loop that
    streams the weight at memory speed (bf16 or int8, the row scales applied after the sum), where
    torch's bf16 matrix-vector kernel is bound by its conversions at about half that."""
    y = (x.float()[..., None, :] * weight.float()).sum(-1)
    if scale is not None:
        y = y * scale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


# ------------------------------------------------------------ packed weights (bf16 CPU inference)
#
# oneDNN multiplies bf16 on this CPU's AMX units from a blocked copy of the weight. Handed a plain
# (out, in) weight, it makes that copy inside every call: for the few rows of a decode step the
# copy costs more than the product (8-row products stream weights from memory at about 12 GB/s
# through F.linear, 16-22 GB/s packed). `Transformer.pack_weights` makes the copies once, for
# inference.


def can_pack(weight: torch.Tensor) -> bool:
    """Whether oneDNN's packed bf16 linear serves this weight here (a bf16 CPU tensor, a oneDNN
    build with bf16 support)."""
    return (weight.device.type == "cpu" and weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """weight (out, in) -> the same weight in oneDNN's blocked layout (an opaque tensor for
    `linear_packed`). A copy: the model keeps its own weight for training, saving and prompts."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())


def packed_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A packed weight serves inference calls only: no gradient to compute, no autocast, x in the
    weight's dtype on the CPU."""
    return (x.dtype == weight.dtype and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def _linear_packed_impl(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, None, "none", [], "")


def _linear_packed_shape(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    return x.new_empty(x.shape[0], out_features)


# An operator of our own for compiled graphs where inductor cannot call oneDNN's packed linear
# itself (`_let_inductor_call_packed`), registered with the dispatcher directly: a decode step calls
# it some fifty times, and torch.library.custom_op's Python wrapping would add 10 us a call.
_LIBRARY = torch.library.Library("k1", "FRAGMENT")
if not hasattr(torch.ops.k1, "linear_packed"):
    _LIBRARY.define("linear_packed(Tensor x, Tensor packed, int out_features) -> Tensor")
    for _key in ("CPU", "MkldnnCPU"):  # the packed weight is a oneDNN tensor, x a plain one
        _LIBRARY.impl("linear_packed", _linear_packed_impl, _key)
    torch.library.register_fake("k1::linear_packed", _linear_packed_shape, lib=_LIBRARY)


# Whether compiled graphs may call oneDNN's packed linear directly (`_let_inductor_call_packed`).
_packed_in_graphs = False


def _let_inductor_call_packed() -> bool:
    """Let compiled graphs call oneDNN's packed linear (`mkldnn._linear_pointwise`) on a packed
    weight that is a graph input: inductor's own rule for that operator accepts only weights it
    packed itself as constants (freezing) and fails on ours. Wrapped here: a weight of inductor's
    making still gets inductor's rule, any other becomes a plain call of the operator. The graph's
    C++ code then calls oneDNN with no Python in between, where the `k1::linear_packed` custom
    op costs some 10 us a call in Python (a decode step makes about fifty: 6-12% of a batch-8
    step at `small`). This uses inductor internals; if they are not there, graphs keep the
    custom op."""
    global _packed_in_graphs
    if _packed_in_graphs:
        return True
    try:
        from torch._inductor import lowering
        from torch._inductor.virtualized import V

        op = torch.ops.mkldnn._linear_pointwise.default
        own_rule = lowering.lowerings[op]
        plain_call = lowering.fallback_handler(op, add_to_fallback_set=False)
    except (ImportError, AttributeError, KeyError, RuntimeError):
        return False

    def rule(x, w, *args, **kwargs):
        try:
            constant = w.get_name() in V.graph.constants
        except (AttributeError, NotImplementedError):
            constant = False
        if constant:
            return own_rule(x, w, *args, **kwargs)
        kwargs.pop("layout", None)
        return plain_call(x, w, *args, **kwargs)

    lowering.lowerings[op] = rule
    _packed_in_graphs = True
    return True


def linear_packed(x: torch.Tensor, packed: torch.Tensor, out_features: int,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W.T + bias with W packed by `pack_weight`. Eager calls and compiled graphs go to oneDNN
    directly (see `_let_inductor_call_packed`); compiled graphs fall back to a custom op where
    inductor's internals differ."""
    flat = x.reshape(-1, x.shape[-1])
    if torch.compiler.is_compiling() and not _packed_in_graphs:
        y = torch.ops.k1.linear_packed(flat, packed, out_features)
    else:
        y = _linear_packed_impl(flat, packed, out_features)
    y = y.view(*x.shape[:-1], out_features)
    return y if bias is None else y + bias


def pack_moe(gate_up, down, shared_gate, shared_up, shared_down) -> tuple[torch.Tensor, torch.Tensor]:
    """A MoE layer's routed experts (E, 2 * inner, hidden), (E, hidden, inner) and shared expert
    (inner_s, hidden) x 2, (hidden, inner_s) packed as two plain linears for `moe_dense_packed`:
    every expert's gate and up rows stacked, then the shared expert's; every down projection side
    by side along the input, (hidden, E * inner + inner_s)."""
    E, hidden, inner = down.shape
    rows = torch.cat((gate_up.detach().reshape(-1, hidden), shared_gate.detach(), shared_up.detach()))
    cols = torch.cat((down.detach().permute(1, 0, 2).reshape(hidden, E * inner), shared_down.detach()), dim=1)
    return pack_weight(rows), pack_weight(cols)


def moe_dense_packed(x, idx, weights, packed_up, packed_down, num_experts: int, inner: int, shared_inner: int):
    """A MoE layer's routed and shared experts (their sum, before the post-MoE norm) for a few
    tokens that choose most experts, on weights packed by `pack_moe`: every expert on every token,
    the unchosen ones weighted zero (as `moe_experts_dense`), in two products in all. The routing
    weights scale each expert's activations before the down projection (the same sum, since it is
    linear), so all down projections, the shared one included, are one product."""
    n, hidden = x.shape
    routed = num_experts * 2 * inner
    h = linear_packed(x, packed_up, routed + 2 * shared_inner)
    up = h[:, :routed].view(n, num_experts, 2, inner)
    dense = torch.zeros(n, num_experts, dtype=x.dtype, device=x.device).scatter(1, idx, weights.to(x.dtype))
    act = F.silu(up[:, :, 0]) * up[:, :, 1] * dense[:, :, None]  # (tokens, experts, inner)
    shared_gate, shared_up = h[:, routed:].chunk(2, dim=-1)
    act = torch.cat((act.reshape(n, num_experts * inner), F.silu(shared_gate) * shared_up), dim=-1)
    return linear_packed(act, packed_down, hidden)


def moe_experts_indexed(x, idx, weights, gate_up, down, gate_up_scale=None, down_scale=None):
    """The chosen experts' weights indexed inside a multiply-and-sum: under torch.compile one loop
    per projection reads each chosen expert in place, with no copy, no sort and no per-expert
    call (and no data-dependent shapes to break the graph). Same contract as
    `moe_experts_reference`; with int8 experts, their row scales."""
    h = (x.float()[:, None, None, :] * gate_up[idx].float()).sum(-1)  # (tokens, k, 2 * inner)
    if gate_up_scale is not None:
        h = h * gate_up_scale[idx].float()
    gate, up = h.chunk(2, dim=-1)
    y = ((F.silu(gate) * up)[:, :, None, :] * down[idx].float()).sum(-1)  # (tokens, k, hidden)
    if down_scale is not None:
        y = y * down_scale[idx].float()
    return (y * weights.float()[..., None]).sum(1).to(x.dtype)


def moe_experts_dense(x, idx, weights, gate_up, down):
    """Every expert on every token, the unchosen ones weighted zero: when a batch's tokens choose
    most experts anyway (tokens * k >= experts), each expert's weights are read once either way,
    and two batched matmuls beat a loop over experts, with shapes that do not depend on the
    routing (torch.compile keeps it in one graph). Same contract as `moe_experts_reference`."""
    dtype = _compute_dtype(x)
    E, n = gate_up.shape[0], x.shape[0]
    # Weights on the left, tokens as the columns: each expert's matrix streams once (as W @ x.T,
    # the fastest form of a few-column product here).
    h = (gate_up.to(dtype).reshape(-1, x.shape[-1]) @ x.to(dtype).t()).view(E, -1, n)  # (experts, 2 * inner, tokens)
    gate, up = h.chunk(2, dim=1)
    y = torch.bmm(down.to(dtype), F.silu(gate) * up)  # (experts, hidden, tokens)
    dense = torch.zeros(n, E, dtype=dtype, device=x.device).scatter(1, idx, weights.to(dtype))
    return torch.bmm(y.permute(2, 1, 0), dense[:, :, None]).squeeze(-1).to(x.dtype)


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


def moe_experts_copied(x, idx, weights, gate_up, down):
    """Few tokens and small experts: copy out the chosen experts' weights and run two batched
    matmuls (one call each, where visiting experts one by one would cost more in calls than the
    weights cost to copy). Same contract as `moe_experts_reference`."""
    n, k = idx.shape
    flat = idx.reshape(-1)
    dtype = _compute_dtype(x)
    xs = x.to(dtype).repeat_interleave(k, dim=0).unsqueeze(-1)  # (tokens * k, hidden, 1)
    h = torch.bmm(gate_up.index_select(0, flat).to(dtype), xs).squeeze(-1)  # (tokens * k, 2 * inner)
    gate, up = h.chunk(2, dim=-1)
    y = torch.bmm(down.index_select(0, flat).to(dtype), (F.silu(gate) * up).unsqueeze(-1)).squeeze(-1)
    return torch.bmm(weights.to(dtype).unsqueeze(1), y.view(n, k, -1)).squeeze(1).to(x.dtype)


def moe_experts_gathered(x, idx, weights, gate_up, down):
    """Few tokens (a decode step): visit only the experts chosen, each on its own rows through
    `linear`, reading the expert's weights in place (no copy of them, no idle expert's group).
    Same contract as `moe_experts_reference`."""
    dtype = _compute_dtype(x)

    def expert(e, rows):
        gate, up = linear(rows, gate_up[e].to(dtype)).chunk(2, dim=-1)
        return linear(F.silu(gate) * up, down[e].to(dtype))

    return _visit_experts(x.to(dtype), idx, weights, gate_up.shape[0], expert).to(x.dtype)


def _visit_experts(x, idx, weights, num_experts: int, expert) -> torch.Tensor:
    """Rows grouped by chosen expert; `expert(e, rows)` computes expert e's output on its rows;
    the results weighted and summed back per token."""
    n, k = idx.shape
    if n == 1:  # one token (batch-1 decoding): its k experts in turn, no grouping to do
        out = None
        for e, w in zip(idx[0].tolist(), weights[0].tolist(), strict=True):
            y = expert(e, x)
            out = y.mul_(w) if out is None else out.add_(y, alpha=w)
        return out
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=num_experts).tolist()
    token = order // k
    xs = x[token]
    parts, start = [], 0
    for e, count in enumerate(counts):
        if count:
            parts.append(expert(e, xs[start : start + count]))
            start += count
    y = torch.cat(parts) * weights.reshape(-1)[order, None].to(x.dtype)
    out = torch.zeros(n, x.shape[-1], dtype=x.dtype, device=x.device)
    return out.index_add_(0, token, y)


# ------------------------------------------------------------------ weight-only int8 inference

# Rows up to which an int8 layer multiplies by its int8 weights directly. torch's int8 kernel
# streams the weights once per row: at a decode step's few rows it reads half the bytes of bf16;
# at a prompt's hundreds of rows, dequantizing once and one bf16 matmul is far faster.
INT8_DIRECT_ROWS = SMALL_ROWS


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row: weight (..., out, in) -> int8 values of the
    same shape and fp32 scales (..., out), weight ~ values * scales[..., None]."""
    flat = weight.detach().reshape(-1, weight.shape[-1])
    values = torch.empty(flat.shape, dtype=torch.int8, device=weight.device)
    scale = torch.empty(flat.shape[0], dtype=torch.float32, device=weight.device)
    # A few thousand rows at a time: an fp32 copy of a whole expert stack of the released model
    # would be tens of GB.
    for start in range(0, flat.shape[0], 4096):
        rows = flat[start : start + 4096].float()
        s = rows.abs().amax(dim=-1).clamp(min=1e-12) / 127.0
        values[start : start + 4096] = torch.round(rows / s[:, None]).clamp_(-127, 127)
        scale[start : start + 4096] = s
    return values.view(weight.shape), scale.view(weight.shape[:-1])


def dequantize_int8(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return values.to(dtype) * scale[..., None].to(dtype)


def _int8_direct(x: torch.Tensor, rows: int) -> bool:
    return (rows <= INT8_DIRECT_ROWS and x.device.type == "cpu"
            and x.dtype in (torch.bfloat16, torch.float16, torch.float32))


def linear_int8(x: torch.Tensor, values: torch.Tensor, scale: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, dequantize_int8(values, scale), bias) for an int8 layer (inference only)."""
    rows = x.numel() // max(1, x.shape[-1])
    if torch.compiler.is_compiling() and rows == 1 and values.numel() <= FUSED_LINEAR_MAX:
        return linear_fused(x, values, bias, scale)
    if not _int8_direct(x, rows) or rows == 0:
        return F.linear(x, dequantize_int8(values, scale, x.dtype), bias)
    flat = x.reshape(rows, x.shape[-1]).contiguous()
    y = torch.ops.aten._weight_int8pack_mm(flat, values, scale if scale.dtype == x.dtype else scale.to(x.dtype))
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], values.shape[0])


def moe_experts_int8(x, idx, weights, gate_up, gate_up_scale, down, down_scale):
    """`moe_experts` for int8 experts (values and per-row scales of gate_up and down)."""
    n = idx.shape[0]
    if torch.compiler.is_compiling() and n <= SMALL_ROWS:
        return moe_experts_indexed(x, idx, weights, gate_up, down, gate_up_scale, down_scale)
    if not _int8_direct(x, n):  # a prompt: dequantize once, then the grouped matmuls
        return moe_experts(x, idx, weights, dequantize_int8(gate_up, gate_up_scale, x.dtype),
                           dequantize_int8(down, down_scale, x.dtype))

    def expert(e, rows):
        gate, up = linear_int8(rows, gate_up[e], gate_up_scale[e]).chunk(2, dim=-1)
        return linear_int8(F.silu(gate) * up, down[e], down_scale[e])

    return _visit_experts(x, idx, weights, gate_up.shape[0], expert)


def runs_all_experts(tokens: int, k: int, num_experts: int) -> bool:
    """Whether a few tokens choose most experts anyway (tokens * k >= experts), so that inference
    runs every expert on every token (`moe_experts_dense`, `moe_dense_packed`)."""
    return not torch.is_grad_enabled() and tokens <= SMALL_ROWS and tokens * k >= num_experts


def moe_experts(x, idx, weights, gate_up, down):
    """Grouped-matmul MoE: same contract as `moe_experts_reference`."""
    n, k = idx.shape
    if runs_all_experts(n, k, gate_up.shape[0]):
        return moe_experts_dense(x, idx, weights, gate_up, down)  # most experts chosen anyway
    if torch.compiler.is_compiling() and not torch.is_grad_enabled() and n <= SMALL_ROWS:
        return moe_experts_indexed(x, idx, weights, gate_up, down)
    if not torch.is_grad_enabled() and n <= SMALL_ROWS:  # decode-sized: few rows per expert
        if gate_up[0].numel() * gate_up.element_size() >= _LARGE_EXPERT_BYTES:
            return moe_experts_gathered(x, idx, weights, gate_up, down)
        if 2 * n * k <= gate_up.shape[0]:
            return moe_experts_copied(x, idx, weights, gate_up, down)
    if not _HAS_GROUPED_MM or x.device.type not in ("cpu", "cuda"):
        return moe_experts_reference(x, idx, weights, gate_up, down)
    num_experts = gate_up.shape[0]
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)  # token-slots grouped by expert
    counts = torch.bincount(flat, minlength=num_experts)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    block = _group_block(n * k, num_experts) if x.device.type == "cpu" else 1
    if block > 1:
        # Each expert's group padded with zero rows to a multiple of `block`: the per-group
        # products then come in a handful of shapes that oneDNN has compiled already, where
        # groups of any size made it generate new kernels every step (3x slower forward and
        # backward). Padding rows get zero gradients and add nothing to the weights' gradients.
        padded = (counts + block - 1) // block * block
        shift = (padded.cumsum(0) - padded) - (counts.cumsum(0) - counts)  # each group's start moves by this
        pos = inverse + shift[flat]
        offsets = padded.cumsum(0).to(torch.int32)
        # Under torch.compile the row count may not depend on the routing: each count was a new
        # graph, and dynamo's limit of eight was reached within a few training steps (then that
        # code ran eagerly). The most the padding can add instead: rows past the last group are
        # zeros that the grouped matmuls skip and nothing reads back.
        rows = n * k + num_experts * (block - 1) if torch.compiler.is_compiling() else int(offsets[-1])
    else:
        pos, offsets, rows = inverse, counts.cumsum(0).to(torch.int32), n * k
    dtype = _compute_dtype(x)
    xs = _GatherSlots.apply(x.to(dtype), pos, rows, k)  # (rows, hidden), expert by expert
    swiglu = _grouped_swiglu_outside_graphs if torch.compiler.is_compiling() and _grouped_swiglu_outside_graphs \
        else _grouped_swiglu
    y = swiglu(xs, gate_up.to(dtype), down.to(dtype), offsets)  # (rows, hidden)
    # Back to token order as a weighted sum over each token's k slots: no scatter-add.
    return _CombineSlots.apply(weights.to(dtype), y, pos).to(x.dtype)


def _grouped_swiglu(xs, gate_up, down, offsets):
    h = F.grouped_mm(xs, gate_up.transpose(1, 2), offs=offsets)  # (rows, 2 * inner)
    return F.grouped_mm(_SwiGLU.apply(h), down.transpose(1, 2), offs=offsets)


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up for h = [gate | up]. The backward writes h's gradient over h itself (which
    nothing needs after this): autograd's own wrote the two halves' gradients into fresh tensors
    and joined them into a third, some 36 MB of new memory a layer at `small`, every page faulted
    in afresh. It does the same arithmetic in the same dtype, so the gradients are the same."""

    @staticmethod
    def forward(ctx, h):
        ctx.save_for_backward(h)
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        if getattr(ctx, "spent", False):  # h holds its gradient now, no longer h
            raise RuntimeError("the experts' SwiGLU supports one backward pass per forward (no retain_graph)")
        ctx.spent = True
        (h,) = ctx.saved_tensors
        gate, up = h.chunk(2, dim=-1)
        silu = F.silu(gate)
        grad_silu = grad * up
        torch.mul(grad, silu, out=up)  # up's gradient, where up was
        torch.ops.aten.silu_backward(grad_silu, gate, grad_input=gate)  # gate's, where gate was
        return h


_grouped_swiglu_outside_graphs = None


def prepare_compile() -> None:
    """Called when a model is set to run through torch.compile (`Transformer.compile_blocks`,
    `compile_decode`): from then on the grouped expert matmuls run outside the compiler's graphs
    (the compiler's shape rule for grouped_mm accepts bf16 only, so fp32 failed), and graphs call
    packed weights directly. Made here, not at import: torch.compiler.disable and inductor's
    modules load the compiler, a second added to every import."""
    global _grouped_swiglu_outside_graphs
    if _grouped_swiglu_outside_graphs is None:
        _grouped_swiglu_outside_graphs = torch.compiler.disable(_grouped_swiglu)
    _let_inductor_call_packed()


def _group_block(slots: int, experts: int) -> int:
    """Rows each expert's group is padded to a multiple of: 64 (the size oneDNN's kernels like best
    here) when the padding adds at most about an eighth to the rows, less for fewer rows per expert."""
    for block in (64, 32, 16, 8):
        if slots >= 4 * block * experts:
            return block
    return 1


class _GatherSlots(torch.autograd.Function):
    """The rows of x laid out slot by slot for the grouped matmuls: slot f (token f // k's choice
    f % k) lands at row pos[f] of a (rows, hidden) tensor whose other rows are zeros (padding).
    Autograd's own backward for that indexing would be a scatter-add with duplicate indices;
    knowing the layout, it is a gather of each slot's row and a sum over each token's k slots."""

    @staticmethod
    def forward(ctx, x, pos, rows, k):
        ctx.save_for_backward(pos)
        ctx.k = k
        n = x.shape[0]
        source = torch.full((rows,), n, dtype=pos.dtype, device=pos.device)  # row n: zeros (padding)
        source[pos] = torch.arange(n * k, device=pos.device) // k
        if rows > n * k:
            x = torch.cat((x, x.new_zeros(1, x.shape[1])))
        return x.index_select(0, source)

    @staticmethod
    def backward(ctx, grad):
        (pos,) = ctx.saved_tensors
        return grad.index_select(0, pos).view(-1, ctx.k, grad.shape[-1]).sum(1), None, None, None


class _CombineSlots(torch.autograd.Function):
    """sum_j w[t, j] * y[pos[t * k + j]] for each token t: w (tokens, k), y (rows, hidden), pos
    distinct rows of y. It saves y itself for the backward, not the (tokens, k, hidden) rows it
    took: under the compiler the gathers then fuse into the sum and into w's gradient, where
    saving them wrote (and faulted in) another tensor the size of y per layer and step.
    Autograd's own backward would be a batch of rank-1 matmuls (inner size 1) for y's rows and a
    scatter-add for the gather; y's gradient is a broadcast multiply copied to its rows."""

    @staticmethod
    def forward(ctx, w, y, pos):
        ctx.save_for_backward(w, y, pos)
        n, k = w.shape
        return torch.bmm(w.unsqueeze(1), y.index_select(0, pos).view(n, k, -1)).squeeze(1)

    @staticmethod
    def backward(ctx, grad):
        w, y, pos = ctx.saved_tensors
        n, k = w.shape
        grad_w = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_w = torch.bmm(y.index_select(0, pos).view(n, k, -1), grad.unsqueeze(-1)).squeeze(-1)
        if ctx.needs_input_grad[1]:
            rows = (w.unsqueeze(-1) * grad.unsqueeze(1)).view(n * k, -1)
            if y.shape[0] == pos.numel():  # a permutation: every row is written
                grad_y = torch.empty_like(y)
            else:  # padding rows get zeros
                grad_y = y.new_zeros(y.shape)
            grad_y.index_copy_(0, pos, rows)
        return grad_w, grad_y, None


# ------------------------------------------------------- causal attention's backward (training)

# Sequences below this take the backward below. Its work is the whole (seq x seq) square, and from
# 768 tokens flash's backward takes 256-query blocks and runs as fast or faster (at `small`'s
# widths: 640 tokens 41 against 58 ms, 768: 50 against 48, 1024: 75 against 57).
ATTENTION_BACKWARD_SEQ_BELOW = 768
# bf16 bytes of one (heads x seq x seq) score chunk: a few MB, so a chunk's passes stay in cache.
_ATTENTION_CHUNK_BYTES = 4 << 20


def attention_backward_applies(q: torch.Tensor, mask) -> bool:
    """Whether a training forward takes `causal_attention`: causal (no mask), bf16 on the CPU,
    with gradients, fewer than ATTENTION_BACKWARD_SEQ_BELOW tokens, and torch.compile able to build
    the backward's pointwise pass (a C++ compiler here, and no earlier failure). Eager training
    takes it from ATTENTION_BACKWARD_EAGER_MIN_SCORES up: below, the seconds of compiling the pass
    are more than short runs (the demo, tests) save."""
    return (mask is None and q.device.type == "cpu" and _attention_dtype(q) == torch.bfloat16 and q.requires_grad
            and 1 < q.shape[-2] < ATTENTION_BACKWARD_SEQ_BELOW and _pointwise_compiles(q))


# (batch x heads x seq x seq) scores of one layer from which eager training takes the backward:
# `small` at 8 x 512 has 16.8M, the demo's tiny model at most 4.2M.
ATTENTION_BACKWARD_EAGER_MIN_SCORES = 1 << 23
_pointwise_failed = False


def _pointwise_compiles(q: torch.Tensor) -> bool:
    if _pointwise_failed:
        return False
    if torch.compiler.is_compiling():
        return True
    b, h, s, _ = q.shape
    return b * h * s * s >= ATTENTION_BACKWARD_EAGER_MIN_SCORES and _has_cpp_compiler()


@functools.cache
def _has_cpp_compiler() -> bool:
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


def _attention_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype SDPA would compute q in: autocast's, when it is on."""
    if q.dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
        return torch.get_autocast_dtype("cpu")
    return q.dtype


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, v_width: int) -> torch.Tensor:
    """Causal attention, q/k/v (batch, heads, seq, width) with v zero-padded to q's width from
    `v_width` columns: SDPA's flash kernel forward, `_causal_attention_backward` back."""
    dtype = _attention_dtype(q)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    return torch.ops.k1.causal_attention(q, k, v, scale, v_width)[0]


def _flash_forward(q, k, v, scale: float, v_width: int):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)


def _attention_pointwise(sh, sl, dd, lse, ddelta, bias, scale: float):
    """One fused pass over a chunk's (heads, seq, seq) scores: probabilities P into `sl`, score
    gradients dS = P * (dP - delta) * scale into `dd`. The score is sh + sl (its bf16 rounding
    and the remainder), dd holds dP - delta rounded to bf16, ddelta the remainder's fp32 part."""
    p = torch.exp((sh.float() + sl.float()) * scale + bias - lse[..., None])
    sl.copy_(p)
    dd.copy_(p * (dd.float() + ddelta[..., None]) * scale)


_attention_pointwise_compiled = None


def _causal_bias(s: int, device: torch.device) -> torch.Tensor:
    """(s, s) fp32: 0 on and below the diagonal, -inf above; kept per thread and length."""
    key = ("attn_causal_bias", s, device)
    bias = _workspaces.__dict__.get(key)
    if bias is None:
        bias = _workspaces.__dict__[key] = torch.full((s, s), float("-inf"), device=device).triu(1)
    return bias


def _causal_attention_backward(dout, q, k, v, out, lse, scale: float, v_width: int):
    """Gradients of causal attention from bf16 batched matmuls (AMX here), chunk by chunk of heads.

    The precision problem of bf16 products is their rounded output: a score of 20 lands within
    0.06 of itself, which exp turns into 6% of its probability. So the scores are computed twice,
    S_hi = bf16(q k^T) and S_lo = bf16(q k^T - S_hi) (the second product subtracts S_hi in its
    fp32 accumulator), and S_hi + S_lo is the fp32 score to about 2^-16 of itself; dP - delta
    comes out of one product that subtracts the row's delta in its accumulator, rounded relative
    to what remains. Gradients stay within flash's own error of fp32 attention (tests). The
    square is computed whole and its masked half set to zero: at 512 tokens, some 30 ms a layer
    at `small` against flash's 52 (its backward takes 64-query blocks below 768 tokens and
    computes every key block)."""
    global _attention_pointwise_compiled, _pointwise_failed
    if _attention_pointwise_compiled is None:
        # a fixed shape per training run; shapes that differ (MTP's one token fewer, tests) are
        # compiled once more as a generic kernel
        _attention_pointwise_compiled = torch.compile(_attention_pointwise)
    b, h, s, dk = q.shape
    n = b * h
    q3, k3 = q.reshape(n, s, dk), k.reshape(n, s, dk)
    v3, do3 = v[..., :v_width].reshape(n, s, v_width), dout[..., :v_width].reshape(n, s, v_width)
    delta = (do3.float() * out[..., :v_width].reshape(n, s, v_width).float()).sum(-1)
    delta_b = delta.to(q.dtype)
    ddelta = delta_b.float() - delta
    lse_rows = lse.reshape(n, s)
    bias = _causal_bias(s, q.device)
    # heads per chunk: the largest divisor of n within the budget (one compiled shape for all)
    most = max(1, _ATTENTION_CHUNK_BYTES // (2 * s * s))
    m = max(d for d in range(1, min(n, most) + 1) if n % d == 0)
    dq, dk_ = torch.empty_like(q3), torch.empty_like(k3)
    dv = torch.zeros(b, h, s, v.shape[-1], dtype=v.dtype, device=v.device)
    dv3 = torch.empty(n, s, v_width, dtype=v.dtype, device=v.device)
    sh = _workspace("attn_s_hi", (m, s, s), q.dtype, q.device)
    sl = _workspace("attn_s_lo", (m, s, s), q.dtype, q.device)
    dd = _workspace("attn_dp", (m, s, s), q.dtype, q.device)
    for c0 in range(0, n, m):
        c = slice(c0, c0 + m)
        kt = k3[c].transpose(1, 2)
        torch.bmm(q3[c], kt, out=sh)
        torch.baddbmm(sh, q3[c], kt, beta=-1, out=sl)
        torch.baddbmm(delta_b[c, :, None], do3[c], v3[c].transpose(1, 2), beta=-1, out=dd)
        try:
            _attention_pointwise_compiled(sh, sl, dd, lse_rows[c], ddelta[c], bias, scale)
        except Exception as e:  # the compiler failed: flash's backward from now on (nothing written yet)
            if c0:
                raise
            _pointwise_failed = True
            warnings.warn(f"attention's backward falls back to SDPA's flash kernel: compiling its pointwise "
                          f"pass failed ({type(e).__name__}: {e})", stacklevel=2)
            return _flash_backward(dout, q, k, v, out, lse, scale, v_width)
        torch.bmm(sl.transpose(1, 2), do3[c], out=dv3[c])
        torch.bmm(dd, k3[c], out=dq[c])
        torch.bmm(dd.transpose(1, 2), q3[c], out=dk_[c])
    dv[..., :v_width] = dv3.view(b, h, s, v_width)
    return dq.view(b, h, s, dk), dk_.view(b, h, s, dk), dv


def _flash_backward(dout, q, k, v, out, lse, scale: float, v_width: int):
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        dout, q, k, v, out, lse, 0.0, True, scale=scale)
    dv[..., v_width:] = 0
    return dq.contiguous(), dk.contiguous(), dv.contiguous()


def _register_causal_attention() -> None:
    op = torch.library.custom_op("k1::causal_attention", mutates_args=())(_flash_forward_op)
    op.register_fake(_flash_forward)
    bwd = torch.library.custom_op("k1::causal_attention_backward", mutates_args=())(_backward_op)
    bwd.register_fake(_backward_shapes)

    def setup(ctx, inputs, output):
        q, k, v, scale, v_width = inputs
        ctx.save_for_backward(q, k, v, *output)
        ctx.scale, ctx.v_width = scale, v_width

    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.k1.causal_attention_backward(dout, q, k, v, out, lse, ctx.scale, ctx.v_width)
        return dq, dk, dv, None, None

    op.register_autograd(backward, setup_context=setup)


def _flash_forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                      v_width: int) -> tuple[torch.Tensor, torch.Tensor]:
    return _flash_forward(q, k, v, scale, v_width)


def _backward_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                 lse: torch.Tensor, scale: float, v_width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _causal_attention_backward(dout, q, k, v, out, lse, scale, v_width)


def _backward_shapes(dout, q, k, v, out, lse, scale: float, v_width: int):
    b, h, s, _ = q.shape
    return (q.new_empty(b, h, s, q.shape[-1]), k.new_empty(b, h, s, k.shape[-1]),
            v.new_empty(b, h, s, v.shape[-1]))


_register_causal_attention()


def absorbed_decode(attn, q_nope, q_rope, latent, k_rope, mask):
    """One query per sequence against the latent cache.

    q_nope (batch, heads, 1, dn), q_rope (batch, heads, 1, dr), latent (batch, t, r),
    k_rope (batch, t, dr), mask None or bool (batch, 1, 1, t). Returns (batch, 1, heads * dv).

    On a CPU the products run in fp32 whatever the cache's dtype: these are matmuls of a few rows,
    where a bf16 call costs some 20 microseconds of fixed overhead here and an fp32 one a few
    (four calls per layer per step), more than the conversion of the cache rows they read.
    """
    nh, dv = attn.cfg.num_attention_heads, attn.cfg.v_head_dim
    dtype = latent.dtype
    compute = torch.float32 if latent.device.type == "cpu" else dtype
    w_uk, w_uv_t = _absorbed_weights(attn, compute)  # (heads, dn, r), (heads, r, dv)
    latent, k_rope = latent.to(compute), k_rope.to(compute)
    # Head-batched matmuls with the batch in the middle: (heads, batch, dn) @ (heads, dn, r).
    # (einsum would do the same through several more calls, and a decode step is mostly calls.)
    q_latent = torch.bmm(q_nope[:, :, 0].transpose(0, 1).to(compute), w_uk).transpose(0, 1)  # (batch, heads, r)
    scores = torch.bmm(q_rope[:, :, 0].to(compute), k_rope.transpose(1, 2))
    scores = torch.baddbmm(scores, q_latent, latent.transpose(1, 2)).float() * attn.scale  # (batch, heads, t)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, 0], float("-inf"))
    probs = scores.softmax(-1).to(compute)
    context = torch.bmm(probs, latent)  # (batch, heads, r)
    out = torch.bmm(context.transpose(0, 1), w_uv_t)  # (heads, batch, dv)
    return out.transpose(0, 1).reshape(out.shape[1], 1, nh * dv).to(dtype)


def _absorbed_weights(attn, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """kv_b_proj's key half (heads, dn, r) and transposed value half (heads, r, dv), contiguous,
    in `dtype`. Slices of the weight would be copied by every decode step's bmm (a tenth of a step
    at `small`); these copies are made once and remade when the weight changes (a training step
    bumps its version, a move changes its storage)."""
    w = attn.kv_b_proj.weight

    def halves():
        cfg = attn.cfg
        heads = w.detach().to(dtype).view(cfg.num_attention_heads, -1, cfg.kv_lora_rank)
        return heads[:, : cfg.qk_nope_head_dim], heads[:, cfg.qk_nope_head_dim :].transpose(1, 2)

    if torch.compiler.is_compiling():  # the compiler folds the views into its loops: no copies to keep
        return halves()
    key = (w.data_ptr(), w._version, w.dtype, w.device, dtype)
    cached = attn.__dict__.get("_absorbed")
    if cached is None or cached[0] != key:
        cached = (key, *(t.contiguous() for t in halves()))
        attn.__dict__["_absorbed"] = cached  # a plain attribute: not a parameter, not in state_dict
    return cached[1], cached[2]


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (hidden @ weight.T) against targets, computed chunk by chunk.

    The forward pass also computes the gradients (softmax - one_hot) / n for hidden and weight, so
    backward only scales them. Per chunk of tokens, the logits land in one reused buffer of the
    compute dtype; the softmax then runs over a few rows at a time in fp32 (a block that stays in
    the core's cache, instead of several passes over a buffer far larger than it) and writes the
    gradient back into the same buffer. Memory is O(chunk x vocab) instead of several
    (tokens x vocab) tensors (logits, their fp32 copy, the saved log-softmax); the arithmetic is
    the plain path's.
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk: int, ignore_index: int, dtype):
        n_valid = (targets != ignore_index).sum().clamp(min=1)
        vocab, width = weight.shape
        h = hidden.to(dtype)
        w = weight if weight.dtype == dtype else _workspace("ce_weight", weight.shape, dtype, weight.device).copy_(weight)
        needs_grad = hidden.requires_grad or weight.requires_grad
        grad_h = torch.empty_like(hidden) if needs_grad else None
        # The weight gradient is summed as (hidden, vocab): hidden.T @ logits is the fast
        # orientation of that matmul here; one transposing copy at the end.
        grad_wt = _workspace("ce_grad_wt", (width, vocab), torch.float32, h.device) if needs_grad else None
        part = _workspace("ce_grad_part", (width, vocab), dtype, h.device) if needs_grad else None
        buf = _workspace("ce_logits", (min(chunk, h.shape[0]), vocab), dtype, h.device)
        rows = max(1, _SOFTMAX_BLOCK_BYTES // (4 * vocab))
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, h.shape[0], chunk):
            hc, tc = h[start : start + chunk], targets[start : start + chunk]
            logits = buf[: len(tc)]
            torch.mm(hc, w.t(), out=logits)
            valid = tc != ignore_index
            safe = tc.clamp(min=0)
            picked = logits.gather(1, safe[:, None])[:, 0].float()
            # 1/n for targets, 0 for ignored positions
            row_scale = valid.float() / n_valid
            lse = torch.empty(len(tc), dtype=torch.float32, device=h.device)
            for r in range(0, len(tc), rows):
                block = logits[r : r + rows].float()
                top = block.amax(dim=-1, keepdim=True)
                # e^-50 ~ 2e-22: once scaled by 1 / (norm x tokens) below, still a normal float for up
                # to 1e15 tokens x vocab. e^-80 became denormal there, and producing denormals made
                # that multiply 50x slower (1.24 ms against 24 us a block; with logits spread wider
                # than 80, the loss at 4096 x 32768 took 660 ms against 373). What is cut off is
                # below the fp32 resolution of the row's sum.
                block.sub_(top).clamp_(min=-50.0).exp_()
                norm = block.sum(dim=-1, keepdim=True)
                lse[r : r + rows] = (norm.log() + top)[:, 0]
                if needs_grad:
                    logits[r : r + rows] = block.mul_(row_scale[r : r + rows, None] / norm)
            total += ((lse - picked) * valid).sum()
            if needs_grad:
                logits[torch.arange(len(tc), device=h.device), safe] -= row_scale.to(dtype)
                grad_h[start : start + chunk] = logits @ w
                torch.mm(hc.t().contiguous(), logits, out=part)
                if start == 0:
                    grad_wt.copy_(part)
                else:
                    # in column blocks: adding bf16 to fp32 converts into a temporary first, and one
                    # of (hidden x vocab) fp32 is too large for malloc to keep, so its pages were
                    # faulted in afresh at every step (20 -> 6 ms alone at 512 x 32768)
                    cols = max(16, _GRAD_ADD_BLOCK_BYTES // (4 * width))
                    for j in range(0, vocab, cols):
                        grad_wt[:, j : j + cols].add_(part[:, j : j + cols])
        if needs_grad:
            # a fresh tensor: the workspace is overwritten by the next call (an MTP depth's loss)
            grad_w = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device).copy_(grad_wt.t())
            ctx.grads = [grad_h, grad_w]
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        return (*precomputed_grads(ctx, grad_out), None, None, None, None)


def precomputed_grads(ctx, grad_out: torch.Tensor) -> list[torch.Tensor]:
    """Backward of a fused loss whose forward already computed its gradients into `ctx.grads`
    (fresh tensors of its own): scale them in place and hand over these very tensors. A product
    would allocate and fault in another (vocab x hidden) tensor per step, and autograd copies a
    gradient that something else (saved tensors) still refers to instead of taking it over."""
    grads = getattr(ctx, "grads", None)
    if not grads:
        raise RuntimeError("a fused loss supports one backward pass per forward (no retain_graph)")
    ctx.grads = None
    if grad_out.device.type != "cpu" or float(grad_out) != 1.0:
        for g in grads:
            g.mul_(grad_out)
    return grads


# fp32 softmax rows per block: about one core's L2 cache.
_SOFTMAX_BLOCK_BYTES = 1 << 21
# fp32 bytes of the temporaries the weight gradient's bf16 parts are added through.
_GRAD_ADD_BLOCK_BYTES = 4 << 20

_workspaces = threading.local()


def kept_bytes() -> int:
    """Bytes of this thread's kept scratch tensors (`_workspace`, the causal bias): memory a
    training step uses that stays allocated between steps."""
    return sum(t.numel() * t.element_size() for t in _workspaces.__dict__.values() if isinstance(t, torch.Tensor))


def _workspace(name: str, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-thread scratch tensor kept between calls (contents undefined). The fused loss's
    buffers are tens to hundreds of MB: allocated afresh each step, every page of them would be
    faulted in and zeroed by the kernel again, which costs more than the softmax over them."""
    pool = _workspaces.__dict__
    numel = math.prod(shape)
    t = pool.get(name)
    if t is None or t.dtype != dtype or t.device != device or t.numel() < numel:
        pool[name] = None  # let the old one go before the new one is allocated
        t = pool[name] = torch.empty(numel, dtype=dtype, device=device)
    return t[:numel].view(shape)


def linear_cross_entropy(hidden, weight, targets, chunk: int | None = None, ignore_index: int = -100):
    """Fused output projection + mean cross-entropy. hidden (tokens, h), weight (vocab, h), targets
    (tokens,). Follows autocast for the matmuls; softmax and the loss are fp32. The default chunk
    keeps the (chunk, vocab) logits buffer near 128 MB in bf16: every chunk adds its weight gradient
    into the fp32 total once, and fewer, larger chunks keep that conversion rare."""
    if chunk is None:
        chunk = max(64, (64 << 20) // max(1, weight.shape[0]))
    dtype = _compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, ignore_index, dtype)


def linear_cross_entropy_reference(hidden, weight, targets, ignore_index: int = -100):
    return F.cross_entropy(F.linear(hidden, weight).float(), targets, ignore_index=ignore_index)
