"""Korean-first byte-level BPE tokenizer: train it, load it, chat with its template, measure it.

    k1 tokenizer train --input 'corpus/*.txt' --vocab-size 131072 --out runs/tok
    k1 tokenizer report runs/tok --text ko:heldout_ko.txt --text en:heldout_en.txt

    from k1 import tokenizer
    tok = tokenizer.load("runs/tok")          # also a model dir with tokenizer files, or a tokenizer.json
    ids = tok.encode("한국어 토큰화")
    text = tok.apply_chat_template(messages, enable_thinking=False, add_generation_prompt=True)

The output directory is a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json with the
chat template): `AutoTokenizer.from_pretrained(dir)` gives the same ids. See docs/tokenizer.md.
"""

from __future__ import annotations

from .core import StreamDecoder, Tokenizer, load, render_chat
from .spec import CHAT_TEMPLATE, PRETOKENIZERS, TokenizerConfig, parse_weights, special_tokens
from .training import build_backend, train, train_default

__all__ = [
    "CHAT_TEMPLATE",
    "PRETOKENIZERS",
    "StreamDecoder",
    "Tokenizer",
    "TokenizerConfig",
    "build_backend",
    "load",
    "parse_weights",
    "render_chat",
    "report",
    "special_tokens",
    "train",
    "train_default",
]


def report(*args, **kwargs):
    """Fertility report against reference tokenizers; see k1.tokenizer.fertility.report."""
    from .fertility import report as _report

    return _report(*args, **kwargs)
