"""`k1 sft CONFIG.toml`: Think / Non-Think supervised fine-tuning (the training loop with SFT defaults)."""

from __future__ import annotations

import os
from pathlib import Path

import typer


def command(
    config: Path = typer.Argument(
        ..., help="A TOML config (see recipes/sft_demo.toml); keys as for `k1 train`."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in out_dir."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: --set think_ratio=0.3 --set lr=1e-4."
    ),
):
    """Fine-tune on chat data: loss on assistant tokens, packed conversations, think and non-think mixed."""
    from k1.sft import load_config
    from k1.train import run

    cfg = load_config(config, overrides=set_)
    result = run(cfg, resume=resume)
    if os.environ.get("RANK", "0") == "0":
        val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
        print(
            f"fine-tuned {result.steps} steps: loss {result.final_loss:.4f}{val}; model in {result.model_dir}"
        )
