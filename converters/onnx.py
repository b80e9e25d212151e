"""ONNX models <-> lamina snapshots.

In: every initializer (raw_data, typed fields or external data), in the main graph or in any
subgraph (``If``/``Loop``/``Scan`` bodies), becomes a tensor, one shard per layer (the initializer
name without its last dotted component); the graph itself is kept in the snapshot as
``onnx/model.onnx`` with its initializers emptied. External data locations and ranges are
validated before anything is read: relative, inside the model's directory, within the file.
Memory: the model is parsed once and freed before shards are written, so the peak is about twice
the file (the parsed model plus the arrays taken from it).

Out: the graph with its initializers filled from the snapshot, inline, or with external data
(on request, or automatically for models over 2 GB): tensors of ``EXTERNAL_MIN_BYTES`` or more go
to ``<dst>.data``, smaller ones stay inline as onnx's own writer does (runtimes need shapes and
axes inline to plan the graph). With a template, a snapshot trained elsewhere (e.g. fine-tuned in
torch) refreshes the weights of an existing graph: initializers are matched by name and every
unmatched name on either side is reported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lamina._errors import FormatError
from lamina.frameworks.base import Collected
from lamina.frameworks.collect import tensor_source
from lamina.repo.repository import open_location
from lamina.repo.targets import write_snapshot
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.writer import atomic_file_write, check_file_destination

from ._onnx_model import (  # noqa: F401
    CODE_TO_ONNX,
    ONNX_TO_CODE,
    PROTOBUF_LIMIT,
    clear_data,
    holds_data,
    initializer_array,
    initializers,
    load_model,
    parse_model,
)

__all__ = ["to_lamina", "from_lamina", "OnnxExport", "GRAPH_FILE", "EXTERNAL_MIN_BYTES"]

GRAPH_FILE = "onnx/model.onnx"
#: with external data, tensors smaller than this stay inline (onnx.save_model's default threshold)
EXTERNAL_MIN_BYTES = 1024
_ALIGNMENT = 64  # external tensors start at multiples of this, so runtimes can mmap them
_RAW_DATA_OVERHEAD = 16  # protobuf tag and length of one raw_data field, at most


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


def _take_weights(src: Path) -> tuple[list[Any], bytes, dict[str, Any], str]:
    """Parse ``src`` and take every initializer out of it: (tensor sources, the graph without its
    weights, metadata, graph name). The protobuf is freed when this returns, before any shard is
    written; holding it while writing would double the peak."""
    model = load_model(src)
    sources, seen = [], {}
    for t, scope in initializers(model):
        array = initializer_array(t, src.parent, f"{src}: initializer {t.name!r}{scope}")
        clear_data(t)
        if t.name in seen:  # sibling subgraphs may reuse a name; one tensor can fill both only if equal
            first, first_scope = seen[t.name]
            if first.dtype == array.dtype and first.shape == array.shape and first.tobytes() == array.tobytes():
                continue
            raise FormatError(f"{src}: two initializers are named {t.name!r} with different values "
                              f"({first_scope.strip(' ()') or 'main graph'}; {scope.strip(' ()') or 'main graph'}); "
                              "lamina keys tensors by name")
        seen[t.name] = (array, scope)
        sources.append(tensor_source(t.name, array)[0])
    meta = {"ir_version": model.ir_version, "producer_name": model.producer_name,
            "producer_version": model.producer_version,
            "opset_import": [{"domain": o.domain, "version": o.version} for o in model.opset_import]}
    return sources, model.SerializeToString(deterministic=True), meta, model.graph.name


# ------------------------------------------------------------------------------- public API
def to_lamina(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
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
    sources, graph, meta, name = _take_weights(src_path)
    collected = Collected(sources, {}, {"name": "onnx", "version": onnx.__version__})
    info = dict(info) if info is not None else {"name": name or src_path.stem}
    info.setdefault("extra", {})
    info["extra"] = {**info["extra"], "onnx": meta}
    return write_snapshot(dst, collected, info=info, files={GRAPH_FILE: graph},
                          overwrite=overwrite, durable=durable, progress=progress)


def from_lamina(
    src: str | os.PathLike[str] | Artifact,
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
        external_data: store tensors of ``EXTERNAL_MIN_BYTES`` (1 kB) or more in ``<dst>.data``
            beside the model; smaller ones (shapes, axes) stay inline, as ``onnx.save_model``
            keeps them: runtimes refuse them as external data. Default: only when the model would
            exceed the 2 GB protobuf limit. No data file is written when no tensor is that large.
        report: called with a summary of matched and unmatched names.

    Returns:
        An :class:`OnnxExport` (a path-like) listing replaced and unmatched names.
    """
    art = src if isinstance(src, Artifact) else open_location(src)
    dst_path = Path(dst)
    data_path = dst_path.parent / f"{dst_path.name}.data"
    check_file_destination(dst_path, overwrite=overwrite)
    if external_data:
        check_file_destination(data_path, overwrite=overwrite)
    if onnx_template is not None:
        template = Path(onnx_template)
        model = load_model(template)
    elif GRAPH_FILE in art.files:
        model = parse_model(art.read_file(GRAPH_FILE), f"{art.location}: {GRAPH_FILE}")
    else:
        raise FormatError(f"{art.location} holds no ONNX graph (it was not converted from ONNX); pass "
                          "onnx_template=BASE.onnx (CLI: --onnx-template) to export its weights into an existing graph")
    result = OnnxExport(path=dst_path)
    inits = [t for t, _ in initializers(model)]
    arrays = _fill_arrays(art, inits, template if onnx_template is not None else None, result)
    for t in inits:
        clear_data(t)
    # decided on the graph without weights: a template's own data must not count twice
    inline_size = model.ByteSize() + sum(a.nbytes + _RAW_DATA_OVERHEAD for a in arrays)
    use_external = external_data if external_data is not None else inline_size > PROTOBUF_LIMIT
    if not use_external and inline_size > PROTOBUF_LIMIT:
        raise FormatError(f"{dst_path}: the model would be {inline_size} bytes, over the 2 GB protobuf limit; "
                          "use external data")
    placed = _place(inits, arrays, data_path.name if use_external else None)
    if model.ByteSize() > PROTOBUF_LIMIT:  # only when external: tensors under EXTERNAL_MIN_BYTES add up
        raise FormatError(f"{dst_path}: even with external data the model would be {model.ByteSize()} bytes, over "
                          f"the 2 GB protobuf limit (tensors under {EXTERNAL_MIN_BYTES} bytes stay inline)")
    if placed:
        def write_data(path: Path) -> None:
            with open(path, "wb") as f:
                for offset, array in placed:
                    f.write(b"\0" * (offset - f.tell()))
                    f.write(array.tobytes())

        check_file_destination(data_path, overwrite=overwrite)  # also when chosen for size
        atomic_file_write(data_path, write_data, overwrite=overwrite)
        result.data_file = data_path
    try:
        atomic_file_write(dst_path, lambda path: path.write_bytes(model.SerializeToString()), overwrite=overwrite)
    except BaseException:  # a data file without its model is half an output
        if result.data_file is not None:
            data_path.unlink(missing_ok=True)
        raise
    if report is not None:
        report(result.summary())
    return result


def _fill_arrays(art: Artifact, inits: list[Any], template: Path | None, result: OnnxExport) -> list[Any]:
    """The array for each initializer, in order: the snapshot's tensor of that name, else the
    template's own data, else (snapshots converted before subgraph weights became tensors) the
    data the kept graph still holds inline. Records replaced and unmatched names in ``result``."""
    from onnx import TensorProto

    stored = {t.name: t for t in art.manifest.tensors}
    entries = {name: stored[art.aliases.get(name, name)] for name in art.keys()}
    mismatched, arrays = [], []
    for t in inits:
        where = f"initializer {t.name!r}"
        if t.name in entries:
            entry = entries[t.name]
            code = ONNX_TO_CODE.get(t.data_type)
            if code != entry.dtype or tuple(t.dims) != entry.shape:
                mismatched.append(f"{t.name}: graph {code}{list(t.dims)} vs snapshot {entry.dtype}{list(entry.shape)}")
                continue
            arrays.append(art.tensor(t.name, framework="np"))
            result.replaced.append(t.name)
        elif template is not None:
            arrays.append(initializer_array(t, template.parent, f"{template}: {where}"))
            result.unmatched_graph.append(t.name)
        elif holds_data(t) and t.data_location != TensorProto.EXTERNAL:
            arrays.append(initializer_array(t, Path(art.location), f"{art.location}: {GRAPH_FILE}: {where}"))
            result.unmatched_graph.append(t.name)
        else:
            raise FormatError(f"{art.location}: the kept graph's {where} has no tensor in the snapshot")
    if mismatched:
        raise FormatError("snapshot tensors do not fit the graph's initializers: " + "; ".join(mismatched))
    graph_names = {t.name for t in inits}
    result.unmatched_snapshot = [n for n in art.keys() if n not in graph_names]
    return arrays


def _place(inits: list[Any], arrays: list[Any], data_file: str | None) -> list[tuple[int, Any]]:
    """Put each array into its (emptied) initializer: inline, or, when ``data_file`` is given and
    it holds ``EXTERNAL_MIN_BYTES`` or more, as a reference into that file. Returns the
    ``(offset, array)`` pairs the data file must hold. Inline arrays are dropped from ``arrays`` as
    they are copied in, so the model and the arrays are not both held whole."""
    from onnx import TensorProto

    placed, end = [], 0
    for i, t in enumerate(inits):
        array = arrays[i]
        if data_file is not None and array.nbytes >= EXTERNAL_MIN_BYTES:
            offset = end + (-end % _ALIGNMENT)
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_file), ("offset", str(offset)), ("length", str(array.nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            placed.append((offset, array))
            end = offset + array.nbytes
        else:
            t.raw_data = array.tobytes()
        arrays[i] = None
    return placed
