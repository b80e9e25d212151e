"""Training state with tensors in it (scheduler state, RNG states, metrics as tensors), stored
without pickles: plain values go into the manifest's ``training.extra``; each tensor goes into
``training/tensors.safetensors`` and is referred to as ``{"$tensor": key}`` (spec Appendix A)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from lamina._errors import FormatError
from lamina.format.manifest import plain_value
from lamina.format.shards import plan_shard
from lamina.frameworks.base import tensor_source

__all__ = ["TRAINING_TENSORS", "split_tensors", "join_tensors", "pack_training_extra", "unpack_training_extra"]

TRAINING_TENSORS = "training/tensors.safetensors"


def split_tensors(value: Any, path: str, tensors: dict[str, Any], dropped: list[str]) -> Any:
    """Plain data with torch tensors replaced by ``{"$tensor": key}`` (collected in ``tensors``) and
    mappings with non-string keys by ``{"$map": [[key, value], ...]}`` (``"$counter": true`` for a
    Counter); values that are none of these (arbitrary objects) become None, named in ``dropped``."""
    import sys

    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
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


def unpack_training_extra(artifact: Any) -> dict[str, Any]:
    """An Artifact's ``training.extra`` with its tensors put back (torch tensors)."""
    extra = dict(artifact.training.extra)
    if TRAINING_TENSORS not in artifact.files:
        return extra
    from safetensors.torch import load as load_safetensors

    return join_tensors(extra, dict(load_safetensors(artifact.read_file(TRAINING_TENSORS))))
