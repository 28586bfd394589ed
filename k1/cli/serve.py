"""`k1 serve MODEL_DIR`: the OpenAI-compatible, access-controlled server (see docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def command(
    model: str = typer.Argument("", help="Model directory (A.X K1 layout with tokenizer files)."),
    config: Path | None = typer.Option(
        None, "--config", help="A TOML serve config (see recipes/serve.toml)."
    ),
    host: str | None = typer.Option(None, help="Interface to bind (default: 127.0.0.1, this machine only)."),
    port: int | None = typer.Option(None, help="Port (default: 8000)."),
    keys: str | None = typer.Option(None, help="API key store (default: $K1_KEYS or ~/.k1/keys.sqlite)."),
    audit: str | None = typer.Option(None, help="Audit log file (default: audit.jsonl)."),
    audit_text: bool | None = typer.Option(
        None,
        "--audit-text/--no-audit-text",
        help="Also log prompts and outputs, PII-scrubbed (default: off).",
    ),
    model_name: str | None = typer.Option(
        None, help="Name clients use in `model` (default: the directory's name)."
    ),
    max_seqs: int | None = typer.Option(None, help="Sequences decoded at once (default: 8)."),
    max_context: int | None = typer.Option(None, help="Tokens per sequence (default: the model's context)."),
    max_queue: int | None = typer.Option(None, help="Requests that may wait; more get 503 (default: 64)."),
    max_tokens: int | None = typer.Option(
        None, help="Largest max_tokens a request may ask for (default: 4096)."
    ),
    max_thinking_tokens: int | None = typer.Option(None, help="Default reasoning cap (default: 2048)."),
    speculative: str | None = typer.Option(
        None, help="MTP speculative decoding: auto, off, mtp (default: auto)."
    ),
    spec_max_batch: int | None = typer.Option(
        None, help="Speculate while at most this many sequences run (default: 2)."
    ),
    dtype: str | None = typer.Option(None, help="Weights dtype: float32, bfloat16 (default: as stored)."),
    quantize: str | None = typer.Option(
        None, help="Weight-only quantization: int8 (half the weight memory; default: none)."
    ),
    pack_weights: bool | None = typer.Option(
        None, "--pack-weights/--no-pack-weights",
        help="bf16 on a CPU: keep a packed copy of the weights, faster at twice their memory (default: on).",
    ),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cpu)."),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: torch's default)."),
):
    """Serve a model on this machine: /v1/chat/completions, /v1/completions, /v1/models, /metrics, /health."""
    import logging

    from k1.serve.config import ServeConfig

    cfg = ServeConfig.from_toml(config) if config else ServeConfig()
    given = dict(
        model=model or None,
        host=host,
        port=port,
        keys=keys,
        audit=audit,
        audit_text=audit_text,
        model_name=model_name,
        max_seqs=max_seqs,
        max_context=max_context,
        max_queue=max_queue,
        max_tokens=max_tokens,
        max_thinking_tokens=max_thinking_tokens,
        speculative=speculative,
        spec_max_batch=spec_max_batch,
        dtype=dtype,
        quantize=quantize,
        pack_weights=pack_weights,
        device=device,
        threads=threads,
    )
    for name, value in given.items():
        if value is not None:
            setattr(cfg, name, value)
    cfg.validate()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from k1.serve.app import run

    run(cfg)
