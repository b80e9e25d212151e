"""Regenerate the conformance vectors: ``python format_spec/vectors/generate.py``.

The vectors are committed; regenerate only when the spec changes (then bump the spec's change
log). Needs lamina, numpy, ml_dtypes and torch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import ml_dtypes
import msgpack
import numpy as np

import lamina
from lamina.format.codec import MANIFEST_NAME, RECORDS_FEATURE, unpack_wire, wire_as_json
from lamina.format.records import flat_wire, records_wire

HERE = Path(__file__).resolve().parent
#: vectors written by an older format version, kept as committed (readers must still read them)
FROZEN = ("minimal_1_0", "minimal_1_2")


def _write_expectations(name: str, snapshot: Path) -> None:
    wire = unpack_wire((snapshot / MANIFEST_NAME).read_bytes())
    (HERE / "valid" / f"{name}.json").write_text(json.dumps(wire_as_json(wire), indent=2, ensure_ascii=False) + "\n")
    art = lamina.open(snapshot)
    tensors = {}
    for t in art.manifest.tensors + tuple(t for s in (art.manifest.optimizer.state if art.optimizer else ())
                                           for t in s.tensors.values()):
        data = (snapshot / t.file).read_bytes()[t.begin : t.end]
        tensors[t.name] = {"file": t.file, "dtype": t.dtype, "shape": list(t.shape), "hex": data.hex()}
    (HERE / "valid" / f"{name}.tensors.json").write_text(json.dumps(tensors, indent=2, ensure_ascii=False) + "\n")


def _rechecksum(wire: dict) -> bytes:
    if RECORDS_FEATURE in wire.get("required", []) and "tensors" in wire:
        wire = records_wire(wire)  # a flat edit of a 1.3 manifest, back into layer records
    wire.pop("checksum", None)
    wire["checksum"] = bytes(32)
    data = msgpack.packb(wire, use_bin_type=True)
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def valid() -> dict[str, Path]:
    out = HERE / "valid"
    for old in out.iterdir() if out.is_dir() else ():
        if old.name.split(".")[0] not in FROZEN:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    made = {}

    made["minimal"] = out / "minimal"
    lamina.save({"w": np.arange(6, dtype="<f4").reshape(2, 3)}, made["minimal"], durable=False)

    rng = np.random.default_rng(0)
    dtypes = {
        "Layer.A/bool": np.array([True, False, True]),
        "Layer.A/u8": np.arange(5, dtype=np.uint8),
        "Layer.A/i16": np.array([-2, 7], dtype="<i2"),
        "ints.u32": np.array([1, 2**32 - 1], dtype="<u4"),
        "ints.i64": np.array([-(2**63), 2**63 - 1], dtype="<i8"),
        "ints.u64": np.array([2**64 - 1], dtype="<u8"),
        "floats.f16": rng.standard_normal(4).astype("<f2"),
        "floats.bf16": rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16),
        "floats.f64": np.array(np.pi, dtype="<f8"),  # 0-d
        "floats.c64": np.array([1 + 2j], dtype="<c8"),
        "floats.empty": np.zeros((0, 3), dtype="<f4"),
        "f8.e4m3": rng.standard_normal(3).astype(ml_dtypes.float8_e4m3fn),
        "f8.e5m2": rng.standard_normal(3).astype(ml_dtypes.float8_e5m2),
        "f8.e8m0": np.array([1, 2, 4], dtype=ml_dtypes.float8_e8m0fnu),
        "f8.e4m3fnuz": rng.standard_normal(2).astype(ml_dtypes.float8_e4m3fnuz),
        "f8.e5m2fnuz": rng.standard_normal(2).astype(ml_dtypes.float8_e5m2fnuz),
        "ünïcode.名前": np.array([1], dtype="<i4"),
        "con.weight": np.array([0.5], dtype="<f4"),
    }
    made["dtypes_and_names"] = out / "dtypes_and_names"
    lamina.save(dtypes, made["dtypes_and_names"], durable=False,
                info={"name": "dtypes", "version": "1.0.0", "creator": "lamina conformance", "license": "CC0-1.0",
                      "tags": ["vector"], "extra": {"nested": {"list": [1, 2.5, "x", None, True]}}},
                training={"step": 7, "epoch": 0.5, "metrics": {"loss": 1.25}, "extra": {"seed": 0}},
                files={"config.json": {"hidden_size": 4}, "assets/notes.txt": b"extra file\n"})

    import torch

    torch.manual_seed(0)

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.norm = torch.nn.LayerNorm(3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.embed(x)))

    model = Tied()
    opt = torch.optim.AdamW([{"params": [model.embed.weight]},
                             {"params": list(model.norm.parameters()), "weight_decay": 0.0}], lr=0.01)
    x = torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), x).backward()
        opt.step()
    made["tied_with_optimizer"] = out / "tied_with_optimizer"
    lamina.save(model, made["tied_with_optimizer"], optimizer=opt, durable=False,
                info={"name": "tied"}, training={"step": 2})
    for name, path in made.items():
        _write_expectations(name, path)
    return made


def invalid(valid_snapshots: dict[str, Path]) -> None:
    out = HERE / "invalid"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    source = valid_snapshots["tied_with_optimizer"]

    def case(name: str, error: str, when: str, edit) -> None:
        target = out / name
        shutil.copytree(source, target)
        edit(target)
        (out / f"{name}.json").write_text(json.dumps({"error": error, "when": when}, indent=2) + "\n")

    def edit_wire(change):
        def edit(target: Path) -> None:
            wire = flat_wire(unpack_wire((target / MANIFEST_NAME).read_bytes()))  # edits see every entry
            change(wire)
            (target / MANIFEST_NAME).write_bytes(_rechecksum(wire))
        return edit

    def flip(path: str, offset: int):
        def edit(target: Path) -> None:
            data = bytearray((target / path).read_bytes())
            data[offset] ^= 0x01
            (target / path).write_bytes(bytes(data))
        return edit

    shard = "weights/embed.safetensors"
    case("newer_major_version", "unsupported_version", "open",
         edit_wire(lambda w: w.update(format_version="2.0")))
    case("unknown_required_feature", "unsupported_version", "open",
         edit_wire(lambda w: w.update(required=["quantization-v9"])))
    case("unsafe_path", "unsafe_path", "open",
         edit_wire(lambda w: w["files"][0].update(path="../evil.safetensors")))
    case("path_too_long", "unsafe_path", "open",
         edit_wire(lambda w: w["files"][-1].update(path="/".join(["d" * 200] * 6))))
    case("path_component_too_long", "unsafe_path", "open",
         edit_wire(lambda w: w["files"][-1].update(path="x" * 256)))
    # 1.3: shard paths, byte ranges and checksums live in layer records, checked when a layer is used
    case("absolute_path", "unsafe_path", "read",
         edit_wire(lambda w: w["tensors"][0].update(file="/etc/passwd")))
    case("range_outside_file", "format", "read",
         edit_wire(lambda w: w["tensors"][0].update(offsets=[8, 1 << 40])))
    case("checksum_mismatch", "integrity", "open", lambda t: (t / MANIFEST_NAME).write_bytes(
        (t / MANIFEST_NAME).read_bytes().replace(b"\xa4step\x02", b"\xa4step\x03", 1)))
    case("truncated_manifest", "format", "open",
         lambda t: (t / MANIFEST_NAME).write_bytes((t / MANIFEST_NAME).read_bytes()[:-40]))
    case("not_msgpack", "format", "open", lambda t: (t / MANIFEST_NAME).write_text('{"format": "lamina"}'))
    case("truncated_shard", "integrity", "read",
         lambda t: (t / shard).write_bytes((t / shard).read_bytes()[:-4]))
    case("header_disagrees", "integrity", "read",
         lambda t: (t / shard).write_bytes((t / shard).read_bytes().replace(b'"F32"', b'"I32"', 1)))
    case("flipped_data_bit", "integrity", "read", flip(shard, -1))  # format 1.2: every read checks
    case("tensor_checksum_mismatch", "integrity", "read",
         edit_wire(lambda w: w["tensors"][0].update(xxh3="0" * 32)))
    case("malformed_tensor_checksum", "format", "read",
         edit_wire(lambda w: w["tensors"][0].update(xxh3="not-a-checksum")))
    case("missing_shard", "integrity", "read", lambda t: (t / shard).unlink())

    def edit_raw(change):  # the 1.3 wire as stored (index and records as bytes)
        def edit(target: Path) -> None:
            wire = unpack_wire((target / MANIFEST_NAME).read_bytes())
            change(wire)
            (target / MANIFEST_NAME).write_bytes(_rechecksum(wire))
        return edit

    def swap_first_index_rows(w: dict) -> None:
        h, sp = w["layer_hashes"], w["layer_spans"]
        w["layer_hashes"] = h[8:16] + h[:8] + h[16:]
        w["layer_spans"] = sp[8:16] + sp[:8] + sp[16:]

    def rename_record(w: dict) -> None:  # the record says "embedding"; its index row has the hash of "embed"
        records = w["layer_records"]
        old, new = msgpack.packb("embed"), msgpack.packb("embedding")
        at = records.index(old)
        w["layer_records"] = records[:at] + new + records[at + len(old):]
        spans = bytearray(w["layer_spans"])
        for row in range(len(spans) // 8):
            offset, length = int.from_bytes(spans[8 * row:8 * row + 4], "little"), int.from_bytes(spans[8 * row + 4:8 * row + 8], "little")
            if offset <= at < offset + length:
                spans[8 * row + 4:8 * row + 8] = (length + len(new) - len(old)).to_bytes(4, "little")
            elif offset > at:
                spans[8 * row:8 * row + 4] = (offset + len(new) - len(old)).to_bytes(4, "little")
        w["layer_spans"] = bytes(spans)

    # found only when every record is decoded (keys(), state_dict(), verify()): a lookup that finds
    # its record by name still returns the right one
    case("layer_index_unsorted", "format", "verify", edit_raw(swap_first_index_rows))
    case("record_name_mismatch", "format", "read", edit_raw(rename_record))
    case("unlisted_file", "integrity", "verify", lambda t: (t / "weights" / "extra.safetensors").write_bytes(b"x"))


if __name__ == "__main__":
    invalid(valid())
    print(f"vectors written under {HERE}")
