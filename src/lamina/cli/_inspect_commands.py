"""``lamina inspect`` and ``lamina verify``: what a snapshot holds, and whether its bytes are intact."""

from __future__ import annotations

import json
import sys

import click

from .._errors import IntegrityError
from ._errors_cli import EXIT_INVALID, one_line_errors

__all__ = ["inspect", "verify"]


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
@one_line_errors
def inspect(path: str, as_json: bool) -> None:
    """Show a snapshot's info, training state, layers, optimizer and files (reads the manifest only)."""
    import lamina
    from lamina.snapshot.summary import summarize

    summary = summarize(lamina.open(path))
    if as_json:
        click.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    else:
        from ._render import render_summary

        render_summary(summary)


@click.command()
@click.argument("path")
@one_line_errors
def verify(path: str) -> None:
    """Check every file's size and sha256 and every shard header against the manifest.

    Exits 0 when everything matches, 1 listing the bad files otherwise.
    """
    import lamina

    art = lamina.open(path)
    try:
        art.verify()
    except IntegrityError as exc:
        for file, why in exc.files:
            click.echo(f"FAILED {file}: {why}", err=True)
        click.echo(f"{len(exc.files)} file(s) failed verification in {path}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"OK {path}: {len(art.manifest.files)} files verified")
