"""Progress bars on stderr, in binary units (KiB, MiB, GiB), shown only on a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar", "showing_progress"]


def showing_progress(no_progress: bool = False, quiet: bool = False) -> bool:
    """Whether to draw a bar: stderr is a terminal and neither ``--no-progress`` nor ``--quiet``."""
    return not (no_progress or quiet) and sys.stderr.isatty()


@contextmanager
def progress_bar(verb: str, enabled: bool) -> Iterator[Callable[[int, int | None], None] | None]:
    """A transient rich bar on stderr labelled ``verb``; yields ``callback(done, total)`` (bytes).
    Disabled, it yields None (no callback) and rich is not imported."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        TextColumn,
    )
    from rich.text import Text

    from ._render import format_bytes

    class _Speed(ProgressColumn):  # rich's TransferSpeedColumn is decimal only
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{format_bytes(int(speed))}/s", style="progress.data.speed")

    columns = (TextColumn(f"[bold]{verb}"), BarColumn(), DownloadColumn(binary_units=True), _Speed())
    with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(verb, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
