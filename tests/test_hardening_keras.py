"""Keras inputs that declare more data than they hold (issue 9, item 7).

A ``.keras`` archive or legacy ``.h5`` whose HDF5 weights declare gigabytes or petabytes with no
data behind them, or whose zip entries expand far past what the archive holds, must be refused
with a FormatError naming the dataset (or entry) and both sizes — through ``lamina.convert`` and
the CLI — while the converting process stays within a small multiple of the file above its
baseline. Real models (also with gzip-compressed HDF5 chunks in a deflated archive) still
convert bit for bit. The inputs are built by the builders of the adversarial corpus
(tests/adversarial/keras.py), from a real Keras 3 model.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from adversarial.keras import (
    KERNEL,
    LEGACY_KERNEL,
    GiB,
    base_files,
    bzip2_bomb,
    keras_with,
    legacy_listed_twice,
    legacy_with,
    linked,
    many_small_entries,
    replace_dataset,
    rezip,
)
from cli_helpers import assert_clean_cli_error, cli_parallel, leftovers

import lamina

# name -> (builder, text the error must contain). Before the size checks each of these made the
# converter allocate the declared size: ~1 GiB, 64 MiB or 200-400 MiB of RSS, or numpy's raw
# ArrayMemoryError for petabytes.
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "never_written_1gib": (keras_with("unwritten.keras", replace_dataset(KERNEL, shape=(GiB // 4,), dtype="f4")),
                           f"/{KERNEL} declares 1073741824 bytes"),
    "never_written_4pib": (keras_with("unwritten4p.keras", replace_dataset(KERNEL, shape=(1 << 50,), dtype="f4")),
                           f"/{KERNEL} declares 4503599627370496 bytes"),
    "fill_value_no_chunks": (keras_with("fill.keras", replace_dataset(KERNEL, shape=(GiB // 4,), dtype="f4",
                                                                      chunks=(1 << 20,), fillvalue=2.0)),
                             "but only 0 chunk(s) (0 bytes) are stored"),
    "chunk_expands_64mib": (keras_with("bigchunk.keras", replace_dataset(
        KERNEL, data=np.zeros((8, 16), "f4"), chunks=(4096, 4096), maxshape=(None, None), compression="gzip",
        compression_opts=9)), "expand to 67108864 bytes"),
    "linked_200_times": (keras_with("linked.keras", linked("layers/blob0/vars/0", 200)),
                         "datasets that share storage or are read twice"),
    "legacy_never_written_1gib": (legacy_with("unwritten.h5", replace_dataset(LEGACY_KERNEL, shape=(GiB // 4,),
                                                                              dtype="f4")),
                                  f"/{LEGACY_KERNEL} declares 1073741824 bytes"),
    "legacy_listed_twice": (legacy_with("twice.h5", legacy_listed_twice),
                            "datasets that share storage or are read twice"),
    "zip_bzip2_64mib": (bzip2_bomb("bzip2.keras", 64 << 20), "uses zip compression method 12"),
    "zip_400_small_bombs": (many_small_entries("many.keras", 400), "zip bomb"),
}

# Converts in a child, printing the outcome and its own peak RSS: VmHWM, because ru_maxrss survives
# exec and would report this (TensorFlow-sized) test process's RSS at fork time. RLIMIT_AS is only
# a safety net so that a regression fails with a MemoryError instead of taking the machine's memory.
CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import lamina
try:
    lamina.convert(sys.argv[1], sys.argv[2])
    outcome = "converted"
except lamina.LaminaError as exc:
    outcome = f"{type(exc).__name__}: {exc}"
except BaseException as exc:
    outcome = f"raw {type(exc).__module__}.{type(exc).__name__}: {exc}"
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"outcome": outcome, "peak": peak * 1024}))
"""


def _children(jobs: list[tuple[Path, Path]]) -> list[dict[str, Any]]:
    """Convert each (source, destination) in its own child process, two at a time (2 cores)."""
    results = []
    for i in range(0, len(jobs), 2):
        procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(src), str(dst)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for src, dst in jobs[i:i + 2]]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, (build, _) in HOSTILE.items():
        tmp = tmp_path_factory.mktemp(name)
        out[name] = build(tmp)
        (tmp / "work.h5").unlink(missing_ok=True)
    return out


def _real(tmp: Path) -> Path:
    return rezip(tmp / "real.keras", base_files()["entries"]["model.weights.h5"])


def test_declared_sizes_are_refused_with_bounded_memory(tmp_path: Path, hostile: dict[str, Path]) -> None:
    real = _real(tmp_path)
    names = list(HOSTILE)
    results = _children([(real, tmp_path / "real_snap")] + [(hostile[n], tmp_path / f"{n}_snap") for n in names])
    baseline = results[0]
    assert baseline["outcome"] == "converted", baseline
    for name, result in zip(names, results[1:]):
        src = hostile[name]
        assert result["outcome"].startswith("FormatError: "), (name, result["outcome"])
        assert str(src) in result["outcome"] and HOSTILE[name][1] in result["outcome"], (name, result["outcome"])
        bound = baseline["peak"] + 4 * src.stat().st_size + (32 << 20)
        assert result["peak"] < bound, (name, result["peak"] >> 20, "MiB, bound", bound >> 20, "MiB")
        assert not (tmp_path / f"{name}_snap").exists()
    assert leftovers(tmp_path) == []


def test_cli_gives_one_line_error(tmp_path: Path, hostile: dict[str, Path]) -> None:
    names = list(HOSTILE)
    results = cli_parallel(*[("convert", hostile[n], tmp_path / f"{n}_snap") for n in names])
    for name, res in zip(names, results):
        assert_clean_cli_error(res, lamina.FormatError, hostile[name].name, HOSTILE[name][1])
        assert not (tmp_path / f"{name}_snap").exists()
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ legitimate input
def _h5_datasets(data: bytes) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(io.BytesIO(data), "r") as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def _compressed(data: bytes, tmp: Path) -> bytes:
    """The same HDF5 with every dataset rewritten as gzip + shuffle chunks (what h5repack does)."""
    work = tmp / "packed.h5"
    work.write_bytes(data)
    with h5py.File(work, "r+") as h5:
        paths: list[str] = []
        h5.visititems(lambda name, obj: paths.append(name) if isinstance(obj, h5py.Dataset) else None)
        for path in paths:
            old = h5[path]
            array, attrs = old[()], dict(old.attrs)
            del h5[path]
            new = h5.create_dataset(path, data=array, **({} if array.ndim == 0 else
                                                          {"chunks": True, "compression": "gzip", "shuffle": True}))
            new.attrs.update(attrs)
    return work.read_bytes()


def test_real_model_converts_bit_for_bit(tmp_path: Path) -> None:
    want = base_files()["weights"]
    names = ["fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias"]
    art = lamina.open(lamina.convert(_real(tmp_path), tmp_path / "snap"))
    art.verify()
    assert art.keys() == names and art.optimizer is not None
    legacy = tmp_path / "real.h5"
    legacy.write_bytes(base_files()["legacy"])
    old = lamina.open(lamina.convert(legacy, tmp_path / "legacy_snap"))
    assert old.keys() == [f"mlp/{n}" for n in names]
    for name, array in zip(names, want):
        for got in (art.tensor(name, framework="np"), old.tensor(f"mlp/{name}", framework="np")):
            assert got.dtype == array.dtype and got.shape == array.shape and got.tobytes() == array.tobytes(), name


def test_compressed_chunks_and_a_deflated_archive_still_convert(tmp_path: Path) -> None:
    """gzip chunks expand past the per-file ratio only for a bomb: an all-zero 1 MiB kernel (about
    1000x compressed on its own) in a real model, repacked and deflated, converts bit for bit."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    model = keras.Sequential([keras.Input((512,)), keras.layers.Dense(512, kernel_initializer="zeros", name="wide"),
                              keras.layers.Dense(3, name="out")], name="zeros")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.0), loss="mse")  # the kernel stays zero
    model.fit(np.ones((2, 512), "float32"), np.ones((2, 3), "float32"), verbose=0)
    plain = tmp_path / "plain.keras"
    model.save(plain)
    with zipfile.ZipFile(plain) as zf:
        entries = {name: zf.read(name) for name in zf.namelist()}
    weights = entries["model.weights.h5"]
    packed = tmp_path / "packed.keras"
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, _compressed(weights, tmp_path) if name == "model.weights.h5" else data)
    with zipfile.ZipFile(packed) as zf:
        with h5py.File(io.BytesIO(zf.read("model.weights.h5")), "r") as h5:
            assert h5[KERNEL].compression == "gzip" and h5[KERNEL].nbytes == 1 << 20
            assert h5[KERNEL].id.get_storage_size() * 100 < h5[KERNEL].nbytes  # past the ratio on its own
    a = lamina.open(lamina.convert(plain, tmp_path / "a"))
    b = lamina.open(lamina.convert(packed, tmp_path / "b"))
    assert a.keys() == b.keys() == ["wide/kernel", "wide/bias", "out/kernel", "out/bias"]
    stored = _h5_datasets(weights)
    for name, path in zip(a.keys(), ["layers/dense/vars/0", "layers/dense/vars/1", "layers/dense_1/vars/0",
                                     "layers/dense_1/vars/1"]):
        for art in (a, b):
            assert art.tensor(name, framework="np").tobytes() == stored[path].tobytes(), name
    assert not stored["layers/dense/vars/0"].any()
    want, got = a.optimizer_state(framework="np"), b.optimizer_state(framework="np")
    assert want.keys() == got.keys() == set(a.keys())
    for param, slots in want.items():
        for slot, array in slots.items():
            assert got[param][slot].tobytes() == array.tobytes(), (param, slot)
