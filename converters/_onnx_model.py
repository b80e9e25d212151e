"""Reading ONNX models safely: parsing, walking every graph, and an initializer's data.

Shared by both directions of :mod:`lamina.converters.onnx`. Every protobuf parse goes through
:func:`parse_model`, every initializer (main graph, ``If``/``Loop``/``Scan`` bodies at any depth,
and subgraphs inside functions) through :func:`initializers`, and every byte of weight data
through :func:`initializer_array`, which validates external data before reading it.
"""

from __future__ import annotations

import math
import re
from collections import deque
from pathlib import Path
from typing import Any

from lamina._errors import FormatError, NotFoundError, UnsafePathError
from lamina.format.dtypes import dtype_info, numpy_dtype
from lamina.storage.local import os_errors_as_storage_errors
from lamina.storage.paths import check_relative_path

__all__ = ["PROTOBUF_LIMIT", "ONNX_TO_CODE", "CODE_TO_ONNX", "load_model", "parse_model", "initializers",
           "initializer_array", "holds_data", "clear_data"]

PROTOBUF_LIMIT = 2**31 - 1
# TensorProto.DataType -> lamina dtype code (STRING, COMPLEX128 and sub-byte types are not in 1.0)
ONNX_TO_CODE = {1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16",
                11: "F64", 12: "U32", 13: "U64", 14: "C64", 16: "BF16", 17: "F8_E4M3", 18: "F8_E4M3FNUZ",
                19: "F8_E5M2", 20: "F8_E5M2FNUZ", 24: "F8_E8M0"}
CODE_TO_ONNX = {code: t for t, code in ONNX_TO_CODE.items()}
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data", "external_data")
_INTEGER = re.compile(r"-?[0-9]{1,64}")  # ASCII only: int() would also take "1_0", " 1" and other scripts' digits


def load_model(path: Path) -> Any:
    """Parse a model file without touching external data."""
    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    if path.stat().st_size > PROTOBUF_LIMIT:
        raise FormatError(f"{path}: larger than the 2 GB protobuf limit; an ONNX model file cannot be")
    with os_errors_as_storage_errors(f"cannot read {path}"):
        data = path.read_bytes()
    return parse_model(data, str(path))  # ``data`` is released on return: one copy of the model remains


def parse_model(data: bytes, where: str) -> Any:
    """A ModelProto from bytes; anything else (corrupt, truncated, nested past protobuf's depth
    limit, no graph, sparse initializers) is a FormatError naming ``where``."""
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as exc:
        raise FormatError(f"{where}: not an ONNX model (protobuf decoding failed: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise FormatError(f"{where}: not an ONNX model (no ir_version or graph)")
    for graph, scope in _graphs(model):
        if len(graph.sparse_initializer):
            raise FormatError(f"{where}: sparse initializers are not supported by lamina 1.0 "
                              f"(found{scope or ' in the main graph'})")
    return model


def _subgraphs(nodes: Any) -> list[Any]:
    found = []
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("g"):
                found.append(attr.g)
            found.extend(attr.graphs)
    return found


def _graphs(model: Any) -> list[tuple[Any, str]]:
    """The main graph, then every subgraph (breadth first), each with how messages name it:
    ``""`` for the main graph, ``" in subgraph 'name'"`` otherwise. Iterative: protobuf already
    bounds the depth, and no Python recursion is involved."""
    found = [(model.graph, "")]
    todo = deque(_subgraphs(model.graph.node) + _subgraphs(n for f in model.functions for n in f.node))
    while todo:
        graph = todo.popleft()
        found.append((graph, f" in subgraph {graph.name!r}"))
        todo.extend(_subgraphs(graph.node))
    return found


def initializers(model: Any) -> list[tuple[Any, str]]:
    """Every initializer of the model, with ``" (in subgraph 'name')"`` for those of subgraphs."""
    return [(t, f" ({scope.strip()})" if scope else "") for graph, scope in _graphs(model) for t in graph.initializer]


def holds_data(t: Any) -> bool:
    """Whether an initializer carries its own data (inline or a reference to external data)."""
    return any(len(getattr(t, name)) for name in _DATA_FIELDS)


def clear_data(t: Any) -> None:
    """Remove every place an initializer can hold its data (dims, type and name stay)."""
    from onnx import TensorProto

    for name in _DATA_FIELDS:
        t.ClearField(name)
    t.data_location = TensorProto.DEFAULT


def _external_field(entries: dict[str, str], key: str, default: int, where: str, location: str) -> int:
    value = entries.get(key)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value):
        offset, length = entries.get("offset", "0"), entries.get("length", str(default))
        raise FormatError(f"{where}: external data offset/length are not integers: offset {offset!r}, "
                          f"length {length!r} in {location!r}")
    number = int(value)
    if number < 0:
        raise FormatError(f"{where}: external data {key} {number} in {location!r} is negative")
    return number


def _external_bytes(t: Any, model_dir: Path, code: str, expected: int, where: str) -> bytes:
    """An initializer's external data, read only once its location and range are proven sound."""
    entries = {e.key: e.value for e in t.external_data}
    if "location" not in entries:
        raise FormatError(f"{where}: external data has no location")
    location = check_relative_path(entries["location"], f"{where} external data location")
    root = model_dir.resolve()
    try:
        target = (model_dir / location).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise FormatError(f"{where}: external data {location!r} cannot be resolved (a symlink loop?)") from None
    if root != target and root not in target.parents:  # a symlink pointing elsewhere
        raise UnsafePathError(f"{where}: external data {location!r} resolves outside {root}")
    # the length names no other size than the one dims and type give: nothing else is ever allocated
    length = _external_field(entries, "length", expected, where, location)
    offset = _external_field(entries, "offset", 0, where, location)
    if length != expected:
        raise FormatError(f"{where}: external data length {length} in {location!r} does not match the "
                          f"{expected} bytes {code}{list(t.dims)} needs")
    if not target.exists():
        raise FormatError(f"{where}: external data file {location!r} is missing")
    if not target.is_file():  # a directory, or a FIFO that would block the read forever
        raise FormatError(f"{where}: external data file {location!r} is not a regular file")
    with os_errors_as_storage_errors(f"{where}: cannot read external data {location!r}"), open(target, "rb") as f:
        size = f.seek(0, 2)
        if offset + length > size:
            raise FormatError(f"{where}: external data [{offset}, {offset + length}) lies beyond the end of "
                              f"{location!r} ({size} bytes)")
        f.seek(offset)
        return f.read(length)


def initializer_array(t: Any, model_dir: Path, where: str) -> Any:
    """An initializer as a little-endian numpy array of its lamina dtype (a new array, not a view
    into the protobuf: the model can be freed once its weights are taken)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    code = ONNX_TO_CODE.get(t.data_type)
    if code is None:
        known = t.data_type in TensorProto.DataType.values()
        name = helper.tensor_dtype_to_string(t.data_type) if known else t.data_type
        raise FormatError(f"{where}: ONNX data type {name} is not supported by lamina 1.0")
    shape = tuple(t.dims)
    if any(d < 0 for d in shape):
        raise FormatError(f"{where}: negative dimension in {list(shape)}")
    expected = math.prod(shape) * dtype_info(code).itemsize
    if t.data_location == TensorProto.EXTERNAL:
        data = _external_bytes(t, model_dir, code, expected, where)
    elif (raw := t.raw_data) or expected == 0:  # a copy: protobuf hands out new bytes
        data = raw
    else:
        try:
            array = numpy_helper.to_array(t)
        except Exception as exc:  # numpy's reshape/cast errors on inconsistent typed fields
            raise FormatError(f"{where}: cannot decode typed data ({type(exc).__name__}: {exc})") from None
        data = np.ascontiguousarray(array).astype(numpy_dtype(code), copy=False).tobytes()
    if len(data) != expected:
        raise FormatError(f"{where}: holds {len(data)} bytes, {code}{list(shape)} needs {expected}")
    return np.frombuffer(data, dtype=numpy_dtype(code)).reshape(shape)
