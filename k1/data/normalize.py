"""Text normalization, the first thing every document goes through.

    from k1.data.normalize import normalize
    normalize("Ｈｅｌｌｏ\u200b  world \r\n")   # NFC, no control or zero-width characters, tidy whitespace

NFC (not NFKC): NFKC would rewrite full-width forms, ligatures and circled numbers that carry meaning in
Korean text, and the tokenizer applies its own normalizer anyway. Indentation is kept (code needs it);
only trailing spaces, exotic space characters and runs of blank lines are tidied.
"""

from __future__ import annotations

import re
import unicodedata

# C0/C1 control characters except tab and newline; DEL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Zero-width and invisible formatting characters that only hide differences (ZWSP, word joiner, BOM,
# soft hyphen). ZWJ (U+200D) stays: emoji sequences need it.
_INVISIBLE = re.compile("[\u200b\u2060\ufeff\u00ad\u180e]")
# Unicode spaces other than the ASCII space: NBSP, en/em spaces, ideographic space, ...
_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_LINE_SEPARATORS = re.compile("\r\n?|[\u2028\u2029\x85]")
_TRAILING = re.compile(r"[ \t]+(?=\n|$)")
_BLANK_RUNS = re.compile(r"\n{3,}")


def normalize(text: str) -> str:
    """NFC, control and zero-width characters removed, line ends unified, trailing spaces and runs of
    blank lines collapsed, leading/trailing whitespace stripped."""
    if not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    text = _LINE_SEPARATORS.sub("\n", text)
    text = _CONTROL.sub("", text)
    text = _INVISIBLE.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip()
