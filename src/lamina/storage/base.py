"""The Store interface, and the local-directory backend.

A Store is a flat namespace of files under a root, addressed by relative POSIX paths: byte-range
reads, whole-file atomic writes, listing, deletion, and a compare-and-swap of a small object (the
one primitive repositories need to move a ref safely). Every read of a snapshot and every write of
a repository goes through it, so backends (local, fsspec/S3, HTTP) plug in without touching the
reader or the repository logic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from lamina._errors import FormatError, IntegrityError, NotFoundError, StorageError
from lamina.storage.paths import check_relative_path

__all__ = ["Store", "Chunks", "as_chunks", "check_prefix", "coalesce"]

Chunks = bytes | bytearray | memoryview | Iterable[bytes | bytearray | memoryview]


def as_chunks(data: Chunks) -> Iterator[memoryview]:
    """One uniform view of ``write``'s argument: a bytes-like object or an iterable of them."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        yield memoryview(data).cast("B")
        return
    for chunk in data:
        yield memoryview(chunk).cast("B")


def check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a relative path (a trailing ``/`` allowed) that stays inside."""
    if prefix:
        check_relative_path(prefix[:-1] if prefix.endswith("/") else prefix, "prefix")
    return prefix


class Store(ABC):
    """Files under one root, addressed by relative POSIX paths.

    Implementations guarantee: ``write`` is atomic per file (a reader sees the old content or the
    new, never a mix); ``compare_and_swap`` is atomic against every other ``compare_and_swap`` on
    the same path, across processes and machines where the backend allows (see each backend).
    """

    location: str
    read_only: bool = False
    #: whether ``list`` works (HTTP cannot list)
    can_list: bool = True
    #: requests cost a round trip: readers fetch more per request instead of more requests
    remote: bool = False
    #: threads that make sense for concurrent requests to this backend
    max_concurrency: int = 8

    # ------------------------------------------------------------------ reads
    @abstractmethod
    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a file (to its end when ``end`` is None); short at EOF.
        Raises NotFoundError when the file is missing."""

    @abstractmethod
    def size(self, path: str) -> int:
        """File size; raises NotFoundError when the file is missing."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every file whose path starts with ``prefix`` (a directory prefix such as ``"refs/"``, or
        ``""`` for all), as sorted relative POSIX paths."""

    def read_limited(self, path: str, limit: int) -> bytes:
        """The whole file, refused with FormatError when it holds more than ``limit`` bytes (e.g.
        a manifest); never reads more than ``limit + 1`` bytes, however large the file is or grows.
        Backends that learn the size first refuse before reading anything."""
        data = self.read(path, 0, limit + 1)
        if len(data) > limit:
            raise self._too_large(path, None, limit)
        return data

    def _too_large(self, path: str, size: int | None, limit: int) -> FormatError:
        held = "" if size is None else f"{size} bytes, "
        return FormatError(f"{self.location}/{path}: {held}more than the {limit}-byte limit for this file; "
                           f"refusing to read it")

    def read_prefix(self, path: str, length: int) -> tuple[bytes, int]:
        """The first ``length`` bytes (fewer if the file is shorter) and the file's size; backends
        that learn the size from a ranged read do both in one request."""
        return self.read(path, 0, length), self.size(path)

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> int | None:
        """Fill each buffer with the bytes at its start offset; IntegrityError if the file is short.

        Adjacent ranges (sorted by offset, as the reader passes them) are fetched with one request.
        Returns the file's size when the same requests told it (an HTTP ``Content-Range``), else
        None: a caller that needs it then asks ``size``.
        """
        for start, views in coalesce(ranges):
            end = start + sum(len(v) for v in views)
            data = memoryview(self.read(path, start, end))
            if len(data) != end - start:
                raise IntegrityError(f"{path}: truncated (wanted {end - start} bytes at {start}, got {len(data)})",
                                     [(path, "truncated")])
            offset = 0
            for view in views:
                view[:] = data[offset : offset + len(view)]
                offset += len(view)
        return None

    def iter_chunks(self, path: str, chunk_size: int = 16 << 20) -> Iterator[bytes]:
        """A whole file as consecutive chunks (bounded memory for large shards)."""
        size = self.size(path)
        for start in range(0, size, chunk_size):
            data = self.read(path, start, min(size, start + chunk_size))
            if not data:
                raise IntegrityError(f"{path}: truncated at {start} of {size} bytes", [(path, "truncated")])
            yield data

    # ------------------------------------------------------------------ writes
    def _refuse_write(self) -> None:
        raise StorageError(f"{self.location} is read-only; it cannot be written to")

    def write(self, path: str, data: Chunks) -> int:
        """Create or replace a file atomically; returns the bytes written."""
        self._refuse_write()
        return 0

    def delete(self, path: str) -> None:
        """Remove a file; a missing file is not an error."""
        self._refuse_write()

    def compare_and_swap(self, path: str, expected: bytes | None, new: bytes | None) -> bool:
        """Atomically set a small file to ``new`` (None: delete it) if its content is ``expected``
        (None: it does not exist). Returns whether the swap happened."""
        self._refuse_write()
        return False

    def _swap_holding_lock(self, path: str, expected: bytes | None, new: bytes | None) -> bool:
        """compare_and_swap's body, for backends whose lock makes it atomic."""
        try:
            current: bytes | None = self.read(path)
        except NotFoundError:
            current = None
        if current != expected:
            return False
        if new is None:
            self.delete(path)
        else:
            self.write(path, new)
        return True

    def sweep_temporaries(self) -> int:
        """Remove temporary files left by writers that were killed; returns how many."""
        return 0

    def source(self) -> Store:
        """The store holding the authoritative bytes (itself, unless this is a cache in front)."""
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.location}>"


def coalesce(ranges: list[tuple[int, memoryview]]) -> list[tuple[int, list[memoryview]]]:
    """Group ranges that follow each other without a gap into single requests."""
    groups: list[tuple[int, list[memoryview]]] = []
    end = -1
    for start, view in ranges:
        if groups and start == end:
            groups[-1][1].append(view)
        else:
            groups.append((start, [view]))
        end = start + len(view)
    return groups


