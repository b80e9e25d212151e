"""Per-tensor checksums (format 1.2, spec §4.4): XXH3-128 of a tensor's bytes, checked on every read.

XXH3 runs at memory speed (about 8 GB/s on one core here, against 1.4 GB/s for sha256), so a
reader can check every tensor it returns — a byte flipped on disk, in a cache or in transit is
an :class:`IntegrityError` instead of a wrong tensor. It is a checksum, not a cryptographic
digest: the manifest's per-file sha256 (and ``verify()``) remain the proof against deliberate
tampering that targets XXH3.

Example:
    >>> tensor_digest(b"abc")
    '06b05ab6733a618578af5f94892f3950'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import xxhash

__all__ = ["tensor_digest", "FileTensorDigests"]


def tensor_digest(data: bytes | bytearray | memoryview) -> str:
    """Lowercase hex XXH3-128 (seed 0, canonical big-endian form) of ``data``."""
    return xxhash.xxh3_128_hexdigest(data)


class FileTensorDigests:
    """XXH3-128 of each tensor of one file, fed the file's chunks in order, so a whole-file check
    (sha256) covers the per-tensor checksums in the same pass. ``entries`` have ``name``,
    ``begin``, ``end`` and ``xxh3`` (None: not checked)."""

    def __init__(self, entries: Sequence[Any]) -> None:
        self._entries = sorted((e for e in entries if e.xxh3 is not None), key=lambda e: e.begin)
        self._hashers = [xxhash.xxh3_128() for _ in self._entries]
        self._pos = 0

    def update(self, chunk: bytes | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        start, end = self._pos, self._pos + len(view)
        for entry, hasher in zip(self._entries, self._hashers):
            lo, hi = max(entry.begin, start), min(entry.end, end)
            if lo < hi:
                hasher.update(view[lo - start : hi - start])
        self._pos = end

    def mismatches(self) -> list[str]:
        return [e.name for e, h in zip(self._entries, self._hashers) if h.hexdigest() != e.xxh3]
