"""Deduplication settings and helpers; the work itself is datatrove's exact-hash and MinHash-LSH steps.

Exact dedup hashes the normalized content (case-folded, whitespace collapsed) of each document;
near dedup uses MinHash over word 5-grams with LSH banding. The user sets a Jaccard `threshold`;
`minhash_bands()` picks the (bands, rows) split of the permutations whose S-curve best separates pairs
above and below it, the way datasketch's MinHashLSH does, so datatrove's bucket files carry the
user's threshold.

Both run as datatrove stages (signatures per task, a global find/cluster pass, a filter per task), so
they scale to many machines; see docs/data.md.
"""

from __future__ import annotations

import numpy as np
from datatrove.utils.text import TextNormConfig, simplify_text
from datatrove.utils.word_tokenizers import WordTokenizer


def content_key(doc) -> str:
    """What exact dedup hashes: the text case-folded with whitespace collapsed. (The annotation `-> str`
    tells datatrove which hash function to use.)"""
    return " ".join(doc.text.lower().split())


def _integrate(f, a: float, b: float, steps: int = 200) -> float:
    x = np.linspace(a, b, steps)
    return float(np.trapezoid(f(x), x))


def minhash_bands(threshold: float, num_perm: int = 112, fp_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows per band), bands * rows <= num_perm, minimising the weighted area of false positives
    (similarity below `threshold` yet colliding) and false negatives (above it yet never colliding)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError("threshold must be in (0, 1)")
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integrate(lambda s, b=b, r=r: 1 - (1 - s**r) ** b, 0.0, threshold)
            fn = _integrate(lambda s, b=b, r=r: (1 - s**r) ** b, threshold, 1.0)
            err = fp_weight * fp + (1 - fp_weight) * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


class SpaceWordTokenizer(WordTokenizer):
    """Word splitting for MinHash shingles: whitespace after datatrove's text simplification. Korean
    separates eojeol by spaces, so this needs no language model (datatrove's default would pull NLTK)."""

    def __init__(self):
        super().__init__("k1")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in text.split("\n") if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, pos = [], 0
        for sent in self.sent_tokenize(text):
            start = text.index(sent, pos)
            spans.append((start, start + len(sent)))
            pos = start + len(sent)
        return spans


def shingle_text(text: str) -> str:
    return simplify_text(text, TextNormConfig())
