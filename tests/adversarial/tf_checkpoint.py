"""Adversarial cases: TensorFlow checkpoints. See tests/adversarial/__init__.py for the shape of a case.

Every input starts from a real checkpoint written by TensorFlow (``tf.train.Checkpoint`` of a
``tf.Module``, two data shards; a ``tf.compat.v1.train.Saver`` checkpoint with a string variable).
Forged indexes are re-written with valid block checksums (:func:`rewrite_index`), so TensorFlow's
own reader would accept them and allocate what they declare: only lamina's checks stand between
the lie and the allocation. The helpers here are shared with ``tests/test_tf_checkpoint.py``.
"""

from __future__ import annotations

import functools
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lamina

from . import Case, varint

__all__ = ["CASES", "base_checkpoints", "copy_checkpoint", "crc32c", "masked_crc", "rewrite_index", "write_table"]

GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
W = "m/w/.ATTRIBUTES/VARIABLE_VALUE"


def _tf() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


@functools.cache
def base_checkpoints() -> Path:
    """A directory with ``sharded/ckpt-1`` (TF2, two data shards) and ``saver/model.ckpt``
    (TF1 Saver with a string variable), written once per process."""
    tf = _tf()
    import numpy as np

    root = Path(tempfile.mkdtemp(prefix="lamina-tf-adversarial-"))
    module = tf.Module()
    module.w = tf.Variable(np.arange(600, dtype="float32").reshape(20, 30))
    module.b = tf.Variable(np.arange(300, dtype="float64"))
    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=2500)
    tf.train.Checkpoint(m=module).save(str(root / "sharded" / "ckpt"),
                                       options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    graph = tf.Graph()
    with graph.as_default():
        v1 = tf.compat.v1
        v1.get_variable("bert/embeddings/word_embeddings", [4, 2], initializer=v1.ones_initializer())
        v1.Variable(["a", "bc"], name="vocab")
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            (root / "saver").mkdir()
            v1.train.Saver().save(session, str(root / "saver" / "model.ckpt"))
    return root


def copy_checkpoint(tmp: Path, which: str = "sharded") -> Path:
    """A private copy of a base checkpoint; returns its prefix."""
    shutil.copytree(base_checkpoints() / which, tmp / which)
    return tmp / which / ("ckpt-1" if which == "sharded" else "model.ckpt")


# ------------------------------------------------------------------------------ forging indexes
@functools.cache
def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TensorFlow's tables and bundles use it."""
    table, crc = _crc_table(), 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in entries)
    return body + struct.pack("<II", 0, 1)  # one restart point at 0


def write_table(path: Path, entries: list[tuple[bytes, bytes]]) -> None:
    """An SSTable as TensorFlow writes one: a data block, an empty metaindex, an index, the footer;
    every block with its type byte and masked crc32c."""
    out = bytearray()

    def put(block: bytes) -> bytes:
        handle = varint(len(out)) + varint(len(block))
        out.extend(block + b"\x00" + struct.pack("<I", masked_crc(block + b"\x00")))
        return handle

    data = put(_block(entries))
    meta = put(_block([]))
    index = put(_block([(entries[-1][0] + b"\xff", data)]))
    footer = meta + index
    out.extend(footer + b"\x00" * (40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57))
    path.write_bytes(bytes(out))


def rewrite_index(prefix: Path, edit: Callable[[str, Any], None]) -> None:
    """Re-write ``prefix.index`` with ``edit(name, BundleEntryProto)`` applied to each variable,
    with valid checksums (TensorFlow's reader would trust the result)."""
    _tf()
    from lamina.converters._tf_bundle import _table
    from tensorflow.core.protobuf import tensor_bundle_pb2

    path = Path(f"{prefix}.index")
    entries = []
    for key, value in _table(path.read_bytes(), str(path)):
        if key and not key.startswith(b"\x00"):
            proto = tensor_bundle_pb2.BundleEntryProto.FromString(bytes(value))
            edit(key.decode(), proto)
            value = proto.SerializeToString()
        entries.append((bytes(key), bytes(value)))
    write_table(path, entries)


def _forged(edit: Callable[[str, Any], None]) -> Callable[[Path], Path]:
    def build(tmp: Path) -> Path:
        prefix = copy_checkpoint(tmp)
        rewrite_index(prefix, edit)
        return prefix
    return build


def _huge(name: str, entry: Any) -> None:
    if name == W:  # 2^30 x 2^30 float32 = 4 EiB, with a matching size field
        del entry.shape.dim[:]
        entry.shape.dim.add(size=1 << 30)
        entry.shape.dim.add(size=1 << 30)
        entry.size = 1 << 62


def _bigger_dim(name: str, entry: Any) -> None:
    if name == W:  # 20x30 -> 2000x30: the size field still says 2400 bytes
        entry.shape.dim[0].size = 2000


def _resource(name: str, entry: Any) -> None:
    if name == W:
        entry.dtype = 20  # DT_RESOURCE


def _truncated(tmp: Path) -> Path:
    prefix = copy_checkpoint(tmp)
    data = Path(f"{prefix}.data-00000-of-00002")
    data.write_bytes(data.read_bytes()[:100])
    return prefix


def _missing_shard(tmp: Path) -> Path:
    prefix = copy_checkpoint(tmp)
    Path(f"{prefix}.data-00001-of-00002").unlink()
    return prefix


def _garbage_index(tmp: Path) -> Path:
    prefix = copy_checkpoint(tmp)
    Path(f"{prefix}.index").write_bytes(b"not an sstable " * 20)
    return prefix


def _string_length_bomb(tmp: Path) -> Path:
    """The object graph's stored length says 2^40 bytes (TensorFlow resizes a string to the stored
    length before reading it)."""
    from lamina.converters._tf_bundle import read_bundle

    prefix = copy_checkpoint(tmp)
    entry = read_bundle(prefix, frozenset({GRAPH})).entries[GRAPH]
    data = Path(f"{prefix}.data-{entry.shard:05d}-of-00002")
    raw = bytearray(data.read_bytes())
    # varint length, then the masked crc32c of the length (as 8 bytes when it exceeds 32 bits):
    # a checksum TensorFlow verifies before it resizes the string
    head = varint(1 << 40) + struct.pack("<I", masked_crc(struct.pack("<Q", 1 << 40)))
    raw[entry.offset:entry.offset + len(head)] = head
    data.write_bytes(bytes(raw))
    return prefix


def _convert(prefix: Path) -> object:
    return lamina.convert(prefix, prefix.parent / "out", from_format="tf")


CASES = [
    Case("tf_truncated_data_shard", _truncated, _convert, lamina.IntegrityError, r"data-00000-of-00002.*truncated"),
    Case("tf_missing_data_shard", _missing_shard, _convert, lamina.NotFoundError, r"data shard 1 of 2 .* missing"),
    Case("tf_garbage_index", _garbage_index, _convert, lamina.FormatError, r"not a TensorFlow checkpoint index"),
    Case("tf_huge_declared_shape", _forged(_huge), _convert, lamina.LaminaError, r"m/w/\.ATTRIBUTES"),
    Case("tf_shape_larger_than_entry", _forged(_bigger_dim), _convert, lamina.FormatError,
         r"'m/w/\.ATTRIBUTES/VARIABLE_VALUE' declares F32\[2000, 30\]"),
    Case("tf_resource_variable", _forged(_resource), _convert, lamina.FormatError, r"'m/w/.*' is a resource tensor"),
    Case("tf_string_variable", lambda tmp: copy_checkpoint(tmp, "saver"), _convert, lamina.FormatError,
         r"'vocab' is a string tensor"),
    Case("tf_string_length_bomb", _string_length_bomb, _convert, lamina.IntegrityError,
         r"_CHECKPOINTABLE_OBJECT_GRAPH.*claims a 1099511627776-byte string"),
]
