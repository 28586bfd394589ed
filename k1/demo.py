"""`k1 demo`: the whole A.X K1 story at toy scale, end to end, on a laptop.

    k1 demo                 # about 10 minutes on 2 cores: every stage, then a report card
    k1 demo --fast          # a 2-minute smoke version (what the tests run)
    k1 demo --force         # redo finished stages

Stages (each a call into the library, no demo-only code paths):
curate a generated corpus with planted PII canaries -> train a Korean tokenizer and measure it ->
tokenize the curated corpus into shards -> pretrain a small MoE teacher -> Think / Non-Think SFT on
generated Korean arithmetic -> distill a smaller dense student -> evaluate teacher and student ->
write the report (Markdown + HTML + charts) and print how to chat with and serve the result.

Each stage writes its outputs under `out/<stage>/` and a `stage.json` when it completes; a rerun
skips completed stages whose settings have not changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from k1 import atomic
from k1.errors import K1Error

MIN_FREE_BYTES = 300 * 1024**2  # the full demo writes ~100 MB; leave room for the report and logs


@dataclass
class DemoSettings:
    """Sizes of the demo; `fast` shrinks every stage to a smoke test."""

    fast: bool = False
    seed: int = 0
    corpus_docs: int = 1200
    vocab_size: int = 4096
    pretrain_steps: int = 300
    sft_steps: int = 300
    distill_steps: int = 300
    seq_len: int = 256
    batch_size: int = 8
    problems: int = 2000
    eval_problems: int = 100
    threads: int = 2

    @classmethod
    def make(cls, fast: bool, seed: int = 0) -> DemoSettings:
        if not fast:
            return cls(seed=seed)
        return cls(fast=True, seed=seed, corpus_docs=300, vocab_size=1024, pretrain_steps=30, sft_steps=30,
                   distill_steps=20, seq_len=128, batch_size=4, problems=300, eval_problems=20)


@dataclass
class Demo:
    out: Path
    settings: DemoSettings
    force: bool = False
    log: Callable[[str], None] = print
    results: dict[str, dict] = field(default_factory=dict)

    def dir(self, stage: str) -> Path:
        return self.out / stage

    def result(self, stage: str) -> dict:
        return self.results.get(stage) or _read_json(self.dir(stage) / "stage.json")["result"]


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[Demo], dict]


def _fingerprint(settings: DemoSettings, stage: str) -> str:
    from k1 import __version__

    blob = json.dumps({"settings": asdict(settings), "stage": stage, "k1": __version__}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def check_output_dir(out: Path) -> None:
    """Fail early, in one line, when the output directory cannot hold the demo."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"k1")
        probe.unlink()
    except OSError as err:
        raise K1Error(f"cannot write to {out} ({err.strerror or err}); choose another --out") from None
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise K1Error(f"only {free / 2**20:.0f} MiB free on the disk holding {out}; the demo needs "
                      f"{MIN_FREE_BYTES / 2**20:.0f} MiB (free space or choose another --out)")


def run(out: str | Path = "runs/demo", fast: bool = False, force: bool = False, seed: int = 0,
        log: Callable[[str], None] = print) -> Path:
    """Run every stage (skipping finished ones); returns the path of the report."""
    import torch

    out = Path(out)
    check_output_dir(out)
    settings = DemoSettings.make(fast, seed)
    torch.set_num_threads(max(1, min(settings.threads, os.cpu_count() or 1)))
    demo = Demo(out, settings, force, log)
    t0 = time.perf_counter()
    redo = force
    for i, stage in enumerate(STAGES, start=1):
        marker = demo.dir(stage.name) / "stage.json"
        fp = _fingerprint(settings, stage.name)
        if not redo and marker.is_file():
            try:
                saved = _read_json(marker)
            except (OSError, ValueError):
                saved = {}
            if saved.get("fingerprint") == fp:
                demo.results[stage.name] = saved["result"]
                log(f"[{i}/{len(STAGES)}] {stage.title}: done before ({saved['seconds']:.0f}s), skipped")
                continue
        redo = True  # everything after a rerun stage depends on it
        log(f"[{i}/{len(STAGES)}] {stage.title} ...")
        demo.dir(stage.name).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        result = stage.run(demo)
        seconds = time.perf_counter() - start
        demo.results[stage.name] = result
        atomic.write_text(marker, json.dumps({"fingerprint": fp, "seconds": seconds, "result": result},
                                              indent=2, ensure_ascii=False, default=str) + "\n")
        log(f"[{i}/{len(STAGES)}] {stage.title}: {result.get('headline', 'done')} ({seconds:.0f}s)")
    total = time.perf_counter() - t0
    report = out / "report.md"
    log(f"\nk1 demo finished in {total:.0f}s. Report: {report} and {out / 'report.html'}")
    teacher = demo.result("sft")["model_dir"] if "sft" in demo.results else demo.result("pretrain")["model_dir"]
    log(f"Chat with the teacher:  k1 chat {teacher}")
    log("Serve it on this machine (OpenAI-compatible, keys required):")
    log("                         k1 keys create --name me --scopes chat,completions   # prints the key once")
    log(f"                         k1 serve {teacher} --audit {out / 'audit.jsonl'}")
    return report


# ------------------------------------------------------------------------------------- stages


def stage_curate(demo: Demo) -> dict:
    """A generated messy corpus (Korean, English, code; duplicates, junk, planted PII and canaries)
    through the data pipeline; the cleaned text is kept for the tokenizer."""
    from k1 import data as k1data
    from k1 import synth

    s = demo.settings
    out = demo.dir("curate") / "clean"
    shutil.rmtree(out, ignore_errors=True)
    # Worked arithmetic (question, steps, answer) joins the web-like text, as math data joins a real
    # pretraining mix; the held-out test split never appears anywhere in training.
    raw = demo.dir("curate") / "arithmetic.jsonl"
    problems = synth.arithmetic(s.problems, seed=s.seed, split="train")
    per_doc = 4
    with open(raw, "w", encoding="utf-8") as f:
        for i in range(0, len(problems), per_doc):
            text = "\n\n".join(f"{r['question']}\n{r['reasoning']}\n{r['answer_text']}" for r in problems[i : i + per_doc])
            f.write(json.dumps({"id": f"arith-{i}", "text": text}, ensure_ascii=False) + "\n")
    summary = k1data.prepare({
        "out": str(out), "seed": s.seed, "tasks": 2, "workers": 2, "write_text": True, "progress": False,
        "synthetic": {"docs": s.corpus_docs, "seed": s.seed},
        "inputs": [{"path": str(raw), "format": "jsonl", "source": "arithmetic"}],
        "tokenize": {"tokenizer": "byte"},
    })
    leaked = summary.get("canaries", {}).get("leaked", 0)
    if leaked:
        raise K1Error(f"{leaked} PII canaries reached the shards in {out}; see {out / 'report.md'}")
    texts = sorted(str(p) for p in (out / "text").glob("*.jsonl"))
    stages = summary.get("stages") or [{}]
    docs_in, docs_out = stages[0].get("docs_in", 0), sum(summary.get("documents", {}).values())
    pii = sum(summary.get("pii", {}).values())
    return {
        "headline": f"{docs_in} raw -> {docs_out} clean documents, {pii} PII spans scrubbed, "
                    f"{summary['canaries'].get('planted', 0)} canaries planted, {leaked} leaked",
        "texts": texts, "report": str(out / "report.md"), "summary": _small(summary),
    }


def stage_tokenizer(demo: Demo) -> dict:
    from k1 import tokenizer as k1tok

    s = demo.settings
    out = demo.dir("tokenizer") / "tok"
    texts = demo.result("curate")["texts"]
    k1tok.train(texts, s.vocab_size, out, overwrite=True, progress=False, log=lambda *a, **k: None)
    tok = k1tok.load(out)
    # Fertility on text this tokenizer never saw: the corpus k1 ships for tokenizer tests.
    from importlib import resources

    corpus = resources.files("k1") / "assets" / "tokenizer_corpus"
    held_out = [f"{lang}:{corpus / (lang + '.txt')}" for lang in ("ko", "en", "code")]
    rep = k1tok.report(tok, held_out, out_dir=demo.dir("tokenizer") / "fertility", max_chars=200_000,
                       log=lambda *a, **k: None)
    fewer = {ref: {lang: v for lang, v in langs.items() if v is not None}
             for ref, langs in rep.to_dict().get("fewer_than", {}).items()}
    ko = {ref: v.get("ko") for ref, v in fewer.items() if v.get("ko") is not None}
    best = ", ".join(f"{abs(v):.0f}% {'fewer' if v >= 0 else 'more'} than {ref}" for ref, v in ko.items())
    best = f"Korean tokens: {best}" if best else "no reference tokenizer available offline"
    return {"headline": f"vocabulary {tok.vocab_size}; {best}", "dir": str(out), "vocab_size": tok.vocab_size,
            "fewer": fewer, "section": rep.to_markdown(),
            "images": [str((demo.dir("tokenizer") / "fertility").relative_to(demo.out) / p.name)
                       for p in sorted((demo.dir("tokenizer") / "fertility").glob("*.png"))]}


def stage_tokenize(demo: Demo) -> dict:
    """The curated text, tokenized with the new tokenizer into train/validation shards."""
    from k1 import data as k1data

    s = demo.settings
    out = demo.dir("tokenize") / "shards"
    shutil.rmtree(out, ignore_errors=True)
    tok_dir = demo.result("tokenizer")["dir"]
    summary = k1data.prepare({
        "out": str(out), "seed": s.seed, "tasks": 2, "workers": 2, "progress": False,
        "inputs": [{"path": p, "format": "jsonl"} for p in demo.result("curate")["texts"]],
        "dedup": {"exact": False, "near": False},
        "tokenize": {"tokenizer": tok_dir, "validation": 0.05},
    })
    tokens = summary.get("tokens", {})
    return {"headline": f"{tokens.get('train', 0):,} train / {tokens.get('validation', 0):,} validation tokens",
            "manifest": str(out / "manifest.json"), "tokens": tokens}


def stage_pretrain(demo: Demo) -> dict:
    from k1.train import TrainConfig
    from k1.train import run as train

    s = demo.settings
    out = demo.dir("pretrain")
    cfg = TrainConfig(
        out_dir=str(out / "run"), model="tiny", data=demo.result("tokenize")["manifest"],
        tokenizer=demo.result("tokenizer")["dir"], seq_len=s.seq_len, batch_size=s.batch_size,
        max_steps=s.pretrain_steps, warmup_steps=max(1, s.pretrain_steps // 10), lr=3e-3,
        eval_every=max(1, s.pretrain_steps // 5), save_every=s.pretrain_steps, eval_batches=4,
        seed=s.seed, log_every=max(1, s.pretrain_steps // 10),
    )
    res = train(cfg, progress=True)
    return {"headline": f"loss {res.history[0]['loss']:.2f} -> {res.final_loss:.2f}, validation {res.val_loss:.2f}",
            "model_dir": str(res.model_dir), "val_loss": res.val_loss, "final_loss": res.final_loss,
            "report": str(Path(cfg.out_dir) / "report.md"), "tokens_per_s": res.history[-1]["tokens_per_s"]}


def stage_sft(demo: Demo) -> dict:
    """Think / Non-Think SFT of the pretrained teacher on generated Korean arithmetic."""
    from k1 import synth
    from k1.train import TrainConfig
    from k1.train import run as train

    s = demo.settings
    out = demo.dir("sft")
    data = out / "train.jsonl"
    synth.write_jsonl(synth.arithmetic(s.problems, seed=s.seed, split="train"), data)
    cfg = TrainConfig(
        out_dir=str(out / "run"), objective="sft", data_format="chat", data=str(data),
        model=demo.result("pretrain")["model_dir"], think_ratio=0.5, seq_len=2 * s.seq_len,
        batch_size=s.batch_size // 2 or 1, max_steps=s.sft_steps, warmup_steps=max(1, s.sft_steps // 10),
        lr=2e-3, mtp_weight=0.1, eval_every=max(1, s.sft_steps // 3), save_every=s.sft_steps, eval_batches=4,
        seed=s.seed, log_every=max(1, s.sft_steps // 10),
    )
    res = train(cfg, progress=True)
    return {"headline": f"loss {res.history[0]['loss']:.2f} -> {res.final_loss:.2f}, validation {res.val_loss:.2f}",
            "model_dir": str(res.model_dir), "val_loss": res.val_loss, "report": str(Path(cfg.out_dir) / "report.md")}


def stage_distill(demo: Demo) -> dict:
    """Logit distillation of the SFT teacher into a smaller dense student, on the teacher's own
    chat format: conversations rendered in both modes, the teacher's top-k captured over them."""
    import numpy as np

    from k1 import synth
    from k1 import tokenizer as k1tok
    from k1.distill.config import DistillConfig
    from k1.distill.pipeline import run as distill
    from k1.sft import without_reasoning

    s = demo.settings
    out = demo.dir("distill")
    teacher = demo.result("sft")["model_dir"]
    tok = k1tok.load(teacher)
    ids: list[int] = []
    for i, r in enumerate(synth.arithmetic(s.problems, seed=s.seed + 1, split="train")):
        think = i % 2 == 0
        msgs = r["messages"] if think else without_reasoning(r["messages"])
        ids += tok.encode(tok.apply_chat_template(msgs, enable_thinking=think))
    stream = out / "conversations.npy"
    np.save(stream, np.asarray(ids, dtype=np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32))
    cfg = DistillConfig.from_dict({
        "out_dir": str(out / "run"), "method": "logit",
        "teacher": {"path": teacher},
        "capture": {"data": str(stream), "seq_len": s.seq_len, "top_k": 16, "batch_size": s.batch_size},
        "kd": {"loss": "forward_kl", "temperature": 1.0, "ce_weight": 0.5},
        "train": {"max_steps": s.distill_steps, "batch_size": s.batch_size, "lr": 3e-3,
                  "warmup_steps": max(1, s.distill_steps // 10), "mtp_weight": 0.0,
                  "eval_every": max(1, s.distill_steps // 3), "save_every": s.distill_steps, "seed": s.seed,
                  # the student: dense (every layer a plain MLP), half the teacher's width
                  "model": {"init": "tiny", "num_hidden_layers": 2, "hidden_size": 96,
                            "first_k_dense_replace": 2, "intermediate_size": 256,
                            "num_nextn_predict_layers": 0}},
    })
    res = distill(cfg, overwrite=True, progress=True)
    from k1.checkpoint import load

    student = load(res.model_dir)
    n = sum(p.numel() for p in student.parameters())
    return {"headline": f"dense student, {n / 1e6:.2f}M parameters: validation {res.val_loss:.2f}",
            "model_dir": str(res.model_dir), "val_loss": res.val_loss, "parameters": n,
            "report": str(Path(res.out_dir) / "report.md")}


def _mode_eval(demo: Demo, model_dir: str) -> dict:
    import k1
    from k1 import synth, thinking
    from k1 import tokenizer as k1tok

    s = demo.settings
    model = k1.load(model_dir).eval()
    tok = k1tok.load(model_dir)
    test = synth.arithmetic(s.eval_problems, seed=s.seed, split="test")
    results = thinking.evaluate_modes(model, tok, test, max_new_tokens=160 if not s.fast else 64)
    return thinking.mode_summary(results)


def stage_evaluate(demo: Demo) -> dict:
    """Teacher (and student, when there is one) on held-out arithmetic in each mode, plus the
    validation losses and tokenizer fertility measured by earlier stages."""
    models = {"teacher": demo.result("sft")["model_dir"]}
    if "distill" in demo.results:
        models["student"] = demo.result("distill")["model_dir"]
    scores = {name: _mode_eval(demo, path) for name, path in models.items()}
    rows = ["| model | mode | accuracy | mean tokens per answer | mode adherence |", "|---|---|---|---|---|"]
    for name, modes in scores.items():
        for mode, m in modes.items():
            rows.append(f"| {name} | {mode.replace('_', '-')} | {100 * m['accuracy']:.1f}% | "
                        f"{m['mean_tokens']:.1f} | {100 * m['adherence']:.1f}% |")
    chart = demo.dir("evaluate") / "modes.png"
    _modes_chart(scores, chart)
    t = scores["teacher"]
    headline = (f"teacher: think {100 * t['think']['accuracy']:.0f}% in {t['think']['mean_tokens']:.0f} tokens, "
                f"non-think {100 * t['non_think']['accuracy']:.0f}% in {t['non_think']['mean_tokens']:.0f} tokens, "
                f"adherence {100 * (t['think']['adherence'] + t['non_think']['adherence']) / 2:.0f}%")
    return {"headline": headline, "scores": scores, "section": "\n".join(rows),
            "images": [str(chart.relative_to(demo.out))]}


def _modes_chart(scores: dict, path: Path) -> None:
    from k1.report import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    labels, acc, tokens = [], [], []
    for name, modes in scores.items():
        for mode, m in modes.items():
            labels.append(f"{name}\n{mode.replace('_', '-')}")
            acc.append(100 * m["accuracy"])
            tokens.append(m["mean_tokens"])
    axes[0].bar(labels, acc, color="#4c72b0")
    axes[0].set_title("accuracy on held-out arithmetic (%)")
    axes[1].bar(labels, tokens, color="#dd8452")
    axes[1].set_title("generated tokens per answer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stage_report(demo: Demo) -> dict:
    """Stitch every stage's section into report.md and report.html."""
    from k1 import report as rep

    path = rep.demo_report(demo)
    return {"headline": f"{path}", "report": str(path)}


def _small(summary: dict) -> dict:
    """The parts of a data summary worth keeping in stage.json."""
    keep = ("stages", "tokens", "documents", "pii", "canaries", "drops", "languages", "duplicate_clusters", "errors")
    return {k: summary[k] for k in keep if k in summary}


STAGES: list[Stage] = [
    Stage("curate", "curate a corpus (filter, dedup, scrub PII)", stage_curate),
    Stage("tokenizer", "train a Korean tokenizer", stage_tokenizer),
    Stage("tokenize", "tokenize the curated corpus into shards", stage_tokenize),
    Stage("pretrain", "pretrain a small MoE teacher", stage_pretrain),
    Stage("sft", "Think / Non-Think SFT on generated Korean arithmetic", stage_sft),
    Stage("distill", "distill a smaller dense student from the teacher", stage_distill),
    Stage("evaluate", "evaluate teacher and student on held-out problems in each mode", stage_evaluate),
    Stage("report", "write the report", stage_report),
]


def main_entry(out: str, fast: bool, force: bool, seed: int) -> None:
    run(out, fast=fast, force=force, seed=seed, log=lambda m: print(m, file=sys.stderr, flush=True))
