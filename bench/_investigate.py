"""Timing splits behind the targets lamina misses: what lamina's save and load would cost without
one ingredient, and what the plain alternatives cost on the same bytes.

Nothing here changes lamina: ``stub_hashing`` swaps the ``hashlib`` that ``lamina.snapshot.writer`` sees
for a no-op for the duration of one call (the snapshot written meanwhile carries bogus sha256s
and is deleted right away).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import types
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import lamina
import lamina.snapshot.writer as _writer

_SYNC_FILE_RANGE_WRITE = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def group_layers(sd: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    groups: dict[str, list[torch.Tensor]] = {}
    for name, t in sd.items():
        groups.setdefault(name.rpartition(".")[0] or name, []).append(t)
    return groups


class _NoHash:
    def update(self, data: object) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 64


@contextlib.contextmanager
def stub_hashing() -> Iterator[None]:
    real = _writer.hashlib
    _writer.hashlib = types.SimpleNamespace(sha256=_NoHash)
    try:
        yield
    finally:
        _writer.hashlib = real


def lamina_save_nohash(sd: dict, path: Path, durable: bool) -> None:
    with stub_hashing():
        lamina.save(sd, path, durable=durable)


def write_layers(groups: dict, root: Path, mode: str = "none") -> None:
    """One file per layer, plain unbuffered writes. mode: 'none' (no fsync), 'each' (fsync after
    each file, as lamina does), 'deferred' (sync_file_range(WRITE) after each file to start
    writeback without waiting, then fsync every file at the end)."""
    root.mkdir()
    fds = []
    for layer, ts in groups.items():
        fd = os.open(root / f"{layer}.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        for t in ts:
            view, done = _bytes(t), 0
            while done < len(view):
                done += os.write(fd, view[done:])
        if mode == "each":
            os.fsync(fd)
        elif mode == "deferred":
            _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))
        fds.append(fd)
        if mode != "deferred":
            os.close(fds.pop())
    for fd in fds:
        os.fsync(fd)
        os.close(fd)
    if mode != "none":
        dfd = os.open(root, os.O_RDONLY)
        os.fsync(dfd)
        os.close(dfd)


def sha256_layers(groups: dict, threads: int = 1) -> None:
    def one(ts: list) -> str:
        h = hashlib.sha256()
        for t in ts:
            h.update(_bytes(t))
        return h.hexdigest()

    if threads == 1:
        for ts in groups.values():
            one(ts)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, sorted(groups.values(), key=lambda ts: -sum(t.numel() for t in ts))))


class RawReader:
    """Reads a lamina snapshot's bytes straight into a module's tensors with plain readinto calls,
    skipping lamina's manifest decode and shard checks: the floor for ``load_into``."""

    def __init__(self, path: Path, module: torch.nn.Module) -> None:
        art = lamina.open(path)
        resolve = {t.name: t for t in art.manifest.tensors}
        by_file: dict[str, list] = defaultdict(list)
        for name, target in module.state_dict().items():
            e = resolve[name]
            by_file[str(path / e.file)].append((e.begin, _bytes(target)))
        # biggest files first, so two threads finish together
        self.items = sorted(by_file.items(), key=lambda kv: -sum(len(v) for _, v in kv[1]))
        self.pool = ThreadPoolExecutor(2)

    @staticmethod
    def _one(item: tuple[str, list]) -> None:
        path, ranges = item
        with open(path, "rb", buffering=0) as f:
            for start, view in ranges:
                f.seek(start)
                done = 0
                while done < len(view):
                    done += f.readinto(view[done:])

    def serial(self) -> None:
        for item in self.items:
            self._one(item)

    def threaded(self) -> None:
        list(self.pool.map(self._one, self.items))

    def close(self) -> None:
        self.pool.shutdown()


def manifest_decode_split(path: Path, reps: int = 20) -> dict[str, float]:
    """Median ms of the parts of open(): msgpack unpack alone, full decode_manifest, and the
    pathlib-based path check that decode runs on every tensor's and file's path."""
    import statistics
    import time

    import msgpack

    from lamina.format.codec import decode_manifest
    from lamina.storage.paths import check_relative_path

    data = (path / "manifest.msgpack").read_bytes()
    art = lamina.open(path)
    paths = [t.file for t in art.manifest.tensors] + [f.path for f in art.manifest.files]

    def med(fn) -> float:
        xs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            xs.append(time.perf_counter() - t0)
        return statistics.median(xs) * 1e3

    return {
        "manifest_bytes": len(data),
        "msgpack.unpackb ms": med(lambda: msgpack.unpackb(data, raw=False, strict_map_key=True)),
        "decode_manifest ms": med(lambda: decode_manifest(data)),
        f"check_relative_path x{len(paths)} ms": med(lambda: [check_relative_path(p) for p in paths]),
        "open() ms": med(lambda: lamina.open(path)),
    }
