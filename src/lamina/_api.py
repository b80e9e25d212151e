"""``lamina.save`` and ``lamina.open``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._artifact import Artifact
from ._torch_optim import CapturedOptimizer
from ._errors import FormatError, NotFoundError
from ._manifest import FORMAT_VERSION, Alias, Manifest, ModelInfo, TrainingState, coerce_info, coerce_training
from ._manifest_codec import MANIFEST_NAME
from ._reader import read_manifest
from ._naming import default_layer
from ._store import LocalStore
from ._tensors import Collected, TensorSource, collect_tensors
from ._version import __version__
from ._writer import INDEX_NAME, OPTIMIZER_DIR, WEIGHTS_DIR, DirectoryWriter, SnapshotWriter

__all__ = ["save", "open"]

FileData = bytes | os.PathLike | Mapping[str, Any]


def _group(items: list[tuple[str, str, TensorSource]]) -> dict[str, list[tuple[str, TensorSource]]]:
    """(layer, key, source) -> {layer: [(key, source)]}, layers in first-appearance order."""
    layers: dict[str, list[tuple[str, TensorSource]]] = {}
    for layer, key, source in items:
        layers.setdefault(layer, []).append((key, source))
    return layers


def _layer_function(layer_of: Callable[[str], str] | None) -> Callable[[str], str]:
    if layer_of is None:
        return default_layer

    def checked(name: str) -> str:
        layer = layer_of(name)
        if not isinstance(layer, str):
            raise FormatError(f"layer_of({name!r}) returned {type(layer).__name__}, expected str")
        return layer
    return checked


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


def collect_for_save(model_or_tensors: Any, optimizer: Any) -> tuple[Collected, CapturedOptimizer | None]:
    """The tensors of a model (or mapping) and, if given, its torch optimizer's state."""
    collected = collect_tensors(model_or_tensors)
    if optimizer is None:
        return collected, None
    from ._torch_optim import capture_optimizer

    return collected, capture_optimizer(optimizer, collected)


def repository_target(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(repository location, branch)`` when ``path`` names a repository, else None (a directory)."""
    from ._locations import is_remote, split_ref
    from ._repo_layout import REPO_MARKER

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
        from ._repo import Repo

        location, branch = repository
        repo = Repo(location, storage_options=storage_options)
        result = repo.write_collected(collected, branch, message=message, overwrite=overwrite, durable=durable,
                                      **content)
        return repo.open(result.revision)
    with DirectoryWriter(path, overwrite=overwrite, durable=durable, after_shard=after_shard) as writer:
        fill_snapshot(writer, collected, **content)  # type: ignore[arg-type]
        manifest = writer.manifest
    return Artifact(LocalStore(Path(path)), manifest)


def fill_snapshot(
    writer: SnapshotWriter,
    collected: Collected,
    *,
    optimizer: CapturedOptimizer | None = None,
    info: ModelInfo | Mapping[str, Any] | None = None,
    training: TrainingState | Mapping[str, Any] | None = None,
    files: Mapping[str, FileData] | None = None,
    layer_of: Callable[[str], str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> bytes:
    """Lay out a snapshot through ``writer`` (shards, index, extra files, then the manifest) and
    commit it; returns the manifest's bytes and leaves the Manifest in ``writer.manifest``."""
    model_info = coerce_info(info)
    training_state = coerce_training(training)
    layer_fn = _layer_function(layer_of)
    weight_layers = _group([(layer_fn(s.name), s.name, s) for s in collected.tensors])
    aliases = tuple(Alias(name, layer_fn(name), target) for name, target in collected.aliases.items())
    optimizer_layers = {}
    if optimizer is not None:
        from ._torch_optim import slot_key

        optimizer_layers = _group([
            (layer_fn(param), slot_key(param, slot), source)
            for param, slots in optimizer.tensors.items() for slot, source in slots.items()
        ])

    total = sum(s.nbytes for s in collected.tensors) + sum(
        s.nbytes for slots in (optimizer.tensors.values() if optimizer else ()) for s in slots.values())
    done = [0]

    def on_shard(nbytes: int) -> None:
        done[0] += nbytes
        if progress is not None:
            progress(min(done[0], total), total)

    writer.on_shard = on_shard
    tensors = writer.write_shards(WEIGHTS_DIR, list(weight_layers.items()), role="weights")
    optimizer_desc = None
    if optimizer is not None:
        from ._torch_optim import optimizer_info

        written = writer.write_shards(OPTIMIZER_DIR, list(optimizer_layers.items()), role="optimizer")
        optimizer_desc = optimizer_info(optimizer, {e.name: e for e in written})
    # Index entries follow the manifest's tensor order (source order), not shard file order.
    order = {s.name: i for i, s in enumerate(collected.tensors)}
    tensors.sort(key=lambda t: order[t.name])
    index = {
        "metadata": {"total_size": sum(t.nbytes for t in tensors)},
        "weight_map": {t.name: t.file for t in tensors},
    }
    index_text = json.dumps(index, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    writer.write_file(INDEX_NAME, index_text.encode("utf-8"), role="index")
    for relpath, data in (files or {}).items():
        writer.write_file(relpath, data)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        producer={"name": "lamina", "version": __version__},
        framework=collected.framework,
        info=model_info,
        training=training_state,
        tensors=tuple(tensors),
        aliases=aliases,
        optimizer=optimizer_desc,
        files=tuple(writer.files),
    )
    writer.manifest = manifest
    return writer.commit(manifest)


def open(
    path: str | os.PathLike[str],
    *,
    verify: bool = False,
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
        verify: check the sha256 of every shard as it is read (reads whole shards); otherwise
            reads check sizes and shard headers against the manifest.
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
    from ._hub import hub_open, is_hub
    from ._locations import is_remote, open_store, split_ref
    from ._repo_layout import REPO_MARKER

    if is_hub(path):
        return hub_open(os.fspath(path), verify=verify, cache=cache, max_concurrency=max_concurrency)
    base, ref = split_ref(path)
    remote = is_remote(base)
    store = open_store(base, storage_options)
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise NotFoundError(f"{base}: no such snapshot directory")
    if ref is None:
        try:
            manifest: Manifest | None = read_manifest(store)[1]
        except NotFoundError:
            manifest = None
        if manifest is not None:
            if remote and cache is not False:
                from ._snapshot_stores import BlobCache, CachedSnapshotStore

                root = cache if isinstance(cache, (str, os.PathLike)) else None
                store = CachedSnapshotStore(store, manifest.files, BlobCache(root))
            return Artifact(store, manifest, verify=verify, max_workers=max_concurrency)
    if store.exists(REPO_MARKER):
        from ._repo import Repo

        repo = Repo(store, cache=cache if remote else False, max_concurrency=max_concurrency)
        return repo.open(ref or "main", verify=verify)
    if ref is not None:
        raise NotFoundError(f"{base}: no lamina repository here (no {REPO_MARKER}), so {ref!r} names nothing")
    raise NotFoundError(f"{store.location}: no {MANIFEST_NAME}; not a lamina snapshot (or an interrupted save)")
