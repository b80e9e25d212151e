"""Every malformed input gets a typed lamina error (a lamina.LaminaError subclass), never a raw
KeyError / struct.error / json error; failed and killed saves never leave a wrong snapshot."""

from __future__ import annotations

import json
import math
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
from adversarial.snapshot import (
    ENC,
    encode_wire,
    make_snapshot,
    read_wire,
    tensors,
    write_wire,
)

import lamina
from lamina.format.codec import MANIFEST_NAME, decode_manifest
from lamina.format.digests import Lt1
from lamina.format.shards import MAX_HEADER_BYTES, parse_header, read_header


# ------------------------------------------------------------------------------ helpers
def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def header_length(path: Path) -> int:
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def tmp_leftovers(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.lamina-")]


@pytest.fixture
def snap(tmp_path: Path) -> Path:
    path = tmp_path / "snap"
    make_snapshot(path)
    return path


def test_helper_reencodes_identically(snap):
    """encode_wire is a faithful re-encoder: the untouched wire round-trips byte for byte."""
    original = (snap / MANIFEST_NAME).read_bytes()
    assert encode_wire(read_wire(snap)) == original
    lamina.open(snap).verify()


# ------------------------------------------------------------------------------ shards
def test_truncated_shard(snap):
    shard = snap / ENC
    shard.write_bytes(shard.read_bytes()[:-5])
    art = lamina.open(snap)  # opening reads only the manifest
    with pytest.raises(lamina.IntegrityError) as info:
        art.tensor("enc.weight")
    assert ENC in str(info.value)
    with pytest.raises(lamina.IntegrityError) as info:
        art.layer("enc", framework="np")
    with pytest.raises(lamina.IntegrityError) as info:
        art.verify()
    assert [p for p, _ in info.value.files] == [ENC]
    # The other layer is still readable.
    assert art.tensor("dec.weight", framework="np").tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_truncated_shard_to_nothing(snap):
    original = (snap / ENC).read_bytes()
    for size in (0, 3, 8, 9, header_length(snap / ENC) + 8):
        (snap / ENC).write_bytes(original[:size])
        art = lamina.open(snap)
        with pytest.raises(lamina.IntegrityError):
            art.tensor("enc.bias")
        with pytest.raises(lamina.IntegrityError):
            art.verify()


def test_bit_flipped_shard_data_byte(snap):
    shard = snap / ENC
    flip(shard, shard.stat().st_size - 1)
    with pytest.raises(lamina.IntegrityError) as info:
        lamina.open(snap).verify()
    assert ENC in str(info.value)
    assert (ENC, "lt1 mismatch") in info.value.files
    assert all(p == ENC for p, _ in info.value.files)
    with pytest.raises(lamina.IntegrityError) as info:
        lamina.open(snap, verify=True).tensor("enc.weight")
    assert ENC in str(info.value)
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap, verify=True).state_dict(framework="np")
    # verify=True still reads the untouched layer.
    assert lamina.open(snap, verify=True).tensor("dec.weight", framework="np").sum() == 28


def test_bit_flipped_shard_header_byte(snap):
    """Any single-bit flip in the length prefix or a tensor entry of the header is caught by a
    plain (non-verifying) tensor read."""
    shard = snap / ENC
    original = shard.read_bytes()
    n = header_length(shard)
    text = original[8 : 8 + n]
    first_entry = 8 + text.index(b'"enc.')  # after the __metadata__ entry
    offsets = list(range(0, 8)) + [8] + list(range(first_entry, 8 + n))
    escaped = []
    for offset in offsets:
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
            data = bytearray(original)
            data[offset] ^= mask
            shard.write_bytes(bytes(data))
            try:
                lamina.open(snap).tensor("enc.weight")
            except lamina.IntegrityError:
                continue
            escaped.append((offset, mask))
    assert escaped == [], f"header flips read without error: {escaped[:10]}"


def test_bit_flipped_header_is_reported_by_verify(snap):
    flip(snap / ENC, 8 + 3)
    with pytest.raises(lamina.IntegrityError) as info:
        lamina.open(snap).verify()
    assert info.value.files and info.value.files[0][0] == ENC


def test_missing_shard_file(snap):
    (snap / ENC).unlink()
    art = lamina.open(snap)
    with pytest.raises(lamina.IntegrityError) as info:
        art.tensor("enc.weight")
    assert ENC in str(info.value)
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap, verify=True).tensor("enc.bias")
    with pytest.raises(lamina.IntegrityError) as info:
        art.verify()
    assert (ENC, "missing") in info.value.files


def test_missing_and_tampered_extra_file(snap):
    (snap / "config.json").write_bytes(b'{"hidden": 5}\n')
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap).read_file("config.json")
    (snap / "config.json").unlink()
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap).read_file("config.json")
    with pytest.raises(lamina.NotFoundError):
        lamina.open(snap).read_file("other.json")
    with pytest.raises(lamina.UnsafePathError):
        lamina.open(snap).read_file("../snap/config.json")


def test_extra_unlisted_file_fails_verify(snap):
    lamina.open(snap).verify()
    (snap / "weights" / "stowaway.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(lamina.IntegrityError) as info:
        lamina.open(snap).verify()
    assert ("weights/stowaway.safetensors", "not listed in the manifest") in info.value.files


def test_shard_header_claims_more_bytes_than_file(snap):
    # parse_header alone
    raw = struct.pack("<Q", 64) + b'{"__metadata__":{}}'
    with pytest.raises(lamina.FormatError):
        parse_header(raw, len(raw), "x")
    with pytest.raises(lamina.FormatError):
        read_header(lambda a, b: raw[a:b], len(raw), "x")
    # the same inside a snapshot, size unchanged so only the header is wrong
    shard = snap / ENC
    data = bytearray(shard.read_bytes())
    data[:8] = struct.pack("<Q", len(data))
    shard.write_bytes(bytes(data))
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap).tensor("enc.weight")
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap).verify()


def test_oversized_header_length():
    raw = struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}"
    with pytest.raises(lamina.FormatError) as info:
        parse_header(raw, 1 << 40, "x")
    assert "limit" in str(info.value)
    with pytest.raises(lamina.FormatError):
        parse_header(struct.pack("<Q", 2**64 - 1) + b"{}", 1 << 40, "x")
    with pytest.raises(lamina.FormatError):
        read_header(lambda a, b: raw[a:b], 1 << 40, "x")


def test_oversized_header_length_inside_snapshot(snap):
    shard = snap / ENC
    data = bytearray(shard.read_bytes())
    data[:8] = struct.pack("<Q", MAX_HEADER_BYTES + 1)
    shard.write_bytes(bytes(data))
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap).tensor("enc.weight")


# ------------------------------------------------------------------------------ manifest
def test_tampered_manifest_step(snap):
    data = bytearray((snap / MANIFEST_NAME).read_bytes())
    at = data.index(b"\xa4step") + len(b"\xa4step")
    assert data[at] == 7  # positive fixint
    data[at] = 8
    (snap / MANIFEST_NAME).write_bytes(bytes(data))
    assert msgpack.unpackb(bytes(data))["training"]["step"] == 8  # still well-formed msgpack
    with pytest.raises(lamina.IntegrityError) as info:
        lamina.open(snap)
    assert "checksum" in str(info.value)


def test_tampered_manifest_any_value_byte(snap):
    original = (snap / MANIFEST_NAME).read_bytes()
    for needle in (b"demo", b"enc.weight", b"config.json"):
        data = bytearray(original)
        data[data.index(needle)] ^= 0x01
        (snap / MANIFEST_NAME).write_bytes(bytes(data))
        with pytest.raises(lamina.IntegrityError):
            lamina.open(snap).manifest  # 1.3: records are checked when used
    data = bytearray(original)
    data[-1] ^= 0x80  # the checksum itself
    (snap / MANIFEST_NAME).write_bytes(bytes(data))
    with pytest.raises(lamina.IntegrityError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_truncated_manifest(snap):
    original = (snap / MANIFEST_NAME).read_bytes()
    for size in (0, 1, 10, len(original) // 2, len(original) - 33, len(original) - 1):
        (snap / MANIFEST_NAME).write_bytes(original[:size])
        with pytest.raises(lamina.FormatError):
            lamina.open(snap).manifest  # 1.3: records are checked when used


@pytest.mark.parametrize("evil", ["../evil.safetensors", "/etc/passwd", "weights/../../evil.safetensors",
                                  "C:/evil.safetensors", "weights\\evil.safetensors", "./weights/enc.safetensors",
                                  "weights//enc.safetensors", ""])
def test_unsafe_file_path_everywhere(snap, evil):
    wire = read_wire(snap)
    for f in wire["files"]:
        if f["path"] == ENC:
            f["path"] = evil
    for t in wire["tensors"]:
        if t["file"] == ENC:
            t["file"] = evil
    write_wire(snap, wire)
    with pytest.raises(lamina.UnsafePathError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


@pytest.mark.parametrize("evil", ["../evil.safetensors", "/etc/passwd"])
def test_unsafe_path_only_in_files_table(snap, evil):
    wire = read_wire(snap)
    wire["files"][-1]["path"] = evil
    write_wire(snap, wire)
    with pytest.raises(lamina.UnsafePathError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


@pytest.mark.parametrize("evil", ["../evil.safetensors", "/etc/passwd"])
def test_unsafe_path_only_in_tensor_entry(snap, evil):
    wire = read_wire(snap)
    wire["tensors"][0]["file"] = evil
    write_wire(snap, wire)
    with pytest.raises(lamina.UnsafePathError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_newer_major_version(snap):
    wire = read_wire(snap)
    wire["format_version"] = "2.0"
    write_wire(snap, wire)
    with pytest.raises(lamina.UnsupportedVersionError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_newer_minor_version_opens(snap):
    wire = read_wire(snap)
    wire["format_version"] = "1.9"
    write_wire(snap, wire)
    art = lamina.open(snap)
    assert art.format_version == "1.9"
    assert art.tensor("enc.bias", framework="np").tolist() == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize("version", ["1", "1.0.0", "01.0", "x.y", "", 1.0, None, 2])
def test_malformed_version(snap, version):
    wire = read_wire(snap)
    wire["format_version"] = version
    write_wire(snap, wire)
    with pytest.raises(lamina.FormatError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_unknown_required_feature(snap):
    wire = read_wire(snap)
    wire["required"] = ["sparse-tensors-v9"]
    write_wire(snap, wire)
    with pytest.raises(lamina.UnsupportedVersionError) as info:
        lamina.open(snap)
    assert "sparse-tensors-v9" in str(info.value)


def test_non_msgpack_manifest(snap):
    as_json = json.dumps({"format": "lamina", "format_version": "1.0"}).encode()
    for data in (as_json, b"not a manifest at all", b"\xc1", msgpack.packb([1, 2, 3]),
                 msgpack.packb("lamina"), msgpack.packb({1: 2}, strict_types=False)):
        (snap / MANIFEST_NAME).write_bytes(data)
        with pytest.raises(lamina.FormatError):
            lamina.open(snap).manifest  # 1.3: records are checked when used


def test_manifest_without_checksum(snap):
    wire = read_wire(snap)
    del wire["checksum"]
    (snap / MANIFEST_NAME).write_bytes(msgpack.packb(wire))
    with pytest.raises(lamina.FormatError):
        lamina.open(snap).manifest  # 1.3: records are checked when used
    # checksum present but not last
    wire2 = {"checksum": bytes(32), **wire}
    (snap / MANIFEST_NAME).write_bytes(msgpack.packb(wire2))
    with pytest.raises(lamina.FormatError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_manifest_missing_required_fields(snap):
    raw = msgpack.unpackb((snap / MANIFEST_NAME).read_bytes(), raw=False)  # 1.3: the tensor index is in records
    for base, keys in ((raw, ("layer_count", "layer_hashes", "layer_spans", "layer_records", "files", "info",
                              "producer", "required")),
                       (read_wire(snap), ("tensors", "aliases"))):
        for key in keys:
            wire = dict(base)
            del wire[key]
            (snap / MANIFEST_NAME).write_bytes(encode_wire(wire) if base is raw else encode_wire(
                {**wire, "required": [], "format_version": "1.2"}))  # the flat layout is 1.2's
            with pytest.raises(lamina.FormatError):
                lamina.open(snap).manifest


def test_manifest_range_outside_file(snap):
    wire = read_wire(snap)
    size = next(f["size"] for f in wire["files"] if f["path"] == wire["tensors"][0]["file"])
    t = wire["tensors"][0]
    t["offsets"] = [size, size + 8]  # a span of the right length, past the end
    t["shape"] = [2]
    t["dtype"] = "F32"
    write_wire(snap, wire)
    with pytest.raises(lamina.FormatError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_manifest_dangling_alias_and_duplicate(snap):
    wire = read_wire(snap)
    wire["aliases"] = [{"name": "tied", "layer": "tied", "target": "nope"}]
    write_wire(snap, wire)
    with pytest.raises(lamina.FormatError):
        lamina.open(snap).manifest  # 1.3: records are checked when used
    wire["aliases"] = [{"name": "enc.weight", "layer": "enc", "target": "enc.bias"}]
    write_wire(snap, wire)
    with pytest.raises(lamina.FormatError):
        lamina.open(snap).manifest  # 1.3: records are checked when used


def test_manifest_header_disagrees_with_shard(snap):
    """A re-checksummed manifest whose entry disagrees with the shard: caught on read."""
    wire = read_wire(snap)
    for t in wire["tensors"]:
        if t["name"] == "enc.weight":
            t["shape"] = [4, 3]
    write_wire(snap, wire)
    art = lamina.open(snap)
    with pytest.raises(lamina.IntegrityError):
        art.tensor("enc.weight")
    with pytest.raises(lamina.IntegrityError):
        art.verify()


def test_decode_manifest_of_garbage_raises_format_error():
    for data in (b"", b"\x80", b"\x90", b"\xde\xff\xff", b"\xdd\xff\xff\xff\xff"):
        with pytest.raises(lamina.FormatError):
            decode_manifest(data)


@pytest.mark.parametrize("framework", ["np", "pt"])
@pytest.mark.parametrize("dims", [[0, 2**62], [0, 2**63], [2**40, 2**40, 0], [0, 2**64 - 1]],
                         ids=["0x2^62", "0x2^63", "2^40x2^40x0", "0x2^64-1"])
def test_zero_size_tensor_with_huge_dimensions(tmp_path, dims, framework):
    """A consistent, re-checksummed snapshot whose empty tensor has astronomically large other
    dimensions: refused when the manifest is opened (spec: shape bounds), never a raw numpy/torch
    exception on read."""
    snap = tmp_path / "snap"
    lamina.save({"e.w": np.zeros((0, 4), np.float32)}, snap)
    header = {"__metadata__": {"format": "pt"}, "e.w": {"dtype": "F32", "shape": dims, "data_offsets": [0, 0]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    shard = struct.pack("<Q", len(text)) + text
    (snap / "weights" / "e.safetensors").write_bytes(shard)
    wire = read_wire(snap)
    wire["tensors"][0]["shape"] = dims
    wire["tensors"][0]["offsets"] = [len(shard), len(shard)]
    for f in wire["files"]:
        if f["path"] == "weights/e.safetensors":
            f["size"] = len(shard)
            f["lt1"] = _lt1(shard)
        if f["role"] == "index":
            index = (snap / f["path"]).read_bytes()
            f["size"], f["lt1"] = len(index), _lt1(index)
    write_wire(snap, wire)
    with pytest.raises(lamina.FormatError, match="exceeds"):
        lamina.open(snap).manifest  # 1.3: records are checked when used
    with pytest.raises(lamina.FormatError, match="exceeds"):
        parse_header(shard, len(shard), "e.safetensors")


@pytest.mark.parametrize("scalar", [{"value": None, "dtype": "F32"}, {"value": 1e300, "dtype": "I64"},
                                    {"value": 2**64 - 1, "dtype": "I64"}, {"value": math.nan, "dtype": "I32"}])
def test_load_optimizer_with_malformed_scalar(tmp_path, scalar):
    """A re-checksummed manifest whose optimizer scalar cannot be a value of its dtype is refused
    with a lamina error, never a raw torch exception."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    snap = tmp_path / "snap"
    lamina.save(model, snap, optimizer=opt)
    wire = read_wire(snap)
    wire["optimizer"]["state"][0]["scalars"]["step"] = scalar
    write_wire(snap, wire)
    with pytest.raises(lamina.FormatError, match="not a valid .* scalar"):
        # 1.3: the record is checked when the optimizer state is first used, before any torch call sees it
        lamina.open(snap).load_optimizer(torch.optim.Adam(model.parameters(), lr=0.1), model)


# ------------------------------------------------------------------------------ open / lookup
def test_missing_snapshot_dir(tmp_path):
    with pytest.raises(lamina.NotFoundError) as info:
        lamina.open(tmp_path / "nope")
    assert isinstance(info.value, KeyError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(lamina.NotFoundError):
        lamina.open(tmp_path / "empty")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(lamina.NotFoundError):
        lamina.open(tmp_path / "file")


def test_unknown_tensor_and_layer(snap):
    art = lamina.open(snap)
    for bad in ("enc.nope", "", "ENC.WEIGHT", 3, None, ("enc", "weight"), ["unhashable"]):
        with pytest.raises(lamina.NotFoundError) as info:
            art.tensor(bad)
        assert isinstance(info.value, KeyError)
    for bad in ("nope", "enc.weight", "", None, ["enc"]):
        with pytest.raises(lamina.NotFoundError) as info:
            art.layer(bad)
        assert isinstance(info.value, KeyError)
    # The message is not quoted like a plain KeyError's.
    with pytest.raises(lamina.NotFoundError) as info:
        art.tensor("enc.nope")
    assert str(info.value).startswith("no tensor")


def test_bad_framework_argument(snap):
    art = lamina.open(snap)
    for bad in ("tf", "", None, ["pt"]):
        with pytest.raises(lamina.FormatError):
            art.tensor("enc.weight", framework=bad)


# ------------------------------------------------------------------------------ save
def test_save_over_existing_without_overwrite(snap):
    before = (snap / MANIFEST_NAME).read_bytes()
    with pytest.raises(lamina.ExistsError) as info:
        lamina.save({"x.w": np.zeros(2, np.float32)}, snap)
    assert isinstance(info.value, FileExistsError)
    assert (snap / MANIFEST_NAME).read_bytes() == before
    lamina.open(snap).verify()
    # a plain file in the way, too
    other = snap.parent / "a_file"
    other.write_bytes(b"keep")
    with pytest.raises(lamina.ExistsError):
        lamina.save({"x.w": np.zeros(2, np.float32)}, other)
    assert other.read_bytes() == b"keep"


def test_overwrite_refuses_non_snapshot_directory(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.tex").write_text("do not delete")
    with pytest.raises(lamina.ExistsError):
        lamina.save({"x.w": np.zeros(2, np.float32)}, target, overwrite=True)
    assert siblings(target) == ["thesis.tex"]
    assert (target / "thesis.tex").read_text() == "do not delete"
    assert siblings(tmp_path) == ["precious"]
    # and a regular file
    f = tmp_path / "file.bin"
    f.write_bytes(b"data")
    with pytest.raises(lamina.ExistsError):
        lamina.save({"x.w": np.zeros(2, np.float32)}, f, overwrite=True)
    assert f.read_bytes() == b"data"


def test_overwrite_replaces_snapshot_and_empty_dir(tmp_path):
    target = tmp_path / "snap"
    target.mkdir()
    lamina.save({"x.w": np.zeros(2, np.float32)}, target, overwrite=True)
    lamina.save({"y.w": np.ones(3, np.float32)}, target, overwrite=True)
    art = lamina.open(target)
    art.verify()
    assert art.keys() == ["y.w"]
    assert siblings(tmp_path) == ["snap"]


@pytest.mark.parametrize("bad", ["../escape.txt", "a/../../escape.txt", "/tmp/abs.txt", "a\\b.txt",
                                 "", "a//b", "./a"])
def test_extra_file_with_unsafe_path(tmp_path, bad):
    parent = tmp_path / "models"
    parent.mkdir()
    with pytest.raises(lamina.UnsafePathError):
        lamina.save(tensors(), parent / "snap", files={"ok.txt": b"fine", bad: b"evil"})
    assert siblings(parent) == []
    assert siblings(tmp_path) == ["models"]


@pytest.mark.parametrize("reserved", ["manifest.msgpack", "weights/x.safetensors", "optimizer/a",
                                      "model.safetensors.index.json"])
def test_extra_file_in_reserved_place(tmp_path, reserved):
    with pytest.raises(lamina.FormatError):
        lamina.save(tensors(), tmp_path / "snap", files={reserved: b"x"})
    assert siblings(tmp_path) == []


def test_unsupported_dtype(tmp_path):
    for value in (np.zeros(3, dtype=np.complex128), torch.zeros(3, dtype=torch.complex128),
                  np.array(["a", "b"]), np.zeros(2, dtype=object), np.zeros(2, dtype=">f4").astype("V4")):
        with pytest.raises(lamina.FormatError):
            lamina.save({"ok.w": np.zeros(2, np.float32), "bad.w": value}, tmp_path / "snap")
        assert siblings(tmp_path) == []


def test_non_string_tensor_name(tmp_path):
    for name in (1, None, b"bytes", ("a", "b"), ""):
        with pytest.raises(lamina.FormatError):
            lamina.save({"ok.w": np.zeros(2, np.float32), name: np.zeros(2, np.float32)}, tmp_path / "snap")
        assert siblings(tmp_path) == []


def test_unsupported_model_and_values(tmp_path):
    for bad in ([np.zeros(2)], "a string", 42, {"w": [1.0, 2.0]}, {"w": 3.0}):
        with pytest.raises(lamina.FormatError):
            lamina.save(bad, tmp_path / "snap")
    with pytest.raises(lamina.FormatError):
        lamina.save({"w": np.zeros(2, np.float32)}, tmp_path / "snap", info={"nmae": "typo"})
    with pytest.raises(lamina.FormatError):
        lamina.save({"w": np.zeros(2, np.float32)}, tmp_path / "snap", training={"step": 1.5})
    with pytest.raises(lamina.FormatError):
        lamina.save({"w": np.zeros(2, np.float32)}, tmp_path / "snap", info={"extra": {"f": object()}})
    with pytest.raises(lamina.FormatError):
        lamina.save({"w": np.zeros(2, np.float32)}, tmp_path / "snap", files={"a.bin": 12})
    with pytest.raises(lamina.FormatError):
        lamina.save({"w": np.zeros(2, np.float32)}, tmp_path / "snap", layer_of=lambda n: 3)
    assert siblings(tmp_path) == []


def test_failed_save_midway_leaves_nothing(tmp_path, monkeypatch):
    # (1) an invalid extra file after the shards were written
    with pytest.raises(lamina.FormatError):
        lamina.save(tensors(), tmp_path / "snap", files={"a.txt": b"x", "b.txt": 3.5})
    assert siblings(tmp_path) == []

    # (2) a tensor source that fails while its shard is being written
    from lamina.frameworks import base as _tensors

    real = _tensors.TensorSource.buffer
    calls = []

    def failing(self):
        calls.append(self.name)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(self)

    monkeypatch.setattr(_tensors.TensorSource, "buffer", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        lamina.save(tensors(), tmp_path / "snap")
    assert len(calls) == 3
    assert siblings(tmp_path) == []


def test_failed_overwrite_keeps_old_snapshot(tmp_path, monkeypatch):
    target = tmp_path / "snap"
    make_snapshot(target)
    before = {p: (target / p).read_bytes() for p in lamina.open(target).files + [MANIFEST_NAME]}
    big = {f"l{i}.w": np.full(1000, i, np.float32) for i in range(4)}
    with pytest.raises(lamina.UnsafePathError):
        lamina.save(big, target, overwrite=True, files={"../x": b"x"})

    from lamina.frameworks import base as _tensors

    real = _tensors.TensorSource.buffer
    calls = []

    def failing(self):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("ENOSPC")
        return real(self)

    monkeypatch.setattr(_tensors.TensorSource, "buffer", failing)
    with pytest.raises(OSError):
        lamina.save(big, target, overwrite=True)
    monkeypatch.undo()
    assert siblings(tmp_path) == ["snap"]
    art = lamina.open(target)
    art.verify()
    assert {p: (target / p).read_bytes() for p in art.files + [MANIFEST_NAME]} == before


# ------------------------------------------------------------------------------ killed saves
CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import lamina

    target, value = sys.argv[1], float(sys.argv[2])
    tensors = {f"layer{i}.weight": np.full((256, 1024), value + i, dtype=np.float32) for i in range(24)}
    tensors["marker.value"] = np.full(4, value, dtype=np.float64)
    print("ready", flush=True)
    lamina.save(tensors, target, overwrite=True, durable=False, training={"step": int(value)})
    print("done", flush=True)
    """
)
OLD, NEW = 1.0, 2.0


def _start_child(script: Path, target: Path, value: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(script), str(target), str(value)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read()
    return proc


def _snapshot_value(target: Path) -> float:
    art = lamina.open(target)
    art.verify()
    marker = art.tensor("marker.value", framework="np")
    assert np.all(marker == marker[0])
    value = float(marker[0])
    assert value in (OLD, NEW), value
    assert art.training.step == int(value)
    assert art.tensor("layer0.weight", framework="np")[0, 0] == value
    last = art.tensor("layer23.weight", framework="np")
    assert np.all(last == value + 23)
    return value


def test_killed_overwrite_leaves_old_or_new(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    target = tmp_path / "out" / "snap"

    # Time one complete save from "ready" to exit (which also yields the OLD snapshot).
    proc = _start_child(script, target, OLD)
    t0 = time.monotonic()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    duration = time.monotonic() - t0
    proc.stdout.close()
    proc.stderr.close()
    assert _snapshot_value(target) == OLD

    rng = random.Random(1234)
    delays = [0.0, 0.001] + [rng.uniform(0, duration * 1.2) for _ in range(12)]
    outcomes = []
    for delay in delays:
        if _snapshot_value(target) == NEW:  # reset to OLD in-process
            lamina.save({f"layer{i}.weight": np.full((256, 1024), OLD + i, np.float32) for i in range(24)}
                        | {"marker.value": np.full(4, OLD)}, target, overwrite=True, durable=False,
                        training={"step": int(OLD)})
            assert _snapshot_value(target) == OLD
        proc = _start_child(script, target, NEW)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        assert target.is_dir(), f"target vanished after a kill at {delay:.3f}s"
        outcomes.append((delay, rc, _snapshot_value(target)))
        # Nothing but the target and (possibly) the killed save's hidden temp dirs.
        for name in siblings(target.parent):
            assert name == "snap" or name.startswith(".snap.lamina-"), name

    # A later complete save sweeps what killed saves left behind.
    proc = _start_child(script, target, NEW)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert _snapshot_value(target) == NEW
    assert siblings(target.parent) == ["snap"], outcomes
    assert any(rc == -signal.SIGKILL for _, rc, _ in outcomes)


def _lt1(data: bytes) -> str:
    hasher = Lt1()
    hasher.update(data)
    return hasher.hexdigest()
