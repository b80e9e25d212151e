"""``lamina push / pull / log / diff / tag / branch / refs / gc / fsck``: repository commands."""

from __future__ import annotations

import sys
from typing import Any

import click

from .._errors import FormatError
from ._errors_cli import (
    EXIT_INVALID,
    emit_json,
    epilog,
    json_option,
    one_line_errors,
    progress_option,
    quiet_option,
    set_interrupt_hint,
)
from ._render import format_bytes

__all__ = ["register"]


def _lamina_repo(location: str) -> Any:
    """A lamina repository; hf:// is refused with what to use instead."""
    import lamina

    if location.startswith("hf://"):
        command = click.get_current_context().info_name
        raise FormatError(f"{location} is a Hugging Face Hub repository; `lamina {command}` works on lamina "
                          f"repositories (a directory, s3://...). For the hub, `lamina inspect`, `lamina verify`, "
                          f"`lamina push`, `lamina pull` and `lamina convert` take hf:// locations; its history and "
                          f"refs are on the hub (`hf` CLI or the web page)")
    return lamina.Repo(location)


def _repo_and_ref(location: str, default: str | None = "main") -> tuple[Any, str | None]:
    from lamina.storage.locations import split_ref

    if location.startswith("hf://"):
        _lamina_repo(location)
    base, ref = split_ref(location)
    return _lamina_repo(base), ref or default


def _push_json(result: Any) -> dict[str, Any]:
    return {"revision": result.revision, "snapshot": result.snapshot, "branch": result.branch, "parent": result.parent,
            "tag": result.tag, "created": result.created, "uploaded_bytes": result.uploaded_bytes,
            "uploaded_files": result.uploaded_files, "reused_bytes": result.reused_bytes,
            "reused_files": result.reused_files}


@click.command(epilog=epilog(
    "lamina push out/model models/tiny -m 'first' --tag v1.0",
    "lamina push out/model s3://bucket/models/tiny --branch dev",
    "lamina push out/model hf://my-org/tiny --private",
    "lamina push out/model models/tiny --json | jq .revision",
))
@click.argument("src")
@click.argument("repo")
@click.option("--branch", "--revision", "-b", "branch", help="Branch to publish to (default: main).")
@click.option("--tag", "-t", help="Also tag the new revision.")
@click.option("--message", "-m", default="", help="Revision (commit) message.")
@click.option("--author", help="Revision author (lamina repositories; default: user@host).")
@click.option("--allow-empty", is_flag=True,
              help="lamina repositories: make a new revision even when SRC is already the branch head.")
@click.option("--private", is_flag=True, help="hf:// only: create the hub repository private.")
@json_option
@quiet_option
@progress_option
@one_line_errors
def push(src: str, repo: str, branch: str | None, tag: str | None, message: str, author: str | None,
         allow_empty: bool, private: bool, as_json: bool, quiet: bool, no_progress: bool) -> None:
    """Publish snapshot SRC to REPO (a lamina repository, or hf://org/name), sending only what it lacks.

    A lamina repository is created on the first push, in a new or empty directory only. Pushing the
    snapshot that is already the branch head makes no new revision (with or without -m) unless
    --allow-empty. An interrupted push is resumed by running it again (files already sent are not
    sent twice); `lamina gc REPO` frees what it left if you give up.
    """
    import lamina

    from ._progress import progress_bar, showing_progress

    if not repo.startswith("hf://"):
        set_interrupt_hint(f"nothing was published; run the same push again to resume (files already uploaded are "
                           f"not sent again), or `lamina gc {repo}` to free the partial upload")
    elif allow_empty:
        raise FormatError("--allow-empty applies to lamina repositories; a hub push without changes makes no commit")
    with progress_bar("pushing", showing_progress(no_progress, quiet)) as progress:
        options: dict[str, Any] = {"allow_empty": True} if allow_empty else {}
        result = lamina.push(src, repo, branch=branch, message=message, tag=tag, author=author, private=private,
                             progress=progress, **options)
    if as_json:
        emit_json(_push_json(result))
        return
    if quiet:
        return
    state = "new revision" if result.created else "already the head, no new revision"
    click.echo(f"{result.branch} -> {result.revision[:12]} ({state}); uploaded {format_bytes(result.uploaded_bytes)} in "
               f"{result.uploaded_files} file(s), reused {format_bytes(result.reused_bytes)} in "
               f"{result.reused_files}" + (f"; tagged {tag}" if tag else ""))


@click.command(epilog=epilog(
    "lamina pull models/tiny@v1.0 local/tiny",
    "lamina pull hf://my-org/tiny@main local/tiny --overwrite",
))
@click.argument("source", metavar="REPO[@REF]")
@click.argument("dst")
@click.option("--overwrite", is_flag=True, help="Replace DST if it is a snapshot.")
@json_option
@quiet_option
@progress_option
@one_line_errors
def pull(source: str, dst: str, overwrite: bool, as_json: bool, quiet: bool, no_progress: bool) -> None:
    """Write revision REF (default main) of REPO (or hf://org/name@rev) to DST as a plain, verified snapshot."""
    import lamina

    from ._progress import progress_bar, showing_progress

    set_interrupt_hint(f"{dst} was not written (it appears only once complete); run the same pull again")
    with progress_bar("pulling", showing_progress(no_progress, quiet)) as progress:
        art = lamina.pull(source, dst, overwrite=overwrite, progress=progress)
    if as_json:
        emit_json({"source": source, "destination": dst, "layers": len(art.layers), "files": len(art.files),
                   "bytes": sum(f.size for f in art.manifest.files)})
    elif not quiet:
        click.echo(f"wrote {dst}: {len(art.layers)} layers, {len(art.files)} files, every sha256 checked")


@click.command(epilog=epilog(
    "lamina log models/tiny",
    "lamina log models/tiny@dev -n 5",
    "lamina log s3://bucket/models/tiny --json",
))
@click.argument("source", metavar="REPO[@REF]")
@click.option("-n", "--limit", type=click.IntRange(min=1), help="Show at most this many revisions.")
@json_option
@one_line_errors
def log(source: str, limit: int | None, as_json: bool) -> None:
    """History of a branch or tag (default main), newest first, with the tags and branch heads at each revision."""
    repo, ref = _repo_and_ref(source)
    revisions = repo.log(ref, limit=limit)
    labels: dict[str, dict[str, list[str]]] = {}
    for kind, refs in (("branches", repo.branches()), ("tags", repo.tags())):
        for name, rev in refs.items():
            labels.setdefault(rev, {"branches": [], "tags": []})[kind].append(name)
    if as_json:
        emit_json([{"id": r.id, "parents": list(r.parents), "snapshot": r.snapshot, "message": r.message,
                    "author": r.author, "time": r.time.isoformat(),
                    "tags": sorted(labels.get(r.id, {}).get("tags", [])),
                    "branches": sorted(labels.get(r.id, {}).get("branches", []))} for r in revisions])
        return
    for r in revisions:
        here = labels.get(r.id, {"branches": [], "tags": []})
        names = [f"branch: {b}" for b in sorted(here["branches"])] + [f"tag: {t}" for t in sorted(here["tags"])]
        decoration = f" ({', '.join(names)})" if names else ""
        click.echo(f"{r.short_id}{decoration}  {r.time:%Y-%m-%d %H:%M:%S}Z  {r.author}  {r.message}")


@click.command(epilog=epilog(
    "lamina diff out/v1 out/v2",
    "lamina diff --repo models/tiny v1.0 main",
    "lamina diff models/tiny@v1.0 models/tiny@main --json",
    "lamina diff out/v1 out/v2 --exit-code || echo changed",
    problems="with --exit-code: the snapshots differ",
))
@click.argument("a")
@click.argument("b")
@click.option("--repo", help="Repository in which A and B are refs (otherwise each is a path, URI or REPO@REF).")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the snapshots differ (0 when identical), like git diff.")
@json_option
@one_line_errors
def diff(a: str, b: str, repo: str | None, exit_code: bool, as_json: bool) -> None:
    """Per-layer differences between two snapshots or two refs of one repository (sizes in binary units)."""
    import lamina

    result = _lamina_repo(repo).diff(a, b) if repo else lamina.diff(a, b)
    if as_json:
        emit_json(result.as_dict())
    else:
        from ._render import render_diff

        render_diff(result)
    if exit_code and not result.identical:
        sys.exit(EXIT_INVALID)


@click.command(epilog=epilog(
    "lamina tag models/tiny v1.0",
    "lamina tag models/tiny v1.1 dev",
    "lamina tag models/tiny v1.1 main --force",
    "lamina tag models/tiny v1.1 --delete",
))
@click.argument("repo")
@click.argument("name")
@click.argument("ref", default="main")
@click.option("--force", is_flag=True, help="Move an existing tag.")
@click.option("--delete", is_flag=True, help="Delete tag NAME instead.")
@json_option
@quiet_option
@one_line_errors
def tag(repo: str, name: str, ref: str, force: bool, delete: bool, as_json: bool, quiet: bool) -> None:
    """Tag revision REF (default main) of REPO as NAME (tags do not move without --force)."""
    r = _lamina_repo(repo)
    if delete:
        revision_id = r.tags().get(name)
        r.delete_tag(name)
        if as_json:
            emit_json({"tag": name, "deleted": True, "revision": revision_id})
        elif not quiet:
            click.echo(f"deleted tag {name}")
        return
    revision = r.tag(name, ref, force=force)
    if as_json:
        emit_json({"tag": name, "deleted": False, "revision": revision.id})
    elif not quiet:
        click.echo(f"{name} -> {revision.short_id}")


@click.command(epilog=epilog(
    "lamina branch models/tiny experiment --delete",
    "lamina branch models/tiny dev --rename main-next",
    "lamina refs models/tiny",
))
@click.argument("repo")
@click.argument("name")
@click.option("--delete", is_flag=True, help="Delete branch NAME (its revisions stay until `lamina gc` if no ref reaches them).")
@click.option("--rename", "new_name", metavar="NEW", help="Rename branch NAME to NEW.")
@json_option
@quiet_option
@one_line_errors
def branch(repo: str, name: str, delete: bool, new_name: str | None, as_json: bool, quiet: bool) -> None:
    """Delete (--delete) or rename (--rename NEW) branch NAME of REPO. Branches are created by `lamina push --branch`."""
    if delete == (new_name is not None):
        raise click.UsageError("give exactly one of --delete and --rename NEW")
    r = _lamina_repo(repo)
    r._require()
    if delete:
        revision_id = r.branches().get(name)
        r.delete_branch(name)
        if as_json:
            emit_json({"branch": name, "deleted": True, "revision": revision_id})
        elif not quiet:
            click.echo(f"deleted branch {name} (was {revision_id[:12] if revision_id else '?'}); `lamina gc {repo}` "
                       f"frees what no other ref reaches")
        return
    assert new_name is not None
    from lamina.repo.refs import rename_branch

    revision_id = rename_branch(r, name, new_name)
    if as_json:
        emit_json({"branch": new_name, "renamed_from": name, "revision": revision_id})
    elif not quiet:
        click.echo(f"renamed branch {name} -> {new_name} ({revision_id[:12]})")


@click.command(epilog=epilog("lamina refs models/tiny", "lamina refs s3://bucket/models/tiny --json"))
@click.argument("repo")
@json_option
@one_line_errors
def refs(repo: str, as_json: bool) -> None:
    """List the branches and tags of REPO."""
    r = _lamina_repo(repo)
    r._require()
    branches, tags = r.branches(), r.tags()
    if as_json:
        emit_json({"branches": branches, "tags": tags})
        return
    if not branches and not tags:
        click.echo(f"{repo}: no branches or tags (an empty repository; `lamina push SNAPSHOT {repo}` adds one)")
        return
    for name, rev in branches.items():
        click.echo(f"branch  {name:<24} {rev[:12]}")
    for name, rev in tags.items():
        click.echo(f"tag     {name:<24} {rev[:12]}")


@click.command(epilog=epilog("lamina gc models/tiny --dry-run", "lamina gc s3://bucket/models/tiny --json"))
@click.argument("repo")
@click.option("--dry-run", is_flag=True, help="Only report what would be deleted.")
@json_option
@quiet_option
@one_line_errors
def gc(repo: str, dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Delete blobs and revisions no branch or tag can reach (also what an interrupted push left)."""
    result = _lamina_repo(repo).gc(dry_run=dry_run)
    if as_json:
        emit_json({"dry_run": result.dry_run, "deleted_blobs": result.deleted_blobs,
                   "deleted_bytes": result.deleted_bytes, "deleted_revisions": result.deleted_revisions,
                   "kept_blobs": result.kept_blobs})
        return
    if quiet:
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.deleted_blobs} blob(s) ({format_bytes(result.deleted_bytes)}) and "
               f"{result.deleted_revisions} revision(s); {result.kept_blobs} blob(s) in use")


@click.command(epilog=epilog("lamina fsck models/tiny", "lamina fsck s3://bucket/models/tiny --full --json",
                             problems="the repository has problems (each listed on stderr, or under \"problems\")"))
@click.argument("repo")
@click.option("--full", is_flag=True, help="Also hash every blob (reads everything).")
@json_option
@quiet_option
@progress_option
@one_line_errors
def fsck(repo: str, full: bool, as_json: bool, quiet: bool, no_progress: bool) -> None:
    """Check a repository's refs, revisions, manifests and blobs. Exits 1 on any problem."""
    from lamina.api.convert import watch_reads

    from ._progress import progress_bar, showing_progress

    r = _lamina_repo(repo)
    with progress_bar("hashing", full and showing_progress(no_progress, quiet or as_json)) as progress:
        if progress is None:
            report = r.fsck(full=full)
        else:
            with watch_reads(r.store, None, progress):
                report = r.fsck(full=full)
    if as_json:
        emit_json({"ok": report.ok, "full": report.full, "refs": report.refs, "revisions": report.revisions,
                   "snapshots": report.snapshots, "blobs": report.blobs, "unreachable_blobs": report.unreachable_blobs,
                   "unreachable_bytes": report.unreachable_bytes,
                   "problems": [{"path": p, "reason": why} for p, why in report.problems]})
        if report.problems:
            sys.exit(EXIT_INVALID)
        return
    for path, why in report.problems:
        click.echo(f"PROBLEM {path}: {why}", err=True)
    summary = (f"{report.refs} ref(s), {report.revisions} revision(s), {report.snapshots} snapshot(s), "
               f"{report.blobs} blob(s){' hashed' if full else ''}; {report.unreachable_blobs} unreachable "
               f"({format_bytes(report.unreachable_bytes)}, `lamina gc` removes them)")
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) in {repo}: {summary}", err=True)
        sys.exit(EXIT_INVALID)
    if not quiet:
        click.echo(f"OK {repo}: {summary}")


def register(group: click.Group) -> None:
    for command in (push, pull, log, diff, tag, branch, refs, gc, fsck):
        group.add_command(command)
