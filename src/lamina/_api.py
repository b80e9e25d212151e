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
from ._manifest_codec import MANIFEST_NAME, decode_manifest
from ._naming import default_layer
from ._store import LocalStore
from ._tensors import Collected, TensorSource, collect_tensors
from ._version import __version__
from ._writer import INDEX_NAME, OPTIMIZER_DIR, WEIGHTS_DIR, SnapshotWriter

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
) -> Artifact:
    """Save a model (and optionally its optimizer) as a lamina snapshot directory.

    Writes one safetensors shard per layer into a temporary directory beside ``path``, the
    manifest last, then renames the directory into place, so ``path`` never holds a partial
    snapshot.

    Args:
        model_or_tensors: a ``torch.nn.Module`` or a mapping of names to torch tensors / numpy
            arrays (bfloat16 and float8 numpy arrays via ``ml_dtypes``). Tensors sharing memory
            exactly (tied weights) are stored once and recorded as aliases.
        path: the snapshot directory to create.
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

    Returns:
        The saved snapshot, opened.

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
    collected = collect_tensors(model_or_tensors)
    captured = None
    if optimizer is not None:
        from ._torch_optim import capture_optimizer

        captured = capture_optimizer(optimizer, collected)
    return write_snapshot(path, collected, optimizer=captured, info=info, training=training, files=files,
                          overwrite=overwrite, layer_of=layer_of, durable=durable)


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
) -> Artifact:
    """The one writer path: every snapshot, saved or converted, is written here.

    ``progress(done_bytes, total_bytes)`` is called as shards complete (progress bars);
    ``after_shard(sources)`` once a shard's sources are no longer needed.
    """
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

    with SnapshotWriter(path, overwrite=overwrite, durable=durable, on_shard=on_shard,
                        after_shard=after_shard) as writer:
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
        writer.commit(manifest)
    return Artifact(LocalStore(Path(path)), manifest)


def open(path: str | os.PathLike[str], *, verify: bool = False) -> Artifact:
    """Open a snapshot lazily: reads and validates ``manifest.msgpack`` only.

    Args:
        path: the snapshot directory.
        verify: check the sha256 of every shard as it is read (reads whole shards); otherwise
            reads check sizes and shard headers against the manifest.

    Raises:
        NotFoundError: no snapshot at ``path``.
        FormatError / UnsupportedVersionError / IntegrityError: a bad manifest.

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> _ = lamina.save({"w": np.zeros(3, dtype="int8")}, path)
        >>> lamina.open(path).keys()
        ['w']
    """
    root = Path(path)
    if not root.is_dir():
        raise NotFoundError(f"{root}: no such snapshot directory")
    store = LocalStore(root)
    if not store.exists(MANIFEST_NAME):
        raise NotFoundError(f"{root}: no {MANIFEST_NAME}; not a lamina snapshot (or an interrupted save)")
    data = store.read(MANIFEST_NAME)
    return Artifact(store, decode_manifest(data, str(root / MANIFEST_NAME)), verify=verify)
