"""Adversarial cases: snapshots on a local filesystem (manifest fields, special files, refs).

Also the small builders other tests reuse: a snapshot with known tensors and a manifest rewriter
that keeps the checksum right, so a case tests the rule it means and not the checksum.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

import lamina
from lamina.format.codec import MANIFEST_NAME, RECORDS_FEATURE
from lamina.format.records import flat_wire, records_wire

from . import Case

__all__ = ["CASES", "tensors", "make_snapshot", "read_wire", "encode_wire", "write_wire", "ENC", "DEC"]

ENC = "weights/enc.safetensors"
DEC = "weights/dec.safetensors"


# ------------------------------------------------------------------------------ builders
def tensors() -> dict[str, np.ndarray]:
    return {
        "enc.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "enc.bias": np.arange(3, dtype=np.float32) - 1,
        "dec.weight": np.arange(8, dtype=np.int64).reshape(2, 4),
        "dec.scale": np.array([1.5, -2.0, 0.25], dtype=ml_dtypes.bfloat16),
    }


def make_snapshot(path: Path, **kw: Any) -> lamina.Artifact:
    return lamina.save(tensors(), path, info={"name": "demo"}, training={"step": 7, "epoch": 1},
                       files={"config.json": {"hidden": 4}}, **kw)


def read_wire(snap: Path) -> dict:
    """The manifest's wire map; a 1.3 manifest in the flat layout (top-level ``tensors``,
    ``aliases``, ``optimizer.state``, every file in ``files``), so that one edit means the same
    thing in every format version; :func:`encode_wire` puts the records back."""
    wire = msgpack.unpackb((snap / MANIFEST_NAME).read_bytes(), raw=False)
    return flat_wire(wire) if RECORDS_FEATURE in wire.get("required", []) else wire


def encode_wire(wire: dict) -> bytes:
    """Re-encode a wire map with a correct checksum as its last entry (a flat map of a 1.3
    manifest back into layer records)."""
    if RECORDS_FEATURE in wire.get("required", []) and "tensors" in wire:
        wire = records_wire(wire)
    wire = {k: v for k, v in wire.items() if k != "checksum"}
    wire["checksum"] = bytes(32)
    data = msgpack.packb(wire, use_bin_type=True)
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def write_wire(snap: Path, wire: dict) -> None:
    (snap / MANIFEST_NAME).write_bytes(encode_wire(wire))


def _snapshot(tmp: Path) -> Path:
    make_snapshot(tmp / "snap")
    return tmp / "snap"


def _renamed_file(old: str, new: str, *, tensors_too: bool = True) -> Callable[[Path], Path]:
    """A snapshot whose manifest names ``old`` as ``new`` (in the files table and tensor entries)."""
    def build(tmp: Path) -> Path:
        snap = _snapshot(tmp)
        wire = read_wire(snap)
        for f in wire["files"]:
            if f["path"] == old:
                f["path"] = new
        for t in wire["tensors"] if tensors_too else []:
            if t["file"] == old:
                t["file"] = new
        write_wire(snap, wire)
        return snap
    return build


def _replaced(relpath: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    """A snapshot whose file ``relpath`` is replaced by what ``make(path)`` puts there."""
    def build(tmp: Path) -> Path:
        snap = _snapshot(tmp)
        (snap / relpath).unlink()
        make(snap / relpath)
        return snap
    return build


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # nobody ever writes to it: opening it blocking would wait forever


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")  # endless bytes


_SOCKETS: list[socket.socket] = []


def _unix_socket(path: Path) -> None:
    # AF_UNIX paths are limited to ~107 bytes: bind in a short directory, then move the node.
    short = Path(tempfile.mkdtemp(prefix="lam")) / "s"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(short))
    sock.listen(1)
    _SOCKETS.append(sock)
    os.rename(short, path)
    short.parent.rmdir()


def _close_sockets(_: object) -> None:
    while _SOCKETS:
        _SOCKETS.pop().close()


def _repo_with_main(tmp: Path) -> str:
    repo = lamina.Repo(tmp / "repo")
    repo.save(tensors(), message="v1")
    return str(tmp / "repo")


LONG = "x" * 5000
SPECIAL_FILES = [("fifo", _fifo, "a FIFO"), ("dev_zero", _dev_zero, "a character device"),
                 ("socket", _unix_socket, "a socket")]

CASES: list[Case] = [
    # 1.3: a shard path lives in its layer's record, checked when the layer is first used
    Case("snap_path_5000_chars_read", _renamed_file(ENC, f"weights/{LONG}.safetensors"),
         lambda s: lamina.open(s).layer("enc"),
         lamina.UnsafePathError, r"layer 'enc'\.weights\.path: a path of 5020 bytes \(longer than 1024\)"),
    Case("snap_path_deep_read", _renamed_file(ENC, "/".join(["d" * 200] * 6) + ".safetensors"),
         lambda s: lamina.open(s).state_dict(), lamina.UnsafePathError, r"a path of 1217 bytes \(longer than 1024\)"),
    Case("snap_extra_file_long_component_open", _renamed_file("config.json", "é" * 128 + ".json"), lamina.open,
         lamina.UnsafePathError, r"is 261 bytes \(longer than 255\)"),
    *[Case(f"snap_{kind}_shard_layer", _replaced(ENC, make), lambda s: lamina.open(s).layer("enc", framework="np"),
           lamina.FormatError, rf"enc\.safetensors: is {what}, not a regular file", deadline=10,
           cleanup=_close_sockets) for kind, make, what in SPECIAL_FILES],
    *[Case(f"snap_{kind}_shard_state_dict_verified", _replaced(ENC, make),
           lambda s: lamina.open(s, verify=True).state_dict(framework="np"),
           lamina.FormatError, rf"enc\.safetensors: is {what}", deadline=10, cleanup=_close_sockets)
      for kind, make, what in SPECIAL_FILES],
    *[Case(f"snap_{kind}_shard_verify", _replaced(ENC, make), lambda s: lamina.open(s).verify(),
           lamina.IntegrityError, rf"1 file\(s\) failed verification: {ENC}: .*is {what}", deadline=10,
           cleanup=_close_sockets) for kind, make, what in SPECIAL_FILES],
    *[Case(f"snap_{kind}_manifest_open", _replaced(MANIFEST_NAME, make), lamina.open,
           lamina.FormatError, rf"manifest\.msgpack: is {what}", deadline=10, cleanup=_close_sockets)
      for kind, make, what in SPECIAL_FILES],
    Case("snap_fifo_extra_file_read", _replaced("config.json", _fifo),
         lambda s: lamina.open(s).read_file("config.json"), lamina.FormatError, r"config\.json: is a FIFO",
         deadline=10),
    Case("snap_sparse_2gib_manifest_open",
         _replaced(MANIFEST_NAME, lambda p: os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 0) or
                   os.truncate(p, 2 << 30)),
         lamina.open, lamina.FormatError, r"manifest\.msgpack: 2147483648 bytes, more than the 1073741824-byte limit",
         deadline=5),
    *[Case(f"convert_{kind}_input{'_' + fmt if fmt else ''}", lambda tmp, make=make: (make(tmp / "model.pt"), tmp / "model.pt")[1],
           lambda p, fmt=fmt: lamina.convert(p, p.parent / "out", from_format=fmt), lamina.FormatError,
           rf"model\.pt: is {what}, not a regular file", deadline=10, cleanup=_close_sockets)
      for kind, make, what in SPECIAL_FILES for fmt in (None, "torch", "onnx", "keras")],
    Case("snap_ref_with_trailing_newline", lambda tmp: _repo_with_main(tmp) + "@main\n", lamina.open,
         lamina.NotFoundError, r"no such snapshot directory"),
    Case("snap_hub_ref_with_trailing_newline", lambda tmp: "hf://org/name@main\n", lamina.open,
         lamina.FormatError, r"a hub location is hf://"),
]
