"""Field validators of the manifest's wire form: each turns one decoded msgpack value into a typed
entry or raises FormatError naming the field's path (``manifest.tensors[3].file``). Shared by the
1.0-1.2 decoder (``codec``) and the 1.3 layer records (``records``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from lamina._errors import FormatError
from lamina.format.dtypes import (
    DTYPES,
    check_scalar_value,
    check_shape_bounds,
    dtype_info,
)
from lamina.format.manifest import (
    FILE_ROLES,
    MANIFEST_NAME,
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

_SHA256 = re.compile(r"[0-9a-f]{64}")
_XXH3 = re.compile(r"[0-9a-f]{32}")
_VERSION = re.compile(r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
T = TypeVar("T")

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


def _file(v: Any, where: Any, digest: str = "sha256") -> FileEntry:
    """A File whose content address is ``digest`` (``sha256`` up to 1.2, ``lt1`` from 1.3; the
    other key, if present, is an unknown field and ignored)."""
    try:
        path, size, hexdigest, role = v["path"], v["size"], v[digest], v["role"]
    except (KeyError, TypeError, IndexError):
        return _file_explained(v, where, digest)
    if (type(path) is str and type(size) is int and size >= 0 and type(hexdigest) is str
            and _SHA256.fullmatch(hexdigest) and role in FILE_ROLES):
        path = check_relative_path(path, _Where(where, "path"))
        return FileEntry(path, size, hexdigest, role) if digest == "sha256" else FileEntry(path, size, None, role,
                                                                                             lt1=hexdigest)
    return _file_explained(v, where, digest)


def _file_lt1(v: Any, where: Any) -> FileEntry:
    return _file(v, where, "lt1")


def _file_explained(v: Any, where: Any, digest: str) -> FileEntry:
    f = _Fields(v, where)
    hexdigest = f.get(digest, _str)
    if not _SHA256.fullmatch(hexdigest):
        raise FormatError(f"{where}.{digest} must be 64 lowercase hex digits")
    role = f.get("role", _str)
    if role not in FILE_ROLES:
        raise FormatError(f"{where}.role must be one of {FILE_ROLES}, got {role!r}")
    path, size = f.get("path", _path), f.get("size", _uint)
    if digest == "sha256":
        return FileEntry(path=path, size=size, sha256=hexdigest, role=role)
    return FileEntry(path=path, size=size, sha256=None, role=role, lt1=hexdigest)


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
