"""Code by execution: build a program from each completion, run it in the sandbox, compare.

Three styles (see tasks.CodeDoc): "tests" (HumanEval / MBPP: candidate + asserts in one program,
which must run to its end), "stdio" (LiveCodeBench contest problems: one run per test case, stdout
compared with the expected output) and "functional" (LiveCodeBench LeetCode problems: the method
is called with JSON arguments read from stdin and its JSON result compared).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from k1.evals.extract import extract_code, split_thinking
from k1.evals.metrics import sample_record
from k1.evals.sandbox import Limits, run_python
from k1.evals.tasks import CodeDoc

# Calls the LeetCode-style method named by the problem with JSON arguments, one per stdin line.
_FUNCTIONAL_HARNESS = """

def _k1_call():
    import json, sys
    args = [json.loads(line) for line in sys.stdin.read().splitlines() if line.strip()]
    scope = globals()
    target = getattr(scope["Solution"](), {name!r}) if "Solution" in scope else scope[{name!r}]
    print(json.dumps(target(*args)))


_k1_call()
"""


def candidate(doc: CodeDoc, text: str) -> str | None:
    """The candidate's code from a completion (reasoning removed); None when there is none."""
    answer = split_thinking(text).answer
    code = extract_code(answer)
    if not code.strip():
        return None
    if doc.header:
        # The HumanEval header holds imports and helpers the function may use. A full function from
        # the model redefines the header's (docstring-only) one; a body continues it.
        defines = (
            re.search(rf"^\s*def\s+{re.escape(doc.entry_point)}\s*\(", code, re.M)
            if doc.entry_point
            else None
        )
        return doc.header + ("\n\n" if defines else "") + code
    return code


def program(doc: CodeDoc, code: str) -> str:
    """The program to run: setup, candidate, then tests ("tests") or the call harness ("functional")."""
    if doc.style == "tests":
        return f"{doc.setup}\n{code}\n\n{doc.tests}"
    if doc.style == "functional":
        return code + _FUNCTIONAL_HARNESS.format(name=doc.entry_point)
    return code


def _tokens_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    return math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6)


def outputs_match(got: str, expected: str) -> bool:
    """Contest-judge comparison: trailing spaces and blank lines ignored, numbers within 1e-6."""
    g = [line.rstrip() for line in got.strip().splitlines()]
    e = [line.rstrip() for line in expected.strip().splitlines()]
    if g == e:
        return True
    if len(g) != len(e):
        return False
    for gl, el in zip(g, e, strict=True):
        gt, et = gl.split(), el.split()
        if len(gt) != len(et) or not all(_tokens_equal(a, b) for a, b in zip(gt, et, strict=True)):
            return False
    return True


def _json_equal(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (
            isinstance(a, int | float)
            and isinstance(b, int | float)
            and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def check(doc: CodeDoc, code: str | None, limits: Limits | None = None) -> tuple[bool, str]:
    """(passed, outcome) for one candidate; stops at the first failing test case."""
    if code is None:
        return False, "no code"
    source = program(doc, code)
    if doc.style == "tests":
        r = run_python(source, "", limits, until_end=True)
        if r.ok and r.completed:
            return True, "passed"
        return False, "failed: " + ("assertion" if "AssertionError" in r.stderr[-2000:] else r.reason)
    for i, (stdin, expected) in enumerate(doc.cases):
        r = run_python(source, stdin, limits)
        if not r.ok:
            return False, f"failed on test {i}: {r.reason}"
        if doc.style == "functional":
            try:
                got = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
                same = _json_equal(got, json.loads(expected))
            except (ValueError, IndexError):
                same = outputs_match(r.stdout, expected)
        else:
            same = outputs_match(r.stdout, expected)
        if not same:
            return False, f"failed on test {i}: wrong answer"
    return True, "passed"


def score_docs(
    docs: Sequence[CodeDoc],
    completions: Sequence[Sequence],
    think: bool,
    count_tokens: Callable[[str], int | None] | None = None,
    limits: Limits | None = None,
    workers: int = 2,
) -> list[dict]:
    """Records for many problems; programs run `workers` at a time."""
    samples: list[list[dict]] = []
    jobs = []
    for d, doc_completions in enumerate(completions):
        row = []
        for s, c in enumerate(doc_completions):
            sample, _ = sample_record(
                c.text,
                c.n_tokens,
                c.finish_reason,
                think,
                count_tokens,
                getattr(c, "n_reasoning_tokens", None),
            )
            row.append(sample)
            jobs.append((d, s, candidate(docs[d], c.text)))
        samples.append(row)

    def run(job):
        d, s, code = job
        return d, s, check(docs[d], code, limits)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for d, s, (passed, outcome) in pool.map(run, jobs):
            samples[d][s]["correct"] = passed
            samples[d][s]["outcome"] = outcome
    return [{"id": doc.id, "samples": row} for doc, row in zip(docs, samples, strict=True)]
