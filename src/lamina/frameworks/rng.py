"""Random number generator states (Python, numpy, torch CPU and CUDA) as plain data + tensors,
so a resumed run draws exactly the numbers the uninterrupted run would have drawn."""

from __future__ import annotations

import random
import sys
from typing import Any

from lamina._errors import StateMismatchError

__all__ = ["capture_rng", "restore_rng"]


def capture_rng() -> dict[str, Any]:
    """The global generators' states. torch states are uint8 tensors (stored in the training
    tensors file); the rest is plain data."""
    version, words, gauss = random.getstate()
    state: dict[str, Any] = {"python": {"version": version, "state": list(words), "gauss_next": gauss}}
    np = sys.modules.get("numpy")
    if np is not None:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng(state: Any, where: str) -> None:
    """Set the global generators from :func:`capture_rng`'s data (after a round trip through the
    manifest: lists for tuples, torch tensors put back)."""
    if not isinstance(state, dict):
        raise StateMismatchError(f"{where}: the RNG state is not a mapping")
    try:
        py = state["python"]
        random.setstate((int(py["version"]), tuple(int(w) for w in py["state"]), py["gauss_next"]))
        if "numpy" in state:
            import numpy as np

            n = state["numpy"]
            np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), int(n["pos"]),
                                 int(n["has_gauss"]), float(n["cached_gaussian"])))
        if "torch" in state:
            import torch

            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise StateMismatchError(f"{where}: cannot restore the RNG state: {exc}") from None
