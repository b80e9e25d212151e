"""RepoWriter: the snapshot writer whose files become repository blobs, one layer at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from lamina.format.codec import encode_manifest
from lamina.format.digests import Lt1
from lamina.format.manifest import FileEntry, Manifest
from lamina.format.repository import file_blob_path
from lamina.snapshot.transfer import hashed_chunks
from lamina.snapshot.writer import SnapshotWriter

if TYPE_CHECKING:
    from lamina.repo.repository import Repo, _Counter

__all__ = ["RepoWriter"]


class RepoWriter(SnapshotWriter):
    """Hashes each file from memory, then uploads it only if the repository lacks that blob, so
    a layer unchanged since any earlier revision costs no upload. Nothing is staged locally."""

    def __init__(self, repo: Repo, counter: _Counter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.repo = repo
        self.counter = counter

    def _put(self, relpath: str, chunks: Callable[[], Iterable[memoryview | bytes]], role: str) -> FileEntry:
        digest, size = Lt1(), 0
        for chunk in chunks():
            digest.update(chunk)
            size += memoryview(chunk).nbytes
        entry = FileEntry(path=relpath, size=size, sha256=None, role=role, lt1=digest.hexdigest())
        # The upload pass is checked too: memory changed in between must not become a blob whose
        # bytes disagree with its name.
        self.repo._put_blob(file_blob_path(entry), size, lambda: hashed_chunks(chunks(), entry, relpath),
                            self.counter)
        return entry

    def commit(self, manifest: Manifest) -> bytes:
        """The manifest's bytes; the repository uploads them and publishes the revision."""
        return encode_manifest(manifest)
