"""Reading tokenizer training text: files, globs and folders of .txt / .jsonl / .json / .parquet.

Each input file is checked once (binary or not UTF-8: skipped and counted, never a crash), given a
language (ko, en, code, other: from a `LANG:` prefix, the file extension, or a look at its text),
and then streamed document by document, subsampled so each language gets its configured share.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from k1.errors import K1Error

from .spec import LANGUAGES

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".text", ""}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}
CODE_SUFFIXES = {
    ".py", ".pyi", ".js", ".ts", ".tsx", ".jsx", ".rs", ".go", ".c", ".h", ".cc", ".cpp", ".hpp", ".java",
    ".kt", ".swift", ".rb", ".php", ".sh", ".bash", ".sql", ".cs", ".scala", ".lua", ".toml", ".yaml", ".yml",
}  # fmt: skip
# A document longer than this is cut into pieces: the BPE trainer counts words per document and a
# multi-gigabyte "line" would otherwise be held in memory at once.
MAX_DOC_CHARS = 1 << 20
# A plain text file is read in blocks of whole lines of about this size, so the trainer sees text
# as it is encoded later: pieces that span a line end (".\n", "\n\n", a word after a newline).
TEXT_BLOCK_CHARS = 4096
_SNIFF_BYTES = 1 << 16

_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff]")
_LETTER = re.compile(r"[^\W\d_]")
_CODE_SYMBOL = re.compile(r"[{}()\[\]=;:_<>#*/\\|&%+\-]")


@dataclass
class Source:
    """One input file, checked, with its language and the number of text bytes it holds."""

    path: Path
    lang: str
    kind: str  # text | jsonl | parquet
    nbytes: int = 0


@dataclass
class Corpus:
    sources: list[Source]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    def bytes_by_lang(self) -> dict[str, int]:
        out = dict.fromkeys(LANGUAGES, 0)
        for s in self.sources:
            out[s.lang] += s.nbytes
        return out


def guess_language(sample: str, suffix: str = "") -> str:
    """ko if a fair share of the letters are Hangul, code if it looks like source, else en/other."""
    if suffix in CODE_SUFFIXES:
        return "code"
    letters = _LETTER.findall(sample[:_SNIFF_BYTES])
    if not letters:
        return "other"
    hangul = sum(1 for c in letters if _HANGUL.match(c))
    if hangul / len(letters) >= 0.3:
        return "ko"
    # Prose has a symbol every ~40 characters; source code has one every ~5-10, plus indentation.
    visible = sum(1 for c in sample if not c.isspace()) or 1
    symbols = len(_CODE_SYMBOL.findall(sample)) / visible
    lines = [ln for ln in sample.splitlines() if ln.strip()] or [""]
    indented = sum(1 for ln in lines if ln.startswith(("  ", "\t"))) / len(lines)
    if symbols > 0.08 or (symbols > 0.05 and indented > 0.25):
        return "code"
    ascii_letters = sum(1 for c in letters if c.isascii())
    return "en" if ascii_letters / len(letters) >= 0.8 else "other"


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "text"


def resolve(inputs: list[str | Path]) -> list[tuple[Path, str | None]]:
    """Expand globs and folders; split a `ko:` / `en:` / `code:` / `other:` language prefix off each input."""
    out: list[tuple[Path, str | None]] = []
    for item in inputs:
        item = str(item)
        lang = None
        head, sep, tail = item.partition(":")
        if sep and head in LANGUAGES:
            lang, item = head, tail
        matches = (
            sorted(glob.glob(os.path.expanduser(item), recursive=True)) if glob.has_magic(item) else [item]
        )
        if not matches:
            raise K1Error(f"input {item!r} matches no file; check the path or glob")
        for m in matches:
            p = Path(m)
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
                out.extend((f, lang) for f in files)
            elif p.is_file():
                out.append((p, lang))
            else:
                raise K1Error(f"input {m!r} does not exist; check the path")
    return out


def _check_text_file(path: Path) -> tuple[int, str]:
    """(UTF-8 byte count, leading sample) of a text file; raises ValueError(why) if binary or not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    total, sample, offset = 0, [], 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            if offset == 0 and b"\x00" in chunk[:8192]:
                raise ValueError("binary file (NUL bytes)")
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise ValueError(f"not UTF-8 (byte offset {offset + err.start})") from None
            if offset < _SNIFF_BYTES:
                sample.append(text)
            total += len(chunk)
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ValueError("not UTF-8 (truncated character at the end)") from None
    return total, "".join(sample)[:_SNIFF_BYTES]


def _records(path: Path, key: str) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        first = f.read(1)
        f.seek(0)
        if path.suffix.lower() == ".json" and first == "[":
            rows = json.load(f)
            for row in rows:
                if isinstance(row, dict) and isinstance(row.get(key), str):
                    yield row[key]
            return
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"line {lineno} is not JSON") from None
            if isinstance(row, dict) and isinstance(row.get(key), str):
                yield row[key]


def _parquet_rows(path: Path, key: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise K1Error(f"{path}: reading parquet needs pyarrow; run `pip install pyarrow`") from None
    pf = pq.ParquetFile(path)
    if key not in pf.schema_arrow.names:
        raise ValueError(f"no column {key!r} (columns: {', '.join(pf.schema_arrow.names)}); pass --text-key")
    for batch in pf.iter_batches(columns=[key], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield value


def documents(source: Source, key: str = "text") -> Iterator[str]:
    """The documents of one file: lines of a text file, `key` fields of JSON / parquet records."""
    if source.kind == "text":
        with open(source.path, encoding="utf-8", newline="") as f:
            block, size = [], 0
            for line in f:
                block.append(line)
                size += len(line)
                if size >= TEXT_BLOCK_CHARS:
                    yield from _cut("".join(block))
                    block, size = [], 0
            if block:
                yield from _cut("".join(block))
    elif source.kind == "jsonl":
        for text in _records(source.path, key):
            yield from _cut(text)
    else:
        for text in _parquet_rows(source.path, key):
            yield from _cut(text)


def _cut(text: str) -> Iterator[str]:
    for i in range(0, len(text), MAX_DOC_CHARS):
        yield text[i : i + MAX_DOC_CHARS]


def scan(inputs: list[str | Path], text_key: str = "text") -> Corpus:
    """Check every input file; unusable files are skipped and listed with the reason."""
    corpus = Corpus(sources=[])
    for path, lang in resolve(inputs):
        kind = _kind(path)
        try:
            if kind == "text":
                nbytes, sample = _check_text_file(path)
            else:
                nbytes, parts = 0, []
                for text in documents(Source(path, "other", kind), text_key):
                    nbytes += len(text.encode("utf-8", "surrogatepass"))
                    if sum(map(len, parts)) < _SNIFF_BYTES:
                        parts.append(text)
                sample = "\n".join(parts)
        except (ValueError, UnicodeDecodeError) as err:
            why = (
                str(err)
                if isinstance(err, ValueError) and not isinstance(err, UnicodeDecodeError)
                else "not UTF-8"
            )
            corpus.skipped.append((str(path), why))
            continue
        except OSError as err:
            corpus.skipped.append((str(path), f"unreadable ({err.strerror or err})"))
            continue
        if nbytes == 0 or not sample.strip():
            corpus.skipped.append((str(path), "empty"))
            continue
        corpus.sources.append(Source(path, lang or guess_language(sample, path.suffix.lower()), kind, nbytes))
    return corpus


def sampling_rates(
    available: dict[str, int], weights: dict[str, float], max_bytes: int = 0
) -> dict[str, float]:
    """Keep-fraction per language so the kept bytes follow `weights`.

    The total is as large as the scarcest weighted language allows (no language is repeated to
    reach its share), then capped at max_bytes. A language with weight > 0 but no text is dropped
    from the shares, so the others keep their relative sizes.
    """
    active = {lang: w for lang, w in weights.items() if w > 0 and available.get(lang, 0) > 0}
    if not active:
        return dict.fromkeys(available, 0.0)
    norm = sum(active.values())
    shares = {lang: w / norm for lang, w in active.items()}
    total = min(available[lang] / share for lang, share in shares.items())
    if max_bytes:
        total = min(total, max_bytes)
    return {
        lang: min(1.0, shares[lang] * total / available[lang]) if lang in shares else 0.0
        for lang in available
    }


def source_rates(
    corpus: Corpus, lang_rates: dict[str, float], alpha: float = 1.0, max_repeat: float = 4.0
) -> dict[Path, float]:
    """Per-file rate (a fraction, or a repeat count above 1) that splits each language's budget
    between its files in proportion to size**alpha."""
    out: dict[Path, float] = {}
    for lang, rate in lang_rates.items():
        files = [s for s in corpus.sources if s.lang == lang]
        if not files or rate <= 0:
            out.update((s.path, 0.0) for s in files)
            continue
        budget = rate * sum(s.nbytes for s in files)
        mass = sum(s.nbytes**alpha for s in files)
        for s in files:
            out[s.path] = min(max_repeat, budget * s.nbytes**alpha / mass / s.nbytes)
    return out


def held_out(text: str, share: float) -> bool:
    """Whether a document is held out: a hash of its text, so the choice is the same on every run
    and machine, and copies of one document are all on the same side."""
    if share <= 0:
        return False
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 < share * 1_000_000


def sample_documents(
    corpus: Corpus,
    rates: dict[Path, float],
    text_key: str,
    seed: int,
    stats: dict,
    holdout: float = 0.0,
    heldout_dir: Path | None = None,
) -> Iterator[str]:
    """Stream documents, each kept floor(rate) times plus once more with probability frac(rate);
    counts kept bytes per language in stats. Documents held out (`held_out(text, holdout)`) are
    never yielded; with heldout_dir they are written there, one file per input file."""
    rng = random.Random(seed)
    kept = stats.setdefault("bytes_by_lang", dict.fromkeys(LANGUAGES, 0))
    stats.setdefault("documents", 0)
    for source in corpus.sources:
        rate = rates.get(source.path, 0.0)
        if rate <= 0:
            continue
        whole, frac = int(rate), rate - int(rate)
        sink = None
        try:
            for text in documents(source, text_key):
                if held_out(text, holdout):
                    if heldout_dir is not None:
                        sink = sink or _heldout_file(heldout_dir, source, stats)
                        sink.write(text if text.endswith("\n") else text + "\n")
                        stats["heldout_documents"] = stats.get("heldout_documents", 0) + 1
                    continue
                copies = whole + (1 if frac and rng.random() < frac else 0)
                if not copies:
                    continue
                kept[source.lang] += copies * len(text.encode("utf-8", "surrogatepass"))
                stats["documents"] += copies
                for _ in range(copies):
                    yield text
        except (ValueError, UnicodeDecodeError) as err:
            # Checked at scan time, so this means the file changed under us: skip the rest, say so.
            stats.setdefault("skipped_late", []).append((str(source.path), str(err)))
        finally:
            if sink is not None:
                sink.close()


def _heldout_file(folder: Path, source: Source, stats: dict):
    """A new file for one input's held-out documents: <lang>_<name>.txt, numbered if names repeat."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]+", "_", source.path.stem)[:80] or "file"
    path, n = folder / f"{source.lang}_{stem}.txt", 1
    while path.exists():
        n += 1
        path = folder / f"{source.lang}_{stem}_{n}.txt"
    stats.setdefault("heldout_files", []).append({"file": path.name, "source": str(source.path)})
    return open(path, "w", encoding="utf-8", newline="")
