"""Model configuration: one dataclass, named presets, and the counts derived from it.

`ModelConfig` uses the field names of Hugging Face's `AXK1Config` so that a k1 model directory's
config.json *is* a transformers A.X K1 config. Presets range from `tiny` (trains in seconds on a
laptop CPU) to `axk1-519b`, the released A.X K1. Parameter, memory, KV-cache and FLOP counts are
computed from the numbers alone, so they work for the 519B model without allocating it.

    cfg = ModelConfig.preset("small", vocab_size=32000)
    cfg.param_counts()["total"]
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from k1.errors import ConfigError, did_you_mean


@dataclass
class ModelConfig:
    """The A.X K1 architecture (DeepSeek-V3 style MoE with Multi-head Latent Attention)."""

    vocab_size: int = 163840
    """Tokenizer vocabulary size (rows of the embedding and the output head)."""
    hidden_size: int = 7168
    """Width of the residual stream."""
    intermediate_size: int = 18432
    """Hidden width of the dense (non-MoE) SwiGLU MLP layers."""
    moe_intermediate_size: int = 2048
    """Hidden width of each routed expert; the shared expert is n_shared_experts times this."""
    num_hidden_layers: int = 61
    """Decoder layers (MTP layers not included)."""
    num_attention_heads: int = 64
    """Attention heads; MLA gives every head its own key and value, decompressed from the latent."""
    q_lora_rank: int | None = 1536
    """Rank of the low-rank query projection; None uses one full-rank q_proj."""
    kv_lora_rank: int = 512
    """Rank of the compressed key/value latent: what the KV cache stores per token (plus the rope key)."""
    qk_nope_head_dim: int = 128
    """Per-head query/key dimensions without rotary position."""
    qk_rope_head_dim: int = 64
    """Per-head query dimensions with rotary position; the rotary key is shared by all heads."""
    v_head_dim: int = 128
    """Per-head value dimensions."""
    n_routed_experts: int = 192
    """Routed experts per MoE layer."""
    n_shared_experts: int = 1
    """Always-on shared experts per MoE layer (fused into one MLP)."""
    num_experts_per_tok: int = 8
    """Routed experts each token is sent to."""
    n_group: int = 8
    """Expert groups for grouped top-k routing (node-limited routing in DeepSeek-V3)."""
    topk_group: int = 4
    """Groups a token may draw its experts from."""
    norm_topk_prob: bool = True
    """Renormalize the chosen experts' sigmoid scores to sum to one."""
    routed_scaling_factor: float = 2.5
    """Multiplier on the routed experts' combined output."""
    first_k_dense_replace: int = 1
    """The first k layers use a dense MLP instead of MoE."""
    moe_layer_freq: int = 1
    """After the dense layers, every n-th layer is MoE (1: all of them)."""
    rms_norm_eps: float = 1e-6
    """Epsilon of the RMSNorms on the residual stream."""
    max_position_embeddings: int = 131072
    """Longest context the model is configured for (after YaRN extension)."""
    rope_theta: float = 10000.0
    """Rotary base."""
    rope_scaling: dict[str, Any] | None = field(
        default_factory=lambda: {
            "rope_type": "yarn",
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        }
    )
    """YaRN settings (rope_type, factor, original_max_position_embeddings, beta_fast, beta_slow,
    mscale, mscale_all_dim), or None for plain RoPE."""
    rope_interleave: bool = True
    """Rotary dimensions paired as (x0, x1), (x2, x3)... (A.X K1 / DeepSeek layout) rather than halves."""
    num_nextn_predict_layers: int = 1
    """Multi-token-prediction modules (DeepSeek-V3 MTP); 0 for none."""
    tie_word_embeddings: bool = False
    """Share the embedding matrix with the output head."""
    attention_bias: bool = False
    """Bias on q_a/kv_a/o projections."""
    initializer_range: float = 0.02
    """Std of the normal initialization of weights."""
    bos_token_id: int | None = None
    """Beginning-of-sequence token id (from the tokenizer)."""
    eos_token_id: int | list[int] | None = None
    """End-of-sequence token id(s) (from the tokenizer)."""
    pad_token_id: int | None = None
    """Padding token id (from the tokenizer)."""

    # ------------------------------------------------------------------ construction

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"invalid model config: {msg}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int",) and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"invalid model config: {f.name} must be a non-negative integer, got {value!r}")
        need(self.vocab_size > 0 and self.hidden_size > 0, "vocab_size and hidden_size must be positive")
        need(self.num_hidden_layers > 0 and self.num_attention_heads > 0, "need at least one layer and one head")
        need(self.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim must be even (rotary pairs)")
        need(self.q_lora_rank is None or (isinstance(self.q_lora_rank, int) and self.q_lora_rank > 0),
             "q_lora_rank must be a positive integer or None")
        if self.has_moe:
            need(self.n_routed_experts > 0, "n_routed_experts must be positive when MoE layers exist")
            need(0 < self.num_experts_per_tok <= self.n_routed_experts,
                 f"num_experts_per_tok ({self.num_experts_per_tok}) must be in 1..n_routed_experts ({self.n_routed_experts})")
            need(self.n_group > 0 and self.n_routed_experts % self.n_group == 0,
                 f"n_routed_experts ({self.n_routed_experts}) must divide into n_group ({self.n_group}) groups")
            need(0 < self.topk_group <= self.n_group, f"topk_group ({self.topk_group}) must be in 1..n_group ({self.n_group})")
            per_group = self.n_routed_experts // self.n_group
            need(per_group >= 2, "each expert group needs at least 2 experts (groups are scored by their top-2)")
            need(self.topk_group * per_group >= self.num_experts_per_tok,
                 "topk_group groups hold fewer experts than num_experts_per_tok")
        if self.rope_scaling is not None:
            rtype = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            need(rtype in ("yarn", "default"), f"rope_scaling.rope_type {rtype!r} is not supported (yarn, default)")
            if rtype == "yarn":
                need(float(self.rope_scaling.get("factor", 0)) >= 1.0, "rope_scaling.factor must be >= 1")
                need(int(self.rope_scaling.get("original_max_position_embeddings", 0)) > 0,
                     "rope_scaling.original_max_position_embeddings must be positive")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named preset, with any field overridden by keyword."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}{did_you_mean(name, list(PRESETS))}")
        values = dataclasses.asdict(PRESETS[name])
        return cls.from_dict({**values, **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from a dict of k1 field names; unknown keys are an error that lists the valid ones."""
        valid = [f.name for f in fields(cls)]
        for key in values:
            if key not in valid:
                raise ConfigError(f"unknown model config key {key!r}{did_you_mean(key, valid)}")
        return cls(**values)

    def replace(self, **changes: Any) -> ModelConfig:
        return self.from_dict({**dataclasses.asdict(self), **changes})

    # ------------------------------------------------------------------ Hugging Face config.json

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers `AXK1Config` dict written as config.json."""
        rope = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None and self.rope_type == "yarn":
            rope = {**{k: v for k, v in self.rope_scaling.items() if k != "type"}, "rope_theta": self.rope_theta}
            rope["rope_type"] = "yarn"
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("rope_scaling", "rope_theta", "first_k_dense_replace", "moe_layer_freq"):
            d.pop(k)
        d.update(
            model_type="axk1",
            architectures=["AXK1ForCausalLM"],
            num_key_value_heads=self.num_attention_heads,
            mlp_layer_types=self.mlp_layer_types,
            rope_parameters=rope,
            hidden_act="silu",
            attention_dropout=0.0,
        )
        return d

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Read a transformers A.X K1 config (v5 `rope_parameters` or legacy `rope_scaling` form)."""
        model_type = raw.get("model_type")
        if model_type != "axk1":
            raise ConfigError(f"{source}: model_type is {model_type!r}, expected 'axk1' (an A.X K1 checkpoint)")
        if raw.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act {raw['hidden_act']!r} is not supported (A.X K1 uses silu)")
        if raw.get("num_key_value_heads", raw.get("num_attention_heads")) != raw.get("num_attention_heads"):
            raise ConfigError(f"{source}: num_key_value_heads must equal num_attention_heads in MLA")
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in names and k not in ("rope_scaling", "rope_theta")}
        rope = dict(raw.get("rope_parameters") or raw.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", raw.get("rope_theta", 10000.0))
        rtype = rope.get("rope_type", rope.get("type", "default"))
        values["rope_theta"] = float(theta)
        rope.pop("type", None)  # legacy spelling of rope_type
        values["rope_scaling"] = None if rtype == "default" else {**rope, "rope_type": rtype}
        layer_types = raw.get("mlp_layer_types")
        if layer_types is not None:
            n_dense = 0
            while n_dense < len(layer_types) and layer_types[n_dense] == "dense":
                n_dense += 1
            values["first_k_dense_replace"] = n_dense
            values["moe_layer_freq"] = 1
            cfg = cls.from_dict(values)
            if cfg.mlp_layer_types != list(layer_types):
                raise ConfigError(f"{source}: mlp_layer_types {layer_types} is not 'k dense layers, then MoE'")
            return cfg
        return cls.from_dict(values)

    # ------------------------------------------------------------------ derived quantities

    @property
    def rope_type(self) -> str:
        if self.rope_scaling is None:
            return "default"
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def mlp_layer_types(self) -> list[str]:
        return [
            "sparse" if i >= self.first_k_dense_replace and i % self.moe_layer_freq == 0 else "dense"
            for i in range(self.num_hidden_layers)
        ]

    @property
    def has_moe(self) -> bool:
        return "sparse" in self.mlp_layer_types

    @property
    def softmax_scale(self) -> float:
        """1/sqrt(d_qk), times YaRN's mscale(all_dim)^2: the longer context sharpens attention (DeepSeek-V2 §YaRN)."""
        scale = self.qk_head_dim**-0.5
        if self.rope_type == "yarn":
            mscale_all_dim = self.rope_scaling.get("mscale_all_dim", 0) or 0
            if mscale_all_dim:
                m = yarn_mscale(float(self.rope_scaling["factor"]), float(mscale_all_dim))
                scale = scale * m * m
        return scale

    def param_counts(self) -> dict[str, int]:
        """Parameter counts by part, computed from the numbers (nothing is allocated).

        `total` is the main model (embeddings, attention, MLPs, experts, norms, head), as A.X K1's
        519B is counted; MTP modules are listed apart. `active` counts what one token touches:
        everything but the routed experts it is not sent to.
        """
        H, nh = self.hidden_size, self.num_attention_heads
        if self.q_lora_rank:
            q = H * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * nh * self.qk_head_dim
        else:
            q = H * nh * self.qk_head_dim
        kv = H * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
        kv += self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
        o = nh * self.v_head_dim * H
        bias = (self.q_lora_rank or 0) + self.kv_lora_rank + self.qk_rope_head_dim + H if self.attention_bias else 0
        attn = q + kv + o + bias
        norms_per_layer = 2 * H
        expert = 3 * H * self.moe_intermediate_size
        dense_mlp = 3 * H * self.intermediate_size
        shared = 3 * H * self.moe_intermediate_size * self.n_shared_experts
        router = self.n_routed_experts * H
        moe_fixed = shared + router + H  # + post_mlp_layernorm
        n_moe = self.mlp_layer_types.count("sparse")
        n_dense = self.num_hidden_layers - n_moe
        embed = self.vocab_size * H
        head = 0 if self.tie_word_embeddings else self.vocab_size * H
        routed_total = n_moe * self.n_routed_experts * expert
        routed_active = n_moe * self.num_experts_per_tok * expert
        attention_total = self.num_hidden_layers * attn
        dense_total = n_dense * dense_mlp
        moe_fixed_total = n_moe * moe_fixed
        norms = self.num_hidden_layers * norms_per_layer + H
        mtp_block = attn + norms_per_layer + (
            self.n_routed_experts * expert + moe_fixed if self.has_moe else dense_mlp
        )
        mtp = self.num_nextn_predict_layers * (2 * H + 2 * H * H + mtp_block + H)
        fixed = embed + head + attention_total + dense_total + moe_fixed_total + norms
        return {
            "total": fixed + routed_total,
            "active": fixed + routed_active,
            "embeddings": embed + head,
            "attention": attention_total,
            "dense_mlp": dense_total,
            "experts": routed_total + n_moe * shared,
            "experts_active": routed_active + n_moe * shared,
            "router": n_moe * router,
            "norms": norms + n_moe * H,
            "mtp": mtp,
        }

    def kv_cache_bytes_per_token(self, bytes_per_value: float = 2.0) -> float:
        """MLA caches one latent (kv_lora_rank) and one shared rotary key (qk_rope_head_dim) per layer."""
        return self.num_hidden_layers * (self.kv_lora_rank + self.qk_rope_head_dim) * bytes_per_value

    def flops_per_token(self, seq_len: int, training: bool = True, include_mtp: bool = True) -> float:
        """Model FLOPs per token: 2 per active weight (6 when training: forward + 2x backward),
        plus attention scores and values over the causal average of seq_len/2 keys.

        The input embedding is a lookup, not a matmul, so it is left out (as in PaLM's MFU accounting).
        """
        counts = self.param_counts()
        matmul_params = counts["active"] - self.vocab_size * self.hidden_size * (0 if self.tie_word_embeddings else 1)
        matmul_params -= counts["norms"]
        layers = self.num_hidden_layers
        if include_mtp and self.num_nextn_predict_layers:
            mtp_active = counts["mtp"] - self.num_nextn_predict_layers * (
                (self.n_routed_experts - self.num_experts_per_tok) * 3 * self.hidden_size * self.moe_intermediate_size
                if self.has_moe else 0
            )
            matmul_params += mtp_active + self.num_nextn_predict_layers * self.vocab_size * self.hidden_size
            layers += self.num_nextn_predict_layers
        attn = 2 * self.num_attention_heads * (self.qk_head_dim + self.v_head_dim) * (seq_len / 2) * layers
        per_token = 2 * matmul_params + attn
        return per_token * (3 if training else 1)

    def summary(self, seq_len: int = 4096) -> dict[str, Any]:
        """The figures `k1 model info` shows: sizes, memory, cache and FLOPs."""
        counts = self.param_counts()
        return {
            "layers": f"{self.num_hidden_layers} ({self.mlp_layer_types.count('dense')} dense, "
                      f"{self.mlp_layer_types.count('sparse')} MoE) + {self.num_nextn_predict_layers} MTP",
            "hidden": self.hidden_size,
            "attention": f"MLA, {self.num_attention_heads} heads, q rank {self.q_lora_rank}, kv rank "
                         f"{self.kv_lora_rank}, rope {self.qk_rope_head_dim}, nope {self.qk_nope_head_dim}, "
                         f"v {self.v_head_dim}",
            "experts": f"{self.n_routed_experts} routed (top-{self.num_experts_per_tok}, {self.n_group} groups, "
                       f"top-{self.topk_group} groups) + {self.n_shared_experts} shared, dim "
                       f"{self.moe_intermediate_size}" if self.has_moe else "none (dense)",
            "vocab": self.vocab_size,
            "context": self.max_position_embeddings,
            "rope": f"{self.rope_type}" + (f" x{self.rope_scaling['factor']} from "
                                             f"{self.rope_scaling['original_max_position_embeddings']}"
                                             if self.rope_type == "yarn" else ""),
            "params": counts,
            "weights_bytes_bf16": 2 * (counts["total"] + counts["mtp"]),
            "weights_bytes_fp8": counts["total"] + counts["mtp"],
            "kv_cache_bytes_per_token_bf16": self.kv_cache_bytes_per_token(2),
            "train_flops_per_token": self.flops_per_token(seq_len, training=True),
            "seq_len": seq_len,
        }


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature: 0.1 * mscale * ln(scale) + 1 (1 when not extending)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


_SMALL_ROPE = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
               "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}

# Weight-only quantizations for inference (`Transformer.quantize`, `k1.load(quantize=...)`).
QUANTIZATION_MODES = ("int8",)

PRESETS: dict[str, ModelConfig] = {
    # A few hundred thousand parameters: trains in seconds on a laptop CPU; used by tests and the demo.
    "tiny": ModelConfig(
        vocab_size=4096, hidden_size=128, intermediate_size=384, moe_intermediate_size=64,
        num_hidden_layers=4, num_attention_heads=4, q_lora_rank=64, kv_lora_rank=32,
        qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
        max_position_embeddings=2048,
        rope_scaling={**_SMALL_ROPE, "factor": 2.0, "original_max_position_embeddings": 1024},
    ),
    # ~100M total parameters: a real (if small) MoE that trains at thousands of tokens/s on a CPU.
    "small": ModelConfig(
        vocab_size=32768, hidden_size=512, intermediate_size=1536, moe_intermediate_size=256,
        num_hidden_layers=8, num_attention_heads=8, q_lora_rank=256, kv_lora_rank=128,
        qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, n_group=4, topk_group=2,
        max_position_embeddings=4096, rope_scaling=dict(_SMALL_ROPE),
    ),
    # ~2B total, ~0.4B active: the size a single GPU node trains for a domain model.
    "base": ModelConfig(
        vocab_size=65536, hidden_size=1536, intermediate_size=4096, moe_intermediate_size=512,
        num_hidden_layers=16, num_attention_heads=16, q_lora_rank=768, kv_lora_rank=256,
        qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        n_routed_experts=48, n_shared_experts=1, num_experts_per_tok=6, n_group=8, topk_group=4,
        max_position_embeddings=32768,
        rope_scaling={**_SMALL_ROPE, "factor": 8.0, "original_max_position_embeddings": 4096},
    ),
    # The released A.X K1: 519B total, ~33B active per token, 128K context with YaRN.
    "axk1-519b": ModelConfig(
        bos_token_id=163691, eos_token_id=163691,
    ),
}
