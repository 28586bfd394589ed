"""`k1 demo`: the whole pipeline end to end at toy scale."""

from __future__ import annotations

import typer


def command(
    out: str = typer.Option("runs/demo", "--out", help="Where every stage writes its outputs and the report."),
    fast: bool = typer.Option(False, "--fast", help="A 2-minute smoke version of every stage."),
    force: bool = typer.Option(False, "--force", help="Redo stages that finished before."),
    seed: int = typer.Option(0, help="Seed for the generated data and the models."),
):
    """Curate -> tokenizer -> pretrain -> Think/Non-Think SFT -> distill -> evaluate -> report."""
    from k1.demo import main_entry

    main_entry(out, fast, force, seed)
