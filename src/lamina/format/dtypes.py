"""The dtype table: safetensors dtype codes <-> numpy and torch dtypes.

lamina uses the safetensors codes ("F32", "BF16", ...) everywhere inside; numpy and torch dtypes
are made only at the edges. Sub-byte types (F4, F6_*) are not part of format 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina._errors import FormatError

__all__ = ["DType", "DTYPES", "dtype_info", "from_numpy", "from_torch", "check_shape_bounds", "check_scalar_value"]


@dataclass(frozen=True)
class DType:
    code: str  # safetensors dtype string
    itemsize: int
    numpy: str  # numpy / ml_dtypes dtype name
    torch: str  # attribute of the torch module


DTYPES: dict[str, DType] = {
    d.code: d
    for d in (
        DType("BOOL", 1, "bool", "bool"),
        DType("U8", 1, "uint8", "uint8"),
        DType("I8", 1, "int8", "int8"),
        DType("U16", 2, "uint16", "uint16"),
        DType("I16", 2, "int16", "int16"),
        DType("U32", 4, "uint32", "uint32"),
        DType("I32", 4, "int32", "int32"),
        DType("U64", 8, "uint64", "uint64"),
        DType("I64", 8, "int64", "int64"),
        DType("F16", 2, "float16", "float16"),
        DType("BF16", 2, "bfloat16", "bfloat16"),
        DType("F32", 4, "float32", "float32"),
        DType("F64", 8, "float64", "float64"),
        DType("C64", 8, "complex64", "complex64"),
        DType("F8_E5M2", 1, "float8_e5m2", "float8_e5m2"),
        DType("F8_E4M3", 1, "float8_e4m3fn", "float8_e4m3fn"),
        DType("F8_E8M0", 1, "float8_e8m0fnu", "float8_e8m0fnu"),
        DType("F8_E4M3FNUZ", 1, "float8_e4m3fnuz", "float8_e4m3fnuz"),
        DType("F8_E5M2FNUZ", 1, "float8_e5m2fnuz", "float8_e5m2fnuz"),
    )
}

_BY_NUMPY = {d.numpy: d for d in DTYPES.values()}
_BY_TORCH = {d.torch: d for d in DTYPES.values()}


def dtype_info(code: str) -> DType:
    """The table entry for a safetensors dtype code, or FormatError."""
    try:
        return DTYPES[code]
    except (KeyError, TypeError):
        raise FormatError(
            f"unsupported dtype {code!r}; lamina format 1.0 supports {', '.join(DTYPES)}"
        ) from None


MAX_TENSOR_BYTES = 1 << 62  # any shape whose non-zero dims need more is refused, even with a zero dim


def check_shape_bounds(code: str, shape: tuple[int, ...] | list[int], where: str) -> None:
    """Refuse shapes no machine can allocate, even when a zero dimension makes them empty."""
    size = dtype_info(code).itemsize
    for dim in shape:
        size *= max(dim, 1)
        if size > MAX_TENSOR_BYTES:
            raise FormatError(f"{where}: shape {list(shape)} of {code} exceeds {MAX_TENSOR_BYTES} bytes")


def check_scalar_value(value: object, code: str, where: str) -> None:
    """A 0-d tensor value stored inline must be representable in its dtype."""
    info = dtype_info(code)
    if code == "BOOL":
        ok = isinstance(value, bool)
    elif code[0] in "IU":
        bits = info.itemsize * 8
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if code[0] == "I" else (0, 2**bits)
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value < high
    elif code == "C64":
        ok = False  # complex scalars are stored as shards, never inline
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise FormatError(f"{where}: value {value!r} is not a valid {code} scalar")


def from_numpy(dtype: Any, where: str) -> DType:
    """The entry for a numpy dtype (ml_dtypes for bfloat16 / float8)."""
    entry = _BY_NUMPY.get(getattr(dtype, "name", str(dtype)))
    if entry is None:
        raise FormatError(f"{where}: numpy dtype {dtype} cannot be stored; supported: "
                          f"{', '.join(sorted(_BY_NUMPY))}")
    return entry


def from_torch(dtype: Any, where: str) -> DType:
    """The entry for a torch dtype such as ``torch.bfloat16``."""
    entry = _BY_TORCH.get(str(dtype).removeprefix("torch."))
    if entry is None:
        raise FormatError(f"{where}: torch dtype {dtype} cannot be stored; supported: "
                          f"{', '.join(sorted(_BY_TORCH))}")
    return entry


def numpy_dtype(code: str) -> Any:
    """The numpy dtype for a code; bfloat16 and float8 come from ml_dtypes."""
    import numpy as np

    name = dtype_info(code).numpy
    try:
        return np.dtype(name).newbyteorder("<")
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))

