"""Helpers shared by transfers: progress callbacks and checked streams."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lamina._errors import IntegrityError, NotFoundError
from lamina._parallel import run_parallel
from lamina.format.digests import file_hasher
from lamina.format.manifest import FileEntry, Manifest

__all__ = ["Progress", "hashed_chunks", "copy_snapshot"]

#: ``progress(done_bytes, total_bytes)``, called as transfers complete (progress bars)
Progress = Callable[[int, int], None]


def hashed_chunks(chunks: Iterable[bytes | memoryview], entry: FileEntry, where: str) -> Iterator[bytes | memoryview]:
    """Pass ``chunks`` through, and raise IntegrityError at the end (before the consumer can
    commit what it wrote) if their size or content address (sha256 or lt1) differs from ``entry``'s."""
    algorithm, expected = entry.digest
    hasher, size = file_hasher(algorithm), 0
    for chunk in chunks:
        hasher.update(chunk)
        size += memoryview(chunk).nbytes
        if size > entry.size:
            break
        yield chunk
    if size != entry.size or hasher.hexdigest() != expected:
        raise IntegrityError(f"{where}: bytes do not match the manifest ({size if size <= entry.size else 'more than ' + str(entry.size)} "
                             f"bytes, expected {entry.size} with {algorithm} {expected[:12]}...)",
                             [(entry.path, f"{algorithm} mismatch")])


def copy_snapshot(source: Any, manifest: Manifest, manifest_bytes: bytes, dst: str | os.PathLike[str], *,
                  where: str, overwrite: bool = False, progress: Progress | None = None,
                  max_workers: int = 4) -> None:
    """Write the snapshot whose files ``source`` (a Store) serves as a plain directory at ``dst``:
    every file checked against the manifest as it streams, the manifest's exact bytes last, the
    directory renamed into place only when complete."""
    import threading

    from lamina.snapshot.writer import DirectoryWriter

    lock, total, done = threading.Lock(), sum(f.size for f in manifest.files), [0]

    def fetch(entry: FileEntry) -> None:
        chunks = hashed_chunks(source.iter_chunks(entry.path), entry, f"{where}/{entry.path}")
        writer._put(entry.path, lambda: chunks, entry.role, expected=entry)
        with lock:
            done[0] += entry.size
            if progress is not None:
                progress(done[0], total)

    with DirectoryWriter(dst, overwrite=overwrite) as writer:
        try:
            run_parallel(fetch, list(manifest.files), max_workers)
        except NotFoundError as exc:
            raise IntegrityError(f"{exc} (the manifest of {where} references a file that is missing; "
                                 f"for a repository run `lamina fsck`)", [(str(exc), "missing blob")]) from None
        writer.commit(manifest, manifest_bytes)


@dataclass(frozen=True)
class PushResult:
    """What a push or a save into a repository did.

    Attributes:
        revision: the branch's revision id after the push.
        snapshot: the snapshot id (sha256 of the manifest).
        branch, tag: where it was published.
        parent: the branch's revision before the push (None for a new branch).
        created: False when the snapshot was already the branch head (no new revision).
        uploaded_bytes, uploaded_files: blobs written to the store (manifest included).
        reused_bytes, reused_files: files the store already held.
    """

    revision: str
    snapshot: str
    branch: str | None
    parent: str | None
    tag: str | None
    created: bool
    uploaded_bytes: int
    uploaded_files: int
    reused_bytes: int
    reused_files: int


