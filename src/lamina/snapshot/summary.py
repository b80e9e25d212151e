"""A plain-data summary of a snapshot: what ``lamina inspect`` shows, as tables or JSON; and the
tensor listing of ``lamina inspect --tensors``, for a snapshot or a foreign safetensors file /
Hugging Face directory (read from the headers only)."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lamina._errors import FormatError
from lamina.format.codec import MANIFEST_NAME
from lamina.format.naming import default_layer
from lamina.format.shards import MAX_HEADER_BYTES, read_header
from lamina.snapshot.artifact import Artifact
from lamina.storage.local import LocalStore

__all__ = ["summarize", "tensor_rows", "foreign_tensor_rows", "is_foreign", "filter_rows"]

HF_INDEX = "model.safetensors.index.json"
HF_SINGLE = "model.safetensors"


def summarize(art: Artifact) -> dict[str, Any]:
    """Everything ``inspect`` reports, as JSON-able data (no tensor bytes are read).

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> _ = lamina.save({"a.w": np.zeros((2, 3), "float32")}, path)
        >>> summary = summarize(lamina.open(path))
        >>> summary["layers"][0]["parameters"], summary["total_bytes"]
        (6, 24)
    """
    m = art.manifest
    layers: dict[str, dict[str, Any]] = {}
    for name in m.layers:
        layers[name] = {"name": name, "tensors": 0, "parameters": 0, "bytes": 0, "dtypes": [], "file": None}
    for t in m.tensors:
        row = layers[t.layer]
        row["tensors"] += 1
        row["parameters"] += t.numel
        row["bytes"] += t.nbytes
        row["file"] = t.file
        if t.dtype not in row["dtypes"]:
            row["dtypes"].append(t.dtype)
    for a in m.aliases:
        layers[a.layer]["tensors"] += 1
    optimizer = None
    if m.optimizer is not None:
        o = m.optimizer
        optimizer = {
            "class": o.class_name,
            "framework": o.framework,
            "slots": list(o.slots),
            "param_groups": [{"params": len(g.params), "hyperparameters": dict(g.hyperparameters)}
                             for g in o.param_groups],
            "params_with_state": len(o.state),
            "bytes": sum(t.nbytes for s in o.state for t in s.tensors.values()),
        }
    return {
        "location": art.location,
        "format_version": art.format_version,
        "producer": dict(m.producer),
        "framework": None if m.framework is None else dict(m.framework),
        "info": {**dataclasses.asdict(m.info), "tags": list(m.info.tags)},
        "training": None if m.training is None else dataclasses.asdict(m.training),
        "layers": list(layers.values()),
        "tensors": len(m.tensors) + len(m.aliases),
        "parameters": sum(t.numel for t in m.tensors),
        "total_bytes": sum(t.nbytes for t in m.tensors),
        "aliases": {a.name: a.target for a in m.aliases},
        "optimizer": optimizer,
        "files": [dataclasses.asdict(f) for f in m.files],
    }


def tensor_rows(art: Artifact) -> list[dict[str, Any]]:
    """One row per model tensor (optimizer state excluded): stored tensors in source order, then
    tied names. Row schema: ``name``, ``layer``, ``dtype`` (safetensors code), ``shape`` (list),
    ``bytes`` (the tensor's size; a tied name repeats its target's), ``file`` (the shard holding
    the bytes) and ``tied_to`` (the stored tensor a tied name shares memory with, else None).

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> _ = lamina.save({"a.w": np.zeros((2, 3), "float32")}, path)
        >>> tensor_rows(lamina.open(path))
        [{'name': 'a.w', 'layer': 'a', 'dtype': 'F32', 'shape': [2, 3], 'bytes': 24, 'file': 'weights/a.safetensors', 'tied_to': None}]
    """
    m = art.manifest
    stored = {t.name: t for t in m.tensors}
    rows = [{"name": t.name, "layer": t.layer, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
             "file": t.file, "tied_to": None} for t in m.tensors]
    for a in m.aliases:
        t = stored[a.target]
        rows.append({"name": a.name, "layer": a.layer, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
                     "file": t.file, "tied_to": a.target})
    return rows


def filter_rows(rows: list[dict[str, Any]], patterns: Sequence[str]) -> list[dict[str, Any]]:
    """Rows whose name matches any glob (``fnmatch``, case-sensitive; ``*`` also crosses dots);
    every row when there is no pattern."""
    if not patterns:
        return rows
    return [r for r in rows if any(fnmatch.fnmatchcase(r["name"], p) for p in patterns)]


def is_foreign(path: str | os.PathLike[str]) -> bool:
    """A local safetensors file, or a directory holding ``model.safetensors`` or its sharded index
    and no lamina manifest (a Hugging Face layout)."""
    p = Path(path)
    if p.is_file():
        return True
    return p.is_dir() and not (p / MANIFEST_NAME).exists() and ((p / HF_INDEX).is_file() or (p / HF_SINGLE).is_file())


def foreign_tensor_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of :func:`tensor_rows` for a ``.safetensors`` file or a Hugging Face directory
    (``model.safetensors``, or the shards ``model.safetensors.index.json`` names), read from the
    headers only with lamina's bounded header parser; ``layer`` by lamina's default rule, ``file``
    relative to the directory, ``tied_to`` None (safetensors files record no ties); sorted by name,
    numbers compared as numbers. FormatError for a malformed header or index, or an index that
    disagrees with its shards; NotFoundError for a shard it names that is missing."""
    p = Path(path)
    if p.is_file():
        return sorted(_header_rows(LocalStore(p.parent), p.name), key=_natural)
    store = LocalStore(p)
    if not (p / HF_INDEX).is_file():
        return sorted(_header_rows(store, HF_SINGLE), key=_natural)
    try:
        index = json.loads(store.read_limited(HF_INDEX, MAX_HEADER_BYTES))
    except ValueError as exc:
        raise FormatError(f"{p / HF_INDEX}: not valid JSON ({exc})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise FormatError(f"{p / HF_INDEX}: needs a 'weight_map' object of tensor name -> shard file")
    rows: list[dict[str, Any]] = []
    found: dict[str, str] = {}
    for shard in dict.fromkeys(weight_map.values()):
        for row in _header_rows(store, shard):
            if row["name"] in found:
                raise FormatError(f"{p}: tensor {row['name']!r} is in both {found[row['name']]} and {shard}")
            found[row["name"]] = shard
            rows.append(row)
    wrong = [n for n, shard in weight_map.items() if found.get(n) != shard]
    if wrong:
        raise FormatError(f"{p / HF_INDEX}: {len(wrong)} tensor(s) are not in the shard the index names, e.g. "
                          f"{wrong[0]!r} -> {weight_map[wrong[0]]}")
    return sorted(rows, key=_natural)


def _natural(row: dict[str, Any]) -> list[tuple[int, int | str]]:
    """Sort key: names with their numbers compared as numbers (``h.2`` before ``h.10``); a
    foreign file's own order is by dtype size, not meaningful to read."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", row["name"])]


def _header_rows(store: LocalStore, path: str) -> list[dict[str, Any]]:
    _, entries = read_header(lambda a, b: store.read(path, a, b), store.size(path), f"{store.root / path}")
    return [{"name": e.name, "layer": default_layer(e.name), "dtype": e.dtype, "shape": list(e.shape),
             "bytes": e.nbytes, "file": path, "tied_to": None}
            for e in sorted(entries.values(), key=lambda e: e.begin)]
