"""Training state with tensors in it (scheduler state, RNG states, metrics as tensors), stored
without pickles: plain values go into the manifest's ``training.extra``; each tensor goes into
``training/tensors.safetensors`` and is referred to as ``{"$tensor": key}`` (spec Appendix A)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from lamina._errors import FormatError
from lamina.format.manifest import plain_value
from lamina.format.shards import parse_header, plan_shard
from lamina.frameworks import registry
from lamina.frameworks.collect import tensor_source

__all__ = ["TRAINING_TENSORS", "split_tensors", "join_tensors", "pack_training_extra", "unpack_training_extra"]

TRAINING_TENSORS = "training/tensors.safetensors"


def _is_framework_tensor(value: Any) -> bool:
    """A tensor of a model framework (torch...). numpy arrays stay plain data, as before adapters:
    the tensors file is read back in the training framework."""
    adapter = registry.for_value(value)
    return adapter is not None and adapter.name != "numpy" and adapter.is_tensor(value)


def split_tensors(value: Any, path: str, tensors: dict[str, Any], dropped: list[str]) -> Any:
    """Plain data with torch tensors replaced by ``{"$tensor": key}`` (collected in ``tensors``) and
    mappings with non-string keys by ``{"$map": [[key, value], ...]}`` (``"$counter": true`` for a
    Counter); values that are none of these (arbitrary objects) become None, named in ``dropped``."""
    if _is_framework_tensor(value):
        tensors[path] = value
        return {"$tensor": path}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value) and not isinstance(value, Counter):
            return {k: split_tensors(v, f"{path}.{k}", tensors, dropped) for k, v in value.items()}
        # Other keys (a scheduler's int milestones) keep their type: {"$map": [[key, value], ...]}.
        pairs = [[plain_value(k, f"{path} key {k!r}"), split_tensors(v, f"{path}[{k!r}]", tensors, dropped)]
                 for k, v in value.items()]
        return {"$map": pairs, "$counter": True} if isinstance(value, Counter) else {"$map": pairs}
    if isinstance(value, (list, tuple)):
        return [split_tensors(v, f"{path}[{i}]", tensors, dropped) for i, v in enumerate(value)]
    try:
        return plain_value(value, path)
    except FormatError:
        dropped.append(f"{path} ({type(value).__name__})")
        return None


def join_tensors(value: Any, tensors: Mapping[str, Any]) -> Any:
    """The inverse of :func:`split_tensors`."""
    if isinstance(value, dict):
        if set(value) == {"$tensor"} and value["$tensor"] in tensors:
            return tensors[value["$tensor"]]
        if "$map" in value and set(value) <= {"$map", "$counter"} and isinstance(value["$map"], list):
            pairs = {_hashable(k): join_tensors(v, tensors) for k, v in value["$map"]}
            return Counter(pairs) if value.get("$counter") else pairs
        return {k: join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [join_tensors(v, tensors) for v in value]
    return value


def _hashable(key: Any) -> Any:
    """A key read back from the manifest: lists were tuples."""
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


def shard_bytes(tensors: Mapping[str, Any]) -> bytes:
    """A safetensors file (lamina's deterministic layout) holding ``tensors``."""
    sources = [tensor_source(k, v)[0] for k, v in tensors.items()]
    header, entries = plan_shard([(s.name, s.dtype.code, s.shape) for s in sources])
    by_name = {s.name: s for s in sources}
    return header + b"".join(bytes(by_name[e.name].buffer()) for e in entries)


def pack_training_extra(extra: Mapping[str, Any], dropped: list[str]) -> tuple[Any, dict[str, bytes]]:
    """``(plain extra, files)``: the files hold the tensors (none when there are none)."""
    tensors: dict[str, Any] = {}
    plain = split_tensors(extra, "extra", tensors, dropped)
    return plain, ({TRAINING_TENSORS: shard_bytes(tensors)} if tensors else {})


def unpack_training_extra(artifact: Any, framework: str = "torch") -> dict[str, Any]:
    """An Artifact's ``training.extra`` with its tensors put back (as ``framework`` tensors)."""
    extra = dict(artifact.training.extra)
    if TRAINING_TENSORS not in artifact.files:
        return extra
    return join_tensors(extra, read_tensors_file(artifact.read_file(TRAINING_TENSORS), TRAINING_TENSORS, framework))


def read_tensors_file(data: bytes, where: str, framework: str) -> dict[str, Any]:
    """Every tensor of a safetensors file's bytes, as ``framework`` tensors (header validated)."""
    _, entries = parse_header(data, len(data), where)
    adapter = registry.get(framework)
    out = {}
    for name, entry in entries.items():
        tensor, view = adapter.empty(entry.dtype, entry.shape)
        view[:] = memoryview(data)[entry.begin : entry.end]
        out[name] = tensor
    return out
