"""Laying out a snapshot from collected tensors: shards per layer, optimizer shards, index, extra files, manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from lamina._errors import FormatError
from lamina._version import __version__
from lamina.format.codec import RECORDS_FEATURE, decode_manifest
from lamina.format.manifest import (
    FORMAT_VERSION,
    Alias,
    Manifest,
    ModelInfo,
    TrainingState,
    coerce_info,
    coerce_training,
)
from lamina.format.naming import default_layer
from lamina.frameworks import registry
from lamina.frameworks.base import Collected, TensorSource
from lamina.frameworks.collect import collect_tensors
from lamina.frameworks.optim import CapturedOptimizer, optimizer_info, slot_key
from lamina.snapshot.writer import (
    INDEX_NAME,
    OPTIMIZER_DIR,
    WEIGHTS_DIR,
    SnapshotWriter,
)

__all__ = ["FileData", "collect_for_save", "fill_snapshot"]

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


def collect_for_save(model_or_tensors: Any, optimizer: Any) -> tuple[Collected, CapturedOptimizer | None]:
    """The tensors of a model (or mapping), its optimizer's state if given, and the files that
    describe the model in its framework's terms (Keras: config and layout)."""
    collected = collect_tensors(model_or_tensors)
    captured = None
    if optimizer is not None:
        adapter = registry.for_value(optimizer)
        if adapter is None or not adapter.is_optimizer(optimizer):
            raise FormatError(f"optimizer must be an optimizer of {' or '.join(registry.registered())} "
                              f"(e.g. torch.optim.Optimizer, keras.optimizers.Optimizer), got {type(optimizer).__name__}")
        captured = adapter.capture_optimizer(optimizer, collected)
    model_adapter = registry.for_value(model_or_tensors)
    if model_adapter is not None and model_adapter.is_model(model_or_tensors):
        collected.files = model_adapter.model_files(model_or_tensors, captured)
    return collected, captured


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
    layer_fn = _layer_function(layer_of or collected.layer_of)
    weight_layers = _group([(layer_fn(s.name), s.name, s) for s in collected.tensors])
    aliases = tuple(Alias(name, layer_fn(name), target) for name, target in collected.aliases.items())
    optimizer_layers = {}
    if optimizer is not None:
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
    clash = sorted(set(collected.files) & set(files or {}))
    if clash:
        raise FormatError(f"files {clash} are written by lamina from the model itself; choose other paths")
    for relpath, data in {**collected.files, **(files or {})}.items():
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
        required=(RECORDS_FEATURE,),
    )
    data = writer.commit(manifest)
    # as a reader will see it (1.3 lists files in record order)
    writer.manifest = decode_manifest(data)
    return data


