"""The distillation job end to end: teacher output first (capture or generate), then the student.

    k1 distill recipes/distill_demo.toml           # all steps the config's method needs
    k1 distill capture|generate|train CONFIG.toml  # one step

The student is trained by k1's one training loop (k1.train.run): logit distillation with objective
"kd" on data format "kd" (the capture, or the teacher online); sequence-level distillation with
objective "sft" on data format "chat" (the kept answers). `<out_dir>/distill.md` is the run-report
section: teacher, what it produced and at what cost, and the student's losses.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from k1.distill.config import DistillConfig
from k1.errors import ConfigError, K1Error


def _teacher_tokenizer(cfg: DistillConfig) -> str:
    t = cfg.teacher
    if t.tokenizer:
        return t.tokenizer
    if not t.path.startswith(("http://", "https://")) and (Path(t.path) / "tokenizer.json").is_file():
        return t.path
    return ""


def train_config(cfg: DistillConfig):
    """The student's TrainConfig: the [train] table plus what the method implies."""
    from k1.distill.logits import read_manifest
    from k1.distill.sequence import SFT_FILE
    from k1.train import TrainConfig

    raw = dict(cfg.train)
    out = Path(cfg.out_dir)
    raw.setdefault("out_dir", str(out / "student"))
    model = raw.get("model")
    init = model.get("init", model.get("preset")) if isinstance(model, dict) else model
    if isinstance(init, str) and (Path(init) / "config.json").is_file():
        try:
            model_type = json.loads((Path(init) / "config.json").read_text(encoding="utf-8")).get(
                "model_type"
            )
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            model_type = None
        if model_type != "axk1":
            raise K1Error(
                f"train.model {init}: a {model_type!r} model; k1's training loop trains A.X K1-architecture "
                f'students (a preset or an axk1 directory). For other architectures use method = "sequence" '
                f"and train on {out / 'sequence' / SFT_FILE} (OpenAI-style messages) with their own trainer"
            )
    tok = _teacher_tokenizer(cfg)
    if cfg.method == "logit":
        c = cfg.capture
        if raw.setdefault("seq_len", c.seq_len) != c.seq_len:
            raise ConfigError(
                f"{cfg.source}: train.seq_len {raw['seq_len']} differs from capture.seq_len {c.seq_len}"
            )
        raw.update(data_format="kd", objective="kd", objective_options=asdict(cfg.kd))
        if cfg.online:
            raw.update(
                data=c.data,
                val_data=c.val_data,
                val_fraction=c.val_fraction,
                teacher=cfg.teacher.path,
                teacher_top_k=c.top_k,
            )
        else:
            raw["data"] = str(out / "capture")
            read_manifest(raw["data"])  # a clear error when the capture step has not run
        if tok:
            raw.setdefault("tokenizer", tok)
    else:
        raw.update(data=str(out / "sequence" / SFT_FILE), data_format="chat", objective="sft")
        raw.setdefault("think_ratio", 1.0)  # each kept answer is trained in the mode it was given in
        if tok:
            raw.setdefault("tokenizer", tok)
        if not (out / "sequence" / SFT_FILE).is_file():
            raise K1Error(f"{out / 'sequence' / SFT_FILE}: not there yet; run `k1 distill generate` first")
    return TrainConfig.from_dict(raw, source=f"{cfg.source} [train]")


def train(cfg: DistillConfig, resume: bool = False, progress: bool = True):
    from k1.train import run

    result = run(train_config(cfg), resume=resume, progress=progress)
    write_report(cfg, result)
    return result


def run(cfg: DistillConfig, resume: bool = False, overwrite: bool = False, progress: bool = True):
    """Every step the method needs, each resumable; returns the student's TrainResult."""
    if cfg.method == "logit" and not cfg.online:
        from k1.distill.logits import capture

        capture(cfg, overwrite=overwrite, progress=progress)
    elif cfg.method == "sequence":
        from k1.distill.sequence import generate

        generate(cfg, progress=progress)
    return train(cfg, resume=resume, progress=progress)


def write_report(cfg: DistillConfig, result) -> Path:
    """<out_dir>/distill.md and distill.json: teacher, its output and cost, the student's figures."""
    out = Path(cfg.out_dir)
    info: dict = {"method": cfg.method, "online": cfg.online, "kd": asdict(cfg.kd)}
    lines = ["## Distillation", ""]
    if cfg.method == "logit" and not cfg.online and (out / "capture" / "manifest.json").is_file():
        m = json.loads((out / "capture" / "manifest.json").read_text(encoding="utf-8"))
        st, t = m.get("stats", {}), m.get("teacher", {})
        info.update(teacher=t, capture=st)
        lines += [
            f"Teacher: {t.get('kind')} `{t.get('path')}` ({t.get('vocab_size')} logits). "
            f"Captured top-{m['settings']['top_k']} ({m['settings']['dtype']}) over {st.get('tokens', 0):,} tokens: "
            f"{st.get('seconds_per_1k_tokens')} s per 1k tokens, {st.get('bytes_per_token')} bytes per token.",
            "",
        ]
    if cfg.method == "sequence" and (out / "sequence" / "report.json").is_file():
        rep = json.loads((out / "sequence" / "report.json").read_text(encoding="utf-8"))
        info["sequence"] = rep
        lines += [
            "| mode | answers | keep mode | correct | prompts solved | mean tokens (correct) | mean tokens (kept) |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode, s in rep["modes"].items():
            lines.append(
                f"| {mode} | {s['answers']} | {s['keep_mode']} | {s['correct']} | {s['prompts_solved']}/{s['prompts']} "
                f"| {s['mean_tokens_correct']} | {s['mean_tokens_kept']} |"
            )
        lines.append("")
    kd = cfg.kd
    objective = (
        f"kd ({kd.loss}, temperature {kd.temperature}, ce_weight {kd.ce_weight})"
        if cfg.method == "logit"
        else "sft on the kept answers"
    )
    val = f"{result.val_loss:.4f}" if result.val_loss is not None else "n/a"
    lines += [
        f"Student: {result.steps} steps of {objective}; final loss {result.final_loss:.4f}, validation "
        f"cross-entropy {val}; model in `{result.model_dir}`.",
        "",
    ]
    info["student"] = {
        "steps": result.steps,
        "final_loss": result.final_loss,
        "val_loss": result.val_loss,
        "model_dir": str(result.model_dir),
        "seconds": result.seconds,
    }
    for name, text in (
        ("distill.md", "\n".join(lines)),
        ("distill.json", json.dumps(info, indent=2, default=str)),
    ):
        tmp = out / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out / name)
    return out / "distill.md"
