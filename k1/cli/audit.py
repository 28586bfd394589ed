"""`k1 audit verify LOG`: check a server's hash-chained audit log."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command()
def verify(log: str = typer.Argument(..., help="The audit log (`k1 serve --audit`).")):
    """Check every line's hash and link; exit 1 and name the first bad line if the chain breaks."""
    from k1.serve.audit import verify as check

    result = check(log)
    typer.echo(result.summary(log), err=not result.ok)
    if not result.ok:
        raise typer.Exit(1)
