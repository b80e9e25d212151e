"""The local-directory Store, and reading local files safely (regular files only, bounded reads)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lamina._errors import (
    FormatError,
    IntegrityError,
    LaminaError,
    NotFoundError,
    StorageError,
)
from lamina._parallel import default_workers
from lamina.storage.base import Chunks, Store, as_chunks, check_prefix
from lamina.storage.paths import check_relative_path

__all__ = ["LocalStore", "open_regular", "os_errors_as_storage_errors", "fsync_path", "pid_alive", "missing_folders",
           "remove_folders"]


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


def missing_folders(directory: Path) -> list[Path]:
    """``directory`` and its ancestors that do not exist yet, innermost first (what a write is about
    to create, so that a failed write can remove them with :func:`remove_folders`)."""
    return [p for p in [directory, *directory.parents] if not p.exists()]


def remove_folders(created: list[Path]) -> None:
    """Remove folders a failed write created, innermost first, stopping at the first that is not
    empty (someone else put something there meanwhile)."""
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


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

    def read_prefix(self, path: str, length: int) -> tuple[bytes, int]:
        with self._open(path) as f:  # one open; the size is that of the file read
            return _read_span(f, 0, length), os.fstat(f.fileno()).st_size

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
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if d != ".lamina-locks"]
            for name in filenames:
                pid = name.split("-")[1] if name.startswith(".lamina-") and name.count("-") >= 2 else ""
                if pid.isdigit() and not pid_alive(int(pid)):
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


