"""Metrics shared by the task families: pass@k, majority vote, tokens spent, mode adherence.

    pass_at_k(n=10, c=3, k=1)     # 0.3
    generative_metrics(records, ks=(1, 5))

A generative record is {"id", "samples": [sample, ...], ...}; a sample carries "correct", token
counts ("n_tokens", "reasoning_tokens", "answer_tokens"), "adherent" and "finish".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from k1.evals.extract import THINK_CLOSE, Thought, adheres, split_thinking


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed (Chen et al. 2021, eq. 1): 1 - C(n-c,k)/C(n,k).

    Computed as a product so that large n does not overflow.
    """
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1 (n={n}, c={c}, k={k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def majority(answers: Sequence[str | None]) -> str | None:
    """The most common extracted answer (ties: the one given first); None when no sample gave one."""
    given = [a for a in answers if a is not None]
    if not given:
        return None
    counts = Counter(given)
    best = max(counts.values())
    return next(a for a in given if counts[a] == best)


def sample_record(
    text: str,
    n_tokens: int | None,
    finish: str,
    think: bool,
    count_tokens: Callable[[str], int | None] | None = None,
    reasoning_tokens: int | None = None,
) -> tuple[dict, Thought]:
    """The mode-level facts about one completion: reasoning vs answer tokens, adherence."""
    thought = split_thinking(text)
    if n_tokens is not None and reasoning_tokens is None:
        if thought.reasoning is None:
            reasoning_tokens = 0
        else:
            # the reasoning with its markers; the rest of the generated tokens are the answer
            close = text.find(THINK_CLOSE)
            reasoning_part = text[: close + len(THINK_CLOSE)] if close >= 0 else text
            counted = count_tokens(reasoning_part) if count_tokens else None
            if counted is None:  # no tokenizer (an endpoint): share tokens by characters
                counted = round(n_tokens * len(reasoning_part) / max(1, len(text)))
            reasoning_tokens = min(counted, n_tokens)
    record = {
        "text": text,
        "n_tokens": n_tokens,
        "reasoning_tokens": reasoning_tokens,
        "answer_tokens": None
        if n_tokens is None or reasoning_tokens is None
        else n_tokens - reasoning_tokens,
        "finish": finish,
        "adherent": adheres(thought, think),
    }
    return record, thought


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _stderr(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1) / len(values))


def generative_metrics(records: Sequence[dict], ks: Sequence[int] = (1,)) -> dict:
    """Accuracy (pass@k, maj@n), tokens spent and mode adherence over scored records."""
    if not records:
        return {"n_problems": 0}
    n = min(len(r["samples"]) for r in records)
    per_problem = [sum(s["correct"] for s in r["samples"][:n]) for r in records]
    out: dict = {"n_problems": len(records), "n_samples": n}
    for k in sorted(set(ks) | {1}):
        if k <= n:
            values = [pass_at_k(n, c, k) for c in per_problem]
            out[f"pass@{k}"] = _mean(values)
            if k == 1:
                out["pass@1_stderr"] = _stderr(values)
    if n > 1 and all("maj_correct" in r for r in records):
        out[f"maj@{n}"] = _mean([float(r["maj_correct"]) for r in records])
    samples = [s for r in records for s in r["samples"][:n]]
    known = [s for s in samples if s.get("n_tokens") is not None]
    if known:
        per_problem_tokens = [
            _mean([s["n_tokens"] for s in r["samples"][:n] if s.get("n_tokens") is not None]) for r in records
        ]
        out["tokens_per_problem"] = _mean([t for t in per_problem_tokens if t is not None])
        correct = sum(1 for s in known if s["correct"])
        out["tokens_per_correct"] = sum(s["n_tokens"] for s in known) / correct if correct else None
        reasoning = [s["reasoning_tokens"] for s in known if s.get("reasoning_tokens") is not None]
        out["reasoning_tokens"] = _mean(reasoning)
        out["answer_tokens"] = _mean(
            [s["answer_tokens"] for s in known if s.get("answer_tokens") is not None]
        )
    out["adherence"] = _mean([float(s["adherent"]) for s in samples])
    out["truncated"] = _mean([float(s["finish"] == "length") for s in samples])
    return out
