"""The framework registry: which adapter handles a value, or a ``framework=`` name.

An adapter module is imported only when a value of its framework is met (which means the
framework is already imported) or it is asked for by name, so ``import lamina`` imports no
framework. Adding a framework: one module with a ``FrameworkAdapter`` subclass named ``Adapter``,
and one :func:`register` call (built-in ones: one line in ``_BUILTIN``).

Example:
    >>> import numpy as np
    >>> from lamina.frameworks import registry
    >>> registry.for_value(np.zeros(2)).name, registry.get("np").name
    ('numpy', 'numpy')
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from lamina._errors import FormatError

if TYPE_CHECKING:
    from lamina.frameworks.base import FrameworkAdapter

__all__ = ["register", "get", "for_value", "loaded", "names", "registered"]

#: name -> (adapter module, names accepted as ``framework=``, top-level modules whose objects it handles)
_BUILTIN: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "numpy": ("lamina.frameworks.numpy", ("np", "numpy"), ("numpy", "ml_dtypes")),
    "torch": ("lamina.frameworks.torch", ("pt", "torch"), ("torch",)),
    "keras": ("lamina.frameworks.keras", ("keras",), ("keras",)),
}
_registry: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = dict(_BUILTIN)
_instances: dict[str, FrameworkAdapter] = {}


def register(name: str, module: str, aliases: tuple[str, ...], roots: tuple[str, ...]) -> None:
    """Make a framework known: ``module`` holds its ``Adapter`` class; ``aliases`` are accepted as
    ``framework=``; values whose class (or a base class) comes from a ``roots`` module are its."""
    _registry[name] = (module, (name, *aliases), roots)


def registered() -> list[str]:
    """The names of every known framework (imported or not)."""
    return list(_registry)


def names() -> list[str]:
    """Every accepted ``framework=`` value."""
    return sorted({a for _, aliases, _ in _registry.values() for a in aliases})


def get(framework: str) -> FrameworkAdapter:
    """The adapter for a framework name or alias (``"pt"``, ``"torch"``, ``"np"``...)."""
    for name, (module, aliases, _) in _registry.items():
        if framework in aliases:
            if name not in _instances:
                _instances[name] = importlib.import_module(module).Adapter()
            return _instances[name]
    raise FormatError(f"framework must be one of {', '.join(names())}, got {framework!r}")


def for_value(value: Any) -> FrameworkAdapter | None:
    """The adapter whose framework made ``value`` (a tensor, model or optimizer), or None.

    The most specific class decides: the value's class hierarchy is walked in order and the first
    class from a registered framework's modules names the adapter (a Keras 3 model on the torch
    backend is a ``torch.nn.Module`` too, but a Keras class comes first). Failing that, an
    imported framework's adapter may still recognise it (duck-typed wrappers of optimizers).
    Never imports a framework: a value can only come from one that is already imported.
    """
    for cls in type(value).__mro__:
        root = cls.__module__.partition(".")[0]
        for name, (_, _, modules) in _registry.items():
            if root in modules and root in sys.modules:
                return get(name)
    for adapter in loaded():
        if adapter.is_tensor(value) or adapter.is_model(value) or adapter.is_optimizer(value):
            return adapter
    return None


def loaded() -> list[FrameworkAdapter]:
    """Adapters of the frameworks this process has imported (e.g. to capture their RNG states)."""
    return [get(name) for name, (_, _, modules) in _registry.items() if any(m in sys.modules for m in modules)]
