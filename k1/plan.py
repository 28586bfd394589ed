"""Cluster plans: what training and serving a k1 config costs, before anyone rents a GPU.

    k1 plan axk1-519b --tokens 10e12 --gpus 1024xH200 --mfu 0.35

Training FLOPs are the model's own count (`ModelConfig.flops_per_token`: 6 x active matmul
weights + causal attention at seq_len, MTP included) times tokens. Memory assumes bf16 weights and
gradients with fp32 master weights and AdamW moments (16 bytes per parameter), sharded by FSDP
across the data-parallel ranks, experts split by expert parallelism (EP) across GPUs, and
activation checkpointing per block. Figures are estimates; the assumptions are printed with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from k1.config import ModelConfig
from k1.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class GPU:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense, no sparsity
    per_node: int = 8


GPUS = {
    "H100": GPU("H100", 80, 989),
    "H200": GPU("H200", 141, 989),
    "B200": GPU("B200", 180, 2250),
    "A100": GPU("A100", 80, 312),
    "L40S": GPU("L40S", 48, 362),
    "MI300X": GPU("MI300X", 192, 1307),
}

# The A.X K1 technical report: ~2.55e24 training FLOPs for ~10T tokens on 1,024 H200 over ~75 days.
AXK1_REPORT = {"flops": 2.55e24, "tokens": 10e12, "gpus": 1024, "gpu": "H200", "days": 75}


def parse_gpus(spec: str) -> tuple[int, GPU]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*([A-Za-z0-9]+)\s*", spec)
    if not m:
        raise ConfigError(f"--gpus {spec!r}: expected COUNTxTYPE, e.g. 1024xH200")
    name = m.group(2).upper()
    if name not in GPUS:
        raise ConfigError(f"unknown GPU type {m.group(2)!r}{did_you_mean(name, list(GPUS))}")
    return int(m.group(1)), GPUS[name]


def plan(cfg: ModelConfig, tokens: float, gpus: str, mfu: float = 0.35, seq_len: int = 8192,
         micro_batch_tokens: int = 8192, serve_context: int = 32768, serve_batch: int = 16) -> dict:
    count, gpu = parse_gpus(gpus)
    if not 0 < mfu <= 1:
        raise ConfigError("--mfu must be in (0, 1]")
    counts = cfg.param_counts()
    total = counts["total"] + counts["mtp"]
    flops = cfg.flops_per_token(seq_len, training=True) * tokens
    seconds = flops / (count * gpu.bf16_tflops * 1e12 * mfu)

    # Expert parallelism: one EP group spans as many whole nodes as there are expert groups, so that
    # node-limited routing (topk_group of n_group groups) bounds how many nodes a token visits.
    nodes = max(1, count // gpu.per_node)
    ep_nodes = min(nodes, cfg.n_group) if cfg.has_moe else 1
    ep = ep_nodes * gpu.per_node if cfg.has_moe else 1
    while cfg.has_moe and cfg.n_routed_experts % ep and ep > 1:
        ep //= 2
    experts_per_gpu = cfg.n_routed_experts / ep if cfg.has_moe else 0
    expert_params = counts["experts"]  # routed + shared expert weights
    dense_params = total - expert_params
    # Training state: bf16 weight + bf16 grad + fp32 master + 2 fp32 moments = 16 bytes per parameter,
    # sharded over all ranks (experts: over the data-parallel replicas of each EP shard).
    state_bytes = 16 * total / count
    # The largest working set: one block's gathered weights (dense part unsharded + this GPU's experts).
    per_layer_dense = (dense_params - counts["embeddings"]) / max(1, cfg.num_hidden_layers)
    per_layer_experts = (expert_params / max(1, cfg.mlp_layer_types.count("sparse"))) / ep if cfg.has_moe else 0
    gathered_bytes = 2 * 2 * (per_layer_dense + per_layer_experts)  # this block + the next one prefetched
    # Activations with per-block checkpointing: each block's input kept, one block recomputed at a time.
    act_bytes = micro_batch_tokens * cfg.hidden_size * 2 * (cfg.num_hidden_layers + cfg.num_nextn_predict_layers)
    act_bytes += micro_batch_tokens * (cfg.hidden_size * 34 + cfg.num_attention_heads * cfg.qk_head_dim * 6) * 2
    logits_bytes = micro_batch_tokens * cfg.vocab_size * 4 / 8  # chunked cross-entropy, 1/8 at a time
    train_gpu = state_bytes + gathered_bytes + act_bytes + logits_bytes

    cache = cfg.kv_cache_bytes_per_token(2) * serve_context * serve_batch
    result = {
        "gpus": count, "gpu": gpu.name, "nodes": nodes, "mfu": mfu, "seq_len": seq_len, "tokens": tokens,
        "params_total": total, "params_active": counts["active"],
        "flops_per_token": cfg.flops_per_token(seq_len, training=True),
        "train_flops": flops, "train_days": seconds / 86400,
        "expert_parallel": ep, "experts_per_gpu": experts_per_gpu,
        "data_parallel_replicas_of_experts": count // ep if ep else count,
        "train_gib_per_gpu": {
            "optimizer+weights+grads (sharded)": state_bytes / 2**30,
            "gathered block weights": gathered_bytes / 2**30,
            "activations (checkpointed)": act_bytes / 2**30,
            "logits (chunked)": logits_bytes / 2**30,
            "total": train_gpu / 2**30,
        },
        "fits": train_gpu / 2**30 <= gpu.memory_gib * 0.9,
        "serve": {
            "context": serve_context, "batch": serve_batch,
            "weights_gib_bf16": 2 * total / 2**30, "weights_gib_fp8": total / 2**30,
            "latent_cache_gib": cache / 2**30,
            "gpus_bf16": _gpus_needed(2 * total + cache, gpu),
            "gpus_fp8": _gpus_needed(total + cache, gpu),
        },
    }
    if cfg.hidden_size == 7168 and cfg.n_routed_experts == 192:
        r = AXK1_REPORT
        report_capacity = r["gpus"] * r["days"] * 86400 * GPUS[r["gpu"]].bf16_tflops * 1e12
        ours = cfg.flops_per_token(seq_len, training=True) * r["tokens"]
        result["axk1_report"] = {
            "report_flops": r["flops"], "k1_flops": ours, "difference": ours / r["flops"] - 1,
            "implied_mfu_report_flops": r["flops"] / report_capacity,
            "implied_mfu_k1_flops": ours / report_capacity,
        }
    return result


def _gpus_needed(nbytes: float, gpu: GPU) -> int:
    usable = gpu.memory_gib * 2**30 * 0.9  # leave room for the runtime and fragmentation
    n = max(1, -(-int(nbytes) // int(usable)))
    return 1 << (n - 1).bit_length()  # tensor/expert parallel degrees are powers of two
