"""Run reports: Markdown sections and PNG charts that each stage writes next to its outputs.

`k1 demo` stitches the sections into one report card (Markdown and HTML); each stage's section
also stands alone in its output directory.
"""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def training_section(out: Path, history: list[dict], cfg, model_cfg) -> Path:
    """train.png (loss, learning rate, expert load) and report.md for a training run."""
    plt = _plt()
    steps = [h["step"] for h in history]
    evals = [h for h in history if "val_loss" in h]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(steps, [h["loss"] for h in history], label="train loss", lw=1)
    if evals:
        axes[0].plot([h["step"] for h in evals], [h["val_loss"] for h in evals], "o-", label="validation loss")
    axes[0].set_xlabel("step")
    axes[0].set_title("loss")
    axes[0].legend()
    axes[1].plot(steps, [h["lr"] for h in history])
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("step")
    loads = [h for h in evals if h.get("expert_load_max_over_mean")]
    if loads:
        n_layers = len(loads[0]["expert_load_max_over_mean"])
        for layer in range(n_layers):
            axes[2].plot([h["step"] for h in loads], [h["expert_load_max_over_mean"][layer] for h in loads],
                         label=f"MoE {layer}")
        axes[2].axhline(1.0, color="gray", ls=":")
        axes[2].legend(fontsize=7)
    axes[2].set_title("expert load, max / mean (1 = balanced)")
    axes[2].set_xlabel("step")
    fig.tight_layout()
    png = out / "train.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    last = history[-1] if history else {}
    counts = model_cfg.param_counts()
    lines = [
        "## Training",
        "",
        f"- model: {cfg.model} ({counts['total'] / 1e6:.2f}M parameters, {counts['active'] / 1e6:.2f}M active)",
        f"- objective: {cfg.objective}, {cfg.max_steps} steps of {cfg.batch_size}x{cfg.grad_accum} sequences "
        f"x {cfg.seq_len} tokens, lr {cfg.lr} ({cfg.schedule}), precision {cfg.precision}",
        f"- final train loss: {last.get('loss', float('nan')):.4f}"
        + (f", validation loss: {evals[-1]['val_loss']:.4f}" if evals else ""),
        f"- throughput: {last.get('tokens_per_s', 0):,.0f} tokens/s, MFU {100 * last.get('mfu', 0):.1f}%",
    ]
    if loads:
        lines.append(f"- expert load max/mean per MoE layer (last window): {loads[-1]['expert_load_max_over_mean']}, "
                     f"experts never chosen: {loads[-1]['experts_never_chosen']}")
    lines += ["", f"![training]({png.name})", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return md
