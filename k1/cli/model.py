"""`k1 model`: look at an architecture before spending compute on it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


def _config(preset_or_dir: str):
    from k1.checkpoint import _read_config
    from k1.config import PRESETS, ModelConfig
    from k1.errors import K1Error, did_you_mean

    if Path(preset_or_dir).is_dir():
        return _read_config(Path(preset_or_dir))[1], preset_or_dir
    if preset_or_dir in PRESETS:
        return ModelConfig.preset(preset_or_dir), preset_or_dir
    raise K1Error(f"{preset_or_dir!r} is neither a model directory nor a preset{did_you_mean(preset_or_dir, list(PRESETS))}")


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _bytes(n: float) -> str:
    for scale, suffix in ((1024**4, "TiB"), (1024**3, "GiB"), (1024**2, "MiB"), (1024, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


@app.command()
def info(
    model: str = typer.Argument(..., help="A preset name (tiny, small, base, axk1-519b) or a model directory."),
    seq_len: int = typer.Option(4096, help="Sequence length for the attention part of the FLOP count."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
):
    """Architecture, parameter counts, memory, KV cache and FLOPs (nothing is allocated)."""
    from rich.console import Console
    from rich.table import Table

    cfg, name = _config(model)
    s = cfg.summary(seq_len)
    if as_json:
        print(json.dumps(s, indent=2))
        return
    p = s["params"]
    t = Table(title=f"k1 model: {name}", show_header=False)
    for key in ("layers", "hidden", "attention", "experts", "vocab", "context", "rope"):
        t.add_row(key, str(s[key]))
    t.add_section()
    t.add_row("parameters, total", _human(p["total"]))
    t.add_row("active per token", f"{_human(p['active'])} ({100 * p['active'] / p['total']:.1f}%)")
    for key in ("embeddings", "attention", "dense_mlp", "experts", "experts_active", "router", "mtp"):
        t.add_row(f"  {key.replace('_', ' ')}", _human(p[key]))
    t.add_section()
    t.add_row("weights, bf16", _bytes(s["weights_bytes_bf16"]))
    t.add_row("weights, fp8", _bytes(s["weights_bytes_fp8"]))
    t.add_row("KV cache per token (bf16 latent)", _bytes(s["kv_cache_bytes_per_token_bf16"]))
    t.add_row(f"training FLOPs per token (seq {seq_len})", _human(s["train_flops_per_token"]))
    Console().print(t)


@app.command()
def presets():
    """List the named presets with their sizes."""
    from k1.config import PRESETS

    for name, cfg in PRESETS.items():
        p = cfg.param_counts()
        print(f"{name:10s} total {_human(p['total']):>8s}  active {_human(p['active']):>8s}  "
              f"layers {cfg.num_hidden_layers:3d}  hidden {cfg.hidden_size:5d}  experts {cfg.n_routed_experts}")


@app.command()
def init(
    preset: str = typer.Argument(..., help="Preset name."),
    out: Path = typer.Option(..., "--out", help="Directory to write (a Hugging Face A.X K1 directory)."),
    vocab_size: int = typer.Option(None, help="Override the preset's vocabulary size."),
    seed: int = typer.Option(0, help="Random seed for the initial weights."),
):
    """Write a randomly initialized model directory (for tests, or as a training start)."""
    import torch

    from k1.checkpoint import save
    from k1.config import ModelConfig
    from k1.model import Transformer

    overrides = {"vocab_size": vocab_size} if vocab_size else {}
    cfg = ModelConfig.preset(preset, **overrides)
    torch.manual_seed(seed)
    save(Transformer(cfg), out)
    print(f"wrote {out}")


@app.command()
def check(model: Path = typer.Argument(..., help="A model directory.")):
    """Load every tensor of a model directory and check it against its config.json."""
    from k1.checkpoint import load

    m = load(model)
    n = sum(p.numel() for p in m.parameters())
    print(f"ok: {model} ({n:,} parameters, {m.config.num_hidden_layers} layers, "
          f"{m.config.num_nextn_predict_layers} MTP)")
