"""Where a snapshot is written: a directory, or a new revision of a repository (the one writer path)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lamina.format.manifest import ModelInfo, TrainingState
from lamina.frameworks.base import Collected, TensorSource
from lamina.frameworks.optim import CapturedOptimizer
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.build import FileData, fill_snapshot
from lamina.snapshot.writer import DirectoryWriter
from lamina.storage.local import LocalStore

__all__ = ["repository_target", "write_snapshot"]


def repository_target(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(repository location, branch)`` when ``path`` names a repository, else None (a directory)."""
    from lamina.format.repository import REPO_MARKER
    from lamina.storage.locations import is_remote, split_ref

    base, ref = split_ref(path)
    if ref is not None or is_remote(base) or (Path(base) / REPO_MARKER).is_file():
        return base, ref or "main"
    return None


def write_snapshot(
    path: str | os.PathLike[str],
    collected: Collected,
    *,
    optimizer: CapturedOptimizer | None = None,
    info: ModelInfo | Mapping[str, Any] | None = None,
    training: TrainingState | Mapping[str, Any] | None = None,
    files: Mapping[str, FileData] | None = None,
    overwrite: bool = False,
    layer_of: Callable[[str], str] | None = None,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
    after_shard: Callable[[Sequence[TensorSource]], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    message: str = "",
) -> Artifact:
    """The one writer path: every snapshot, saved or converted, to a directory or a repository.

    ``progress(done_bytes, total_bytes)`` is called as shards complete (progress bars);
    ``after_shard(sources)`` once a shard's sources are no longer needed.
    """
    content = dict(optimizer=optimizer, info=info, training=training, files=files, layer_of=layer_of,
                   progress=progress)
    repository = repository_target(path)
    if repository is not None:
        from lamina.repo.repository import Repo

        location, branch = repository
        repo = Repo(location, storage_options=storage_options)
        result = repo.write_collected(collected, branch, message=message, overwrite=overwrite, durable=durable,
                                      **content)
        return repo.open(result.revision)
    with DirectoryWriter(path, overwrite=overwrite, durable=durable, after_shard=after_shard) as writer:
        fill_snapshot(writer, collected, **content)  # type: ignore[arg-type]
        manifest = writer.manifest
    return Artifact(LocalStore(Path(path)), manifest)


