"""Typed manifest structures (formats 1.0-1.3). The wire encoding lives in ``codec`` (and, for
1.3's per-layer records, ``records``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lamina._errors import FormatError
from lamina.format.shards import ShardEntry

__all__ = [
    "FORMAT_NAME",
    "MANIFEST_NAME",
    "FORMAT_VERSION",
    "ModelInfo",
    "TrainingState",
    "FileEntry",
    "TensorEntry",
    "Alias",
    "Scalar",
    "ParamState",
    "ParamGroup",
    "OptimizerInfo",
    "Manifest",
    "coerce_info",
    "coerce_training",
    "plain_value",
]

FORMAT_NAME = "lamina"
MANIFEST_NAME = "manifest.msgpack"
FORMAT_VERSION = (1, 3)
FILE_ROLES = ("weights", "optimizer", "index", "extra")


@dataclass(frozen=True)
class ModelInfo:
    """Who and what a model is; every field is optional.

    Example:
        >>> import lamina
        >>> lamina.ModelInfo(name="tiny", version="1.0.0", tags=("demo",)).name
        'tiny'
    """

    name: str | None = None
    version: str | None = None
    creator: str | None = None
    description: str | None = None
    license: str | None = None
    tags: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingState:
    """Where training stood when the snapshot was taken.

    Example:
        >>> import lamina
        >>> lamina.TrainingState(step=120, epoch=3, metrics={"loss": 0.5}).step
        120
    """

    step: int | None = None
    epoch: int | float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileEntry:
    """A file of a snapshot: its content address is ``lt1`` (format 1.3) or ``sha256`` (1.0-1.2)."""

    path: str
    size: int
    sha256: str | None
    role: str
    lt1: str | None = None

    @property
    def digest(self) -> tuple[str, str]:
        """``(algorithm, hex digest)`` of the file's content address."""
        if self.lt1 is not None:
            return "lt1", self.lt1
        assert self.sha256 is not None
        return "sha256", self.sha256


@dataclass(frozen=True)
class TensorEntry(ShardEntry):
    """A stored tensor: a shard entry (absolute byte range ``[begin, end)``) plus its layer, its
    file and (format 1.2) ``xxh3``, the XXH3-128 of its bytes that readers check on every read."""

    layer: str = ""
    file: str = ""
    xxh3: str | None = None


@dataclass(frozen=True)
class Alias:
    """A tied tensor: ``name`` shares storage with the stored tensor ``target``."""

    name: str
    layer: str
    target: str


@dataclass(frozen=True)
class Scalar:
    """A per-parameter optimizer scalar; ``dtype`` is set when it was a 0-d tensor."""

    value: bool | int | float | None
    dtype: str | None = None


@dataclass(frozen=True)
class ParamState:
    """Optimizer state of one parameter: tensor slots (in shards) and scalars (inline)."""

    param: str
    tensors: Mapping[str, TensorEntry] = field(default_factory=dict)
    scalars: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class ParamGroup:
    params: tuple[str, ...]
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OptimizerInfo:
    class_name: str
    framework: str
    param_groups: tuple[ParamGroup, ...]
    slots: tuple[str, ...]
    state: tuple[ParamState, ...]


@dataclass(frozen=True)
class Manifest:
    format_version: tuple[int, int]
    producer: Mapping[str, str]
    framework: Mapping[str, str] | None
    info: ModelInfo
    training: TrainingState | None
    tensors: tuple[TensorEntry, ...]
    aliases: tuple[Alias, ...]
    optimizer: OptimizerInfo | None
    files: tuple[FileEntry, ...]
    required: tuple[str, ...] = ()

    @property
    def layers(self) -> list[str]:
        """Layer names in first-appearance order (stored tensors, then alias-only layers)."""
        seen: dict[str, None] = {}
        for t in self.tensors:
            seen.setdefault(t.layer, None)
        for a in self.aliases:
            seen.setdefault(a.layer, None)
        return list(seen)


def plain_value(value: Any, where: str) -> Any:
    """Turn a user value into msgpack-able plain data (None, bool, int, float, str, bytes, list, dict).

    Numpy / torch scalars become Python numbers; tuples become lists; anything else is refused.
    """
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
            raise FormatError(f"{where}: integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise FormatError(f"{where}: keys must be strings, got {k!r}")
            out[k] = plain_value(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_value(dataclasses.asdict(value), where)
    item = getattr(value, "item", None)  # numpy scalars, 0-d numpy arrays and 0-d torch tensors
    if callable(item) and getattr(value, "ndim", None) == 0:
        return plain_value(item(), where)
    raise FormatError(f"{where}: {type(value).__name__} cannot be stored in a manifest; "
                      "use numbers, strings, lists and dicts")


def _from_mapping(cls: type, value: Any, where: str) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if not isinstance(value, Mapping):
        raise FormatError(f"{where} must be a mapping or lamina.{cls.__name__}, got {type(value).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - known
    if unknown:
        raise FormatError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)} "
                          "(put free-form data under 'extra')")
    return cls(**value)


def coerce_info(value: Any) -> ModelInfo:
    """Accept a ModelInfo, a dataclass or a mapping with ModelInfo's fields."""
    info = _from_mapping(ModelInfo, value, "info")
    for name in ("name", "version", "creator", "description", "license"):
        v = getattr(info, name)
        if v is not None and not isinstance(v, str):
            raise FormatError(f"info.{name} must be a string, got {type(v).__name__}")
    tags = info.tags
    if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
        raise FormatError("info.tags must be a list of strings")
    return dataclasses.replace(info, tags=tuple(tags), extra=plain_value(dict(info.extra), "info.extra"))


def coerce_training(value: Any) -> TrainingState | None:
    """Accept None, a TrainingState, a dataclass or a mapping with TrainingState's fields."""
    if value is None:
        return None
    state = _from_mapping(TrainingState, value, "training")
    step = plain_value(state.step, "training.step")
    epoch = plain_value(state.epoch, "training.epoch")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise FormatError(f"training.step must be an integer, got {step!r}")
    if epoch is not None and (not isinstance(epoch, (int, float)) or isinstance(epoch, bool)):
        raise FormatError(f"training.epoch must be a number, got {epoch!r}")
    metrics = plain_value(dict(state.metrics), "training.metrics")
    for k, v in metrics.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise FormatError(f"training.metrics.{k} must be a number, got {v!r}")
    return TrainingState(step=step, epoch=epoch, metrics=metrics,
                         extra=plain_value(dict(state.extra), "training.extra"))
