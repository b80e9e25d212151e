"""``lamina push / pull / log / diff / tag / refs / gc / fsck``: repository commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

from ._errors_cli import EXIT_INVALID, one_line_errors
from ._render import format_bytes

__all__ = ["register"]


@contextmanager
def _transfer_bar(verb: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on a terminal (nothing otherwise); yields the progress callback."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn(f"[bold]{verb}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(verb, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _repo_and_ref(location: str, default: str | None = "main") -> tuple[object, str | None]:
    import lamina
    from lamina.storage.locations import split_ref

    base, ref = split_ref(location)
    return lamina.Repo(base), ref or default


@click.command()
@click.argument("src")
@click.argument("repo")
@click.option("--branch", "--revision", "-b", "branch", help="Branch to publish to (default: main).")
@click.option("--tag", "-t", help="Also tag the new revision.")
@click.option("--message", "-m", default="", help="Revision (commit) message.")
@click.option("--author", help="Revision author (lamina repositories; default: user@host).")
@click.option("--private", is_flag=True, help="hf:// only: create the hub repository private.")
@one_line_errors
def push(src: str, repo: str, branch: str | None, tag: str | None, message: str, author: str | None,
         private: bool) -> None:
    """Publish snapshot SRC to REPO (a lamina repository, or hf://org/name), sending only what it lacks."""
    import lamina

    with _transfer_bar("pushing") as progress:
        result = lamina.push(src, repo, branch=branch, message=message, tag=tag, author=author, private=private,
                             progress=progress)
    state = "new revision" if result.created else "already the head"
    click.echo(f"{result.branch} -> {result.revision[:12]} ({state}); uploaded {format_bytes(result.uploaded_bytes)} in "
               f"{result.uploaded_files} file(s), reused {format_bytes(result.reused_bytes)} in "
               f"{result.reused_files}" + (f"; tagged {tag}" if tag else ""))


@click.command()
@click.argument("source", metavar="REPO[@REF]")
@click.argument("dst")
@click.option("--overwrite", is_flag=True, help="Replace DST if it is a snapshot.")
@one_line_errors
def pull(source: str, dst: str, overwrite: bool) -> None:
    """Write revision REF (default main) of REPO (or hf://org/name@rev) to DST as a plain, verified snapshot."""
    import lamina

    with _transfer_bar("pulling") as progress:
        art = lamina.pull(source, dst, overwrite=overwrite, progress=progress)
    click.echo(f"wrote {dst}: {len(art.layers)} layers, {len(art.files)} files, every sha256 checked")


@click.command()
@click.argument("source", metavar="REPO[@REF]")
@click.option("-n", "--limit", type=int, help="Show at most this many revisions.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@one_line_errors
def log(source: str, limit: int | None, as_json: bool) -> None:
    """History of a branch or tag, newest first."""
    repo, ref = _repo_and_ref(source)
    revisions = repo.log(ref, limit=limit)  # type: ignore[attr-defined]
    if as_json:
        click.echo(json.dumps([{"id": r.id, "parents": list(r.parents), "snapshot": r.snapshot, "message": r.message,
                                "author": r.author, "time": r.time.isoformat()} for r in revisions], indent=2))
        return
    for r in revisions:
        click.echo(f"{r.short_id}  {r.time:%Y-%m-%d %H:%M:%S}Z  {r.author}  {r.message}")


@click.command()
@click.argument("a")
@click.argument("b")
@click.option("--repo", help="Repository in which A and B are refs (otherwise each is a path, URI or REPO@REF).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@one_line_errors
def diff(a: str, b: str, repo: str | None, as_json: bool) -> None:
    """Per-layer differences between two snapshots or two refs of one repository."""
    import lamina

    result = lamina.Repo(repo).diff(a, b) if repo else lamina.diff(a, b)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
        return
    from ._render import render_diff

    render_diff(result)


@click.command()
@click.argument("repo")
@click.argument("name")
@click.argument("ref", default="main")
@click.option("--force", is_flag=True, help="Move an existing tag.")
@click.option("--delete", is_flag=True, help="Delete tag NAME instead.")
@one_line_errors
def tag(repo: str, name: str, ref: str, force: bool, delete: bool) -> None:
    """Tag revision REF (default main) of REPO as NAME."""
    import lamina

    r = lamina.Repo(repo)
    if delete:
        r.delete_tag(name)
        click.echo(f"deleted tag {name}")
        return
    revision = r.tag(name, ref, force=force)
    click.echo(f"{name} -> {revision.short_id}")


@click.command()
@click.argument("repo")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@one_line_errors
def refs(repo: str, as_json: bool) -> None:
    """List the branches and tags of REPO."""
    import lamina

    r = lamina.Repo(repo)
    r._require()
    branches, tags = r.branches(), r.tags()
    if as_json:
        click.echo(json.dumps({"branches": branches, "tags": tags}, indent=2))
        return
    for name, rev in branches.items():
        click.echo(f"branch  {name:<24} {rev[:12]}")
    for name, rev in tags.items():
        click.echo(f"tag     {name:<24} {rev[:12]}")


@click.command()
@click.argument("repo")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@one_line_errors
def gc(repo: str, dry_run: bool) -> None:
    """Delete blobs and revisions no branch or tag can reach."""
    import lamina

    result = lamina.Repo(repo).gc(dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.deleted_blobs} blob(s) ({format_bytes(result.deleted_bytes)}) and "
               f"{result.deleted_revisions} revision(s); {result.kept_blobs} blob(s) in use")


@click.command()
@click.argument("repo")
@click.option("--full", is_flag=True, help="Also hash every blob (reads everything).")
@one_line_errors
def fsck(repo: str, full: bool) -> None:
    """Check a repository's refs, revisions, manifests and blobs. Exits 1 on any problem."""
    import lamina

    report = lamina.Repo(repo).fsck(full=full)
    for path, why in report.problems:
        click.echo(f"PROBLEM {path}: {why}", err=True)
    summary = (f"{report.refs} ref(s), {report.revisions} revision(s), {report.snapshots} snapshot(s), "
               f"{report.blobs} blob(s){' hashed' if full else ''}; {report.unreachable_blobs} unreachable "
               f"({format_bytes(report.unreachable_bytes)}, `lamina gc` removes them)")
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) in {repo}: {summary}", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"OK {repo}: {summary}")


def register(group: click.Group) -> None:
    for command in (push, pull, log, diff, tag, refs, gc, fsck):
        group.add_command(command)
