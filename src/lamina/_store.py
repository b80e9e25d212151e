"""The Store interface, and the local-directory backend.

A Store is a flat namespace of files under a root, addressed by relative POSIX paths: byte-range
reads, whole-file atomic writes, listing, deletion, and a compare-and-swap of a small object (the
one primitive repositories need to move a ref safely). Every read of a snapshot and every write of
a repository goes through it, so backends (local, fsspec/S3, HTTP) plug in without touching the
reader or the repository logic.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._errors import FormatError, IntegrityError, LaminaError, NotFoundError, StorageError
from ._naming import check_relative_path
from ._parallel import default_workers

__all__ = ["Store", "LocalStore", "Chunks", "as_chunks", "check_prefix", "fsync_path", "open_regular",
           "os_errors_as_storage_errors"]

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

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        """Fill each buffer with the bytes at its start offset; IntegrityError if the file is short.

        Adjacent ranges (sorted by offset, as the reader passes them) are fetched with one request.
        """
        for start, views in _coalesce(ranges):
            end = start + sum(len(v) for v in views)
            data = memoryview(self.read(path, start, end))
            if len(data) != end - start:
                raise IntegrityError(f"{path}: truncated (wanted {end - start} bytes at {start}, got {len(data)})",
                                     [(path, "truncated")])
            offset = 0
            for view in views:
                view[:] = data[offset : offset + len(view)]
                offset += len(view)

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


def _coalesce(ranges: list[tuple[int, memoryview]]) -> list[tuple[int, list[memoryview]]]:
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


@contextmanager
def os_errors_as_storage_errors(action: str) -> Iterator[None]:
    """Turn an OSError raised inside (a full disk, no permission, a vanished directory) into a
    StorageError saying what was being done; lamina errors pass through unchanged."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, LaminaError):
            raise
        hint = " (the disk is full)" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise StorageError(f"{action}: {exc.strerror or exc}{hint}") from None


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(display: object, mode: int) -> FormatError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return FormatError(f"{display}: is {kind}, not a regular file; lamina reads only regular files")


def open_regular(path: str | os.PathLike[str], display: object = None) -> Any:
    """Open a local file for reading, unbuffered, refusing anything but a regular file (a
    symlink to one is fine).

    The open itself never blocks (``O_NONBLOCK``: a FIFO without a writer would block forever) and
    the check is on the opened descriptor, so a file swapped after a check cannot slip through.

    Raises:
        NotFoundError: missing, or a directory.
        FormatError: a FIFO, socket, or device (e.g. a symlink to ``/dev/zero``), naming ``display``.
    """
    display = path if display is None else display
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFoundError(f"{display}: file not found") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device without a driver) cannot be opened
            try:
                raise _not_regular(display, os.stat(path).st_mode) from None
            except OSError:
                pass
        raise StorageError(f"cannot open {display}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise NotFoundError(f"{display}: file not found (a directory is there)")
        if not stat.S_ISREG(mode):
            raise _not_regular(display, mode)
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _read_span(f: Any, start: int, end: int | None) -> bytes:
    """Bytes ``[start, end)`` of an open regular file, never more than it held when opened (so the
    read and its buffer stay bounded by the real size, whatever ``end`` says or the file grows to)."""
    size = os.fstat(f.fileno()).st_size
    stop = size if end is None else min(end, size)
    if stop <= start:
        return b""
    f.seek(start)
    parts = []
    remaining = stop - start
    while remaining:  # one read() returns at most ~2 GiB on Linux
        part = f.read(remaining)
        if not part:  # shrank meanwhile
            break
        parts.append(part)
        remaining -= len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's entry list, for renames and creations)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore(Store):
    """A directory on the local filesystem (the default backend).

    Writes go to a temporary file in the same directory and are renamed into place;
    ``compare_and_swap`` holds an ``flock`` on a lock file under ``.lamina-locks/`` while it compares and
    renames, so it is atomic across processes on one machine (and on filesystems with working
    ``flock``, across machines).
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.max_concurrency = default_workers()
        #: fsync each file before its rename and the directory after, so a power loss cannot
        #: leave a ref naming a revision whose bytes never reached the disk
        self.durable = durable

    def _path(self, path: str) -> Path:
        return self.root / check_relative_path(path)

    def _missing(self, path: str) -> NotFoundError:
        return NotFoundError(f"{self.root / path}: file not found")

    def _open(self, path: str) -> Any:
        return open_regular(self._path(path), self.root / path)

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        with self._open(path) as f:
            return _read_span(f, start, end)

    def read_limited(self, path: str, limit: int) -> bytes:
        with self._open(path) as f:  # the size of what was opened, checked before reading
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise self._too_large(path, size, limit)
            return _read_span(f, 0, limit)

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        # One open per file, readinto straight into the destination: no intermediate bytes object.
        with self._open(path) as f:
            for start, buffer in ranges:
                f.seek(start)
                done = 0
                while done < len(buffer):
                    n = f.readinto(buffer[done:])
                    if not n:
                        raise IntegrityError(f"{path}: truncated (wanted {len(buffer)} bytes at {start}, "
                                             f"got {done})", [(path, "truncated")])
                    done += n

    def size(self, path: str) -> int:
        target = self._path(path)
        try:
            mode_size = target.stat()
        except OSError:
            raise self._missing(path) from None
        if stat.S_ISDIR(mode_size.st_mode):
            raise self._missing(path)
        if not stat.S_ISREG(mode_size.st_mode):
            raise _not_regular(self.root / path, mode_size.st_mode)
        return mode_size.st_size

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".lamina-")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(".lamina-"):
                    continue  # in-flight temporary files
                p = name if rel == "." else f"{rel}/{name}"
                if p.startswith(prefix):
                    out.append(p)
        return sorted(out)

    # ------------------------------------------------------------------ writes
    def _temp_beside(self, target: Path) -> Path:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {target.parent}: {exc.strerror}") from None
        return target.parent / f".lamina-{os.getpid()}-{secrets.token_hex(6)}"

    def write(self, path: str, data: Chunks) -> int:
        target = self._path(path)
        tmp = self._temp_beside(target)
        size = 0
        try:
            with open(tmp, "wb", buffering=0) as f:
                for chunk in as_chunks(data):
                    written = 0
                    while written < len(chunk):
                        written += f.write(chunk[written:])
                    size += len(chunk)
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(tmp, target)
            if self.durable:
                fsync_path(target.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from None
        finally:
            if tmp.exists():
                tmp.unlink()
        return size

    def sweep_temporaries(self) -> int:
        from ._writer import _pid_alive

        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != ".lamina-locks"]
            for name in filenames:
                pid = name.split("-")[1] if name.startswith(".lamina-") and name.count("-") >= 2 else ""
                if pid.isdigit() and not _pid_alive(int(pid)):
                    Path(dirpath, name).unlink(missing_ok=True)
                    removed += 1
        return removed

    def delete(self, path: str) -> None:
        try:
            self._path(path).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"cannot delete {self.root / path}: {exc.strerror}") from None

    @contextmanager
    def _locked(self, path: str) -> Iterator[None]:
        lock = self.root / ".lamina-locks" / check_relative_path(path)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock, "a")
        except OSError as exc:
            raise StorageError(f"cannot lock {self.root / path}: {exc.strerror or exc}") from None
        with f:
            try:
                import fcntl
            except ImportError:  # Windows: msvcrt locking would go here; one process at a time
                yield
                return
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def compare_and_swap(self, path: str, expected: bytes | None, new: bytes | None) -> bool:
        with self._locked(path):
            return self._swap_holding_lock(path, expected, new)
