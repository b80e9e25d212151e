"""What ``save`` accepts, normalised: a model or a mapping of names to tensors of any registered
framework, as TensorSources with tied names resolved to aliases."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from lamina._errors import FormatError
from lamina.frameworks import registry
from lamina.frameworks.base import Collected, FrameworkAdapter, TensorSource

__all__ = ["tensor_source", "collect_tensors"]


def tensor_source(name: Any, value: Any) -> tuple[TensorSource, Hashable | None]:
    """The TensorSource of any framework's tensor (the adapter is found from the value)."""
    if not isinstance(name, str) or not name:
        raise FormatError(f"tensor names must be non-empty strings, got {name!r}")
    adapter = registry.for_value(value)
    if adapter is None or not adapter.is_tensor(value):
        raise FormatError(f"tensor {name!r} is a {type(value).__name__}; expected a tensor of "
                          f"{' or '.join(registry.registered())}")
    return adapter.tensor_source(name, value)


def collect_tensors(model_or_tensors: Any) -> Collected:
    """Normalise a model or a name -> tensor mapping.

    Two names viewing exactly the same memory (same storage, offset, shape, strides, dtype) are
    tied: the first is stored, the later ones are recorded as aliases of it.
    """
    parameter_names: dict[int, str] = {}
    layer_of = None
    model_adapter = registry.for_value(model_or_tensors)
    if model_adapter is not None and model_adapter.is_model(model_or_tensors):
        items, parameter_names = model_adapter.named_tensors(model_or_tensors)
        layer_of = model_adapter.layer_of
    elif isinstance(model_or_tensors, Mapping):
        items = list(model_or_tensors.items())
    else:
        raise FormatError(
            f"cannot save a {type(model_or_tensors).__name__}; pass a model (e.g. a torch.nn.Module) or a "
            "mapping of names to tensors (torch tensors, numpy arrays)"
        )
    tensors: list[TensorSource] = []
    aliases: dict[str, str] = {}
    first_by_key: dict[Hashable, str] = {}
    used: dict[str, FrameworkAdapter] = {}
    for name, value in items:
        source, key = tensor_source(name, value)
        used.setdefault(source.adapter.name, source.adapter)
        if key is not None and key in first_by_key:
            aliases[name] = first_by_key[key]
            continue
        if key is not None:
            first_by_key[key] = name
        tensors.append(source)
    # The framework of record: the first one besides numpy whose tensors were collected, else numpy.
    adapter = next((a for n, a in used.items() if n != "numpy"), None) or registry.get("numpy")
    return Collected(tensors, aliases, {"name": adapter.name, "version": adapter.version()}, parameter_names,
                     layer_of=layer_of)
