"""Tensor bytes straight from memory-mapped safetensors files, with resident memory bounded.

Each source file is mapped read-only once; a tensor's bytes are a ``memoryview`` of the mapping, so
the writer reads them from the page cache without a copy. Two things keep the process's resident
memory near one layer, whatever the model's size:

* after a layer's shard is written (``after_shard``), its pages are dropped from the mapping with
  ``madvise(MADV_DONTNEED)`` — clean, file-backed pages, so dropping one only means reading it
  again from the file if needed;
* a byte budget across the writer's threads: a thread asks for a layer's bytes only while the
  layers in flight fit in the budget (a layer larger than the budget runs alone). A lease ends
  when its shard is written, when its thread starts another layer, or when the job that took it
  is no longer running (a failed write: the waiting thread sees that the holder's job frame has
  left its stack, so a failure can never leave another thread waiting forever).

The files must not be truncated while they are mapped (reading past a shrunken file's end would
raise SIGBUS); each mapping's size is checked against the parsed header when it is made.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import thread as _pool_thread
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from lamina._errors import IntegrityError
from lamina.frameworks.base import TensorSource
from lamina.storage.local import open_regular

__all__ = ["MappedFiles", "MappedSource", "Budget", "BUDGET_BYTES"]

BUDGET_BYTES = 32 << 20  # source bytes in flight across threads (a larger layer runs alone)
_RUN_CODE = getattr(getattr(_pool_thread, "_WorkItem", None), "run", None)
_RUN_CODE = getattr(_RUN_CODE, "__code__", None)


class MappedFiles:
    """Read-only mappings of the source files, each checked to have the size its header implies."""

    def __init__(self, paths: Mapping[str, Path], sizes: Mapping[str, int]) -> None:
        self.maps: dict[str, mmap.mmap] = {}
        try:
            for name, path in paths.items():
                with open_regular(path, f"{path}") as f:
                    size = os.fstat(f.fileno()).st_size
                    if size != sizes[name]:
                        raise IntegrityError(f"{path}: changed while being converted ({size} bytes, "
                                             f"{sizes[name]} when its header was read)", [(name, "changed")])
                    self.maps[name] = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for mapping in self.maps.values():
            try:
                mapping.close()
            except BufferError:  # a view is still referenced (e.g. by a traceback): the GC unmaps it
                pass
        self.maps = {}


def release_pages(sources: Sequence[Any]) -> None:
    """Drop the mapped pages of ``sources`` (MappedSources; others are ignored)."""
    page = mmap.PAGESIZE
    for source in sources:
        if (not isinstance(source, MappedSource) or source.end == source.begin
                or not isinstance(source.mapping, mmap.mmap) or source.mapping.closed):
            continue
        start = source.begin - source.begin % page
        end = min(source.end + (-source.end % page), len(source.mapping))
        try:
            source.mapping.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError, AttributeError):  # not Linux: memory is simply not bounded there
            return


def _job_frame() -> FrameType | None:
    """The frame of the thread-pool job running this call (None outside a pool)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _RUN_CODE:
            return frame
        frame = frame.f_back
    return None


def _running(ident: int, frame: FrameType | None) -> bool:
    if frame is None:
        return True
    current = sys._current_frames().get(ident)
    while current is not None:
        if current is frame:
            return True
        current = current.f_back
    return False


@dataclass
class _Lease:
    layer: str
    nbytes: int
    frame: FrameType | None
    sources: list[Any] = field(default_factory=list)


class Budget:
    """At most ``limit`` bytes of source layers in flight across the writer's threads."""

    def __init__(self, layer_bytes: Mapping[str, int], limit: int | None = None) -> None:
        self.layer_bytes, self.limit = layer_bytes, BUDGET_BYTES if limit is None else limit
        self._held: dict[int, _Lease] = {}
        self._cond = threading.Condition()

    def _drop(self, ident: int) -> None:
        lease = self._held.pop(ident, None)
        if lease is not None:
            release_pages(lease.sources)
            self._cond.notify_all()

    def enter(self, source: MappedSource) -> None:
        ident = threading.get_ident()
        with self._cond:
            lease = self._held.get(ident)
            if lease is not None and lease.layer == source.layer:
                lease.sources.append(source)
                return
            self._drop(ident)  # this thread's previous layer is written (or was abandoned)
            need = self.layer_bytes.get(source.layer, source.end - source.begin)
            while self._held and sum(lease.nbytes for lease in self._held.values()) + need > self.limit:
                if not self._cond.wait(0.05):
                    for other, lease in list(self._held.items()):
                        if not _running(other, lease.frame):
                            self._drop(other)
            self._held[ident] = _Lease(source.layer, need, _job_frame(), [source])

    def after_shard(self, sources: Sequence[Any]) -> None:
        """The writer's ``after_shard``: the layer is written; drop its pages, free its bytes."""
        release_pages(sources)
        with self._cond:
            self._drop(threading.get_ident())

    def close(self) -> None:
        with self._cond:
            for ident in list(self._held):
                self._drop(ident)


@dataclass(frozen=True)
class MappedSource(TensorSource):
    """A tensor whose bytes are ``mapping[begin:end]``, handed out under ``budget``."""

    mapping: Any = field(default=None, compare=False, repr=False)
    begin: int = 0
    end: int = 0
    layer: str = ""
    budget: Budget | None = field(default=None, compare=False, repr=False)

    def buffer(self) -> memoryview:
        if self.budget is not None:
            self.budget.enter(self)
        return memoryview(self.mapping)[self.begin:self.end]
