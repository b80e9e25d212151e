"""The read side of the Store interface, and the local-directory backend.

A reader needs only byte ranges, sizes and listings; every Artifact read goes through these, so
remote backends (issue 4) plug in without touching the reader.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

from ._errors import IntegrityError, NotFoundError
from ._naming import check_relative_path

__all__ = ["Store", "LocalStore"]


class Store(ABC):
    """Byte-range access to the files of one snapshot, addressed by relative POSIX paths."""

    location: str

    @abstractmethod
    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of a file (to its end when ``end`` is None); may be short at EOF."""

    @abstractmethod
    def size(self, path: str) -> int:
        """File size; raises NotFoundError when the file is missing."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def list(self) -> list[str]:
        """Every file below the root, as relative POSIX paths."""

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        """Fill each buffer with the bytes at its start offset; IntegrityError if the file is short."""
        for start, buffer in ranges:
            data = self.read(path, start, start + len(buffer))
            if len(data) != len(buffer):
                raise IntegrityError(f"{path}: truncated (wanted {len(buffer)} bytes at {start}, got {len(data)})",
                                     [(path, "truncated")])
            buffer[:] = data


class LocalStore(Store):
    """A snapshot directory on the local filesystem."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, path: str) -> Path:
        return self.root / check_relative_path(path)

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            with open(self._path(path), "rb") as f:
                f.seek(start)
                return f.read(-1 if end is None else max(0, end - start))
        except FileNotFoundError:
            raise NotFoundError(f"{self.root / path}: file not found") from None

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        # One open per file, readinto straight into the destination: no intermediate bytes object.
        try:
            f = open(self._path(path), "rb", buffering=0)
        except FileNotFoundError:
            raise NotFoundError(f"{self.root / path}: file not found") from None
        with f:
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
        try:
            return self._path(path).stat().st_size
        except FileNotFoundError:
            raise NotFoundError(f"{self.root / path}: file not found") from None

    def exists(self, path: str) -> bool:
        return self._path(path).is_file()

    def list(self) -> list[str]:
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
