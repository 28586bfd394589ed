"""`k1 data`: curate a corpus into token shards, or scrub PII from text.

k1 data prepare recipes/data_demo.toml [--set tasks=8 --set dedup.threshold=0.7]
k1 data scrub notes.txt other.txt > clean.txt      # stdin -> stdout when no file is given
"""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import typer

from k1.errors import ConfigError, K1Error

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

MAX_SCRUB_BYTES = 256 << 20  # one input to `k1 data scrub` is read whole; refuse absurd sizes


def _apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set dedup.threshold=0.7")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {p} is not a table")
        node[parts[-1]] = value
    return data


@app.command()
def prepare(
    config: Path = typer.Argument(..., help="TOML config (see recipes/data_demo.toml and docs/data.md)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: --set tasks=8 --set tokenize.tokenizer=runs/tok"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
) -> None:
    """Read, filter, dedup, scrub PII, tokenize into shards; resumable (rerun the same command)."""
    from k1.data.pipeline import DataConfig
    from k1.data.pipeline import prepare as run

    if not config.is_file():
        raise K1Error(f"{config}: no such config file")
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{config}: invalid TOML ({err})") from err
    cfg = DataConfig.from_dict(_apply_overrides(data, set_), where=str(config))
    result = run(cfg, progress=not no_progress)
    if result.get("submitted"):
        print(f"submitted to {cfg.executor.kind}; outputs will appear in {result['out']}")
        return
    c = result["canaries"]
    print(
        f"{result['documents']['train']} train / {result['documents']['validation']} validation documents, "
        f"{result['tokens']['train']} / {result['tokens']['validation']} tokens -> {result['manifest']}"
    )
    print(
        f"PII replaced: {json.dumps(result['pii'], ensure_ascii=False)}; canaries leaked: {c['leaked']}/{c['planted']}"
    )
    print(f"unreadable or malformed input: {result['errors']}; report: {result['report']}")
    if c["leaked"]:
        raise K1Error(f"{c['leaked']} canary string(s) reached the shards: see {result['report']}")


@app.command()
def scrub(
    files: list[Path] = typer.Argument(
        None, help="Text files to scrub (default: stdin); output goes to stdout."
    ),
    types: str = typer.Option("", help="Comma-separated PII types (default: all)."),
    counts: bool = typer.Option(False, "--counts", help="Print counts by type to stderr."),
) -> None:
    """Replace PII with typed placeholders such as <|pii:phone|>."""
    from k1.data.pii import scrub as scrub_text
    from k1.data.pii import validate_types

    wanted = validate_types([t.strip() for t in types.split(",") if t.strip()], "--types") if types else None
    total: dict[str, int] = {}
    sources = files or [None]
    for f in sources:
        if f is None:
            text = sys.stdin.read(MAX_SCRUB_BYTES + 1)
        else:
            if not f.is_file():
                raise K1Error(f"{f}: no such file")
            if f.stat().st_size > MAX_SCRUB_BYTES:
                raise K1Error(
                    f"{f}: larger than {MAX_SCRUB_BYTES >> 20} MiB; use `k1 data prepare` for corpora"
                )
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise K1Error(f"{f}: not UTF-8 text") from err
        if len(text) > MAX_SCRUB_BYTES:
            raise K1Error(f"input larger than {MAX_SCRUB_BYTES >> 20} MiB; use `k1 data prepare` for corpora")
        out, c = scrub_text(text, wanted)
        sys.stdout.write(out)
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    sys.stdout.flush()
    if counts:
        print(json.dumps(total, ensure_ascii=False), file=sys.stderr)
