"""What ``save`` accepts, normalised: named tensors as (dtype, shape, bytes), tied aliases, framework.

torch is never imported here: a torch object can only exist if the caller already imported it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lamina._errors import FormatError
from lamina.format.dtypes import DType, from_numpy, from_torch

__all__ = ["TensorSource", "Collected", "collect_tensors", "tensor_source", "is_torch_tensor", "is_torch_module"]


def _torch() -> Any:
    return sys.modules.get("torch")


def is_torch_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def is_torch_module(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.nn.Module)


@dataclass(frozen=True)
class TensorSource:
    """A named tensor to be written; ``obj`` is a torch tensor or a numpy array."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    obj: Any

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n

    def buffer(self) -> memoryview:
        """Little-endian C-order bytes; a zero-copy view for contiguous CPU tensors."""
        obj = self.obj
        if is_torch_tensor(obj):
            import torch

            t = obj.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.resolve_conj().resolve_neg().contiguous()
            return memoryview(t.reshape(-1).view(torch.uint8).numpy())
        import numpy as np

        arr = np.ascontiguousarray(obj)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        return memoryview(arr.reshape(-1).view(np.uint8))


@dataclass
class Collected:
    tensors: list[TensorSource]
    aliases: dict[str, str]  # alias name -> stored tensor name
    framework: dict[str, str]
    parameter_names: dict[int, str] = field(default_factory=dict)  # id(parameter) -> name (modules)


def tensor_source(name: Any, value: Any) -> tuple[TensorSource, tuple | None]:
    if not isinstance(name, str) or not name:
        raise FormatError(f"tensor names must be non-empty strings, got {name!r}")
    if is_torch_tensor(value):
        if value.is_sparse or value.layout != _torch().strided:
            raise FormatError(f"tensor {name!r} has layout {value.layout}; convert it with .to_dense() first")
        if value.device.type == "meta":
            raise FormatError(f"tensor {name!r} is on the meta device and has no data to save")
        dtype = from_torch(value.dtype, f"tensor {name!r}")
        key = None
        if value.numel():
            key = ("pt", value.device.type, value.untyped_storage().data_ptr(), value.storage_offset(),
                   tuple(value.shape), tuple(value.stride()), value.dtype)
        return TensorSource(name, dtype, tuple(value.shape), value), key
    import numpy as np

    if isinstance(value, np.ndarray) or isinstance(value, np.generic):
        arr = np.asarray(value)
        dtype = from_numpy(arr.dtype, f"tensor {name!r}")
        key = None
        if arr.size:
            key = ("np", arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)
        return TensorSource(name, dtype, tuple(arr.shape), arr), key
    raise FormatError(f"tensor {name!r} is a {type(value).__name__}; expected a torch tensor or numpy array")


def collect_tensors(model_or_tensors: Any) -> Collected:
    """Normalise a torch module or a name -> tensor mapping.

    Two names viewing exactly the same memory (same storage, offset, shape, strides, dtype) are
    tied: the first is stored, the later ones are recorded as aliases of it.
    """
    parameter_names: dict[int, str] = {}
    if is_torch_module(model_or_tensors):
        module = model_or_tensors
        items = list(module.state_dict().items())
        parameter_names = {id(p): n for n, p in module.named_parameters()}
    elif isinstance(model_or_tensors, Mapping):
        items = list(model_or_tensors.items())
    else:
        raise FormatError(
            f"cannot save a {type(model_or_tensors).__name__}; pass a torch.nn.Module or a mapping "
            "of names to torch tensors / numpy arrays"
        )
    tensors: list[TensorSource] = []
    aliases: dict[str, str] = {}
    first_by_key: dict[tuple, str] = {}
    uses_torch = False
    for name, value in items:
        source, key = tensor_source(name, value)
        uses_torch = uses_torch or is_torch_tensor(value)
        if key is not None and key in first_by_key:
            aliases[name] = first_by_key[key]
            continue
        if key is not None:
            first_by_key[key] = name
        tensors.append(source)
    if uses_torch:
        framework = {"name": "torch", "version": str(_torch().__version__)}
    else:
        import numpy as np

        framework = {"name": "numpy", "version": np.__version__}
    return Collected(tensors, aliases, framework, parameter_names)


@dataclass(frozen=True)
class TensorMismatch:
    """A tensor present on both sides whose dtype or shape differs."""

    name: str
    snapshot_dtype: str
    snapshot_shape: tuple[int, ...]
    module_dtype: str
    module_shape: tuple[int, ...]

    def __str__(self) -> str:
        return (f"{self.name}: snapshot {self.snapshot_dtype}{list(self.snapshot_shape)} vs "
                f"module {self.module_dtype}{list(self.module_shape)}")


@dataclass(frozen=True)
class LoadReport:
    """What ``Artifact.load_into`` found: missing (in the module, not the snapshot), unexpected
    (in the snapshot, not the module), mismatched (dtype or shape), and what was loaded.

    Example:
        >>> report = LoadReport(missing=["head.bias"])
        >>> report.ok, str(report)
        (False, 'missing from the snapshot: head.bias')
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[TensorMismatch] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing from the snapshot: {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"not in the module: {', '.join(self.unexpected)}")
        if self.mismatched:
            parts.append(f"dtype/shape mismatches: {'; '.join(map(str, self.mismatched))}")
        return "; ".join(parts) if parts else f"all {len(self.loaded)} tensors loaded"


