"""k1's Tokenizer: a thin wrapper over `tokenizers.Tokenizer` with k1's special ids and chat template.

    tok = load("runs/tok")                    # a tokenizer dir, a model dir, or a tokenizer.json
    ids = tok.encode("안녕하세요")
    tok.decode(ids) == "안녕하세요"
    prompt = tok.apply_chat_template([{"role": "user", "content": "안녕?"}], enable_thinking=False,
                                     add_generation_prompt=True)

The chat template is rendered with jinja2 the way transformers renders it (sandboxed environment,
trim_blocks / lstrip_blocks, loop controls, a `tojson` that keeps Hangul readable), so k1 and
`AutoTokenizer.apply_chat_template` produce the same string and the same ids.
"""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from functools import cached_property
from pathlib import Path

from k1.errors import K1Error

from .spec import NAMED_TOKENS

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"  # transformers 5 may save the template here instead
K1_FILE = "k1_tokenizer.json"

# A lone surrogate (e.g. from a JSON "\ud800" escape) is not Unicode text and cannot be UTF-8
# encoded; it is replaced by U+FFFD before encoding instead of crashing.
_SURROGATES = "utf-8", "surrogatepass"


def _clean(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode(*_SURROGATES).decode("utf-8", "replace")


class Tokenizer:
    """A byte-level BPE tokenizer with k1's special tokens. Ids are the same as transformers' for the same dir."""

    def __init__(
        self, backend, config: dict | None = None, chat_template: str | None = None, path: Path | None = None
    ):
        self.backend = backend  # tokenizers.Tokenizer
        self.config = config or {}
        self.chat_template = chat_template
        self.path = path
        vocab = backend.get_vocab(with_added_tokens=True)
        # Special ids: from tokenizer_config.json's named tokens when present (so a foreign HF
        # tokenizer dir works too), else k1's names; None where the vocabulary has no such token.
        for attr, text, _ in NAMED_TOKENS:
            setattr(self, f"{attr}_id", vocab.get(text))
        for attr in ("bos", "eos", "pad"):
            name = self.config.get(f"{attr}_token")
            if isinstance(name, dict):
                name = name.get("content")
            if isinstance(name, str) and name in vocab:
                setattr(self, f"{attr}_id", vocab[name])

    # -- basic encode / decode -------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the embedding must have at least this many rows)."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of `text`. special=False treats "<|end|>" etc. as plain text (use for untrusted text)."""
        backend = self.backend if special else self._plain
        return backend.encode(_clean(text), add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], *, special: bool = True) -> list[list[int]]:
        """Like encode, over many texts at once on all cores (tokenizers' rayon pool)."""
        backend = self.backend if special else self._plain
        return [e.ids for e in backend.encode_batch([_clean(t) for t in texts], add_special_tokens=False)]

    def decode(self, ids, *, skip_special: bool = False) -> str:
        """Text of `ids`. Keeps special tokens by default so decode(encode(x)) == x for any x."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    @cached_property
    def _plain(self):
        from tokenizers import Tokenizer as Backend

        clone = Backend.from_str(self.backend.to_str())
        clone.encode_special_tokens = True
        return clone

    @cached_property
    def special_ids(self) -> frozenset[int]:
        """Ids of control tokens (bos, eos, roles, ...), not of markup like <think> that users should see."""
        return frozenset(i for i, t in self.backend.get_added_tokens_decoder().items() if t.special)

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end a generation: end of turn and end of text."""
        return [i for i in (self.end_of_turn_id, self.eos_id) if i is not None]

    @cached_property
    def id_bytes(self) -> list[bytes]:
        """The bytes each id stands for (byte-level BPE tokens are byte strings; added tokens their UTF-8)."""
        table = _byte_decoder()
        out = [b""] * self.vocab_size
        added = {i: t.content for i, t in self.backend.get_added_tokens_decoder().items()}
        for token, i in self.backend.get_vocab(with_added_tokens=False).items():
            if i < len(out):
                out[i] = bytes(table[c] for c in token) if all(c in table for c in token) else token.encode()
        for i, content in added.items():
            if i < len(out):
                out[i] = content.encode("utf-8")
        return out

    # -- chat ------------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: list[dict],
        *,
        enable_thinking: bool | None = True,
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        tokenize: bool = False,
        **kwargs,
    ) -> str | list[int]:
        """Render `messages` with the directory's Jinja template (identical to transformers' output)."""
        if not self.chat_template:
            raise K1Error(
                f"{self.path or 'tokenizer'}: no chat_template in {CONFIG_FILE}; train it with k1 or add one"
            )
        text = render_chat(
            self.chat_template,
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
            special=self._special_strings(),
            **kwargs,
        )
        return self.encode(text) if tokenize else text

    def _special_strings(self) -> dict:
        out = {}
        for attr in ("bos", "eos", "pad"):
            i = getattr(self, f"{attr}_id")
            out[f"{attr}_token"] = self.backend.id_to_token(i) if i is not None else ""
        return out

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    # -- saving ----------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write tokenizer.json + tokenizer_config.json into `directory` (e.g. a model dir), file by file atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / TOKENIZER_FILE, self.backend.to_str(pretty=False))
        config = dict(self.config)
        if self.chat_template:
            config["chat_template"] = self.chat_template
        _atomic_write(directory / CONFIG_FILE, json.dumps(config, ensure_ascii=False, indent=2) + "\n")
        if (
            self.path is not None
            and (self.path / K1_FILE).is_file()
            and self.path.resolve() != directory.resolve()
        ):
            _atomic_write(directory / K1_FILE, (self.path / K1_FILE).read_text(encoding="utf-8"))
        return directory

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, path={str(self.path) if self.path else None!r})"


def load(path: str | Path) -> Tokenizer:
    """Load a tokenizer from a tokenizer dir, a model dir holding tokenizer files, or a tokenizer.json."""
    from tokenizers import Tokenizer as Backend

    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise K1Error(
            f"{path}: no {TOKENIZER_FILE} here; train one with `k1 tokenizer train` or give its directory"
        )
    directory = file.parent
    try:
        backend = Backend.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception on malformed files
        raise K1Error(f"{file}: not a valid tokenizer.json ({str(err).splitlines()[0][:200]})") from None
    config: dict = {}
    if (directory / CONFIG_FILE).is_file():
        try:
            config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        except ValueError as err:
            raise K1Error(f"{directory / CONFIG_FILE}: not valid JSON ({err})") from None
    template = config.pop("chat_template", None)
    if isinstance(template, list):  # transformers' named-template form: [{"name": ..., "template": ...}]
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if (directory / TEMPLATE_FILE).is_file():
        template = (directory / TEMPLATE_FILE).read_text(encoding="utf-8")
    return Tokenizer(backend, config, template, directory)


# -- chat template rendering ------------------------------------------------------------------------


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Same defaults as transformers' chat-template filter, so both render tool schemas identically.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


_ENV_CACHE: dict[str, object] = {}


def _compile(template: str):
    compiled = _ENV_CACHE.get(template)
    if compiled is None:
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        # Sandboxed: a template comes from a model directory, which may not be trusted.
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        compiled = env.from_string(template)
        if len(_ENV_CACHE) > 16:  # templates come from few model dirs; bound it anyway
            _ENV_CACHE.clear()
        _ENV_CACHE[template] = compiled
    return compiled


def render_chat(
    template: str, messages: list[dict], *, tools=None, add_generation_prompt=False, special=None, **kwargs
) -> str:
    """Render a chat template; a template error (bad role, bad message) becomes one K1Error line."""
    from jinja2.exceptions import TemplateError

    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise K1Error("chat messages must be a list of {'role': ..., 'content': ...} objects")
    try:
        return _compile(template).render(
            messages=messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            **(special or {}),
            **kwargs,
        )
    except TemplateError as err:
        raise K1Error(f"chat template: {err}") from None


# -- streaming decode -------------------------------------------------------------------------------


class StreamDecoder:
    """Turn ids into text as they arrive, never cutting a UTF-8 character or a Hangul syllable.

    Byte-level BPE tokens can end in the middle of a character (a Hangul syllable is three bytes),
    so text is released only up to the last complete character. Conjoining jamo (old-style Hangul
    written as a lead + vowel + tail sequence) are held back while the syllable can still grow.

        dec = tok.stream_decoder()
        for i in ids: print(dec.feed(i), end="")
        print(dec.flush())
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = False):
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self._bytes = tokenizer.id_bytes
        self._special = tokenizer.special_ids if skip_special else frozenset()
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def feed(self, ids) -> str:
        """Add one id or a list of ids; return the text that is now complete."""
        if isinstance(ids, int):
            ids = [ids]
        data = b"".join(self._bytes[i] for i in ids if 0 <= i < len(self._bytes) and i not in self._special)
        text = self._held + self._utf8.decode(data)
        cut = len(text)
        while cut > 0 and _jamo_can_continue(text[cut - 1]):
            cut -= 1
        self._held = text[cut:]
        return text[:cut]

    def flush(self) -> str:
        """The rest (an incomplete trailing character becomes U+FFFD); the decoder is then empty."""
        text = self._held + self._utf8.decode(b"", final=True)
        self._held = ""
        return text


def _jamo_can_continue(ch: str) -> bool:
    o = ord(ch)
    # Choseong (leading consonants) and jungseong (vowels) of the conjoining jamo blocks: a vowel
    # or a final consonant may still follow and join the same syllable.
    return 0x1100 <= o <= 0x11A7 or 0xA960 <= o <= 0xA97F or 0xD7B0 <= o <= 0xD7C6


def _byte_decoder() -> dict[str, int]:
    from tokenizers.pre_tokenizers import ByteLevel

    # ByteLevel.alphabet() is the 256 printable stand-ins; rebuild GPT-2's byte -> char mapping order.
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    table = {chr(c): b for b, c in zip(printable, chars, strict=True)}
    assert set(table) == set(ByteLevel.alphabet())
    return table


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
