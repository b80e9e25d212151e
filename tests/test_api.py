"""lamina.save / lamina.open / Artifact: round trips, laziness, metadata, compatibility."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from conftest import TiedLM
from huggingface_hub import load_torch_model

import lamina

TORCH_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32,
                torch.int64, torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64,
                torch.complex64, torch.float8_e5m2, torch.float8_e4m3fn, torch.float8_e8m0fnu,
                torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]


def _random(dtype: torch.dtype, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    raw = torch.randint(0, 256, (int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size(),),
                        dtype=torch.uint8, generator=gen)
    return raw.view(dtype).reshape(shape)  # every bit pattern, NaN payloads included


@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_every_torch_dtype_round_trips_bit_exactly(tmp_path: Path, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    tensors = {"a.matrix": _random(dtype, (3, 5), gen), "a.scalar": _random(dtype, (), gen),
               "b.empty": _random(dtype, (0, 4), gen)}
    art = lamina.save(tensors, tmp_path / "s")
    back = lamina.open(tmp_path / "s").state_dict()
    for name, t in tensors.items():
        assert back[name].dtype == dtype and back[name].shape == t.shape
        assert back[name].reshape(-1).view(torch.uint8).tolist() == t.reshape(-1).view(torch.uint8).tolist()
    np_back = art.state_dict(framework="np")
    for name, t in tensors.items():
        assert np_back[name].tobytes() == t.reshape(-1).view(torch.uint8).numpy().tobytes()


def test_numpy_inputs_including_ml_dtypes_and_big_endian(tmp_path: Path) -> None:
    tensors = {"x.bf16": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(2, 3),
               "x.f8": np.array([0.5, -2.0], dtype=ml_dtypes.float8_e4m3fn),
               "x.be": np.array([1.0, 2.0], dtype=">f4"),
               "x.strided": np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2]}
    lamina.save(tensors, tmp_path / "s")
    art = lamina.open(tmp_path / "s")
    for name, value in tensors.items():
        got = art.tensor(name, framework="np")
        assert got.tolist() == value.tolist() and got.dtype.name == value.dtype.name
    pt = art.tensor("x.bf16")
    assert pt.dtype == torch.bfloat16 and pt.float().tolist() == [[0, 1, 2], [3, 4, 5]]


def test_module_round_trip_with_tied_weights_restored_as_tied(tmp_path: Path, tied_model: TiedLM) -> None:
    art = lamina.save(tied_model, tmp_path / "s")
    assert art.aliases == {"head.weight": "embed.weight"}
    assert "head" in art.layers and len(art.manifest.tensors) == len(tied_model.state_dict()) - 1
    sd = lamina.open(tmp_path / "s").state_dict()
    assert sd["head.weight"] is sd["embed.weight"]
    fresh = TiedLM()
    report = lamina.open(tmp_path / "s").load_into(fresh)
    assert report.ok and fresh.head.weight is fresh.embed.weight
    for name, t in tied_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], t), name
    x = torch.tensor([[1, 2, 3]]).reshape(-1)
    tied_model.eval(), fresh.eval()
    assert torch.equal(tied_model(x), fresh(x))


def test_untied_module_loads_from_a_tied_snapshot(tmp_path: Path, tied_model: TiedLM) -> None:
    lamina.save(tied_model, tmp_path / "s")
    fresh = TiedLM()
    fresh.head.weight = torch.nn.Parameter(torch.zeros_like(fresh.head.weight))  # untie
    assert lamina.open(tmp_path / "s").load_into(fresh).ok
    assert torch.equal(fresh.head.weight, tied_model.embed.weight)
    assert torch.equal(fresh.embed.weight, tied_model.embed.weight)


def test_metadata_from_mappings_and_dataclasses(tmp_path: Path) -> None:
    info = lamina.ModelInfo(name="tiny", version="1.0.0", creator="me", description="d", license="MIT",
                            tags=("a", "b"), extra={"nested": {"k": [1, 2.5, None]}, "np": np.float32(0.5)})
    training = lamina.TrainingState(step=120, epoch=3, metrics={"loss": torch.tensor(0.5)}, extra={"lr": 1e-3})
    lamina.save({"w": np.zeros(1, "f4")}, tmp_path / "a", info=info, training=training)
    art = lamina.open(tmp_path / "a")
    assert (art.info.name, art.info.version, art.info.creator, art.info.tags) == ("tiny", "1.0.0", "me", ("a", "b"))
    assert art.info.extra == {"nested": {"k": [1, 2.5, None]}, "np": 0.5}
    assert (art.training.step, art.training.epoch, art.training.metrics) == (120, 3, {"loss": 0.5})

    @dataclasses.dataclass
    class MyInfo:
        name: str
        creator: str

    lamina.save({"w": np.zeros(1, "f4")}, tmp_path / "b", info=MyInfo("x", "y"), training={"step": 1})
    assert lamina.open(tmp_path / "b").info.creator == "y"
    with pytest.raises(lamina.FormatError, match="extra"):
        lamina.save({"w": np.zeros(1, "f4")}, tmp_path / "c", info={"name": "x", "unknown": 1})
    with pytest.raises(lamina.FormatError, match="training.metrics.loss"):
        lamina.save({"w": np.zeros(1, "f4")}, tmp_path / "c", training={"metrics": {"loss": "low"}})
    assert not (tmp_path / "c").exists()


def test_layer_reads_only_its_own_shard(tmp_path: Path, tied_model: TiedLM) -> None:
    art = lamina.save(tied_model, tmp_path / "s")
    for f in art.manifest.files:  # remove every shard except the projection's
        if f.role == "weights" and f.path != "weights/proj.safetensors":
            os.remove(tmp_path / "s" / f.path)
    art = lamina.open(tmp_path / "s")
    layer = art.layer("proj")
    assert set(layer) == {"proj.weight", "proj.bias"}
    assert torch.equal(layer["proj.weight"], tied_model.proj.weight)
    assert torch.equal(art.tensor("proj.bias"), tied_model.proj.bias)
    with pytest.raises(lamina.IntegrityError, match="weights/norm.safetensors"):
        art.layer("norm")


def test_tensor_read_touches_only_header_and_tensor_bytes(tmp_path: Path) -> None:
    big = {"a.w": torch.randn(256, 256), "a.v": torch.randn(4), "b.w": torch.randn(512, 512)}
    lamina.save(big, tmp_path / "s")
    art = lamina.open(tmp_path / "s")
    reads: list[tuple[str, int]] = []
    store = art._store
    original_read, original_into = store.read, store.read_into
    store.read = lambda p, s=0, e=None: reads.append((p, (e or 0) - s)) or original_read(p, s, e)  # type: ignore
    store.read_into = lambda p, r: reads.append((p, sum(len(b) for _, b in r))) or original_into(p, r)  # type: ignore
    assert torch.equal(art.tensor("a.v"), big["a.v"])
    assert {p for p, _ in reads} == {"weights/a.safetensors"}
    assert sum(n for _, n in reads) < 16 + 1024  # 8-byte prefix + header + 16 tensor bytes


def test_snapshot_loads_without_lamina_via_huggingface_hub_and_safetensors(
        tmp_path: Path, tied_model: TiedLM) -> None:
    art = lamina.save(tied_model, tmp_path / "s")
    fresh = TiedLM()
    result = load_torch_model(fresh, tmp_path / "s", strict=False)
    assert result.missing_keys == ["head.weight"] and result.unexpected_keys == []  # tied alias
    for name, t in tied_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], t), name
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in art.manifest.tensors)
    for f in art.manifest.files:
        if f.role in ("weights", "optimizer"):
            with safetensors.safe_open(tmp_path / "s" / f.path, framework="pt") as st:
                assert st.metadata() == {"format": "pt"}
                for key in st.keys():
                    entry = next(t for t in art.manifest.tensors if t.name == key)
                    assert torch.equal(st.get_tensor(key), art.tensor(entry.name))


def test_shards_are_byte_identical_to_safetensors_and_deterministic(tmp_path: Path, tied_model: TiedLM) -> None:
    a = lamina.save(tied_model, tmp_path / "a")
    lamina.save(tied_model, tmp_path / "b")
    for f in a.manifest.files:
        assert (tmp_path / "a" / f.path).read_bytes() == (tmp_path / "b" / f.path).read_bytes()
    assert (tmp_path / "a" / "manifest.msgpack").read_bytes() == (tmp_path / "b" / "manifest.msgpack").read_bytes()
    layer = {k: v for k, v in tied_model.state_dict().items() if k.startswith("bn.")}
    reference = safetensors.torch.save(layer, metadata={"format": "pt"})
    assert (tmp_path / "a" / "weights" / "bn.safetensors").read_bytes() == reference


def test_unchanged_layers_keep_their_sha256_across_versions(tmp_path: Path, tied_model: TiedLM) -> None:
    v1 = lamina.save(tied_model, tmp_path / "v1")
    with torch.no_grad():
        tied_model.proj.weight.add_(1)
    v2 = lamina.save(tied_model, tmp_path / "v2")
    sha1 = {f.path: f.digest for f in v1.manifest.files if f.role == "weights"}
    sha2 = {f.path: f.digest for f in v2.manifest.files if f.role == "weights"}
    changed = {p for p in sha1 if sha1[p] != sha2[p]}
    assert changed == {"weights/proj.safetensors"}


def test_custom_layer_grouping_and_odd_names(tmp_path: Path) -> None:
    tensors = {"Block/Dense_1/kernel:0": np.ones(2, "f4"), "Block/Dense_1/bias:0": np.zeros(2, "f4"),
               "top": np.ones(1, "f4")}
    art = lamina.save(tensors, tmp_path / "s", layer_of=lambda n: n.rsplit("/", 1)[0])
    assert art.layers == ["Block/Dense_1", "top"]
    assert {t.file for t in art.manifest.tensors} == {"weights/%42lock%2F%44ense_1.safetensors",
                                                       "weights/top.safetensors"}
    assert set(lamina.open(tmp_path / "s").layer("Block/Dense_1")) == {"Block/Dense_1/kernel:0",
                                                                        "Block/Dense_1/bias:0"}


def test_extra_files_bytes_path_and_json(tmp_path: Path) -> None:
    src = tmp_path / "tok.txt"
    src.write_bytes(b"tokens")
    lamina.save({"w": np.zeros(1, "f4")}, tmp_path / "s",
                files={"config.json": {"b": 1, "a": 2}, "tokenizer/vocab.txt": src, "raw.bin": b"\x00\x01"})
    art = lamina.open(tmp_path / "s")
    assert json.loads(art.read_file("config.json")) == {"a": 2, "b": 1}
    assert art.read_file("tokenizer/vocab.txt") == b"tokens" and art.read_file("raw.bin") == b"\x00\x01"
    with pytest.raises(lamina.NotFoundError, match="nope.txt"):
        art.read_file("nope.txt")
    (tmp_path / "s" / "raw.bin").write_bytes(b"\x00\x02")
    with pytest.raises(lamina.IntegrityError, match="raw.bin"):
        lamina.open(tmp_path / "s").read_file("raw.bin")
    with pytest.raises(lamina.FormatError, match="reserved"):
        lamina.save({"w": np.zeros(1, "f4")}, tmp_path / "t", files={"weights/x": b""})


def test_overwrite_replaces_atomically_and_leaves_no_temporaries(tmp_path: Path) -> None:
    lamina.save({"w": np.zeros(2, "f4")}, tmp_path / "s")
    with pytest.raises(lamina.ExistsError, match="overwrite=True"):
        lamina.save({"w": np.ones(2, "f4")}, tmp_path / "s")
    lamina.save({"w": np.ones(2, "f4")}, tmp_path / "s", overwrite=True)
    assert lamina.open(tmp_path / "s").tensor("w", "np").tolist() == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_non_torch_framework_and_dtype_mismatch_in_load_into(tmp_path: Path) -> None:
    lamina.save({"weight": np.zeros((2, 2), "f8")}, tmp_path / "s")
    module = torch.nn.Linear(2, 2, bias=False)
    with pytest.raises(lamina.StateMismatchError, match="F64") as caught:
        lamina.open(tmp_path / "s").load_into(module)
    assert caught.value.report.mismatched[0].name == "weight"
    with pytest.raises(lamina.FormatError, match="framework"):
        lamina.open(tmp_path / "s").tensor("weight", framework="jax")


def test_import_lamina_stays_light() -> None:
    code = "import sys, lamina, lamina.converters; print(sorted(m for m in ('torch', 'tensorflow', 'onnx', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
