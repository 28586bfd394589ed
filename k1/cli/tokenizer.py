"""`k1 tokenizer ...`: train a Korean-first tokenizer, measure it against foreign ones, try it on text."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command()
def train(
    input: list[str] = typer.Option(
        ...,
        "--input",
        "-i",
        help="Text files, folders or globs (.txt .jsonl .json .parquet); prefix ko: en: code: other: to set the language.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output directory (a Hugging Face tokenizer directory)."
    ),
    vocab_size: int = typer.Option(
        None, "--vocab-size", "-v", help="Total vocabulary, special tokens included [131072]."
    ),
    weights: str = typer.Option(
        None, help="Share of training bytes per language [ko=0.7,en=0.15,code=0.15]."
    ),
    digits: str = typer.Option(
        None,
        help="Numbers before BPE: single (one digit per token), triple or triple-r2l (groups of 3) [single].",
    ),
    pretokenizer: str = typer.Option(None, help="Pre-tokenizer: k1 (Korean-aware) or gpt4 (baseline) [k1]."),
    multiword_share: float = typer.Option(
        None,
        help="Share of merges that may join Korean eojeol into phrases (SuperBPE stage 2; 0: off) [0.1].",
    ),
    max_bytes: int = typer.Option(None, help="Cap on training text in bytes after sampling (0: no cap) [0]."),
    text_key: str = typer.Option(
        None, help="Field/column with the text in .jsonl/.json/.parquet inputs [text]."
    ),
    min_frequency: int = typer.Option(None, help="Minimum pair count for a merge [2]."),
    holdout: float = typer.Option(
        None,
        help="Share of documents kept out of training (by a hash of their text) and written to OUT/heldout/ "
        "for `k1 tokenizer report` [0].",
    ),
    seed: int = typer.Option(None, help="Seed for the per-language subsampling [0]."),
    config: Path | None = typer.Option(
        None,
        help="TOML/JSON file with tokenizer settings (a [tokenizer] table); options given here override it.",
    ),
    threads: int = typer.Option(0, help="CPU threads for training (1 keeps it on one core; 0: all)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists."),
) -> None:
    """Train a byte-level BPE tokenizer on a language-weighted corpus."""
    import json

    from k1.tokenizer import TokenizerConfig, parse_weights
    from k1.tokenizer import train as train_fn

    cfg = TokenizerConfig.from_file(config) if config else TokenizerConfig()
    given = {
        "vocab_size": vocab_size,
        "weights": parse_weights(weights) if weights is not None else None,
        "digits": digits,
        "pretokenizer": pretokenizer,
        "multiword_share": multiword_share,
        "max_bytes": max_bytes,
        "text_key": text_key,
        "min_frequency": min_frequency,
        "holdout": holdout,
        "seed": seed,
    }
    for key, value in given.items():
        if value is not None:
            setattr(cfg, key, value)
    path = train_fn(input, None, out, config=cfg, threads=threads or None, overwrite=overwrite)
    stats = json.loads((path / "k1_tokenizer.json").read_text())["stats"]
    langs = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in stats["train_bytes_by_lang"].items() if v)
    typer.echo(
        f"wrote {path}: {stats['vocab_size']:,} tokens ({stats['multiword_tokens']:,} Korean phrases) from "
        f"{stats['train_bytes'] / 1e6:.2f} MB ({langs}) in {stats['seconds']:.1f} s; {len(stats['skipped'])} file(s) skipped"
    )


@app.command()
def report(
    directory: Path = typer.Argument(
        ..., help="Tokenizer directory (or a model directory with tokenizer files)."
    ),
    text: list[str] = typer.Option(
        ..., "--text", "-t", help="Text to measure on; prefix ko: en: code: to set the language."
    ),
    reference: list[str] = typer.Option(
        None,
        "--reference",
        "-r",
        help="Reference tokenizers (o200k, cl100k, tekken, mistral-v3, deepseek-v3, or a tokenizer dir). Default: all.",
    ),
    out: Path | None = typer.Option(
        None, help="Where to write fertility.png/.md/.json (default: DIRECTORY)."
    ),
    text_key: str = typer.Option("text", help="Field/column with the text in .jsonl/.json/.parquet inputs."),
) -> None:
    """Tokens per 1,000 characters, per eojeol and bytes per token, against foreign tokenizers."""
    from rich.console import Console
    from rich.table import Table

    from k1.tokenizer.fertility import DEFAULT_REFERENCES
    from k1.tokenizer.fertility import report as report_fn

    out_dir = out or directory
    rep = report_fn(
        directory,
        text,
        references=tuple(reference or DEFAULT_REFERENCES),
        out_dir=out_dir,
        text_key=text_key,
        log=typer.echo,
    )
    import sys

    # Piped output (logs, CI) gets room for the whole table instead of rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 160)
    langs = rep.langs()
    table = Table(title="Tokenizer fertility (lower tokens is better)")
    table.add_column("tokenizer")
    table.add_column("vocab", justify="right")
    for lang in langs:
        table.add_column(f"{lang} tok/1k ch", justify="right")
        if lang == "ko":
            table.add_column("ko tok/eojeol", justify="right")
        table.add_column(f"{lang} B/tok", justify="right")
    for name, label, vocab in rep.tokenizers():
        cells = [f"[bold]{label or name}[/]" if name == "k1" else (label or name), f"{vocab:,}"]
        for lang in langs:
            r = rep.row(name, lang)
            cells.append(f"{r.per_1k_chars:.1f}")
            if lang == "ko":
                cells.append(f"{r.per_eojeol:.2f}" if r.per_eojeol is not None else "-")
            cells.append(f"{r.bytes_per_token:.2f}")
        table.add_row(*cells)
    console.print(table)
    refs = [t for t in rep.tokenizers() if t[0] != "k1"]
    if refs:
        cmp = Table(title="k1 spends ... tokens than")
        cmp.add_column("reference")
        for lang in langs:
            cmp.add_column(lang, justify="right")
        for name, label, _ in refs:
            cells = []
            for lang in langs:
                v = rep.fewer(name, lang)
                cells.append(
                    "-"
                    if v is None
                    else (f"[green]{v:.1f}% fewer[/]" if v >= 0 else f"[red]{-v:.1f}% more[/]")
                )
            cmp.add_row(label or name, *cells)
        console.print(cmp)
    if refs and len(rep.files) > 1:
        # Per file: a register the training text lacked shows up here, not in the language total.
        per_file = Table(title="per file: k1 tokens per 1,000 characters, and ... tokens than")
        for col in ("file", "lang", "chars", "k1 tok/1k ch"):
            per_file.add_column(col, justify="left" if col in ("file", "lang") else "right")
        for _, label, _ in refs:
            per_file.add_column(label, justify="right")
        for f in rep.files:
            cells = [Path(f.file).name, f.lang, f"{f.chars:,}", f"{f.per_1k_chars('k1'):.1f}"]
            for name, _, _ in refs:
                v = f.fewer(name)
                cells.append("-" if v is None else (f"{v:.1f}% fewer" if v >= 0 else f"{-v:.1f}% more"))
            per_file.add_row(*cells)
        console.print(per_file)
    for name, why in rep.skipped.items():
        typer.echo(f"reference {name} not available: {why}")
    typer.echo(f"wrote {out_dir / 'fertility.png'}, fertility.md, fertility.json")


@app.command()
def encode(
    directory: Path = typer.Argument(..., help="Tokenizer directory."),
    text: str = typer.Argument(..., help="Text to tokenize."),
) -> None:
    """Show how a text is cut into tokens (ids and pieces)."""
    from k1.tokenizer import load

    tok = load(directory)
    ids = tok.encode(text)
    # A piece may be part of a character (Hangul syllables are 3 bytes); it then shows as U+FFFD.
    pieces = [tok.decode([i]) for i in ids]
    typer.echo(f"{len(ids)} tokens for {len(text)} characters")
    typer.echo(" ".join(str(i) for i in ids))
    typer.echo(" | ".join(repr(p)[1:-1] for p in pieces))
