"""Digests of the format: per-tensor checksums (1.2, spec §4.4) and per-file content addresses
(sha256 up to 1.2, ``lt1`` from 1.3, spec §4.8).

Per-tensor checksums: XXH3-128 of a tensor's bytes, checked on every read.

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

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import blake3
import xxhash

__all__ = ["tensor_digest", "FileTensorDigests", "Lt1", "LT1_LEAF", "file_hasher", "DIGESTS"]

LT1_LEAF = 1 << 16  # bytes per leaf
_LT1_CONTEXT = "lamina 2026-12 lt1 file digest v1"
DIGESTS = ("sha256", "lt1")  # content-address algorithms, as named in blob paths and manifests


class FileHasher(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...


class Lt1:
    """The ``lt1`` digest of a file (spec §4.8), fed its bytes in order, in pieces of any size: a
    BLAKE3 hash list over 64 KiB leaves. Unlike one hash over the file, pieces written by
    different processes can be hashed where they are written and combined (each whole leaf's
    digest is final on its own), which a distributed save needs.

    Example:
        >>> h = Lt1(); h.update(b"abc"); h.hexdigest()[:16]
        '2ce15924c4b54e23'
    """

    def __init__(self) -> None:
        self._leaves: list[bytes] = []
        self._partial = bytearray()
        self._size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._size += len(view)
        if self._partial:
            take = min(LT1_LEAF - len(self._partial), len(view))
            self._partial += view[:take]
            view = view[take:]
            if len(self._partial) < LT1_LEAF:
                return
            self._leaves.append(blake3.blake3(self._partial).digest())
            self._partial = bytearray()
        whole = len(view) - len(view) % LT1_LEAF
        for start in range(0, whole, LT1_LEAF):
            self._leaves.append(blake3.blake3(view[start : start + LT1_LEAF]).digest())
        self._partial += view[whole:]

    def hexdigest(self) -> str:
        leaves = self._leaves + ([blake3.blake3(self._partial).digest()] if self._partial else [])
        root = blake3.blake3(derive_key_context=_LT1_CONTEXT)
        root.update(self._size.to_bytes(8, "little"))
        for leaf in leaves:
            root.update(leaf)
        return root.hexdigest()


def file_hasher(algorithm: str) -> FileHasher:
    """A streaming hasher for a content-address algorithm of :data:`DIGESTS`."""
    if algorithm == "lt1":
        return Lt1()
    if algorithm == "sha256":
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


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
