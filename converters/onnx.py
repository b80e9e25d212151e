"""ONNX models <-> lamina snapshots.

In: every initializer (raw_data, typed fields or external data) becomes a tensor, one shard per
layer (the initializer name without its last dotted component); the graph itself is kept in the
snapshot as ``onnx/model.onnx`` with its initializers emptied. External data locations are
validated before anything is read: relative, inside the model's directory, within the file.

Out: the graph with its initializers filled from the snapshot (inline, or as external data for
models over 2 GB or on request). With a template, a snapshot trained elsewhere (e.g. fine-tuned
in torch) refreshes the weights of an existing graph: initializers are matched by name and every
unmatched name on either side is reported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lamina
from lamina._api import write_snapshot
from lamina._dtypes import dtype_info, numpy_dtype
from lamina._errors import FormatError, NotFoundError, UnsafePathError
from lamina._naming import check_relative_path
from lamina._tensors import Collected, tensor_source
from lamina._writer import atomic_file_write, check_file_destination

__all__ = ["to_lamina", "from_lamina", "OnnxExport", "GRAPH_FILE"]

GRAPH_FILE = "onnx/model.onnx"
PROTOBUF_LIMIT = 2**31 - 1
# TensorProto.DataType -> lamina dtype code (STRING, COMPLEX128 and sub-byte types are not in 1.0)
ONNX_TO_CODE = {1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16",
                11: "F64", 12: "U32", 13: "U64", 14: "C64", 16: "BF16", 17: "F8_E4M3", 18: "F8_E4M3FNUZ",
                19: "F8_E5M2", 20: "F8_E5M2FNUZ", 24: "F8_E8M0"}
CODE_TO_ONNX = {code: t for t, code in ONNX_TO_CODE.items()}


@dataclass
class OnnxExport:
    """What ``from_lamina`` wrote; usable as a path (``os.fspath``)."""

    path: Path
    replaced: list[str] = field(default_factory=list)
    unmatched_snapshot: list[str] = field(default_factory=list)  # snapshot tensors not in the graph
    unmatched_graph: list[str] = field(default_factory=list)  # graph initializers kept from the template
    data_file: Path | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def summary(self) -> str:
        lines = [f"replaced {len(self.replaced)} initializers"]
        if self.unmatched_snapshot:
            lines.append(f"snapshot tensors with no initializer of that name ({len(self.unmatched_snapshot)}): "
                         + ", ".join(self.unmatched_snapshot))
        if self.unmatched_graph:
            lines.append(f"graph initializers not in the snapshot, kept from the template "
                         f"({len(self.unmatched_graph)}): " + ", ".join(self.unmatched_graph))
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ reading
def _load_graph(path: Path) -> Any:
    """Parse a model without touching external data; refuse anything that is not ONNX."""
    import onnx

    if not path.is_file():
        raise NotFoundError(f"{path}: no such file")
    if path.stat().st_size > PROTOBUF_LIMIT:
        raise FormatError(f"{path}: larger than the 2 GB protobuf limit; an ONNX model file cannot be")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise FormatError(f"{path}: not an ONNX model (protobuf decoding failed: {type(exc).__name__})") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise FormatError(f"{path}: not an ONNX model (no ir_version or graph)")
    if len(model.graph.sparse_initializer):
        raise FormatError(f"{path}: sparse initializers are not supported by lamina 1.0")
    return model


def _external_bytes(t: Any, model_dir: Path, expected: int, where: str) -> bytes:
    entries = {e.key: e.value for e in t.external_data}
    location = check_relative_path(entries.get("location"), f"{where} external data location")
    root = model_dir.resolve()
    target = (model_dir / location).resolve()
    if root != target and root not in target.parents:  # a symlink pointing elsewhere
        raise UnsafePathError(f"{where}: external data {location!r} resolves outside {root}")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(expected)))
    except ValueError:
        raise FormatError(f"{where}: external data offset/length are not integers") from None
    if length != expected or offset < 0:
        raise FormatError(f"{where}: external data length {length} does not match {expected} bytes of data")
    if not target.is_file():
        raise FormatError(f"{where}: external data file {location!r} is missing")
    if offset + length > target.stat().st_size:
        raise FormatError(f"{where}: external data [{offset}, {offset + length}) lies beyond the end of "
                          f"{location!r} ({target.stat().st_size} bytes)")
    with open(target, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _initializer_array(t: Any, model_dir: Path, where: str) -> Any:
    """An initializer as a little-endian numpy array of its lamina dtype."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    code = ONNX_TO_CODE.get(t.data_type)
    if code is None:
        name = helper.tensor_dtype_to_string(t.data_type) if t.data_type in TensorProto.DataType.values() else t.data_type
        raise FormatError(f"{where}: ONNX data type {name} is not supported by lamina 1.0")
    shape = tuple(t.dims)
    if any(d < 0 for d in shape):
        raise FormatError(f"{where}: negative dimension in {list(shape)}")
    expected = math.prod(shape) * dtype_info(code).itemsize
    if t.data_location == TensorProto.EXTERNAL:
        data = _external_bytes(t, model_dir, expected, where)
    elif t.raw_data or expected == 0:
        data = t.raw_data
    else:
        try:
            array = numpy_helper.to_array(t)
        except Exception as exc:
            raise FormatError(f"{where}: cannot decode typed data ({type(exc).__name__}: {exc})") from None
        data = np.ascontiguousarray(array).astype(numpy_dtype(code), copy=False).tobytes()
    if len(data) != expected:
        raise FormatError(f"{where}: holds {len(data)} bytes, {code}{list(shape)} needs {expected}")
    return np.frombuffer(data, dtype=numpy_dtype(code)).reshape(shape)


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                "string_data", "external_data")


def _clear_data(t: Any) -> None:
    """Remove every place an initializer can hold its data (dims, type and name stay)."""
    for name in _DATA_FIELDS:
        t.ClearField(name)


def _strip_weights(model: Any) -> bytes:
    """The graph with every initializer's data removed (dims, type and name kept)."""
    import onnx

    stripped = onnx.ModelProto()
    stripped.CopyFrom(model)
    for t in stripped.graph.initializer:
        _clear_data(t)
        t.data_location = onnx.TensorProto.DEFAULT
    return stripped.SerializeToString(deterministic=True)


# ------------------------------------------------------------------------------- public API
def to_lamina(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> lamina.Artifact:
    """Convert an ONNX model (with or without external data) to a snapshot.

    Example:
        >>> import onnx, numpy as np, tempfile, os
        >>> from onnx import helper, numpy_helper, TensorProto
        >>> from lamina.converters import onnx as onnx_converter
        >>> w = numpy_helper.from_array(np.eye(2, dtype="float32"), "fc.weight")
        >>> graph = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"])], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
        >>> d = tempfile.mkdtemp(); onnx.save(helper.make_model(graph), os.path.join(d, "m.onnx"))
        >>> onnx_converter.to_lamina(os.path.join(d, "m.onnx"), os.path.join(d, "snap")).layers
        ['fc']
    """
    import onnx

    src_path = Path(src)
    model = _load_graph(src_path)
    sources = []
    for t in model.graph.initializer:
        array = _initializer_array(t, src_path.parent, f"{src_path}: initializer {t.name!r}")
        sources.append(tensor_source(t.name, array)[0])
    if len({s.name for s in sources}) != len(sources):
        raise FormatError(f"{src_path}: two initializers share a name")
    collected = Collected(sources, {}, {"name": "onnx", "version": onnx.__version__})
    meta = {"ir_version": model.ir_version, "producer_name": model.producer_name,
            "producer_version": model.producer_version,
            "opset_import": [{"domain": o.domain, "version": o.version} for o in model.opset_import]}
    info = dict(info) if info is not None else {"name": model.graph.name or src_path.stem}
    info.setdefault("extra", {})
    info["extra"] = {**info["extra"], "onnx": meta}
    return write_snapshot(dst, collected, info=info, files={GRAPH_FILE: _strip_weights(model)},
                          overwrite=overwrite, durable=durable, progress=progress)


def from_lamina(
    src: str | os.PathLike[str] | lamina.Artifact,
    dst: str | os.PathLike[str],
    *,
    onnx_template: str | os.PathLike[str] | None = None,
    external_data: bool | None = None,
    overwrite: bool = False,
    report: Callable[[str], None] | None = None,
) -> OnnxExport:
    """Write an ONNX model from a snapshot.

    Args:
        src: a snapshot converted from ONNX (its graph is kept), or any snapshot with
            ``onnx_template``.
        dst: the ``.onnx`` file.
        onnx_template: an existing model whose initializers are replaced, by name, with the
            snapshot's tensors (weight refresh); initializers the snapshot lacks are kept.
        external_data: store weights in ``<dst>.data`` beside the model; default: only when the
            model would exceed the 2 GB protobuf limit.
        report: called with a summary of matched and unmatched names.

    Returns:
        An :class:`OnnxExport` (a path-like) listing replaced and unmatched names.
    """
    import onnx

    art = src if isinstance(src, lamina.Artifact) else lamina.open(src)
    dst_path = Path(dst)
    data_path = dst_path.parent / f"{dst_path.name}.data"
    check_file_destination(dst_path, overwrite=overwrite)
    if external_data:
        check_file_destination(data_path, overwrite=overwrite)
    if onnx_template is not None:
        template = Path(onnx_template)
        model = _load_graph(template)
        kept_dir = template.parent
    elif GRAPH_FILE in art.files:
        model = onnx.ModelProto()
        model.ParseFromString(art.read_file(GRAPH_FILE))
        kept_dir = None
    else:
        raise FormatError(f"{art.location} holds no ONNX graph (it was not converted from ONNX); pass "
                          "onnx_template=BASE.onnx (CLI: --onnx-template) to export its weights into an existing graph")
    result = OnnxExport(path=dst_path)
    stored = {t.name: t for t in art.manifest.tensors}
    entries = {name: stored[art.aliases.get(name, name)] for name in art.keys()}
    mismatched = []
    arrays: dict[str, Any] = {}
    for t in model.graph.initializer:
        where = f"initializer {t.name!r}"
        if t.name in entries:
            entry = entries[t.name]
            code = ONNX_TO_CODE.get(t.data_type)
            if code != entry.dtype or tuple(t.dims) != entry.shape:
                mismatched.append(f"{t.name}: graph {code}{list(t.dims)} vs snapshot {entry.dtype}{list(entry.shape)}")
                continue
            arrays[t.name] = art.tensor(t.name, framework="np")
            result.replaced.append(t.name)
        elif kept_dir is not None:
            arrays[t.name] = _initializer_array(t, kept_dir, f"{template}: {where}")
            result.unmatched_graph.append(t.name)
        else:
            raise FormatError(f"{art.location}: the kept graph's {where} has no tensor in the snapshot")
    if mismatched:
        raise FormatError("snapshot tensors do not fit the graph's initializers: " + "; ".join(mismatched))
    graph_names = {t.name for t in model.graph.initializer}
    result.unmatched_snapshot = [n for n in art.keys() if n not in graph_names]
    total = sum(a.nbytes for a in arrays.values())
    use_external = external_data if external_data is not None else total + model.ByteSize() > PROTOBUF_LIMIT - (1 << 20)
    if not use_external and total + model.ByteSize() > PROTOBUF_LIMIT:
        raise FormatError(f"the model would be {total} bytes, over the 2 GB protobuf limit; use external data")
    if use_external:
        check_file_destination(data_path, overwrite=overwrite)  # also when chosen for size
        offsets: dict[str, tuple[int, int]] = {}

        def write_data(path: Path) -> None:
            with open(path, "wb") as f:
                for t in model.graph.initializer:
                    data = arrays[t.name].tobytes()
                    f.write(b"\0" * (-f.tell() % 64))  # aligned, so runtimes can mmap tensors
                    offsets[t.name] = (f.tell(), len(data))
                    f.write(data)

        atomic_file_write(data_path, write_data, overwrite=overwrite)
        result.data_file = data_path
    for t in model.graph.initializer:
        _clear_data(t)
        if use_external:
            offset, length = offsets[t.name]
            t.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
        else:
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = arrays[t.name].tobytes()
    atomic_file_write(dst_path, lambda path: path.write_bytes(model.SerializeToString()), overwrite=overwrite)
    if report is not None:
        report(result.summary())
    return result
