"""What a k1 tokenizer is made of: special tokens, pre-tokenizer patterns, the chat template, the config.

Everything here is data that ends up inside the tokenizer directory (tokenizer.json,
tokenizer_config.json, k1_tokenizer.json), so transformers and k1 read the same definitions.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from k1.errors import ConfigError, did_you_mean

# ---------------------------------------------------------------------------------------------
# Special tokens. They take the lowest ids (0, 1, 2, ...) so that their ids do not move when the
# vocabulary size changes: a model trained with one vocabulary size and a chat server written
# against another agree on what id 1 means.
# ---------------------------------------------------------------------------------------------

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
SYSTEM, USER, ASSISTANT, TOOL = "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"
END_OF_TURN = "<|end|>"
THINK, END_THINK = "<think>", "</think>"
TOOLS, END_TOOLS = "<tools>", "</tools>"
TOOL_CALL, END_TOOL_CALL = "<tool_call>", "</tool_call>"
TOOL_RESPONSE, END_TOOL_RESPONSE = "<tool_response>", "</tool_response>"
FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = (
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
)

# (attribute name on k1's Tokenizer, token text, special?). "special" tokens are control tokens
# that transformers drops with skip_special_tokens=True; the think and tool tags are markup the
# user should see in decoded text (as Qwen3 and A.X K1 treat <think>), so they are not "special".
NAMED_TOKENS: tuple[tuple[str, str, bool], ...] = (
    ("pad", PAD, True),
    ("bos", BOS, True),
    ("eos", EOS, True),
    ("system", SYSTEM, True),
    ("user", USER, True),
    ("assistant", ASSISTANT, True),
    ("tool", TOOL, True),
    ("end_of_turn", END_OF_TURN, True),
    ("think", THINK, False),
    ("end_think", END_THINK, False),
    ("tools", TOOLS, False),
    ("end_tools", END_TOOLS, False),
    ("tool_call", TOOL_CALL, False),
    ("end_tool_call", END_TOOL_CALL, False),
    ("tool_response", TOOL_RESPONSE, False),
    ("end_tool_response", END_TOOL_RESPONSE, False),
    ("fim_prefix", FIM_PREFIX, True),
    ("fim_middle", FIM_MIDDLE, True),
    ("fim_suffix", FIM_SUFFIX, True),
    ("fim_pad", FIM_PAD, True),
)

# The whole special block, named tokens plus spares, is this many ids: room to add tokens later
# (images, new roles) without retraining the tokenizer or resizing a model's embedding.
DEFAULT_SPECIAL_BLOCK = 128


def reserved_token(i: int) -> str:
    return f"<|reserved_{i}|>"


def special_tokens(block: int = DEFAULT_SPECIAL_BLOCK) -> list[tuple[str, bool]]:
    """All special tokens in id order: the named ones, then spares up to `block` in total."""
    if block < len(NAMED_TOKENS):
        raise ConfigError(
            f"special_block {block} is smaller than the {len(NAMED_TOKENS)} named special tokens"
        )
    named = [(text, special) for _, text, special in NAMED_TOKENS]
    spares = [(reserved_token(i), True) for i in range(block - len(NAMED_TOKENS))]
    return named + spares


# ---------------------------------------------------------------------------------------------
# Pre-tokenizers: the regex that cuts text into pieces before byte-level BPE merges inside each
# piece. A registry so a team can try a variant by name (`--pretokenizer`).
# ---------------------------------------------------------------------------------------------

# Letters that are neither Hangul nor CJK (Latin, Cyrillic, Greek, ...), for the "word" rule.
_OTHER_LETTERS = r"[[\p{L}\p{M}]&&[^\p{Hangul}\p{Han}\p{Hiragana}\p{Katakana}]]"

# One sentence mark may end a Korean word (" 했다.", " 좋아요!"), but not the first mark of a run:
# "영화..." is " 영화" + "...", "했다.”" is " 했다" + ".”", so mark runs and closing quotes are
# shared tokens instead of leaving a stray "..", "”" after every word that keeps one mark.
_MARK = r"[.,!?~](?![^\s\p{L}\p{N}])"
# A word's leading whitespace: a space, or one line break. A word that starts a line carries the
# newline the way other words carry their space ("\n그래서", "\nThe"), so line-per-sentence text
# (chat turns, Q/A, lists, hard-wrapped prose) does not pay a "\n" token per line; GPT-4's pattern
# keeps every newline apart (measured: docs/tokenizer.md). A blank line ("\n\n") stays its own piece.
_LEAD = r"(?: |\r?\n)?"
_EOJEOL = _LEAD + r"\p{Hangul}+(?:" + _MARK + ")?"

_K1_RULES = (
    # English contractions stay one piece ("it's" -> "it", "'s"), as in GPT-2/4.
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    # Korean: an eojeol, the unit Korean corpora count (the Sejong corpus among them): a run of
    # Hangul (syllables and every jamo block, so old-style combining jamo stay together) with its
    # leading space (or line break) and one sentence mark right after it (" 했다.", " 학교에서", " 좋아요!").
    # Particles and endings stay attached: BPE learns frequent words whole and splits rarer ones
    # into stem + ending pieces. Splitting particles off by rule instead, and leaving the sentence
    # mark out, both cost compression on held-out Korean (measured: docs/tokenizer.md).
    # A Hangul run that follows a Latin word or a digit without a space ("GPU를", "2024년에") is
    # its own piece, so particles and counters after foreign words and numbers become shared
    # tokens ("를", "년에") instead of one token per foreign word + particle.
    _EOJEOL,
    # Chinese characters and kana, in runs (no spaces between words in these scripts).
    r" ?[\p{Han}\p{Hiragana}\p{Katakana}ー]+",
    # Other words (English, code identifiers, Cyrillic, ...), with one leading space, symbol or
    # line break (" the", ".append", "_name", "\nThe"); GPT-4's cl100k pattern has no line break here.
    r"(?:[^\r\n\p{L}\p{N}]|\r?\n)?" + _OTHER_LETTERS + "+",
    # Numbers: DIGITS is filled in per config (one digit per token by default). The space before
    # a number goes with its first digit (" 2" "0" "2" "4" "년"): GPT-4's pattern leaves it a token
    # of its own, one token per number in running text (measured: docs/tokenizer.md).
    " ?{digits}",
    # Punctuation, symbols and emoji, with one leading space and any trailing newlines.
    r" ?[^\s\p{L}\p{N}]+[\r\n]*",
    # Newlines (with the spaces before them), then indentation: a run of spaces keeps all but its
    # last space, which goes to the next word (so "    return" is "   " + " return").
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
)

# How digits are split. "single" (the default: every digit its own token, so arithmetic sees
# aligned digits, as in LLaMA 1-2, PaLM and Qwen; the k1 pattern lets the first digit carry the
# space before the number) costs about one point of Korean compression against the groupings of
# three (measured: docs/tokenizer.md).
# "triple": groups of up to three from the left, as in GPT-4, LLaMA 3 and DeepSeek-V3.
DIGIT_RULES = {
    "single": r"\p{N}",
    "triple": r"\p{N}{1,3}",
    # Groups of three counted from the right, as thousands separators group them: 1234567 ->
    # 1 | 234 | 567, so each token is one place-value group (Singh & Strouse 2024 find right-to-left
    # grouping keeps arithmetic accuracy that left-to-right grouping loses).
    "triple-r2l": r"\p{N}{1,3}(?=(?:\p{N}{3})*(?!\p{N}))",
}

PRETOKENIZERS = {
    "k1": "|".join(_K1_RULES),
    # GPT-4's cl100k pattern, kept as a baseline to compare against.
    "gpt4": (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|{digits}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    ),
}


def phrase_rule(max_words: int) -> str:
    """Korean phrase: up to max_words eojeol joined by single spaces, ending at a sentence mark."""
    return _LEAD + r"\p{Hangul}+(?: \p{Hangul}+){0," + str(max_words - 1) + "}(?:" + _MARK + ")?"


def pretokenizer_pattern(name: str, digits: str = "single", phrase_words: int = 1) -> str:
    """The pre-tokenizer regex; phrase_words > 1 lets Korean pieces span that many eojeol (stage 2 of
    multiword training, and the pattern of a tokenizer trained with it)."""
    if name not in PRETOKENIZERS:
        raise ConfigError(f"unknown pretokenizer {name!r}{did_you_mean(name, list(PRETOKENIZERS))}")
    if digits not in DIGIT_RULES:
        raise ConfigError(f"unknown digits rule {digits!r}{did_you_mean(digits, list(DIGIT_RULES))}")
    pattern = PRETOKENIZERS[name].replace("{digits}", DIGIT_RULES[digits])
    if phrase_words > 1:
        if _EOJEOL not in pattern:
            raise ConfigError(
                f"pretokenizer {name!r} has no Korean eojeol rule; multiword merges need the k1 pretokenizer (or set multiword_share to 0)"
            )
        pattern = pattern.replace(_EOJEOL, phrase_rule(phrase_words), 1)
    return pattern


# ---------------------------------------------------------------------------------------------
# Chat template (Jinja, shipped in tokenizer_config.json). One turn per role token:
#
#   <|bos|><|system|>\n{system}[\n\n# Tools ... <tools>...</tools>]<|end|>\n
#   <|user|>\n{question}<|end|>\n
#   <|assistant|>\n<think>\n{reasoning}\n</think>\n\n{answer}<tool_call>...</tool_call><|end|>\n
#   <|tool|>\n<tool_response>\n{result}\n</tool_response><|end|>\n
#
# Thinking switch (A.X K1 / Qwen3 style): the generation prompt is "<|assistant|>\n<think>\n"
# when enable_thinking is true (the default), so the model reasons first, and
# "<|assistant|>\n<think>\n\n</think>\n\n" when false, so it answers directly. Assistant turns
# after the last user message keep their reasoning (that is what SFT trains on); earlier turns
# drop it, so long conversations do not carry old reasoning.
# ---------------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is none -%}"
    "{%- elif content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set thinking = enable_thinking if enable_thinking is defined and enable_thinking is not none else true -%}"
    "{{- bos_token -}}"
    "{%- set rest = messages -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set system = text(messages[0].content) -%}{%- set rest = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- endif -%}"
    "{%- if system or tools -%}"
    "{{- '<|system|>\\n' + system -}}"
    "{%- if tools -%}"
    "{%- if system -%}{{- '\\n\\n' -}}{%- endif -%}"
    "{{- '# Tools\\n\\nYou may call the functions below. Their signatures, as JSON Schema, are inside <tools></tools>:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nTo call a function, reply with one JSON object per call inside <tool_call></tool_call>:\\n"
    '<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <arguments-object>}\\n</tool_call>\' -}}'
    "{%- endif -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- endif -%}"
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in rest -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in rest -%}"
    "{%- if m.role == 'user' -%}"
    "{{- '<|user|>\\n' + text(m.content) + '<|end|>\\n' -}}"
    "{%- elif m.role == 'system' -%}"
    "{{- '<|system|>\\n' + text(m.content) + '<|end|>\\n' -}}"
    "{%- elif m.role == 'assistant' -%}"
    "{%- set content = text(m.content) -%}"
    "{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] -%}"
    "{%- set content = content.split('</think>')[-1] -%}"
    "{%- endif -%}"
    "{%- set reasoning = reasoning.strip('\\n') -%}{%- set content = content.lstrip('\\n') -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- if loop.index0 > ns.last_user -%}"
    "{%- if reasoning -%}{{- '<think>\\n' + reasoning + '\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{{- content -}}"
    "{%- if m.tool_calls -%}"
    "{%- for call in m.tool_calls -%}"
    "{%- set fn = call.function if call.function is defined else call -%}"
    "{%- if content or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n{\"name\": ' + (fn.name | tojson) + ', \"arguments\": ' -}}"
    "{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|end|>\\n' -}}"
    "{%- elif m.role == 'tool' -%}"
    "{{- '<|tool|>\\n<tool_response>\\n' + text(m.content) + '\\n</tool_response><|end|>\\n' -}}"
    "{%- else -%}"
    "{{- raise_exception('unknown chat role ' ~ m.role ~ ': use system, user, assistant or tool') -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- if thinking -%}{{- '<think>\\n' -}}{%- else -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


# ---------------------------------------------------------------------------------------------
# Training config
# ---------------------------------------------------------------------------------------------

LANGUAGES = ("ko", "en", "code", "other")


@dataclass
class TokenizerConfig:
    """How to train a k1 tokenizer. Every field is a `k1 tokenizer train` option of the same name."""

    vocab_size: int = 131072
    """Total vocabulary: special block + 256 byte tokens + merges. A.X K1-class models use 2**17."""
    pretokenizer: str = "k1"
    """Pre-tokenizer pattern by name (k1: Korean-aware; gpt4: GPT-4's cl100k pattern, a baseline)."""
    digits: str = "single"
    """How numbers are cut before BPE: single (one digit per token) or triple (up to three)."""
    special_block: int = DEFAULT_SPECIAL_BLOCK
    """Ids reserved for special tokens (named ones plus <|reserved_N|> spares) at the start of the vocab."""
    weights: dict[str, float] = field(
        default_factory=lambda: {"ko": 0.7, "en": 0.15, "code": 0.15, "other": 0.0}
    )
    """Share of training bytes per language (ko, en, code, other); normalized to sum to 1. Languages
    with more text than their share are subsampled; a language with no input gets nothing and the
    others keep their relative shares."""
    source_alpha: float = 0.5
    """Balance between files of one language: each file's share of its language is proportional to
    size**alpha (1: as big as it is; 0: all files equal; 0.5 lifts small registers such as news next
    to a large one such as reviews, the temperature sampling of XLM-R / mT5). Small files are repeated
    up to max_repeat times to reach their share."""
    max_repeat: float = 4.0
    """Most times one file's text may be repeated to reach its share."""
    multiword_share: float = 0.1
    """Share of the merges learned in a second stage where a Korean piece may span several eojeol
    (SuperBPE, Liu et al. 2025): frequent phrases such as " 수 있다." become one token. 0 turns it off."""
    multiword_max_words: int = 4
    """Longest Korean phrase (in eojeol) a multiword token may cover."""
    max_bytes: int = 0
    """Cap on the training text in bytes after sampling (0: as much as the shares allow)."""
    holdout: float = 0.0
    """Share of documents kept out of training, chosen by a hash of their text (stable across runs),
    and written to OUT/heldout/<lang>_<file>.txt, so `k1 tokenizer report OUT --text 'ko:OUT/heldout/ko_*'`
    measures each source on documents the tokenizer never saw. 0: none."""
    min_frequency: int = 2
    """A pair must occur this often to be merged."""
    max_token_length: int = 32
    """Longest token in byte-level characters (a Hangul syllable is 3); stops runs like '=====' of any length."""
    text_key: str = "text"
    """Field or column holding the text in .jsonl / .json / .parquet inputs."""
    seed: int = 0
    """Seed for the per-language subsampling."""
    model_max_length: int = 32768
    """Context length written to tokenizer_config.json for transformers."""

    def validate(self) -> None:
        floor = self.special_block + 256
        if self.vocab_size < floor:
            raise ConfigError(
                f"vocab_size {self.vocab_size} is smaller than the 256 byte tokens + {self.special_block} special tokens; "
                f"choose --vocab-size of at least {floor} (a few thousand or more for useful merges)"
            )
        if self.vocab_size > 1 << 20:
            raise ConfigError(
                f"vocab_size {self.vocab_size} is larger than 1,048,576; choose a smaller --vocab-size"
            )
        special_tokens(self.special_block)
        pretokenizer_pattern(
            self.pretokenizer, self.digits, self.multiword_max_words if self.multiword_share else 1
        )
        unknown = set(self.weights) - set(LANGUAGES)
        if unknown:
            name = sorted(unknown)[0]
            raise ConfigError(f"unknown language {name!r} in weights{did_you_mean(name, list(LANGUAGES))}")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ConfigError("language weights must be >= 0 and not all zero, e.g. ko=0.6,en=0.2,code=0.2")
        if not 0 <= self.multiword_share < 1 or self.multiword_max_words < 2:
            raise ConfigError("multiword_share must be in [0, 1) and multiword_max_words >= 2")
        if not 0 <= self.source_alpha <= 1 or self.max_repeat < 1:
            raise ConfigError("source_alpha must be in [0, 1] and max_repeat >= 1")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"holdout must be in [0, 1), e.g. 0.05; got {self.holdout}")
        if self.min_frequency < 1 or self.max_token_length < 1 or self.max_bytes < 0:
            raise ConfigError("min_frequency and max_token_length must be >= 1 and max_bytes >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> TokenizerConfig:
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in valid:
                raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(key, valid)}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> TokenizerConfig:
        import tomllib

        path = Path(path)
        try:
            raw = (
                tomllib.loads(path.read_text(encoding="utf-8"))
                if path.suffix == ".toml"
                else json.loads(path.read_text())
            )
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: cannot read tokenizer config ({err})") from None
        return cls.from_dict(raw.get("tokenizer", raw), source=str(path))


def parse_weights(text: str) -> dict[str, float]:
    """'ko=0.6,en=0.2,code=0.2' -> dict; languages left out get weight 0."""
    out = {lang: 0.0 for lang in LANGUAGES}
    for item in filter(None, (s.strip() for s in text.split(","))):
        lang, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"weights: {item!r} is not LANG=SHARE; write e.g. ko=0.6,en=0.2,code=0.2")
        lang = lang.strip()
        if lang not in LANGUAGES:
            raise ConfigError(f"weights: unknown language {lang!r}{did_you_mean(lang, list(LANGUAGES))}")
        try:
            out[lang] = float(value)
        except ValueError:
            raise ConfigError(f"weights: {value!r} for {lang} is not a number") from None
    return out
