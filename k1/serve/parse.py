"""Split generated text into reasoning, answer and tool calls while it streams.

The chat template (k1/tokenizer/spec.py) frames an assistant turn as

    <think>\\n{reasoning}\\n</think>\\n\\n{answer}\\n<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>

With thinking on, the prompt already ends with "<think>\\n", so generated text starts inside the
reasoning; with thinking off the template closes an empty block and the text is the answer (a
model that opens a <think> block anyway at the very start still has it split off). Tags may arrive
cut across deltas, so a possible start of a tag is held back until the next delta decides it.
"""

from __future__ import annotations

import json
import secrets

THINK, END_THINK = "<think>", "</think>"
TOOL_CALL, END_TOOL_CALL = "<tool_call>", "</tool_call>"


def _partial(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-k:]):
            return k
    return 0


def _held(text: str, tag: str) -> int:
    """Characters to hold back at the end of `text`: a possible start of `tag` and the newlines
    before it (the template puts a newline before the tag, and it is dropped with the tag)."""
    k = _partial(text, tag)
    rest = text[: len(text) - k]
    return k + len(rest) - len(rest.rstrip("\n"))


def tool_call(name: str, arguments) -> dict:
    """An OpenAI `tool_calls` entry."""
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {
        "id": f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def parse_call(body: str) -> dict | None:
    """The call inside <tool_call>...</tool_call>, or None when it is not {"name": str, "arguments": ...}."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(args, dict | str):
        return None
    return tool_call(obj["name"], args)


class OutputParser:
    """feed(text) -> [(kind, value)] with kind "reasoning" | "content" (str) or "tool_call" (dict)."""

    def __init__(self, reasoning: bool, tools: bool):
        self.state = "reasoning" if reasoning else "content"
        self.tools = tools
        self.buf = ""
        self.at_start = True  # nothing emitted yet: a leading <think> still opens reasoning
        self.content_start = not reasoning  # newlines right after </think> or a call are dropped

    def feed(self, text: str) -> list[tuple[str, object]]:
        self.buf += text
        return self._drain(final=False)

    def close(self) -> list[tuple[str, object]]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []

        def emit(kind: str, value) -> None:
            if value:
                out.append((kind, value))
                self.at_start = False

        while self.buf:
            if self.state == "reasoning":
                i = self.buf.find(END_THINK)
                if i >= 0:
                    emit("reasoning", self.buf[:i].rstrip("\n"))
                    self.buf = self.buf[i + len(END_THINK) :]
                    self.state, self.content_start, self.at_start = "content", True, False
                    continue
                if final:
                    emit("reasoning", self.buf)
                    self.buf = ""
                    break
                # Hold a possible "</think>" start and trailing newlines (dropped before the tag).
                keep = _held(self.buf, END_THINK)
                emit("reasoning", self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
                break
            if self.state == "content":
                if self.content_start:
                    self.buf = self.buf.lstrip("\n")
                    if not self.buf:
                        break
                    self.content_start = False
                if self.at_start:
                    if self.buf.startswith(THINK):
                        self.buf = self.buf[len(THINK) :].lstrip("\n")
                        self.state = "reasoning"
                        continue
                    if THINK.startswith(self.buf) and not final:
                        break
                    self.at_start = False
                i = self.buf.find(TOOL_CALL) if self.tools else -1
                if i >= 0:
                    emit("content", self.buf[:i].rstrip("\n"))
                    self.buf = self.buf[i + len(TOOL_CALL) :]
                    self.state = "tool"
                    continue
                if final:
                    emit("content", self.buf)
                    self.buf = ""
                    break
                keep = 0
                if self.tools:
                    keep = _held(self.buf, TOOL_CALL)
                emit("content", self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep :]
                break
            # state == "tool": wait for the closing tag, then parse the whole call
            i = self.buf.find(END_TOOL_CALL)
            if i < 0:
                if final:
                    emit("content", TOOL_CALL + self.buf)
                    self.buf = ""
                break
            body = self.buf[:i]
            self.buf = self.buf[i + len(END_TOOL_CALL) :]
            call = parse_call(body)
            if call is None:  # not a well-formed call: show it as text rather than drop it
                emit("content", TOOL_CALL + body + END_TOOL_CALL)
            else:
                emit("tool_call", call)
            self.state, self.content_start = "content", True
        return out
