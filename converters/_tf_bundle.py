"""TensorFlow's checkpoint index (``<prefix>.index``), read in Python before TensorFlow reads it.

A TF checkpoint is a *tensor bundle*: ``<prefix>.index``, an SSTable (LevelDB's table format)
mapping each variable name to a ``BundleEntryProto`` (dtype, shape, data shard, offset, size,
crc32c), plus ``<prefix>.data-NNNNN-of-MMMMM`` files holding the raw bytes. TensorFlow's C++
reader trusts the index: it allocates the declared shape before reading, and a string's declared
length before checking it against anything. So lamina parses the index itself first (this module,
no TensorFlow import), checks every entry against the real files, and only then lets TensorFlow
read a variable whose bytes are known to be there.

Layout, from ``tensorflow/core/lib/io/table_format.txt`` and ``tensor_bundle.proto``: the file
ends with a 48-byte footer (two block handles, padding, the magic ``0xdb4775248b80fb57``); a block
is its entries, a restart array, a one-byte compression type and a 4-byte crc; an entry is
``varint shared, varint non_shared, varint value_length, key delta, value``. Key ``""`` holds the
``BundleHeaderProto`` (number of shards, endianness); a partitioned variable's slices have keys
starting with ``\\x00``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lamina._errors import FormatError, IntegrityError, NotFoundError
from lamina.storage.local import open_regular

__all__ = ["MAGIC", "Entry", "Bundle", "DTYPE_CODES", "has_table_magic", "read_bundle", "check_string_scalar"]

MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_MAX_INDEX = 1 << 30  # an index describes tensors, it does not hold them: 1 GiB is millions of variables

#: TensorFlow DataType enum -> lamina dtype code (tensorflow/core/framework/types.proto)
DTYPE_CODES = {1: "F32", 2: "F64", 3: "I32", 4: "U8", 5: "I16", 6: "I8", 8: "C64", 9: "I64", 10: "BOOL",
               14: "BF16", 17: "U16", 19: "F16", 22: "U32", 23: "U64", 24: "F8_E5M2", 25: "F8_E4M3",
               26: "F8_E4M3FNUZ", 28: "F8_E5M2FNUZ"}
_ITEMSIZE = {"F32": 4, "F64": 8, "I32": 4, "U8": 1, "I16": 2, "I8": 1, "C64": 8, "I64": 8, "BOOL": 1,
             "BF16": 2, "U16": 2, "F16": 2, "U32": 4, "U64": 8, "F8_E5M2": 1, "F8_E4M3": 1,
             "F8_E4M3FNUZ": 1, "F8_E5M2FNUZ": 1}
DT_STRING = 7
_NAMED = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16", 18: "complex128",
          20: "resource", 21: "variant", 27: "float8_e4m3b11fnuz", 29: "int4", 30: "uint4"}


def dtype_name(enum: int) -> str:
    """A readable name for a TF DataType enum (for messages)."""
    return _NAMED.get(enum, DTYPE_CODES.get(enum, f"DataType {enum}"))


@dataclass(frozen=True)
class Entry:
    """One ``BundleEntryProto``: where a variable's bytes are and what they are."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    sliced: bool  # a partitioned variable: its bytes are in the slice entries


@dataclass(frozen=True)
class Bundle:
    """A parsed index: variables by name, slice entries, and the data shards with their sizes."""

    prefix: Path
    entries: dict[str, Entry]
    slices: list[Entry]
    shards: list[tuple[Path, int]]

    @property
    def data_size(self) -> int:
        return sum(size for _, size in self.shards)


# ---------------------------------------------------------------------------- protobuf wire format
def _varint(buf: bytes, pos: int, end: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise FormatError(f"{where}: truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, where: str) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message; varints as ints, length-delimited as bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end, where)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end, where)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end, where)
            if pos + length > end:
                raise FormatError(f"{where}: a field runs past its message")
            yield number, buf[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise FormatError(f"{where}: truncated fixed-width field")
            yield number, int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        else:
            raise FormatError(f"{where}: protobuf wire type {wire} is not valid here")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(buf: bytes, where: str) -> tuple[int, ...]:
    dims = []
    for number, value in _fields(buf, where):
        if number == 2 and isinstance(value, bytes):  # Dim {int64 size = 1; string name = 2}
            size = next((_signed(v) for n, v in _fields(value, where) if n == 1 and isinstance(v, int)), 0)
            if size < 0:
                raise FormatError(f"{where}: dimension {size} (an unknown dimension has no bytes to read)")
            dims.append(size)
        elif number == 3 and value:
            raise FormatError(f"{where}: a shape of unknown rank")
    return tuple(dims)


def _entry(buf: bytes, where: str) -> Entry:
    fields: dict[int, int | bytes] = {}
    sliced = False
    for number, value in _fields(buf, where):
        if number == 7:
            sliced = True
        else:
            fields[number] = value
    shape = fields.get(2, b"")
    ints = {n: fields.get(n, 0) for n in (1, 3, 4, 5)}
    if not isinstance(shape, bytes) or not all(isinstance(v, int) for v in ints.values()):
        raise FormatError(f"{where}: malformed BundleEntryProto")
    return Entry(int(ints[1]), _shape(shape, where), _signed(int(ints[3])), _signed(int(ints[4])),
                 _signed(int(ints[5])), sliced)


# ------------------------------------------------------------------------------------ SSTable
def has_table_magic(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file ending with TensorFlow's table footer magic."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size < _FOOTER:
                return False
            f.seek(size - 8)
            return struct.unpack("<Q", f.read(8))[0] == MAGIC
    except (OSError, FormatError, NotFoundError):
        return False


def _block(data: bytes, handle: bytes, where: str) -> bytes:
    offset, pos = _varint(handle, 0, len(handle), where)
    size, _ = _varint(handle, pos, len(handle), where)
    if offset + size + 5 > len(data) - _FOOTER:
        raise FormatError(f"{where}: a block handle points past the end of the index (truncated file?)")
    if data[offset + size] != 0:
        raise FormatError(f"{where}: compressed index blocks (type {data[offset + size]}) are not supported")
    return data[offset:offset + size]


def _block_entries(block: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise FormatError(f"{where}: a block too short for its restart count")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise FormatError(f"{where}: a block's restart array is larger than the block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, limit, where)
        own, pos = _varint(block, pos, limit, where)
        length, pos = _varint(block, pos, limit, where)
        if shared > len(key) or pos + own + length > limit:
            raise FormatError(f"{where}: a block entry runs past its block")
        key = key[:shared] + block[pos:pos + own]
        pos += own
        yield key, block[pos:pos + length]
        pos += length


def _table(data: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != MAGIC:
        raise FormatError(f"{where}: not a TensorFlow checkpoint index (no table magic at its end; truncated?)")
    footer = data[len(data) - _FOOTER:len(data) - 8]
    _, pos = _varint(footer, 0, len(footer), where)  # the metaindex handle (empty in checkpoints)
    _, pos = _varint(footer, pos, len(footer), where)
    index = _block(data, footer[pos:], where)
    previous = None
    for _, handle in _block_entries(index, where):
        for key, value in _block_entries(_block(data, handle, where), where):
            if previous is not None and key <= previous:
                raise FormatError(f"{where}: index keys out of order or repeated near {key[:64]!r}")
            previous = key
            yield key, value


# ------------------------------------------------------------------------------------ bundle
def _shards(prefix: Path, count: int, where: str) -> list[tuple[Path, int]]:
    if not 0 < count <= 1 << 16:
        raise FormatError(f"{where}: the header declares {count} data shards")
    shards = []
    for i in range(count):
        path = Path(f"{prefix}.data-{i:05d}-of-{count:05d}")
        try:
            with open_regular(path) as f:  # a FIFO or a link to /dev/zero is refused, not read
                shards.append((path, os.fstat(f.fileno()).st_size))
        except NotFoundError:
            raise NotFoundError(f"{path}: data shard {i} of {count} of checkpoint {prefix} is missing") from None
    return shards


def _check(name: str, entry: Entry, shards: list[tuple[Path, int]], where: str) -> None:
    """Refuse an entry whose bytes the data files cannot hold (before TensorFlow allocates it)."""
    if not 0 <= entry.shard < len(shards):
        raise FormatError(f"{where}: variable {name!r} names data shard {entry.shard} of {len(shards)}")
    path, size = shards[entry.shard]
    if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > size:
        raise IntegrityError(f"{path}: variable {name!r} needs bytes {entry.offset}..{entry.offset + entry.size} "
                             f"but the file has {size} (truncated?)", [(str(path), "truncated")])
    if entry.dtype != DT_STRING:
        need = math.prod(entry.shape) * _ITEMSIZE[DTYPE_CODES[entry.dtype]]
        if need != entry.size:
            raise FormatError(f"{where}: variable {name!r} declares {dtype_name(entry.dtype)}{list(entry.shape)} "
                              f"({need} bytes) but the index gives it {entry.size} bytes")


def read_bundle(prefix: str | os.PathLike[str], allow_strings: frozenset[str] = frozenset()) -> Bundle:
    """Parse ``<prefix>.index`` and check every entry against the data shards.

    Only the dtypes lamina stores are accepted; a string variable is accepted only if its name is
    in ``allow_strings`` (the object graph), and only as a scalar. Every variable must fit in its
    shard and all of them together in the data files, so no later read allocates more than the
    input's real size.

    Example:
        >>> read_bundle("ckpt/ckpt-1").entries["w/.ATTRIBUTES/VARIABLE_VALUE"].shape  # doctest: +SKIP
        (3, 2)
    """
    prefix = Path(prefix)
    where = f"{prefix}.index"
    with open_regular(where) as f:
        size = os.fstat(f.fileno()).st_size
        if size > _MAX_INDEX:
            raise FormatError(f"{where}: {size} bytes; a checkpoint index over {_MAX_INDEX} bytes is refused")
        chunks, left = [], size  # an unbuffered read may return less than asked
        while left > 0 and (chunk := f.read(left)):
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
    seen_header = False
    entries: dict[str, Entry] = {}
    slices: list[Entry] = []
    num_shards = 1
    for key, value in _table(data, where):
        if key == b"":
            fields = dict(_fields(value, where))
            num_shards = int(fields.get(1, 0)) if isinstance(fields.get(1, 0), int) else -1
            if fields.get(2, 0) != 0:  # endianness: TF byte-swaps on read, but lamina did not test that path
                raise FormatError(f"{where}: a big-endian checkpoint; re-save it on a little-endian machine")
            seen_header = True
            continue
        if key.startswith(b"\x00"):  # a slice of a partitioned variable (its key is an encoded slice)
            slices.append(_entry(value, f"{where}: a variable slice"))
            continue
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{where}: a variable name that is not UTF-8: {key[:64]!r}") from None
        entry = _entry(value, f"{where}: variable {name!r}")
        if entry.dtype not in DTYPE_CODES and not (entry.dtype == DT_STRING and name in allow_strings):
            raise FormatError(f"{where}: variable {name!r} is a {dtype_name(entry.dtype)} tensor; lamina stores "
                              f"numeric tensors only ({', '.join(DTYPE_CODES.values())})")
        if entry.dtype == DT_STRING and (entry.shape or entry.sliced):
            raise FormatError(f"{where}: variable {name!r} must be a scalar string")
        entries[name] = entry
    if not seen_header:
        raise FormatError(f"{where}: no bundle header; not a TensorFlow checkpoint index")
    shards = _shards(prefix, num_shards, where)
    bundle = Bundle(prefix, entries, slices, shards)
    for name, entry in entries.items():
        if not entry.sliced:
            _check(name, entry, shards, where)
    for entry in slices:
        if entry.dtype not in DTYPE_CODES:
            raise FormatError(f"{where}: a variable slice of dtype {dtype_name(entry.dtype)}")
        _check("(a slice of a partitioned variable)", entry, shards, where)
    declared = sum(math.prod(e.shape) * _ITEMSIZE[DTYPE_CODES[e.dtype]] for e in entries.values()
                   if e.dtype != DT_STRING)
    if declared > bundle.data_size:
        raise IntegrityError(f"{where}: the variables need {declared} bytes but the data files hold "
                             f"{bundle.data_size}", [(str(p), "too small") for p, _ in shards])
    return bundle


def check_string_scalar(bundle: Bundle, name: str) -> None:
    """Refuse a scalar string whose stored length exceeds its entry (TensorFlow would allocate the
    stored length before noticing). Layout: varint length, 4-byte crc32c of it, the bytes."""
    entry = bundle.entries[name]
    path, _ = bundle.shards[entry.shard]
    with open_regular(path) as f:
        f.seek(entry.offset)
        head = f.read(min(entry.size, 10))
    length, used = _varint(head, 0, len(head), f"{path}: variable {name!r}")
    if used + 4 + length != entry.size:
        raise IntegrityError(f"{path}: variable {name!r} claims a {length}-byte string in a {entry.size}-byte entry",
                             [(str(path), "string length")])
