"""Multiple choice by log-likelihood (KoBEST, KMMLU, CLIcK style).

Each choice is scored as the summed log-probability of its text after the (few-shot) context.
`acc` takes the most likely choice; `acc_norm` divides each log-likelihood by the choice's length in
characters first, so long choices are not penalised for being long (the convention of lm-eval's
acc_norm, so figures are comparable).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from k1.evals.tasks import MCQDoc, MCQTask, pick_fewshot


def build_requests(
    task: MCQTask, docs: Sequence[MCQDoc], pool: Sequence[MCQDoc], num_fewshot: int, seed: int
) -> list[list[tuple[str, str]]]:
    return [task.requests(doc, pick_fewshot(list(pool), doc, num_fewshot, seed)) for doc in docs]


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_doc(doc: MCQDoc, loglikelihoods: Sequence[float] | None = None, choice: int | None = None) -> dict:
    """A record for one question, from per-choice log-likelihoods (or just the chosen index)."""
    record: dict = {"id": doc.id, "gold": doc.gold}
    if loglikelihoods is not None:
        lls = [
            float(x) if isinstance(x, int | float) and math.isfinite(x) else -math.inf for x in loglikelihoods
        ]
        norm = [ll / max(1, len(c)) for ll, c in zip(lls, doc.choices, strict=True)]
        record.update(loglikelihoods=lls, pred=_argmax(lls), pred_norm=_argmax(norm))
        record["correct_norm"] = record["pred_norm"] == doc.gold
    else:
        record["pred"] = choice
    record["correct"] = record["pred"] == doc.gold
    return record


def metrics(records: Sequence[dict]) -> dict:
    n = len(records)
    if not n:
        return {"n_problems": 0}
    acc = sum(r["correct"] for r in records) / n
    out = {"n_problems": n, "acc": acc, "acc_stderr": math.sqrt(acc * (1 - acc) / (n - 1)) if n > 1 else None}
    if all("correct_norm" in r for r in records):
        out["acc_norm"] = sum(r["correct_norm"] for r in records) / n
    return out


def evaluate(
    model,
    task: MCQTask,
    docs: Sequence[MCQDoc],
    pool: Sequence[MCQDoc],
    *,
    num_fewshot: int = 0,
    seed: int = 0,
    chunk: int = 64,
    on_records: Callable[[list[dict]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict]:
    """Score `docs` with `model.loglikelihood`, `chunk` questions at a time (each chunk is saved)."""
    records: list[dict] = []
    for start in range(0, len(docs), chunk):
        part = docs[start : start + chunk]
        requests = build_requests(task, part, pool, num_fewshot, seed)
        flat = [r for doc_requests in requests for r in doc_requests]
        lls = model.loglikelihood(flat)
        new, at = [], 0
        for doc in part:
            new.append(score_doc(doc, lls[at : at + len(doc.choices)]))
            at += len(doc.choices)
        records += new
        if on_records:
            on_records(new)
        if progress:
            progress(len(part))
    return records
