"""Check the eval harness on its own, on the full real data sets, and time the code sandbox.

    python bench/evals_canonical.py [--data ../shared/data] [--workers 2] [--humaneval HumanEval.jsonl.gz]

Prints: canonical-solution pass rates for MBPP (full and sanitized, and HumanEval when given),
math-extractor figures (reference answers written in several styles must score 100%, wrong ones
0%), and the cost of one sandboxed run as a ratio to a bare `python -I -S -c pass` measured in the
same run.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from k1.evals import code as code_eval  # noqa: E402
from k1.evals.extract import answers_equal, extract_answer  # noqa: E402
from k1.evals.models import Completion  # noqa: E402
from k1.evals.sandbox import Limits, isolation, run_python  # noqa: E402
from k1.evals.tasks import get_task  # noqa: E402

FORMATS = [
    "\\boxed{{{}}}",
    "The answer is {}.",
    "정답: {}",
    "따라서 답은 {}입니다.",
    "#### {}",
    "We end up with {} in all",
    "Final answer: ${}$",
]


def canonical(task: str, path: Path, workers: int) -> None:
    docs = [d for d in get_task(task).load(path) if d.reference]
    started = time.monotonic()
    records = code_eval.score_docs(
        docs, [[Completion(d.reference, None)] for d in docs], False, workers=workers
    )
    took = time.monotonic() - started
    passed = sum(r["samples"][0]["correct"] for r in records)
    print(
        f"{task:10} {path.name:24} canonical pass {passed}/{len(docs)} = {passed / len(docs):.4f}   "
        f"{took:.1f} s ({took / len(docs) * 1000:.0f} ms/problem with {workers} workers)"
    )
    for r in records:
        if not r["samples"][0]["correct"]:
            print(f"    failed: {r['id']}: {r['samples'][0]['outcome']}")


def wrong(answer: str) -> str:
    value = Fraction(answer.replace(",", ""))
    return str(value + 1) if value.denominator == 1 else str(float(value) * 1.5 + 1)


def extractor(task: str, path: Path) -> None:
    docs = get_task(task).load(path)
    rng = random.Random(0)
    right = bad = 0
    for doc in docs:
        fmt = rng.choice(FORMATS)
        right += answers_equal(extract_answer("work: 12 + 30 = 42\n" + fmt.format(doc.answer)), doc.answer)
        bad += answers_equal(
            extract_answer("work: 12 + 30 = 42\n" + fmt.format(wrong(doc.answer))), doc.answer
        )
    line = f"{task:10} {path.name:28} right {right}/{len(docs)} = {right / len(docs):.4f}   wrong {bad}/{len(docs)}"
    if task == "gsm8k":
        worked = sum(answers_equal(extract_answer(d.solution), d.answer) for d in docs)
        line += f"   worked solutions {worked}/{len(docs)}"
    print(line)


def sandbox_overhead(repeats: int = 20) -> None:
    started = time.monotonic()
    for _ in range(repeats):
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
    bare = (time.monotonic() - started) / repeats
    started = time.monotonic()
    for _ in range(repeats):
        assert run_python("pass", "", Limits()).ok
    boxed = (time.monotonic() - started) / repeats
    print(
        f"sandbox: {boxed * 1000:.0f} ms per run vs bare interpreter {bare * 1000:.0f} ms: ratio {boxed / bare:.2f}"
    )
    print(f"sandbox layers here: {isolation().describe()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--humaneval", help="a HumanEval.jsonl(.gz) to check as well")
    args = parser.parse_args()
    data = Path(args.data)
    print("== code: canonical solutions")
    canonical("mbpp", data / "code" / "mbpp.jsonl", args.workers)
    canonical("mbpp", data / "code" / "sanitized-mbpp.json", args.workers)
    if args.humaneval:
        canonical("humaneval", Path(args.humaneval), args.workers)
    print("== math: extractor on reference answers (right) and off-by-one answers (wrong)")
    extractor("gsm8k", data / "math" / "gsm8k_train.jsonl.gz")
    extractor("aime", data / "math" / "aime24_test.jsonl")
    for name in ("addsub", "multiarith", "single_eq"):
        extractor("kor_math", data / "math" / f"kor-D_{name}-train.json")
    print("== sandbox cost")
    sandbox_overhead()


if __name__ == "__main__":
    main()
