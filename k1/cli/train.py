"""`k1 train CONFIG.toml`: pretrain (or continue) a model from token shards."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def command(
    config: Path = typer.Argument(..., help="A TOML training config (see recipes/)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in out_dir."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set lr=1e-3 --set model.hidden_size=256."),
):
    """Train a model; the same command runs under torchrun for FSDP2 across processes."""
    from k1.train import TrainConfig, run

    cfg = TrainConfig.from_toml(config, overrides=set_)
    result = run(cfg, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
        print(f"trained {result.steps} steps: loss {result.final_loss:.4f}{val}; model in {result.model_dir}")
