"""Adversarial cases: Hugging Face safetensors directories. See tests/adversarial/__init__.py for the
shape of a case.

Each input is a small Hugging Face directory written with ``safetensors.numpy.save_file`` (and an
index in transformers' format), then made hostile: a header whose offsets promise more bytes than
the file holds, an index that names a shard outside the directory or one that is missing, a tensor
stored in two shards, a symbolic link leading out of the directory, a FIFO among the files.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import lamina

from . import Case

__all__ = ["CASES"]

Target = tuple[Path, Path]  # (source directory, destination snapshot)


def _save(path: Path, tensors: dict[str, list[float]]) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v, dtype="float32") for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _sharded(tmp: Path, weight_map: dict[str, str]) -> Path:
    src = tmp / "model"
    src.mkdir()
    (src / "config.json").write_text('{"architectures": ["TinyModel"]}')
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 16},
                                                                  "weight_map": weight_map}))
    return src


def _lying_offsets(tmp: Path) -> Target:
    """The header promises a 4 MiB tensor; the file holds 16 bytes of data."""
    src = tmp / "model"
    src.mkdir()
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "w": {"dtype": "F32", "shape": [1024, 1024], "data_offsets": [0, 4 << 20]}}).encode()
    header += b" " * (-len(header) % 8)
    (src / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return src, tmp / "snap"


def _shard_outside(tmp: Path) -> Target:
    _save(tmp / "outside.safetensors", {"w": [1.0, 2.0]})
    return _sharded(tmp, {"w": "../outside.safetensors"}), tmp / "snap"


def _missing_shard(tmp: Path) -> Target:
    src = _sharded(tmp, {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
    _save(src / "model-00001-of-00002.safetensors", {"a": [1.0]})
    return src, tmp / "snap"


def _duplicate_across_shards(tmp: Path) -> Target:
    src = _sharded(tmp, {"w": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
    _save(src / "model-00001-of-00002.safetensors", {"w": [1.0, 2.0]})
    _save(src / "model-00002-of-00002.safetensors", {"w": [6.0, 6.0], "b": [0.0]})  # a second, different 'w'
    return src, tmp / "snap"


def _symlink_escaping(tmp: Path) -> Target:
    src = tmp / "model"
    src.mkdir()
    _save(src / "model.safetensors", {"w": [1.0]})
    secret = tmp / "secret.txt"
    secret.write_text("not part of the model")
    os.symlink(secret, src / "tokenizer.json")
    return src, tmp / "snap"


def _fifo(tmp: Path) -> Target:
    src = tmp / "model"
    src.mkdir()
    _save(src / "model.safetensors", {"w": [1.0]})
    os.mkfifo(src / "notes.txt")  # reading it would block forever
    return src, tmp / "snap"


def _convert(target: Target) -> object:
    return lamina.convert(*target)


CASES = [
    Case("hf_header_offsets_beyond_file", _lying_offsets, _convert, lamina.FormatError, r"truncated"),
    Case("hf_index_shard_outside_directory", _shard_outside, _convert, lamina.UnsafePathError,
         r"\.\./outside\.safetensors"),
    Case("hf_index_names_missing_shard", _missing_shard, _convert, lamina.NotFoundError,
         r"model-00002-of-00002\.safetensors"),
    Case("hf_tensor_in_two_shards", _duplicate_across_shards, _convert, lamina.FormatError,
         r"'w' is in both 'model-00001-of-00002\.safetensors' and 'model-00002-of-00002\.safetensors'"),
    Case("hf_symlink_escapes_directory", _symlink_escaping, _convert, lamina.UnsafePathError,
         r"'tokenizer\.json' resolves to .*secret\.txt, outside"),
    Case("hf_fifo_in_directory", _fifo, _convert, lamina.FormatError, r"'notes\.txt' is not a regular file",
         deadline=10.0),
]
