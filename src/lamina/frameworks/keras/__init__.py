"""The Keras 3 adapter: models, variables and optimizers on every Keras backend (TensorFlow,
torch; JAX where installed), loading in place, optimizer state by parameter, random state.

Tensor names are the ``.keras`` converter's: the chain of layer names below the model plus the
variable's name (``dense/kernel``, ``bidirectional/forward_lstm/lstm_cell/kernel``), in
``model.weights`` order, with a layer per name prefix. Snapshots saved from memory also carry
``keras/config.json`` and ``keras/layout.json`` (the HDF5 tree ``model.save()`` writes), so they
export to ``.keras``; and loading matches tensors through that layout first — by the path Keras's
own saver uses, which does not depend on auto-generated layer names — then by name.

Reads with ``framework="keras"`` give numpy arrays (bfloat16 and float8 through ml_dtypes), which
every backend's ``Variable.assign`` accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import keras
import numpy as np

from lamina._errors import FormatError, StateMismatchError
from lamina.format.dtypes import from_numpy, numpy_dtype
from lamina.format.manifest import OptimizerInfo, TensorEntry
from lamina.frameworks.base import (
    Collected,
    FrameworkAdapter,
    LoadReport,
    TensorMismatch,
    TensorReader,
    TensorSource,
)
from lamina.frameworks.keras import _optim, _rng
from lamina.frameworks.keras._walk import (
    LAYOUT,
    Walk,
    archive_files,
    layer_of,
    np_dtype,
    numpy_of,
    walk_model,
)
from lamina.frameworks.optim import CapturedOptimizer

__all__ = ["Adapter"]


def _dtype_code(value: Any, where: str) -> str:
    return from_numpy(np.dtype(np_dtype(keras.backend.standardize_dtype(value.dtype))), where).code


class Adapter(FrameworkAdapter):
    """Keras 3 layers and models, ``keras.Variable`` and ``keras.optimizers.Optimizer``.

    Example:
        >>> import keras, lamina, tempfile, os
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")])
        >>> art = lamina.save(model, os.path.join(tempfile.mkdtemp(), "m"))
        >>> art.keys(), art.layers
        (['head/kernel', 'head/bias'], ['head'])
    """

    name = "keras"
    rng_keys = ("keras",)

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, keras.Variable)

    def is_model(self, value: Any) -> bool:
        return isinstance(value, keras.layers.Layer)

    def is_optimizer(self, value: Any) -> bool:
        return isinstance(value, keras.optimizers.Optimizer)

    def version(self) -> str:
        return str(keras.__version__)

    def model_optimizer(self, model: Any) -> Any:
        optimizer = getattr(model, "optimizer", None)  # set by compile()
        return optimizer if self.is_optimizer(optimizer) else None

    layer_of = staticmethod(layer_of)

    # ------------------------------------------------------------------ writing
    def tensor_source(self, name: str, value: Any) -> tuple[TensorSource, Hashable | None]:
        code = _dtype_code(value, f"tensor {name!r}")
        key = ("keras", id(value)) if isinstance(value, keras.Variable) and int(np.prod(value.shape)) else None
        return TensorSource(name, from_numpy(numpy_dtype(code), name), tuple(value.shape), value, self), key

    def tensor_bytes(self, value: Any) -> memoryview:
        arr = np.ascontiguousarray(value if isinstance(value, np.ndarray) else numpy_of(value))
        return memoryview(arr.reshape(-1).view(np.uint8))

    def host_copy(self, value: Any) -> Any:
        return numpy_of(value)  # numpy() is a copy on TensorFlow and torch alike

    def named_tensors(self, model: Any) -> tuple[list[tuple[str, Any]], dict[int, str]]:
        walk = walk_model(model)
        names = {id(r.value): r.name for r in walk.records}
        trainable = {id(v): names[id(v)] for v in model.trainable_variables if id(v) in names}
        return [(r.name, r.value) for r in walk.records], trainable

    def capture_optimizer(self, optimizer: Any, collected: Collected) -> CapturedOptimizer:
        captured, layout = _optim.capture(self, optimizer, collected)
        captured.layout = layout
        return captured

    def model_files(self, model: Any, optimizer: CapturedOptimizer | None) -> dict[str, bytes]:
        return archive_files(model, walk_model(model), optimizer.layout if optimizer is not None else None)

    # ------------------------------------------------------------------ reading
    def empty(self, dtype: str, shape: tuple[int, ...], device: Any = None) -> tuple[Any, memoryview]:
        self.host_only(device)
        arr = np.empty(shape, dtype=numpy_dtype(dtype))
        return arr, memoryview(arr.reshape(-1).view(np.uint8))

    def load_into(self, model: Any, resolve: Mapping[str, TensorEntry], strict: bool,
                  reader: TensorReader) -> LoadReport:
        walk = walk_model(model)
        source = _snapshot_names(walk, resolve, reader)
        missing, mismatched, loadable, used = [], [], [], set()
        for record in walk.records:
            snap = source.get(record.h5path)
            if snap is None:
                missing.append(record.name)
                continue
            used.add(snap)
            entry = resolve[snap]
            code = _dtype_code(record.value, record.name)
            if code != entry.dtype or tuple(record.value.shape) != entry.shape:
                mismatched.append(TensorMismatch(record.name, entry.dtype, entry.shape, code, tuple(record.value.shape)))
            elif not isinstance(record.value, keras.Variable):
                raise FormatError(f"{record.name}: the layer saves a computed value (a merged LoRA or quantized "
                                  "kernel), not a variable; lamina cannot load into it")
            else:
                loadable.append((record, entry))
        targets = {resolve[n].name for n in used}
        unexpected = [n for n in resolve if n not in used and resolve[n].name not in targets]
        report = LoadReport(missing, unexpected, mismatched, [r.name for r, _ in loadable])
        if strict and not report.ok:
            raise StateMismatchError(f"model does not match the snapshot ({report}); nothing was loaded. "
                                     "Pass strict=False to load the tensors that match.", report)
        if strict:  # a missing, truncated or mismatched shard is found before any variable changes
            reader.check_files(sorted({e.file for _, e in loadable}))
        by_file: dict[str, list[tuple[Any, TensorEntry]]] = {}
        for record, entry in loadable:
            by_file.setdefault(entry.file, []).append((record.value, entry))
        for pairs in by_file.values():  # one shard's arrays in memory at a time
            arrays = reader.read(list({e.name: e for _, e in pairs}.values()), "numpy")
            for variable, entry in pairs:
                variable.assign(arrays[entry.name])
        return report

    def restore_optimizer(self, info: OptimizerInfo, optimizer: Any, model: Any,
                          read: Callable[[list[TensorEntry]], dict[str, Any]],
                          reader: TensorReader | None = None) -> None:
        if not self.is_model(model):
            raise FormatError(f"restoring a Keras optimizer needs the Keras model it trains, got {type(model).__name__}")
        walk = walk_model(model)
        names = {r.h5path: r.name for r in walk.records}
        by_path = _snapshot_names(walk, {n: None for n in info.param_groups[0].params} if info.param_groups else {},
                                  reader) if reader is not None else {}
        name_of = {id(r.value): by_path.get(r.h5path, names[r.h5path]) for r in walk.records}
        _optim.restore(info, optimizer, model, lambda v: name_of.get(id(v)), read)

    # ------------------------------------------------------------------ random state
    def capture_rng(self, model: Any = None) -> dict[str, Any]:
        return _rng.capture(model)

    def restore_rng(self, state: Mapping[str, Any], model: Any = None) -> None:
        _rng.restore(state, model)


def _snapshot_names(walk: Walk, resolve: Mapping[str, Any], reader: TensorReader | None) -> dict[str, str]:
    """Live HDF5 path -> snapshot tensor name: through the snapshot's ``keras/layout.json`` (the
    path Keras's saver gives each variable, stable when auto-generated layer names are not), else
    by equal name."""
    by_path: dict[str, str] = {}
    raw = reader.extra_file(LAYOUT) if reader is not None else None
    if raw is not None:
        try:
            layout = json.loads(raw)
            for ds in layout["datasets"]:
                if isinstance(ds.get("tensor"), str) and ds["tensor"] in resolve:
                    by_path[ds["path"]] = ds["tensor"]
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"{LAYOUT} is malformed ({type(exc).__name__}: {exc})") from None
    out = {}
    for record in walk.records:
        if record.h5path in by_path:
            out[record.h5path] = by_path[record.h5path]
        elif record.name in resolve:
            out[record.h5path] = record.name
    return out
