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
    axes[0].plot(steps, [h["loss"] for h in history], label="train loss (incl. weighted MTP)", lw=1)
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


# ------------------------------------------------------------------------------------- demo report card

_CSS = """body{font-family:system-ui,'Noto Sans KR',sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5;padding:1px 4px}"""


def _rel(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _images(md_path: str | None, root: Path) -> list[str]:
    """PNG charts next to a stage's own report, as paths relative to the demo's output."""
    if not md_path or not Path(md_path).is_file():
        return []
    folder = Path(md_path).parent
    return [_rel(p, root) for p in sorted(folder.glob("*.png"))]


def demo_report(demo) -> Path:
    """report.md and report.html for `k1 demo`, from each stage's recorded result."""
    root = demo.out
    lines = ["# k1 demo: the A.X K1 pipeline at toy scale", ""]
    lines += ["| stage | result |", "|---|---|"]
    for name, res in demo.results.items():
        lines.append(f"| {name} | {res.get('headline', '')} |")
    lines.append("")
    for name, res in demo.results.items():
        section = res.get("section")
        lines.append(f"## {name}")
        lines.append("")
        if section:
            lines += [section, ""]
        elif res.get("headline"):
            lines += [res["headline"], ""]
        for img in res.get("images", []) or _images(res.get("report"), root):
            lines.append(f"![{Path(img).stem}]({img})")
        lines.append("")
    md = "\n".join(lines)
    (root / "report.md").write_text(md, encoding="utf-8")
    import markdown

    body = markdown.markdown(md, extensions=["tables"])
    html = f"<!doctype html><html lang=ko><meta charset=utf-8><title>k1 demo</title><style>{_CSS}</style><body>{body}</body></html>"
    (root / "report.html").write_text(html, encoding="utf-8")
    return root / "report.md"
