"""Math by generation: extract each sample's final answer, compare it with the gold answer.

pass@1 is the share of correct samples (greedy decoding with n=1 gives plain accuracy); with n
samples per problem, maj@n votes over the extracted answers and pass@k uses the unbiased estimator.
Reasoning is removed before extraction, so a number in the scratch work never counts as the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from k1.evals.extract import answers_equal, extract_answer
from k1.evals.metrics import majority, sample_record
from k1.evals.tasks import MathDoc


def score_doc(
    doc: MathDoc, completions: Sequence, think: bool, count_tokens: Callable[[str], int | None] | None = None
) -> dict:
    """A record for one problem from its completions (objects with text, n_tokens, finish_reason)."""
    samples = []
    for c in completions:
        sample, thought = sample_record(
            c.text, c.n_tokens, c.finish_reason, think, count_tokens, getattr(c, "n_reasoning_tokens", None)
        )
        sample["extracted"] = extract_answer(thought.answer)
        sample["correct"] = answers_equal(sample["extracted"], doc.answer)
        samples.append(sample)
    voted = majority([s["extracted"] for s in samples])
    return {
        "id": doc.id,
        "gold": doc.answer,
        "samples": samples,
        "majority": voted,
        "maj_correct": answers_equal(voted, doc.answer),
    }
