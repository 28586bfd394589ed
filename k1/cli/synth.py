"""`k1 synth TASK`: generate Korean reasoning problems with verifiable answers (jsonl)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command()
def arithmetic(
    n: int = typer.Option(1000, "--n", help="Number of problems."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same problems."),
    level: str = typer.Option("1..4", "--level", help="Difficulty: 2, 1..4 or 1,3 (levels take turns)."),
    split: str = typer.Option("train", "--split", help="train, or test: held-out problems never in train."),
    out: Path = typer.Option(..., "--out", help="Output .jsonl file (written atomically)."),
):
    """Korean arithmetic word problems with a step-by-step reasoning trace and an integer answer."""
    from k1 import synth

    records = synth.arithmetic(n, seed=seed, levels=level, split=split)
    synth.write_jsonl(records, out)
    by_level = Counter(r["level"] for r in records)
    levels = ", ".join(f"level {lv}: {c}" for lv, c in sorted(by_level.items()))
    print(f"wrote {len(records)} {split} problems ({levels}) to {out}")
