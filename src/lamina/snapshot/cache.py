"""Read-only Store views that present one snapshot's files.

``BlobSnapshotStore`` maps snapshot paths to the content-addressed blobs of a repository;
``CachedSnapshotStore`` serves whole files from a local cache keyed by sha256, fetching each from
the remote store once. Both sit between the ShardReader and a backend, so the reader stays the same
for local directories, remote snapshots and repository revisions.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from lamina._errors import IntegrityError, NotFoundError, StorageError
from lamina.format.digests import file_hasher
from lamina.format.manifest import FileEntry
from lamina.format.repository import file_blob_path
from lamina.format.view import FileTable, ManifestView
from lamina.storage.base import Store
from lamina.storage.local import LocalStore, open_regular

__all__ = ["BlobCache", "CachedSnapshotStore", "default_cache_dir", "cache_entries", "prune_cache"]


def default_cache_dir() -> Path:
    """``$LAMINA_CACHE``, else ``$XDG_CACHE_HOME/lamina``, else ``~/.cache/lamina``."""
    if os.environ.get("LAMINA_CACHE"):
        return Path(os.environ["LAMINA_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lamina"


class BlobCache:
    """Whole files by content address under ``root/blobs/<lt1|sha256>/<h[:2]>/<h>`` (the repository
    blob layout).

    An entry is hashed while it is downloaded and again the first time this process uses it, so a
    truncated or corrupted entry is detected, deleted and fetched again.
    """

    _verified: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) checked in this process
    _locks: dict[str, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.store = LocalStore(self.root)
        self.fetched_bytes = 0

    def _lock(self, digest: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(digest, threading.Lock())

    def _good(self, path: Path, size: int, digest: tuple[str, str]) -> bool:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return False
        key = str(path)
        if self._verified.get(key) == (stat.st_size, stat.st_mtime_ns):
            return True
        if stat.st_size != size or _file_digest(path, digest[0]) != digest[1]:
            path.unlink(missing_ok=True)  # corrupted or truncated: fetch again
            return False
        self._verified[key] = (stat.st_size, stat.st_mtime_ns)
        return True

    def path_for(self, entry: FileEntry, source: Store) -> Path:
        """The local path of ``entry``'s bytes, fetched from ``source`` if not cached (or bad)."""
        path = self.root / file_blob_path(entry)
        with self._lock(entry.digest[1]):
            if self._good(path, entry.size, entry.digest):
                return path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create the cache directory {path.parent}: {exc.strerror}") from None
            tmp = path.parent / f".lamina-{os.getpid()}-{secrets.token_hex(6)}"
            hasher, size = file_hasher(entry.digest[0]), 0
            try:
                with open(tmp, "wb") as f:
                    for chunk in source.iter_chunks(entry.path):
                        size += len(chunk)
                        if size > entry.size:  # never store (or wait for) more than the manifest lists
                            break
                        hasher.update(chunk)
                        f.write(chunk)
                if size != entry.size or hasher.hexdigest() != entry.digest[1]:
                    raise IntegrityError(f"{source.location}/{entry.path}: downloaded {size} bytes that do not match "
                                         f"the manifest's size and {entry.digest[0]}",
                                         [(entry.path, f"{entry.digest[0]} mismatch")])
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            self.fetched_bytes += size
            stat = path.stat()
            self._verified[str(path)] = (stat.st_size, stat.st_mtime_ns)
            return path


def _file_digest(path: Path, algorithm: str) -> str:
    hasher = file_hasher(algorithm)
    with open_regular(path) as f:
        while chunk := f.read(16 << 20):
            hasher.update(chunk)
    return hasher.hexdigest()


class CachedSnapshotStore(Store):
    """A remote snapshot whose listed files are read through a :class:`BlobCache`."""

    read_only = True

    def __init__(self, inner: Store, files: Iterable[FileEntry] | ManifestView, cache: BlobCache) -> None:
        self.inner = inner
        self.cache = cache
        self.location = inner.location
        self.can_list = inner.can_list
        self.max_concurrency = inner.max_concurrency
        self._files = FileTable(files)
        self._local = LocalStore(cache.root)

    def _cached(self, path: str) -> str:
        entry = self._files.get(path)
        if entry is None:
            raise NotFoundError(f"{self.location}: no file {path!r} in this snapshot")
        return self.cache.path_for(entry, self.inner).relative_to(self.cache.root).as_posix()

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        if path not in self._files:
            return self.inner.read(path, start, end)  # the manifest itself: never cached (it may change)
        return self._local.read(self._cached(path), start, end)

    def read_limited(self, path: str, limit: int) -> bytes:
        if path not in self._files:
            return self.inner.read_limited(path, limit)
        return self._local.read_limited(self._cached(path), limit)

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        self._local.read_into(self._cached(path), ranges)

    def iter_chunks(self, path: str, chunk_size: int = 16 << 20) -> Iterator[bytes]:
        return self._local.iter_chunks(self._cached(path), chunk_size)

    def size(self, path: str) -> int:
        if path not in self._files:
            return self.inner.size(path)
        return self._local.size(self._cached(path))

    def exists(self, path: str) -> bool:
        return path in self._files or self.inner.exists(path)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def source(self) -> Store:
        return self.inner.source()


def cache_entries(root: str | os.PathLike[str] | None = None) -> list[tuple[str, str, int, float]]:
    """What a :class:`BlobCache` at ``root`` (default: :func:`default_cache_dir`) holds:
    ``(algorithm, digest, bytes, modified)`` per entry (``modified``: POSIX time the entry was
    written), sorted oldest first. Partial downloads (``.lamina-*``) are not entries."""
    blobs = (Path(root) if root is not None else default_cache_dir()) / "blobs"
    out = []
    if not blobs.is_dir():
        return out
    for algorithm in sorted(p for p in blobs.iterdir() if p.is_dir()):
        for path in algorithm.glob("*/*"):
            if path.name.startswith(".") or not path.is_file():
                continue
            stat = path.stat()
            out.append((algorithm.name, path.name, stat.st_size, stat.st_mtime))
    return sorted(out, key=lambda e: (e[3], e[1]))


def prune_cache(root: str | os.PathLike[str] | None = None, *, older_than: float | None = None,
                max_bytes: int | None = None, dry_run: bool = False) -> tuple[int, int]:
    """Delete cache entries written before ``older_than`` (POSIX time), then the oldest until at
    most ``max_bytes`` remain (both None: every entry), and partial downloads over an hour old.
    Returns ``(files, bytes)`` deleted (or that would be, with ``dry_run``). Entries in use by
    another process are safe to delete: a reader that misses one fetches it again."""
    import time

    base = Path(root) if root is not None else default_cache_dir()
    entries = cache_entries(base)
    doomed = [e for e in entries if older_than is not None and e[3] < older_than]
    if older_than is None and max_bytes is None:
        doomed = list(entries)
    if max_bytes is not None:
        kept = [e for e in entries if e not in doomed]
        total = sum(e[2] for e in kept)
        for e in kept:  # oldest first
            if total <= max_bytes:
                break
            doomed.append(e)
            total -= e[2]
    files = size = 0
    for algorithm, digest, nbytes, _ in doomed:
        if not dry_run:
            (base / "blobs" / algorithm / digest[:2] / digest).unlink(missing_ok=True)
        files, size = files + 1, size + nbytes
    if not dry_run and (base / "blobs").is_dir():
        for tmp in (base / "blobs").glob("*/*/.lamina-*"):
            try:
                if tmp.stat().st_mtime < time.time() - 3600:
                    tmp.unlink()
            except OSError:
                pass
    return files, size
