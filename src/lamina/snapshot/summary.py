"""A plain-data summary of a snapshot: what ``lamina inspect`` shows, as tables or JSON; and the
tensor listing of ``lamina inspect --tensors`` (a foreign safetensors file or Hugging Face
directory is listed by ``lamina.converters.hf.describe``, in the same row schema)."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence
from typing import Any

from lamina.snapshot.artifact import Artifact

__all__ = ["summarize", "tensor_rows", "filter_rows"]


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
        # content address: "digest" is "<lt1|sha256>:<hex>" whatever the format version
        "files": [{**dataclasses.asdict(f), "digest": ":".join(f.digest)} for f in m.files],
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
