"""ManifestView: a manifest as a reader uses it. The top-level fields are decoded and checked when
the manifest is opened; a layer's tensors, files and optimizer state on first use (format 1.3
records), so one layer costs the same in a model of any size. ``.manifest`` gives the whole
Manifest (every record decoded and every cross-record rule checked) for calls that need it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lamina._errors import FormatError
from lamina.format._validate import _check_references
from lamina.format.manifest import (
    Alias,
    FileEntry,
    Manifest,
    ModelInfo,
    OptimizerInfo,
    ParamGroup,
    TensorEntry,
    TrainingState,
)
from lamina.format.naming import decode_layer, default_layer
from lamina.format.records import LayerRecord, LayerRecords, group_records

__all__ = ["FileTable", "ManifestView", "OptimizerHeader"]


@dataclass(frozen=True)
class OptimizerHeader:
    """The optimizer fields stored outside layer records (1.3): everything but the per-parameter state."""

    class_name: str
    framework: str
    param_groups: tuple[ParamGroup, ...]
    slots: tuple[str, ...]


class ManifestView:
    """Read access to one manifest, decoding per-layer parts on demand.

    Build one with :meth:`of` (from a whole Manifest) or :meth:`lazy` (format 1.3 records)."""

    def __init__(self, *, format_version: tuple[int, int], producer: dict[str, str],
                 framework: dict[str, str] | None, info: ModelInfo, training: TrainingState | None,
                 required: tuple[str, ...], where: str) -> None:
        self.format_version = format_version
        self.producer = producer
        self.framework = framework
        self.info = info
        self.training = training
        self.required = required
        self.where = where
        self._full: Manifest | None = None
        self._records: LayerRecords | None = None
        self._optimizer: OptimizerHeader | None = None
        self._top_files: dict[str, FileEntry] = {}
        self._by_layer: dict[str, LayerRecord] | None = None
        self._names: dict[str, TensorEntry | Alias] | None = None
        self._by_file: tuple[dict[str, FileEntry], dict[str, list[TensorEntry]]] | None = None

    @classmethod
    def of(cls, manifest: Manifest, where: str = "manifest") -> ManifestView:
        """A view of a whole, already validated Manifest (formats 1.0-1.2, or one just written)."""
        view = cls(format_version=manifest.format_version, producer=dict(manifest.producer),
                   framework=manifest.framework, info=manifest.info, training=manifest.training,
                   required=manifest.required, where=where)
        view._full = manifest
        return view

    @classmethod
    def lazy(cls, records: LayerRecords, optimizer: OptimizerHeader | None, top_files: list[FileEntry],
             **header: Any) -> ManifestView:
        view = cls(**header)
        view._records, view._optimizer = records, optimizer
        view._top_files = {f.path: f for f in top_files}
        return view

    # ------------------------------------------------------------------------ whole manifest
    @property
    def manifest(self) -> Manifest:
        """The whole Manifest; for 1.3, decodes every record once and checks the rules that span
        records (FormatError naming the first problem)."""
        if self._full is None:
            self._full = self._assemble()
        return self._full

    def _assemble(self) -> Manifest:
        assert self._records is not None
        records = self._records.all()
        tensors = _in_order([(i, t) for r in records for t, i in zip(r.tensors, r.order)], "tensor", self.where)
        aliases = _in_order([(i, a) for r in records for a, i in zip(r.aliases, r.alias_order)], "alias",
                            self.where)
        files = ([f for r in records for f in r.files if f.role == "weights"]
                 + [f for r in records for f in r.files if f.role == "optimizer"] + list(self._top_files.values()))
        optimizer = None
        states = [s for r in records for s in r.state]
        if self._optimizer is not None:
            o = self._optimizer
            rank = {p: i for i, p in enumerate(p for g in o.param_groups for p in g.params)}
            states.sort(key=lambda s: rank.get(s.param, len(rank)))
            optimizer = OptimizerInfo(o.class_name, o.framework, o.param_groups, o.slots, tuple(states))
        elif states:
            raise FormatError(f"{self.where}: layer records hold optimizer state but the manifest has no optimizer")
        manifest = Manifest(format_version=self.format_version, producer=self.producer, framework=self.framework,
                            info=self.info, training=self.training, tensors=tuple(tensors), aliases=tuple(aliases),
                            optimizer=optimizer, files=tuple(files), required=self.required)
        _check_references(manifest, self.where)
        return manifest

    @property
    def optimizer(self) -> OptimizerInfo | None:
        if self._full is None and self._records is not None and self._optimizer is None:
            return None  # no optimizer: nothing to decode
        return self.manifest.optimizer

    @property
    def layer_count(self) -> int:
        return self._records.count if self._records is not None else len(self.layer_records())

    def layer_records(self) -> dict[str, LayerRecord]:
        """Every layer's record, by name, in record order."""
        if self._by_layer is None:
            records = self._records.all() if self._records is not None else group_records(self.manifest)
            if self._records is not None:
                self.manifest  # noqa: B018 - the cross-record rules, before any record is trusted as a whole
            self._by_layer = {r.name: r for r in records}
        return self._by_layer

    # ------------------------------------------------------------------------ one layer, one name
    def layer(self, name: str) -> LayerRecord | None:
        """The record of layer ``name``; None when there is no such layer (after the whole
        manifest was checked, so a damaged index never passes for a missing layer)."""
        if self._records is not None and self._by_layer is None:
            found = self._records.find(name)
            if found is not None:
                return found
        return self.layer_records().get(name)

    def lookup(self, name: str) -> TensorEntry | Alias | None:
        """The stored tensor or alias ``name``. Tries the layer its name implies (spec §3.1)
        first, so a default-layered name costs one record; anything else decodes every record once."""
        if self._names is None:
            hinted = self.layer(default_layer(name)) if self._records is not None else None
            found = hinted.find(name) if hinted is not None else None
            if found is not None:
                return found
            m = self.manifest
            self._names = {t.name: t for t in m.tensors} | {a.name: a for a in m.aliases}
        return self._names.get(name)

    def resolve(self, name: str) -> TensorEntry | None:
        """The stored tensor behind ``name`` (an alias's target), or None."""
        found = self.lookup(name)
        if isinstance(found, Alias):
            target = self.lookup(found.target)
            if not isinstance(target, TensorEntry):
                self.manifest  # noqa: B018 - raises: the alias's target is not a stored tensor
                raise FormatError(f"{self.where}: alias {name!r} targets {found.target!r}, which is not stored")
            return target
        return found

    # ------------------------------------------------------------------------ files
    def _file_index(self) -> tuple[dict[str, FileEntry], dict[str, list[TensorEntry]]]:
        if self._by_file is None:
            m = self.manifest
            entries: dict[str, list[TensorEntry]] = defaultdict(list)
            for t in m.tensors:
                entries[t.file].append(t)
            for s in m.optimizer.state if m.optimizer is not None else ():
                for t in s.tensors.values():
                    entries[t.file].append(t)
            self._by_file = ({f.path: f for f in m.files}, dict(entries))
        return self._by_file

    def file(self, path: str) -> FileEntry | None:
        """The file table entry of ``path``: top-level files, and (1.3) a shard through the layer
        its name encodes (spec §3.2), without decoding other records."""
        found = self._top_files.get(path)
        if found is not None:
            return found
        shard = self._shard_by_name(path)
        return shard[0] if shard is not None else self._file_index()[0].get(path)

    def _shard_by_name(self, path: str) -> tuple[FileEntry, list[TensorEntry]] | None:
        directory, _, name = path.partition("/")
        if self._records is None or directory not in ("weights", "optimizer") or not name.endswith(".safetensors"):
            return None
        layer = decode_layer(name[: -len(".safetensors")])
        record = self._records.find(layer) if layer is not None else None
        return _in_record(record, path) if record is not None else None

    def shard(self, path: str, layer: str | None = None) -> tuple[FileEntry, list[TensorEntry]] | None:
        """A shard's file entry and every tensor stored in it; ``layer``: the layer whose record
        lists it (found without decoding other records), when the caller knows it."""
        record = self.layer(layer) if layer is not None and self._records is not None else None
        found = _in_record(record, path) if record is not None else self._shard_by_name(path)
        if found is not None:
            return found
        files, entries = self._file_index()
        return (files[path], entries.get(path, [])) if path in files else None


def _in_record(record: LayerRecord, path: str) -> tuple[FileEntry, list[TensorEntry]] | None:
    for f in record.files:
        if f.path == path:
            if f.role == "weights":
                return f, list(record.tensors)
            return f, [t for s in record.state for t in s.tensors.values()]
    return None


def _in_order(items: list[tuple[int, Any]], what: str, where: str) -> list[Any]:
    items.sort(key=lambda x: x[0])
    if [i for i, _ in items] != list(range(len(items))):
        raise FormatError(f"{where}: the {what} order numbers of the layer records are not 0..{len(items) - 1}")
    return [x for _, x in items]


class FileTable:
    """Path -> FileEntry of one snapshot, for stores that map a snapshot's paths elsewhere (blobs,
    a cache). Over a ManifestView a shard's entry is found through its layer's record, so opening
    a layer does not decode the whole manifest."""

    def __init__(self, files: Iterable[FileEntry] | ManifestView) -> None:
        self._view = files if isinstance(files, ManifestView) else None
        self._dict = None if self._view is not None else {f.path: f for f in files}  # type: ignore[union-attr]

    def get(self, path: str) -> FileEntry | None:
        if self._dict is not None:
            return self._dict.get(path)
        assert self._view is not None
        return self._view.file(path)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self.get(path) is not None

    def all(self) -> list[FileEntry]:
        """Every entry (decodes the whole manifest)."""
        if self._dict is not None:
            return list(self._dict.values())
        assert self._view is not None
        return list(self._view.manifest.files)
