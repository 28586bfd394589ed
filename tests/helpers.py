"""Tiny random models for tests."""

from __future__ import annotations

import torch

from k1.config import ModelConfig
from k1.model import Transformer


def tiny_config(**overrides) -> ModelConfig:
    """A few-layer A.X K1 with grouped routing, YaRN and MTP, small enough for seconds-long tests."""
    base = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, q_lora_rank=32, kv_lora_rank=16,
        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
        max_position_embeddings=512, num_nextn_predict_layers=1,
        # mscale != mscale_all_dim so both YaRN corrections (cos/sin factor, softmax scale) matter
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128,
                      "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.707, "mscale_all_dim": 1.0},
    )
    base.update(overrides)
    return ModelConfig(**base)


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(tiny_config(**overrides)).eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "e_score_correction_bias"):
                # a non-zero selection bias, so a test notices if it is dropped or applied to the weights
                m.e_score_correction_bias.normal_(0, 0.05)
    return model
