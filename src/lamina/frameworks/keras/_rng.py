"""Keras random state that a resumed run needs besides Python's, numpy's and torch's generators.

Keras layers that draw random numbers (Dropout, GaussianNoise, RandomFlip...) own a
``SeedGenerator`` whose state, ``[seed, counter]``, is a variable of the model but not a weight:
``model.save()`` leaves it out, so a restored model would draw a different dropout mask than the
uninterrupted run. ``keras.random`` calls without a seed use the global SeedGenerator, and
``tf.random.Generator`` users the TensorFlow global generator. All three are captured here as
plain integers. Generators are keyed by the layer's position in the model's flattened layer list
and their index in the layer (auto-generated names change with creation order; positions do not
for the same model code), with the layer's name kept to explain a mismatch. A generator that does
not exist yet is never created: creating one would itself change what the run draws.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from lamina._errors import StateMismatchError

__all__ = ["capture", "restore"]


def _generators(model: Any) -> dict[str, tuple[str, Any]]:
    found: dict[str, tuple[str, Any]] = {}
    for i, layer in enumerate(model._flatten_layers(include_self=True, recursive=True)):
        for j, generator in enumerate(getattr(layer, "_seed_generators", ()) or ()):
            found[f"{i}#{j}"] = (layer.name, generator.state)
    return found


def _global_keras() -> Any:
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

    return global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)


def _global_tf() -> Any:
    module = sys.modules.get("tensorflow.python.ops.stateful_random_ops")
    return getattr(module, "global_generator", None) if module is not None else None


def _ints(variable: Any) -> dict[str, Any]:
    value = np.asarray(variable.numpy() if isinstance(variable, keras.Variable) else keras.ops.convert_to_numpy(variable))
    return {"state": [int(x) for x in value.reshape(-1)], "dtype": value.dtype.str, "shape": list(value.shape)}


def capture(model: Any = None) -> dict[str, Any]:
    """``{"keras": {"seed_generators": {...}, "global_seed_generator": ..., "tf_global_generator": ...}}``."""
    state: dict[str, Any] = {}
    if model is not None and isinstance(model, keras.layers.Layer):
        state["seed_generators"] = {key: {"layer": name, **_ints(var)} for key, (name, var) in _generators(model).items()}
    keras_global = _global_keras()
    state["global_seed_generator"] = _ints(keras_global.state) if keras_global is not None else None
    tf_global = _global_tf()
    state["tf_global_generator"] = ({**_ints(tf_global.state), "algorithm": int(tf_global.algorithm)}
                                    if tf_global is not None else None)
    return {"keras": state}


def _assign(variable: Any, saved: Mapping[str, Any], where: str) -> None:
    value = np.asarray(saved["state"], dtype=np.dtype(saved["dtype"])).reshape(saved["shape"])
    if tuple(variable.shape) != value.shape:
        raise StateMismatchError(f"{where}: saved shape {list(value.shape)}, live {list(variable.shape)}")
    variable.assign(value)


def restore(state: Mapping[str, Any], model: Any = None) -> None:
    """Set the generators from :func:`capture`'s data; the model's generators must match in number
    and position (the same model code)."""
    saved = state.get("keras")
    if not isinstance(saved, Mapping):
        return
    if model is not None and isinstance(model, keras.layers.Layer) and saved.get("seed_generators") is not None:
        live = _generators(model)
        wanted = saved["seed_generators"]
        if set(live) != set(wanted):
            raise StateMismatchError(f"the model has {len(live)} Keras seed generator(s) "
                                     f"({sorted(n for n, _ in live.values())}), the checkpoint {len(wanted)} "
                                     f"({sorted(w['layer'] for w in wanted.values())}); build the same model")
        for key, (name, variable) in live.items():
            _assign(variable, wanted[key], f"seed generator of layer {name!r}")
    if saved.get("global_seed_generator") is not None:
        from keras.src.random.seed_generator import global_seed_generator

        _assign(global_seed_generator().state, saved["global_seed_generator"], "the global Keras seed generator")
    tf_saved = saved.get("tf_global_generator")
    if tf_saved is not None:
        import tensorflow as tf

        value = np.asarray(tf_saved["state"], dtype=np.dtype(tf_saved["dtype"])).reshape(tf_saved["shape"])
        tf.random.set_global_generator(tf.random.Generator.from_state(value, tf_saved["algorithm"]))
