"""Serving speed: the HTTP server against the same engine called directly, and MTP speculative decoding.

    python bench/serve_speed.py                       # trains a small model first (a few minutes)
    python bench/serve_speed.py --model runs/sft/model --clients 1,8,32
    python bench/serve_speed.py --quick               # fewer steps and requests

What it measures, in one run on this machine:
- tokens/s, time to first token (p50) and inter-token latency (p50, p99) at 1, 8 and 32 concurrent
  streaming clients, (a) calling `k1.engine.Engine` in-process and (b) through `k1 serve` over HTTP
  (a subprocess on 127.0.0.1, clients streaming /v1/completions); the ratio direct / HTTP is the
  cost of the API layer (HTTP, JSON, SSE, auth, audit).
- MTP speculative decoding against plain decoding on the same engine, speculating at any batch
  size: the speed-up in tokens/s and the draft acceptance rate at 1, 2 and 8 clients (greedy, so
  both give the same tokens). The server speculates only up to `spec_max_batch` sequences.
Each figure is the fastest of --repeats runs (the machine may be shared).

Without --model it trains the `tiny` preset (with its MTP module) on k1's bundled tokenizer corpus
with `k1.train`, so the MTP head has learned something; a random MTP head would accept ~nothing.
Inter-token latency counts each streamed chunk's gap divided by the tokens it carries (a chunk
holds two tokens when a draft was accepted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import k1  # noqa: E402
from k1 import tokenizer as tok_mod  # noqa: E402
from k1.engine import Engine, EngineConfig, RequestParams  # noqa: E402


def build_model(work: Path, steps: int) -> Path:
    """Train a tokenizer and the tiny preset (MTP included) on the bundled corpus; return the model dir."""
    from k1.train import TrainConfig, run

    tok = tok_mod.train_default(work / "tok", vocab_size=4096, progress=False, log=lambda *a: None)
    from importlib import resources

    with resources.as_file(resources.files("k1") / "assets" / "tokenizer_corpus") as folder:
        text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(Path(folder).glob("*.txt")))
    ids = np.array(tok.encode(text), dtype=np.int32)
    np.save(work / "tokens.npy", ids)
    cfg = TrainConfig(
        out_dir=str(work / "train"),
        model="tiny",
        data=str(work / "tokens.npy"),
        tokenizer=str(work / "tok"),
        seq_len=128,
        batch_size=8,
        max_steps=steps,
        lr=3e-3,
        warmup_steps=20,
        mtp_weight=0.5,
        precision="fp32",
        eval_every=steps,
        save_every=steps,
        threads=torch.get_num_threads(),
    )
    result = run(cfg, progress=False)
    print(
        f"trained tiny for {result.steps} steps on {len(ids):,} tokens in {result.seconds:.0f}s, "
        f"loss {result.final_loss:.3f}",
        flush=True,
    )
    return Path(result.model_dir)


def prompts_for(n: int) -> list[str]:
    """n different Korean lines from the bundled corpus (no data set needed)."""
    from importlib import resources

    with resources.as_file(resources.files("k1") / "assets" / "tokenizer_corpus" / "ko.txt") as f:
        lines = [
            ln.strip() for ln in Path(f).read_text(encoding="utf-8").splitlines() if len(ln.strip()) > 20
        ]
    return [lines[(i * 7919) % len(lines)][:200] for i in range(n)]


def summarize(records: list[dict], wall: float) -> dict:
    tokens = sum(r["tokens"] for r in records)
    ttft = [r["ttft"] for r in records if r["ttft"] is not None]
    itl = [g for r in records for g in r["gaps"]]

    def pct(xs, q):
        return float(np.percentile(xs, q)) * 1000 if xs else float("nan")

    return {
        "requests": len(records),
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": pct(ttft, 50),
        "itl_p50_ms": pct(itl, 50),
        "itl_p99_ms": pct(itl, 99),
    }


def direct(engine: Engine, ids: list[list[int]], clients: int, rounds: int, max_tokens: int, stops) -> dict:
    """`clients` threads, each submitting `rounds` requests one after another to the engine."""
    records: list[dict] = []
    lock = threading.Lock()

    def client(c: int):
        for r in range(rounds):
            prompt = ids[(c * rounds + r) % len(ids)]
            params = RequestParams(max_new_tokens=max_tokens, stop_token_ids=stops, logprobs=True)
            start = time.perf_counter()
            last, first, gaps, n = start, None, [], 0
            for out in engine.submit(prompt, params):
                k = len(out.token_ids)
                if not k:
                    continue
                now = time.perf_counter()
                if first is None:
                    first = now - start
                else:
                    gaps += [(now - last) / k] * k
                last, n = now, n + k
            with lock:
                records.append({"tokens": n, "ttft": first, "gaps": gaps})

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(records, time.perf_counter() - start)


def over_http(
    url: str, key: str, model: str, texts: list[str], clients: int, rounds: int, max_tokens: int
) -> dict:
    import httpx

    async def client(c: int, http: httpx.AsyncClient, records: list):
        for r in range(rounds):
            body = {
                "model": model,
                "prompt": texts[(c * rounds + r) % len(texts)],
                "max_tokens": max_tokens,
                "temperature": 0,
                "stream": True,
                "logprobs": 0,
            }
            start = time.perf_counter()
            last, first, gaps, n = start, None, [], 0
            async with http.stream(
                "POST", url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                resp.raise_for_status()
                async for line in resp.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    lp = chunk["choices"][0]["logprobs"] if chunk["choices"] else None
                    k = len(lp["tokens"]) if lp else 0
                    if not k:
                        continue
                    now = time.perf_counter()
                    if first is None:
                        first = now - start
                    else:
                        gaps += [(now - last) / k] * k
                    last, n = now, n + k
            records.append({"tokens": n, "ttft": first, "gaps": gaps})

    async def main():
        records: list[dict] = []
        limits = httpx.Limits(max_connections=clients + 4)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            start = time.perf_counter()
            await asyncio.gather(*(client(c, http, records) for c in range(clients)))
            return summarize(records, time.perf_counter() - start)

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir: Path, work: Path, max_seqs: int, speculative: str, threads: int):
    from k1.serve.auth import KeyStore

    store = work / "keys.sqlite"
    _, key = KeyStore(store).create(f"bench{time.time_ns()}", "completions")
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "k1",
        "serve",
        str(model_dir),
        "--port",
        str(port),
        "--keys",
        str(store),
        "--audit",
        str(work / "audit.jsonl"),
        "--max-seqs",
        str(max_seqs),
        "--speculative",
        speculative,
        "--model-name",
        "bench",
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited: " + proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url, key
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def row(name: str, s: dict) -> str:
    return (
        f"| {name} | {s['requests']} | {s['tokens']} | {s['tokens_per_s']:.1f} | {s['ttft_p50_ms']:.1f} | "
        f"{s['itl_p50_ms']:.2f} | {s['itl_p99_ms']:.2f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model directory (with tokenizer); default: train the tiny preset first")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=2, help="requests per client, one after another")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for tiny models)")
    ap.add_argument("--parts", default="mtp,direct,http", help="which measurements to run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the fastest is kept")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.train_steps, args.rounds, args.max_tokens, args.repeats = 150, 1, 32, 1
    torch.set_num_threads(args.threads)
    clients = [int(c) for c in args.clients.split(",")]
    work = Path(tempfile.mkdtemp(prefix="k1-serve-bench-"))
    model_dir = Path(args.model) if args.model else build_model(work, args.train_steps)
    model, tok = k1.load(model_dir), tok_mod.load(model_dir)
    texts = prompts_for(max(clients) * args.rounds)
    ids = [[tok.bos_id] + tok.encode(t, special=False) for t in texts]
    stops = tuple(tok.stop_ids)
    max_seqs = max(clients)
    spec = "mtp" if len(model.mtp) else "off"
    results: dict = {
        "model": str(model_dir),
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "speculative": spec,
        "direct": {},
        "http": {},
        "mtp": {},
    }

    def pick(runs: list[dict]) -> dict:
        # The machine may be shared: of repeated runs, keep the fastest (least disturbed) one.
        return max(runs, key=lambda r: r["tokens_per_s"])

    # 1. MTP speculative decoding vs plain, on the engine directly, speculating at every batch size
    parts = set(args.parts.split(","))
    for c in [c for c in (1, 2, 8) if c <= max_seqs] if spec == "mtp" and "mtp" in parts else []:
        runs: dict[str, list] = {"off": [], "mtp": []}
        for _ in range(args.repeats):
            for mode in ("off", "mtp"):
                cfg = EngineConfig(max_seqs=max_seqs, speculative=mode, spec_max_batch=0)
                with Engine(model, tok, cfg) as engine:
                    direct(engine, ids, 1, 1, 8, stops)  # warm up
                    before = engine.stats()
                    run = direct(engine, ids, c, max(args.rounds, 8 // c), args.max_tokens, stops)
                    after = engine.stats()
                drafted = after["draft_tokens"] - before["draft_tokens"]
                accepted = after["accepted_tokens"] - before["accepted_tokens"]
                run["acceptance"] = accepted / drafted if drafted else 0.0
                runs[mode].append(run)
        off, on = pick(runs["off"]), pick(runs["mtp"])
        results["mtp"][c] = {
            "plain_tokens_per_s": off["tokens_per_s"],
            "mtp_tokens_per_s": on["tokens_per_s"],
            "speedup": on["tokens_per_s"] / off["tokens_per_s"],
            "acceptance": on["acceptance"],
            "tokens": on["tokens"],
        }

    # 2. direct engine vs HTTP, with the server's default engine settings on both sides
    if "direct" in parts:
        direct_runs: dict[int, list] = {c: [] for c in clients}
        with Engine(model, tok, EngineConfig(max_seqs=max_seqs, speculative=spec)) as engine:
            direct(engine, ids, 1, 1, 8, stops)
            for _ in range(args.repeats):
                for c in clients:
                    direct_runs[c].append(direct(engine, ids, c, args.rounds, args.max_tokens, stops))
        results["direct"] = {c: pick(r) for c, r in direct_runs.items()}
    if "http" in parts:
        proc, url, key = start_server(model_dir, work, max_seqs, spec, args.threads)
        http_runs: dict[int, list] = {c: [] for c in clients}
        try:
            over_http(url, key, "bench", texts, 1, 1, 8)
            for _ in range(args.repeats):
                for c in clients:
                    http_runs[c].append(over_http(url, key, "bench", texts, c, args.rounds, args.max_tokens))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        results["http"] = {c: pick(r) for c, r in http_runs.items()}

    print(
        f"\nmodel {model_dir.name}, {args.threads} torch thread(s), {args.max_tokens} new tokens, "
        f"greedy, speculative={spec}\n"
    )
    print("| path, clients | requests | tokens | tokens/s | TTFT p50 ms | ITL p50 ms | ITL p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for c in clients:
        for name, part in (("direct", "direct"), ("HTTP", "http")):
            if c in results[part]:
                print(row(f"{name}, {c}", results[part][c]))
    print("\n| clients | direct tokens/s / HTTP tokens/s | HTTP TTFT / direct TTFT |")
    print("|---|---|---|")
    for c in [c for c in clients if c in results["direct"] and c in results["http"]]:
        d, h = results["direct"][c], results["http"][c]
        print(
            f"| {c} | {d['tokens_per_s'] / h['tokens_per_s']:.2f} | {h['ttft_p50_ms'] / d['ttft_p50_ms']:.2f} |"
        )
    if results["mtp"]:
        print("\n| clients | plain tokens/s | MTP tokens/s | speed-up | acceptance |")
        print("|---|---|---|---|---|")
        for c, m in results["mtp"].items():
            print(
                f"| {c} | {m['plain_tokens_per_s']:.1f} | {m['mtp_tokens_per_s']:.1f} | {m['speedup']:.2f}x | "
                f"{m['acceptance']:.1%} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
