"""Benchmark of the data stage: MB/s per step on ../shared/data text, PII precision/recall per type.

    python bench/data_pipeline.py [--mb 8] [--pii-per-type 400] [--no-pipeline]

Each step is timed alone, in one process, over the same documents (the shared tokenizer-training
text cut into ~2 KB documents), and printed with its ratio to a reference measured in the same run:
decoding the UTF-8 bytes of the documents (`ref`). The end-to-end line runs `k1.data.prepare` (all
stages, 2 worker processes, byte tokenizer) on the same documents written as jsonl. The PII table
comes from k1.data.synthetic's labelled set (Faker ko_KR when installed plus hand-written hard cases).
No timing is asserted anywhere; this script only prints.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tokenizer_train"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data/tokenizer_train")


def load_docs(mb: float) -> list[str]:
    files = sorted(SHARED.glob("*.txt"))
    if not files:
        sys.exit(f"no text under {SHARED}: this benchmark reads the shared data")
    budget = int(mb * 1e6 / len(files))
    docs = []
    for f in files:
        text = f.read_bytes()[:budget].decode("utf-8", "ignore")
        cur, size = [], 0
        for line in text.split("\n"):
            cur.append(line)
            size += len(line)
            if size > 2000:
                docs.append("\n".join(cur))
                cur, size = [], 0
        if cur:
            docs.append("\n".join(cur))
    return docs


def timed(fn, docs) -> float:
    t = time.perf_counter()
    fn(docs)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=8.0)
    ap.add_argument("--pii-per-type", type=int, default=400)
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()

    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    from k1.data.dedup import SpaceWordTokenizer, content_key
    from k1.data.language import identify
    from k1.data.normalize import normalize
    from k1.data.pii import scrub
    from k1.data.pipeline import DataConfig, _minhash_config
    from k1.data.quality import check, default_quality
    from k1.data.shard import load_tokenizer, write_byte_tokenizer

    docs = load_docs(args.mb)
    raw = [d.encode() for d in docs]
    mb = sum(len(b) for b in raw) / 1e6
    print(f"{len(docs)} documents, {mb:.1f} MB from {SHARED}")

    q = default_quality()
    langs = [identify(d) for d in docs]
    mh = MinhashDedupSignature(
        output_folder=tempfile.mkdtemp(),
        config=_minhash_config(DataConfig(synthetic={"docs": 1})),
        language=SpaceWordTokenizer(),
    )
    from datatrove.utils.hashing import HashConfig, create_hash_func

    sha = create_hash_func(HashConfig(precision=64, hash_fc="sha1"))
    tmp = Path(tempfile.mkdtemp())
    tok = load_tokenizer(write_byte_tokenizer(tmp / "byte"))

    def minhash(ds):
        for d in ds:
            sh = mh.get_shingles(d)
            if sh.size:
                mh.get_signature(sh)

    steps = [
        ("ref: utf-8 decode", lambda ds: [b.decode() for b in raw]),
        ("normalize", lambda ds: [normalize(d) for d in ds]),
        ("language", lambda ds: [identify(d) for d in ds]),
        ("quality", lambda ds: [check(d, lang, q[lang]) for d, lang in zip(ds, langs, strict=True)]),
        ("exact hash", lambda ds: [sha(content_key(Document(text=d, id=""))) for d in ds]),
        ("minhash signature", minhash),
        ("pii scrub", lambda ds: [scrub(d) for d in ds]),
        (
            "tokenize (byte BPE)",
            lambda ds: [
                tok.tokenizer.encode_batch(ds[i : i + 64], add_special_tokens=False)
                for i in range(0, len(ds), 64)
            ],
        ),
    ]
    print("\n| step | MB/s | x ref |\n|---|---:|---:|")
    ref = None
    for name, fn in steps:
        dt = timed(fn, docs)
        rate = mb / dt
        ref = ref or rate
        print(f"| {name} | {rate:.1f} | {rate / ref:.3f} |")

    if not args.no_pipeline:
        from k1.data import prepare

        inp = tmp / "in"
        inp.mkdir()
        with open(inp / "docs.jsonl", "w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
        t = time.perf_counter()
        res = prepare(
            {
                "out": str(tmp / "out"),
                "inputs": [{"path": str(inp)}],
                "tasks": 4,
                "workers": 2,
                "split_bytes": 1 << 20,
                "progress": False,
            },
            progress=False,
        )
        dt = time.perf_counter() - t
        print(f"| end to end (prepare, 2 workers, 4 tasks) | {mb / dt:.2f} | {mb / dt / ref:.3f} |")
        print(
            f"\npipeline: {sum(res['documents'].values())} documents kept, drops {res['drops']}, PII {res['pii']}"
        )
        print(
            "per-step seconds (summed over tasks):",
            json.dumps({k: v for k, v in res["seconds"].items() if v > 0.05}, ensure_ascii=False),
        )
    shutil.rmtree(tmp, ignore_errors=True)

    from k1.data.pii import PII_TYPES
    from k1.data.synthetic import evaluate_pii, pii_examples

    table = evaluate_pii(pii_examples(n_per_type=args.pii_per_type, seed=12345))
    ok = all(table[k]["recall"] >= 0.99 and table[k]["precision"] >= 0.95 for k in PII_TYPES)
    print("\n| PII type | gold | predicted | precision | recall |\n|---|---:|---:|---:|---:|")
    for kind in PII_TYPES:
        r = table[kind]
        print(f"| {kind} | {r['gold']} | {r['predicted']} | {r['precision']:.4f} | {r['recall']:.4f} |")
    print(f"\ngoal (recall >= 0.99 and precision >= 0.95 for every type): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
