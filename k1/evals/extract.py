"""Reading answers out of model completions: reasoning blocks, final answers, code blocks.

    split_thinking("<think>6*7</think>The answer is 42.")   # Thought(reasoning="6*7", answer="The answer is 42.")
    extract_answer("... 따라서 정답: 1,250원입니다.")          # "1250"
    answers_equal("\\frac{2}{3}", "0.6666666666666666")      # True
    extract_code("Here:\\n```python\\nprint(1)\\n```")          # "print(1)\\n"

Extraction is deliberately a fixed cascade (boxed -> answer phrase -> last number) rather than a
learned or model-graded judge: every figure it produces can be checked by hand, and the same rules
score k1 models, other models and reference answers alike.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# Answers longer than this are not answers; stops pathological regex work on garbage output.
MAX_ANSWER_CHARS = 512
# Numbers compare exactly (448001 != 448000, 224.88 != 224.87), except against a long decimal, which
# is a rounded repeating value: then within this relative tolerance (2/3 == 0.6666666666666666).
REL_TOL = 1e-6
LONG_DECIMAL = 8


@dataclass(frozen=True)
class Thought:
    """A completion split into its reasoning block and the answer after it."""

    reasoning: str | None
    """Text inside <think>...</think>; None when the completion has no reasoning block."""
    answer: str
    """What the user sees: the text after the reasoning block ("" when the block never closed)."""
    closed: bool
    """True when the reasoning block was closed (or there was none)."""


def _trim(answer: str) -> str:
    # Blank lines and trailing space go; the first line's indentation stays (a code completion
    # continuing a function body starts indented).
    return re.sub(r"^(?:[ \t]*\r?\n)+", "", answer).rstrip()


def split_thinking(text: str, started_in_think: bool = False) -> Thought:
    """Split `text` at its reasoning block.

    `started_in_think`: the prompt itself ended with "<think>" (some chat templates open the block
    for the model), so the completion begins inside the reasoning.
    """
    close = text.find(THINK_CLOSE)
    if close >= 0:
        head = text[:close]
        opened = head.find(THINK_OPEN)
        reasoning = head[opened + len(THINK_OPEN) :] if opened >= 0 else head
        return Thought(reasoning.strip(), _trim(text[close + len(THINK_CLOSE) :]), True)
    opened = text.find(THINK_OPEN)
    if opened >= 0:
        # An opened block that never closed (out of tokens, or a confused model): no answer was given.
        return Thought(text[opened + len(THINK_OPEN) :].strip(), _trim(text[:opened]), False)
    if started_in_think:
        return Thought(text.strip(), "", False)
    return Thought(None, _trim(text), True)


def adheres(thought: Thought, think: bool) -> bool:
    """Did the completion follow its mode?

    Think mode: a closed reasoning block with an answer after it. Non-think mode: no reasoning
    (an empty block, which some templates put in the prompt or the model echoes, counts as none).
    """
    if think:
        return thought.reasoning is not None and thought.closed and bool(thought.answer)
    return not thought.reasoning


# ---------------------------------------------------------------------------------------------
# Final answers


def _last_braced(text: str, command: str) -> str | None:
    r"""Content of the last `\command{...}` with balanced braces (`\boxed{\frac{1}{2}}` -> `\frac{1}{2}`)."""
    start = text.rfind(command)
    while start >= 0:
        i = start + len(command)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
            return text[i + 1 :]  # unbalanced (truncated): take the rest
        if i < len(text):
            # "\boxed 5" (no braces): the next token
            m = re.match(r"[^\s$]+", text[i:])
            if m:
                return m.group(0)
        start = text.rfind(command, 0, start)
    return None


# Longest phrases first so that "정답:" wins over its suffix "답:".
_ANSWER_PHRASE = re.compile(
    r"(?:the\s+final\s+answer\s+is|the\s+answer\s+is|final\s+answer\s*(?:is)?\s*[:：]?|answer\s*[:：]"
    r"|최종\s*답\s*(?:은|는)?\s*[:：]?|정답\s*(?:은|는)?\s*[:：]?|답\s*(?:은|는)\s*[:：]?|답\s*[:：]|####)",
    re.IGNORECASE,
)


def extract_answer(text: str) -> str | None:
    r"""The final answer in `text` (reasoning already removed), normalized; None when there is none.

    Cascade: the last \boxed{} / \fbox{}; else the text after the last answer phrase ("the answer
    is", "final answer:", "정답:", "답:", "답은", GSM8K's "####"); else the last number.
    """
    if not text:
        return None
    for command in (r"\boxed", r"\fbox"):
        boxed = _last_braced(text, command)
        if boxed is not None:
            return normalize_answer(boxed)
    phrases = list(_ANSWER_PHRASE.finditer(text))
    if phrases:
        rest = text[phrases[-1].end() :].strip()
        line = rest.split("\n", 1)[0][:MAX_ANSWER_CHARS]
        candidate = normalize_answer(line)
        if parse_number(candidate) is None:
            # "12 and 15 make 27" is not one number: the first one stated is the answer given
            candidate = _first_number(line) or candidate
        if candidate:
            return candidate
    last = _numbers(text)
    return last[-1] if last else None


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d])")
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.]+)\s*\}\s*\{\s*(-?[\d.]+)\s*\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac(\d)(\d)")


def _numeric_text(text: str) -> str:
    r"""Rewrite `text` so numbers read plainly: 1,234 -> 1234; \frac{a}{b} -> a/b; \! and \, dropped."""
    text = text.replace("\\!", "").replace("\\,", "").replace("{,}", "")
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _FRAC.sub(r"\1/\2", text)
    text = _FRAC_SHORT.sub(r"\1/\2", text)
    return text.replace("−", "-")


def _numbers(text: str) -> list[str]:
    return [re.sub(r"\s+", "", m.group(0)) for m in _NUMBER.finditer(_numeric_text(text[-20_000:]))]


def _first_number(text: str) -> str | None:
    found = _numbers(text)
    return found[0] if found else None


def normalize_answer(answer: str) -> str:
    r"""A canonical string for an answer: LaTeX wrappers, units and `x =` dropped; a number if there is one.

    "\text{1,000 apples}" -> "1000"; "x = \frac{3}{4}" -> "3/4"; "025" -> "025" (numeric compare
    strips leading zeros later); "\text{(B)}" -> "(b)".
    """
    s = answer.strip()[:MAX_ANSWER_CHARS]
    for wrapper in (r"\text", r"\textbf", r"\mathrm", r"\mathbf", r"\mbox"):
        while wrapper + "{" in s:
            inner = _last_braced(s, wrapper)
            if inner is None:
                break
            at = s.rfind(wrapper + "{")
            s = s[:at] + inner + s[at + len(wrapper) + 1 + len(inner) + 1 :]
    s = s.replace("$", "").replace("\\left", "").replace("\\right", "").replace("\\%", "%")
    s = (
        s.replace("^\\circ", "")
        .replace("^{\\circ}", "")
        .replace("°", "")
        .replace("\\,", "")
        .replace("\\!", "")
    )
    if "=" in s and not s.rstrip().endswith("="):
        s = s.rsplit("=", 1)[1]  # "x = 5" -> "5"
    s = s.strip().rstrip(".。")
    numbers = _numbers(s)
    # One number among words/units ("1,250원", "15 apples", "50%") is that number; keep "%" so
    # answers_equal can accept both 50 and 0.5.
    if len(numbers) == 1 and not re.search(r"[a-zA-Z]\s*[\^_(]|\\sqrt|\\pi|[+*^]", s):
        return numbers[0] + ("%" if "%" in s else "")
    return re.sub(r"\s+", "", s).lower()


def parse_number(answer: str | None) -> Fraction | None:
    """`answer` as an exact rational (leading zeros, decimals, a/b), or None when it is not a number."""
    if answer is None:
        return None
    s = answer.strip().rstrip("%")
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)(?:/(-?\d+(?:\.\d+)?))?", s)
    if not m:
        return None
    try:
        value = Fraction(m.group(1))
        if m.group(2) is not None:
            den = Fraction(m.group(2))
            if den == 0:
                return None
            value /= den
    except (ValueError, ZeroDivisionError):
        return None
    return value


def answers_equal(predicted: str | None, gold: str) -> bool:
    """Does a predicted answer match the gold answer? Numbers compare as numbers (see REL_TOL)."""
    if predicted is None:
        return False
    predicted = normalize_answer(predicted)
    gold_norm = normalize_answer(gold)
    p, g = parse_number(predicted), parse_number(gold_norm)
    if p is not None and g is not None:
        candidates = [p, p / 100] if predicted.endswith("%") else [p]
        rounded = max(_decimals(predicted), _decimals(gold_norm)) >= LONG_DECIMAL
        return any(
            c == g or (rounded and math.isclose(float(c), float(g), rel_tol=REL_TOL)) for c in candidates
        )
    return predicted == gold_norm


def _decimals(number: str) -> int:
    m = re.search(r"\.(\d+)", number)
    return len(m.group(1)) if m else 0


# ---------------------------------------------------------------------------------------------
# Code

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "python", "py", "python3", "py3"}


def extract_code(text: str) -> str:
    """The program in a completion: the last Python (or untagged) fenced block, else the whole text.

    An unterminated fence (the model ran out of tokens) yields what was written after it.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [body for lang, body in blocks if lang in _CODE_LANGS]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return text
