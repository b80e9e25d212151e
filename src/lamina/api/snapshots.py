"""``lamina.save`` and ``lamina.open``."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from lamina._errors import FormatError, StateMismatchError
from lamina.format.manifest import ModelInfo, TrainingState
from lamina.frameworks import registry
from lamina.frameworks.base import LoadReport
from lamina.repo.repository import open_location
from lamina.repo.targets import write_snapshot
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.build import FileData, collect_for_save

__all__ = ["save", "open", "load"]


def save(
    model_or_tensors: Any,
    path: str | os.PathLike[str],
    *,
    optimizer: Any = None,
    info: ModelInfo | Mapping[str, Any] | None = None,
    training: TrainingState | Mapping[str, Any] | None = None,
    files: Mapping[str, FileData] | None = None,
    overwrite: bool = False,
    layer_of: Callable[[str], str] | None = None,
    durable: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    message: str = "",
) -> Artifact:
    """Save a model (and optionally its optimizer) as a lamina snapshot directory, or as a new
    revision of a repository.

    A directory: one safetensors shard per layer into a temporary directory beside ``path``, the
    manifest last, then one rename into place, so ``path`` never holds a partial snapshot.
    A repository (a remote URI such as ``s3://bucket/models/bert``, a ``path@branch``, or an
    existing local repository): shards are streamed into the repository one layer at a time,
    layers it already holds are not uploaded, and the branch (default ``main``) moves last.

    Args:
        model_or_tensors: a ``torch.nn.Module`` or a mapping of names to torch tensors / numpy
            arrays (bfloat16 and float8 numpy arrays via ``ml_dtypes``). Tensors sharing memory
            exactly (tied weights) are stored once and recorded as aliases.
        path: the snapshot directory to create, or a repository location (``...@branch``).
        optimizer: a ``torch.optim.Optimizer`` over the model's parameters; its state is stored
            by parameter name.
        info: model information: a :class:`ModelInfo` or a mapping with its fields.
        training: a :class:`TrainingState` or a mapping (step, epoch, metrics, extra).
        files: extra files by relative path: bytes, a ``pathlib.Path`` to copy, or a dict
            written as JSON.
        overwrite: replace an existing snapshot at ``path`` (atomically on Linux).
        layer_of: maps a tensor name to its layer; default: the name without its last dotted
            component.
        durable: fsync before committing (survives power loss, not only a killed process).
        storage_options: fsspec options for a remote repository (see :class:`lamina.Repo`).
        message: the revision message, when saving into a repository.

    Returns:
        The saved snapshot (for a repository: the new revision), opened.

    Raises:
        ExistsError: ``path`` exists and ``overwrite`` is False.
        FormatError: an unsupported tensor, dtype, name, file or metadata value.

    Example:
        >>> import lamina, torch, tempfile, os
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> art = lamina.save(model, os.path.join(tempfile.mkdtemp(), "tiny"), info={"name": "tiny"})
        >>> art.layers, art.info.name
        (['0'], 'tiny')
    """
    collected, captured = collect_for_save(model_or_tensors, optimizer)
    return write_snapshot(path, collected, optimizer=captured, info=info, training=training, files=files,
                          overwrite=overwrite, layer_of=layer_of, durable=durable,
                          storage_options=storage_options, message=message)


def open(
    path: str | os.PathLike[str],
    *,
    verify: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache: bool | str | os.PathLike[str] | None = None,
    max_concurrency: int | None = None,
) -> Artifact:
    """Open a snapshot lazily: reads and validates ``manifest.msgpack`` only; each later read
    fetches only the bytes of the tensors asked for.

    Args:
        path: a snapshot directory; a snapshot on a remote store (``s3://bucket/snap``,
            ``https://host/snap`` served by any static web server with Range support); a
            repository revision, ``location@ref`` (``@main`` when a repository is named alone);
            or a Hugging Face Hub revision, ``hf://org/name@revision`` (pinned to its commit).
        verify: by default (None) every tensor read is checked against its XXH3-128 checksum in
            the manifest (format 1.2; a mismatch is an IntegrityError naming the file and the
            tensor), besides sizes and shard headers. ``True`` also checks the sha256 of every
            whole shard read (reads whole shards; the way to verify 1.0/1.1 snapshots, which
            have no per-tensor checksums, and the cryptographic check against deliberate
            tampering). ``False`` skips the checksums.
        storage_options: fsspec options for a remote store (s3fs: ``key``, ``secret``,
            ``client_kwargs={"endpoint_url": ...}``; http: ``headers``, ``retries``, ``timeout``).
        cache: remote only: whole shards are kept in a local cache keyed by sha256 (checked when
            used), so a second read is local. ``True``/None: the default cache directory
            (``$LAMINA_CACHE``, else ``~/.cache/lamina``); a path: that directory; ``False``: read
            exact byte ranges, nothing kept.
        max_concurrency: parallel requests for multi-shard reads (default: the backend's).

    Raises:
        NotFoundError: no snapshot at ``path``, or an unknown ref.
        FormatError / UnsupportedVersionError / IntegrityError: a bad manifest.
        StorageError: an unreachable or refusing server (after bounded retries).

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> _ = lamina.save({"w": np.zeros(3, dtype="int8")}, path)
        >>> lamina.open(path).keys()
        ['w']
    """
    return open_location(path, verify=verify, storage_options=storage_options, cache=cache,
                         max_concurrency=max_concurrency)


def load(
    model: Any,
    source: str | os.PathLike[str] | Artifact,
    *,
    optimizer: Any = None,
    strict: bool = True,
    verify: bool | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache: bool | str | os.PathLike[str] | None = None,
) -> LoadReport:
    """Load a snapshot into a live model in place, and its optimizer state where there is one.

    ``source`` is anything :func:`open` takes (a directory, ``repo@ref``, ``s3://``, ``https://``,
    ``hf://org/name@rev``) or an open :class:`Artifact`. The model's framework adapter does the
    loading (torch modules, Keras models on any backend). Optimizer state is restored into
    ``optimizer`` when given, else into the optimizer the model carries (a compiled Keras model's)
    when the snapshot has optimizer state.

    Returns:
        The :class:`lamina.LoadReport` of :meth:`Artifact.load_into`.

    Raises:
        StateMismatchError: with ``strict`` (default), the model or optimizer does not match; the
            model is checked before anything is loaded.
        FormatError: ``model`` is not a model of a supported framework.

    Example:
        >>> import lamina, torch, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> _ = lamina.save(torch.nn.Linear(2, 1), path)
        >>> str(lamina.load(torch.nn.Linear(2, 1), path))
        'all 2 tensors loaded'
    """
    adapter = registry.for_value(model)
    if adapter is None or not adapter.is_model(model):
        raise FormatError(f"cannot load into a {type(model).__name__}: it is not a model of a supported framework "
                          f"({', '.join(registry.registered())})")
    art = source if isinstance(source, Artifact) else open_location(
        source, verify=verify, storage_options=storage_options, cache=cache)
    if optimizer is not None and art.optimizer is None:
        raise StateMismatchError(f"{art.location} holds no optimizer state; nothing was loaded")
    if optimizer is None and art.optimizer is not None:
        optimizer = adapter.model_optimizer(model)
    report = art.load_into(model, strict=strict)
    if optimizer is not None:
        art.load_optimizer(optimizer, model)
    return report
