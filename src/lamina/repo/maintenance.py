"""Repository maintenance: garbage collection and the integrity check (format_spec/repository.md
§6, §7). Functions over a :class:`~lamina.repo.repository.Repo`, which exposes them as ``gc`` and
``fsck``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lamina._errors import ConflictError, FormatError, IntegrityError, LaminaError
from lamina._parallel import run_parallel
from lamina.format.digests import DIGESTS, file_hasher
from lamina.format.repository import blob_path, file_blob_path, is_sha256, revision_path
from lamina.repo.markers import GC_LOCK, Marker, marker_live

if TYPE_CHECKING:
    from lamina.repo.repository import Repo

__all__ = ["GcResult", "FsckReport", "collect_garbage", "check_repository", "reachable"]


@dataclass(frozen=True)
class GcResult:
    """What :meth:`Repo.gc` deleted (or would delete, with ``dry_run``)."""

    deleted_blobs: int
    deleted_bytes: int
    deleted_revisions: int
    kept_blobs: int
    dry_run: bool


@dataclass(frozen=True)
class FsckReport:
    """The result of :meth:`Repo.fsck`: ``problems`` lists ``(path, why)``; ``ok`` when empty."""

    problems: tuple[tuple[str, str], ...]
    refs: int
    revisions: int
    snapshots: int
    blobs: int
    unreachable_blobs: int
    unreachable_bytes: int
    full: bool

    @property
    def ok(self) -> bool:
        return not self.problems


def reachable(repo: Repo) -> tuple[set[str], set[str], list[tuple[str, str]]]:
    """(revision ids, blob paths) reachable from any ref, and problems met on the way."""
    problems: list[tuple[str, str]] = []
    revisions: set[str] = set()
    blobs: set[str] = set()
    pending = []
    for path in repo.store.list("refs/"):
        try:
            value = repo._read_ref(path)
        except FormatError as exc:
            problems.append((path, str(exc)))
            continue
        if value is not None:
            pending.append((value, path))
    while pending:
        revision_id, named = pending.pop()
        if revision_id in revisions:
            continue
        revisions.add(revision_id)
        try:
            revision = repo._load_revision(revision_id, named)
        except LaminaError as exc:
            problems.append((revision_path(revision_id), str(exc)))
            continue
        pending += [(p, f"the parent of {revision.short_id}") for p in revision.parents]
        blobs.add(blob_path(revision.snapshot))
        try:
            _, manifest = repo._snapshot(revision)
        except LaminaError as exc:
            problems.append((blob_path(revision.snapshot), str(exc)))
            continue
        blobs.update(file_blob_path(f) for f in manifest.files)
    return revisions, blobs, problems

def _wait_for(repo: Repo, prefix: str, deadline: float, what: str) -> None:
    """Wait until no live marker under ``prefix`` remains; ConflictError past ``deadline``."""
    while live := [p for p in repo.store.list(prefix) if marker_live(repo.store, p)]:
        if time.monotonic() >= deadline:
            raise ConflictError(f"{repo.location}: {len(live)} {what} after {repo.push_drain_wait:g} s; "
                                f"run gc when they end")
        time.sleep(0.1)

def collect_garbage(repo: Repo, *, dry_run: bool = False) -> GcResult:
    """Delete every blob and revision no ref can reach (history of a ref counts as reachable),
    and nothing else. Pushes already running are waited for (up to ``push_drain_wait``
    seconds); pushes that start meanwhile wait for the collection to end."""
    repo._require()
    # Fair both ways: pushes that waited for the previous collection go first; then, holding
    # the marker (new pushes step back), the pushes already running are waited for. Only
    # those few are ever waited for, so a busy repository cannot starve the collection.
    deadline = time.monotonic() + repo.push_drain_wait
    _wait_for(repo, "locks/wait-", deadline, "push(es) waiting for an earlier collection")
    lock = Marker(repo.store, GC_LOCK)
    if not lock.acquire(exclusive=True):
        raise ConflictError(f"{repo.location}: another garbage collection is running")
    try:
        _wait_for(repo, "locks/push-", deadline, "push(es) still in progress")
        revisions, blobs, problems = reachable(repo)
        if problems:
            detail = "; ".join(f"{p}: {why}" for p, why in problems[:5])
            raise IntegrityError(f"{repo.location}: refusing to collect garbage in a damaged repository "
                                 f"(run `lamina fsck`): {detail}", problems)
        doomed_blobs = [p for p in _blob_paths(repo) if p not in blobs]
        doomed_revisions = [p for p in repo.store.list("revisions/") if p.rsplit("/", 1)[1] not in revisions]
        freed = sum(repo.store.size(p) for p in doomed_blobs)
        if not dry_run:
            run_parallel(repo.store.delete, doomed_blobs + doomed_revisions, repo.max_concurrency)
            for stale in repo.store.list("locks/push-") + repo.store.list("locks/wait-"):
                if not marker_live(repo.store, stale):
                    repo.store.delete(stale)
            repo.store.sweep_temporaries()
        return GcResult(len(doomed_blobs), freed, len(doomed_revisions), len(blobs), dry_run)
    finally:
        lock.release()

def _blob_paths(repo: Repo) -> list[str]:
    """Every blob the store holds, under each content-address directory (``blobs/<algorithm>/``)."""
    return repo.store.list("blobs/")


def check_repository(repo: Repo, *, full: bool = False) -> FsckReport:
    """Check refs, revisions, manifests and blob sizes (``full``: every blob's bytes against its
    name, by the blob's algorithm: sha256 or lt1)."""
    repo._require()
    revisions, reached, problems = reachable(repo)
    present = set(_blob_paths(repo))
    sizes: dict[str, int] = {}  # each blob sized once, however many snapshots share it
    snapshots = 0
    for revision_id in revisions:
        try:
            revision = repo._load_revision(revision_id, "a revision")
            _, manifest = repo._snapshot(revision)
        except LaminaError:
            continue  # already reported by reachable()
        snapshots += 1
        for f in manifest.files:
            path = file_blob_path(f)
            if path not in present:
                problems.append((path, f"missing (file {f.path!r} of snapshot {revision.snapshot[:12]})"))
                continue
            if path not in sizes:
                sizes[path] = repo.store.size(path)
            if sizes[path] != f.size:
                problems.append((path, f"size {sizes[path]}, expected {f.size} (file {f.path!r})"))
    for path in sorted(present):
        parts = path.split("/")
        algorithm, name = (parts[1], parts[-1]) if len(parts) == 4 else ("", "")
        if algorithm not in DIGESTS or not is_sha256(name) or path != blob_path(name, algorithm):
            problems.append((path, f"not a blob name (blobs/<{'|'.join(DIGESTS)}>/<h[:2]>/<64 hex digits>)"))
        elif full:
            hasher = file_hasher(algorithm)
            for chunk in repo.store.iter_chunks(path):
                hasher.update(chunk)
            if hasher.hexdigest() != name:
                problems.append((path, "blob bytes do not match its name"))
    unreachable = [p for p in present if p not in reached]
    problems = sorted(set(problems))
    return FsckReport(tuple(problems), len(repo.store.list("refs/")), len(revisions), snapshots, len(present),
                      len(unreachable), sum(repo.store.size(p) for p in unreachable), full)
