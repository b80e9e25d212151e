"""Differences between two snapshots, layer by layer, from their manifests alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lamina.format.manifest import Manifest

__all__ = ["SnapshotDiff", "LayerDiff", "diff_manifests"]


@dataclass(frozen=True)
class LayerDiff:
    """One layer's change. ``status``: ``added``, ``removed``, ``changed`` or ``unchanged``;
    sizes are the layer's weight shard bytes on each side (0 where absent)."""

    layer: str
    status: str
    old_bytes: int
    new_bytes: int


@dataclass(frozen=True)
class SnapshotDiff:
    """What changed from snapshot ``a`` to ``b``: weights per layer, optimizer state and extra files.

    A layer is unchanged exactly when its shard's sha256 is the same (and so are its aliases), so
    this costs only the two manifests.
    """

    a: str
    b: str
    layers: tuple[LayerDiff, ...]
    files: tuple[tuple[str, str], ...]  # (path, status) of extra files, optimizer shards and the index
    info_changed: bool
    training_changed: bool

    def _named(self, status: str) -> list[str]:
        return [d.layer for d in self.layers if d.status == status]

    @property
    def added(self) -> list[str]:
        return self._named("added")

    @property
    def removed(self) -> list[str]:
        return self._named("removed")

    @property
    def changed(self) -> list[str]:
        return self._named("changed")

    @property
    def unchanged(self) -> list[str]:
        return self._named("unchanged")

    @property
    def changed_bytes(self) -> int:
        """Bytes of ``b``'s layers that are new or changed (what a push of ``b`` on top of ``a`` uploads,
        weights only)."""
        return sum(d.new_bytes for d in self.layers if d.status in ("added", "changed"))

    @property
    def identical(self) -> bool:
        return (not self.info_changed and not self.training_changed and not self.files
                and all(d.status == "unchanged" for d in self.layers))

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical,
                "layers": [d.__dict__ for d in self.layers],
                "files": [{"path": p, "status": s} for p, s in self.files],
                "info_changed": self.info_changed, "training_changed": self.training_changed,
                "changed_bytes": self.changed_bytes}


def _layer_content(manifest: Manifest) -> dict[str, tuple[Any, int]]:
    """layer -> (identity, shard bytes): the shard's sha256 plus the layer's aliases."""
    files = {f.path: f for f in manifest.files}
    shard_of: dict[str, str] = {}
    for t in manifest.tensors:
        shard_of.setdefault(t.layer, t.file)
    aliases: dict[str, list[tuple[str, str]]] = {}
    for a in manifest.aliases:
        aliases.setdefault(a.layer, []).append((a.name, a.target))
    out = {}
    for layer in manifest.layers:
        shard = files.get(shard_of.get(layer, ""))
        identity = (shard.digest if shard else None, tuple(sorted(aliases.get(layer, []))))
        out[layer] = (identity, shard.size if shard else 0)
    return out


def diff_manifests(a: Manifest, b: Manifest, name_a: str = "a", name_b: str = "b") -> SnapshotDiff:
    """Compare two manifests (see :class:`SnapshotDiff`)."""
    old, new = _layer_content(a), _layer_content(b)
    layers = []
    for layer in list(old) + [n for n in new if n not in old]:
        if layer not in new:
            layers.append(LayerDiff(layer, "removed", old[layer][1], 0))
        elif layer not in old:
            layers.append(LayerDiff(layer, "added", 0, new[layer][1]))
        else:
            status = "unchanged" if old[layer][0] == new[layer][0] else "changed"
            layers.append(LayerDiff(layer, status, old[layer][1], new[layer][1]))
    other_a = {f.path: f.digest for f in a.files if f.role != "weights"}
    other_b = {f.path: f.digest for f in b.files if f.role != "weights"}
    files = []
    for path in sorted(set(other_a) | set(other_b)):
        if path not in other_b:
            files.append((path, "removed"))
        elif path not in other_a:
            files.append((path, "added"))
        elif other_a[path] != other_b[path]:
            files.append((path, "changed"))
    return SnapshotDiff(name_a, name_b, tuple(layers), tuple(files), a.info != b.info, a.training != b.training)


