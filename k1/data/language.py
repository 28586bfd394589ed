"""Language / script identification: Korean, English, code or other.

    from k1.data.language import identify
    identify("오늘은 날씨가 좋다")        # "ko"
    identify("def f(x):\n    return x")  # "code"

Script counting, not a statistical language model: for the four classes this pipeline routes on,
the share of Hangul among letters decides Korean, Latin decides English, and line-shape features
(keywords, brackets, statement endings) decide code. fastText language ID would need a downloaded
model; the quality filters after this step catch what the script count gets wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LANGUAGES = ("ko", "en", "code", "other")

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_LATIN = re.compile(r"[A-Za-z]")
_LETTER = re.compile(r"[^\W\d_]")
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import |return\b|elif |else:|try:|except\b|with .*:$|for .*:$|"
    r"while .*:$|if .*:$|@\w|#include|#define|function\b|const |let |var |public |private |static |fn |"
    r"use |package |func |impl |struct |[}\])]+;?$|[\w.\[\]]+\s*[-+*/|&]?=\s*\S|\s{4,}\S)|[;{]\s*$|\)\s*:?\s*$|"
    r"=>|->|::|\+=|==|!="
)
_CODE_SYMBOLS = re.compile(r"[{}()\[\];=<>]")


@dataclass(frozen=True)
class LanguageConfig:
    """Thresholds of the script rules."""

    ko_min_hangul: float = 0.3
    """Korean when Hangul is at least this share of the letters (Korean prose borrows English words)."""
    en_min_latin: float = 0.7
    """English when Latin letters are at least this share of the letters."""
    code_min_lines: float = 0.3
    """Code when at least this share of non-empty lines look like code ..."""
    code_min_symbols: float = 0.03
    """... and brackets/operators are at least this share of the characters."""


def identify(text: str, config: LanguageConfig = LanguageConfig()) -> str:
    lines = [line for line in text.split("\n") if line.strip()]
    if lines and len(lines) >= 2:
        code_lines = sum(1 for line in lines if _CODE_LINE.search(line))
        if code_lines / len(lines) >= config.code_min_lines:
            if len(_CODE_SYMBOLS.findall(text)) / max(1, len(text)) >= config.code_min_symbols:
                return "code"
    letters = len(_LETTER.findall(text))
    if letters == 0:
        return "other"
    if len(_HANGUL.findall(text)) / letters >= config.ko_min_hangul:
        return "ko"
    if len(_LATIN.findall(text)) / letters >= config.en_min_latin:
        return "en"
    return "other"
