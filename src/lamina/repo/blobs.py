"""A snapshot stored in a repository, presented as a Store of its files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from lamina._errors import NotFoundError
from lamina.format.codec import MANIFEST_NAME
from lamina.format.manifest import FileEntry
from lamina.format.repository import blob_path, file_blob_path
from lamina.format.view import FileTable, ManifestView
from lamina.storage.base import Store

__all__ = ["BlobSnapshotStore"]


class BlobSnapshotStore(Store):
    """A snapshot stored in a repository: ``path`` -> the blob of its file entry (``blobs/lt1/..`` or
    ``blobs/sha256/..``)."""

    read_only = True

    def __init__(self, repo_store: Store, snapshot_id: str, files: Iterable[FileEntry] | ManifestView,
                 location: str) -> None:
        self.inner = repo_store
        self.location = location
        self.max_concurrency = repo_store.max_concurrency
        self.remote = repo_store.remote
        self._files = FileTable(files)
        self._manifest_blob = blob_path(snapshot_id)

    def _blob_or_none(self, path: str) -> str | None:
        if path == MANIFEST_NAME:
            return self._manifest_blob
        entry = self._files.get(path)
        return None if entry is None else file_blob_path(entry)

    def _blob(self, path: str) -> str:
        blob = self._blob_or_none(path)
        if blob is None:
            raise NotFoundError(f"{self.location}: no file {path!r} in this snapshot")
        return blob

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        return self.inner.read(self._blob(path), start, end)

    def read_limited(self, path: str, limit: int) -> bytes:
        return self.inner.read_limited(self._blob(path), limit)

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> int | None:
        return self.inner.read_into(self._blob(path), ranges)

    def read_prefix(self, path: str, length: int) -> tuple[bytes, int]:
        return self.inner.read_prefix(self._blob(path), length)

    def iter_chunks(self, path: str, chunk_size: int = 16 << 20) -> Iterator[bytes]:
        return self.inner.iter_chunks(self._blob(path), chunk_size)

    def size(self, path: str) -> int:
        return self.inner.size(self._blob(path))

    def exists(self, path: str) -> bool:
        blob = self._blob_or_none(path)
        return blob is not None and self.inner.exists(blob)

    def list(self, prefix: str = "") -> list[str]:
        # Blobs are shared between snapshots; what belongs to this one is exactly its file table.
        paths = [MANIFEST_NAME] + [f.path for f in self._files.all()]
        return sorted(p for p in paths if p.startswith(prefix) and self.inner.exists(self._blob(p)))


