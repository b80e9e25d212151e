"""Relative POSIX paths inside a snapshot or repository: validation (format spec §2.2)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath

from lamina._errors import UnsafePathError

__all__ = ["check_relative_path", "MAX_COMPONENT_BYTES", "MAX_PATH_BYTES"]

MAX_COMPONENT_BYTES = 255  # NAME_MAX of common filesystems (ext4, APFS, NTFS counts UTF-16 units)


MAX_PATH_BYTES = 1024  # leaves room for the snapshot's own location under PATH_MAX (4096) and URLs


# Components of plain characters not starting with '.': certainly safe (no drive, no '..').
_OBVIOUSLY_SAFE = re.compile(r"[A-Za-z0-9_%~+=,@-][A-Za-z0-9._%~+=,@-]*(?:/[A-Za-z0-9_%~+=,@-][A-Za-z0-9._%~+=,@-]*)*")


def check_relative_path(path: object, where: object = "path") -> str:
    """Validate a snapshot-relative POSIX path and return it unchanged.

    Refuses absolute paths, drive letters, backslashes, empty components, ``.`` and ``..``, a
    component longer than 255 UTF-8 bytes and a path longer than 1024 (spec §2.2): such a path
    could never be opened, and the failure would otherwise surface later as a raw OSError.
    """
    if isinstance(path, str) and _OBVIOUSLY_SAFE.fullmatch(path):
        _check_lengths(path, where)
        return path
    if not isinstance(path, str) or not path:
        raise UnsafePathError(f"{where}: {path!r} is not a non-empty relative path")
    if "\\" in path or "\x00" in path or PureWindowsPath(path).drive or path.startswith("/"):
        raise UnsafePathError(f"{where}: {path!r} is absolute or uses '\\'; use a relative POSIX path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafePathError(f"{where}: {path!r} has an empty, '.' or '..' component")
    _check_lengths(path, where)
    return str(PurePosixPath(path))


def _check_lengths(path: str, where: object) -> None:
    if len(path) <= MAX_COMPONENT_BYTES // 4:  # fast path: no UTF-8 encoding can exceed the bounds
        return
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        raise UnsafePathError(f"{where}: {path[:80]!r}... is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise UnsafePathError(f"{where}: a path of {len(encoded)} bytes (longer than {MAX_PATH_BYTES}): "
                              f"{path[:80]!r}...")
    longest = max(path.split("/"), key=lambda part: len(part.encode("utf-8")))
    if len(longest.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafePathError(f"{where}: the path component {longest[:80]!r}... is "
                              f"{len(longest.encode('utf-8'))} bytes (longer than {MAX_COMPONENT_BYTES})")


