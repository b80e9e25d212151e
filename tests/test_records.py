"""Format 1.3 layer records (spec §4.9): lazy per-layer decoding, same answers as the flat layout."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from adversarial.snapshot import encode_wire, read_wire

import lamina
from lamina.format import records as records_module
from lamina.format.codec import MANIFEST_NAME, RECORDS_FEATURE, encode_manifest
from lamina.format.records import flat_wire


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(7, 4)
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(5))
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(2.0))


def _trained(tmp_path: Path) -> tuple[Tied, torch.optim.Optimizer, Path]:
    torch.manual_seed(0)
    model = Tied()
    opt = torch.optim.AdamW([{"params": [model.embed.weight, *model.blocks.parameters()]},
                             {"params": list(model.norm.parameters()), "weight_decay": 0.0}], lr=0.01)
    x = torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        h = model.embed(x)
        for block in model.blocks:
            h = block(h)
        torch.nn.functional.cross_entropy(model.head(model.norm(h)), x).backward()
        opt.step()
    path = tmp_path / "snap"
    lamina.save(model, path, optimizer=opt, info={"name": "tied"}, training={"step": 2})
    return model, opt, path


def _as_flat_1_2(src: Path, dst: Path) -> None:
    """The same snapshot with its manifest in the 1.2 layout (same shards, same entries)."""
    import shutil

    shutil.copytree(src, dst)
    art = lamina.open(src)
    files = tuple(dataclasses.replace(f, lt1=None, sha256=hashlib.sha256((src / f.path).read_bytes()).hexdigest())
                  for f in art.manifest.files)  # 1.2 addresses files by sha256
    flat = dataclasses.replace(art.manifest, format_version=(1, 2), required=(), files=files)
    (dst / MANIFEST_NAME).write_bytes(encode_manifest(flat))


def _answers(art: lamina.Artifact) -> dict:
    sd = art.state_dict()
    return {
        "keys": art.keys(), "layers": art.layers, "aliases": art.aliases, "files": sorted(art.files),
        "tensors": {k: v.reshape(-1).view(torch.uint8).tolist() if v.dtype != torch.bool else v.tolist()
                    for k, v in sd.items()},
        "layer": {name: sorted(art.layer(name)) for name in art.layers},
        "tensor": {name: art.tensor(name).tolist() for name in art.keys()},
        "optimizer": art.optimizer_state_dict(),
        "info": art.info, "training": art.training,
    }


def test_a_1_3_snapshot_answers_exactly_as_its_1_2_twin(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    _as_flat_1_2(path, tmp_path / "flat")
    new, old = lamina.open(path), lamina.open(tmp_path / "flat")
    assert (new.format_version, old.format_version) == ("1.3", "1.2")
    assert RECORDS_FEATURE in msgpack.unpackb((path / MANIFEST_NAME).read_bytes())["required"]
    a, b = _answers(new), _answers(old)
    assert str(a) == str(b)
    assert [(f.path, f.size, f.role) for f in new.manifest.files] == [(f.path, f.size, f.role) for f in old.manifest.files]
    assert new.manifest == dataclasses.replace(old.manifest, format_version=(1, 3), required=(RECORDS_FEATURE,),
                                               files=new.manifest.files)
    new.verify()
    old.verify()


def test_open_and_one_layer_decode_only_that_layers_record(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    art = lamina.open(path)
    records = art._view._records
    assert records is not None and records._decoded == {} and art._view._full is None
    assert sorted(art.layer("blocks.3")) == ["blocks.3.bias", "blocks.3.weight"]
    assert [r.name for r in records._decoded.values()] == ["blocks.3"]
    art.tensor("blocks.4.weight")  # a default-layered name: its own record only
    assert sorted(r.name for r in records._decoded.values()) == ["blocks.3", "blocks.4"]
    assert art._view._full is None, "no call so far needed the whole manifest"
    assert "norm.weight" in art and "nope" not in art  # a miss decodes everything, to be sure
    assert art._view._full is not None


def test_an_alias_in_another_layer_resolves_to_its_target(tmp_path: Path) -> None:
    model, _, path = _trained(tmp_path)
    art = lamina.open(path)
    assert art.aliases == {"head.weight": "embed.weight"}
    head = lamina.open(path).layer("head")
    assert torch.equal(head["head.weight"], model.embed.weight.detach())
    assert torch.equal(lamina.open(path).tensor("head.weight"), model.embed.weight.detach())


def test_custom_layers_and_hash_collisions_still_find_every_tensor(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tensors = {f"t{i}": np.full(3, i, dtype=np.float32) for i in range(6)}
    monkeypatch.setattr(records_module, "layer_hash", lambda name: 42)  # every layer collides
    art = lamina.save(tensors, tmp_path / "s", layer_of=lambda name: "even" if int(name[1:]) % 2 == 0 else "odd")
    fresh = lamina.open(tmp_path / "s")
    assert sorted(fresh.layer("odd", framework="np")) == ["t1", "t3", "t5"]
    assert fresh.tensor("t4", framework="np").tolist() == [4.0] * 3  # not its default layer: found anyway
    assert art.layers == ["even", "odd"]
    with pytest.raises(lamina.NotFoundError):
        fresh.layer("t4")


def test_a_damaged_record_fails_when_its_layer_is_used_and_on_every_whole_manifest_call(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    wire = read_wire(path)
    bad = next(t for t in wire["tensors"] if t["layer"] == "blocks.2")
    bad["dtype"] = "NOT_A_DTYPE"
    (path / MANIFEST_NAME).write_bytes(encode_wire(wire))
    art = lamina.open(path)  # the top level is fine
    assert sorted(art.layer("blocks.1")) == ["blocks.1.bias", "blocks.1.weight"]  # another layer: fine
    for call in (lambda: art.layer("blocks.2"), lambda: lamina.open(path).tensor("blocks.2.bias"),
                 lambda: lamina.open(path).keys(), lambda: lamina.open(path).state_dict(),
                 lambda: lamina.open(path).verify()):
        with pytest.raises(lamina.FormatError, match=r"layer 'blocks\.2'.*unsupported dtype 'NOT_A_DTYPE'"):
            call()


def test_names_are_unique_across_records(tmp_path: Path) -> None:
    """Rules that span records are checked whenever every record is decoded."""
    lamina.save({"a.w": np.ones(2, np.float32), "b.w": np.ones(2, np.float32)}, tmp_path / "s")
    wire = read_wire(tmp_path / "s")
    wire["tensors"][1]["name"] = "a.w"  # now in layers "a" and "b"
    (tmp_path / "s" / MANIFEST_NAME).write_bytes(encode_wire(wire))
    with pytest.raises(lamina.FormatError, match="duplicate tensor name 'a.w'"):
        lamina.open(tmp_path / "s").keys()


def test_flat_wire_and_records_wire_are_inverse(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    data = (path / MANIFEST_NAME).read_bytes()
    raw = msgpack.unpackb(data, raw=False)
    assert encode_wire(flat_wire(raw)) == data
    assert {"tensors", "aliases"} <= set(flat_wire(raw)) and "layer_records" not in flat_wire(raw)


def test_a_repository_revision_opens_and_reads_one_layer_from_its_record(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    repo = lamina.Repo(tmp_path / "repo")
    repo.push(path, "main")
    art = repo.open("main")
    assert sorted(art.layer("blocks.0")) == ["blocks.0.bias", "blocks.0.weight"]
    assert art._view._full is None and [r.name for r in art._view._records._decoded.values()] == ["blocks.0"]
    assert art.read_file("model.safetensors.index.json").startswith(b"{")
    assert art._view._full is None  # a top-level file needs no record either
    assert sorted(art._store.list("optimizer/")) == ["optimizer/blocks.0.safetensors", "optimizer/blocks.1.safetensors",
                                                     "optimizer/blocks.2.safetensors", "optimizer/blocks.3.safetensors",
                                                     "optimizer/blocks.4.safetensors", "optimizer/embed.safetensors",
                                                     "optimizer/norm.safetensors"]
    art.verify()


def test_a_shard_path_names_its_layer_but_is_confirmed_by_the_record(tmp_path: Path) -> None:
    """`Dense_1/kernel` is stored as `weights/%44ense_1%2Fkernel.safetensors`; the stem is decoded
    to find the record, and a stem that names no record falls back to the whole manifest."""
    lamina.save({"Dense_1/kernel": np.ones(2, np.float32)}, tmp_path / "s", layer_of=lambda n: n)
    art = lamina.open(tmp_path / "s")
    entry = art._view.file("weights/%44ense_1%2Fkernel.safetensors")
    assert entry is not None and entry.size > 8 and art._view._full is None
    assert art._view.file("weights/%44ense_2.safetensors") is None


def test_lt1_matches_a_naive_implementation_and_the_spec_values() -> None:
    """spec §4.10: BLAKE3 of each 64 KiB leaf, then a key-derivation BLAKE3 over size and leaves."""
    import blake3

    from lamina.format.digests import Lt1

    def naive(data: bytes) -> str:
        leaves = [blake3.blake3(data[i:i + 65536]).digest() for i in range(0, len(data), 65536)]
        root = blake3.blake3(len(data).to_bytes(8, "little") + b"".join(leaves),
                             derive_key_context="lamina 2026-12 lt1 file digest v1")
        return root.hexdigest()

    spec = (Path(__file__).resolve().parents[1] / "format_spec" / "spec.md").read_text()
    for data in (b"", b"abc", bytes(i % 256 for i in range(256000)), np.random.default_rng(0).bytes(3 * 65536)):
        for piece in (1, 1000, 65536, 70000, len(data) or 1):
            hasher = Lt1()
            for start in range(0, len(data), piece):
                hasher.update(memoryview(data)[start:start + piece])
            assert hasher.hexdigest() == naive(data), (len(data), piece)
        if len(data) in (0, 3, 256000):
            assert naive(data) in spec, "the spec's reference value"


def test_files_are_addressed_by_lt1_and_repository_blobs_live_under_blobs_lt1(tmp_path: Path) -> None:
    from lamina.format.digests import Lt1

    _, _, path = _trained(tmp_path)
    art = lamina.open(path)
    for f in art.manifest.files:
        hasher = Lt1()
        hasher.update((path / f.path).read_bytes())
        assert f.digest == ("lt1", hasher.hexdigest()) and f.sha256 is None
    repo = lamina.Repo(tmp_path / "repo")
    repo.push(path)
    blobs = {p.relative_to(tmp_path / "repo").as_posix() for p in (tmp_path / "repo" / "blobs").rglob("*") if p.is_file()}
    assert {f"blobs/lt1/{f.lt1[:2]}/{f.lt1}" for f in art.manifest.files} | {
        f"blobs/sha256/{repo.revision('main').snapshot[:2]}/{repo.revision('main').snapshot}"} == blobs
    assert repo.fsck(full=True).ok
    blob = tmp_path / "repo" / f"blobs/lt1/{art.manifest.files[0].lt1[:2]}/{art.manifest.files[0].lt1}"
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    report = repo.fsck(full=True)
    assert [why for p, why in report.problems] == ["blob bytes do not match its name"]


def test_a_repository_holds_1_2_and_1_3_snapshots_side_by_side(tmp_path: Path) -> None:
    _, _, path = _trained(tmp_path)
    _as_flat_1_2(path, tmp_path / "flat")
    repo = lamina.Repo(tmp_path / "repo")
    repo.push(tmp_path / "flat", "old")
    repo.push(path, "new")
    assert (tmp_path / "repo" / "blobs" / "sha256").is_dir() and (tmp_path / "repo" / "blobs" / "lt1").is_dir()
    for branch in ("old", "new"):
        art = repo.open(branch)
        art.verify()
        assert str(_answers(art)["tensors"]) == str(_answers(lamina.open(path))["tensors"])
    assert repo.fsck(full=True).ok
    repo.pull("old", tmp_path / "pulled").verify()
    assert lamina.open(tmp_path / "pulled").format_version == "1.2"
