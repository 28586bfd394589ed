"""A terminal chat with a k1 model: streaming, Think / Non-Think toggles, history within the context.

    k1 chat runs/sft_demo/sft/model                 # /think, /nothink, /reset, /help, /quit
    k1 chat MODEL_DIR --no-think --temperature 0

`Chat` is the conversation without the terminal: give it a line, it streams the reply through a
callback and keeps the history, so a test or another front end drives it the same way. `terminal`
wraps it with prompt_toolkit (Korean line editing with correct wide-character cursor movement)
and ANSI styling; Ctrl-C during a reply stops the reply and returns to the prompt, Ctrl-C at the
prompt clears the line, Ctrl-D or /quit leaves.

Text streams through the tokenizer's StreamDecoder, so a Hangul syllable or any multi-byte
character split across tokens is printed only once it is complete. Message text is tokenized with
special tokens off: a user cannot forge a turn boundary by typing "<|end|>".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from k1.errors import K1Error

# Hard cap on one input line: longer text is refused, not silently cut.
MAX_INPUT_CHARS = 32_000
COMMANDS = {
    "/think": "reason step by step inside <think>...</think> before answering",
    "/nothink": "answer directly, without reasoning",
    "/reset": "forget the conversation",
    "/help": "show these commands",
    "/quit": "leave (also Ctrl-D)",
}

Write = Callable[[str, str], None]
"""write(text, kind): kind is "think" (reasoning), "answer" or "info" (messages from the chat itself)."""


@dataclass
class ChatSettings:
    think: bool = True
    """Start in think mode (toggle with /think and /nothink)."""
    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0
    seed: int | None = None
    system: str = ""
    """System message kept at the head of every conversation."""
    context: int = 0
    """Tokens of prompt + reply allowed; 0: the model's max_position_embeddings."""


@dataclass
class Turn:
    """What one reply produced."""

    reasoning: str = ""
    answer: str = ""
    tokens: int = 0
    prompt_tokens: int = 0
    interrupted: bool = False
    finish_reason: str = "length"
    seconds: float = 0.0
    dropped_turns: int = 0
    """Earlier exchanges removed from the history to fit the context."""


@dataclass
class Chat:
    model: object
    tok: object
    settings: ChatSettings = field(default_factory=ChatSettings)
    history: list[dict] = field(default_factory=list)

    def __post_init__(self):
        limit = self.model.config.max_position_embeddings
        self.context = min(self.settings.context or limit, limit)
        if self.context < 16:
            raise K1Error(f"--context {self.context}: too small for a conversation")

    @property
    def think(self) -> bool:
        return self.settings.think

    # -- prompts

    def _messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        return head + self.history

    def prompt_ids(self) -> list[int]:
        """The conversation so far plus the generation prompt of the current mode, as token ids.

        The template renders the structure; message text is then tokenized with special tokens off,
        so typed "<|end|>" stays text."""
        messages = self._messages()
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=self.think)
        ids: list[int] = []
        pos = 0
        for m in messages:
            content = m.get("content")
            role_id = getattr(self.tok, f"{m['role']}_id", None)
            if not isinstance(content, str) or not content or role_id is None:
                continue
            # Look for the text only after its own turn's role token: "user" typed by the user must
            # not be found inside the template's "<|user|>".
            role = self.tok.id_to_token(role_id)
            head = text.find(role, pos)
            at = text.find(content, head + len(role)) if head >= 0 else -1
            if at < 0:  # the template changed the text (stripped newlines): it stays in the template's part
                continue
            ids += self.tok.encode(text[pos:at]) + self.tok.encode(content, special=False)
            pos = at + len(content)
        return ids + self.tok.encode(text[pos:])

    def _fit(self) -> tuple[list[int], int, int]:
        """Prompt ids and the reply budget, dropping the oldest exchanges until they fit the context."""
        dropped = 0
        while True:
            ids = self.prompt_ids()
            room = self.context - len(ids)
            if room >= min(self.settings.max_new_tokens, 64) or not self._drop_oldest():
                break
            dropped += 1
        if room < 1:
            raise K1Error(
                f"message too long: {len(ids)} tokens of prompt leave no room in the {self.context}-token context"
            )
        return ids, min(self.settings.max_new_tokens, room), dropped

    def _drop_oldest(self) -> bool:
        """Remove the oldest exchange (a user message and what followed it up to the next one)."""
        users = [i for i, m in enumerate(self.history) if m["role"] == "user"]
        if len(users) < 2:
            return False
        del self.history[: users[1]]
        return True

    # -- commands and replies

    def handle(self, line: str, write: Write) -> bool:
        """One line from the user: a command or a message. Returns False when the user wants to leave."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line, write)
        self.reply(line, write)
        return True

    def command(self, line: str, write: Write) -> bool:
        name = line.split()[0].lower()
        if name in ("/quit", "/exit"):
            return False
        if name == "/think":
            self.settings.think = True
            write("think mode: the model reasons before it answers\n", "info")
        elif name in ("/nothink", "/no_think"):
            self.settings.think = False
            write("non-think mode: the model answers directly\n", "info")
        elif name == "/reset":
            self.history.clear()
            write("conversation cleared\n", "info")
        elif name == "/help":
            write("".join(f"  {c:<10} {h}\n" for c, h in COMMANDS.items()), "info")
        else:
            write(f"unknown command {name}; /help lists them\n", "info")
        return True

    def reply(self, text: str, write: Write) -> Turn:
        """Send a user message and stream the reply through `write`. Ctrl-C (KeyboardInterrupt) while
        generating stops the reply; what was answered so far is kept, an unanswered message is not."""
        from k1.generate import SamplingParams, stream
        from k1.tokenizer import StreamDecoder

        if len(text) > MAX_INPUT_CHARS:
            write(f"message longer than {MAX_INPUT_CHARS:,} characters; not sent\n", "info")
            return Turn()
        before = list(self.history)
        self.history.append({"role": "user", "content": text})
        try:
            ids, budget, dropped = self._fit()
        except K1Error as err:
            self.history[:] = before  # the message alone does not fit: the conversation stays as it was
            write(f"{err}\n", "info")
            return Turn()
        tok = self.tok
        stops = set(tok.stop_ids)
        params = SamplingParams(
            max_new_tokens=budget,
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            top_k=self.settings.top_k,
            stop_token_ids=sorted(stops),
            seed=self.settings.seed,
        )
        turn = Turn(prompt_tokens=len(ids), dropped_turns=dropped)
        decoder = StreamDecoder(tok, skip_special=True)
        parts = {"think": [], "answer": []}
        kind = "think" if self.think else "answer"

        def emit(piece: str, where: str) -> None:
            if piece:
                parts[where].append(piece)
                write(piece, where)

        t0 = time.perf_counter()
        try:
            for step in stream(self.model, [ids], params):
                t = step[0]
                if t is None:
                    break
                if t in stops:
                    turn.finish_reason = "stop"
                    break
                turn.tokens += 1
                if t == tok.end_think_id and kind == "think":
                    emit(decoder.flush(), "think")
                    kind = "answer"
                    continue
                if t == tok.think_id and kind == "answer":
                    emit(decoder.flush(), "answer")
                    kind = "think"  # a block the model opened itself (non-think mode ignored)
                    continue
                emit(decoder.feed(t), kind)
            emit(decoder.flush(), kind)
        except KeyboardInterrupt:
            turn.interrupted = True
            turn.finish_reason = "interrupted"
        turn.seconds = time.perf_counter() - t0
        turn.reasoning = "".join(parts["think"]).strip()
        turn.answer = "".join(parts["answer"]).strip()
        if turn.answer:
            # Earlier turns are rendered without their reasoning by the template, so keep only the answer.
            self.history.append({"role": "assistant", "content": turn.answer})
        else:
            self.history.pop()
        return turn


# ----------------------------------------------------------------------------------------- terminal

_DIM, _RESET, _INFO = "\x1b[2m", "\x1b[0m", "\x1b[36m"


def terminal(chat: Chat, stdin=None, stdout=None) -> None:
    """The interactive loop: prompt_toolkit on a terminal, plain lines from a pipe."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    tty = stdout.isatty()
    state = {"last": "info"}

    def write(text: str, kind: str) -> None:
        if kind == "answer" and state["last"] == "think":
            text = "\n" + text.lstrip("\n")
        state["last"] = kind
        if tty and kind in ("think", "info"):
            text = (_DIM if kind == "think" else _INFO) + text + _RESET
        stdout.write(text)
        stdout.flush()

    read = _line_reader(chat, stdin, stdout)
    write(
        f"k1 chat: {'think' if chat.think else 'non-think'} mode; /help for commands, Ctrl-C stops a reply, "
        "Ctrl-D leaves\n",
        "info",
    )
    while True:
        try:
            line = read()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, as in a shell
            continue
        except EOFError:
            stdout.write("\n")
            return
        state["last"] = "info"
        if line.strip() and not line.strip().startswith("/"):
            if chat.think:
                write("<think>\n", "think")
            turn = chat.reply(line.strip(), write)
            if turn.interrupted:
                write("\n[stopped]\n", "info")
            else:
                stdout.write("\n")
            if turn.dropped_turns:
                write(f"[{turn.dropped_turns} earliest exchange(s) dropped to fit the context]\n", "info")
            continue
        if not chat.handle(line, write):
            return


def _line_reader(chat: Chat, stdin, stdout) -> Callable[[], str]:
    if stdin.isatty() and stdout.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory

        session = PromptSession(history=InMemoryHistory())
        return lambda: session.prompt("think> " if chat.think else "chat> ")

    def read() -> str:
        line = stdin.readline()
        if not line:
            raise EOFError
        return line

    return read
