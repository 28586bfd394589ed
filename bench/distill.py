"""Distillation benchmark: the same student, distilled from a teacher vs trained on hard labels only.

    python bench/distill.py                    # a few minutes on ONE CPU thread
    python bench/distill.py --quick            # a smoke run (numbers mean little)
    python bench/distill.py --out runs/bench_distill --steps 300 --teacher-steps 600

Data: k1.synth's Korean arithmetic word problems (--levels) rendered with the chat template (think
and non-think), one conversation at the start of every window and the rest of it filled with Korean
movie reviews (../shared/data/ko_text/nsmc_reviews.txt, read only), so no conversation is cut by a
window boundary (--no-pack: one shuffled stream); tokenized with a k1 tokenizer trained on k1's
shipped corpus. Held out: 10% of the reviews and test-split problems (never in training, by
k1.synth's hash split).

1. teacher: a k1 MoE trained here from scratch for --teacher-steps;
2. capture: its top-k (fp16) over every training window: s per 1k tokens, bytes per token;
3. two students of the same smaller config, seed and batches (checked): one on hard labels
   (objective "pretrain"), one distilled (objective "kd" on the capture), the same steps;
4. both: cross-entropy on every held-out window, and greedy accuracy on --eval-problems held-out
   arithmetic problems in think and non-think mode, with counts and a paired comparison of the two
   students (difference, 95% interval, McNemar's exact p); the teacher too, for reference;
5. step time of the KD objective vs plain cross-entropy on the same student and batch
   (forward + backward, interleaved repeats, median);
6. memory of the KD loss at A.X K1's vocabulary (163,840), chunked vs on whole logits, for 256
   and 1,024 positions (peak RSS of a separate process each).

Writes <out>/results.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    for cand in (
        os.environ.get("K1_SHARED_DATA", ""),
        ROOT.parent / "shared" / "data",
        ROOT.parents[1] / "shared" / "data",
    ):
        if cand and (Path(cand) / "ko_text" / "nsmc_reviews.txt").is_file():
            return Path(cand)
    sys.exit("bench/distill.py: ../shared/data/ko_text/nsmc_reviews.txt not found (set K1_SHARED_DATA)")


def conversation(tok, rec: dict, think: bool) -> list[int]:
    msgs = [dict(m) for m in rec["messages"]]
    if not think:
        msgs[-1].pop("reasoning_content", None)
    return tok.encode(tok.apply_chat_template(msgs, enable_thinking=think))


def pack_windows(
    convs: list[list[int]], reviews: list[list[int]], seq_len: int, eos: int
) -> tuple[np.ndarray, int]:
    """One conversation at the start of every window of seq_len tokens, the rest filled with reviews
    (in order; the last one cut at the window's end): no conversation is cut by a window boundary,
    so every answer is trained (and captured) with its question. Windows overlap by one token as in
    k1.train.TokenWindows (window w is tokens w * seq_len .. (w + 1) * seq_len). Returns the stream
    and the number of reviews used."""
    rows, used = [], 0
    for conv in convs:
        row = list(conv[:seq_len])
        while used < len(reviews) and len(row) < seq_len:
            row += reviews[used][: seq_len - len(row)]
            used += 1
        rows.append(row + [eos] * (seq_len - len(row)))
    return np.asarray([t for row in rows for t in row] + [eos], dtype=np.uint16), used


def build_data(out: Path, tok, args) -> dict:
    from k1 import synth

    rng = np.random.default_rng(0)
    lines = [
        s.strip()
        for s in (shared_data() / "ko_text" / "nsmc_reviews.txt").read_text(encoding="utf-8").splitlines()
    ]
    lines = [s for s in lines if s]
    rng.shuffle(lines)
    cut = int(len(lines) * 0.9)
    train_lines = lines[: min(cut, args.reviews)] if args.reviews else lines[:cut]
    levels = synth.parse_levels(args.levels)
    train_probs = synth.arithmetic(args.problems, seed=0, levels=levels, split="train")
    val_probs = synth.arithmetic(args.problems // 10, seed=2, levels=levels, split="test")
    eos = tok.eos_id

    def stream(reviews, probs, seed):
        r = np.random.default_rng(seed)
        convs = [conversation(tok, p, think=bool(r.random() < args.think_share)) + [eos] for p in probs]
        convs = [convs[i] for i in r.permutation(len(convs))]
        docs = [tok.encode(s) + [eos] for s in reviews]
        if args.pack:
            return pack_windows(convs, docs, args.seq_len, eos)
        docs += convs
        order = r.permutation(len(docs))
        return np.concatenate([np.asarray(docs[i], dtype=np.uint16) for i in order]), len(reviews)

    train, train_reviews = stream(train_lines, train_probs, 1)
    val, val_reviews = stream(lines[cut:], val_probs, 2)
    np.save(out / "train.npy", train)
    np.save(out / "val.npy", val)
    return {
        "train_tokens": int(len(train)),
        "val_tokens": int(len(val)),
        "reviews_train": train_reviews,
        "reviews_val": val_reviews,
        "problems_train": len(train_probs),
        "problems_val": len(val_probs),
        "levels": list(levels),
        "packed": bool(args.pack),
    }


def train_cfg(out_dir: Path, data: str, args, steps: int, model: dict, **kw):
    from k1.train import TrainConfig

    base = dict(
        out_dir=str(out_dir),
        data=data,
        val_data=str(out_dir.parent / "val.npy"),
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        max_steps=steps,
        lr=args.lr,
        warmup_steps=max(1, steps // 20),
        schedule="cosine",
        eval_every=steps,
        save_every=steps,
        eval_batches=4,
        precision="fp32",
        peak_tflops=1.0,
        mtp_weight=0.0,
        threads=1,
        seed=0,
        log_every=50,
        tokenizer=str(out_dir.parent / "tok"),
        model="tiny",
        model_overrides=model,
    )
    base.update(kw)
    return TrainConfig(**base)


@torch.no_grad()
def val_ce(model, val_windows, batch: int) -> float:
    """Mean next-token cross-entropy over every held-out window."""
    from k1.objectives import OBJECTIVES

    total, count = 0.0, 0
    for first in range(0, val_windows.n, batch):
        n = min(batch, val_windows.n - first)
        b = val_windows.fixed_batch(first, n)
        loss, _ = OBJECTIVES["pretrain"](model, b, mtp_weight=0.0)
        total += float(loss) * n
        count += n
    return total / count


def task_accuracy(model, tok, problems, max_new: int) -> dict:
    from k1.generate import SamplingParams, generate
    from k1.thinking import Result, mode_summary

    results = []
    for think in (True, False):
        prompts = [
            tok.encode(
                tok.apply_chat_template(
                    [{"role": "user", "content": p["question"]}],
                    add_generation_prompt=True,
                    enable_thinking=think,
                )
            )
            for p in problems
        ]
        params = SamplingParams(max_new_tokens=max_new, temperature=0.0, stop_token_ids=tok.stop_ids)
        for start in range(0, len(prompts), 64):
            outs = generate(model, prompts[start : start + 64], params)
            for p, o in zip(problems[start : start + 64], outs, strict=True):
                results.append(Result(think, tok.decode(o.tokens), len(o.tokens), p["answer"], p["level"]))
    s = mode_summary(results)
    return {
        m: {
            "correct": sum(r.correct for r in results if r.think == (m == "think")),
            "n": v["n"],
            "accuracy": round(v["accuracy"], 4),
            "mean_tokens": round(v["mean_tokens"], 1),
            "adherence": round(v["adherence"], 4),
            "per_problem": [int(r.correct) for r in results if r.think == (m == "think")],
        }
        for m, v in s.items()
    }


def paired_comparison(a: list[int], b: list[int]) -> dict:
    """b vs a on the same problems: the difference in accuracy with a 95% interval (normal
    approximation for paired proportions) and McNemar's exact two-sided p-value (a binomial test on
    the problems exactly one of the two solves)."""
    n = len(a)
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    d = (only_b - only_a) / n
    se = math.sqrt(max(0.0, (only_a + only_b) / n - d * d) / n)
    m = only_a + only_b
    tail = sum(math.comb(m, i) for i in range(min(only_a, only_b) + 1)) / 2**m if m else 1.0
    return {
        "difference": round(d, 4),
        "ci95": [round(d - 1.96 * se, 4), round(d + 1.96 * se, 4)],
        "only_first": only_a,
        "only_second": only_b,
        "mcnemar_p": round(min(1.0, 2 * tail), 4),
    }


def task_ce(model, tok, problems) -> float:
    """Mean cross-entropy of the worked solution (think mode: reasoning, answer, end of turn) given
    the question: how well a model knows the task when it cannot yet solve it outright."""
    total, count = 0.0, 0
    with torch.no_grad():
        for p in problems:
            prompt = tok.encode(
                tok.apply_chat_template([p["messages"][0]], add_generation_prompt=True, enable_thinking=True)
            )
            full = conversation(tok, p, think=True)
            assert full[: len(prompt)] == prompt
            ids = torch.tensor(full)[None]
            logp = torch.log_softmax(model(ids[:, :-1]).float(), -1)[0]
            tgt = ids[0, 1:]
            nll = -logp[torch.arange(len(tgt)), tgt][len(prompt) - 1 :]
            total += float(nll.sum())
            count += len(nll)
    return total / count


def step_overhead(model, batch: dict, kd_options: dict, repeats: int) -> dict:
    """Forward + backward time of the KD objective vs cross-entropy, same model, same batch."""
    from k1.objectives import OBJECTIVES

    plain = {"input_ids": batch["input_ids"]}
    model.train()
    times = {"ce": [], "kd": []}
    for _ in range(repeats + 1):  # the first round warms up
        for name, fn, b, kw in (
            ("ce", OBJECTIVES["pretrain"], plain, {}),
            ("kd", OBJECTIVES["kd"], batch, kd_options),
        ):
            t0 = time.perf_counter()
            loss, _ = fn(model, b, mtp_weight=0.0, **kw)
            loss.backward()
            times[name].append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
    ce, kd = statistics.median(times["ce"][1:]), statistics.median(times["kd"][1:])
    return {"ce_ms": round(1000 * ce, 2), "kd_ms": round(1000 * kd, 2), "kd_over_ce": round(kd / ce, 3)}


MEMORY_PROBE = """
import sys, torch
torch.set_num_threads(1)
from k1.objectives import kd_divergence, linear_kd


def status(key):  # kB, from /proc/self/status
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


path, rows, hid, vocab, k = sys.argv[1], *map(int, sys.argv[2:])
g = torch.Generator().manual_seed(0)
h = torch.randn(rows, hid, generator=g, requires_grad=True)
w = (0.02 * torch.randn(vocab, hid, generator=g)).requires_grad_()
tgt = torch.randint(0, vocab, (rows,), generator=g)
ids = torch.randint(0, vocab, (rows, k), generator=g)
lp = torch.log_softmax(torch.randn(rows, k + 1, generator=g), -1)
left, lp = lp[:, -1].exp(), lp[:, :-1].half()
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:  # 5: reset the peak (VmHWM) to the current RSS
    f.write("5")
if path == "chunked":
    loss = linear_kd(h, w, tgt, ids, lp, left)[0]
else:  # the logits path: whole (rows, vocab) logits, log-softmax and the bucket sums
    logits = h @ w.t()
    ce = torch.nn.functional.cross_entropy(logits, tgt)
    loss = 0.5 * ce + 0.5 * kd_divergence(logits, ids, lp, left).mean()
loss.backward()
print((status("VmHWM") - before) / 1024)
"""


def kd_memory(rows: int, hidden: int, vocab: int, k: int) -> dict:
    """Peak memory added by one forward + backward of the KD loss on `rows` positions at a large
    vocabulary, chunked (linear_kd) vs on whole logits; each in its own process (Linux: the peak
    RSS above the RSS before the loss, VmHWM reset through /proc/self/clear_refs)."""
    import subprocess

    out = {}
    for path in ("chunked", "logits"):
        res = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, path, str(rows), str(hidden), str(vocab), str(k)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=600,
        )
        if res.returncode:
            sys.exit(f"bench/distill.py: memory probe ({path}) failed:\n{res.stderr[-2000:]}")
        out[f"{path}_mb"] = round(float(res.stdout.split()[-1]), 1)
    return {"rows": rows, "hidden": hidden, "vocab": vocab, "top_k": k, **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_distill"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--problems", type=int, default=5000)
    ap.add_argument("--reviews", type=int, default=0, help="training reviews (0: all 90%%)")
    ap.add_argument(
        "--think-share",
        type=float,
        default=0.75,
        help="problems written in think mode (the rest non-think); above 0.5 so that greedy decoding "
        "after the think prompt reasons instead of closing the block at once",
    )
    ap.add_argument("--levels", default="1", help="arithmetic levels (k1.synth: 1, 1..2, 1,3)")
    ap.add_argument(
        "--pack",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one whole conversation per window, reviews as filler (--no-pack: one shuffled stream)",
    )
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--teacher-steps", type=int, default=250)
    ap.add_argument(
        "--steps", type=int, default=200, help="student steps (both students; one pass over their windows)"
    )
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--loss", default="forward_kl")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--ce-weight", type=float, default=0.5)
    ap.add_argument("--eval-problems", type=int, default=400)
    ap.add_argument("--reuse", action="store_true", help="keep data and teacher from an earlier run")
    args = ap.parse_args()
    if args.quick:
        args.problems, args.teacher_steps, args.steps, args.eval_problems = 400, 20, 10, 20
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import k1
    from k1 import distill, synth, tokenizer
    from k1.config import ModelConfig
    from k1.model import Transformer
    from k1.train import TokenWindows, run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if not (args.reuse and (out / "tok" / "tokenizer.json").is_file()):
        tokenizer.train_default(out / "tok", args.vocab, overwrite=True)
    tok = tokenizer.load(out / "tok")
    if not (args.reuse and (out / "val.npy").is_file()):
        (out / "data.json").write_text(json.dumps(build_data(out, tok, args), indent=2))
    data = json.loads((out / "data.json").read_text())
    # The students' windows: the first steps x batch windows of the training stream, one pass.
    train_tokens = np.load(out / "train.npy")
    n_student = args.steps * args.batch_size
    if n_student * args.seq_len + 1 > len(train_tokens):
        sys.exit(
            f"bench/distill.py: {args.steps} steps x {args.batch_size} need more than the {len(train_tokens):,} "
            "training tokens; add --problems or lower --steps"
        )
    np.save(out / "student.npy", train_tokens[: n_student * args.seq_len + 1])
    timings["data_s"] = time.perf_counter() - t0
    print(f"data: {data}", file=sys.stderr)

    teacher_model = {
        "vocab_size": tok.vocab_size,
        "hidden_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "num_nextn_predict_layers": 0,
    }
    student_model = {
        "vocab_size": tok.vocab_size,
        "hidden_size": 64,
        "intermediate_size": 192,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "q_lora_rank": 32,
        "kv_lora_rank": 16,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_group": 2,
        "topk_group": 1,
        "num_nextn_predict_layers": 0,
    }
    t0 = time.perf_counter()
    teacher_dir = out / "teacher" / "model"
    if not (args.reuse and teacher_dir.is_dir()):
        run(
            train_cfg(out / "teacher", str(out / "train.npy"), args, args.teacher_steps, teacher_model),
            progress=True,
        )
    timings["teacher_train_s"] = time.perf_counter() - t0

    kd_options = {"loss": args.loss, "temperature": args.temperature, "ce_weight": args.ce_weight}
    dcfg = distill.DistillConfig.from_dict(
        {
            "out_dir": str(out / "kd"),
            "teacher": {"path": str(teacher_dir), "device": "cpu", "dtype": "float32"},
            "capture": {
                "data": str(out / "student.npy"),
                "val_data": str(out / "val.npy"),
                "seq_len": args.seq_len,
                "top_k": args.top_k,
                "dtype": "fp16",
                "temperature": args.temperature,
                "batch_size": 16,
                "windows_per_shard": 256,
            },
            "kd": kd_options,
        }
    )
    t0 = time.perf_counter()
    manifest = distill.capture(dcfg, overwrite=True)
    timings["capture_s"] = time.perf_counter() - t0
    cap = out / "kd" / "capture"

    hard_cfg = train_cfg(out / "student_hard", str(out / "student.npy"), args, args.steps, student_model)
    kd_cfg = train_cfg(
        out / "student_kd",
        str(cap),
        args,
        args.steps,
        student_model,
        data_format="kd",
        objective="kd",
        objective_options=kd_options,
    )
    # Same batches for both students: the capture keeps the windows in order, sampled alike.
    a = distill.CapturedWindows(cap, seed=0).batch(0, 4)["input_ids"]
    b = TokenWindows([np.load(out / "student.npy")], args.seq_len, 0).batch(0, 4)["input_ids"]
    assert torch.equal(a, b), "the two students would not see the same batches"

    results: dict = {"args": vars(args), "data": data, "capture": manifest["stats"]}
    runs = {}
    for name, cfg in (("hard", hard_cfg), ("kd", kd_cfg)):
        t0 = time.perf_counter()
        runs[name] = res = run(cfg, progress=True)
        results[name] = {
            "train_s": round(time.perf_counter() - t0, 1),
            "median_tokens_per_s": round(statistics.median(h["tokens_per_s"] for h in res.history), 1),
        }

    val = TokenWindows([np.load(out / "val.npy")], args.seq_len, 0)
    test = synth.arithmetic(args.eval_problems, seed=7, levels=args.levels, split="test")
    for name, path in (
        ("teacher", teacher_dir),
        ("hard", runs["hard"].model_dir),
        ("kd", runs["kd"].model_dir),
    ):
        model = k1.load(path).float().eval()
        r = results.setdefault(name, {})
        r["params"] = model.num_parameters
        r["val_ce"] = round(val_ce(model, val, 32), 4)
        r["task_ce"] = round(task_ce(model, tok, test), 4)
        r["task"] = task_accuracy(model, tok, test, 64)
        print(name, {k: v for k, v in r.items() if k != "task"}, file=sys.stderr)
    results["kd_vs_hard"] = {
        m: paired_comparison(
            results["hard"]["task"][m]["per_problem"], results["kd"]["task"][m]["per_problem"]
        )
        for m in ("think", "non_think")
    }

    batch = distill.CapturedWindows(cap, seed=0).batch(0, args.batch_size)
    repeats = 3 if args.quick else 15
    results["step_overhead"] = {
        "student": step_overhead(k1.load(runs["kd"].model_dir).float(), batch, kd_options, repeats)
    }
    for hidden, layers in (
        (256, 4),
        (512, 8),
    ):  # the same loss on bigger bodies: the overhead is per vocabulary entry
        torch.manual_seed(0)
        big = Transformer(
            ModelConfig.preset(
                "tiny",
                vocab_size=tok.vocab_size,
                hidden_size=hidden,
                num_hidden_layers=layers,
                intermediate_size=3 * hidden,
                moe_intermediate_size=hidden // 2,
                num_nextn_predict_layers=0,
            )
        )
        key = f"h{hidden}_l{layers}_{big.num_parameters / 1e6:.1f}M"
        results["step_overhead"][key] = step_overhead(big, batch, kd_options, max(2, repeats // 3))
    # Memory of the loss at A.X K1's vocabulary: the chunked loss stays flat as positions grow.
    vocab = 16_384 if args.quick else 163_840
    results["kd_memory"] = [kd_memory(rows, 256, vocab, args.top_k) for rows in (256, 1024)]
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))

    def acc(r, m):
        t = r["task"][m]
        return f"{100 * t['accuracy']:.1f}% ({t['correct']}/{t['n']})"

    print("\n| model | params | steps | val CE | task CE | think acc | non-think acc |")
    print("|---|---|---|---|---|---|---|")
    for name, steps in (("teacher", args.teacher_steps), ("hard", args.steps), ("kd", args.steps)):
        r = results[name]
        print(
            f"| {name} | {r['params']:,} | {steps} | {r['val_ce']:.4f} | {r['task_ce']:.4f} | {acc(r, 'think')} | "
            f"{acc(r, 'non_think')} |"
        )
    for m, c in results["kd_vs_hard"].items():
        print(
            f"{m} accuracy, distilled - hard: {100 * c['difference']:+.1f} points "
            f"(95% CI {100 * c['ci95'][0]:+.1f} .. {100 * c['ci95'][1]:+.1f}; solved by one only: "
            f"hard {c['only_first']}, distilled {c['only_second']}; McNemar p = {c['mcnemar_p']})"
        )
    c = manifest["stats"]
    print(
        f"\ncapture: {c['tokens']:,} tokens, {c['seconds_per_1k_tokens']} s per 1k tokens, "
        f"{c['bytes_per_token']} bytes per token (top-{args.top_k}, fp16)"
    )
    for key, o in results["step_overhead"].items():
        print(f"KD step ({key}): {o['kd_ms']} ms vs {o['ce_ms']} ms cross-entropy (x{o['kd_over_ce']})")
    print(
        f"end to end: {results['kd']['median_tokens_per_s']} vs {results['hard']['median_tokens_per_s']} tokens/s"
    )
    for m in results["kd_memory"]:
        print(
            f"KD loss memory, {m['rows']} positions x {m['vocab']:,} vocabulary (forward + backward, peak RSS "
            f"added): chunked {m['chunked_mb']} MB vs whole logits {m['logits_mb']} MB"
        )


if __name__ == "__main__":
    main()
