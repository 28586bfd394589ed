"""Validation loss of `tiny` pretrained on real Korean text, against the text's unigram entropy.

    python bench/pretrain_curve.py                     # ../shared/data/tokenizer_train Korean files
    python bench/pretrain_curve.py --minutes 4 --vocab 8192

Steps: train a k1 tokenizer on the Korean files, curate and tokenize them with `k1.data.prepare`
(validation split held out by document), pretrain the `tiny` preset for a fixed wall-clock budget,
then print the validation-loss curve next to the unigram entropy of the validation tokens (the loss
of a model that knows token frequencies and nothing else). A model below that line has learned
context. Writes curve.png and results.json under --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from k1 import data as k1data  # noqa: E402
from k1 import tokenizer as k1tok  # noqa: E402
from k1.data.shard import ShardDataset  # noqa: E402
from k1.train import TrainConfig, run  # noqa: E402


def unigram_entropy(train: list[np.ndarray], val: list[np.ndarray], vocab: int) -> float:
    """Cross-entropy (nats/token) of validation tokens under add-one unigram counts from training."""
    counts = np.ones(vocab, dtype=np.float64)
    for a in train:
        counts += np.bincount(np.asarray(a, dtype=np.int64), minlength=vocab)[:vocab]
    logp = np.log(counts / counts.sum())
    total, n = 0.0, 0
    for a in val:
        ids = np.asarray(a, dtype=np.int64)
        total -= logp[ids].sum()
        n += len(ids)
    return total / max(1, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tokenizer_train"))
    ap.add_argument("--out", default="runs/bench_pretrain_curve")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    files = sorted(Path(args.data).glob("ko_*.txt"))
    if not files:
        sys.exit(f"no Korean files (ko_*.txt) in {args.data}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    tok_dir = out / "tokenizer"
    k1tok.train([f"ko:{f}" for f in files], args.vocab, tok_dir, overwrite=True, progress=False, log=lambda *a, **k: None)
    shards = out / "shards"
    if not (shards / "manifest.json").is_file():
        k1data.prepare({
            "out": str(shards), "tasks": 2, "workers": 2, "progress": False,
            "inputs": [{"path": str(f), "format": "text", "text_unit": "paragraph"} for f in files],
            "tokenize": {"tokenizer": str(tok_dir), "validation": 0.05},
        })
    prep_s = time.perf_counter() - t
    train_ds, val_ds = ShardDataset(shards / "manifest.json", "train"), ShardDataset(shards / "manifest.json", "validation")
    vocab = k1tok.load(tok_dir).vocab_size
    h1 = unigram_entropy(list(train_ds), list(val_ds), vocab)

    # Steps that fit the budget: time a short probe first, then run the real schedule.
    probe = run(TrainConfig(out_dir=str(out / "probe"), model="tiny", data=str(shards / "manifest.json"),
                            tokenizer=str(tok_dir), seq_len=args.seq_len, batch_size=args.batch_size, max_steps=10,
                            warmup_steps=2, eval_every=10, save_every=10, peak_tflops=1.0), progress=False)
    step_s = probe.seconds / 10
    steps = max(20, int(args.minutes * 60 / step_s * 0.9))
    res = run(TrainConfig(out_dir=str(out / "run"), model="tiny", data=str(shards / "manifest.json"),
                          tokenizer=str(tok_dir), seq_len=args.seq_len, batch_size=args.batch_size, max_steps=steps,
                          warmup_steps=max(10, steps // 20), lr=3e-3, eval_every=max(10, steps // 12),
                          save_every=steps, eval_batches=16), progress=True)
    curve = [(h["step"], h["val_loss"]) for h in res.history if "val_loss" in h]
    tokens = sum(a.size for a in train_ds)
    print(f"\nKorean text: {len(files)} files, {tokens:,} training tokens (vocab {vocab}); preparation {prep_s:.0f}s")
    print(f"tiny: {steps} steps x {args.batch_size} x {args.seq_len} tokens in {res.seconds:.0f}s "
          f"({res.tokens / res.seconds:,.0f} tokens/s)")
    print(f"unigram entropy of the validation tokens: {h1:.3f} nats/token ({h1 / math.log(2):.2f} bits)")
    print(f"{'step':>6} {'val loss':>9} {'vs unigram':>11}")
    for step, v in curve:
        print(f"{step:>6} {v:>9.3f} {v - h1:>+11.3f}")
    from k1.report import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([s for s, _ in curve], [v for _, v in curve], "o-", label="validation loss (tiny)")
    ax.axhline(h1, color="gray", ls="--", label=f"unigram entropy {h1:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("nats / token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    (out / "results.json").write_text(json.dumps({"unigram_entropy": h1, "curve": curve, "steps": steps,
                                                  "seconds": res.seconds, "train_tokens": tokens}, indent=2))


if __name__ == "__main__":
    main()
