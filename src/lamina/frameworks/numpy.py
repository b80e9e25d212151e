"""The numpy adapter: arrays (bfloat16 and float8 through ml_dtypes) and numpy's global RNG.

numpy has no model or optimizer type: models are mappings of names to arrays.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np

from lamina.format.dtypes import from_numpy, numpy_dtype
from lamina.frameworks.base import FrameworkAdapter, TensorSource

__all__ = ["Adapter"]


class Adapter(FrameworkAdapter):
    """numpy arrays and scalars.

    Example:
        >>> import numpy as np
        >>> from lamina.frameworks.registry import get
        >>> source, _ = get("np").tensor_source("w", np.ones((2, 3), "float32"))
        >>> source.dtype.code, source.shape, source.nbytes
        ('F32', (2, 3), 24)
    """

    name = "numpy"
    rng_keys = ("numpy",)

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, (np.ndarray, np.generic))

    def version(self) -> str:
        return np.__version__

    def tensor_source(self, name: str, value: Any) -> tuple[TensorSource, Hashable | None]:
        arr = np.asarray(value)
        dtype = from_numpy(arr.dtype, f"tensor {name!r}")
        key = None
        if arr.size:
            key = ("np", arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)
        return TensorSource(name, dtype, tuple(arr.shape), arr, self), key

    def tensor_bytes(self, value: Any) -> memoryview:
        arr = np.ascontiguousarray(value)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return memoryview(arr.reshape(-1).view(np.uint8))

    def host_copy(self, value: Any) -> Any:
        return np.array(value, copy=True)

    def empty(self, dtype: str, shape: tuple[int, ...], device: Any = None) -> tuple[Any, memoryview]:
        self.host_only(device)
        arr = np.empty(shape, dtype=numpy_dtype(dtype))
        return arr, memoryview(arr.reshape(-1).view(np.uint8))

    def capture_rng(self, model: Any = None) -> dict[str, Any]:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {"numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}

    def restore_rng(self, state: Mapping[str, Any], model: Any = None) -> None:
        if "numpy" in state:
            n = state["numpy"]
            np.random.set_state((n["kind"], np.array(n["keys"], dtype=np.uint32), int(n["pos"]),
                                 int(n["has_gauss"]), float(n["cached_gaussian"])))
