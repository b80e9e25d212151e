"""Keep memory bounded while converting memory-mapped checkpoints.

``torch.load(mmap=True)`` maps the checkpoint; every page the writer reads stays resident until
the mapping goes away, so a 2 GB checkpoint would cost 2 GB of RSS. Once a shard is written, its
source pages are dropped with ``madvise(MADV_DONTNEED)`` — only inside mappings of the checkpoint
file itself (found in /proc/self/maps), where dropping a clean page just means re-reading it from
the file; anonymous memory is never touched (there the call would zero data). Callers must not use
it when the loader wrote into the mapping (torch byte-swaps big-endian checkpoints in place: the
dirtied pages are private copies, and dropping them would bring back the unswapped bytes).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PageReleaser"]

_MADV_DONTNEED = 4


def _file_mappings(paths: Iterable[Path]) -> list[tuple[int, int]]:
    wanted = {str(p.resolve()) for p in paths}
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].strip() in wanted:
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((start, end))
    except OSError:  # not Linux: nothing to release, memory is simply not bounded there
        return []
    return ranges


class PageReleaser:
    """Callable given the sources of each written shard; drops their pages from the mappings of
    ``paths``. Build it after loading, while the mappings exist."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        self.ranges = _file_mappings(Path(p) for p in paths)
        self._madvise = None
        if self.ranges:
            libc = ctypes.CDLL(None, use_errno=True)
            self._madvise = libc.madvise
            self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def __call__(self, sources: Sequence[Any]) -> None:
        if self._madvise is None:
            return
        page = mmap.PAGESIZE
        for source in sources:
            t = source.obj
            if not hasattr(t, "data_ptr") or t.device.type != "cpu" or not t.numel():
                continue
            start = t.data_ptr()
            end = start + t.numel() * t.element_size()
            for lo, hi in self.ranges:  # mapping bounds are page-aligned, so rounding stays inside
                a, b = max(lo, start), min(hi, end)
                if a < b:
                    a -= a % page
                    b += -b % page
                    self._madvise(a, min(b, hi) - a, _MADV_DONTNEED)
