"""The ONNX converter (``lamina.converters.onnx``, ``lamina.convert``, ``lamina convert``).

Real torch models exported with ``torch.onnx.export(dynamo=True)``, hand-built graphs using every
way an initializer can hold its data (typed fields, raw_data, external data), onnxruntime outputs
compared bit for bit after a round trip, weight refresh of an existing graph from a fine-tuned
torch snapshot, hostile and broken inputs, format detection and the CLI.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import assert_clean_cli_error, cli, leftovers
from lamina.converters import onnx as onnx_converter
from lamina.converters._detect import destination_format, detect_source
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import lamina

OPSET = 17


# ------------------------------------------------------------------------------ helpers


def export(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """torch.onnx.export(dynamo=True), without its progress chatter."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=True)
    return path


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # unused initializers are expected in the hand-built graph
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ort_input(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    model = onnx.load_model(str(path), load_external_data=False)
    return {model.graph.input[0].name: x}


def assert_outputs_identical(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        assert np.array_equal(g, w), "onnxruntime outputs differ after the round trip"
        assert g.tobytes() == w.tobytes()


def initializers(path: Path) -> dict[str, np.ndarray]:
    """Every initializer of a model as numpy (external data loaded)."""
    model = onnx.load_model(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def initializer_protos(path: Path) -> list[TensorProto]:
    return list(onnx.load_model(str(path), load_external_data=False).graph.initializer)


def assert_bit_equal(got: np.ndarray, want: np.ndarray, where: str) -> None:
    assert got.dtype == want.dtype, (where, got.dtype, want.dtype)
    assert got.shape == want.shape, (where, got.shape, want.shape)
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), f"{where}: bytes differ"


def layer_of(name: str) -> str:
    head, dot, _ = name.rpartition(".")
    return head if dot else name


def assert_snapshot_matches(snap: Path, original: Path) -> lamina.Artifact:
    """The snapshot holds every initializer bit for bit, per layer, plus the graph; it verifies."""
    art = lamina.open(snap)
    art.verify()
    want = initializers(original)
    assert onnx_converter.GRAPH_FILE == "onnx/model.onnx"
    assert "onnx/model.onnx" in art.files
    assert sorted(art.keys()) == sorted(want)
    assert sorted(art.layers) == sorted({layer_of(n) for n in want})
    for name, array in want.items():
        assert_bit_equal(art.tensor(name, framework="np"), array, name)
        assert set(art.layer(layer_of(name), framework="np")) >= {name}
    graph = onnx.ModelProto()
    graph.ParseFromString(art.read_file("onnx/model.onnx"))
    kept = {t.name: t for t in graph.graph.initializer}
    assert sorted(kept) == sorted(want)
    for name, t in kept.items():  # the kept graph is stripped of weights
        assert not t.raw_data and not t.external_data and not t.float_data and not t.int32_data
        assert tuple(t.dims) == want[name].shape
    return art


# ------------------------------------------------------------------------------ models
class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.norm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[MLP, torch.Tensor, Path]:
    """An MLP and its dynamo export (``base.onnx``; torch puts large weights in ``base.onnx.data``)."""
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(5, 8)
    path = export(model, x, tmp_path_factory.mktemp("mlp") / "base.onnx")
    return model, x, path


@pytest.fixture(scope="module")
def conv_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[ConvNet, torch.Tensor, Path]:
    torch.manual_seed(1)
    model = ConvNet()
    with torch.no_grad():  # non-trivial statistics, so batch norm is not the identity
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(2, 3, 8, 8)
    path = export(model, x, tmp_path_factory.mktemp("conv") / "conv.onnx")
    return model, x, path


def _typed(name: str, data_type: int, dims: list[int], field: str, values: Any) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = name, data_type
    t.dims.extend(dims)
    getattr(t, field).extend(values)
    return t


def _raw(name: str, array: np.ndarray, data_type: int) -> TensorProto:
    t = TensorProto()
    t.name, t.data_type = name, data_type
    t.dims.extend(array.shape)
    t.raw_data = np.ascontiguousarray(array).tobytes()
    return t


def hand_built_model() -> onnx.ModelProto:
    """A runnable graph whose initializers use typed fields and raw_data, plus unused ones of
    types onnxruntime cannot compute with (bfloat16) or that exercise the other typed fields."""
    rng = np.random.default_rng(7)
    weight = rng.standard_normal((3, 4)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    half = np.array([1.5, -0.25], dtype=np.float16)
    bf_raw = np.array([[1.0, -2.5, 3.0e10], [0.0, -0.0, np.inf]], dtype=np.float32).astype(ml_dtypes.bfloat16)
    bf_typed = np.array([0.5, -1.25, 65504.0], dtype=np.float32).astype(ml_dtypes.bfloat16)
    inits = [
        _typed("dense.weight", TensorProto.FLOAT, [3, 4], "float_data", weight.ravel().tolist()),
        _raw("dense.bias", bias, TensorProto.FLOAT),
        _typed("reshape.shape", TensorProto.INT64, [2], "int64_data", [4, 2]),
        # FLOAT16 in int32_data holds the raw 16-bit patterns
        _typed("half.scale", TensorProto.FLOAT16, [2], "int32_data", half.view(np.uint16).astype(np.int32).tolist()),
        _typed("gather.indices", TensorProto.INT32, [2], "int32_data", [3, 0]),
        _raw("bf.raw", bf_raw, TensorProto.BFLOAT16),
        _typed("bf.typed", TensorProto.BFLOAT16, [3], "int32_data", bf_typed.view(np.uint16).astype(np.int32).tolist()),
        _typed("misc.double", TensorProto.DOUBLE, [2], "double_data", [np.pi, -1e300]),
        _typed("misc.u64", TensorProto.UINT64, [2], "uint64_data", [2**64 - 1, 3]),
        _typed("misc.i8", TensorProto.INT8, [3], "int32_data", [-128, 0, 127]),
        _typed("misc.flag", TensorProto.BOOL, [2, 2], "int32_data", [1, 0, 0, 1]),
        _typed("misc.f16raw", TensorProto.FLOAT16, [2], "int32_data",
               np.array([np.nan, -0.0], dtype=np.float16).view(np.uint16).astype(np.int32).tolist()),
        _typed("scalar", TensorProto.FLOAT, [], "float_data", [42.0]),
        _raw("misc.empty", np.zeros((0, 3), np.float32), TensorProto.FLOAT),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "dense.weight"], ["a"]),
        helper.make_node("Add", ["a", "dense.bias"], ["b"]),
        helper.make_node("Reshape", ["b", "reshape.shape"], ["c"]),
        helper.make_node("Cast", ["c"], ["c16"], to=TensorProto.FLOAT16),
        helper.make_node("Mul", ["c16", "half.scale"], ["y16"]),
        helper.make_node("Gather", ["c", "gather.indices"], ["g"], axis=0),
        helper.make_node("Mul", ["g", "scalar"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y16", TensorProto.FLOAT16, [4, 2]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lamina-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


HAND_X = np.arange(6, dtype=np.float32).reshape(2, 3) / 7


def float_model(name: str = "fc.weight", values: np.ndarray | None = None) -> onnx.ModelProto:
    """y = x @ W with W inline (raw_data)."""
    w = values if values is not None else np.arange(4, dtype=np.float32).reshape(2, 2)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", name], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                              [numpy_helper.from_array(w, name)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def external_model(path: Path, location: str, *, offset: int = 0, length: int | None = None) -> Path:
    """A model whose one 16-byte initializer points at ``location`` (written as bytes, no onnx path checks)."""
    model = float_model()
    t = model.graph.initializer[0]
    size = len(t.raw_data)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(size if length is None else length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


# ------------------------------------------------------------------------------ round trips
def test_torch_mlp_round_trip_gives_identical_onnxruntime_outputs(tmp_path: Path, mlp_export) -> None:
    model, x, src = mlp_export
    art = onnx_converter.to_lamina(src, tmp_path / "snap")
    assert art.layers == lamina.open(tmp_path / "snap").layers
    art = assert_snapshot_matches(tmp_path / "snap", src)
    assert sorted(art.layers) == ["fc1", "fc2", "norm"]
    for name, t in model.state_dict().items():  # the initializers are torch's parameters, bit for bit
        assert torch.equal(art.tensor(name), t), name
    meta = art.info.extra["onnx"]
    original = onnx.load_model(str(src), load_external_data=False)
    assert meta["ir_version"] == original.ir_version
    assert {(o["domain"], o["version"]) for o in meta["opset_import"]} == {(o.domain, o.version) for o in original.opset_import}

    out = onnx_converter.from_lamina(tmp_path / "snap", tmp_path / "back.onnx")
    assert isinstance(out, onnx_converter.OnnxExport) and os.fspath(out) == str(tmp_path / "back.onnx")
    assert out.data_file is None and not (tmp_path / "back.onnx.data").exists()
    assert out.unmatched_graph == [] and out.unmatched_snapshot == []
    assert out.replaced == [t.name for t in original.graph.initializer]
    onnx.checker.check_model(str(tmp_path / "back.onnx"))
    feeds = ort_input(src, x.numpy())
    want = ort_run(src, feeds)
    assert_outputs_identical(ort_run(tmp_path / "back.onnx", feeds), want)
    np.testing.assert_allclose(want[0], model(x).detach().numpy(), atol=1e-5)
    for name, array in initializers(src).items():
        assert_bit_equal(initializers(tmp_path / "back.onnx")[name], array, name)
    assert leftovers(tmp_path) == []


def test_conv_batchnorm_net_round_trip_gives_identical_onnxruntime_outputs(tmp_path: Path, conv_export) -> None:
    model, x, src = conv_export
    lamina.convert(src, tmp_path / "snap")
    art = assert_snapshot_matches(tmp_path / "snap", src)
    assert {"conv", "fc"} <= set(art.layers)
    lamina.convert(tmp_path / "snap", tmp_path / "back.onnx")
    onnx.checker.check_model(str(tmp_path / "back.onnx"))
    feeds = ort_input(src, x.numpy())
    want = ort_run(src, feeds)
    np.testing.assert_allclose(want[0], model(x).detach().numpy(), atol=1e-4)
    assert_outputs_identical(ort_run(tmp_path / "back.onnx", feeds), want)
    back = initializers(tmp_path / "back.onnx")
    for name, array in initializers(src).items():
        assert_bit_equal(back[name], array, name)
    # the graph is unchanged apart from where the weights live
    a = onnx.load_model(str(src), load_external_data=False)
    b = onnx.load_model(str(tmp_path / "back.onnx"), load_external_data=False)
    assert a.graph.node == b.graph.node and a.graph.input == b.graph.input and a.graph.output == b.graph.output
    assert [(t.name, t.data_type, list(t.dims)) for t in a.graph.initializer] == \
        [(t.name, t.data_type, list(t.dims)) for t in b.graph.initializer]


@pytest.mark.parametrize("storage", ["inline", "external"])
def test_hand_built_graph_typed_raw_bfloat16_and_external_data_round_trip(tmp_path: Path, storage: str) -> None:
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "hand.onnx"
    model = hand_built_model()
    if storage == "inline":
        onnx.save_model(model, str(src))
    else:
        onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="w.data", size_threshold=0)
        assert (src_dir / "w.data").is_file()
        protos = {t.name: t for t in initializer_protos(src)}
        assert protos["dense.bias"].data_location == TensorProto.EXTERNAL
        assert protos["bf.raw"].data_location == TensorProto.EXTERNAL
    original_protos = {t.name: t for t in initializer_protos(src)}
    if storage == "inline":  # the typed fields really are typed fields
        assert original_protos["dense.weight"].float_data and not original_protos["dense.weight"].raw_data
        assert original_protos["half.scale"].int32_data and original_protos["reshape.shape"].int64_data

    art = onnx_converter.to_lamina(src, tmp_path / "snap")
    assert_snapshot_matches(tmp_path / "snap", src)
    assert art.info.name == "handmade"
    assert set(art.layers) == {"dense", "reshape", "half", "gather", "bf", "misc", "scalar"}
    assert lamina.open(tmp_path / "snap").layer("misc", framework="np").keys() == \
        {"misc.double", "misc.u64", "misc.i8", "misc.flag", "misc.f16raw", "misc.empty"}
    dtypes = {t.name: t.dtype for t in art.manifest.tensors}
    assert dtypes["half.scale"] == "F16" and dtypes["bf.raw"] == "BF16" and dtypes["bf.typed"] == "BF16"
    assert dtypes["misc.u64"] == "U64" and dtypes["misc.flag"] == "BOOL" and dtypes["reshape.shape"] == "I64"
    bf = art.tensor("bf.raw", framework="np")
    assert bf.dtype == ml_dtypes.bfloat16 and bf.astype(np.float32)[0, 1] == -2.5
    assert art.tensor("misc.u64", framework="np").tolist() == [2**64 - 1, 3]

    out = onnx_converter.from_lamina(tmp_path / "snap", tmp_path / "back.onnx")
    assert out.replaced == [t.name for t in hand_built_model().graph.initializer]
    onnx.checker.check_model(str(tmp_path / "back.onnx"))
    back = {t.name: t for t in initializer_protos(tmp_path / "back.onnx")}
    want = initializers(src)
    assert list(back) == [t.name for t in hand_built_model().graph.initializer]
    for name, t in back.items():
        assert t.data_type == original_protos[name].data_type and list(t.dims) == list(original_protos[name].dims)
        assert_bit_equal(numpy_helper.to_array(t), want[name], name)
    # bfloat16 never runs through onnxruntime: compare the initializer bytes themselves
    assert back["bf.raw"].raw_data == want["bf.raw"].tobytes()
    assert numpy_helper.to_array(back["bf.typed"]).view(np.uint16).tolist() == \
        numpy_helper.to_array(original_protos["bf.typed"]).view(np.uint16).tolist()
    assert numpy_helper.to_array(back["misc.f16raw"]).view(np.uint16).tolist() == [0x7E00, 0x8000]

    want_out = ort_run(src, {"x": HAND_X})
    assert want_out[0].dtype == np.float16
    assert_outputs_identical(ort_run(tmp_path / "back.onnx", {"x": HAND_X}), want_out)


def test_onnx_to_onnx_through_convert_is_identical(tmp_path: Path, conv_export) -> None:
    _, x, src = conv_export
    out = lamina.convert(src, tmp_path / "copy.onnx")
    assert out == tmp_path / "copy.onnx"
    feeds = ort_input(src, x.numpy())
    assert_outputs_identical(ort_run(out, feeds), ort_run(src, feeds))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.onnx"]  # no temporary snapshot left


def test_every_typed_field_dtype_round_trips_bit_exactly(tmp_path: Path) -> None:
    """Types onnxruntime need not run, each in the typed field the ONNX spec stores it in."""
    f8 = np.array([0.5, -2.0, 448.0], np.float32).astype(ml_dtypes.float8_e4m3fn)
    f8b = np.array([0.5, -2.0, 57344.0], np.float32).astype(ml_dtypes.float8_e5m2)
    model = float_model()
    model.graph.initializer.extend([
        _typed("t.c64", TensorProto.COMPLEX64, [2], "float_data", [1.0, 2.0, -3.5, -0.0]),
        _typed("t.f8", TensorProto.FLOAT8E4M3FN, [3], "int32_data", f8.view(np.uint8).astype(np.int32).tolist()),
        _typed("t.f8b", TensorProto.FLOAT8E5M2, [3], "int32_data", f8b.view(np.uint8).astype(np.int32).tolist()),
        _typed("t.e8m0", TensorProto.FLOAT8E8M0, [2], "int32_data", [127, 255]),
        _typed("t.u16", TensorProto.UINT16, [2], "int32_data", [65535, 1]),
        _typed("t.i16", TensorProto.INT16, [2], "int32_data", [-32768, 1]),
        _typed("t.u32", TensorProto.UINT32, [2], "uint64_data", [2**32 - 1, 1]),
        _typed("t.u8", TensorProto.UINT8, [2, 1], "int32_data", [255, 1]),
        _typed("t.i64", TensorProto.INT64, [1, 1, 2], "int64_data", [-2**63, 2**63 - 1]),
    ])
    src = tmp_path / "types.onnx"
    src.write_bytes(model.SerializeToString())
    art = onnx_converter.to_lamina(src, tmp_path / "snap")
    assert {t.name: t.dtype for t in art.manifest.tensors} == {
        "fc.weight": "F32", "t.c64": "C64", "t.f8": "F8_E4M3", "t.f8b": "F8_E5M2", "t.e8m0": "F8_E8M0",
        "t.u16": "U16", "t.i16": "I16", "t.u32": "U32", "t.u8": "U8", "t.i64": "I64"}
    assert_snapshot_matches(tmp_path / "snap", src)
    assert art.tensor("t.c64", framework="np").tolist() == [1 + 2j, -3.5 - 0j]
    assert art.tensor("t.i64", framework="np").ravel().tolist() == [-2**63, 2**63 - 1]
    onnx_converter.from_lamina(art, tmp_path / "back.onnx")
    original = {t.name: t for t in model.graph.initializer}
    for t in initializer_protos(tmp_path / "back.onnx"):
        assert t.data_type == original[t.name].data_type and t.dims == original[t.name].dims
        assert_bit_equal(numpy_helper.to_array(t), numpy_helper.to_array(original[t.name]), t.name)


# ------------------------------------------------------------------------------ external data on export
def test_export_with_external_data_on_request(tmp_path: Path, conv_export) -> None:
    """Tensors of EXTERNAL_MIN_BYTES or more go to the data file (64-byte aligned), smaller ones
    (shape and axes constants onnxruntime needs inline) stay in the model, as onnx's writer does."""
    _, x, src = conv_export
    snap = onnx_converter.to_lamina(src, tmp_path / "snap")
    feeds = ort_input(src, x.numpy())
    want = ort_run(src, feeds)
    sizes = {name: a.nbytes for name, a in initializers(src).items()}
    assert any(n >= onnx_converter.EXTERNAL_MIN_BYTES for n in sizes.values())
    assert any(n < onnx_converter.EXTERNAL_MIN_BYTES for n in sizes.values())

    out = onnx_converter.from_lamina(snap, tmp_path / "ext.onnx", external_data=True)
    data = tmp_path / "ext.onnx.data"
    assert out.data_file == data and data.is_file()
    onnx.checker.check_model(str(tmp_path / "ext.onnx"))
    protos = initializer_protos(tmp_path / "ext.onnx")
    total = 0
    for t in protos:
        external = sizes[t.name] >= onnx_converter.EXTERNAL_MIN_BYTES
        assert (t.data_location == TensorProto.EXTERNAL) == external, t.name
        if external:
            assert not t.raw_data
            entries = {e.key: e.value for e in t.external_data}
            assert entries["location"] == "ext.onnx.data" and int(entries["offset"]) % 64 == 0
            total += int(entries["length"])
    assert total == sum(n for n in sizes.values() if n >= onnx_converter.EXTERNAL_MIN_BYTES)
    assert data.stat().st_size >= total
    assert_outputs_identical(ort_run(tmp_path / "ext.onnx", feeds), want)
    for name, array in initializers(src).items():
        assert_bit_equal(initializers(tmp_path / "ext.onnx")[name], array, name)

    # the data file alone blocks a new export unless overwrite
    (tmp_path / "ext.onnx").unlink()
    with pytest.raises(lamina.ExistsError, match="overwrite"):
        onnx_converter.from_lamina(snap, tmp_path / "ext.onnx", external_data=True)
    assert not (tmp_path / "ext.onnx").exists()
    onnx_converter.from_lamina(snap, tmp_path / "ext.onnx", external_data=True, overwrite=True)
    assert_outputs_identical(ort_run(tmp_path / "ext.onnx", feeds), want)

    res = cli("convert", tmp_path / "snap", tmp_path / "cli.onnx", "--external-data")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cli.onnx.data").is_file()
    onnx.checker.check_model(str(tmp_path / "cli.onnx"))
    assert all((t.data_location == TensorProto.EXTERNAL) == (sizes[t.name] >= onnx_converter.EXTERNAL_MIN_BYTES)
               for t in initializer_protos(tmp_path / "cli.onnx"))
    assert_outputs_identical(ort_run(tmp_path / "cli.onnx", feeds), want)

    res = cli("convert", tmp_path / "snap", tmp_path / "inline.onnx", "--no-external-data")
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "inline.onnx.data").exists()
    assert all(t.data_location == TensorProto.DEFAULT and t.raw_data for t in initializer_protos(tmp_path / "inline.onnx"))
    assert_outputs_identical(ort_run(tmp_path / "inline.onnx", feeds), want)
    # the weights are in the data file, not in the model
    assert (tmp_path / "inline.onnx").stat().st_size > (tmp_path / "cli.onnx").stat().st_size + total // 2
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ weight refresh
def fine_tune(model: MLP, x: torch.Tensor, steps: int = 3) -> MLP:
    tuned = copy.deepcopy(model).train()
    opt = torch.optim.SGD(tuned.parameters(), lr=0.1)
    target = torch.ones(x.shape[0], 4)
    for _ in range(steps):
        loss = (tuned(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuned.eval()


def test_weight_refresh_from_a_fine_tuned_torch_snapshot(tmp_path: Path, mlp_export) -> None:
    model, x, base = mlp_export
    tuned = fine_tune(model, x)
    assert not torch.equal(tuned.fc1.weight, model.fc1.weight)
    lamina.save(tuned, tmp_path / "ft")
    feeds = ort_input(base, x.numpy())
    base_out = ort_run(base, feeds)[0]

    out = lamina.convert(tmp_path / "ft", tmp_path / "out.onnx", onnx_template=base)
    assert out == tmp_path / "out.onnx"
    onnx.checker.check_model(str(out))
    got = ort_run(out, feeds)[0]
    with torch.no_grad():
        want = tuned(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, base_out, atol=1e-5)
    for name, t in tuned.state_dict().items():  # every initializer is the fine-tuned tensor, bit for bit
        assert_bit_equal(initializers(out)[name], t.numpy(), name)
    # the graph is the template's
    a = onnx.load_model(str(base), load_external_data=False)
    b = onnx.load_model(str(out), load_external_data=False)
    assert a.graph.node == b.graph.node

    messages: list[str] = []
    report = onnx_converter.from_lamina(tmp_path / "ft", tmp_path / "again.onnx", onnx_template=base,
                                        report=messages.append)
    assert report.replaced == [t.name for t in a.graph.initializer]
    assert sorted(report.replaced) == sorted(tuned.state_dict())
    assert report.unmatched_snapshot == [] and report.unmatched_graph == []
    assert messages == [report.summary()] and messages[0] == f"replaced {len(report.replaced)} initializers"
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()
    hints: list[str] = []  # lamina.convert hands the report hint to the converter
    lamina.convert(tmp_path / "ft", tmp_path / "third.onnx", onnx_template=base, report=hints.append)
    assert hints == messages
    assert leftovers(tmp_path) == []


def test_weight_refresh_reports_unmatched_names_on_both_sides(tmp_path: Path, mlp_export) -> None:
    model, x, base = mlp_export
    tuned = fine_tune(model, x)
    state = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    del state["fc1.weight"]  # the graph has it (in torch's external data file), the snapshot not
    state["head.temperature"] = torch.tensor([2.0])  # the snapshot has it, the graph not
    state["extra"] = torch.zeros(3, 3)
    lamina.save(state, tmp_path / "ft")

    messages: list[str] = []
    report = onnx_converter.from_lamina(tmp_path / "ft", tmp_path / "out.onnx", onnx_template=base,
                                        report=messages.append)
    graph_names = [t.name for t in onnx.load_model(str(base), load_external_data=False).graph.initializer]
    assert report.replaced == [n for n in graph_names if n != "fc1.weight"]
    assert report.unmatched_graph == ["fc1.weight"]
    assert sorted(report.unmatched_snapshot) == ["extra", "head.temperature"]
    assert len(report.unmatched_snapshot) == 2
    summary = report.summary()
    assert messages == [summary]
    assert f"replaced {len(graph_names) - 1} initializers" in summary
    assert "head.temperature" in summary and "extra" in summary and "fc1.weight" in summary

    # fc1.weight is kept from the template, everything else is fine-tuned
    mixed = copy.deepcopy(tuned)
    with torch.no_grad():
        mixed.fc1.weight.copy_(model.fc1.weight)
        want = mixed(x).numpy()
    got = ort_run(tmp_path / "out.onnx", ort_input(base, x.numpy()))[0]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert_bit_equal(initializers(tmp_path / "out.onnx")["fc1.weight"], model.fc1.weight.detach().numpy(), "fc1.weight")
    assert_bit_equal(initializers(tmp_path / "out.onnx")["fc2.bias"], tuned.fc2.bias.detach().numpy(), "fc2.bias")

    # the CLI prints the same report on stderr
    res = cli("convert", tmp_path / "ft", tmp_path / "cli.onnx", "--onnx-template", base)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    for line in summary.splitlines():
        assert line in res.stderr, (line, res.stderr)
    assert "cli.onnx" in res.stdout
    assert (tmp_path / "cli.onnx").read_bytes() == (tmp_path / "out.onnx").read_bytes()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("external", [False, True])
def test_weight_refresh_in_place_over_the_template(tmp_path: Path, mlp_export, external: bool) -> None:
    """dst == template: the template's weights (some in torch's base.onnx.data) are read before anything is written."""
    model, x, exported = mlp_export
    for f in exported.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    base = tmp_path / exported.name
    assert (tmp_path / "base.onnx.data").is_file()  # torch wrote external data: the name we are about to reuse
    tuned = fine_tune(model, x)
    state = {k: v.detach().clone() for k, v in tuned.state_dict().items()}
    del state["fc1.weight"]  # kept from the template's external data
    lamina.save(state, tmp_path / "ft")
    with pytest.raises(lamina.ExistsError):
        onnx_converter.from_lamina(tmp_path / "ft", base, onnx_template=base)
    report = onnx_converter.from_lamina(tmp_path / "ft", base, onnx_template=base, overwrite=True,
                                        external_data=external)
    assert report.unmatched_graph == ["fc1.weight"]
    onnx.checker.check_model(str(base))
    mixed = copy.deepcopy(tuned)
    with torch.no_grad():
        mixed.fc1.weight.copy_(model.fc1.weight)
        want = mixed(x).numpy()
    np.testing.assert_allclose(ort_run(base, ort_input(base, x.numpy()))[0], want, atol=1e-5)
    assert_bit_equal(initializers(base)["fc1.weight"], model.fc1.weight.detach().numpy(), "fc1.weight")
    assert leftovers(tmp_path) == []


def test_template_that_is_not_onnx_is_a_format_error(tmp_path: Path, mlp_export) -> None:
    model, _, _ = mlp_export
    lamina.save(model, tmp_path / "snap")
    template = _random_bytes(tmp_path)
    with pytest.raises(lamina.FormatError, match="not an ONNX model"):
        onnx_converter.from_lamina(tmp_path / "snap", tmp_path / "out.onnx", onnx_template=template)
    assert_clean_cli_error(cli("convert", tmp_path / "snap", tmp_path / "out.onnx", "--onnx-template", template),
                           lamina.FormatError, "x.onnx")
    with pytest.raises(lamina.NotFoundError):
        onnx_converter.from_lamina(tmp_path / "snap", tmp_path / "out.onnx", onnx_template=tmp_path / "nope.onnx")
    assert not (tmp_path / "out.onnx").exists() and leftovers(tmp_path) == []


def test_weight_refresh_with_an_aliased_snapshot(tmp_path: Path, mlp_export) -> None:
    """A tied name in the snapshot fills the template's initializer of that name."""
    model, x, base = mlp_export

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(8, 16)
            self.norm = nn.LayerNorm(16)
            self.fc2 = nn.Linear(16, 4)
            self.norm.weight = nn.Parameter(torch.full((16,), 0.5))
            self.norm.bias = self.fc1.bias  # tied: stored once, aliased

    torch.manual_seed(3)
    tied = Tied()
    art = lamina.save(tied, tmp_path / "tied")
    assert art.aliases  # one of the two names is an alias
    report = onnx_converter.from_lamina(tmp_path / "tied", tmp_path / "out.onnx", onnx_template=base)
    assert sorted(report.replaced) == sorted(tied.state_dict())
    got = initializers(tmp_path / "out.onnx")
    assert_bit_equal(got["norm.bias"], tied.fc1.bias.detach().numpy(), "norm.bias")
    assert_bit_equal(got["fc1.bias"], tied.fc1.bias.detach().numpy(), "fc1.bias")


def test_weight_refresh_shape_or_dtype_mismatch_is_a_format_error(tmp_path: Path, mlp_export) -> None:
    model, _, base = mlp_export
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["fc1.weight"] = torch.zeros(16, 9)
    lamina.save(state, tmp_path / "shape")
    with pytest.raises(lamina.FormatError, match=r"fc1\.weight") as caught:
        onnx_converter.from_lamina(tmp_path / "shape", tmp_path / "out.onnx", onnx_template=base)
    assert "[16, 9]" in str(caught.value) and "[16, 8]" in str(caught.value)
    assert not (tmp_path / "out.onnx").exists() and leftovers(tmp_path) == []
    res = cli("convert", tmp_path / "shape", tmp_path / "out.onnx", "--onnx-template", base)
    assert_clean_cli_error(res, lamina.FormatError, "fc1.weight")
    assert not (tmp_path / "out.onnx").exists() and leftovers(tmp_path) == []

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state["fc2.bias"] = state["fc2.bias"].double()
    lamina.save(state, tmp_path / "dtype")
    with pytest.raises(lamina.FormatError, match=r"fc2\.bias.*F64"):
        onnx_converter.from_lamina(tmp_path / "dtype", tmp_path / "out.onnx", onnx_template=base)
    assert not (tmp_path / "out.onnx").exists() and leftovers(tmp_path) == []


def test_torch_snapshot_without_a_template_is_a_format_error(tmp_path: Path, mlp_export) -> None:
    model, _, _ = mlp_export
    lamina.save(model, tmp_path / "snap")
    with pytest.raises(lamina.FormatError, match="onnx_template"):
        onnx_converter.from_lamina(tmp_path / "snap", tmp_path / "out.onnx")
    with pytest.raises(lamina.FormatError, match="onnx_template"):
        lamina.convert(tmp_path / "snap", tmp_path / "out.onnx")
    res = cli("convert", tmp_path / "snap", tmp_path / "out.onnx")
    assert_clean_cli_error(res, lamina.FormatError, "--onnx-template")
    assert not (tmp_path / "out.onnx").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ bad input
def _dotdot(tmp: Path) -> Path:
    (tmp / "outside.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return external_model(tmp / "model" / "m.onnx", "../outside.bin")


def _absolute(tmp: Path) -> Path:
    return external_model(tmp / "model" / "m.onnx", "/etc/passwd")


def _symlink(tmp: Path) -> Path:
    (tmp / "outside.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = external_model(tmp / "model" / "m.onnx", "w.bin")
    (tmp / "model" / "w.bin").symlink_to(tmp / "outside.bin")
    return path


def _symlinked_dir(tmp: Path) -> Path:
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    path = external_model(tmp / "model" / "m.onnx", "sub/w.bin")
    (tmp / "model" / "sub").symlink_to(tmp / "elsewhere", target_is_directory=True)
    return path


def _beyond(tmp: Path) -> Path:
    path = external_model(tmp / "model" / "m.onnx", "w.bin", offset=8)
    (tmp / "model" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())  # 16 bytes, needs [8, 24)
    return path


def _length(tmp: Path) -> Path:
    path = external_model(tmp / "model" / "m.onnx", "w.bin", length=1 << 40)
    (tmp / "model" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return path


def _missing_data(tmp: Path) -> Path:
    return external_model(tmp / "model" / "m.onnx", "w.bin")


def _random_bytes(tmp: Path) -> Path:
    path = tmp / "model" / "x.onnx"
    path.parent.mkdir()
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _text(tmp: Path) -> Path:
    path = tmp / "model" / "notes.onnx"
    path.parent.mkdir(parents=True)
    path.write_text("This is a plain text file, not an ONNX model.\n" * 20)
    return path


def _truncated(tmp: Path) -> Path:
    path = tmp / "model" / "cut.onnx"
    path.parent.mkdir()
    data = hand_built_model().SerializeToString()
    path.write_bytes(data[: len(data) // 2 + 3])
    return path


def _nonexistent(tmp: Path) -> Path:
    (tmp / "model").mkdir()
    return tmp / "model" / "nope.onnx"


def _unsupported(data_type: int) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        model = float_model()
        if data_type == TensorProto.STRING:
            t = helper.make_tensor("vocab.tokens", TensorProto.STRING, [2], [b"a", b"b"])
        else:
            t = TensorProto()
            t.name, t.data_type = "q.packed", data_type
            t.dims.extend([4])
            t.raw_data = b"\x12\x34"
        model.graph.initializer.append(t)
        path = tmp / "model" / "m.onnx"
        path.parent.mkdir()
        path.write_bytes(model.SerializeToString())
        return path
    return build


def _typed_count_mismatch(tmp: Path) -> Path:
    model = float_model()
    model.graph.initializer.append(_typed("fc.bias", TensorProto.FLOAT, [2, 2], "float_data", [1.0, 2.0, 3.0]))
    path = tmp / "model" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    return path


def _sparse(tmp: Path) -> Path:
    model = float_model()
    values = numpy_helper.from_array(np.array([1.0], np.float32), "sp.values")
    indices = numpy_helper.from_array(np.array([3], np.int64), "sp.indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [2, 2]))
    path = tmp / "model" / "m.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    return path


def _offset_not_integer(tmp: Path) -> Path:
    path = tmp / "model" / "m.onnx"
    model = onnx.load_model(str(external_model(path, "w.bin")), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "offset":
            entry.value = "zero"
    path.write_bytes(model.SerializeToString())
    (tmp / "model" / "w.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    return path


BAD_INPUTS = {
    "dotdot_location": (_dotdot, lamina.UnsafePathError, ("'../outside.bin'", "'..'")),
    "absolute_location": (_absolute, lamina.UnsafePathError, ("'/etc/passwd'", "absolute")),
    "symlink_outside": (_symlink, lamina.UnsafePathError, ("'w.bin'", "resolves outside")),
    "symlinked_dir_outside": (_symlinked_dir, lamina.UnsafePathError, ("'sub/w.bin'", "resolves outside")),
    "beyond_data_file": (_beyond, lamina.FormatError, ("fc.weight", "beyond the end of 'w.bin'")),
    "length_mismatch": (_length, lamina.FormatError, ("fc.weight", "length")),
    "offset_not_integer": (_offset_not_integer, lamina.FormatError, ("fc.weight", "not integers")),
    "missing_data_file": (_missing_data, lamina.FormatError, ("fc.weight", "'w.bin' is missing")),
    "random_bytes": (_random_bytes, lamina.FormatError, ("x.onnx",)),
    "text_file": (_text, lamina.FormatError, ("notes.onnx",)),
    "truncated_protobuf": (_truncated, lamina.FormatError, ("cut.onnx", "not an ONNX model")),
    "nonexistent": (_nonexistent, lamina.NotFoundError, ("nope.onnx",)),
    "string_initializer": (_unsupported(TensorProto.STRING), lamina.FormatError, ("vocab.tokens", "STRING")),
    "int4_initializer": (_unsupported(TensorProto.INT4), lamina.FormatError, ("q.packed", "INT4")),
    "typed_count_mismatch": (_typed_count_mismatch, lamina.FormatError, ("fc.bias",)),
    "sparse_initializer": (_sparse, lamina.FormatError, ("sparse",)),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_onnx_input_is_a_typed_error_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    build, error, needles = BAD_INPUTS[case]
    src = build(tmp_path)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(error) as caught:
        onnx_converter.to_lamina(src, tmp_path / "snap")
    assert type(caught.value) is error, (type(caught.value), caught.value)
    for needle in needles:
        assert needle in str(caught.value), (needle, str(caught.value))
    if case in ("random_bytes", "text_file"):
        assert "not an ONNX model" in str(caught.value)
    with pytest.raises(error):
        lamina.convert(src, tmp_path / "snap2", from_format="onnx")
    res = cli("convert", src, tmp_path / "snap3", "--from", "onnx")
    assert_clean_cli_error(res, error, *needles)
    if case not in ("random_bytes", "text_file"):  # a non-ONNX file is refused by detection instead
        res = cli("convert", src, tmp_path / "snap4")
        assert_clean_cli_error(res, error, *needles)
    for name in ("snap", "snap2", "snap3", "snap4"):
        assert not (tmp_path / name).exists(), name
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert after == before  # no destination, no temporaries, nothing written next to the model
    assert leftovers(tmp_path) == [] and leftovers(src.parent) == []


def test_non_onnx_files_are_refused_through_detection_too(tmp_path: Path) -> None:
    for build in (_random_bytes, _text):
        sub = tmp_path / build.__name__
        sub.mkdir()
        src = build(sub)
        with pytest.raises(lamina.FormatError):
            lamina.convert(src, sub / "snap")
        res = cli("convert", src, sub / "snap")
        assert_clean_cli_error(res, lamina.FormatError, src.name)
        assert not (sub / "snap").exists() and leftovers(sub) == []


def test_destination_exists_without_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    onnx.save_model(float_model(), str(src))
    onnx_converter.to_lamina(src, tmp_path / "snap")
    manifest = (tmp_path / "snap" / "manifest.msgpack").read_bytes()
    with pytest.raises(lamina.ExistsError, match="overwrite"):
        onnx_converter.to_lamina(src, tmp_path / "snap")
    assert_clean_cli_error(cli("convert", src, tmp_path / "snap"), lamina.ExistsError, "snap")
    assert (tmp_path / "snap" / "manifest.msgpack").read_bytes() == manifest
    onnx_converter.to_lamina(src, tmp_path / "snap", overwrite=True)
    lamina.open(tmp_path / "snap").verify()

    (tmp_path / "out.onnx").write_bytes(b"keep me")
    with pytest.raises(lamina.ExistsError, match="overwrite"):
        onnx_converter.from_lamina(tmp_path / "snap", tmp_path / "out.onnx")
    with pytest.raises(lamina.ExistsError):
        lamina.convert(tmp_path / "snap", tmp_path / "out.onnx")
    assert_clean_cli_error(cli("convert", tmp_path / "snap", tmp_path / "out.onnx"), lamina.ExistsError, "out.onnx")
    assert (tmp_path / "out.onnx").read_bytes() == b"keep me"
    res = cli("convert", tmp_path / "snap", tmp_path / "out.onnx", "--overwrite")
    assert res.returncode == 0, res.stderr
    x = np.array([[1.0, 2.0]], np.float32)
    assert_outputs_identical(ort_run(tmp_path / "out.onnx", {"x": x}), ort_run(src, {"x": x}))
    assert leftovers(tmp_path) == []


def test_overwrite_never_replaces_a_directory_or_leaves_a_data_file(tmp_path: Path) -> None:
    """Like ``lamina.save`` (which refuses to overwrite a non-snapshot directory with ExistsError),
    exporting over a directory must fail with a lamina error and write nothing beside it."""
    src = tmp_path / "m.onnx"
    onnx.save_model(float_model(), str(src))
    snap = onnx_converter.to_lamina(src, tmp_path / "snap")
    target = tmp_path / "out.onnx"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    for external in (None, True):
        with pytest.raises(lamina.LaminaError):
            onnx_converter.from_lamina(snap, target, overwrite=True, external_data=external)
        assert (target / "keep.txt").read_text() == "precious"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx", "snap"]
    for flag in ("--no-external-data", "--external-data"):
        res = cli("convert", tmp_path / "snap", target, "--overwrite", flag)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith("error: "), res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "out.onnx", "snap"]
    # and a snapshot over a regular file
    with pytest.raises(lamina.ExistsError):
        onnx_converter.to_lamina(src, tmp_path / "m.onnx", overwrite=True)
    assert onnx.load_model(str(src)).graph.initializer[0].name == "fc.weight"


def test_duplicate_initializer_names_are_a_format_error(tmp_path: Path) -> None:
    model = float_model()
    model.graph.initializer.append(numpy_helper.from_array(np.ones((2, 2), np.float32), "fc.weight"))
    src = tmp_path / "dup.onnx"
    src.write_bytes(model.SerializeToString())
    with pytest.raises(lamina.FormatError, match="fc.weight|share a name"):
        onnx_converter.to_lamina(src, tmp_path / "snap")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_external_data_through_an_inside_symlink_and_subdirectory_is_accepted(tmp_path: Path) -> None:
    weights = np.arange(4, dtype=np.float32).tobytes()
    (tmp_path / "model" / "blobs").mkdir(parents=True)
    (tmp_path / "model" / "blobs" / "real.bin").write_bytes(b"\0" * 16 + weights)
    src = external_model(tmp_path / "model" / "m.onnx", "blobs/w.bin", offset=16)
    (tmp_path / "model" / "blobs" / "w.bin").symlink_to("real.bin")
    art = onnx_converter.to_lamina(src, tmp_path / "snap")
    assert art.tensor("fc.weight", framework="np").tobytes() == weights
    onnx_converter.from_lamina(art, tmp_path / "back.onnx")
    x = np.array([[1.0, -1.0]], np.float32)
    assert_outputs_identical(ort_run(tmp_path / "back.onnx", {"x": x}), ort_run(src, {"x": x}))


# ------------------------------------------------------------------------------ detection
def test_detection_of_onnx_files(tmp_path: Path, mlp_export) -> None:
    _, _, src = mlp_export
    assert detect_source(src) == "onnx"
    assert destination_format("model.onnx") == "onnx" and destination_format("model.ONNX") == "onnx"
    assert destination_format("model.bin", "onnx") == "onnx"

    inline = tmp_path / "hand.onnx"
    onnx.save_model(hand_built_model(), str(inline))
    renamed = tmp_path / "weights.bin"  # a torch suffix, but ONNX content
    shutil.copy(inline, renamed)
    assert detect_source(renamed) == "onnx"
    lamina.convert(renamed, tmp_path / "snap")
    assert_snapshot_matches(tmp_path / "snap", inline)
    res = cli("convert", renamed, tmp_path / "snap_cli", "--from", "onnx")
    assert res.returncode == 0, res.stderr
    assert sorted(lamina.open(tmp_path / "snap_cli").keys()) == sorted(lamina.open(tmp_path / "snap").keys())
    res = cli("convert", renamed, tmp_path / "snap_detected")
    assert res.returncode == 0, res.stderr
    assert lamina.open(tmp_path / "snap_detected").files == lamina.open(tmp_path / "snap").files

    with pytest.raises(lamina.FormatError, match="unrecognised"):
        detect_source(_text(tmp_path / "t"))
    with pytest.raises(lamina.NotFoundError):
        detect_source(tmp_path / "absent.onnx")
