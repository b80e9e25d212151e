"""Adversarial cases: onnx. See tests/adversarial/__init__.py for the shape of a case.

Models whose external data is hostile or broken (in the main graph and inside ``If`` branches),
models nested deeper than protobuf allows, and snapshots whose kept graph (``onnx/model.onnx``)
is not an ONNX model. Every input is built as bytes here, so no check of onnx's own writer
stands between the hostile value and lamina.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, helper, numpy_helper

import lamina

from . import Case, varint

WEIGHT = np.arange(4, dtype=np.float32).reshape(2, 2)  # 16 bytes, F32[2, 2]
Target = tuple[Path, Path]  # (source, destination)


def _matmul_graph(name: str, initializers: list[TensorProto], x: str = "x") -> object:
    return helper.make_graph([helper.make_node("MatMul", [x, "fc.weight"], [f"{name}.y"])], name, [],
                             [helper.make_tensor_value_info(f"{name}.y", TensorProto.FLOAT, [1, 2])], initializers)


def _model(weight: TensorProto, *, nested: bool) -> ModelProto:
    """y = x @ fc.weight, with fc.weight in the main graph or inside the then-branch of an If."""
    if nested:
        cond = numpy_helper.from_array(np.array(True), "cond")
        other = numpy_helper.from_array(WEIGHT, "other.weight")
        then_branch = _matmul_graph("then", [weight])
        else_branch = helper.make_graph([helper.make_node("MatMul", ["x", "other.weight"], ["else.y"])], "else", [],
                                        [helper.make_tensor_value_info("else.y", TensorProto.FLOAT, [1, 2])], [other])
        node = helper.make_node("If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [cond])
    else:
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "fc.weight"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _external(location: str | None, *, offset: str = "0", length: str = "16", data: bytes | None = WEIGHT.tobytes(),
              nested: bool = False, prepare: Callable[[Path], None] | None = None) -> Callable[[Path], Target]:
    """A model whose fc.weight points at external data; ``data`` is written to ``model/w.bin``."""
    def build(tmp: Path) -> Target:
        t = TensorProto()
        t.name, t.data_type, t.data_location = "fc.weight", TensorProto.FLOAT, TensorProto.EXTERNAL
        t.dims.extend(WEIGHT.shape)
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            if value is not None:
                entry = t.external_data.add()
                entry.key, entry.value = key, value
        src = tmp / "model" / "m.onnx"
        src.parent.mkdir()
        src.write_bytes(_model(t, nested=nested).SerializeToString())
        if data is not None:
            (tmp / "model" / "w.bin").write_bytes(data)
        if prepare is not None:
            prepare(tmp)
        return src, tmp / "snap"
    return build


def _outside(tmp: Path) -> None:
    (tmp / "outside.bin").write_bytes(WEIGHT.tobytes())


def _symlink_outside(tmp: Path) -> None:
    _outside(tmp)
    (tmp / "model" / "link.bin").symlink_to(tmp / "outside.bin")


def _symlink_loop(tmp: Path) -> None:
    (tmp / "model" / "a.bin").symlink_to("b.bin")
    (tmp / "model" / "b.bin").symlink_to("a.bin")


def _directory(tmp: Path) -> None:
    (tmp / "model" / "dir.bin").mkdir()


def _fifo(tmp: Path) -> None:
    os.mkfifo(tmp / "model" / "pipe.bin")  # opening it to read would block forever


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def _too_deep() -> bytes:
    """A ModelProto whose If branches nest 200 levels deep (protobuf refuses past 100)."""
    graph = b""
    for _ in range(200):
        attribute = _ld(1, b"then_branch") + _ld(6, graph)  # AttributeProto name, g
        graph = _ld(1, _ld(5, attribute))  # GraphProto.node -> NodeProto.attribute
    return b"\x08\x08" + _ld(7, graph)  # ir_version 8, graph


def _model_file(data: Callable[[], bytes]) -> Callable[[Path], Target]:
    def build(tmp: Path) -> Target:
        src = tmp / "model" / "m.onnx"
        src.parent.mkdir()
        src.write_bytes(data())
        return src, tmp / "snap"
    return build


def _branch(model: ModelProto, name: str) -> object:
    return next(a.g for a in model.graph.node[0].attribute if a.name == name)


def _sparse(nested: bool) -> bytes:
    model = _model(numpy_helper.from_array(WEIGHT, "fc.weight"), nested=nested)
    graph = _branch(model, "then_branch") if nested else model.graph
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sp.values")
    indices = numpy_helper.from_array(np.array([3], np.int64), "sp.indices")
    graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [2, 2]))
    return model.SerializeToString()


def _duplicate_in_branches() -> bytes:
    """Both branches hold an initializer named fc.weight, with different values: valid ONNX (each
    branch sees its own), but lamina keys tensors by name (equal values are stored once)."""
    model = _model(numpy_helper.from_array(WEIGHT, "fc.weight"), nested=True)
    branch = _branch(model, "else_branch")
    branch.initializer[0].CopyFrom(numpy_helper.from_array(WEIGHT * 2, "fc.weight"))
    branch.node[0].input[1] = "fc.weight"
    return model.SerializeToString()


def _snapshot_with_graph(graph: Callable[[], bytes]) -> Callable[[Path], Target]:
    """A snapshot whose kept graph ``onnx/model.onnx`` holds ``graph()`` (listed and hashed in the
    manifest like any extra file, so it passes verification: only the ONNX parse can refuse it)."""
    def build(tmp: Path) -> Target:
        lamina.save({"fc.weight": WEIGHT}, tmp / "snap", files={"onnx/model.onnx": graph()})
        return tmp / "snap", tmp / "out.onnx"
    return build


def _truncated() -> bytes:
    data = _model(numpy_helper.from_array(WEIGHT, "fc.weight"), nested=True).SerializeToString()
    return data[: len(data) // 2 + 3]


def _convert(target: Target) -> None:
    lamina.convert(*target)


def _export(target: Target) -> None:
    src, dst = target
    try:
        lamina.convert(src, dst)
    finally:  # a refused export writes nothing: no model, no data file, no temporaries
        left = sorted(p.name for p in dst.parent.iterdir() if p.name not in ("snap",))
        assert left == [], left


_W = r"initializer 'fc\.weight'"
_RANDOM = np.random.default_rng(0).bytes(4096)

CASES: list[Case] = [
    # external data offset/length: precise messages naming the tensor, the field and the file
    Case("onnx_external_negative_offset", _external("w.bin", offset="-16"), _convert, lamina.FormatError,
         _W + r".*external data offset -16 in 'w\.bin' is negative"),
    Case("onnx_external_negative_length", _external("w.bin", length="-16"), _convert, lamina.FormatError,
         _W + r".*external data length -16 in 'w\.bin' is negative"),
    Case("onnx_external_offset_not_integer", _external("w.bin", offset="0x10"), _convert, lamina.FormatError,
         _W + r".*offset/length are not integers: offset '0x10', length '16' in 'w\.bin'"),
    Case("onnx_external_length_not_integer", _external("w.bin", length="16.0"), _convert, lamina.FormatError,
         _W + r".*offset/length are not integers: offset '0', length '16\.0' in 'w\.bin'"),
    Case("onnx_external_offset_overflows", _external("w.bin", offset=str(2**64 - 8)), _convert, lamina.FormatError,
         _W + r".*external data \[18446744073709551608, 18446744073709551624\) lies beyond the end of 'w\.bin' \(16 bytes\)"),
    Case("onnx_external_range_beyond_file", _external("w.bin", offset="8"), _convert, lamina.FormatError,
         _W + r".*external data \[8, 24\) lies beyond the end of 'w\.bin' \(16 bytes\)"),
    Case("onnx_external_length_mismatch", _external("w.bin", length="32", data=bytes(64)), _convert,
         lamina.FormatError, _W + r".*external data length 32 in 'w\.bin' does not match the 16 bytes F32\[2, 2\] needs"),
    Case("onnx_external_huge_length", _external("w.bin", length=str(1 << 40)), _convert, lamina.FormatError,
         _W + r".*length 1099511627776 in 'w\.bin' does not match the 16 bytes"),
    # external data location
    Case("onnx_external_missing_file", _external("w.bin", data=None), _convert, lamina.FormatError,
         _W + r".*external data file 'w\.bin' is missing"),
    Case("onnx_external_no_location", _external(None), _convert, lamina.FormatError,
         _W + r".*external data has no location"),
    Case("onnx_external_location_dotdot", _external("../outside.bin", prepare=_outside), _convert,
         lamina.UnsafePathError, r"'\.\./outside\.bin'.*'\.\.'"),
    Case("onnx_external_location_absolute", _external("/etc/passwd"), _convert, lamina.UnsafePathError,
         r"'/etc/passwd' is absolute"),
    Case("onnx_external_symlink_outside", _external("link.bin", prepare=_symlink_outside), _convert,
         lamina.UnsafePathError, r"'link\.bin' resolves outside"),
    Case("onnx_external_symlink_loop", _external("a.bin", prepare=_symlink_loop), _convert, lamina.FormatError,
         _W + r".*external data 'a\.bin' cannot be resolved"),
    Case("onnx_external_location_is_directory", _external("dir.bin", prepare=_directory), _convert,
         lamina.FormatError, _W + r".*external data file 'dir\.bin' is not a regular file"),
    Case("onnx_external_location_is_fifo", _external("pipe.bin", prepare=_fifo), _convert, lamina.FormatError,
         _W + r".*external data file 'pipe\.bin' is not a regular file", deadline=10),
    # the same checks reach initializers inside If branches
    Case("onnx_subgraph_external_dotdot", _external("../outside.bin", nested=True, prepare=_outside), _convert,
         lamina.UnsafePathError, r"initializer 'fc\.weight' \(in subgraph 'then'\).*'\.\./outside\.bin'"),
    Case("onnx_subgraph_external_negative_offset", _external("w.bin", offset="-4", nested=True), _convert,
         lamina.FormatError, _W + r" \(in subgraph 'then'\): external data offset -4 in 'w\.bin' is negative"),
    Case("onnx_subgraph_external_missing_file", _external("w.bin", data=None, nested=True), _convert,
         lamina.FormatError, _W + r" \(in subgraph 'then'\): external data file 'w\.bin' is missing"),
    Case("onnx_subgraph_sparse_initializer", _model_file(lambda: _sparse(True)), _convert, lamina.FormatError,
         r"m\.onnx.*sparse initializers.*subgraph 'then'"),
    Case("onnx_subgraph_duplicate_name", _model_file(_duplicate_in_branches), _convert, lamina.FormatError,
         r"m\.onnx: two initializers are named 'fc\.weight' with different values "
         r"\(in subgraph 'else'; in subgraph 'then'\)"),
    Case("onnx_model_nested_too_deep", _model_file(_too_deep), _convert, lamina.FormatError,
         r"m\.onnx: not an ONNX model \(protobuf decoding failed"),
    # a snapshot's kept graph that is not an ONNX model: refused on export, naming the file
    Case("onnx_graph_file_random_bytes", _snapshot_with_graph(lambda: _RANDOM), _export, lamina.FormatError,
         r"snap: onnx/model\.onnx: not an ONNX model \(protobuf decoding failed"),
    Case("onnx_graph_file_truncated", _snapshot_with_graph(_truncated), _export, lamina.FormatError,
         r"snap: onnx/model\.onnx: not an ONNX model"),
    Case("onnx_graph_file_empty", _snapshot_with_graph(lambda: b""), _export, lamina.FormatError,
         r"snap: onnx/model\.onnx: not an ONNX model \(no ir_version or graph\)"),
    Case("onnx_graph_file_nested_too_deep", _snapshot_with_graph(_too_deep), _export, lamina.FormatError,
         r"snap: onnx/model\.onnx: not an ONNX model \(protobuf decoding failed"),
    Case("onnx_graph_file_sparse_initializer", _snapshot_with_graph(lambda: _sparse(True)), _export,
         lamina.FormatError, r"snap: onnx/model\.onnx: sparse initializers"),
]
