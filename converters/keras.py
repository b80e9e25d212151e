"""Keras ``.keras`` archives (and legacy full-model ``.h5``) <-> lamina snapshots.

Reading needs only ``zipfile`` and ``h5py`` — never TensorFlow. Tensors are named by the real
Keras names along the object path (``sub/dense/kernel``, ``lstm/lstm_cell/recurrent_kernel``),
so a layer (everything before the last ``/``) is a Keras layer. The archive's ``config.json``,
``metadata.json`` and assets are kept under ``keras/``, with ``keras/layout.json`` recording the
HDF5 tree (groups, attributes, dataset paths and dtypes), so the exported archive has exactly the
structure Keras wrote. Optimizer variables (iteration, learning rate, then k slot variables per
trainable variable in the model's traversal order) are regrouped by parameter name.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lamina._errors import FormatError, LaminaError, NotFoundError, UnsafeInputError
from lamina.frameworks.base import Collected
from lamina.frameworks.collect import tensor_source
from lamina.frameworks.optim import CapturedOptimizer
from lamina.repo.repository import open_location
from lamina.repo.targets import write_snapshot
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.writer import atomic_file_write, check_file_destination

from ._keras_input import H5Data, check_h5, read_archive

__all__ = ["to_lamina", "from_lamina"]

PREFIX = "keras/"
LAYOUT = "keras/layout.json"
VAR_NAMES = {
    "Dense": ["kernel", "bias"], "EinsumDense": ["kernel", "bias"], "Conv1D": ["kernel", "bias"],
    "Conv2D": ["kernel", "bias"], "Conv3D": ["kernel", "bias"], "Conv1DTranspose": ["kernel", "bias"],
    "Conv2DTranspose": ["kernel", "bias"], "Conv3DTranspose": ["kernel", "bias"],
    "DepthwiseConv2D": ["kernel", "bias"], "SeparableConv2D": ["depthwise_kernel", "pointwise_kernel", "bias"],
    "Embedding": ["embeddings"], "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"],
    "LayerNormalization": ["gamma", "beta"], "GroupNormalization": ["gamma", "beta"],
    "LSTMCell": ["kernel", "recurrent_kernel", "bias"], "GRUCell": ["kernel", "recurrent_kernel", "bias"],
    "SimpleRNNCell": ["kernel", "recurrent_kernel", "bias"],
}
CELL_OF = {"LSTM": "LSTMCell", "GRU": "GRUCell", "SimpleRNN": "SimpleRNNCell"}
NON_TRAINABLE_TAIL = {"BatchNormalization": 2}  # moving_mean, moving_variance
SLOTS = {"Adam": ["momentum", "velocity"], "AdamW": ["momentum", "velocity"], "Adamax": ["m", "u"],
         "Nadam": ["momentum", "velocity"], "SGD": ["momentum"], "RMSprop": ["velocity"],
         "Adagrad": ["accumulator"]}


# ------------------------------------------------------------------------------------ reading
def _walk_config(config: Any, where: str) -> None:
    """Refuse configs that only load by running code (Lambda layers carry Python bytecode)."""
    if isinstance(config, dict):
        if config.get("class_name") in ("Lambda", "TFOpLambda"):
            name = config.get("config", {}).get("name", "?") if isinstance(config.get("config"), dict) else "?"
            raise UnsafeInputError(f"{where}: layer {name!r} is a {config['class_name']} layer, whose "
                                   "function is Python bytecode; Keras refuses it with safe_mode=True and "
                                   "so does lamina. Replace it with a registered custom layer.")
        for value in config.values():
            _walk_config(value, where)
    elif isinstance(config, list):
        for value in config:
            _walk_config(value, where)


def _attr(value: Any) -> Any:
    """h5py attribute -> JSON-able value (Keras writes strings; anything exotic is refused)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif hasattr(value, "tolist"):
        value = value.tolist()
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise FormatError(f"HDF5 attribute of type {type(value).__name__} is not plain data") from None
    return value


def _var_names(cls: str, inner: Mapping[str, Any], count: int) -> list[str]:
    """Variable names of a layer from its class and config; indices when the layout is unknown."""
    if cls == "BatchNormalization":
        names = (["gamma"] if inner.get("scale", True) else []) + (["beta"] if inner.get("center", True) else [])
        names += ["moving_mean", "moving_variance"]
    elif cls in ("LayerNormalization", "GroupNormalization"):
        names = (["gamma"] if inner.get("scale", True) else []) + (["beta"] if inner.get("center", True) else [])
    else:
        names = [n for n in VAR_NAMES.get(cls, []) if n != "bias" or inner.get("use_bias", True) is not False]
    return names if len(names) == count else [str(i) for i in range(count)]


# Sub-objects whose traversal order Keras fixes (attribute creation order); any other layer with
# several variable-holding sub-objects has an order lamina cannot know, so its optimizer state is
# not regrouped (weights still convert).
_CHILD_ORDER = ("forward_layer", "backward_layer", "cell", "query_dense", "key_dense", "value_dense", "output_dense")
_EINSUM_CHILDREN = {"query_dense", "key_dense", "value_dense", "output_dense"}  # MultiHeadAttention
#: root groups of ``model.weights.h5`` that are not parts of the model
_ROOT_NOT_MODEL = ("optimizer",)


def _has_datasets(group: Any) -> bool:
    import h5py

    found = []
    group.visititems(lambda _, obj: found.append(1) if isinstance(obj, h5py.Dataset) else None)
    return bool(found)


class _H5Reader:
    """Walks ``model.weights.h5`` in the model's traversal order, with each layer's own config."""

    def __init__(self, h5: Any, where: str, data: H5Data) -> None:
        import h5py

        self.h5, self.where, self.data = h5, where, data
        self._dataset_type = h5py.Dataset
        self.tensors: list[tuple[str, Any]] = []  # (name, array) in traversal order
        self.trainable: list[str] = []
        self.paths: dict[str, str] = {}  # dataset path -> tensor name
        self.ambiguous: list[str] = []  # layers whose sub-object order is unknown

    def _vars(self, group: Any) -> list[Any]:
        vars_group = group.get("vars")
        if vars_group is None:
            return []
        if isinstance(vars_group, self._dataset_type):
            raise FormatError(f"{self.where}: {vars_group.name} is a dataset; Keras stores a group of variables there")
        keys = [k for k in vars_group if isinstance(vars_group[k], self._dataset_type)]
        return [vars_group[k] for k in sorted(keys, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))]

    def walk(self, group: Any, prefix: list[str], trainable: bool, config: Mapping[str, Any]) -> None:
        import h5py

        name = _attr(group["vars"].attrs.get("name")) if "vars" in group else None
        cls = config.get("class_name", "") if isinstance(config, Mapping) else ""
        inner = config.get("config", {}) if isinstance(config, Mapping) and isinstance(config.get("config"), dict) else {}
        trainable = trainable and inner.get("trainable", True) is not False
        root = group.name == "/"  # at the root, "optimizer" and friends are not parts of the model
        path = prefix + ([name] if name and not root else [])
        datasets = self._vars(group)
        names = _var_names(cls, inner, len(datasets))
        n_trainable = len(datasets) - NON_TRAINABLE_TAIL.get(cls, 0) if trainable else 0
        for i, (ds, var) in enumerate(zip(datasets, names)):
            tensor = "/".join(path + [var])
            self.tensors.append((tensor, self.data.array(ds)))
            self.paths[ds.name.lstrip("/")] = tensor
            if i < n_trainable:
                self.trainable.append(tensor)
        # Sub-objects held in attributes: an RNN's cell, a Bidirectional's two layers, and at the
        # root a subclassed model's layers (Keras saves those by attribute name, beside "layers").
        skip = ("vars", "layers") + (_ROOT_NOT_MODEL if root else ())
        keys = [k for k in group if k not in skip and isinstance(group[k], h5py.Group)]
        known = [k for k in _CHILD_ORDER if k in keys]
        unknown = sorted(k for k in keys if k not in _CHILD_ORDER)
        holders = [k for k in keys if _has_datasets(group[k])]
        if (len(holders) > 1 or root) and any(k in unknown for k in holders):
            # HDF5 keeps attributes sorted by name, not in the order the model creates variables,
            # so the optimizer's per-variable slots cannot be matched to them
            self.ambiguous.append("/".join(path) or group.name)
        for key in known + unknown:  # sub-objects: an RNN's cell, a Bidirectional's two layers, ...
            child_config: Any = {}
            if key == "cell":
                child_config = {"class_name": CELL_OF.get(cls, ""), "config": {}}
            elif key == "forward_layer":
                child_config = inner.get("layer", {})
            elif key == "backward_layer":
                child_config = inner.get("backward_layer") or inner.get("layer", {})
            elif key in _EINSUM_CHILDREN:
                child_config = {"class_name": "EinsumDense", "config": {"use_bias": inner.get("use_bias", True)}}
            self.walk(group[key], path, trainable, child_config)
        if "layers" in group:
            for child, child_config in self._ordered_children(group["layers"], inner):
                self.walk(child, path, trainable, child_config)

    def _ordered_children(self, container: Any, inner: Mapping[str, Any]) -> list[tuple[Any, Any]]:
        """Child layer groups with their configs, in the config's layer order (Keras's order)."""
        by_name = {}
        for key in container:
            child = container[key]
            if "vars" in child:
                by_name[_attr(child["vars"].attrs.get("name"))] = child
        layers = inner.get("layers", []) if isinstance(inner.get("layers"), list) else []
        ordered = []
        for layer in layers:
            layer_name = layer.get("config", {}).get("name") if isinstance(layer, dict) and isinstance(layer.get("config"), dict) else None
            if layer_name in by_name:
                ordered.append((by_name.pop(layer_name), layer))
        return ordered + [(by_name[n], {}) for n in sorted(by_name, key=str)]  # anything the config omits


def _layout(h5: Any) -> dict[str, Any]:
    import h5py

    groups, datasets = [], []

    def visit(name: str, obj: Any) -> None:
        attrs = {k: _attr(v) for k, v in obj.attrs.items()}
        if isinstance(obj, h5py.Group):
            groups.append({"path": name, "attrs": attrs})
        else:
            datasets.append({"path": name, "dtype": obj.dtype.str, "shape": list(obj.shape), "attrs": attrs})

    groups.append({"path": "", "attrs": {k: _attr(v) for k, v in h5.attrs.items()}})
    h5.visititems(visit)
    return {"groups": groups, "datasets": datasets}


def _slot_blocks(cls: str, config: Mapping[str, Any]) -> list[tuple[str, ...]] | None:
    """How a Keras optimizer lays out its slot variables after iteration (and learning_rate):
    each block holds its slots for every trainable variable in turn, blocks one after another."""
    if cls in ("Adam", "AdamW"):
        return [("momentum", "velocity")] + ([("velocity_hat",)] if config.get("amsgrad") else [])
    if cls == "SGD":
        return [("momentum",)] if config.get("momentum") else []
    if cls == "RMSprop":
        return ([("velocity",)] + ([("momentum",)] if (config.get("momentum") or 0) > 0 else [])
                + ([("average_gradient",)] if config.get("centered") else []))
    return None


def _optimizer(h5: Any, reader: _H5Reader, compile_config: Any, where: str) -> tuple[CapturedOptimizer, dict[str, str]]:
    """Regroup ``optimizer/vars/N`` by parameter; returns the capture and dataset path -> role."""
    hint = "convert with include_optimizer=False to keep the weights only"
    group = h5["optimizer"]["vars"]
    variables = [group[k] for k in sorted(group, key=lambda k: int(k) if k.isdigit() else -1)]
    spec = compile_config.get("optimizer") if isinstance(compile_config, dict) else None
    cls = spec.get("class_name", "") if isinstance(spec, dict) else ""
    opt_config = spec.get("config", {}) if isinstance(spec, dict) and isinstance(spec.get("config"), dict) else {}
    if opt_config.get("use_ema") or opt_config.get("gradient_accumulation_steps"):
        raise FormatError(f"{where}: optimizers with EMA or gradient accumulation are not supported yet; {hint}")
    blocks = _slot_blocks(cls, opt_config)
    if blocks is None:
        raise FormatError(f"{where}: the layout of Keras optimizer {cls or '(unrecorded)'!r} is not known to lamina "
                          f"(supported: Adam, AdamW, SGD, RMSprop); {hint}")
    if reader.ambiguous:
        raise FormatError(f"{where}: the variable order of layer(s) {reader.ambiguous} is not known to lamina, so "
                          f"optimizer slots cannot be matched to parameters; {hint}")
    head = ["iteration"] + (["learning_rate"] if isinstance(opt_config.get("learning_rate"), (int, float)) else [])
    params = reader.trainable
    expected = len(head) + len(params) * sum(len(b) for b in blocks)
    if len(variables) == len(head):  # compiled but never trained: the optimizer is not built, no slots yet
        blocks = []
    elif len(variables) != expected:
        raise FormatError(f"{where}: {len(variables)} optimizer variables, but {cls} over {len(params)} trainable "
                          f"variables needs {expected}; {hint}")
    arrays = dict(reader.tensors)
    captured = CapturedOptimizer(class_name=f"keras.optimizers.{cls}", groups=[], framework="keras")
    roles: dict[str, str] = {}
    hyper = {k: v for k, v in opt_config.items() if isinstance(v, (bool, int, float, str)) or v is None}
    for i, role in enumerate(head):
        hyper[f"{role}_value"] = reader.data.array(variables[i]).item()
        hyper[f"{role}_dtype"] = variables[i].dtype.str
        roles[variables[i].name.lstrip("/")] = f"$global/{role}"
    captured.groups.append((list(params), hyper))
    position = len(head)
    for block in blocks:
        for param in params:
            for slot in block:
                ds = variables[position]
                position += 1
                array = reader.data.array(ds)
                if array.shape != arrays[param].shape:
                    raise FormatError(f"{where}: optimizer variable {ds.name} has shape {array.shape}, but the "
                                      f"aligned parameter {param!r} is {arrays[param].shape}; {hint}")
                source, _ = tensor_source(f"{param}/{slot}", array)
                captured.tensors.setdefault(param, {})[slot] = source
                roles[ds.name.lstrip("/")] = f"{param}\x00{slot}"
    captured.slots = [slot for block in blocks for slot in block]
    return captured, roles


def _read_legacy_h5(path: Path) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """Weights of a legacy full-model .h5 (``model_weights/<layer>`` with ``weight_names``)."""
    import h5py

    tensors = []
    with h5py.File(path, "r") as h5:
        check_h5(h5, str(path))
        data = H5Data(path.stat().st_size, str(path))
        if "model_weights" not in h5:
            raise FormatError(f"{path}: an HDF5 file without model_weights; not a Keras model")
        root = h5["model_weights"]
        for layer in root.attrs.get("layer_names", []):
            group = root[_attr(layer)]
            for weight in group.attrs.get("weight_names", []):
                name = _attr(weight)
                tensors.append((name, data.array(group[name])))
        meta = {k: _attr(v) for k, v in h5.attrs.items() if k in ("keras_version", "backend")}
        meta["model_config"] = json.loads(_attr(h5.attrs["model_config"])) if "model_config" in h5.attrs else None
    return tensors, meta


def to_lamina(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    include_optimizer: bool = True,
    info: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    durable: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Artifact:
    """Convert a ``.keras`` archive (or a legacy full-model ``.h5``) to a snapshot, without TensorFlow.

    Args:
        include_optimizer: regroup the saved optimizer variables by parameter (default).
    """
    # Kept as one function (~85 lines with the docstring): it reads as the archive's order —
    # archive, config, weights, optimizer, layout, write — and each step is a helper call.
    import h5py

    src_path = Path(src)
    if not src_path.is_file():
        raise NotFoundError(f"{src_path}: no such file")
    with open(src_path, "rb") as f:
        legacy = f.read(8) == b"\x89HDF\r\n\x1a\n"
    files: dict[str, Any] = {}
    captured = None
    if legacy:
        try:
            tensors, meta = _read_legacy_h5(src_path)
        except LaminaError:
            raise
        except (OSError, RuntimeError, RecursionError, KeyError, TypeError, AttributeError, ValueError,
                IndexError) as exc:
            raise FormatError(f"{src_path}: malformed legacy Keras .h5 ({type(exc).__name__}: {exc})") from None
        _walk_config(meta.get("model_config"), str(src_path))
        files[f"{PREFIX}legacy.json"] = meta
    else:
        entries = read_archive(src_path)
        if "config.json" not in entries or "model.weights.h5" not in entries:
            raise FormatError(f"{src_path}: a .keras archive needs config.json and model.weights.h5 "
                              f"(found {sorted(entries)[:8]})")
        reserved = sorted(n for n in entries if PREFIX + n in (LAYOUT, f"{PREFIX}legacy.json"))
        if reserved:
            raise FormatError(f"{src_path}: archive entries {reserved} collide with files lamina keeps under {PREFIX}")
        try:
            config = json.loads(entries["config.json"])
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{src_path}: config.json is not JSON ({exc})") from None
        if not isinstance(config, dict):
            raise FormatError(f"{src_path}: config.json must be a JSON object describing the model")
        _walk_config(config, f"{src_path}: config.json")
        try:
            h5 = h5py.File(io.BytesIO(entries["model.weights.h5"]), "r")
        except OSError as exc:
            raise FormatError(f"{src_path}: model.weights.h5 is not HDF5 ({exc})") from None
        try:
            with h5:
                where = f"{src_path}: model.weights.h5"
                check_h5(h5, where)
                reader = _H5Reader(h5, where, H5Data(len(entries["model.weights.h5"]), where))
                reader.walk(h5, [], True, config)
                tensors = reader.tensors
                layout = _layout(h5)
                roles: dict[str, str] = {}
                if include_optimizer and "optimizer" in h5 and "vars" in h5["optimizer"]:
                    captured, roles = _optimizer(h5, reader, config.get("compile_config"), f"{src_path}")
        except LaminaError:
            raise
        except (OSError, RuntimeError, RecursionError, KeyError, TypeError, AttributeError, ValueError,
                IndexError) as exc:  # hostile HDF5 structure
            raise FormatError(f"{src_path}: malformed model.weights.h5 ({type(exc).__name__}: {exc})") from None
        if captured is None:  # the weights-only archive Keras writes for an uncompiled model
            layout["groups"] = [g for g in layout["groups"] if g["path"].split("/")[0] != "optimizer"]
            layout["datasets"] = [d for d in layout["datasets"] if d["path"].split("/")[0] != "optimizer"]
        for ds in layout["datasets"]:
            ds["tensor"] = reader.paths.get(ds["path"])
            ds["optimizer"] = roles.get(ds["path"])
        # Never lossy in silence: every weight the file holds must have become a tensor.
        lost = [d["path"] for d in layout["datasets"] if d["tensor"] is None and d["optimizer"] is None
                and d["path"].split("/")[0] not in _ROOT_NOT_MODEL]
        if lost:
            raise FormatError(f"{src_path}: model.weights.h5 holds weights lamina could not place: "
                              f"{', '.join(lost[:8])}{' ...' if len(lost) > 8 else ''}")
        files[LAYOUT] = layout
        for name, data in entries.items():
            if name != "model.weights.h5":
                files[PREFIX + name] = data
    names = [n for n, _ in tensors]
    if len(set(names)) != len(names):
        raise FormatError(f"{src_path}: two weights map to the same name")
    collected = Collected([tensor_source(n, a)[0] for n, a in tensors], {}, {"name": "keras", "version": "3"})
    return write_snapshot(dst, collected, optimizer=captured, info=info or {"name": src_path.stem}, files=files,
                          layer_of=lambda n: n.rpartition("/")[0] or n, overwrite=overwrite, durable=durable,
                          progress=progress)


# ------------------------------------------------------------------------------------ writing
def _h5_bytes(art: Artifact, layout: Mapping[str, Any]) -> bytes:
    import h5py
    import numpy as np

    optimizer = art.optimizer_state(framework="np") if art.optimizer is not None else {}
    hyper = dict(art.optimizer.param_groups[0].hyperparameters) if art.optimizer is not None else {}
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for group in layout["groups"]:
            target = h5 if group["path"] == "" else h5.require_group(group["path"])
            for key, value in group["attrs"].items():
                target.attrs[key] = value
        for ds in layout["datasets"]:
            dtype = np.dtype(ds["dtype"])
            role = ds.get("optimizer")
            if ds.get("tensor"):
                data = art.tensor(ds["tensor"], framework="np")
            elif role and role.startswith("$global/"):
                key = role.split("/", 1)[1]
                data = np.array(hyper[f"{key}_value"], dtype=np.dtype(hyper[f"{key}_dtype"]))
            elif role:
                param, slot = role.split("\x00")
                data = optimizer[param][slot]
            else:
                raise FormatError(f"{art.location}: no data for Keras weight {ds['path']!r}")
            raw = np.ascontiguousarray(data)
            out = h5.create_dataset(ds["path"], shape=tuple(ds["shape"]), dtype=dtype)
            out[()] = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(ds["shape"])
            for key, value in ds["attrs"].items():
                out.attrs[key] = value
    return buffer.getvalue()


def from_lamina(
    src: str | os.PathLike[str] | Artifact,
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a ``.keras`` archive from a snapshot converted from Keras.

    The result loads with ``keras.models.load_model(dst)`` (safe mode on) and predicts bitwise
    like the original; with optimizer state, training continues identically.
    """
    art = src if isinstance(src, Artifact) else open_location(src)
    check_file_destination(dst, overwrite=overwrite)
    missing = [f for f in (f"{PREFIX}config.json", LAYOUT) if f not in art.files]
    if missing:
        raise FormatError(f"{art.location} has no Keras architecture ({', '.join(missing)} missing): it was not "
                          "converted from a .keras archive, and lamina cannot invent a Keras model config for it")
    try:
        layout = json.loads(art.read_file(LAYOUT))
        weights = _h5_bytes(art, layout)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        if isinstance(exc, LaminaError):
            raise
        raise FormatError(f"{art.location}: {LAYOUT} is malformed ({type(exc).__name__}: {exc})") from None
    extra = [f for f in art.files if f.startswith(PREFIX) and f not in (LAYOUT, f"{PREFIX}legacy.json")]

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in ("metadata.json", "config.json"):
                if f"{PREFIX}{name}" in art.files:
                    zf.writestr(name, art.read_file(f"{PREFIX}{name}"))
            zf.writestr("model.weights.h5", weights)
            for name in extra:
                inner = name[len(PREFIX):]
                if inner not in ("metadata.json", "config.json"):
                    zf.writestr(inner, art.read_file(name))

    return atomic_file_write(dst, write, overwrite=overwrite)

