"""A plain-data summary of a snapshot: what ``lamina inspect`` shows, as tables or JSON."""

from __future__ import annotations

import dataclasses
from typing import Any

from lamina.snapshot.artifact import Artifact

__all__ = ["summarize"]


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
