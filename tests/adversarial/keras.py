"""Adversarial cases: keras. See tests/adversarial/__init__.py for the shape of a case.

Every input starts from a real Keras 3 model (two Dense layers trained one step with Adam), saved
with ``model.save("x.keras")`` and ``model.save("x.h5")``; the builders then replace
``model.weights.h5`` (or the legacy file) with one edited by h5py, patch raw bytes where h5py
cannot write the lie (a tampered shape, a false end of file, a false zip size), or re-zip the
archive. Most declare far more data than they hold: before the size checks, h5py allocated the
whole declared array (8 GiB of RSS, or numpy's raw ArrayMemoryError for 4 PiB).
"""

from __future__ import annotations

import bz2
import functools
import math
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import lamina

from . import Case

__all__ = ["CASES", "KERNEL", "LEGACY_KERNEL", "GiB", "base_files", "bzip2_bomb", "keras_with", "legacy_listed_twice",
           "legacy_with", "linked", "many_small_entries", "replace_dataset", "rezip"]

KERNEL = "layers/dense/vars/0"  # fc1's kernel in model.weights.h5
LEGACY_KERNEL = "model_weights/fc1/mlp/fc1/kernel"
WEIGHTS = "model.weights.h5"
GiB = 1 << 30


@functools.cache
def base_files() -> dict[str, Any]:
    """The real model's ``.keras`` entries (name -> bytes) and legacy ``.h5`` bytes, built once."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="fc1"), keras.layers.Dense(4, name="fc2")],
                             name="mlp")
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 8), "float32"), np.ones((4, 4), "float32"), verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(Path(tmp) / "m.keras")
        model.save(Path(tmp) / "m.h5")
        with zipfile.ZipFile(Path(tmp) / "m.keras") as zf:
            entries = {name: zf.read(name) for name in zf.namelist()}
        legacy = (Path(tmp) / "m.h5").read_bytes()
    return {"entries": entries, "legacy": legacy, "weights": [w.copy() for w in model.get_weights()]}


def rezip(path: Path, weights: bytes, compression: int = zipfile.ZIP_STORED, **extra: bytes) -> Path:
    """The real archive with ``model.weights.h5`` replaced (stored, as Keras writes it)."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in base_files()["entries"].items():
            zf.writestr(name, weights if name == WEIGHTS else data)
        for name, data in extra.items():
            zf.writestr(name, data)
    return path


def _edited(tmp: Path, data: bytes, edit: Callable[[Any], None]) -> bytes:
    work = tmp / "work.h5"
    work.write_bytes(data)
    with h5py.File(work, "r+") as h5:
        edit(h5)
    return work.read_bytes()


def keras_with(name: str, edit: Callable[[Any], None]) -> Callable[[Path], Path]:
    """A builder: the real ``.keras`` whose weights file was edited by ``edit(h5)``."""
    def build(tmp: Path) -> Path:
        return rezip(tmp / name, _edited(tmp, base_files()["entries"][WEIGHTS], edit))
    return build


def legacy_with(name: str, edit: Callable[[Any], None]) -> Callable[[Path], Path]:
    """A builder: the real legacy ``.h5`` edited by ``edit(h5)``."""
    def build(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(_edited(tmp, base_files()["legacy"], edit))
        return path
    return build


def replace_dataset(path: str, **dataset: Any) -> Callable[[Any], None]:
    """An edit replacing the dataset at ``path`` by ``create_dataset(**dataset)``."""
    def edit(h5: Any) -> None:
        parent, _, key = path.rpartition("/")
        del h5[parent][key]
        h5[parent].create_dataset(key, **dataset)
    return edit


def _partly_written(h5: Any) -> None:
    replace_dataset(KERNEL, shape=(2 * GiB,), dtype="f4", chunks=(1024,))(h5)
    h5[KERNEL][:1024] = 1.0  # one chunk of two million


def linked(path: str, copies: int) -> Callable[[Any], None]:
    """A real 1 MiB dataset under its own layer, hard-linked under ``copies`` more layers: every
    link reads the same stored bytes again."""
    def edit(h5: Any) -> None:
        for i in range(copies + 1):
            group = h5.create_group(f"layers/blob{i}/vars")
            group.attrs["name"] = f"blob{i}"
            if i == 0:
                group.create_dataset("0", data=np.random.default_rng(0).random(1 << 18, dtype="float32"))
            else:
                group["0"] = h5[path]
    return edit


def legacy_listed_twice(h5: Any) -> None:
    group = h5["model_weights/fc1"]
    group.create_dataset("big", data=np.random.default_rng(0).random(1 << 18, dtype="float32"))
    for i in range(8):
        group[f"alias{i}"] = group["big"]
    group.attrs["weight_names"] = [b"big"] + [f"alias{i}".encode() for i in range(8)]


def _patched(name: str, patch: Callable[[bytearray], None],
             edit: Callable[[Any], None] | None = None) -> Callable[[Path], Path]:
    """A builder: the real weights (first edited by ``edit(h5)``) with raw bytes changed by ``patch``."""
    def build(tmp: Path) -> Path:
        data = base_files()["entries"][WEIGHTS]
        data = bytearray(_edited(tmp, data, edit) if edit else data)
        patch(data)
        return rezip(tmp / name, bytes(data))
    return build


def _dims_and_layout(shape: tuple[int, int], new_shape: tuple[int, int], size: int | None = None,
                     eoa: int | None = None) -> Callable[[bytearray], None]:
    """Overwrite fc1's kernel dataspace (dims then max dims, u64 each) in the object header; with
    ``size``, also the byte count of its contiguous layout message; with ``eoa``, the
    superblock's end-of-file address (version 0 superblock: bytes 40..48)."""
    def patch(data: bytearray) -> None:
        dims = struct.pack("<QQQQ", *shape, *shape)
        at = data.find(dims)
        assert at > 0 and data.find(dims, at + 1) == -1, "fc1's kernel dataspace not found once"
        data[at:at + 32] = struct.pack("<QQQQ", *new_shape, *new_shape)
        if size is not None:
            old = math.prod(shape) * 4
            layout = data.find(struct.pack("<Q", old), at + 32)  # the layout message follows the dataspace
            assert layout > 0
            data[layout:layout + 8] = struct.pack("<Q", size)
        if eoa is not None:
            assert data[8] == 0, "expected a version 0 superblock"
            struct.pack_into("<Q", data, 40, eoa)
    return patch


def _zip_field(data: bytearray, name: str, central: int, local: int | None, value: int, fmt: str = "<I") -> None:
    """Set a field (u32 unless ``fmt`` says) of ``name``'s central directory record (and local
    header) to ``value``."""
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        length, = struct.unpack_from("<H", data, pos + 28)
        if data[pos + 46:pos + 46 + length] == name.encode():
            struct.pack_into(fmt, data, pos + central, value)
            if local is not None:
                header, = struct.unpack_from("<I", data, pos + 42)
                struct.pack_into(fmt, data, header + local, value)
            return
        pos = data.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"{name} not in the central directory")


def zip_patched(name: str, patch: Callable[[bytearray], None], weights_tail: bytes = b"",
                compression: int = zipfile.ZIP_STORED) -> Callable[[Path], Path]:
    """A builder: the real archive (weights + ``weights_tail``) with raw zip bytes patched."""
    def build(tmp: Path) -> Path:
        path = rezip(tmp / name, base_files()["entries"][WEIGHTS] + weights_tail, compression)
        data = bytearray(path.read_bytes())
        patch(data)
        path.write_bytes(data)
        return path
    return build


def declared_size(value: int) -> Callable[[bytearray], None]:
    """Declare ``value`` uncompressed bytes for the weights (central directory offset 24, local 22)."""
    return lambda data: _zip_field(data, WEIGHTS, 24, 22, value)


def longer_than_declared(name: str, zeros: int) -> Callable[[Path], Path]:
    """Deflated weights followed by ``zeros`` zero bytes, declared as the weights' size alone."""
    def build(tmp: Path) -> Path:
        size = len(base_files()["entries"][WEIGHTS])
        return zip_patched(name, declared_size(size), bytes(zeros), zipfile.ZIP_DEFLATED)(tmp)
    return build


def bzip2_bomb(name: str, zeros: int) -> Callable[[Path], Path]:
    """The weights entry compressed with bzip2: ``zeros`` zero bytes declared as a few KiB."""
    def build(tmp: Path) -> Path:
        path = tmp / name
        packed = bz2.compress(bytes(zeros))
        info = zipfile.ZipInfo(WEIGHTS)
        info.compress_type = zipfile.ZIP_BZIP2
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", base_files()["entries"]["config.json"])
            zf.writestr(info, bytes(zeros))
        data = bytearray(path.read_bytes())
        declared_size(len(packed))(data)  # as small as the compressed stream: no ratio to see
        path.write_bytes(data)
        return path
    return build


def many_small_entries(name: str, count: int) -> Callable[[Path], Path]:
    """The real archive plus ``count`` deflated assets of 1 MiB of zeros (about 1 KiB each)."""
    def build(tmp: Path) -> Path:
        path = rezip(tmp / name, base_files()["entries"][WEIGHTS], zipfile.ZIP_DEFLATED)
        blob = bytes((1 << 20) - 1)
        with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
            for i in range(count):
                zf.writestr(f"assets/zeros{i}.bin", blob)
        return path
    return build


def _convert(path: Path) -> object:
    return lamina.convert(path, path.parent / "converted")


def _case(name: str, build: Callable[[Path], Any], match: str) -> Case:
    return Case(name, build, _convert, lamina.FormatError, match)


_ODD_KERNEL = replace_dataset(KERNEL, data=np.ones((3, 7777), "f4"))  # a shape found once in the file's bytes
NEVER_WRITTEN = r"only 0 bytes are stored: data never written"
CASES: list[Case] = [
    # HDF5 datasets in model.weights.h5 that declare data the file does not hold
    _case("keras_h5_never_written_8gib", keras_with("unwritten.keras", replace_dataset(KERNEL, shape=(2 * GiB,), dtype="f4")),
          rf"model\.weights\.h5: dataset /{KERNEL} declares 8589934592 bytes .*{NEVER_WRITTEN}"),
    _case("keras_h5_never_written_4pib", keras_with("unwritten4p.keras", replace_dataset(KERNEL, shape=(1 << 50,), dtype="f4")),
          rf"/{KERNEL} declares 4503599627370496 bytes .*{NEVER_WRITTEN}"),
    _case("keras_h5_no_chunks_4pib",
          keras_with("nochunks.keras", replace_dataset(KERNEL, shape=(1 << 52,), dtype="u1", chunks=(1 << 20,))),
          rf"/{KERNEL} declares 4503599627370496 bytes .* only 0 chunk\(s\) \(0 bytes\) are stored"),
    _case("keras_h5_fill_value_no_chunks",
          keras_with("fill.keras", replace_dataset(KERNEL, shape=(2 * GiB,), dtype="f4", chunks=(1 << 20,), fillvalue=1.5)),
          rf"/{KERNEL} declares 8589934592 bytes .* in 2048 chunks, but only 0 chunk"),
    _case("keras_h5_chunks_partly_written", keras_with("partly.keras", _partly_written),
          rf"/{KERNEL} declares 8589934592 bytes .* in 2097152 chunks, but only 1 chunk\(s\) \(4096 bytes\)"),
    _case("keras_h5_chunk_expands_past_ratio",
          keras_with("bigchunk.keras", lambda h5: replace_dataset(
              KERNEL, data=np.zeros((8, 16), "f4"), chunks=(2048, 2048), maxshape=(None, None),
              compression="gzip", compression_opts=9)(h5)),
          rf"/{KERNEL} declares 512 bytes .* expand to 16777216 bytes from \d+ stored bytes.*compression bomb"),
    _case("keras_h5_tampered_shape_chunked",
          _patched("tampered_chunked.keras", _dims_and_layout((3, 7777), (1 << 20, 1 << 20)),
                   replace_dataset(KERNEL, data=np.ones((3, 7777), "f4"), chunks=(3, 7777))),
          rf"/{KERNEL} declares 4398046511104 bytes .* in 47186010 chunks, but only 1 chunk\(s\)"),
    _case("keras_h5_tampered_shape_contiguous",
          _patched("tampered.keras", _dims_and_layout((3, 7777), (1 << 20, 1 << 20)), _ODD_KERNEL),
          r"malformed model\.weights\.h5 .*invalid dataset size"),  # HDF5 1.14 refuses it on open
    _case("keras_h5_storage_past_end_of_file",
          _patched("pasteof.keras", _dims_and_layout((3, 7777), (1 << 15, 1 << 16), size=8 * GiB, eoa=1 << 40),
                   _ODD_KERNEL),
          r"model\.weights\.h5 is not HDF5 .*truncated file"),  # HDF5 checks its end-of-file address
    _case("keras_h5_optimizer_iteration_never_written",
          keras_with("iteration.keras", replace_dataset("optimizer/vars/0", shape=(2 * GiB,), dtype="i8")),
          r"/optimizer/vars/0 declares 17179869184 bytes .*only 0 bytes are stored"),
    _case("keras_h5_dataset_linked_many_times", keras_with("linked.keras", linked("layers/blob0/vars/0", 200)),
          r"/layers/blob1/vars/0 declares 1048576 bytes .*more than the \d+-byte file: datasets that share storage"),
    # legacy full-model .h5
    _case("keras_legacy_never_written_8gib",
          legacy_with("unwritten.h5", replace_dataset(LEGACY_KERNEL, shape=(2 * GiB,), dtype="f4")),
          rf"unwritten\.h5: dataset /{LEGACY_KERNEL} declares 8589934592 bytes .*{NEVER_WRITTEN}"),
    _case("keras_legacy_no_chunks_4pib",
          legacy_with("nochunks.h5", replace_dataset(LEGACY_KERNEL, shape=(1 << 50,), dtype="f4", chunks=(1 << 18,))),
          rf"/{LEGACY_KERNEL} declares 4503599627370496 bytes .* only 0 chunk"),
    _case("keras_legacy_weight_listed_twice", legacy_with("twice.h5", legacy_listed_twice),
          r"dataset /model_weights/fc1/alias0 declares 1048576 bytes .*datasets that share storage or are read twice"),
    # the zip itself
    _case("keras_zip_declared_size_4gib", zip_patched("declared.keras", declared_size(0xFFFFFFF0)),
          r"entry 'model\.weights\.h5' would expand to 4294967280 bytes .*zip bomb"),
    _case("keras_zip_compressed_size_past_archive",
          zip_patched("compressed.keras", lambda data: _zip_field(data, WEIGHTS, 20, None, 1 << 31)),
          r"entry 'model\.weights\.h5' claims 2147483648 compressed bytes, more than the archive"),
    _case("keras_zip_entry_longer_than_declared", longer_than_declared("longer.keras", 64 << 20),
          r"entry 'model\.weights\.h5' is corrupt \(Bad CRC-32"),  # zipfile stops at the declared size
    _case("keras_zip_encrypted_entry", zip_patched("encrypted.keras", lambda data: _zip_field(data, WEIGHTS, 8, 6, 1, "<H")),
          r"entry 'model\.weights\.h5' is encrypted"),  # zipfile's own error was a raw RuntimeError
    _case("keras_zip_bzip2_bomb", bzip2_bomb("bzip2.keras", 16 << 20),
          r"entry 'model\.weights\.h5' uses zip compression method 12; lamina reads stored or deflated entries only"),
    _case("keras_zip_many_small_entries", many_small_entries("many.keras", 50),
          r"entry 'assets/zeros\d+\.bin' would expand to 1048575 bytes .*zip bomb"),
]
