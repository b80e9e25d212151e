"""``lamina cache ls | prune``: the local cache of remote shards (``$LAMINA_CACHE``, else
``$XDG_CACHE_HOME/lamina``, else ``~/.cache/lamina``)."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import click

from .._errors import FormatError
from ._errors_cli import emit_json, epilog, json_option, one_line_errors, quiet_option
from ._render import format_bytes

__all__ = ["cache", "parse_size"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """``10GiB`` (binary), ``500MB`` (decimal), ``1024`` (bytes) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise FormatError(f"{text!r} is not a size: use e.g. 10GiB, 500MiB (binary), 5GB (decimal) or a byte count")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@click.group(epilog="\b\nThe cache directory: $LAMINA_CACHE, else $XDG_CACHE_HOME/lamina, else ~/.cache/lamina.")
def cache() -> None:
    """The local cache of shards read from remote snapshots and repositories (verified by digest)."""


@cache.command("ls", epilog=epilog("lamina cache ls", "lamina cache ls --json | jq .total_bytes"))
@json_option
@click.option("--summary", "-s", is_flag=True, help="Only the totals line.")
@one_line_errors
def ls_command(as_json: bool, summary: bool) -> None:
    """List cache entries, oldest first: content address, size (binary units), when written (UTC)."""
    from lamina.snapshot.cache import cache_entries, default_cache_dir

    root = default_cache_dir()
    entries = cache_entries(root)
    total = sum(e[2] for e in entries)
    if as_json:
        emit_json({"root": str(root), "files": len(entries), "total_bytes": total, "entries": [
            {"algorithm": a, "digest": d, "bytes": n, "modified": _iso(m)} for a, d, n, m in entries]})
        return
    if not summary:
        for algorithm, digest, nbytes, modified in entries:
            click.echo(f"{algorithm}:{digest[:16]}  {format_bytes(nbytes):>10}  {_iso(modified)}")
    click.echo(f"{root}: {len(entries)} file(s), {format_bytes(total)}" + ("" if entries else " (empty)"))


@cache.command("prune", epilog=epilog(
    "lamina cache prune --all",
    "lamina cache prune --older-than 30",
    "lamina cache prune --max-size 20GiB --dry-run",
))
@click.option("--all", "everything", is_flag=True, help="Delete every entry.")
@click.option("--older-than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Delete entries written more than DAYS days ago.")
@click.option("--max-size", metavar="SIZE", help="Then delete the oldest entries until at most SIZE remain "
                                                  "(10GiB, 500MiB binary; 5GB decimal).")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@json_option
@quiet_option
@one_line_errors
def prune_command(everything: bool, older_than: float | None, max_size: str | None, dry_run: bool, as_json: bool,
                  quiet: bool) -> None:
    """Free disk space: delete cache entries (they are fetched again when next read)."""
    from lamina.snapshot.cache import default_cache_dir, prune_cache

    if everything == (older_than is not None or max_size is not None):
        raise click.UsageError("give --all, or --older-than DAYS and/or --max-size SIZE")
    root = default_cache_dir()
    files, size = prune_cache(root, older_than=None if older_than is None else time.time() - older_than * 86400,
                              max_bytes=None if max_size is None else parse_size(max_size), dry_run=dry_run)
    if as_json:
        emit_json({"root": str(root), "dry_run": dry_run, "deleted_files": files, "deleted_bytes": size})
    elif not quiet:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {files} file(s) ({format_bytes(size)}) from {root}")


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
