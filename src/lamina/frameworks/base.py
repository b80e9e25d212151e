"""The framework adapter interface, and the framework-neutral shapes that cross it.

An adapter is the only code that touches a framework's objects. The rest of lamina sees
:class:`TensorSource` (a named tensor to write: dtype code, shape, and a way to get its bytes),
:class:`Collected` (a model's tensors with ties resolved) and :class:`LoadReport`, and asks the
adapter for the few operations below. The interface is written so that Keras 3 (one adapter for
its TensorFlow, torch and JAX backends: variables expose ``path``, ``value``, ``assign``) and a
distributed torch state dict (DTensor: ``tensor_bytes`` of the local shard, ``empty`` on the
right device) can implement it. Reads go through host memory: ``empty(dtype, shape, device)``
gives a tensor with a writable host byte view, ``to_device`` moves it once filled.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lamina._errors import FormatError
from lamina.format.dtypes import DType

if TYPE_CHECKING:
    from lamina.format.manifest import OptimizerInfo, TensorEntry
    from lamina.frameworks.optim import CapturedOptimizer

__all__ = ["FrameworkAdapter", "TensorSource", "Collected", "TensorReader", "LoadReport", "TensorMismatch"]


@dataclass(frozen=True)
class TensorSource:
    """A named tensor to be written; ``obj`` is the framework's tensor, ``adapter`` its adapter."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    obj: Any
    adapter: FrameworkAdapter = field(compare=False, repr=False)

    @property
    def nbytes(self) -> int:
        n = self.dtype.itemsize
        for d in self.shape:
            n *= d
        return n

    def buffer(self) -> memoryview:
        """Little-endian C-order bytes; a zero-copy view for contiguous CPU tensors."""
        return self.adapter.tensor_bytes(self.obj)


@dataclass
class Collected:
    """A model's (or mapping's) tensors, ready to write."""

    tensors: list[TensorSource]
    aliases: dict[str, str]  # alias name -> stored tensor name
    framework: dict[str, str]  # {"name", "version"} of the source framework
    parameter_names: dict[int, str] = field(default_factory=dict)  # id(parameter) -> name (models)
    #: the model's own name -> layer rule (Keras: up to the last '/'); None: lamina's default
    layer_of: Callable[[str], str] | None = None
    #: extra files that describe the model in its framework's terms (Keras: config and HDF5 layout)
    files: dict[str, bytes] = field(default_factory=dict)


class TensorReader(ABC):
    """What an adapter needs from the snapshot reader to load a model in place."""

    @abstractmethod
    def read(self, entries: Sequence[TensorEntry], framework: str,
             destination: Callable[[TensorEntry], memoryview | None] = lambda e: None) -> dict[str, Any]:
        """Tensors for ``entries`` as ``framework`` tensors; where ``destination(entry)`` gives a
        buffer, it is filled in place and the result holds None for that entry."""

    @abstractmethod
    def check_files(self, paths: Sequence[str]) -> None:
        """Check the named shards (sizes, headers) before anything is loaded; raises IntegrityError."""

    @abstractmethod
    def extra_file(self, path: str) -> bytes | None:
        """An extra file's bytes, checked against the manifest (``keras/layout.json``: how a
        framework's own save paths map to tensor names); None when the snapshot has no such file."""


class FrameworkAdapter(ABC):
    """One framework's side of lamina. Subclasses live in ``lamina/frameworks/<name>.py`` as
    ``Adapter`` and are the only modules that import their framework."""

    #: the name recorded in manifests (``framework.name``) and accepted as ``framework=``
    name: str
    #: the top-level keys its :meth:`capture_rng` writes into a checkpoint's RNG state
    rng_keys: tuple[str, ...] = ()
    #: how its models' tensor names map to layers (None: lamina's default, the name up to its last '.')
    layer_of: Callable[[str], str] | None = None

    # ------------------------------------------------------------------ recognising
    @abstractmethod
    def is_tensor(self, value: Any) -> bool: ...

    def is_model(self, value: Any) -> bool:
        """A model object whose named tensors can be collected (not a plain mapping)."""
        return False

    @abstractmethod
    def version(self) -> str: ...

    # ------------------------------------------------------------------ writing
    @abstractmethod
    def tensor_source(self, name: str, value: Any) -> tuple[TensorSource, Hashable | None]:
        """``value`` as a TensorSource, and a key equal for two tensors that share exactly the same
        memory (tied weights), None for empty tensors. FormatError for what cannot be stored."""

    @abstractmethod
    def tensor_bytes(self, value: Any) -> memoryview:
        """Little-endian C-order bytes of a tensor this adapter made a TensorSource for."""

    def named_tensors(self, model: Any) -> tuple[list[tuple[str, Any]], dict[int, str]]:
        """``(name, tensor)`` pairs of a model's state, and ``id(parameter) -> name``."""
        raise FormatError(f"{self.name} has no model type; pass a mapping of names to tensors")

    def host_copy(self, value: Any) -> Any:
        """A copy of a tensor in host memory that later in-place changes to ``value`` do not
        affect (background checkpoint saves write it while training goes on)."""
        raise NotImplementedError

    def is_optimizer(self, value: Any) -> bool:
        return False

    def model_optimizer(self, model: Any) -> Any:
        """The optimizer a model carries itself (a compiled Keras model's), or None."""
        return None

    def capture_optimizer(self, optimizer: Any, collected: Collected) -> CapturedOptimizer:
        """A live optimizer's state, regrouped by parameter name."""
        raise FormatError(f"saving {self.name} optimizers is not supported")

    def model_files(self, model: Any, optimizer: CapturedOptimizer | None) -> dict[str, bytes]:
        """Extra files saved with a model of this framework (architecture, the framework's own
        file layout), so the snapshot can be exported to the framework's format."""
        return {}

    # ------------------------------------------------------------------ reading
    @abstractmethod
    def empty(self, dtype: str, shape: tuple[int, ...], device: Any = None) -> tuple[Any, memoryview]:
        """A new tensor of a dtype code and shape, and a writable byte view of its memory.

        ``device`` is where the caller wants the tensor in the end (None: host memory). The view is
        always host memory: an adapter whose device memory cannot be written through it returns a
        host tensor (torch: pinned for CUDA) that :meth:`to_device` moves once it is filled. An
        adapter without devices accepts only None and ``"cpu"`` (:meth:`host_only`).
        """

    def to_device(self, tensor: Any, device: Any) -> Any:
        """A tensor from :meth:`empty`, now filled, on ``device`` (None: left where it is)."""
        return tensor

    def host_only(self, device: Any) -> None:
        """FormatError unless ``device`` is None or the CPU (for adapters whose tensors live in host memory)."""
        if device is not None and str(device) != "cpu":
            raise FormatError(f"{self.name} tensors live in host memory: device must be None or 'cpu', got {device!r}; "
                              "read with framework='pt' for accelerator devices")

    def scalar(self, value: Any, dtype: str) -> Any:
        """A 0-d tensor holding ``value`` (optimizer scalars stored inline in the manifest)."""
        tensor, view = self.empty(dtype, ())
        import numpy as np

        from lamina.format.dtypes import numpy_dtype

        view[:] = np.asarray(value, dtype=numpy_dtype(dtype)).tobytes()
        return tensor

    def load_into(self, model: Any, resolve: Mapping[str, TensorEntry], strict: bool,
                  reader: TensorReader) -> LoadReport:
        """Copy snapshot tensors into the model in place; ``resolve`` maps every snapshot name
        (aliases included) to its stored entry. ``strict``: all or nothing, StateMismatchError."""
        raise FormatError(f"{self.name} has no model type to load into")

    def restore_optimizer(self, info: OptimizerInfo, optimizer: Any, model: Any,
                          read: Callable[[list[TensorEntry]], dict[str, Any]],
                          reader: TensorReader | None = None) -> None:
        """Load saved optimizer state into a live optimizer over ``model``, matching by name
        (``reader`` gives access to the snapshot's extra files)."""
        raise FormatError(f"restoring {self.name} optimizers is not supported")

    def optimizer_state_dict(self, info: OptimizerInfo, read: Callable[[list[TensorEntry]], dict[str, Any]]) -> Any:
        """The saved optimizer state in this framework's own serialized form (torch: a state dict)."""
        raise FormatError(f"{self.name} has no optimizer state dict form")

    # ------------------------------------------------------------------ random state
    def capture_rng(self, model: Any = None) -> dict[str, Any]:
        """This framework's generator states — global ones, and ``model``'s own where a model
        holds generators (Keras layers do) — as plain data and tensors, merged into the
        checkpoint's RNG state under keys the adapter owns."""
        return {}

    def restore_rng(self, state: Mapping[str, Any], model: Any = None) -> None:
        """Set the generators from what :meth:`capture_rng` returned (ignore missing keys)."""


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
