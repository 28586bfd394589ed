"""Think vs Non-Think on held-out arithmetic: accuracy, tokens per answer, mode adherence.

Builds everything here, on CPU, with no downloads (a few minutes on one thread):

1. generated Korean arithmetic problems (k1.synth): a train split and a held-out test split;
2. a small tokenizer trained on k1's shipped corpus plus the training problems;
3. the `tiny` preset pretrained briefly on the training problems as plain text (objective "pretrain");
4. SFT (objective "sft", data format "chat") on the same problems as conversations, think_ratio
   of them with their reasoning trace, the rest without;
5. greedy generation on the held-out problems in each mode through the chat template.

    python bench/think_modes.py                       # defaults: the figures in docs/sft.md
    python bench/think_modes.py --sft-steps 600 --out runs/bench_think

Prints a table and writes results.json and report.md under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from k1 import synth, thinking  # noqa: E402
from k1 import tokenizer as tokenizer_mod  # noqa: E402
from k1.generate import generate  # noqa: E402
from k1.train import TrainConfig, run  # noqa: E402


def build_tokenizer(out: Path, problems: list[dict], vocab: int) -> Path:
    from importlib import resources

    text_dir = out / "tok_text"
    text_dir.mkdir(parents=True, exist_ok=True)
    (text_dir / "synth.txt").write_text(
        "\n".join(f"{r['question']}\n{r['reasoning']}\n{r['answer_text']}" for r in problems),
        encoding="utf-8",
    )
    corpus = resources.files("k1") / "assets" / "tokenizer_corpus"
    inputs = [f"ko:{text_dir / 'synth.txt'}", f"ko:{corpus / 'ko.txt'}", f"en:{corpus / 'en.txt'}"]
    config = tokenizer_mod.TokenizerConfig(vocab_size=vocab, weights={"ko": 0.9, "en": 0.1, "code": 0.0})
    tokenizer_mod.train(
        inputs,
        vocab,
        out / "tokenizer",
        config=config,
        threads=1,
        overwrite=True,
        progress=False,
        log=lambda *_: None,
    )
    return out / "tokenizer"


def pretrain_tokens(tok, problems: list[dict], path: Path) -> Path:
    """Problems as plain text (question, worked steps, answer), one document after another."""
    texts = [f"{r['question']}\n{r['reasoning']}\n{r['answer_text']}" for r in problems]
    ids = []
    for piece in tok.encode_batch(texts):
        ids.extend([tok.bos_id, *piece, tok.eos_id])
    np.save(path, np.asarray(ids, dtype=np.uint16))
    return path


def evaluate(
    model, tok, problems: list[dict], think: bool, max_new: int, batch: int
) -> list[thinking.Result]:
    out = []
    for i in range(0, len(problems), batch):
        chunk = problems[i : i + batch]
        prompts = [
            tok.apply_chat_template(
                [{"role": "user", "content": r["question"]}],
                add_generation_prompt=True,
                enable_thinking=think,
                tokenize=True,
            )
            for r in chunk
        ]
        gens = generate(model, prompts, max_new_tokens=max_new, temperature=0.0, stop_token_ids=tok.stop_ids)
        for r, g in zip(chunk, gens, strict=True):
            out.append(thinking.Result(think, tok.decode(g.tokens), len(g.tokens), r["answer"], r["level"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench_think")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--pretrain-steps", type=int, default=100)
    ap.add_argument("--sft-steps", type=int, default=150)
    ap.add_argument("--think-ratio", type=float, default=0.5)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    times = {}

    t = time.perf_counter()
    train_set = synth.arithmetic(args.n_train, seed=args.seed, split="train")
    test_set = synth.arithmetic(args.n_test, seed=args.seed, split="test")
    assert not {r["question"] for r in train_set} & {r["question"] for r in test_set}
    synth.write_jsonl(train_set, out / "train.jsonl")
    synth.write_jsonl(test_set, out / "test.jsonl")
    tok_dir = build_tokenizer(out, train_set, args.vocab)
    tok = tokenizer_mod.load(tok_dir)
    times["data_and_tokenizer_s"] = time.perf_counter() - t

    common = dict(
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        precision="bf16",
        peak_tflops=1.0,
        threads=args.threads,
        seed=args.seed,
        tokenizer=str(tok_dir),
        mtp_weight=0.0,
        eval_batches=4,
        keep_last=1,
    )
    t = time.perf_counter()
    tokens = pretrain_tokens(tok, train_set, out / "pretrain.npy")
    pre = run(
        TrainConfig(
            out_dir=str(out / "pretrain"),
            model="tiny",
            model_overrides={"vocab_size": tok.vocab_size},
            data=str(tokens),
            max_steps=args.pretrain_steps,
            lr=4e-3,
            warmup_steps=20,
            eval_every=args.pretrain_steps,
            save_every=args.pretrain_steps,
            **common,
        ),
        progress=False,
    )
    times["pretrain_s"] = time.perf_counter() - t

    t = time.perf_counter()
    sft = run(
        TrainConfig(
            out_dir=str(out / "sft"),
            model=str(pre.model_dir),
            data=str(out / "train.jsonl"),
            objective="sft",
            data_format="chat",
            think_ratio=args.think_ratio,
            max_steps=args.sft_steps,
            lr=2e-3,
            warmup_steps=10,
            eval_every=args.sft_steps,
            save_every=args.sft_steps,
            **common,
        ),
        progress=False,
    )
    times["sft_s"] = time.perf_counter() - t

    import k1

    model = k1.load(sft.model_dir).eval()
    t = time.perf_counter()
    with torch.inference_mode():
        results = evaluate(model, tok, test_set, True, args.max_new_tokens, 50)
        results += evaluate(model, tok, test_set, False, args.max_new_tokens, 50)
    times["eval_s"] = time.perf_counter() - t
    summary = thinking.mode_summary(results)
    # The scorer on the reference replies themselves: anything below 100% is a bug in the measuring.
    reference = [
        thinking.Result(True, f"{r['reasoning']}\n</think>\n\n{r['answer_text']}", 0, r["answer"])
        for r in test_set
    ] + [thinking.Result(False, r["answer_text"], 0, r["answer"]) for r in test_set]
    ref = thinking.mode_summary(reference)
    assert all(ref[m]["accuracy"] == 1.0 and ref[m]["adherence"] == 1.0 for m in ref), ref

    lines = [
        "| mode | problems | accuracy | mean generated tokens | mode adherence | accuracy by level (1/2/3/4) |",
        "|---|---|---|---|---|---|",
    ]
    for name in ("think", "non_think"):
        s = summary[name]
        by_level = " / ".join(f"{100 * v:.0f}%" for v in s["accuracy_by_level"].values())
        lines.append(
            f"| {name.replace('_', '-')} | {s['n']} | {100 * s['accuracy']:.1f}% | {s['mean_tokens']:.1f} | "
            f"{100 * s['adherence']:.1f}% | {by_level} |"
        )
    n_all = sum(s["n"] for s in summary.values())
    adherence = sum(s["adherence"] * s["n"] for s in summary.values()) / n_all
    params = model.config.param_counts()
    info = (
        f"tiny preset ({params['total'] / 1e6:.2f}M parameters, {params['active'] / 1e6:.2f}M active), "
        f"tokenizer {tok.vocab_size} ids; pretrain {args.pretrain_steps} steps (loss {pre.final_loss:.3f}), "
        f"SFT {args.sft_steps} steps x {args.batch_size} x {args.seq_len} tokens, think_ratio {args.think_ratio} "
        f"(val loss {sft.val_loss:.3f}); {args.n_train} training problems, {args.n_test} held-out; greedy, "
        f"{args.threads} thread(s); seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items())
    )
    table = "\n".join(lines)
    report = f"{table}\n\nOverall mode adherence: {100 * adherence:.1f}%.\n\n{info}\n"
    print(report)
    examples = {
        name: [r.completion for r in results if r.think == flag][:3]
        for name, flag in (("think", True), ("non_think", False))
    }
    (out / "results.json").write_text(
        json.dumps(
            {
                "summary": summary,
                "adherence": adherence,
                "times": times,
                "args": vars(args),
                "examples": examples,
            },
            ensure_ascii=False,
            indent=2,
        ),
        encoding="utf-8",
    )
    (out / "report.md").write_text("## Think / Non-Think\n\n" + report, encoding="utf-8")


if __name__ == "__main__":
    main()
