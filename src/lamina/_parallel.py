"""One small helper for running per-file work on a few threads.

File reads, writes and sha256 release the GIL, so threads give real parallelism for shard I/O.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

__all__ = ["default_workers", "run_parallel"]

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Threads for local shard I/O: one per core, at most 8 (more only adds contention)."""
    return max(1, min(8, os.cpu_count() or 1))


def run_parallel(func: Callable[[T], R], items: Sequence[T], max_workers: int) -> list[R]:
    """``[func(x) for x in items]`` on up to ``max_workers`` threads; the first error is raised
    after the running calls finish, and no new call starts once one has failed."""
    if max_workers <= 1 or len(items) <= 1:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(items)), thread_name_prefix="lamina-io") as pool:
        futures = [pool.submit(func, x) for x in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
