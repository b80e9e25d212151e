"""Safetensors shards: the deterministic layout lamina writes, and a strict header parser.

Layout (format_spec/spec.md, "Shards"): tensors ordered by dtype size descending, then by name
(UTF-8 bytes); header JSON compact, ``__metadata__`` first, padded with spaces to a multiple of 8.
This is byte-for-byte what ``safetensors.serialize`` produces for the same tensors and metadata.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from lamina._errors import FormatError
from lamina.format.dtypes import DTYPES, check_shape_bounds, dtype_info

__all__ = ["ShardEntry", "plan_shard", "parse_header", "read_header", "SHARD_METADATA", "MAX_HEADER_BYTES"]

SHARD_METADATA: Mapping[str, str] = {"format": "pt"}  # what Hugging Face loaders check
MAX_HEADER_BYTES = 100_000_000  # the safetensors reference limit


@dataclass(frozen=True)
class ShardEntry:
    """One tensor of a shard; ``begin``/``end`` are absolute byte offsets in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _nbytes(dtype: str, shape: Sequence[int]) -> int:
    return math.prod(shape) * dtype_info(dtype).itemsize


def plan_shard(
    tensors: Sequence[tuple[str, str, Sequence[int]]],
    metadata: Mapping[str, str] = SHARD_METADATA,
) -> tuple[bytes, list[ShardEntry]]:
    """Lay out a shard: the full header bytes (length prefix included) and entries in file order.

    ``tensors`` holds ``(name, dtype code, shape)``; names must be unique.
    """
    order = sorted(tensors, key=lambda t: (-dtype_info(t[1]).itemsize, t[0].encode("utf-8")))
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    relative = []
    offset = 0
    for name, dtype, shape in order:
        if name in header:
            raise FormatError(f"duplicate tensor name {name!r} in one shard")
        size = _nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        relative.append((name, dtype, tuple(shape), offset, offset + size))
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    entries = [ShardEntry(n, d, s, start + b, start + e) for n, d, s, b, e in relative]
    return struct.pack("<Q", len(text)) + text, entries


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate key {key!r} in safetensors header")
        out[key] = value
    return out


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_header(raw: bytes, file_size: int, where: str) -> tuple[dict[str, str], dict[str, ShardEntry]]:
    """Parse and validate a safetensors header.

    Args:
        raw: the file's first bytes, at least ``8 + header length`` of them.
        file_size: the file's size, to check that the buffer is covered exactly.
        where: the file's name, for messages.

    Returns:
        ``(metadata, entries by name)`` with absolute offsets.

    Raises:
        FormatError: on any deviation from the safetensors format (holes, overlaps, duplicate
            keys, unknown dtypes, sizes that disagree with shapes, oversized headers, truncation).
    """
    if len(raw) < 8 or file_size < 8:
        raise FormatError(f"{where}: truncated safetensors file (no 8-byte header length)")
    (length,) = struct.unpack("<Q", raw[:8])
    if length > MAX_HEADER_BYTES:
        raise FormatError(f"{where}: safetensors header claims {length} bytes (limit {MAX_HEADER_BYTES})")
    if 8 + length > file_size:
        raise FormatError(f"{where}: safetensors header claims {length} bytes but the file has {file_size}")
    if len(raw) < 8 + length:
        raise FormatError(f"{where}: truncated safetensors header")
    text = raw[8 : 8 + length]
    if not text.startswith(b"{"):
        raise FormatError(f"{where}: safetensors header does not start with '{{'")
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{where}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise FormatError(f"{where}: __metadata__ must map strings to strings")
    start = 8 + length
    entries: dict[str, ShardEntry] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: tensor {name!r} needs exactly dtype, shape and data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise FormatError(f"{where}: tensor {name!r} has unsupported dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_int(d) for d in shape):
            raise FormatError(f"{where}: tensor {name!r} has an invalid shape {shape!r}")
        check_shape_bounds(dtype, shape, f"{where}: tensor {name!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)):
            raise FormatError(f"{where}: tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if end - begin != _nbytes(dtype, shape):
            raise FormatError(
                f"{where}: tensor {name!r} spans {end - begin} bytes but {dtype}{shape} needs "
                f"{_nbytes(dtype, shape)}"
            )
        entries[name] = ShardEntry(name, dtype, tuple(shape), start + begin, start + end)
    cursor = start
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin != cursor:
            kind = "overlaps" if entry.begin < cursor else "leaves a hole before"
            raise FormatError(f"{where}: tensor {entry.name!r} {kind} the previous tensor's data")
        cursor = entry.end
    if cursor != file_size:
        raise FormatError(
            f"{where}: tensor data ends at byte {cursor} but the file has {file_size} bytes "
            f"({'truncated' if cursor > file_size else 'trailing bytes'})"
        )
    return metadata, entries


def read_header(
    read: Callable[[int, int], bytes], file_size: int, where: str
) -> tuple[dict[str, str], dict[str, ShardEntry]]:
    """Read (two bounded reads) and parse a shard header; ``read(start, end)`` returns bytes."""
    prefix = read(0, min(8, file_size))
    if len(prefix) < 8:
        raise FormatError(f"{where}: truncated safetensors file (no 8-byte header length)")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES or 8 + length > file_size:
        return parse_header(prefix, file_size, where)  # raises with the precise reason
    return parse_header(prefix + read(8, 8 + length), file_size, where)
