"""Walking a live Keras 3 model exactly as ``model.save()`` does.

Keras's saver (``saving_lib._save_state``) visits every saveable object (layers, the optimizer,
metrics) in a fixed order and asks each one to ``save_own_variables(store)``; the store decides
where each value lands in ``model.weights.h5``. We hand it a store that records instead of
writing, so the HDF5 paths, the group names and the order are Keras's own, and the values are the
live ``keras.Variable`` objects (no copy). From the record come lamina's tensor names — the chain
of object names below the root plus the variable's name (``sequential/dense/kernel`` becomes
``dense/kernel``), the rule the ``.keras`` converter applies to the file — and
``keras/layout.json``, the HDF5 tree the ``.keras`` writer rebuilds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras.src.saving import saving_lib

from lamina._errors import FormatError

__all__ = ["Record", "Walk", "walk_model", "layer_of", "archive_files", "dataset", "np_dtype", "numpy_of",
           "LAYOUT", "CONFIG", "METADATA"]

LAYOUT = "keras/layout.json"
CONFIG = "keras/config.json"
METADATA = "keras/metadata.json"


@dataclass
class Record:
    """One value a saveable stored: where it goes in ``model.weights.h5`` and what it is."""

    h5path: str  # "layers/dense/vars/0"
    name: str  # lamina tensor name, "dense/kernel"
    value: Any  # a keras.Variable (or a computed array, e.g. a merged LoRA kernel)


@dataclass
class Walk:
    records: list[Record] = field(default_factory=list)
    groups: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (vars group path, attrs)


class _Entry:
    """What ``save_own_variables`` writes into: a dict that keeps the objects it is given."""

    def __init__(self, walk: _RecordingStore, path: str, metadata: dict[str, Any] | None) -> None:
        self.walk, self.path, self.metadata = walk, path, metadata
        self.values: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def __len__(self) -> int:
        return len(self.values)

    def keys(self) -> Any:
        return self.values.keys()


class _RecordingStore(saving_lib.H5IOStore):  # the saver accepts only its own store types
    def __init__(self) -> None:  # no file: nothing of H5IOStore's state is used
        self.entries: list[_Entry] = []

    def __bool__(self) -> bool:
        return True

    def make(self, path: str, metadata: dict[str, Any] | None = None) -> Any:
        entry = _Entry(self, path, metadata)
        self.entries.append(entry)
        return entry

    def close(self) -> None:
        pass


def _vars_group(path: str) -> str:
    return f"{path}/vars" if path else "vars"


def walk_model(model: Any) -> Walk:
    """Every weight ``model.save()`` would write, named the lamina way, in ``model.weights`` order
    (the order the ``.keras`` converter gives); variables outside ``model.weights`` follow in the
    saver's order. The optimizer is left out (its state is kept by parameter: see ``_optim``)."""
    if not model.built:
        raise FormatError(f"the Keras model {model.name!r} is not built, so it has no weights yet: call it on a batch, "
                          "build it with keras.Input(...), or call model.build(input_shape) before saving")
    store = _RecordingStore()
    optimizer = getattr(model, "optimizer", None)
    skip = {id(optimizer)} if optimizer is not None else set()  # its save_own_variables copies every slot
    try:
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=skip)
    except FormatError:
        raise
    except Exception as exc:  # a custom layer's save_own_variables failing
        raise FormatError(f"Keras could not enumerate the variables of {model.name!r}: {type(exc).__name__}: {exc}") from None
    walk = Walk()
    names_at: dict[str, list[str]] = {}  # object path -> chain of object names
    seen: dict[str, str] = {}
    for entry in store.entries:
        parent = max((p for p in names_at if entry.path.startswith(p + "/") or p == ""), key=len, default=None)
        chain = list(names_at.get(parent, [])) if parent is not None else []
        name = (entry.metadata or {}).get("name")
        if entry.path and isinstance(name, str) and name:
            chain.append(name)
        names_at[entry.path] = chain
        if not entry.values and not entry.metadata:  # Keras creates no group for it either
            continue
        walk.groups.append((_vars_group(entry.path), dict(entry.metadata or {})))
        for key, value in entry.values.items():
            h5path = f"{_vars_group(entry.path)}/{key}"
            leaf = getattr(value, "name", None) if isinstance(value, keras.Variable) else None
            tensor = "/".join(chain + [leaf or key])
            if tensor in seen:
                raise FormatError(f"two Keras variables would both be named {tensor!r} ({seen[tensor]} and {h5path}); "
                                  "give the layers distinct names")
            seen[tensor] = h5path
            walk.records.append(Record(h5path, tensor, value))
    position = {id(v): i for i, v in enumerate(model.weights)}
    walk.records.sort(key=lambda r: position.get(id(r.value), len(position)))  # a stable sort
    return walk


def layer_of(name: str) -> str:
    """A Keras tensor's layer: its name without the variable name (the converter's rule)."""
    return name.rpartition("/")[0] or name


def numpy_of(value: Any) -> np.ndarray:
    """A host copy of a variable or tensor (``numpy()`` copies on TF and torch alike)."""
    if isinstance(value, keras.Variable):
        return np.asarray(value.numpy())  # (convert_to_numpy on .value warns under NumPy 2 on TF)
    return np.asarray(keras.ops.convert_to_numpy(value))


def dataset(h5path: str, value: Any) -> dict[str, Any]:
    """How Keras's HDF5 store writes a value: numpy dtype string and shape (bfloat16 as two
    opaque bytes marked ``dtype="bfloat16"``)."""
    dtype = np.dtype(np_dtype(keras.backend.standardize_dtype(value.dtype)))
    if dtype.name == "bfloat16":
        return {"path": h5path, "dtype": "|V2", "shape": list(value.shape), "attrs": {"dtype": "bfloat16"}}
    return {"path": h5path, "dtype": dtype.str, "shape": list(value.shape), "attrs": {}}


def archive_files(model: Any, walk: Walk, optimizer: tuple[str, list[dict[str, Any]]] | None) -> dict[str, bytes]:
    """``keras/config.json``, ``keras/metadata.json`` and ``keras/layout.json``: what
    ``lamina.convert(snapshot, "m.keras")`` needs to write the archive ``model.save()`` writes.
    ``optimizer``: the optimizer's name and its dataset descriptions (with their ``optimizer``
    roles), or None. Empty when the model has no serializable config (a subclassed model without
    ``get_config``): the weights are saved, and the ``.keras`` export says why it cannot."""
    try:
        config_json, _ = saving_lib._serialize_model_as_json(model)
    except Exception:  # noqa: BLE001 - Keras raises NotImplementedError, TypeError, ...
        return {}
    metadata = {"keras_version": keras.__version__}  # no date_saved: equal models give equal snapshots
    groups: dict[str, dict[str, Any]] = {"": {}}
    vars_groups = list(walk.groups) + ([("optimizer/vars", {"name": optimizer[0]})] if optimizer else [])
    for path, attrs in vars_groups:
        parts = path.split("/")
        for i in range(1, len(parts)):
            groups.setdefault("/".join(parts[:i]), {})
        groups[path] = dict(attrs)
    datasets = []
    for record in walk.records:
        datasets.append({**dataset(record.h5path, record.value), "tensor": record.name, "optimizer": None})
    datasets += optimizer[1] if optimizer else []
    layout = {"groups": [{"path": p, "attrs": a} for p, a in groups.items()], "datasets": datasets}
    return {CONFIG: config_json.encode(), METADATA: json.dumps(metadata).encode(),
            LAYOUT: (json.dumps(layout, indent=1, sort_keys=True) + "\n").encode()}


def np_dtype(keras_dtype: str) -> Any:
    """The numpy dtype of a Keras dtype name (bfloat16 and float8 from ml_dtypes)."""
    if keras_dtype in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes

        return getattr(ml_dtypes, keras_dtype)
    return np.dtype(keras_dtype)
