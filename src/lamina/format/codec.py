"""manifest.msgpack <-> Manifest: encoding, checksum, and strict validation (format 1.0).

The wire form is a msgpack map whose last entry is ``"checksum"``: a 32-byte bin holding the
sha256 of every byte of the file before those 32 bytes. See format_spec/spec.md, "Manifest".
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgpack

from lamina._errors import FormatError, IntegrityError, UnsupportedVersionError
from lamina.format.dtypes import (
    DTYPES,
    check_scalar_value,
    check_shape_bounds,
    dtype_info,
)
from lamina.format.manifest import (
    FILE_ROLES,
    FORMAT_NAME,
    FORMAT_VERSION,
    Alias,
    FileEntry,
    Manifest,
    ModelInfo,
    OptimizerInfo,
    ParamGroup,
    ParamState,
    Scalar,
    TensorEntry,
    TrainingState,
)
from lamina.storage.paths import check_relative_path

__all__ = ["encode_manifest", "decode_manifest", "unpack_wire", "MANIFEST_NAME", "MAX_MANIFEST_BYTES"]

MANIFEST_NAME = "manifest.msgpack"
MAX_MANIFEST_BYTES = 1 << 30
KNOWN_REQUIRED_FEATURES: frozenset[str] = frozenset()  # features format 1.0 readers understand
_CHECKSUM_TAIL = b"\xa8checksum\xc4\x20"  # fixstr "checksum", then bin8 of length 32
_SHA256 = re.compile(r"[0-9a-f]{64}")
_XXH3 = re.compile(r"[0-9a-f]{32}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
T = TypeVar("T")


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
    return {
        "format": FORMAT_NAME,
        "format_version": f"{m.format_version[0]}.{m.format_version[1]}",
        "required": list(m.required),
        "producer": dict(m.producer),
        "framework": None if m.framework is None else dict(m.framework),
        "info": {"name": info.name, "version": info.version, "creator": info.creator,
                 "description": info.description, "license": info.license,
                 "tags": list(info.tags), "extra": dict(info.extra)},
        "training": training,
        "tensors": [_tensor_wire(t) for t in m.tensors],
        "aliases": [{"name": a.name, "layer": a.layer, "target": a.target} for a in m.aliases],
        "optimizer": optimizer,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "role": f.role} for f in m.files],
    }


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


class _Where:
    """A field location (``manifest.tensors[3].file``), rendered only if an error needs it."""

    __slots__ = ("parent", "key")

    def __init__(self, parent: Any, key: str | int) -> None:
        self.parent, self.key = parent, key

    def __str__(self) -> str:
        key = f"[{self.key}]" if isinstance(self.key, int) else f".{self.key}"
        return f"{self.parent}{key}"


class _Fields:
    """Typed access to one wire map, raising FormatError that names the field path."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise FormatError(f"{where} must be a map, got {type(value).__name__}")
        self.value, self.where = value, where

    def get(self, key: str, check: Callable[[Any, Any], T], *, optional: bool = False) -> T:
        where = _Where(self.where, key)
        if key not in self.value:
            if optional:
                return check(None, where)
            raise FormatError(f"{where} is missing")
        return check(self.value[key], where)


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise FormatError(f"{where} must be a string, got {type(v).__name__}")
    return v


def _opt_str(v: Any, where: str) -> str | None:
    return None if v is None else _str(v, where)


def _uint(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise FormatError(f"{where} must be a non-negative integer, got {v!r}")
    return v


def _number(v: Any, where: str) -> int | float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise FormatError(f"{where} must be a number, got {v!r}")
    return v


def _opt(check: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    return lambda v, where: None if v is None else check(v, where)


def _list(item: Callable[[Any, str], T]) -> Callable[[Any, str], list[T]]:
    def check(v: Any, where: str) -> list[T]:
        if not isinstance(v, list):
            raise FormatError(f"{where} must be an array, got {type(v).__name__}")
        return [item(x, _Where(where, i)) for i, x in enumerate(v)]
    return check


def _map(item: Callable[[Any, str], T]) -> Callable[[Any, str], dict[str, T]]:
    def check(v: Any, where: str) -> dict[str, T]:
        if not isinstance(v, dict):
            raise FormatError(f"{where} must be a map, got {type(v).__name__}")
        return {k: item(x, _Where(where, k)) for k, x in v.items()}
    return check


def _any(v: Any, where: str) -> Any:
    return v


def _map_or_empty(v: Any, where: str) -> dict[str, Any]:
    return {} if v is None else _map(_any)(v, where)


def _path(v: Any, where: Any) -> str:
    return check_relative_path(_str(v, where), where)


def _dtype(v: Any, where: str) -> str:
    if not isinstance(v, str) or v not in DTYPES:
        raise FormatError(f"{where}: unsupported dtype {v!r}")
    return v


_TENSOR_KEYS = ("name", "layer", "file", "dtype", "shape", "offsets")


def _tensor(v: Any, where: Any) -> TensorEntry:
    """Tensor entries are most of a manifest: accept well-typed ones without per-field
    bookkeeping, and let the field-by-field validator explain anything else."""
    try:
        name, layer, file, dtype, shape, offsets = (v[k] for k in _TENSOR_KEYS)
    except (KeyError, TypeError, IndexError):
        return _tensor_explained(v, where)
    if not (type(name) is str and type(layer) is str and type(file) is str and type(dtype) is str
            and dtype in DTYPES and type(shape) is list and all(type(d) is int and d >= 0 for d in shape)
            and type(offsets) is list and len(offsets) == 2 and type(offsets[0]) is int
            and type(offsets[1]) is int and 0 <= offsets[0] <= offsets[1]):
        return _tensor_explained(v, where)
    xxh3 = v.get("xxh3") if isinstance(v, dict) else None
    if xxh3 is not None and not (type(xxh3) is str and _XXH3.fullmatch(xxh3)):
        return _tensor_explained(v, where)
    entry = TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1], layer=layer,
                        file=check_relative_path(file, _Where(where, "file")), xxh3=xxh3)
    return _checked_size(entry, where)


def _tensor_explained(v: Any, where: Any) -> TensorEntry:
    f = _Fields(v, where)
    offsets = f.get("offsets", _list(_uint))
    if len(offsets) != 2 or offsets[0] > offsets[1]:
        raise FormatError(f"{where}.offsets must be [begin, end] with begin <= end, got {offsets}")
    xxh3 = f.get("xxh3", _opt(_str), optional=True)
    if xxh3 is not None and not _XXH3.fullmatch(xxh3):
        raise FormatError(f"{where}.xxh3 must be 32 lowercase hex digits (XXH3-128)")
    entry = TensorEntry(
        name=f.get("name", _str), layer=f.get("layer", _str), file=f.get("file", _path),
        dtype=f.get("dtype", _dtype), shape=tuple(f.get("shape", _list(_uint))),
        begin=offsets[0], end=offsets[1], xxh3=xxh3,
    )
    return _checked_size(entry, where)


def _checked_size(entry: TensorEntry, where: Any) -> TensorEntry:
    check_shape_bounds(entry.dtype, entry.shape, where)
    if entry.nbytes != entry.numel * dtype_info(entry.dtype).itemsize:
        raise FormatError(f"{where}: byte range of {entry.nbytes} bytes does not fit "
                          f"{entry.dtype}{list(entry.shape)} ({entry.name!r})")
    return entry


def _file(v: Any, where: Any) -> FileEntry:
    try:
        path, size, sha, role = v["path"], v["size"], v["sha256"], v["role"]
    except (KeyError, TypeError, IndexError):
        return _file_explained(v, where)
    if (type(path) is str and type(size) is int and size >= 0 and type(sha) is str and _SHA256.fullmatch(sha)
            and role in FILE_ROLES):
        return FileEntry(check_relative_path(path, _Where(where, "path")), size, sha, role)
    return _file_explained(v, where)


def _file_explained(v: Any, where: Any) -> FileEntry:
    f = _Fields(v, where)
    sha = f.get("sha256", _str)
    if not _SHA256.fullmatch(sha):
        raise FormatError(f"{where}.sha256 must be 64 lowercase hex digits")
    role = f.get("role", _str)
    if role not in FILE_ROLES:
        raise FormatError(f"{where}.role must be one of {FILE_ROLES}, got {role!r}")
    return FileEntry(path=f.get("path", _path), size=f.get("size", _uint), sha256=sha, role=role)


def _alias(v: Any, where: str) -> Alias:
    f = _Fields(v, where)
    return Alias(name=f.get("name", _str), layer=f.get("layer", _str), target=f.get("target", _str))


def _scalar(v: Any, where: str) -> Scalar:
    f = _Fields(v, where)
    value = f.get("value", _any, optional=True)
    dtype = f.get("dtype", _opt(_dtype), optional=True)
    if value is not None and not isinstance(value, (bool, int, float)):
        raise FormatError(f"{where}.value must be a boolean, number or nil")
    if dtype is not None:
        check_scalar_value(value, dtype, where)
    return Scalar(value=value, dtype=dtype)


def _param_state(v: Any, where: str) -> ParamState:
    f = _Fields(v, where)
    return ParamState(param=f.get("param", _str), tensors=f.get("tensors", _map(_tensor)),
                      scalars=f.get("scalars", _map(_scalar)))


def _param_group(v: Any, where: str) -> ParamGroup:
    f = _Fields(v, where)
    return ParamGroup(params=tuple(f.get("params", _list(_str))),
                      hyperparameters=f.get("hyperparameters", _map(_any)))


def _optimizer(v: Any, where: str) -> OptimizerInfo:
    f = _Fields(v, where)
    return OptimizerInfo(
        class_name=f.get("class", _str), framework=f.get("framework", _str),
        param_groups=tuple(f.get("param_groups", _list(_param_group))),
        slots=tuple(f.get("slots", _list(_str))), state=tuple(f.get("state", _list(_param_state))),
    )


def _info(v: Any, where: str) -> ModelInfo:
    f = _Fields(v, where)
    return ModelInfo(
        name=f.get("name", _opt_str, optional=True), version=f.get("version", _opt_str, optional=True),
        creator=f.get("creator", _opt_str, optional=True),
        description=f.get("description", _opt_str, optional=True),
        license=f.get("license", _opt_str, optional=True),
        tags=tuple(f.get("tags", _opt(_list(_str)), optional=True) or ()),
        extra=f.get("extra", _map_or_empty, optional=True),
    )


def _training(v: Any, where: str) -> TrainingState:
    f = _Fields(v, where)
    step = f.get("step", _opt(_number), optional=True)
    if step is not None and not isinstance(step, int):
        raise FormatError(f"{where}.step must be an integer, got {step!r}")
    return TrainingState(step=step, epoch=f.get("epoch", _opt(_number), optional=True),
                         metrics=f.get("metrics", _opt(_map(_number)), optional=True) or {},
                         extra=f.get("extra", _map_or_empty, optional=True))


def _version(v: Any, where: str) -> tuple[int, int]:
    match = _VERSION.fullmatch(v) if isinstance(v, str) else None
    if match is None:
        raise FormatError(f"{where} must be a 'MAJOR.MINOR' string, got {str(v)[:40]!r}")
    return int(match[1]), int(match[2])


def decode_manifest(data: bytes, where: str = MANIFEST_NAME) -> Manifest:
    """Decode and validate manifest bytes.

    Raises:
        FormatError: not msgpack, wrong structure, unsafe paths, inconsistent references.
        UnsupportedVersionError: newer major version, or a required feature this reader lacks.
        IntegrityError: the checksum does not match the bytes.
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
    framework = top.get("framework", _opt(_map(_str)), optional=True)
    training = top.get("training", _any, optional=True)
    optimizer = top.get("optimizer", _any, optional=True)
    manifest = Manifest(
        format_version=version,
        producer=top.get("producer", _map(_str)),
        framework=framework,
        info=top.get("info", _info),
        training=None if training is None else _training(training, f"{where}.training"),
        tensors=tuple(top.get("tensors", _list(_tensor))),
        aliases=tuple(top.get("aliases", _list(_alias))),
        optimizer=None if optimizer is None else _optimizer(optimizer, f"{where}.optimizer"),
        files=tuple(top.get("files", _list(_file))),
        required=tuple(required),
    )
    _check_references(manifest, where)
    return manifest


def _unique(names: list[str], what: str, where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FormatError(f"{where}: duplicate {what} {name!r}")
        seen.add(name)


def _check_references(m: Manifest, where: str) -> None:
    """Cross-field rules: every reference resolves, every byte range lies inside its file."""
    _unique([f.path for f in m.files], "file path", where)
    sizes = {f.path: f.size for f in m.files}
    if any(p == MANIFEST_NAME for p in sizes):
        raise FormatError(f"{where}: the files table must not list {MANIFEST_NAME}")
    _unique([t.name for t in m.tensors] + [a.name for a in m.aliases], "tensor name", where)
    stored = {t.name for t in m.tensors}

    def check_range(t: TensorEntry) -> None:
        if t.file not in sizes:
            raise FormatError(f"{where}: tensor {t.name!r} refers to {t.file!r}, which is not in the files table")
        if t.end > sizes[t.file] or t.begin < 8:
            raise FormatError(f"{where}: tensor {t.name!r} byte range [{t.begin}, {t.end}) lies outside "
                              f"{t.file!r} ({sizes[t.file]} bytes)")

    for t in m.tensors:
        check_range(t)
    for a in m.aliases:
        if a.target not in stored:
            raise FormatError(f"{where}: alias {a.name!r} targets {a.target!r}, which is not a stored tensor")
    if m.optimizer is not None:
        grouped = [p for g in m.optimizer.param_groups for p in g.params]
        _unique(grouped, "optimizer parameter", where)
        _unique([s.param for s in m.optimizer.state], "optimizer state parameter", where)
        members = set(grouped)
        for s in m.optimizer.state:
            if s.param not in members:
                raise FormatError(f"{where}: optimizer state for {s.param!r}, which is in no param group")
            for t in s.tensors.values():
                check_range(t)


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
