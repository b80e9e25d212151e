"""Keras 3 optimizer state by parameter name: capture from, and restore into, a live optimizer.

A Keras optimizer keeps its state in variables: ``iteration``, ``learning_rate`` (unless it is a
schedule), and per trainable variable a few slot variables held in lists aligned with
``optimizer._trainable_variables`` (Adam's ``_momentums`` and ``_velocities``, SGD's
``momentums``, RMSprop's ``_velocities``, ``_momentums``, ``_average_gradients``, the EMA and
gradient-accumulation lists of every optimizer...). Each list is one slot; its name is what Keras
appended to the parameter's path (``dense_kernel_momentum`` -> ``momentum``), else the list's
attribute name. A variable no list claims is an unknown layout and is refused rather than lost.
The manifest layout is the one the ``.keras`` converter writes, so both kinds of snapshot restore
the same way and export to ``.keras``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from lamina._errors import FormatError, StateMismatchError
from lamina.format.dtypes import from_numpy
from lamina.format.manifest import OptimizerInfo, TensorEntry, plain_value
from lamina.frameworks.base import Collected, FrameworkAdapter
from lamina.frameworks.keras._walk import dataset, np_dtype, numpy_of
from lamina.frameworks.optim import SLOT_NAME, CapturedOptimizer, slot_key

__all__ = ["capture", "restore", "slot_lists"]


def _is_slot_list(value: Any, n: int, params: list[Any]) -> bool:
    return (isinstance(value, list) and len(value) == n and value is not params
            and all(v is None or isinstance(v, keras.Variable) for v in value)
            and any(v is not None for v in value) and not any(v is p for v, p in zip(value, params)))


def slot_lists(optimizer: Any) -> list[tuple[str, list[Any]]]:
    """``(slot name, variables aligned with optimizer._trainable_variables)`` of a built optimizer."""
    params = list(getattr(optimizer, "_trainable_variables", []))
    out: list[tuple[str, list[Any]]] = []
    for attr, value in vars(optimizer).items():
        if not _is_slot_list(value, len(params), params):
            continue
        slot = None
        for var, param in zip(value, params):
            if var is None:
                continue
            prefix = param.path.replace("/", "_") + "_"
            found = var.name[len(prefix):] if var.name.startswith(prefix) else attr.lstrip("_")
            if slot not in (None, found):
                slot = attr.lstrip("_")  # names that disagree: the attribute names the list
                break
            slot = found
        if not slot or not SLOT_NAME.fullmatch(slot) or slot in (s for s, _ in out):
            raise FormatError(f"Keras optimizer {type(optimizer).__name__}: cannot name the slot list {attr!r} "
                              f"(got {slot!r}); lamina does not know this optimizer's layout")
        out.append((slot, value))
    return out


def _globals(optimizer: Any) -> list[tuple[str, Any]]:
    found = [("iteration", optimizer._iterations)]
    if isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable):
        found.append(("learning_rate", optimizer._learning_rate))
    return found


def _check_supported(optimizer: Any) -> None:
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise FormatError("Keras LossScaleOptimizer state is not supported yet; save the inner optimizer "
                          "(optimizer.inner_optimizer) and its loss scale separately")


def capture(adapter: FrameworkAdapter, optimizer: Any, collected: Collected
            ) -> tuple[CapturedOptimizer, tuple[str, list[dict[str, Any]]]]:
    """The optimizer's state by parameter name, and its ``keras/layout.json`` datasets (roles)."""
    _check_supported(optimizer)
    cls = type(optimizer)
    if optimizer.built:
        params = list(optimizer._trainable_variables)
    else:  # nothing but iteration and learning rate yet: record the parameters it will build over
        params = []
    try:
        names = [collected.parameter_names[id(p)] for p in params] if params else list(collected.parameter_names.values())
    except KeyError:
        raise StateMismatchError(f"the {cls.__name__} optimizer holds a variable that is not a trainable variable "
                                 "of the saved model; save the model it was built over") from None
    config = {}
    try:
        config = optimizer.get_config()
    except Exception:  # noqa: BLE001 - a custom optimizer without get_config
        pass
    hyper: dict[str, Any] = {k: plain_value(v, f"optimizer.{k}") for k, v in config.items()
                             if isinstance(v, (bool, int, float, str)) or v is None}
    roles: dict[int, str] = {}
    for role, var in _globals(optimizer):
        value = numpy_of(var)
        hyper[f"{role}_value"] = value.item()
        hyper[f"{role}_dtype"] = value.dtype.str
        roles[id(var)] = f"$global/{role}"
    captured = CapturedOptimizer(class_name=f"keras.optimizers.{cls.__name__}", groups=[(names, hyper)],
                                 framework="keras")
    for slot, variables in slot_lists(optimizer) if optimizer.built else []:
        captured.slots.append(slot)
        for name, var in zip(names, variables):
            if var is not None:
                source, _ = adapter.tensor_source(slot_key(name, slot), var)
                captured.tensors.setdefault(name, {})[slot] = source
                roles[id(var)] = f"{name}\x00{slot}"
    unclaimed = [v.path for v in optimizer.variables if id(v) not in roles]
    if unclaimed:
        raise FormatError(f"Keras optimizer {cls.__name__}: variables {unclaimed[:4]} belong to no parameter and "
                          "are not iteration or learning_rate; lamina does not know this optimizer's layout")
    datasets = [{**dataset(f"optimizer/vars/{i}", v), "tensor": None, "optimizer": roles[id(v)]}
                for i, v in enumerate(optimizer.variables)]
    return captured, (optimizer.name, datasets)


def restore(info: OptimizerInfo, optimizer: Any, model: Any, snapshot_name: Callable[[Any], str | None],
            read: Callable[[list[TensorEntry]], dict[str, Any]]) -> None:
    """Fill a live optimizer (built here over the model's trainable variables if it is not) from the
    snapshot's description; every slot and dtype is checked before anything is assigned."""
    _check_supported(optimizer)
    if len(info.param_groups) != 1:
        raise StateMismatchError(f"the snapshot's optimizer has {len(info.param_groups)} parameter groups; a Keras "
                                 "optimizer has one")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    params = list(optimizer._trainable_variables)
    live = [snapshot_name(p) for p in params]
    saved = list(info.param_groups[0].params)
    if sorted(map(str, live)) != sorted(saved) or None in live:
        missing = sorted(set(saved) - set(live))
        extra = sorted(str(n) for n in set(live) - set(saved))
        raise StateMismatchError(f"the optimizer's parameters differ from the snapshot's: not in the optimizer "
                                 f"{missing}, not in the snapshot {extra} (a frozen or added layer?); nothing was restored")
    state = {s.param: s for s in info.state}
    plan: list[tuple[Any, TensorEntry]] = []
    for slot, variables in slot_lists(optimizer):
        for name, var in zip(live, variables):
            if var is None:
                continue
            entry = state[name].tensors.get(slot) if name in state else None
            if entry is None:
                raise StateMismatchError(f"the snapshot has no {slot!r} state for {name!r} (its slots: "
                                         f"{', '.join(info.slots) or 'none'}); was it saved from another optimizer "
                                         f"class? ({info.class_name})")
            code = from_numpy(np.dtype(np_dtype(keras.backend.standardize_dtype(var.dtype))), var.path).code
            if entry.dtype != code or tuple(entry.shape) != tuple(var.shape):
                raise StateMismatchError(f"optimizer state {name}/{slot}: snapshot {entry.dtype}{list(entry.shape)} vs "
                                         f"optimizer {code}{list(var.shape)}; nothing was restored")
            plan.append((var, entry))
    hyper = info.param_groups[0].hyperparameters
    scalars = _scalars(optimizer, hyper)
    by_file: dict[str, list[tuple[Any, TensorEntry]]] = {}
    for var, entry in plan:
        by_file.setdefault(entry.file, []).append((var, entry))
    for pairs in by_file.values():  # one shard's tensors in memory at a time
        arrays = read([e for _, e in pairs])
        for var, entry in pairs:
            var.assign(arrays[entry.name])
    for var, value in scalars:
        var.assign(value)


def _scalars(optimizer: Any, hyper: Mapping[str, Any]) -> list[tuple[Any, Any]]:
    """Iteration (cast by value to the live dtype: int64 on TensorFlow, int32 on torch) and the
    learning rate when both sides keep it in a variable."""
    out = []
    for role, var in _globals(optimizer):
        if f"{role}_value" not in hyper:
            if role == "iteration":
                raise StateMismatchError("the snapshot's optimizer state has no iteration count")
            continue
        dtype = np.dtype(np_dtype(keras.backend.standardize_dtype(var.dtype)))
        value = hyper[f"{role}_value"]
        if dtype.kind in "iu" and not (np.iinfo(dtype).min <= int(value) <= np.iinfo(dtype).max):
            raise StateMismatchError(f"optimizer {role} {value} does not fit the live {dtype} variable")
        out.append((var, np.asarray(value, dtype=dtype)))
    return out
