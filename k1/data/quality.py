"""Per-language quality filters: each returns the reason a document is dropped, or None to keep it.

    from k1.data.quality import QualityConfig, check
    check("ㅋㅋ", "ko", QualityConfig())      # "too_short"

The rules follow the Gopher / C4 / FineWeb heuristics (length, symbol ratio, repeated lines and
n-grams, boilerplate lines, English stop words) with Korean additions: the Hangul share, and the share
of bare jamo (ㅋㅋㅋ, ㅠㅠ) that marks chat noise rather than prose. Every threshold is a config key
(`[quality.ko]`, `[quality.en]`, `[quality.code]`, `[quality.other]` in the TOML).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

REASONS = (
    "too_short",
    "too_long",
    "too_few_words",
    "high_symbol_ratio",
    "low_hangul_ratio",
    "high_jamo_ratio",
    "repeated_lines",
    "repeated_ngrams",
    "boilerplate",
    "low_alpha_words",
    "no_stop_words",
    "long_lines",
    "replacement_chars",
)

_HANGUL_SYLLABLE = re.compile(r"[\uac00-\ud7a3]")
_JAMO = re.compile(r"[\u3131-\u318e\u1100-\u11ff]")
_PLAIN = re.compile(r"[^\W_]|\s", re.UNICODE)  # letters, digits, whitespace
_BOILERPLATE = re.compile(
    r"copyright|all rights reserved|무단\s?전재|재배포\s?금지|cookie|쿠키|javascript|로그인|회원\s?가입|구독|"
    r"lorem ipsum|terms of (?:use|service)|privacy policy|개인정보\s?처리\s?방침|클릭하세요|click here|"
    r"저작권자|ⓒ|©",
    re.IGNORECASE,
)
_EN_STOP = frozenset("the be to of and that have with this from for not are was were is".split())


@dataclass
class QualityConfig:
    """Thresholds for one language. Set a ratio to 1 (or 0 for minimums) to switch a rule off."""

    min_chars: int = 20
    max_chars: int = 1_000_000
    min_words: int = 3
    max_symbol_ratio: float = 0.3
    """Share of characters that are neither letters, digits nor whitespace."""
    min_hangul_ratio: float = 0.0
    """Hangul syllables / non-space characters (Korean only)."""
    max_jamo_ratio: float = 1.0
    """Bare jamo (ㅋ, ㅠ, ...) / Hangul characters (Korean only)."""
    max_dup_line_ratio: float = 0.3
    """Share of lines that repeat an earlier line (documents of 3 lines or more)."""
    max_top_ngram_ratio: float = 0.2
    """Characters covered by the most frequent word 2-gram / all word characters (20 words or more)."""
    max_dup_5gram_ratio: float = 0.25
    """Characters in word 5-grams seen before in the document / all word characters."""
    max_boilerplate_ratio: float = 0.5
    """Share of lines that are boilerplate (copyright, cookie, subscribe, ...)."""
    min_alpha_word_ratio: float = 0.0
    """Share of words with a letter (English: Gopher's 0.8)."""
    min_stop_words: int = 0
    """English stop words required in documents of 20 words or more (Gopher: 2)."""
    max_line_chars: int = 0
    """Longest line allowed, 0 = no limit (code: minified files)."""
    max_replacement_ratio: float = 0.01
    """Share of U+FFFD replacement characters (broken decoding upstream)."""


def default_quality() -> dict[str, QualityConfig]:
    return {
        "ko": QualityConfig(min_chars=20, min_hangul_ratio=0.3, max_jamo_ratio=0.3),
        "en": QualityConfig(min_chars=40, min_words=8, min_alpha_word_ratio=0.8, min_stop_words=2),
        "code": QualityConfig(
            min_chars=20,
            min_words=3,
            max_symbol_ratio=0.5,
            max_dup_line_ratio=0.6,
            max_top_ngram_ratio=1.0,
            max_dup_5gram_ratio=1.0,
            max_line_chars=1000,
        ),
        "other": QualityConfig(),
    }


@dataclass
class QualityRules:
    per_language: dict[str, QualityConfig] = field(default_factory=default_quality)


def _repetition(words: list[str], cfg: QualityConfig) -> str | None:
    if len(words) < 20:
        return None
    total = sum(len(w) for w in words)
    bigrams = Counter(zip(words, words[1:], strict=False))
    ((top, count),) = bigrams.most_common(1)
    if count > 1 and count * (len(top[0]) + len(top[1])) / total > cfg.max_top_ngram_ratio:
        return "repeated_ngrams"
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(words)
    for i in range(len(words) - 4):
        gram = tuple(words[i : i + 5])
        if gram in seen:
            for j in range(i, i + 5):
                covered[j] = True
        else:
            seen.add(gram)
    dup_chars = sum(len(w) for w, c in zip(words, covered, strict=True) if c)
    if dup_chars / total > cfg.max_dup_5gram_ratio:
        return "repeated_ngrams"
    return None


def check(text: str, lang: str, cfg: QualityConfig) -> str | None:
    """The first rule `text` breaks (a name from REASONS), or None when it passes."""
    n = len(text)
    if n < cfg.min_chars:
        return "too_short"
    if n > cfg.max_chars:
        return "too_long"
    if text.count("\ufffd") / n > cfg.max_replacement_ratio:
        return "replacement_chars"
    words = text.split()
    if len(words) < cfg.min_words:
        return "too_few_words"
    if 1 - len(_PLAIN.findall(text)) / n > cfg.max_symbol_ratio:
        return "high_symbol_ratio"
    if lang == "ko":
        non_space = sum(map(len, words))
        syllables = len(_HANGUL_SYLLABLE.findall(text))
        jamo = len(_JAMO.findall(text))
        if jamo and jamo / (jamo + syllables) > cfg.max_jamo_ratio:
            return "high_jamo_ratio"
        if syllables / max(1, non_space) < cfg.min_hangul_ratio:
            return "low_hangul_ratio"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if cfg.max_line_chars and any(len(line) > cfg.max_line_chars for line in lines):
        return "long_lines"
    if len(lines) >= 3:
        if 1 - len(set(lines)) / len(lines) > cfg.max_dup_line_ratio:
            return "repeated_lines"
        if sum(1 for line in lines if _BOILERPLATE.search(line)) / len(lines) > cfg.max_boilerplate_ratio:
            return "boilerplate"
    elif lines and all(_BOILERPLATE.search(line) for line in lines) and cfg.max_boilerplate_ratio < 1:
        return "boilerplate"
    if (
        cfg.min_alpha_word_ratio
        and sum(1 for w in words if any(c.isalpha() for c in w)) / len(words) < cfg.min_alpha_word_ratio
    ):
        return "low_alpha_words"
    if cfg.min_stop_words and len(words) >= 20:
        if sum(1 for w in words if w.lower() in _EN_STOP) < cfg.min_stop_words:
            return "no_stop_words"
    return _repetition(words, cfg)
