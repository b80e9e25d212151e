"""manifest.msgpack <-> Manifest: encoding, checksum, and strict validation (formats 1.0-1.3).

The wire form is a msgpack map whose last entry is ``"checksum"``: a 32-byte bin holding the
sha256 of every byte of the file before those 32 bytes. See format_spec/spec.md, "Manifest".
Format 1.3 manifests (feature ``records-v1``) keep the tensor index in per-layer records
(``records``), which :func:`open_manifest` leaves undecoded until used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgpack

from lamina._errors import FormatError, IntegrityError, UnsupportedVersionError
from lamina.format._validate import (
    _alias,
    _any,
    _check_references,
    _Fields,
    _file,
    _file_lt1,
    _info,
    _list,
    _map,
    _opt,
    _optimizer,
    _param_group,
    _str,
    _tensor,
    _training,
    _uint,
    _version,
)
from lamina.format.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    TensorEntry,
)
from lamina.format.records import RECORDS_FEATURE, LayerRecords, records_wire
from lamina.format.view import ManifestView, OptimizerHeader

__all__ = ["encode_manifest", "decode_manifest", "open_manifest", "unpack_wire", "MANIFEST_NAME",
           "MAX_MANIFEST_BYTES", "RECORDS_FEATURE"]

MAX_MANIFEST_BYTES = 1 << 30
KNOWN_REQUIRED_FEATURES: frozenset[str] = frozenset({RECORDS_FEATURE})  # features this reader understands
_CHECKSUM_TAIL = b"\xa8checksum\xc4\x20"  # fixstr "checksum", then bin8 of length 32


# ---------------------------------------------------------------------------------- encoding
def _tensor_wire(t: TensorEntry) -> dict[str, Any]:
    wire = {"name": t.name, "layer": t.layer, "file": t.file, "dtype": t.dtype,
            "shape": list(t.shape), "offsets": [t.begin, t.end]}
    if t.xxh3 is not None:  # format 1.2; absent in 1.0/1.1 manifests, which re-encode unchanged
        wire["xxh3"] = t.xxh3
    return wire


def _wire(m: Manifest) -> dict[str, Any]:
    info = m.info
    optimizer = None
    if m.optimizer is not None:
        o = m.optimizer
        optimizer = {
            "class": o.class_name,
            "framework": o.framework,
            "param_groups": [{"params": list(g.params), "hyperparameters": dict(g.hyperparameters)}
                             for g in o.param_groups],
            "slots": list(o.slots),
            "state": [{"param": s.param,
                       "tensors": {k: _tensor_wire(t) for k, t in s.tensors.items()},
                       "scalars": {k: {"value": v.value, "dtype": v.dtype} for k, v in s.scalars.items()}}
                      for s in o.state],
        }
    training = None
    if m.training is not None:
        t = m.training
        training = {"step": t.step, "epoch": t.epoch, "metrics": dict(t.metrics), "extra": dict(t.extra)}
    wire = {
        "format": FORMAT_NAME,
        "format_version": f"{m.format_version[0]}.{m.format_version[1]}",
        "required": list(m.required),
        "producer": dict(m.producer),
        "framework": None if m.framework is None else dict(m.framework),
        "info": {"name": info.name, "version": info.version, "creator": info.creator,
                 "description": info.description, "license": info.license,
                 "tags": list(info.tags), "extra": dict(info.extra)},
        "training": training,
    }
    wire["tensors"] = [_tensor_wire(t) for t in m.tensors]
    wire["aliases"] = [{"name": a.name, "layer": a.layer, "target": a.target} for a in m.aliases]
    wire["optimizer"] = optimizer
    wire["files"] = [{"path": f.path, "size": f.size, f.digest[0]: f.digest[1], "role": f.role} for f in m.files]
    # 1.3: tensors, aliases, optimizer state and shard files go into per-layer records
    return records_wire(wire) if RECORDS_FEATURE in m.required else wire


def encode_manifest(manifest: Manifest) -> bytes:
    """Encode deterministically: same Manifest -> same bytes (map order fixed, floats as float64)."""
    wire = _wire(manifest)
    wire["checksum"] = bytes(32)
    data = msgpack.packb(wire, use_bin_type=True)
    assert data[-32 - len(_CHECKSUM_TAIL) : -32] == _CHECKSUM_TAIL
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


# ---------------------------------------------------------------------------------- decoding
def unpack_wire(data: bytes, where: str = MANIFEST_NAME) -> dict[str, Any]:
    """Decode the msgpack map (no semantic validation); FormatError if it is not one."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{where}: {len(data)} bytes exceeds the {MAX_MANIFEST_BYTES}-byte manifest limit")
    try:
        wire = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises many types (ExtraData, StackError, ValueError, ...)
        raise FormatError(f"{where}: not a valid msgpack manifest ({type(exc).__name__}: {exc}); "
                          "the file is truncated or is not a lamina manifest") from None
    if not isinstance(wire, dict):
        raise FormatError(f"{where}: manifest must be a msgpack map, got {type(wire).__name__}")
    return wire


def decode_manifest(data: bytes, where: str = MANIFEST_NAME) -> Manifest:
    """Decode and validate manifest bytes, every field (for 1.3, every layer record).

    Raises:
        FormatError: not msgpack, wrong structure, unsafe paths, inconsistent references.
        UnsupportedVersionError: newer major version, or a required feature this reader lacks.
        IntegrityError: the checksum does not match the bytes.
    """
    return open_manifest(data, where).manifest


def open_manifest(data: bytes, where: str = MANIFEST_NAME) -> ManifestView:
    """Decode and check what is needed to trust a manifest: its form, version, checksum and
    required features, then its top-level fields. A 1.3 manifest's layer records are decoded and
    validated when first used (spec §4.9); 1.0-1.2 manifests are decoded whole, as before.

    Raises: as :func:`decode_manifest` (errors inside a 1.3 record are raised when it is used).
    """
    wire = unpack_wire(data, where)
    top = _Fields(wire, where)
    if wire.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not a lamina manifest (format={wire.get('format')!r})")
    version = top.get("format_version", _version)
    if version[0] > FORMAT_VERSION[0]:
        raise UnsupportedVersionError(
            f"{where}: format version {version[0]}.{version[1]} is newer than this lamina reads "
            f"({FORMAT_VERSION[0]}.x); upgrade lamina"
        )
    if list(wire)[-1:] != ["checksum"] or data[-32 - len(_CHECKSUM_TAIL) : -32] != _CHECKSUM_TAIL:
        raise FormatError(f"{where}: the manifest must end with its 32-byte 'checksum' entry")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise IntegrityError(f"{where}: checksum mismatch; the manifest was modified or corrupted",
                             [(where, "checksum mismatch")])
    required = top.get("required", _list(_str))
    unknown = sorted(set(required) - KNOWN_REQUIRED_FEATURES)
    if unknown:
        raise UnsupportedVersionError(
            f"{where}: requires feature(s) {unknown} that this lamina does not understand; upgrade lamina"
        )
    training = top.get("training", _any, optional=True)
    header = {
        "format_version": version, "producer": top.get("producer", _map(_str)),
        "framework": top.get("framework", _opt(_map(_str)), optional=True), "info": top.get("info", _info),
        "training": None if training is None else _training(training, f"{where}.training"),
        "required": tuple(required), "where": where,
    }
    optimizer = top.get("optimizer", _any, optional=True)
    if RECORDS_FEATURE in required:
        return _open_records(top, optimizer, header)
    manifest = Manifest(
        tensors=tuple(top.get("tensors", _list(_tensor))),
        aliases=tuple(top.get("aliases", _list(_alias))),
        optimizer=None if optimizer is None else _optimizer(optimizer, f"{where}.optimizer"),
        files=tuple(top.get("files", _list(_file))),
        **{k: v for k, v in header.items() if k != "where"},
    )
    _check_references(manifest, where)
    return ManifestView.of(manifest, where)


def _bin(v: Any, where: Any) -> bytes:
    if not isinstance(v, bytes):
        raise FormatError(f"{where} must be a bin, got {type(v).__name__}")
    return v


def _open_records(top: _Fields, optimizer: Any, header: dict[str, Any]) -> ManifestView:
    where = header["where"]
    head = None
    if optimizer is not None:
        f = _Fields(optimizer, f"{where}.optimizer")
        head = OptimizerHeader(class_name=f.get("class", _str), framework=f.get("framework", _str),
                               param_groups=tuple(f.get("param_groups", _list(_param_group))),
                               slots=tuple(f.get("slots", _list(_str))))
    files = top.get("files", _list(_file_lt1))  # 1.3: every file is addressed by lt1
    paths = [x.path for x in files]
    if len(set(paths)) != len(paths) or MANIFEST_NAME in paths:
        raise FormatError(f"{where}: the files table lists a path twice, or lists {MANIFEST_NAME}")
    records = LayerRecords(top.get("layer_count", _uint), top.get("layer_hashes", _bin),
                           top.get("layer_spans", _bin), top.get("layer_records", _bin), where)
    return ManifestView.lazy(records, head, files, **header)


def manifest_checksum(data: bytes) -> str:
    """Hex sha256 of the whole manifest file (the snapshot's content address)."""
    return hashlib.sha256(data).hexdigest()


def wire_as_json(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The decoded wire map with bytes shown as hex, for conformance vectors and ``inspect --json``."""
    def conv(v: Any) -> Any:
        if isinstance(v, bytes):
            return v.hex()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v
    return conv(dict(wire))
