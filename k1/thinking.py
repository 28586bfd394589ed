"""Think / Non-Think replies: split a completion at its reasoning block, read the final answer, and
measure whether the model kept to the mode it was asked for.

The chat template opens the reasoning block for the model in think mode (the prompt ends with
"<think>\\n", so the completion starts inside it) and writes an empty block in non-think mode (the
completion should be the answer alone). A reply *adheres* to its mode when:

    think      the block is closed (</think>) and an answer follows it
    non-think  no reasoning: no think tags, and no worked steps ("12 + 5 = 17") in the answer

    reply = split_reply(completion, think=True)   # Reply(reasoning=..., answer=..., closed=True)
    adheres(completion, think=True)
    extract_int("정답: 1,200원")                   # 1200
    summary = mode_summary(results)               # accuracy, mean tokens, adherence per mode

Used by bench/think_modes.py and `k1 chat`; an evaluation harness can reuse the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

# Longer than this is not a final answer; bounds regex work on runaway output.
MAX_ANSWER_CHARS = 2000
_ANSWER = re.compile(r"정답\s*[:：]\s*(-?\d[\d,]*)")
_NUMBER = re.compile(r"-?\d[\d,]*")
# A worked step: "12 + 5 = 17", "9000 × 4 = 36000", "8*3=24".
_STEP = re.compile(r"\d\s*[+\-×÷*/x]\s*\d[\d,]*\s*=")


@dataclass(frozen=True)
class Reply:
    reasoning: str | None
    """Text of the reasoning block; None when the reply has none."""
    answer: str
    """What the user is meant to read: the text after the block ("" when the block never closed)."""
    closed: bool
    """The block was closed (or there was none)."""


def split_reply(completion: str, think: bool) -> Reply:
    """Split a completion generated after the chat template's prompt for the given mode."""
    close = completion.find(THINK_CLOSE)
    if close >= 0:
        head = completion[:close]
        opened = head.rfind(THINK_OPEN)
        reasoning = head[opened + len(THINK_OPEN) :] if opened >= 0 else head
        return Reply(reasoning.strip(), completion[close + len(THINK_CLOSE) :].strip(), True)
    opened = completion.find(THINK_OPEN)
    if opened >= 0:  # a block opened and never closed: no answer was given
        return Reply(completion[opened + len(THINK_OPEN) :].strip(), completion[:opened].strip(), False)
    if think:  # the prompt opened the block and the reply never closed it
        return Reply(completion.strip(), "", False)
    return Reply(None, completion.strip(), True)


def shows_work(text: str) -> bool:
    """Does the text contain worked arithmetic steps (reasoning written without think tags)?"""
    return bool(_STEP.search(text[:MAX_ANSWER_CHARS]))


def adheres(completion: str, think: bool) -> bool:
    """Did the reply keep to its mode (see the module docstring)?"""
    reply = split_reply(completion, think)
    if think:
        return reply.closed and reply.reasoning is not None and bool(reply.answer)
    return (
        THINK_OPEN not in completion
        and THINK_CLOSE not in completion
        and not reply.reasoning
        and not shows_work(reply.answer)
    )


def extract_int(answer: str) -> int | None:
    """The integer after "정답:" (commas and units ignored), else the last integer; None if there is none."""
    text = answer[-MAX_ANSWER_CHARS:]
    found = _ANSWER.findall(text) or _NUMBER.findall(text)
    if not found:
        return None
    try:
        return int(found[-1].replace(",", ""))
    except ValueError:
        return None


@dataclass
class Result:
    """One generated reply to a problem with a known integer answer."""

    think: bool
    completion: str
    tokens: int
    """Generated tokens, the stop token not counted."""
    gold: int
    level: int = 0

    @property
    def reply(self) -> Reply:
        return split_reply(self.completion, self.think)

    @property
    def correct(self) -> bool:
        reply = self.reply
        # A think reply that never closed its block gave no answer: numbers inside the reasoning do not count.
        return reply.closed and extract_int(reply.answer) == self.gold

    @property
    def adheres(self) -> bool:
        return adheres(self.completion, self.think)


def mode_summary(results: Iterable[Result]) -> dict[str, dict]:
    """Per mode ("think", "non_think"): n, accuracy, mean generated tokens, adherence, and per level accuracy."""
    results = list(results)
    out: dict[str, dict] = {}
    for name, flag in (("think", True), ("non_think", False)):
        rs = [r for r in results if r.think == flag]
        if not rs:
            continue
        levels = sorted({r.level for r in rs})
        out[name] = {
            "n": len(rs),
            "accuracy": sum(r.correct for r in rs) / len(rs),
            "mean_tokens": sum(r.tokens for r in rs) / len(rs),
            "adherence": sum(r.adheres for r in rs) / len(rs),
            "accuracy_by_level": {
                lv: sum(r.correct for r in rs if r.level == lv) / sum(1 for r in rs if r.level == lv)
                for lv in levels
            },
        }
    return out


def evaluate_modes(model, tok, problems: list[dict], modes=(True, False), max_new_tokens: int = 160,
                   batch: int = 16) -> list[Result]:
    """Greedy answers to `problems` (k1.synth records) in each mode through the tokenizer's chat
    template; score them with `mode_summary`."""
    from k1.generate import generate

    out: list[Result] = []
    for think in modes:
        for i in range(0, len(problems), batch):
            chunk = problems[i : i + batch]
            prompts = [
                tok.apply_chat_template([{"role": "user", "content": r["question"]}], add_generation_prompt=True,
                                        enable_thinking=think, tokenize=True)
                for r in chunk
            ]
            gens = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                            stop_token_ids=tok.stop_ids)
            for r, g in zip(chunk, gens, strict=True):
                out.append(Result(think, tok.decode(g.tokens), len(g.tokens), r["answer"], r["level"]))
    return out
