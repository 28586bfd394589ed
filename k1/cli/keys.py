"""`k1 keys create|list|revoke`: API keys for `k1 serve` (only salted hashes are stored)."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False)

STORE_HELP = "Key store file (default: $K1_KEYS or ~/.k1/keys.sqlite); give `k1 serve --keys` the same."


def _store(path: str | None, create: bool):
    from k1.serve.auth import KeyStore
    from k1.serve.config import default_keys_path

    return KeyStore(path or default_keys_path(), create=create)


@app.command()
def create(
    name: str = typer.Option(..., help="Who or what the key is for (unique)."),
    scopes: str = typer.Option("chat", help="Comma-separated: chat, completions, admin."),
    rate: float | None = typer.Option(None, help="Requests per minute (default: unlimited)."),
    quota: int | None = typer.Option(
        None, help="Tokens (prompt + completion) per UTC day (default: unlimited)."
    ),
    store: str | None = typer.Option(None, help=STORE_HELP),
):
    """Make a key and print it once; it cannot be shown again."""
    ks = _store(store, create=True)
    record, key = ks.create(name, scopes, rate, quota)
    typer.echo(key)
    typer.echo(
        f"created key {record.id} ({record.name}, scopes {','.join(record.scopes)}) in {ks.path}; "
        "this is the only time the key is shown",
        err=True,
    )


@app.command("list")
def list_(store: str | None = typer.Option(None, help=STORE_HELP)):
    """Keys with their scopes, limits and today's usage (never the keys themselves)."""
    ks = _store(store, create=False)
    rows = [("id", "name", "scopes", "rate/min", "quota/day", "used today", "created", "revoked")]
    for r in ks.list():
        rows.append(
            (
                r.id,
                r.name,
                ",".join(r.scopes),
                f"{r.rate:g}" if r.rate else "-",
                str(r.quota) if r.quota else "-",
                str(ks.used_today(r.id)),
                r.created,
                r.revoked or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command()
def revoke(
    key: str = typer.Argument(..., help="Key id or name."),
    store: str | None = typer.Option(None, help=STORE_HELP),
):
    """Revoke a key; a running server refuses it from its next request on."""
    r = _store(store, create=False).revoke(key)
    typer.echo(f"revoked {r.id} ({r.name}) at {r.revoked}")
