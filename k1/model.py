"""The A.X K1 architecture, top to bottom, in one file.

A.X K1 is DeepSeek-V3 in shape: Multi-head Latent Attention (low-rank queries, a compressed
key/value latent plus one shared rotary key), a first dense layer followed by Mixture-of-Experts
layers (sigmoid router with a selection bias, grouped top-k, one shared expert), an extra RMSNorm
on every MoE block's output (`post_mlp_layernorm`, A.X K1's one departure), and multi-token
prediction (MTP) modules used in training and for speculative decoding.

Module names equal the Hugging Face A.X K1 names (`model.layers.3.self_attn.kv_b_proj.weight`),
so `state_dict()` keys are the checkpoint keys; `k1/checkpoint.py` only maps the per-expert and MTP
tensors. Classes come in dependency order: norm, rotary, attention, MLP, router, experts, MoE,
block, MTP, model. Fast paths (grouped expert matmuls, absorbed latent decoding) live in
`k1/kernels.py` beside their plain references; this file calls them.

    model = Transformer(ModelConfig.preset("tiny"))
    logits = model(input_ids)            # (batch, seq, vocab)
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from k1 import kernels
from k1.config import QUANTIZATION_MODES, ModelConfig, yarn_mscale


def _compile_errors() -> tuple[type[Exception], ...]:
    """What a failed torch.compile raises (no C++ compiler, an unsupported op); compiled paths catch
    these and fall back to eager code. A function: the compiler's modules load only when needed."""
    return torch._dynamo.exc.TorchDynamoException, torch._inductor.exc.InductorError


# The query and key/value latent norms use 1e-6 whatever rms_norm_eps says (as the release does).
LATENT_NORM_EPS = 1e-6


def _source_keys(weights: list[torch.Tensor]) -> list[tuple[int, int]]:
    # A packed copy is stale once its weight is written in place (version) or replaced (a move or
    # a dtype change: new storage).
    return [(w.data_ptr(), w._version) for w in weights]


def _slot_keys(slots: list[tuple[dict, str]]) -> list:
    # a tensor by its storage and version (as `_source_keys`), a submodule by identity
    return [None if (t := d.get(name)) is None else (t.data_ptr(), t._version) if isinstance(t, torch.Tensor)
            else id(t) for d, name in slots]


class _Packs:
    """Inference copies of a module's weights in oneDNN's packed layout (`Transformer.pack_weights`),
    remade when the weights change. Eager calls check; compiled decode steps are checked for by
    `Transformer.refresh_packed` before each step (a compiled graph cannot look)."""

    _packed: tuple[torch.Tensor, ...] | None = None
    _packed_from: list[tuple[int, int]] | None = None

    def _pack_sources(self) -> list[torch.Tensor] | None:
        raise NotImplementedError

    def _pack(self, sources: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _pack_slots(self) -> list[tuple[dict, str]]:
        """Where the sources live: (a module's parameter dict, name) for each, and (its parent's
        module dict, name) for the submodules holding them; what `Transformer.refresh_packed`
        reads to see at a glance that nothing changed."""
        raise NotImplementedError

    def pack(self) -> bool:
        sources = self._pack_sources()
        # Empty weights (a MoE without a shared expert) join a stack but are never packed alone:
        # oneDNN has no product of width zero.
        filled = [w for w in sources or () if w.numel()]
        if not filled or not all(kernels.can_pack(w) for w in filled):
            self.unpack()
            return False
        with torch.no_grad():
            self._packed = self._pack(sources)
        self._packed_from = _source_keys(sources)
        return True

    def unpack(self) -> None:
        self._packed = self._packed_from = None

    def refresh_packed(self) -> None:
        if self._packed is not None:
            sources = self._pack_sources()
            if sources is None or self._packed_from != _source_keys(sources):
                self.pack()

    def __getstate__(self):
        # oneDNN's packed tensors have no storage to copy or pickle: copies come unpacked.
        state = dict(super().__getstate__())
        state.pop("_packed", None)
        state.pop("_packed_from", None)
        return state

    def packed(self) -> tuple[torch.Tensor, ...] | None:
        if self._packed is not None and not torch.compiler.is_compiling():
            self.refresh_packed()
        return self._packed


class Linear(_Packs, nn.Linear):
    """nn.Linear whose decode-sized inference calls take kernels.linear's fast path, or oneDNN's
    packed weight once `pack` made one. After `quantize_int8` it holds int8 weights with one scale
    per output row instead (inference only)."""

    quantized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized:
            return kernels.linear_int8(x, self.weight_int8, self.weight_scale, self.bias)
        # One row stays with kernels.linear: torch.mv streams as fast as a packed weight, and
        # under torch.compile its multiply-and-sum fuses with the ops around it.
        if self._packed is not None and x.numel() != x.shape[-1] and kernels.packed_applies(x, self.weight):
            packed = self.packed()
            if packed is not None:
                return kernels.linear_packed(x, packed[0], self.out_features, self.bias)
        return kernels.linear(x, self.weight, self.bias)

    def _pack_sources(self):
        return None if self.quantized else [self.weight]

    def _pack_slots(self):
        return [(self._parameters, "weight")]

    def _pack(self, sources):
        return (kernels.pack_weight(sources[0]),)

    @torch.no_grad()
    def quantize_int8(self) -> None:
        values, scale = kernels.quantize_int8(self.weight)
        self.register_buffer("weight_int8", values)
        self.register_buffer("weight_scale", scale.to(self.weight.dtype))
        self.register_parameter("weight", None)
        self.quantized = True
        self.unpack()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


# ---------------------------------------------------------------------------------------- rotary


def rope_inv_freq(cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """Inverse frequencies for the rotary dims, and the factor YaRN multiplies cos/sin by.

    YaRN (Peng et al. 2023, §3.2-3.4): dimensions that rotate many times within the original
    context keep their frequency (extrapolation), slow ones are divided by `factor`
    (interpolation), with a linear ramp between the two correction dimensions.
    """
    dim, base = cfg.qk_rope_head_dim, cfg.rope_theta
    exponents = torch.arange(0, dim, 2, dtype=torch.float32) / dim
    inv_freq = 1.0 / (base**exponents)
    if cfg.rope_type != "yarn":
        return inv_freq, 1.0
    rs = cfg.rope_scaling
    factor = float(rs["factor"])
    original = int(rs["original_max_position_embeddings"])
    beta_fast, beta_slow = float(rs.get("beta_fast") or 32), float(rs.get("beta_slow") or 1)

    def correction_dim(rotations: float) -> float:
        # The dimension whose wavelength fits `rotations` times into the original context.
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: extrapolate (high frequency), 0: interpolate
    inv_freq = (inv_freq / factor) * (1 - keep) + inv_freq * keep
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rs.get("mscale"), rs.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    return inv_freq, float(attention_factor)


class Rotary(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        inv_freq, self.attention_factor = rope_inv_freq(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # (batch, seq, rope_dim / 2): one angle per rotary pair
        angles = position_ids[..., None].float() * self.inv_freq.float()
        cos = (angles.cos() * self.attention_factor).to(dtype)
        sin = (angles.sin() * self.attention_factor).to(dtype)
        return cos[:, None], sin[:, None]  # (batch, 1, seq, rope_dim / 2), broadcast over heads


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate pairs of x (..., rope_dim). The output lists the pairs' first then second members; q and
    k get the same permutation, so their dot products equal those of the interleaved layout."""
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


# ------------------------------------------------------------------------------------- attention


class LatentCache:
    """Per-layer cache of what MLA needs to attend: the normed latent and the rotated shared key.

    That is kv_lora_rank + qk_rope_head_dim values per token per layer, instead of
    2 * heads * head_dim for ordinary attention. Storage is allocated in blocks of `block` tokens
    and grows by whole blocks, so a decode step writes in place and never copies the cache.

    quantized=True stores int8 values with one scale per token and tensor (absmax / 127, kept in
    bf16): (r + dr) + 4 bytes per token per layer, about half the bf16 cache. Attention then reads
    the dequantized values.
    """

    def __init__(self, cfg: ModelConfig, batch: int, capacity: int = 0, block: int = 256,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 quantized: bool = False, layers: int | None = None):
        self.cfg, self.batch, self.block = cfg, batch, block
        self.dtype, self.device, self.quantized = dtype, device, quantized
        self.layers = layers if layers is not None else cfg.num_hidden_layers
        self.length = 0
        self.capacity = 0
        self.latent: list[torch.Tensor] = []
        self.rope: list[torch.Tensor] = []
        self.scales: list[torch.Tensor] = []  # quantized: (batch, capacity, 2) for latent and rope
        if capacity and dtype is not None:
            self._grow(capacity)

    def _grow(self, needed: int) -> None:
        cap = -(-needed // self.block) * self.block
        r, d = self.cfg.kv_lora_rank, self.cfg.qk_rope_head_dim
        store = torch.int8 if self.quantized else self.dtype

        def grown(old: list[torch.Tensor], width: int, dtype) -> list[torch.Tensor]:
            new = [torch.zeros(self.batch, cap, width, dtype=dtype, device=self.device) for _ in range(self.layers)]
            for i, t in enumerate(old):
                new[i][:, : self.length] = t[:, : self.length]
            return new

        self.latent, self.rope = grown(self.latent, r, store), grown(self.rope, d, store)
        if self.quantized:
            self.scales = grown(self.scales, 2, torch.bfloat16)
        self.capacity = cap

    @staticmethod
    def _quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = (x.float().abs().amax(-1, keepdim=True) / 127.0).clamp(min=1e-8).to(torch.bfloat16)
        q = (x.float() / scale.float()).round().clamp(-127, 127).to(torch.int8)
        return q, scale

    def update(self, layer: int, latent: torch.Tensor, k_rope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (batch, seq, r) and (batch, seq, d) at the current position; return all so far."""
        s = latent.shape[1]
        if self.dtype is None:
            self.dtype, self.device = latent.dtype, latent.device
        if self.length + s > self.capacity:
            self._grow(self.length + s)
        end = self.length + s
        if not self.quantized:
            self.latent[layer][:, self.length : end] = latent
            self.rope[layer][:, self.length : end] = k_rope
            return self.latent[layer][:, :end], self.rope[layer][:, :end]
        ql, sl = self._quantize(latent)
        qr, sr = self._quantize(k_rope)
        self.latent[layer][:, self.length : end] = ql
        self.rope[layer][:, self.length : end] = qr
        self.scales[layer][:, self.length : end] = torch.cat((sl, sr), dim=-1)
        scales = self.scales[layer][:, :end].to(latent.dtype)
        return (self.latent[layer][:, :end].to(latent.dtype) * scales[..., :1],
                self.rope[layer][:, :end].to(latent.dtype) * scales[..., 1:])

    def advance(self, n: int) -> None:
        self.length += n

    def bytes_per_token(self) -> int:
        """Bytes stored per token across all layers."""
        r, d = self.cfg.kv_lora_rank, self.cfg.qk_rope_head_dim
        if self.quantized:
            return self.layers * (r + d + 2 * 2)
        elem = torch.finfo(self.dtype or torch.float32).bits // 8
        return self.layers * (r + d) * elem


class Attention(nn.Module):
    """Multi-head Latent Attention (DeepSeek-V2 §2.1)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        H, nh = cfg.hidden_size, cfg.num_attention_heads
        if cfg.q_lora_rank:
            self.q_a_proj = Linear(H, cfg.q_lora_rank, bias=cfg.attention_bias)
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, LATENT_NORM_EPS)
            self.q_b_proj = Linear(cfg.q_lora_rank, nh * cfg.qk_head_dim, bias=False)
        else:
            self.q_proj = Linear(H, nh * cfg.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = Linear(H, cfg.kv_lora_rank + cfg.qk_rope_head_dim, bias=cfg.attention_bias)
        self.kv_a_layernorm = RMSNorm(cfg.kv_lora_rank, LATENT_NORM_EPS)
        self.kv_b_proj = Linear(cfg.kv_lora_rank, nh * (cfg.qk_nope_head_dim + cfg.v_head_dim), bias=False)
        self.o_proj = Linear(nh * cfg.v_head_dim, H, bias=cfg.attention_bias)
        self.scale = cfg.softmax_scale

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.q_lora_rank:
            return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        return self.q_proj(x)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                cache: LatentCache | None = None) -> torch.Tensor:
        cfg = self.cfg
        b, s, _ = x.shape
        nh, dn, dr, dv = cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim
        q = self.queries(x).view(b, s, nh, dn + dr).transpose(1, 2)  # (batch, heads, seq, dn + dr)
        q_nope, q_rope = q.split([dn, dr], dim=-1)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split([cfg.kv_lora_rank, dr], dim=-1)
        latent = self.kv_a_layernorm(latent)  # (batch, seq, kv_lora_rank)
        cos, sin = rope
        q_rope = apply_rotary(q_rope, cos, sin, cfg.rope_interleave)
        k_rope = apply_rotary(k_rope[:, None], cos, sin, cfg.rope_interleave)[:, 0]  # (batch, seq, dr)
        if cache is not None:
            latent, k_rope = cache.update(self.layer_idx, latent, k_rope)  # (batch, past + seq, ...)
            if s == 1 and kernels.ABSORBED_DECODE:
                out = kernels.absorbed_decode(self, q_nope, q_rope, latent, k_rope, mask)
                return self.o_proj(out.reshape(b, s, nh * dv))
        t = latent.shape[1]
        kv = self.kv_b_proj(latent).view(b, t, nh, dn + dv).transpose(1, 2)  # (batch, heads, t, dn + dv)
        k_nope, v = kv.split([dn, dv], dim=-1)
        k = torch.cat((k_nope, k_rope[:, None].expand(b, nh, t, dr)), dim=-1)
        q = torch.cat((q_nope, q_rope), dim=-1)
        # SDPA's fused (flash) kernels want one head width for q, k and v; MLA's v is narrower than
        # q/k (128 vs 192 in A.X K1). Zero columns change no dot product and no output column, and
        # spare the (seq x seq) score matrix that the fallback kernel would keep per layer.
        width = max(dn + dr, dv)
        if dv < width:
            v = F.pad(v, (0, width - dv))
        elif dn + dr < width:
            q, k = F.pad(q, (0, width - dn - dr)), F.pad(k, (0, width - dn - dr))
        if kernels.attention_backward_applies(q, mask) and dn + dr >= dv:
            out = kernels.causal_attention(q, k, v, self.scale, dv)
        elif mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=s > 1, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.o_proj(out[..., :dv].transpose(1, 2).reshape(b, s, nh * dv))


# ------------------------------------------------------------------------------- MLP and experts


class MLP(nn.Module):
    """SwiGLU feed-forward: the dense layers and the shared expert."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = Linear(hidden, inner, bias=False)
        self.up_proj = Linear(hidden, inner, bias=False)
        self.down_proj = Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Sigmoid scores; a per-expert bias steers *which* experts are chosen but not their weights
    (DeepSeek-V3 §2.1.2, auxiliary-loss-free balancing); grouped top-k limits each token to
    topk_group groups, chosen by the sum of each group's two best scores."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.weight = nn.Parameter(torch.empty(cfg.n_routed_experts, cfg.hidden_size))
        # A buffer, not a parameter: the balancer nudges it from observed load, gradients never do.
        self.register_buffer("e_score_correction_bias", torch.zeros(cfg.n_routed_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (tokens, hidden) -> weights (tokens, k), expert ids (tokens, k), scores (tokens, experts)."""
        cfg = self.cfg
        # Routing in fp32: near-ties between experts must not flip with bf16 rounding.
        scores = F.linear(x.float(), self.weight.float()).sigmoid()
        choice = scores.detach() + self.e_score_correction_bias
        n = x.shape[0]
        if cfg.n_group > 1 and cfg.topk_group < cfg.n_group:
            group_scores = choice.view(n, cfg.n_group, -1).topk(2, dim=-1).values.sum(-1)  # (tokens, groups)
            top_groups = group_scores.topk(cfg.topk_group, dim=-1, sorted=False).indices
            keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, top_groups, True)
            keep = keep[:, :, None].expand(n, cfg.n_group, cfg.n_routed_experts // cfg.n_group).reshape(n, -1)
            choice = choice.masked_fill(~keep, float("-inf"))
        idx = choice.topk(cfg.num_experts_per_tok, dim=-1, sorted=False).indices
        weights = scores.gather(1, idx)
        if cfg.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * cfg.routed_scaling_factor, idx, scores


class Experts(nn.Module):
    """All routed experts' weights as two 3-D tensors, so experts run as one grouped matmul."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, H, inner = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * inner, H))  # gate rows, then up rows
        self.down_proj = nn.Parameter(torch.empty(E, H, inner))

    quantized = False

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.quantized:
            return kernels.moe_experts_int8(x, idx, weights, self.gate_up_proj_int8, self.gate_up_proj_scale,
                                            self.down_proj_int8, self.down_proj_scale)
        return kernels.moe_experts(x, idx, weights, self.gate_up_proj, self.down_proj)

    @torch.no_grad()
    def quantize_int8(self) -> None:
        for name in ("gate_up_proj", "down_proj"):
            weight = getattr(self, name)
            values, scale = kernels.quantize_int8(weight)
            self.register_buffer(f"{name}_int8", values)
            self.register_buffer(f"{name}_scale", scale.to(weight.dtype))
            self.register_parameter(name, None)
        self.quantized = True


class MoE(_Packs, nn.Module):
    """Routed experts plus the shared expert, then a norm. Packed (`pack`), a decode step whose
    tokens choose most experts runs all experts, the shared one included, as two packed linears."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.gate = Router(cfg)
        self.experts = Experts(cfg)
        self.shared_experts = MLP(cfg.hidden_size, cfg.moe_intermediate_size * cfg.n_shared_experts)
        self.post_mlp_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # Set by the training loop: routing of the last forward (for load balancing and statistics).
        self.record_routing = False
        self.last_routing: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, idx, scores = self.gate(flat)
        if self.record_routing:
            self.last_routing = (idx, scores)
        n, k = idx.shape
        if (self._packed is not None and kernels.runs_all_experts(n, k, self.cfg.n_routed_experts)
                and kernels.packed_applies(x, self.experts.gate_up_proj)):
            packed = self.packed()
            if packed is not None:
                both = kernels.moe_dense_packed(flat, idx, weights, *packed, self.cfg.n_routed_experts,
                                                self.experts.down_proj.shape[-1], self.shared_experts.down_proj.in_features)
                return self.post_mlp_layernorm(both.view(shape))
        routed = self.experts(flat, idx, weights.to(x.dtype)).view(shape)
        if self.shared_experts.down_proj.in_features:  # n_shared_experts = 0 leaves it empty
            routed = routed + self.shared_experts(x)
        return self.post_mlp_layernorm(routed)

    def _pack_sources(self):
        shared, experts = self.shared_experts, self.experts
        if experts.quantized or shared.down_proj.quantized:
            return None
        return [experts.gate_up_proj, experts.down_proj, shared.gate_proj.weight, shared.up_proj.weight,
                shared.down_proj.weight]

    def _pack_slots(self):
        shared, experts = self.shared_experts, self.experts
        linears = ("gate_proj", "up_proj", "down_proj")
        return [(self._modules, "experts"), (self._modules, "shared_experts"),
                *((shared._modules, name) for name in linears),
                (experts._parameters, "gate_up_proj"), (experts._parameters, "down_proj"),
                *((shared._modules[name]._parameters, "weight") for name in linears)]

    def _pack(self, sources):
        return kernels.pack_moe(*sources)


# ----------------------------------------------------------------------------------------- block


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int, sparse: bool):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoE(cfg) if sparse else MLP(cfg.hidden_size, cfg.intermediate_size)

    # Set by Transformer.compile_blocks: this block's forward through torch.compile, for training.
    _compiled_forward = None

    def forward(self, x, rope, mask, cache=None):
        if self._compiled_forward is not None and cache is None and torch.is_grad_enabled():
            try:
                return self._compiled_forward(x, rope, mask)
            except _compile_errors() as e:
                # No C++ compiler, an unsupported op: the block runs eagerly from now on (the
                # error comes before anything ran, so this step's autograd graph is intact).
                warnings.warn(f"compiling a decoder block failed ({type(e).__name__}); training it without",
                              stacklevel=2)
                self._compiled_forward = None
        return self._forward(x, rope, mask, cache)

    def _forward(self, x, rope, mask, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), rope, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class MTP(nn.Module):
    """One multi-token-prediction depth (DeepSeek-V3 §2.2): from the previous depth's hidden state at
    position i and the embedding of token i+k, predict token i+k+1 with one more block and the
    shared output head. Embedding and head are the main model's."""

    def __init__(self, cfg: ModelConfig, depth: int):
        super().__init__()
        self.enorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.hnorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.eh_proj = Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.block = Block(cfg, cfg.num_hidden_layers + depth, sparse=cfg.has_moe)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)  # `shared_head.norm` in checkpoints

    def forward(self, hidden, next_embeds, rope, mask):
        x = self.eh_proj(torch.cat((self.enorm(next_embeds), self.hnorm(hidden)), dim=-1))
        return self.norm(self.block(x, rope, mask))


# ----------------------------------------------------------------------------------------- model


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        types = cfg.mlp_layer_types
        self.layers = nn.ModuleList(Block(cfg, i, types[i] == "sparse") for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    """The A.X K1 causal language model. `state_dict()` keys are the Hugging Face checkpoint keys,
    except `mtp.*`, which checkpoints store as extra layers (see k1/checkpoint.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.mtp = nn.ModuleList(MTP(cfg, k) for k in range(cfg.num_nextn_predict_layers))
        self.rotary = Rotary(cfg)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or ".enorm." in name or ".hnorm." in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.normal_(0.0, std)
        for m in self.modules():
            if isinstance(m, Router):
                m.e_score_correction_bias.zero_()

    # -- inputs

    def _positions_and_mask(self, input_ids, attention_mask, position_ids, cache):
        b, s = input_ids.shape
        past = cache.length if cache is not None else 0
        if attention_mask is not None and attention_mask.dim() == 4:
            # A prebuilt (batch, 1, seq, keys) boolean mask, e.g. packed documents; positions come with it.
            if position_ids is None:
                position_ids = torch.arange(past, past + s, device=input_ids.device)[None].expand(b, s)
            return position_ids, attention_mask
        # Two comparisons, not `in (s, past + s)`: under torch.compile the widths are symbolic,
        # and dynamo mis-evaluated the tuple test (and then decoded uncompiled).
        if attention_mask is not None and attention_mask.shape[1] != s and attention_mask.shape[1] != past + s:
            raise ValueError(f"attention_mask covers {attention_mask.shape[1]} tokens; expected {s} or {past + s}")
        if attention_mask is not None and attention_mask.shape[1] == s and past:
            pad = torch.ones(b, past, dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat((pad, attention_mask), dim=1)
        if position_ids is None:
            if attention_mask is not None:
                # Count only real tokens, so a left-padded prompt gets the positions it has unpadded.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -s:]
            else:
                position_ids = torch.arange(past, past + s, device=input_ids.device)[None].expand(b, s)
        # (Compiled decoding skips the all-ones check: a data-dependent branch would split the graph,
        # and the explicit mask gives the same result.)
        if attention_mask is None or (not torch.compiler.is_compiling() and bool(attention_mask.all())):
            if s == 1 or past == 0:
                return position_ids, None  # plain causal: SDPA's is_causal (or nothing for one query)
            keys = attention_mask if attention_mask is not None else torch.ones(b, past + s, device=input_ids.device)
        else:
            keys = attention_mask
        t = past + s
        q_pos = torch.arange(past, t, device=input_ids.device)
        allowed = q_pos[:, None] >= torch.arange(t, device=input_ids.device)[None]  # (s, t) causal
        mask = allowed[None] & keys.bool()[:, None, :]  # (batch, s, t)
        # A padding query would attend to nothing (NaN softmax): let it see itself; its output is unused.
        mask = mask | (q_pos[:, None] == torch.arange(t, device=input_ids.device)[None])[None]
        return position_ids, mask[:, None]  # (batch, 1, s, t)

    # -- forward

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None, cache: LatentCache | None = None,
                      ) -> tuple[torch.Tensor, tuple, torch.Tensor | None]:
        """Final-normed hidden states (batch, seq, hidden), plus the rotary tables and mask used."""
        position_ids, mask = self._positions_and_mask(input_ids, attention_mask, position_ids, cache)
        x = self.model.embed_tokens(input_ids)
        rope = self.rotary(position_ids, x.dtype)
        for layer in self.model.layers:
            x = layer(x, rope, mask, cache)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return self.model.norm(x), rope, mask

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, cache: LatentCache | None = None,
                return_mtp: bool = False, labels: torch.Tensor | None = None, last_only: bool = False,
                mtp_labels: list[torch.Tensor] | None = None, head_loss=None):
        """Logits (batch, seq, vocab). attention_mask: (batch, seq) or (batch, past + seq) with 1 for a
        token and 0 for padding, or a boolean (batch, 1, seq, past + seq) mask of allowed keys.

        With return_mtp, also the MTP logits of each depth k, (batch, seq - k, vocab), where
        position i predicts token i + k + 1. With labels (batch, seq; -100 = no target), returns
        {"loss": mean cross-entropy, "mtp_losses": [per depth, when return_mtp]} computed without
        materializing the logits (kernels.linear_cross_entropy). Everything stays inside this one
        call so that wrappers such as FSDP see a single forward. last_only: logits of the last
        position only, (batch, 1, vocab), which is all a generation step needs. mtp_labels: the
        targets of each MTP depth, when they are not simply labels[:, k:] (packed documents).
        head_loss: with labels, a function (hidden (tokens, h), lm_head weight (vocab, h)) -> loss that
        replaces the next-token cross-entropy (distillation: k1.objectives.linear_kd); it runs here,
        inside the one forward, for the same reason."""
        if last_only and self._compiled_step(input_ids, cache):
            b, cfg = input_ids.shape[0], self.config
            if b > 1 or cfg.num_experts_per_tok >= cfg.n_routed_experts:  # else no pack is used (one row)
                self.refresh_packed()
            try:
                h = self._decode_hidden(input_ids, attention_mask, position_ids, cache)[0]
                return self.lm_head(h[:, -1:])
            except _compile_errors() as e:
                # No C++ compiler, an unsupported op: decode as before, and say so once.
                warnings.warn(f"compiled decoding failed ({type(e).__name__}); decoding without it", stacklevel=2)
                self._decode_hidden = None
        h, rope, mask = self.hidden_states(input_ids, attention_mask, position_ids, cache)
        if last_only:
            return self.lm_head(h[:, -1:])
        mtp = self.mtp_hidden(h, input_ids, rope, mask) if return_mtp else []
        if labels is None:
            logits = self.lm_head(h)
            return (logits, [self.lm_head(m) for m in mtp]) if return_mtp else logits
        w = self.lm_head.weight
        if w is None:
            raise ValueError("this model's weights are quantized to int8 for inference; load it unquantized to train")
        if head_loss is not None:
            loss = head_loss(h.flatten(0, 1), w)
        else:
            loss = kernels.linear_cross_entropy(h.flatten(0, 1), w, labels.flatten())
        mtp_losses = [kernels.linear_cross_entropy(
            m.flatten(0, 1), w, (mtp_labels[k - 1] if mtp_labels else labels[:, k:]).flatten())
            for k, m in enumerate(mtp, start=1)]
        return {"loss": loss, "mtp_losses": mtp_losses}

    _decode_hidden = None

    def compile_decode(self, enabled: bool = True) -> Transformer:
        """Run decode steps (one new token per sequence against a `LatentCache`, as `generate` makes
        them) through torch.compile. A decode step is thousands of small operations; compiled, they
        become a few dozen fused loops called from compiled C++ (on a CPU) with no Python in
        between, and one-row products stream their weights at memory speed
        (kernels.linear_fused, moe_experts_indexed); bf16 weights on a CPU are packed for oneDNN
        (`pack_weights`, their memory again) for the products of more rows: about 2.2-2.9x the
        tokens/s of eager decoding at `small`, batch 1 (1.6-1.9x at batch 8).
        `compile_decode(False)` drops the packs too. The first steps of each new batch size
        compile (about a minute with an empty inductor cache, seconds from its disk cache); if
        compiling fails (no C++ compiler), decoding warns once and goes on uncompiled. Prompts,
        training and the serving engine's slot cache stay eager."""
        if enabled:
            kernels.prepare_compile()
        # On a CPU the step's own wrapper is C++ too: it calls the step's hundred-odd kernels and
        # matmuls without a Python line in between (about 1.1x the tokens/s at batch 1, for some
        # 25% more compile time the first time a batch size is seen).
        cpu = next(self.parameters()).device.type == "cpu"
        self._decode_hidden = torch.compile(self.hidden_states, options={"cpp_wrapper": cpu}) if enabled else None
        return self.pack_weights(enabled)

    _packed_modules: tuple[_Packs, ...] = ()

    def pack_weights(self, enabled: bool = True) -> Transformer:
        """Keep a copy of the decoder's, MTP's and the output head's bf16 weights in oneDNN's
        packed layout, for inference on a CPU: the linears and, in decode steps that choose most
        experts, the routed and shared experts run from it (kernels.linear_packed) for calls of
        two rows or more: a few-row product streams a packed weight 1.4-1.7x faster than through
        F.linear (eager decoding at batch 8: about 1.1x; prompts about the same). It costs those
        weights' bytes again in memory.
        Copies are remade when a weight changes (a training step, load_state_dict, a move); calls
        that need gradients use the weights themselves. A model whose weights are not bf16 on a
        CPU with oneDNN bf16 (or are int8) keeps none: packing is then a no-op."""
        # MTP too: the serving engine's speculative decoding runs it every step.
        modules = [m for m in [*self.model.modules(), *self.mtp.modules(), self.lm_head] if isinstance(m, _Packs)]
        for m in modules:
            m.unpack()
        self._packed_modules = tuple(m for m in modules if m.pack()) if enabled else ()
        self._pack_watch = None
        return self

    # The packed modules' source slots and what they held when last checked (`refresh_packed`).
    _pack_watch: tuple[list[tuple[dict, str]], list] | None = None

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_pack_watch", None)  # rebuilt by the next check
        return state

    def refresh_packed(self) -> None:
        """Remake packed weights whose source changed (see `pack_weights`); compiled decode steps
        run this first, eager calls check for themselves. A step's check reads each source's
        storage and version straight from its module's parameters (about 40 us at `small`, where
        asking each module for its sources took 150 us, 3% of a batch-1 step); any difference,
        including a weight replaced or removed (int8), goes through the modules' own checks."""
        watch = self._pack_watch
        if watch is not None and _slot_keys(watch[0]) == watch[1]:
            return
        for m in self._packed_modules:
            m.refresh_packed()
        slots = [slot for m in self._packed_modules for slot in m._pack_slots()]
        self._pack_watch = (slots, _slot_keys(slots))

    def _apply(self, fn, recurse=True):
        # .to(), .float(), .cpu(): packs of the old weights are remade, or dropped when the new ones
        # cannot be packed (then not to come back by themselves: pack_weights again).
        out = super()._apply(fn, recurse)
        self.refresh_packed()
        return out

    def compile_blocks(self, enabled: bool = True) -> Transformer:
        """Train with every decoder block (MTP's too) through torch.compile: the compiler fuses a
        block's many elementwise passes (norms, rotary, SwiGLU, residuals, their backward) into
        a few loops, and in bf16 causal attention always takes its own backward
        (`kernels.causal_attention`; eager training from a size up): about 1.2x the training
        tokens/s of eager at `small` after some 30 s of compiling the first step. Only forward
        passes with gradients use it (evaluation and generation stay eager); the loss and the
        output head stay eager; state_dict keys are unchanged. A block that fails to compile
        warns and runs eagerly."""
        if enabled:
            kernels.prepare_compile()
        for block in [*self.model.layers, *(m.block for m in self.mtp)]:
            # One specialized graph per input shape: once a block's code has been compiled for other
            # sizes (an earlier model in the process), dynamo's automatic dynamic shapes would
            # compile generic graphs, measured no faster than eager.
            block._compiled_forward = torch.compile(block._forward, dynamic=False) if enabled else None
        return self

    def _compiled_step(self, input_ids: torch.Tensor, cache) -> bool:
        return (self._decode_hidden is not None and type(cache) is LatentCache and input_ids.shape[1] == 1
                and not torch.is_grad_enabled())

    def mtp_hidden(self, hidden: torch.Tensor, input_ids: torch.Tensor, rope, mask) -> list[torch.Tensor]:
        """Hidden states of each MTP depth k (1-based): position i predicts token i + k + 1.

        Depth k sees positions 0..seq-k-1 (the last k have no token i+k to embed)."""
        outs, h = [], hidden
        s = input_ids.shape[1]
        for k, module in enumerate(self.mtp, start=1):
            if s - k <= 0:
                break
            nxt = self.model.embed_tokens(input_ids[:, k:])
            cos, sin = rope
            sub_rope = (cos[:, :, : s - k], sin[:, :, : s - k])
            sub_mask = None if mask is None else mask[:, :, : s - k, : s - k]
            h = module(h[:, : s - k], nxt, sub_rope, sub_mask)
            outs.append(h)
        return outs

    def new_cache(self, batch: int, capacity: int = 0, dtype: torch.dtype | None = None,
                  quantized: bool = False) -> LatentCache:
        p = next(self.parameters())
        return LatentCache(self.config, batch, capacity, dtype=dtype or p.dtype, device=p.device, quantized=quantized)

    def generate(self, prompts, **kwargs):
        """Generate continuations of token-id prompts; see `k1.generate.generate` for the options."""
        from k1.generate import generate

        return generate(self, prompts, **kwargs)

    quantized: str | None = None

    @torch.no_grad()
    def quantize(self, mode: str = "int8") -> Transformer:
        """Weight-only quantization for inference, in place: every linear layer and expert gets int8
        weights with one scale per output row (half the bytes of bf16, which is what a decode step
        reads). The embeddings, norms, router and kv_b_proj (which absorbed decoding folds into
        the query and output) keep their dtype. The model can no longer be trained or saved."""
        if mode not in QUANTIZATION_MODES:
            raise ValueError(f"unknown quantization {mode!r}; valid: {', '.join(QUANTIZATION_MODES)}")
        if self.quantized:
            return self
        for name, module in self.named_modules():
            if isinstance(module, Experts) or (isinstance(module, Linear) and not name.endswith("kv_b_proj")):
                module.quantize_int8()
        self.pack_weights(False)  # int8 layers keep no bf16 packs
        self.quantized = mode
        return self.eval()

    @property
    def num_parameters(self) -> int:
        stored = sum(b.numel() for name, b in self.named_buffers() if name.endswith("_int8"))
        return sum(p.numel() for p in self.parameters()) + stored
