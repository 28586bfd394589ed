"""How many tokens a tokenizer spends on Korean, English and code, against foreign reference tokenizers.

    k1 tokenizer report runs/tok --text ko:heldout_ko.txt --text en:heldout_en.txt --text code:lib.py

Prints a table (tokens per 1,000 characters, tokens per Korean word (eojeol), bytes per token, per
language, for k1 and each reference that can be loaded here, and "% fewer tokens than" each) and
writes fertility.png / fertility.md / fertility.json.

Reference tokenizers are loaded offline only, from a registry:
  tekken, mistral-v3   Mistral's Tekken and SentencePiece files, shipped inside the mistral-common package
  o200k, cl100k        GPT-4o / GPT-4 BPE files (*.tiktoken) in the reference dir, loaded with tiktoken
  deepseek-v3          DeepSeek-V3's tokenizer.json in the reference dir
  PATH                 any Hugging Face tokenizer dir or tokenizer.json
The reference dir is $K1_REFERENCE_TOKENIZERS or ~/.cache/k1/reference_tokenizers (fill it with
bench/fetch_reference_tokenizers.py). A reference that cannot be had is skipped with its reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from k1.errors import K1Error, did_you_mean

from . import corpus as corpus_mod
from .core import Tokenizer, load

REFERENCE_DIR_ENV = "K1_REFERENCE_TOKENIZERS"
# Per language, at most this much text is read for a report: fertility settles long before that.
MAX_CHARS_PER_LANG = 20_000_000
_CHUNK_CHARS = 1 << 16
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
REPORT_LANGS = ("ko", "en", "code")


class ReferenceUnavailable(Exception):
    """A reference tokenizer that cannot be loaded here (package or file missing)."""


@dataclass
class Encoder:
    """A tokenizer reduced to what the report needs."""

    name: str
    label: str
    vocab_size: int
    encode: Callable[[str], list[int]]
    encode_batch: Callable[[list[str]], list[list[int]]] | None = None


def reference_dir() -> Path:
    return Path(os.environ.get(REFERENCE_DIR_ENV) or Path.home() / ".cache" / "k1" / "reference_tokenizers")


def _tiktoken(encoding: str) -> Callable[[], Encoder]:
    def loader() -> Encoder:
        try:
            import tiktoken
        except ImportError:
            raise ReferenceUnavailable("tiktoken is not installed (pip install tiktoken)") from None
        file = reference_dir() / f"{encoding}.tiktoken"
        if not file.is_file():
            raise ReferenceUnavailable(f"{file} not found (run bench/fetch_reference_tokenizers.py)")
        # tiktoken finds its files in TIKTOKEN_CACHE_DIR under sha1(url) and checks their sha256,
        # so point a private cache at our copy: tiktoken's own pattern and hash check, no network.
        url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
        with tempfile.TemporaryDirectory() as cache:
            os.symlink(file.resolve(), Path(cache) / hashlib.sha1(url.encode()).hexdigest())
            old = os.environ.get("TIKTOKEN_CACHE_DIR")
            os.environ["TIKTOKEN_CACHE_DIR"] = cache
            try:
                enc = tiktoken.get_encoding(encoding)
            except Exception as err:  # a corrupt or mismatched file
                raise ReferenceUnavailable(f"{file}: {str(err)[:160]}") from None
            finally:
                if old is None:
                    os.environ.pop("TIKTOKEN_CACHE_DIR", None)
                else:
                    os.environ["TIKTOKEN_CACHE_DIR"] = old
        return Encoder(
            encoding,
            "",
            enc.n_vocab,
            enc.encode_ordinary,
            lambda texts: enc.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1),
        )

    return loader


def _mistral_file(name: str) -> Path:
    try:
        import mistral_common
    except ImportError:
        raise ReferenceUnavailable(
            "mistral-common is not installed (pip install 'k1[test]' or mistral-common)"
        ) from None
    file = Path(mistral_common.__file__).parent / "data" / name
    if not file.is_file():
        raise ReferenceUnavailable(f"{name} is not in this mistral-common version")
    return file


def _tekken() -> Encoder:
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    tok = Tekkenizer.from_file(_mistral_file("tekken_240911.json"))
    return Encoder("tekken", "", tok.n_words, lambda s: tok.encode(s, bos=False, eos=False))


def _sentencepiece() -> Encoder:
    file = _mistral_file("mistral_instruct_tokenizer_240323.model.v3")
    try:
        import sentencepiece
    except ImportError:
        raise ReferenceUnavailable("sentencepiece is not installed (pip install sentencepiece)") from None
    sp = sentencepiece.SentencePieceProcessor(model_file=str(file))
    return Encoder("mistral-v3", "", sp.vocab_size(), sp.encode, sp.encode)


def _hf_json(filename: str) -> Callable[[], Encoder]:
    def loader() -> Encoder:
        file = reference_dir() / filename
        if not file.is_file():
            raise ReferenceUnavailable(f"{file} not found (run bench/fetch_reference_tokenizers.py)")
        return _from_tokenizer_json(file, filename)

    return loader


def _from_tokenizer_json(file: Path, name: str) -> Encoder:
    from tokenizers import Tokenizer as Backend

    tok = Backend.from_file(str(file))
    return Encoder(
        name,
        "",
        tok.get_vocab_size(),
        lambda s: tok.encode(s, add_special_tokens=False).ids,
        lambda texts: [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)],
    )


# name -> (label, loader). Labels name the models these tokenizers belong to.
REFERENCES: dict[str, tuple[str, Callable[[], Encoder]]] = {
    "o200k": ("GPT-4o (o200k)", _tiktoken("o200k_base")),
    "cl100k": ("GPT-4 (cl100k)", _tiktoken("cl100k_base")),
    "tekken": ("Mistral Nemo (Tekken)", _tekken),
    "mistral-v3": ("Mistral 7B v0.3 (SentencePiece)", _sentencepiece),
    "deepseek-v3": ("DeepSeek-V3", _hf_json("deepseek_v3_tokenizer.json")),
}
DEFAULT_REFERENCES = ("o200k", "tekken", "cl100k", "deepseek-v3", "mistral-v3")


def load_reference(name: str) -> Encoder:
    """A reference by registry name, or a path to a tokenizer dir / tokenizer.json. Raises ReferenceUnavailable."""
    if name in REFERENCES:
        label, loader = REFERENCES[name]
        enc = loader()
        enc.name, enc.label = name, label
        return enc
    path = Path(name)
    if path.exists():
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ReferenceUnavailable(f"{path}: no tokenizer.json")
        enc = _from_tokenizer_json(file, path.name if path.is_dir() else path.parent.name)
        enc.label = enc.name
        return enc
    raise K1Error(
        f"unknown reference tokenizer {name!r}{did_you_mean(name, list(REFERENCES))} (or give a tokenizer dir)"
    )


def k1_encoder(tok: Tokenizer, label: str = "k1") -> Encoder:
    return Encoder("k1", label, tok.vocab_size, lambda s: tok.encode(s), tok.encode_batch)


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class TextSet:
    """The report's text for one language, cut into chunks at line ends."""

    lang: str
    chunks: list[str]
    files: list[str]
    chars: int = 0
    nbytes: int = 0
    words: int = 0
    eojeol: int = 0

    @classmethod
    def build(cls, lang: str, texts: list[str], files: list[str]) -> TextSet:
        chunks, buf, size = [], [], 0
        for text in texts:
            for line in text.splitlines(keepends=True):
                buf.append(line)
                size += len(line)
                if size >= _CHUNK_CHARS:
                    chunks.append("".join(buf))
                    buf, size = [], 0
        if buf:
            chunks.append("".join(buf))
        out = cls(lang, chunks, files)
        for c in chunks:
            out.chars += len(c)
            out.nbytes += len(c.encode("utf-8", "surrogatepass"))
            words = c.split()
            out.words += len(words)
            out.eojeol += sum(1 for w in words if _HANGUL.search(w))
        return out


@dataclass
class Row:
    tokenizer: str
    label: str
    vocab_size: int
    lang: str
    tokens: int
    chars: int
    nbytes: int
    eojeol: int

    @property
    def per_1k_chars(self) -> float:
        return 1000 * self.tokens / max(self.chars, 1)

    @property
    def per_eojeol(self) -> float | None:
        return self.tokens / self.eojeol if self.lang == "ko" and self.eojeol else None

    @property
    def bytes_per_token(self) -> float:
        return self.nbytes / max(self.tokens, 1)


@dataclass
class FileRow:
    """Tokens each tokenizer spends on one input file: shows which source (register) a tokenizer
    serves worse than the language total does."""

    file: str
    lang: str
    chars: int
    tokens: dict[str, int]  # tokenizer name -> tokens

    def per_1k_chars(self, tokenizer: str) -> float:
        return 1000 * self.tokens[tokenizer] / max(self.chars, 1)

    def fewer(self, reference: str, subject: str = "k1") -> float | None:
        if not self.tokens.get(reference):
            return None
        return 100.0 * (1.0 - self.tokens[subject] / self.tokens[reference])


@dataclass
class FertilityReport:
    rows: list[Row]
    texts: dict[str, dict]
    skipped: dict[str, str] = field(default_factory=dict)  # reference -> why it is missing
    files: list[FileRow] = field(default_factory=list)

    def tokenizers(self) -> list[tuple[str, str, int]]:
        seen: dict[str, tuple[str, str, int]] = {}
        for r in self.rows:
            seen.setdefault(r.tokenizer, (r.tokenizer, r.label, r.vocab_size))
        return list(seen.values())

    def langs(self) -> list[str]:
        return [lang for lang in REPORT_LANGS if lang in self.texts] + [
            lang for lang in self.texts if lang not in REPORT_LANGS
        ]

    def row(self, tokenizer: str, lang: str) -> Row | None:
        return next((r for r in self.rows if r.tokenizer == tokenizer and r.lang == lang), None)

    def fewer(self, reference: str, lang: str, subject: str = "k1") -> float | None:
        """Percent fewer tokens `subject` spends than `reference` on the same text (negative: more)."""
        a, b = self.row(subject, lang), self.row(reference, lang)
        if not a or not b or not b.tokens:
            return None
        return 100.0 * (1.0 - a.tokens / b.tokens)

    def to_dict(self) -> dict:
        return {
            "texts": self.texts,
            "rows": [
                {
                    **r.__dict__,
                    "per_1k_chars": r.per_1k_chars,
                    "per_eojeol": r.per_eojeol,
                    "bytes_per_token": r.bytes_per_token,
                }
                for r in self.rows
            ],
            "fewer_than": {
                ref: {lang: self.fewer(ref, lang) for lang in self.langs()}
                for ref, _, _ in self.tokenizers()
                if ref != "k1"
            },
            "skipped": self.skipped,
            "files": [
                {
                    **f.__dict__,
                    "per_1k_chars": {t: f.per_1k_chars(t) for t in f.tokens},
                    "fewer_than": {t: f.fewer(t) for t in f.tokens if t != "k1"},
                }
                for f in self.files
            ],
        }

    def files_markdown(self) -> str:
        """One row per input file: k1's tokens per 1,000 characters and % fewer than each reference."""
        refs = [t for t in self.tokenizers() if t[0] != "k1"]
        head = ["file", "lang", "chars", "k1 tok/1k chars"] + [
            f"vs {label or name}" for name, label, _ in refs
        ]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for f in self.files:
            cells = [Path(f.file).name, f.lang, f"{f.chars:,}", f"{f.per_1k_chars('k1'):.1f}"]
            cells += [_pct(f.fewer(name)) for name, _, _ in refs]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        langs = self.langs()
        head = ["tokenizer", "vocab"]
        for lang in langs:
            head += (
                [f"{lang} tok/1k chars"] + (["ko tok/eojeol"] if lang == "ko" else []) + [f"{lang} bytes/tok"]
            )
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, label, vocab in self.tokenizers():
            cells = [label or name, f"{vocab:,}"]
            for lang in langs:
                r = self.row(name, lang)
                cells.append(f"{r.per_1k_chars:.1f}")
                if lang == "ko":
                    cells.append(f"{r.per_eojeol:.2f}" if r.per_eojeol is not None else "-")
                cells.append(f"{r.bytes_per_token:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        refs = [t for t in self.tokenizers() if t[0] != "k1"]
        if refs:
            lines += [
                "",
                "| k1 spends ... tokens than | " + " | ".join(langs) + " |",
                "|---|" + "---|" * len(langs),
            ]
            for name, label, _ in refs:
                cells = [label or name] + [_pct(self.fewer(name, lang)) for lang in langs]
                lines.append("| " + " | ".join(cells) + " |")
        texts = ", ".join(
            f"{lang}: {t['chars']:,} chars, {t['eojeol'] or t['words']:,} {'eojeol' if lang == 'ko' else 'words'}"
            for lang, t in self.texts.items()
        )
        lines += ["", f"Text: {texts}."]
        if self.skipped:
            lines.append(
                "Not available here: " + "; ".join(f"{k} ({v})" for k, v in self.skipped.items()) + "."
            )
        if len(self.files) > 1:
            lines += ["", "Per file:", "", self.files_markdown()]
        return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}% fewer" if value >= 0 else f"{-value:.1f}% more"


def measure(encoders: list[Encoder], sets: list[TextSet]) -> list[Row]:
    rows = []
    for enc in encoders:
        for ts in sets:
            if enc.encode_batch is not None:
                tokens = sum(len(ids) for ids in enc.encode_batch(ts.chunks))
            else:
                tokens = sum(len(enc.encode(c)) for c in ts.chunks)
            rows.append(
                Row(enc.name, enc.label, enc.vocab_size, ts.lang, tokens, ts.chars, ts.nbytes, ts.eojeol)
            )
    return rows


def read_texts(
    paths: list[str | Path], text_key: str = "text", max_chars: int = MAX_CHARS_PER_LANG
) -> tuple[list[TextSet], list]:
    """One TextSet per input file (LANG: prefix or guessed language), up to max_chars per language."""
    scanned = corpus_mod.scan(paths, text_key)
    used: dict[str, int] = {}
    sets = []
    for source in scanned.sources:
        if used.get(source.lang, 0) >= max_chars:
            continue
        texts = []
        for doc in corpus_mod.documents(source, text_key):
            texts.append(doc if doc.endswith("\n") else doc + "\n")
            used[source.lang] = used.get(source.lang, 0) + len(doc)
            if used[source.lang] >= max_chars:
                break
        sets.append(TextSet.build(source.lang, texts, [str(source.path)]))
    order = {lang: i for i, lang in enumerate(REPORT_LANGS + ("other",))}
    return sorted(sets, key=lambda s: order.get(s.lang, 99)), scanned.skipped


def _by_language(rows: list[Row]) -> list[Row]:
    """Per-file rows summed per (tokenizer, language): ratios of sums, not means of ratios."""
    out: dict[tuple[str, str], Row] = {}
    for r in rows:
        key = (r.tokenizer, r.lang)
        if key not in out:
            out[key] = Row(r.tokenizer, r.label, r.vocab_size, r.lang, 0, 0, 0, 0)
        t = out[key]
        t.tokens, t.chars, t.nbytes, t.eojeol = (
            t.tokens + r.tokens,
            t.chars + r.chars,
            t.nbytes + r.nbytes,
            t.eojeol + r.eojeol,
        )
    return list(out.values())


def report(
    tokenizer: str | Path | Tokenizer,
    texts: list[str | Path],
    *,
    references: list[str] | tuple[str, ...] = DEFAULT_REFERENCES,
    out_dir: str | Path | None = None,
    text_key: str = "text",
    max_chars: int = MAX_CHARS_PER_LANG,
    log=print,
) -> FertilityReport:
    """Measure `tokenizer` and the references on `texts`; write fertility.{md,json,png} to out_dir if given."""
    tok = tokenizer if isinstance(tokenizer, Tokenizer) else load(tokenizer)
    sets, skipped_files = read_texts(texts, text_key, max_chars)
    for path, why in skipped_files:
        log(f"skipped {path}: {why}")
    if not sets:
        raise K1Error("no usable text to measure; give UTF-8 files with --text (ko:PATH, en:PATH, code:PATH)")
    encoders = [k1_encoder(tok)]
    skipped: dict[str, str] = {}
    for name in references:
        try:
            encoders.append(load_reference(name))
        except ReferenceUnavailable as err:
            skipped[name] = str(err)
    per_file = measure(encoders, sets)  # encoder-major: encoder i's row for set j is i * len(sets) + j
    texts: dict[str, dict] = {}
    for ts in sets:
        t = texts.setdefault(ts.lang, {"chars": 0, "bytes": 0, "words": 0, "eojeol": 0, "files": []})
        t["chars"] += ts.chars
        t["bytes"] += ts.nbytes
        t["words"] += ts.words
        t["eojeol"] += ts.eojeol
        t["files"] += ts.files
    files = [
        FileRow(
            ts.files[0],
            ts.lang,
            ts.chars,
            {enc.name: per_file[i * len(sets) + j].tokens for i, enc in enumerate(encoders)},
        )
        for j, ts in enumerate(sets)
    ]
    rep = FertilityReport(rows=_by_language(per_file), texts=texts, skipped=skipped, files=files)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from .core import _atomic_write

        _atomic_write(out / "fertility.md", "# Tokenizer fertility\n\n" + rep.to_markdown())
        _atomic_write(out / "fertility.json", json.dumps(rep.to_dict(), ensure_ascii=False, indent=2) + "\n")
        chart(rep, out / "fertility.png")
    return rep


def chart(rep: FertilityReport, path: str | Path) -> Path:
    """Grouped bars: tokens per 1,000 characters per language, one bar per tokenizer (k1 highlighted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = rep.langs()
    toks = rep.tokenizers()
    width = 0.8 / max(len(toks), 1)
    fig, ax = plt.subplots(figsize=(2.2 + 2.0 * len(langs), 4.2), dpi=120)
    # k1 in red; references in colors that cannot be mistaken for it.
    palette = ["#e59400", "#2e8b57", "#2f6db5", "#8e44ad", "#7f8c8d", "#17a2b8", "#6b4226"]
    for i, (name, label, vocab) in enumerate(toks):
        values = [rep.row(name, lang).per_1k_chars for lang in langs]
        xs = [j + (i - (len(toks) - 1) / 2) * width for j in range(len(langs))]
        color = "#c0392b" if name == "k1" else palette[(i - 1) % len(palette)]
        bars = ax.bar(
            xs,
            values,
            width * 0.95,
            label=f"{label or name} ({vocab:,})",
            color=color,
            alpha=1.0 if name == "k1" else 0.75,
        )
        for b, v in zip(bars, values, strict=True):
            ax.text(
                b.get_x() + b.get_width() / 2,
                b.get_height(),
                f"{v:.0f}",
                ha="center",
                va="bottom",
                fontsize=6,
            )
    ax.set_xticks(range(len(langs)))
    ax.set_xticklabels({"ko": "Korean", "en": "English", "code": "code"}.get(lang, lang) for lang in langs)
    ax.set_ylabel("tokens per 1,000 characters (lower is better)")
    title = "Tokenizer fertility"
    best = next((t for t in toks if t[0] == "o200k"), None) or next((t for t in toks if t[0] != "k1"), None)
    if best and "ko" in langs and rep.fewer(best[0], "ko") is not None:
        title += (
            f": k1 spends {rep.fewer(best[0], 'ko'):.0f}% fewer tokens on Korean than {best[1] or best[0]}"
        )
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path
