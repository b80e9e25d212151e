"""A snapshot stored in a repository, presented as a Store of its files."""

from __future__ import annotations

from collections.abc import Iterator

from lamina._errors import NotFoundError
from lamina.format.codec import MANIFEST_NAME
from lamina.format.manifest import FileEntry
from lamina.format.repository import blob_path
from lamina.storage.base import Store

__all__ = ["BlobSnapshotStore"]


class BlobSnapshotStore(Store):
    """A snapshot stored in a repository: ``path`` -> ``blobs/sha256/..`` of its file entry."""

    read_only = True

    def __init__(self, repo_store: Store, snapshot_id: str, files: tuple[FileEntry, ...], location: str) -> None:
        self.inner = repo_store
        self.location = location
        self.max_concurrency = repo_store.max_concurrency
        self.remote = repo_store.remote
        self._blobs = {f.path: blob_path(f.sha256) for f in files}
        self._blobs[MANIFEST_NAME] = blob_path(snapshot_id)

    def _blob(self, path: str) -> str:
        try:
            return self._blobs[path]
        except KeyError:
            raise NotFoundError(f"{self.location}: no file {path!r} in this snapshot") from None

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        return self.inner.read(self._blob(path), start, end)

    def read_limited(self, path: str, limit: int) -> bytes:
        return self.inner.read_limited(self._blob(path), limit)

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        self.inner.read_into(self._blob(path), ranges)

    def read_prefix(self, path: str, length: int) -> tuple[bytes, int]:
        return self.inner.read_prefix(self._blob(path), length)

    def iter_chunks(self, path: str, chunk_size: int = 16 << 20) -> Iterator[bytes]:
        return self.inner.iter_chunks(self._blob(path), chunk_size)

    def size(self, path: str) -> int:
        return self.inner.size(self._blob(path))

    def exists(self, path: str) -> bool:
        return path in self._blobs and self.inner.exists(self._blobs[path])

    def list(self, prefix: str = "") -> list[str]:
        # Blobs are shared between snapshots; what belongs to this one is exactly its file table.
        return sorted(p for p, blob in self._blobs.items() if p.startswith(prefix) and self.inner.exists(blob))


