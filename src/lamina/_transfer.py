"""Helpers shared by transfers: progress callbacks and checked streams."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

from ._errors import IntegrityError
from ._manifest import FileEntry

__all__ = ["Progress", "hashed_chunks"]

#: ``progress(done_bytes, total_bytes)``, called as transfers complete (progress bars)
Progress = Callable[[int, int], None]


def hashed_chunks(chunks: Iterable[bytes | memoryview], entry: FileEntry, where: str) -> Iterator[bytes | memoryview]:
    """Pass ``chunks`` through, and raise IntegrityError at the end (before the consumer can
    commit what it wrote) if their size or sha256 differs from ``entry``'s."""
    sha, size = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(chunk)
        size += len(chunk)
        if size > entry.size:
            break
        yield chunk
    if size != entry.size or sha.hexdigest() != entry.sha256:
        raise IntegrityError(f"{where}: bytes do not match the manifest ({size if size <= entry.size else 'more than ' + str(entry.size)} "
                             f"bytes, expected {entry.size} with sha256 {entry.sha256[:12]}...)",
                             [(entry.path, "sha256 mismatch")])
