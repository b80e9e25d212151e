"""Artifact: the lazy, read-only view of one snapshot."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from lamina._errors import (
    FormatError,
    IntegrityError,
    NotFoundError,
    StateMismatchError,
)
from lamina.format.codec import MANIFEST_NAME
from lamina.format.digests import FileTensorDigests, file_hasher
from lamina.format.manifest import (
    Manifest,
    ModelInfo,
    OptimizerInfo,
    TensorEntry,
    TrainingState,
)
from lamina.format.view import ManifestView
from lamina.frameworks import registry
from lamina.frameworks.base import FrameworkAdapter, LoadReport
from lamina.snapshot.reader import ShardReader, normalize_framework, read_manifest
from lamina.storage.base import Store
from lamina.storage.paths import check_relative_path

__all__ = ["Artifact"]


class Artifact:
    """A snapshot opened with :func:`lamina.open`. Opening reads only the manifest; each method
    reads only the bytes it needs.

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "m")
        >>> _ = lamina.save({"fc.weight": np.eye(2, dtype="float32")}, path, info={"name": "eye"})
        >>> art = lamina.open(path)
        >>> art.info.name, art.layers, art.tensor("fc.weight", framework="np").tolist()
        ('eye', ['fc'], [[1.0, 0.0], [0.0, 1.0]])
    """

    def __init__(self, store: Store, manifest: Manifest | ManifestView, *, verify: bool | None = None,
                 max_workers: int | None = None) -> None:
        self._store = store
        # a 1.3 manifest's layer records are decoded when first used: open() and one layer cost
        # the same in a model of any size
        self._view = manifest if isinstance(manifest, ManifestView) else ManifestView.of(manifest)
        # None (default): every tensor read is checked against its checksum; True: also the sha256
        # of every whole shard read; False: neither (sizes and headers are always checked)
        self._reader = ShardReader(store, self._view, verify=bool(verify), check_tensors=verify is not False,
                                   max_workers=max_workers)

    @cached_property
    def _resolve(self) -> dict[str, TensorEntry]:
        """Every name (stored, then aliases) -> its stored tensor; decodes the whole manifest."""
        m = self._view.manifest
        stored = {t.name: t for t in m.tensors}
        return stored | {a.name: stored[a.target] for a in m.aliases}

    # ------------------------------------------------------------------------ metadata
    @property
    def location(self) -> str:
        return self._store.location

    @property
    def manifest(self) -> Manifest:
        """The decoded manifest (every field of the format; decodes every layer record)."""
        return self._view.manifest

    @property
    def format_version(self) -> str:
        return "{}.{}".format(*self._view.format_version)

    @property
    def info(self) -> ModelInfo:
        return self._view.info

    @property
    def training(self) -> TrainingState:
        """Training state; an empty TrainingState when the snapshot recorded none."""
        return self._view.training or TrainingState()

    @property
    def optimizer(self) -> OptimizerInfo | None:
        return self._view.optimizer

    @property
    def layers(self) -> list[str]:
        return self.manifest.layers

    @property
    def aliases(self) -> dict[str, str]:
        """Tied tensors: alias name -> the stored tensor it shares memory with."""
        return {a.name: a.target for a in self.manifest.aliases}

    @property
    def files(self) -> list[str]:
        return [f.path for f in self.manifest.files]

    def keys(self) -> list[str]:
        """Tensor names (stored tensors in source order, then aliases)."""
        return list(self._resolve)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._view.lookup(name) is not None

    def __len__(self) -> int:
        return len(self._resolve)

    def __repr__(self) -> str:
        return (f"<lamina.Artifact {self.location!r} {self.info.name or ''} {len(self.layers)} layers, "
                f"{len(self._resolve)} tensors>")

    # ------------------------------------------------------------------------ tensors
    def _entry(self, name: str) -> TensorEntry:
        entry = self._view.resolve(name) if isinstance(name, str) else None
        if entry is None:
            raise NotFoundError(f"no tensor {name!r} in {self.location}; see .keys()")
        return entry

    def tensor(self, name: str, framework: str = "pt", *, device: Any = None) -> Any:
        """One tensor (reads only its bytes, plus the shard header once).

        Args:
            name: a tensor name from :meth:`keys`.
            framework: ``"pt"`` for a torch tensor, ``"np"`` for a numpy array.
            device: where the tensor ends up: None (host memory, as read), ``"cpu"``, or for torch
                any device this process has (``"cuda:1"``, ``torch.device("cuda")``). Bytes are
                read into host memory (pinned for CUDA/XPU), then moved with
                ``.to(device, non_blocking=True)`` (ordered on the current stream), one shard at a
                time. numpy: only None or ``"cpu"``. FormatError for a device that does not exist,
                ``meta``, or a framework without devices; raised before any tensor byte is read.
                Tested on CPU only: the CUDA path (pinned staging, asynchronous copy) has not run
                on a real accelerator.

        Example:
            >>> import lamina, numpy as np, tempfile, os
            >>> path = os.path.join(tempfile.mkdtemp(), "m")
            >>> _ = lamina.save({"fc.w": np.ones(2, "float32")}, path)
            >>> lamina.open(path).tensor("fc.w", device="cpu").device
            device(type='cpu')
        """
        entry = self._entry(name)
        return self._reader.read([entry], normalize_framework(framework), device=device)[entry.name]

    def layer(self, name: str, framework: str = "pt", *, device: Any = None) -> dict[str, Any]:
        """All tensors of one layer, by tensor name; reads only that layer's shard (an alias reads
        the shard of the tensor it is tied to). ``device``: as for :meth:`tensor`."""
        record = self._view.layer(name) if isinstance(name, str) else None
        if record is None or not (record.tensors or record.aliases):
            raise NotFoundError(f"no layer {name!r} in {self.location}; see .layers")
        wanted: dict[str, TensorEntry] = {t.name: t for t in record.tensors}
        for a in record.aliases:
            wanted[a.name] = self._entry(a.name)
        return self._read_entries(wanted, normalize_framework(framework), device)

    def state_dict(self, framework: str = "pt", *, device: Any = None) -> dict[str, Any]:
        """Every tensor, by name; tied names share one tensor object. ``device``: as for
        :meth:`tensor` (each shard moves as soon as it is read, so host memory holds the shards
        being read, not the model)."""
        return self._read_names(list(self._resolve), normalize_framework(framework), device)

    def _read_names(self, names: list[str], framework: str, device: Any = None) -> dict[str, Any]:
        return self._read_entries({n: self._resolve[n] for n in names}, framework, device)

    def _read_entries(self, wanted: dict[str, TensorEntry], framework: str, device: Any = None) -> dict[str, Any]:
        """Read each stored tensor once; tied names share the tensor object."""
        stored = {e.name: e for e in wanted.values()}
        tensors = self._reader.read(list(stored.values()), framework, device=device)
        return {n: tensors[e.name] for n, e in wanted.items()}

    # ------------------------------------------------------------------------ live models
    def _adapter_of(self, obj: Any, role: str) -> FrameworkAdapter:
        adapter = registry.for_value(obj)
        if adapter is None or not (adapter.is_model(obj) if role == "model" else adapter.is_optimizer(obj)):
            raise FormatError(f"cannot load into a {type(obj).__name__}: it is not {'a model' if role == 'model' else 'an optimizer'} "
                              f"of a supported framework ({', '.join(registry.registered())})")
        return adapter

    def load_into(self, module: Any, strict: bool = True) -> LoadReport:
        """Copy the weights into a model's parameters and buffers (a ``torch.nn.Module``), in place,
        wherever they live: contiguous host tensors are read into directly; tensors on an
        accelerator or non-contiguous ones through a host staging buffer (pinned for CUDA), one
        shard at a time per reader thread, so extra memory is bounded by the shards in flight. A
        module (or tensors of it) on ``meta`` is refused: ``module.to_empty(device=...)`` first.
        Dtypes are never cast: a tensor of another dtype is a mismatch. Tested on CPU only (no
        accelerator was available): CUDA destinations go through the same staging path as
        non-contiguous CPU tensors, which is tested.

        Args:
            module: a model with the same tensor names.
            strict: raise :class:`lamina.StateMismatchError` (loading nothing) when any tensor
                is missing, unexpected, or differs in dtype or shape; otherwise load what matches.

        Returns:
            A :class:`lamina.LoadReport`.
        """
        return self._adapter_of(module, "model").load_into(module, self._resolve, strict, self._reader)

    def load_optimizer(self, optimizer: Any, module: Any) -> None:
        """Restore optimizer state saved with ``lamina.save(..., optimizer=...)``, matching
        parameters by name through ``module`` (so parameter order does not matter)."""
        if self.optimizer is None:
            raise StateMismatchError(f"{self.location} holds no optimizer state")
        adapter = self._adapter_of(optimizer, "optimizer")
        adapter.restore_optimizer(self.optimizer, optimizer, module,
                                  lambda entries: self._reader.read(entries, adapter.name), reader=self._reader)

    def optimizer_state(self, framework: str = "pt") -> dict[str, dict[str, Any]]:
        """Optimizer state by parameter name: ``{param: {slot: tensor or scalar}}`` (framework-neutral,
        e.g. for converters); parameters without state are absent."""
        info = self.optimizer
        if info is None:
            raise StateMismatchError(f"{self.location} holds no optimizer state")
        entries = [t for s in info.state for t in s.tensors.values()]
        tensors = self._reader.read(entries, normalize_framework(framework))
        return {s.param: {**{slot: tensors[t.name] for slot, t in s.tensors.items()},
                          **{slot: scalar.value for slot, scalar in s.scalars.items()}} for s in info.state}

    def optimizer_state_dict(self) -> dict[str, Any]:
        """The optimizer state as a torch ``Optimizer.state_dict()`` (ids in the saved group
        order, ``param_names`` recorded), e.g. for ``torch.save`` or an optimizer built in that order.

        Example:
            >>> import lamina, torch, tempfile, os
            >>> model = torch.nn.Linear(2, 1)
            >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
            >>> model(torch.ones(1, 2)).sum().backward(); opt.step()
            >>> path = os.path.join(tempfile.mkdtemp(), "m")
            >>> sd = lamina.save(model, path, optimizer=opt).optimizer_state_dict()
            >>> sd["param_groups"][0]["param_names"], sorted(sd["state"][0])
            (['weight', 'bias'], ['momentum_buffer'])
        """
        info = self.optimizer
        if info is None:
            raise StateMismatchError(f"{self.location} holds no optimizer state")
        return registry.get("torch").optimizer_state_dict(info, lambda entries: self._reader.read(entries, "torch"))

    # ------------------------------------------------------------------------ files
    def manifest_bytes(self) -> bytes:
        """The manifest's bytes as stored now (the snapshot id is their sha256), checked to be the
        manifest this Artifact was opened with: a snapshot rewritten since is an IntegrityError."""
        from lamina.format.codec import encode_manifest

        if not self._store.exists(MANIFEST_NAME):
            return encode_manifest(self.manifest)
        data, manifest = read_manifest(self._store)
        if manifest != self.manifest:
            raise IntegrityError(f"{self.location}: the snapshot was rewritten after it was opened; open it again",
                                 [(MANIFEST_NAME, "changed since opened")])
        return data

    def read_file(self, path: str) -> bytes:
        """An extra file's bytes (e.g. ``config.json``), checked against its sha256."""
        check_relative_path(path)
        if self._view.file(path) is None:
            raise NotFoundError(f"no file {path!r} in {self.location}; files: {', '.join(self.files)}")
        return self._reader.read_file_verified(path)

    def verify(self) -> None:
        """Check every file's size and content address (lt1, or sha256 before format 1.3), every shard header, and that no unlisted file
        exists — on the storage itself, bypassing any local cache. Raises
        :class:`lamina.IntegrityError` listing every bad file."""
        store = self._store.source()
        manifest = self.manifest  # every record decoded and cross-checked first
        reader = self._reader if store is self._store else ShardReader(store, self._view)
        problems: list[tuple[str, str]] = []
        for f in manifest.files:
            try:
                size = store.size(f.path)
            except NotFoundError:
                problems.append((f.path, "missing"))
                continue
            except FormatError as exc:  # not a regular file
                problems.append((f.path, str(exc)))
                continue
            if size != f.size:
                problems.append((f.path, f"size {size}, expected {f.size}"))
                continue
            algorithm, expected = f.digest
            hasher = file_hasher(algorithm)
            tensors = FileTensorDigests(reader.tensors_in(f.path))
            for chunk in store.iter_chunks(f.path):
                hasher.update(chunk)
                tensors.update(chunk)
            if hasher.hexdigest() != expected:
                problems.append((f.path, f"{algorithm} mismatch"))
                continue
            bad = tensors.mismatches()
            if bad:  # the file is as recorded, so the manifest's checksums are wrong
                problems.append((f.path, f"tensor checksum mismatch: {', '.join(bad)}"))
                continue
            if f.role in ("weights", "optimizer"):
                try:
                    reader.check_shard(f.path)
                except IntegrityError as exc:
                    problems.append((f.path, str(exc)))
        listed = {f.path for f in manifest.files} | {MANIFEST_NAME}
        if store.can_list:
            problems += [(p, "not listed in the manifest") for p in store.list() if p not in listed]
        if problems:
            detail = "; ".join(f"{p}: {why}" for p, why in problems)
            raise IntegrityError(f"{self.location}: {len(problems)} file(s) failed verification: {detail}", problems)

