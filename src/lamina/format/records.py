"""Format 1.3 layer records (spec §4.9): the tensor index as one msgpack record per layer, found
through a hash-sorted index and decoded, with its validation, on first use. Opening a snapshot
and reading one layer then cost the same whatever the model's size; calls that need every
tensor decode every record once, and check what spans records (unique names, alias targets).
"""

from __future__ import annotations

import sys
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import msgpack
import xxhash

from lamina._errors import FormatError
from lamina.format._validate import (
    _alias,
    _file,
    _scalar,
    _tensor,
    _unique,
    _Where,
)
from lamina.format.manifest import (
    Alias,
    FileEntry,
    Manifest,
    ParamState,
    TensorEntry,
)
from lamina.format.naming import default_layer

__all__ = ["RECORDS_FEATURE", "LayerRecord", "LayerRecords", "group_records", "records_wire", "flat_wire",
           "layer_hash"]

RECORDS_FEATURE = "records-v1"


def layer_hash(name: str) -> int:
    """The index key of a layer: XXH3-64 (seed 0) of its name's UTF-8 bytes."""
    return xxhash.xxh3_64_intdigest(name.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class LayerRecord:
    """Everything the manifest says about one layer: its shard files, weight tensors (with their
    positions in the manifest's source order), aliases, and the optimizer state of its parameters."""

    name: str
    files: tuple[FileEntry, ...]
    tensors: tuple[TensorEntry, ...] = ()
    aliases: tuple[Alias, ...] = ()
    state: tuple[ParamState, ...] = ()
    order: tuple[int, ...] = ()
    alias_order: tuple[int, ...] = ()

    def find(self, name: str) -> TensorEntry | Alias | None:
        """The stored tensor or alias ``name`` of this layer, if it has one."""
        for t in self.tensors:
            if t.name == name:
                return t
        for a in self.aliases:
            if a.name == name:
                return a
        return None


# --------------------------------------------------------------------------------- grouping
def _state_layer(s: ParamState, layer_of: dict[str, str]) -> str:
    for t in s.tensors.values():
        return t.layer
    return layer_of.get(s.param, default_layer(s.param))


def group_records(m: Manifest) -> list[LayerRecord]:
    """The manifest by layer: layers in first-appearance order (``m.layers``), then layers that
    hold only optimizer state. Works for any 1.x manifest (a layer may span several files)."""
    by_name = {f.path: f for f in m.files}
    parts: dict[str, dict[str, list[Any]]] = {}

    def part(layer: str) -> dict[str, list[Any]]:
        if layer not in parts:
            parts[layer] = {"files": [], "tensors": [], "aliases": [], "state": [], "order": [], "alias_order": []}
        return parts[layer]

    def add_file(p: dict[str, list[Any]], path: str) -> None:
        if path in by_name and all(f.path != path for f in p["files"]):
            p["files"].append(by_name[path])

    for i, t in enumerate(m.tensors):
        p = part(t.layer)
        p["tensors"].append(t)
        p["order"].append(i)
        add_file(p, t.file)
    for i, a in enumerate(m.aliases):
        p = part(a.layer)
        p["aliases"].append(a)
        p["alias_order"].append(i)
    if m.optimizer is not None:
        layer_of = {t.name: t.layer for t in m.tensors} | {a.name: a.layer for a in m.aliases}
        for s in m.optimizer.state:
            p = part(_state_layer(s, layer_of))
            p["state"].append(s)
            for t in s.tensors.values():
                add_file(p, t.file)
    return [LayerRecord(name, **{k: tuple(v) for k, v in p.items()}) for name, p in parts.items()]


# --------------------------------------------------------------------------------- encoding
def _tensor_fields(t: Any) -> list[Any]:
    offsets = t.get("offsets") if isinstance(t, dict) else None
    begin, end = offsets if isinstance(offsets, list) and len(offsets) == 2 else (offsets, None)
    get = t.get if isinstance(t, dict) else (lambda k: None)
    return [get("name"), get("dtype"), get("shape"), begin, end, get("xxh3")]


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _items(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def records_wire(flat: dict[str, Any]) -> dict[str, Any]:
    """The 1.3 wire map of a manifest given in the flat layout of 1.0-1.2 (top-level ``tensors``,
    ``aliases``, ``optimizer.state`` and every file in ``files``): tensors, aliases, optimizer state
    and shard files move into one record per layer (layers in first-appearance order, then layers
    holding only optimizer state), and the index is built. Nothing is validated here (the writer
    validated its Manifest; tools and tests may encode malformed manifests on purpose)."""
    files = {repr(f.get("path")): f for f in _items(flat.get("files")) if isinstance(f, dict)}
    parts: dict[Any, dict[str, Any]] = {}

    def part(layer: Any) -> dict[str, Any]:
        key = layer if isinstance(layer, str) else repr(layer)  # malformed input may not be hashable
        return parts.setdefault(key, {"name": layer, "weights": None, "optimizer": None, "tensors": [],
                                      "aliases": [], "state": []})

    layer_of: dict[str, Any] = {}
    for i, t in enumerate(_items(flat.get("tensors"))):
        p = part(_dict(t).get("layer"))
        p["tensors"].append([*_tensor_fields(t), i])
        p["weights"] = p["weights"] or _dict(t).get("file")
        layer_of[repr(_dict(t).get("name"))] = _dict(t).get("layer")
    for i, a in enumerate(_items(flat.get("aliases"))):
        a = _dict(a)
        part(a.get("layer"))["aliases"].append([a.get("name"), a.get("target"), i])
        layer_of[repr(a.get("name"))] = a.get("layer")
    optimizer = flat.get("optimizer")
    for s in _items(_dict(optimizer).get("state")):
        s = _dict(s)
        param, slots = s.get("param"), _dict(s.get("tensors"))
        first = next(iter(slots.values()), None)
        layer = _dict(first).get("layer") if first is not None else layer_of.get(
            repr(param), default_layer(param) if isinstance(param, str) else param)
        p = part(layer)
        p["state"].append([param, {k: _tensor_fields(t) for k, t in slots.items()},
                           {k: [_dict(v).get("value"), _dict(v).get("dtype")] for k, v in _dict(s.get("scalars")).items()}])
        p["optimizer"] = p["optimizer"] or _dict(first).get("file")

    def file_wire(path: Any) -> list[Any] | None:
        if path is None:
            return None
        moved.add(repr(path))
        f = files.get(repr(path), {"size": 0, "lt1": "0" * 64})  # a tensor naming an unlisted file
        return [path, f.get("size"), f.get("lt1")]

    moved: set[str] = set()
    blobs, keys, offset = [], [], 0
    for p in parts.values():
        layer = p["name"]
        blob = msgpack.packb([layer, file_wire(p["weights"]), file_wire(p["optimizer"]), p["tensors"], p["aliases"],
                              p["state"]], use_bin_type=True)
        keys.append((layer_hash(layer) if isinstance(layer, str) else 0, offset, len(blob)))
        blobs.append(blob)
        offset += len(blob)
    if offset >= 1 << 32:
        raise FormatError(f"the layer records take {offset} bytes; format 1.3 indexes at most 4 GiB")
    keys.sort()
    wire = {k: v for k, v in flat.items() if k not in ("tensors", "aliases", "optimizer", "files", "checksum")}
    wire["layer_count"] = len(parts)
    wire["layer_hashes"] = b"".join(h.to_bytes(8, "little") for h, _, _ in keys)
    wire["layer_spans"] = b"".join(o.to_bytes(4, "little") + n.to_bytes(4, "little") for _, o, n in keys)
    wire["layer_records"] = b"".join(blobs)
    wire["optimizer"] = {k: v for k, v in optimizer.items() if k != "state"} if isinstance(optimizer, dict) else optimizer
    wire["files"] = [f for f in _items(flat.get("files")) if not (isinstance(f, dict) and repr(f.get("path")) in moved)]
    return wire


def flat_wire(wire: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`records_wire`, for tools and tests: a 1.3 wire map in the flat
    layout (files in record order), decoding the records without validating them; FormatError if
    the index or a record is not even msgpack of the right shape."""
    records = []
    spans = wire.get("layer_spans", b"")
    blob = wire.get("layer_records", b"")
    for row in sorted(range(len(spans) // 8), key=lambda r: int.from_bytes(spans[8 * r : 8 * r + 4], "little")):
        offset = int.from_bytes(spans[8 * row : 8 * row + 4], "little")
        length = int.from_bytes(spans[8 * row + 4 : 8 * row + 8], "little")
        try:
            records.append(msgpack.unpackb(blob[offset : offset + length], raw=False))
        except Exception as exc:  # msgpack raises many types
            raise FormatError(f"layer record {row} is not msgpack ({type(exc).__name__})") from None
    tensors: list[tuple[int, dict[str, Any]]] = []
    aliases: list[tuple[int, dict[str, Any]]] = []
    states, files = [], []

    def tensor(fields: list[Any], layer: Any, file: Any) -> dict[str, Any]:
        name, dtype, shape, begin, end, xxh3 = fields[:6]
        return {"name": name, "layer": layer, "file": file[0] if file else None, "dtype": dtype, "shape": shape,
                "offsets": [begin, end], "xxh3": xxh3}

    for layer, weights, optimizer, ts, al, st in records:
        tensors += [(t[6], tensor(t, layer, weights)) for t in ts]
        aliases += [(a[2], {"name": a[0], "layer": layer, "target": a[1]}) for a in al]
        states += [{"param": p, "tensors": {k: tensor(t, layer, optimizer) for k, t in slots.items()},
                    "scalars": {k: {"value": v, "dtype": d} for k, (v, d) in scalars.items()}} for p, slots, scalars in st]
        files += [{"path": f[0], "size": f[1], "lt1": f[2], "role": role}
                  for f, role in ((weights, "weights"), (optimizer, "optimizer")) if f]
    flat = {k: v for k, v in wire.items() if not k.startswith("layer_") and k not in ("optimizer", "files")}
    flat["tensors"] = [t for _, t in sorted(tensors, key=lambda x: x[0])]
    flat["aliases"] = [a for _, a in sorted(aliases, key=lambda x: x[0])]
    optimizer = wire.get("optimizer")
    flat["optimizer"] = None if optimizer is None else {**optimizer, "state": states}
    flat["files"] = [f for f in files if f["role"] == "weights"] + [f for f in files if f["role"] == "optimizer"] + list(
        wire.get("files", []))
    return flat


# --------------------------------------------------------------------------------- decoding
def _words(data: bytes, code: str, width: int) -> Any:
    """``data`` as a sequence of little-endian unsigned integers (zero-copy on little-endian hosts)."""
    if sys.byteorder == "little":
        return memoryview(data).cast(code)
    import array

    words = array.array(code, data)
    words.byteswap()
    return words


def _array(v: Any, n: int, where: Any) -> list[Any]:
    if not isinstance(v, list) or len(v) != n:
        raise FormatError(f"{where} must be an array of {n} elements")
    return v


def _record_file(v: Any, role: str, where: Any) -> FileEntry | None:
    if v is None:
        return None
    path, size, lt1 = _array(v, 3, where)
    return _file({"path": path, "size": size, "lt1": lt1, "role": role}, where, "lt1")


def _entry(v: Any, layer: str, file: FileEntry | None, n: int, where: Any) -> TensorEntry:
    fields = _array(v, n, where)
    if file is None:
        raise FormatError(f"{where}: a tensor of a layer record without a shard file")
    entry = _tensor({"name": fields[0], "layer": layer, "file": file.path, "dtype": fields[1], "shape": fields[2],
                     "offsets": [fields[3], fields[4]], "xxh3": fields[5]}, where)
    if entry.end > file.size or entry.begin < 8:
        raise FormatError(f"{where}: tensor {entry.name!r} byte range [{entry.begin}, {entry.end}) lies outside "
                          f"{file.path!r} ({file.size} bytes)")
    return entry


def _order(v: Any, where: Any) -> int:
    if type(v) is not int or v < 0:
        raise FormatError(f"{where}: order must be a non-negative integer, got {v!r}")
    return v


def decode_record(blob: bytes | memoryview, manifest: str, row: int) -> LayerRecord:
    """One record's bytes -> a validated LayerRecord (every check that needs only this record);
    errors name the manifest and the layer (or the record's position, before its name is known)."""
    where: Any = f"{manifest}: layer record {row}"
    try:
        wire = msgpack.unpackb(blob, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types
        raise FormatError(f"{where}: not a valid msgpack record ({type(exc).__name__}: {exc})") from None
    name, weights, optimizer, tensors, aliases, state = _array(wire, 6, where)
    if not isinstance(name, str):
        raise FormatError(f"{where}: the layer name must be a string, got {type(name).__name__}")
    where = f"{manifest}: layer {name!r}"
    weights = _record_file(weights, "weights", _Where(where, "weights"))
    optimizer = _record_file(optimizer, "optimizer", _Where(where, "optimizer"))
    if not isinstance(tensors, list) or not isinstance(aliases, list) or not isinstance(state, list):
        raise FormatError(f"{where}: tensors, aliases and state must be arrays")
    entries, order = [], []
    for i, v in enumerate(tensors):
        at = _Where(_Where(where, "tensors"), i)
        entries.append(_entry(v, name, weights, 7, at))
        order.append(_order(v[6], at))
    tied, alias_order = [], []
    for i, v in enumerate(aliases):
        at = _Where(_Where(where, "aliases"), i)
        a_name, target, position = _array(v, 3, at)
        tied.append(_alias({"name": a_name, "layer": name, "target": target}, at))
        alias_order.append(_order(position, at))
    states = []
    for i, v in enumerate(state):
        at = _Where(_Where(where, "state"), i)
        param, slots, scalars = _array(v, 3, at)
        if not isinstance(param, str) or not isinstance(slots, dict) or not isinstance(scalars, dict):
            raise FormatError(f"{at} must be [param name, {{slot: tensor}}, {{slot: scalar}}]")
        states.append(ParamState(
            param=param,
            tensors={k: _entry(t, name, optimizer, 6, _Where(at, k)) for k, t in slots.items()},
            scalars={k: _scalar(dict(zip(("value", "dtype"), _array(s, 2, _Where(at, k)))), _Where(at, k))
                     for k, s in scalars.items()}))
    _unique([t.name for t in entries] + [a.name for a in tied], "tensor name", str(where))
    files = tuple(f for f in (weights, optimizer) if f is not None)
    return LayerRecord(name, files, tuple(entries), tuple(tied), tuple(states), tuple(order), tuple(alias_order))


class LayerRecords:
    """The 1.3 tensor index of one manifest: ``find(layer)`` decodes only that layer's record;
    ``all()`` decodes every record once and checks the index as a whole."""

    def __init__(self, count: int, hashes: bytes, spans: bytes, records: bytes, where: str) -> None:
        if len(hashes) != 8 * count or len(spans) != 8 * count:
            raise FormatError(f"{where}: layer_hashes and layer_spans must hold {count} entries "
                              f"(layer_count), got {len(hashes)} and {len(spans)} bytes")
        self.count = count
        self._hashes = _words(hashes, "Q", 8)
        self._spans = _words(spans, "I", 4)
        self._records = memoryview(records)
        self._where = where
        self._decoded: dict[int, LayerRecord] = {}
        self._all: list[LayerRecord] | None = None

    def _at(self, row: int) -> LayerRecord:
        record = self._decoded.get(row)
        if record is None:
            offset, length = self._spans[2 * row], self._spans[2 * row + 1]
            if offset + length > len(self._records):
                raise FormatError(f"{self._where}: layer index entry {row} points past the end of layer_records "
                                  f"([{offset}, {offset + length}) of {len(self._records)} bytes)")
            record = decode_record(self._records[offset : offset + length], self._where, row)
            self._decoded[row] = record
        return record

    def find(self, name: str) -> LayerRecord | None:
        """The record of layer ``name``: a binary search on its hash, confirmed by the record's own
        name (so hash collisions are harmless). None if the index has no such layer."""
        key = layer_hash(name)
        row = bisect_left(self._hashes, key)
        while row < self.count and self._hashes[row] == key:
            record = self._at(row)
            if record.name == name:
                return record
            row += 1
        return None

    def all(self) -> list[LayerRecord]:
        """Every record, in record order (by offset), after checking the index as a whole: hashes
        sorted and matching the names, spans tiling ``layer_records`` exactly, names unique."""
        if self._all is not None:
            return self._all
        where = self._where
        rows = sorted(range(self.count), key=lambda r: self._spans[2 * r])
        end = 0
        for row in rows:
            if self._spans[2 * row] != end:
                raise FormatError(f"{where}: layer_spans do not tile layer_records (gap or overlap at byte {end})")
            end += self._spans[2 * row + 1]
        if end != len(self._records):
            raise FormatError(f"{where}: layer_spans cover {end} of {len(self._records)} bytes of layer_records")
        for row in range(1, self.count):
            if self._hashes[row - 1] > self._hashes[row]:
                raise FormatError(f"{where}: layer_hashes are not sorted (entry {row})")
        records = [self._at(row) for row in rows]
        for row in range(self.count):
            if layer_hash(self._at(row).name) != self._hashes[row]:
                raise FormatError(f"{where}: layer index entry {row} has the hash of another name than its "
                                  f"record's ({self._at(row).name!r})")
        _unique([r.name for r in records], "layer record", where)
        self._all = records
        return records
