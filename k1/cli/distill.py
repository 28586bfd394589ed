"""`k1 distill [STEP] CONFIG.toml`: distill a teacher into a student (see docs/distill.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

STEPS = ("all", "capture", "generate", "train")


def command(
    step_or_config: str = typer.Argument(
        ...,
        metavar="[STEP] CONFIG",
        help="capture | generate | train (default: all steps), then the TOML config.",
    ),
    config: Path | None = typer.Argument(None, hidden=True),
    resume: bool = typer.Option(
        False, "--resume", help="train: continue from the student's latest checkpoint."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="capture: discard an earlier capture and start again."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a key: --set kd.loss=jsd --set train.max_steps=500."
    ),
):
    """Capture a teacher's top-k logits or verified answers, and train a student on them.

    Steps: capture (logit method: teacher top-k over the token data), generate (sequence method:
    teacher answers, verified, shortest kept), train (the student). Without a step, all the
    method needs. Capture and generate resume where they stopped."""
    from k1 import distill
    from k1.errors import K1Error

    if config is None:
        step, path = "all", Path(step_or_config)
    else:
        step, path = step_or_config, config
    if step not in STEPS:
        raise K1Error(f"unknown step {step!r}; valid: {', '.join(STEPS)} (k1 distill [STEP] CONFIG.toml)")
    cfg = distill.DistillConfig.from_toml(path, overrides=set_)
    if step == "capture":
        if cfg.method != "logit":
            raise K1Error(
                f"{path}: capture is the logit method's step; this config has method = {cfg.method!r}"
            )
        m = distill.capture(cfg, overwrite=overwrite)
        print(
            f"captured {m['stats']['windows']} windows ({m['stats']['tokens']:,} tokens, "
            f"{m['stats']['bytes_per_token']} bytes/token) in {Path(cfg.out_dir) / 'capture'}"
        )
    elif step == "generate":
        if cfg.method != "sequence":
            raise K1Error(
                f"{path}: generate is the sequence method's step; this config has method = {cfg.method!r}"
            )
        rep = distill.generate(cfg)
        print(json.dumps(rep["modes"], ensure_ascii=False))
        print(f"{rep['records']} answers kept in {Path(cfg.out_dir) / 'sequence' / 'sft.jsonl'}")
    else:
        result = (
            distill.train(cfg, resume=resume)
            if step == "train"
            else distill.run(cfg, resume=resume, overwrite=overwrite)
        )
        val = f", validation loss {result.val_loss:.4f}" if result.val_loss is not None else ""
        print(
            f"student trained {result.steps} steps: loss {result.final_loss:.4f}{val}; model in {result.model_dir}"
        )
