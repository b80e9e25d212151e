"""Random number generator states of a process — Python's, and each imported framework's (through
its adapter) — as plain data and tensors, so a resumed run draws exactly the numbers the
uninterrupted run would have drawn."""

from __future__ import annotations

import random
from typing import Any

from lamina._errors import StateMismatchError
from lamina.frameworks import registry

__all__ = ["capture_rng", "restore_rng"]


def capture_rng(model: Any = None) -> dict[str, Any]:
    """Python's generator, plus the generators of every framework this process has imported
    (numpy under ``numpy``, torch under ``torch`` and ``cuda``, Keras under ``keras``), and those
    ``model`` holds (Keras layers' seed generators)."""
    version, words, gauss = random.getstate()
    state: dict[str, Any] = {"python": {"version": version, "state": list(words), "gauss_next": gauss}}
    for adapter in registry.loaded():
        state.update(adapter.capture_rng(model))
    return state


def restore_rng(state: Any, where: str, model: Any = None) -> None:
    """Set the generators from :func:`capture_rng`'s data (after a round trip through the
    manifest: lists for tuples, tensors put back)."""
    if not isinstance(state, dict):
        raise StateMismatchError(f"{where}: the RNG state is not a mapping")
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(w) for w in py["state"]), py["gauss_next"]))
        for name in registry.registered():
            adapter = registry.get(name) if name in state else None  # (importing only what is needed)
            if adapter is not None and any(key in state for key in adapter.rng_keys):
                adapter.restore_rng(state, model)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise StateMismatchError(f"{where}: cannot restore the RNG state: {exc}") from None
