"""Distributed training, applied from outside the model (as torchtitan's parallelize.py does).

Under `torchrun --nproc_per_node=N`, `init()` joins the process group (gloo on CPU, NCCL on
GPU) and `wrap()` shards each decoder block, each MTP module and then the whole model with FSDP2
(`fully_shard`). Checkpoints are gathered as full state dicts keyed by parameter name, so a run
saved on N ranks resumes on M. Without torchrun everything here is a no-op and k1 runs as one
process. `k1/model.py` knows nothing of any of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> Dist:
    """Join the process group that torchrun describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world <= 1:
        return Dist(device=dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=dev)


def wrap(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """FSDP2: every block is its own shard group, so only one block's full weights live at a time."""
    if not d.enabled:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(d.device.type, (d.world,))
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    for module in model.mtp:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def all_reduce(t: torch.Tensor, d: Dist, op: str = "sum") -> torch.Tensor:
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        if op == "mean":
            t /= d.world
    return t


def full_state(model, optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts keyed by parameter name, on the CPU.
    Every rank must call this; under FSDP only rank 0 gets the tensors."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def load_full_state(model, optimizer, model_state: dict, optim_state: dict | None, d: Dist) -> None:
    """Load full state dicts into a (possibly sharded) model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, model_state, options=opts)
    if optim_state is not None:
        set_optimizer_state_dict(model, optimizer, optim_state, options=opts)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
