"""ShardReader: reads tensors named in a manifest from a Store, checking what it reads.

Before the first read from a shard it checks the file's size against the manifest and that the
shard's own header agrees with the manifest (names, dtypes, shapes, byte ranges) — one bounded
header read per shard. With ``verify=True`` every shard is read whole and its sha256 checked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from lamina._errors import FormatError, IntegrityError, NotFoundError
from lamina._parallel import run_parallel
from lamina.format.codec import MANIFEST_NAME, MAX_MANIFEST_BYTES, open_manifest
from lamina.format.digests import file_hasher, tensor_digest
from lamina.format.manifest import FileEntry, Manifest, TensorEntry
from lamina.format.shards import plan_shard, read_header
from lamina.format.view import ManifestView
from lamina.frameworks import registry
from lamina.frameworks.base import TensorReader
from lamina.storage.base import Store

_ONE_REQUEST_MAX = 64 << 20  # bytes a remote layer may take in one request before its size is proven

__all__ = ["ShardReader", "allocate", "normalize_framework", "read_manifest", "read_manifest_view"]

def normalize_framework(framework: str) -> str:
    """The registered name for a ``framework=`` value (``"pt"`` -> ``"torch"``); FormatError if unknown."""
    return registry.get(framework).name


def allocate(entry: TensorEntry, framework: str, device: Any = None) -> tuple[Any, memoryview]:
    """An empty tensor for ``entry`` and a writable (host) byte view of its memory; ``device``: where
    the tensor goes once filled (the adapter may stage it in pinned memory)."""
    return registry.get(framework).empty(entry.dtype, entry.shape, device)


def read_manifest_view(store: Store, path: str = MANIFEST_NAME) -> tuple[bytes, ManifestView]:
    """A manifest's bytes and its view (1.3 layer records decoded on use); a file over the
    manifest size limit is refused before it is read (spec §4)."""
    data = store.read_limited(path, MAX_MANIFEST_BYTES)
    return data, open_manifest(data, f"{store.location}/{path}")


def read_manifest(store: Store, path: str = MANIFEST_NAME) -> tuple[bytes, Manifest]:
    """A manifest's bytes and its whole decoded form (every record checked)."""
    data, view = read_manifest_view(store, path)
    return data, view.manifest


class ShardReader(TensorReader):
    """Reads tensors of one snapshot from its store. Every tensor read is checked against its
    XXH3-128 (format 1.2; spec §8) unless ``check_tensors`` is False; ``verify`` also checks the
    sha256 of each whole shard read (the way to verify 1.0/1.1 snapshots, which have no
    per-tensor checksums)."""

    def __init__(self, store: Store, manifest: Manifest | ManifestView, *, verify: bool = False,
                 check_tensors: bool = True, max_workers: int | None = None) -> None:
        self.store = store
        self.max_workers = max_workers or store.max_concurrency
        self.view = manifest if isinstance(manifest, ManifestView) else ManifestView.of(manifest)
        self.verify = verify
        self.check_tensors = check_tensors
        self._shards: dict[str, tuple[FileEntry, list[TensorEntry]]] = {}
        self._checked: set[str] = set()

    def _shard(self, path: str, layer: str | None = None) -> tuple[FileEntry, list[TensorEntry]]:
        """A shard's file entry and the tensors the manifest stores in it (``layer``: the layer
        whose record lists it, so that no other record is decoded)."""
        found = self._shards.get(path)
        if found is None:
            found = self.view.shard(path, layer)
            if found is None:
                raise NotFoundError(f"no file {path!r} in the manifest of {self.store.location}")
            self._shards[path] = found
        return found

    def _missing(self, path: str) -> IntegrityError:
        return IntegrityError(f"{path}: listed in the manifest but missing from {self.store.location}",
                              [(path, "missing")])

    def _planned_header(self, path: str) -> bytes:
        """The exact header the manifest implies for ``path`` (spec §5.1), after checking that the
        manifest's byte ranges are the ones the layout gives."""
        expected = self._shard(path)[1]
        header, planned = plan_shard([(t.name, t.dtype, t.shape) for t in expected])
        ranges = {e.name: (e.begin, e.end) for e in planned}
        for t in expected:
            if ranges[t.name] != (t.begin, t.end):
                raise IntegrityError(f"{path}: the manifest's byte range for {t.name!r} is not the one the shard "
                                     f"layout gives ({ranges[t.name]})", [(path, "manifest range mismatch")])
        return header

    def check_shard(self, path: str, prefix_until: int = 0, layer: str | None = None) -> bytes | None:
        """Size and header agreement with the manifest, once per shard. With ``prefix_until``, the
        same single request also fetches the file's bytes up to that offset, and returns them."""
        if path in self._checked:
            return None
        recorded = self._shard(path, layer)[0]
        # The layout is deterministic (spec §5.1), so the manifest fixes the header byte for byte:
        # one bounded read proves the shard holds exactly these tensors at these offsets.
        header = self._planned_header(path)
        try:
            prefix, size = self.store.read_prefix(path, max(len(header), prefix_until))
        except NotFoundError:
            raise self._missing(path) from None
        if size != recorded.size:
            raise IntegrityError(f"{path}: {size} bytes on storage, manifest says {recorded.size} "
                                 f"({'truncated' if size < recorded.size else 'grown'}); run `lamina verify`",
                                 [(path, "size mismatch")])
        if prefix[: len(header)] != header:
            try:
                _, found = read_header(lambda a, b: self.store.read(path, a, b), size, path)
            except FormatError as exc:
                raise IntegrityError(f"{exc} (the shard does not match the manifest)",
                                     [(path, "bad header")]) from None
            expected = self._shard(path)[1]
            wrong = [t.name for t in expected if t.name not in found or (found[t.name].dtype, found[t.name].shape,
                     found[t.name].begin, found[t.name].end) != (t.dtype, t.shape, t.begin, t.end)]
            detail = f"entries for {wrong} differ" if wrong else "header bytes differ"
            raise IntegrityError(f"{path}: shard header disagrees with the manifest ({detail}); run `lamina verify`",
                                 [(path, "header mismatch")])
        self._checked.add(path)
        return prefix if prefix_until else None

    def _read_checked(self, path: str, ranges: list[tuple[int, memoryview]]) -> None:
        """Header and ``ranges`` of a shard in one request, then the size and header checks of
        :meth:`check_shard` on what came back (its precise error when they fail)."""
        header = self._planned_header(path)
        head = bytearray(len(header))
        try:
            size = self.store.read_into(path, [(0, memoryview(head)), *ranges])
        except NotFoundError:
            raise self._missing(path) from None
        except IntegrityError:
            self.check_shard(path)  # names what is wrong (truncated, grown) when it can
            raise
        if size is None:
            size = self.store.size(path)
        if size != self._shard(path)[0].size or head != header:
            self.check_shard(path)  # raises the size or header mismatch
            raise IntegrityError(f"{path}: changed while it was read; run `lamina verify`",
                                 [(path, "changed while read")])
        self._checked.add(path)

    def check_files(self, paths: Sequence[str]) -> None:
        """Size and header of each shard, in parallel, before anything is loaded."""
        # local: ~80 us of Python per shard around page-cache hits; a second thread only fights for the GIL
        run_parallel(self.check_shard, list(paths), self.max_workers if self.store.remote else 1)

    def _check_digests(self, path: str, filled: Sequence[tuple[TensorEntry, memoryview]]) -> None:
        """Each tensor's bytes against the manifest's XXH3-128 (entries without one: 1.0/1.1)."""
        for entry, buffer in filled:
            if entry.xxh3 is not None and tensor_digest(buffer) != entry.xxh3:
                raise IntegrityError(
                    f"{path}: tensor {entry.name!r} (bytes {entry.begin}..{entry.end}) does not match its checksum: "
                    f"expected XXH3-128 {entry.xxh3}, read {tensor_digest(buffer)}; the file was changed or "
                    f"corrupted in storage or transit — run `lamina verify`",
                    [(path, f"tensor {entry.name!r} checksum mismatch")])

    def tensors_in(self, path: str) -> list[TensorEntry]:
        """The manifest's tensors (weights and optimizer state) stored in ``path``."""
        return list(self._shard(path)[1])

    def extra_file(self, path: str) -> bytes | None:
        return self.read_file_verified(path) if self.view.file(path) is not None else None

    def read_file_verified(self, path: str) -> bytes:
        """A whole file, checked against its recorded size and content address (sha256 or lt1)."""
        recorded = self.view.file(path)
        if recorded is None:
            raise NotFoundError(f"no file {path!r} in the manifest of {self.store.location}")
        try:
            data = self.store.read(path, 0, recorded.size + 1)  # one byte more proves the file longer
        except NotFoundError:
            raise self._missing(path) from None
        algorithm, expected = recorded.digest
        hasher = file_hasher(algorithm)
        hasher.update(data)
        if len(data) != recorded.size or hasher.hexdigest() != expected:
            raise IntegrityError(f"{path}: content does not match the manifest's {algorithm}; run `lamina verify`",
                                 [(path, f"{algorithm} mismatch")])
        return data

    def read(
        self,
        entries: Sequence[TensorEntry],
        framework: str,
        destination: Callable[[TensorEntry], memoryview | None] = lambda e: None,
        device: Any = None,
    ) -> dict[str, Any]:
        """Read entries, grouped by file, files in parallel. ``destination`` may supply a buffer to
        fill in place (e.g. a module parameter); then the returned dict holds None for that entry.
        ``device``: the tensors end there (the adapter's ``to_device``), each file's as soon as it
        is read, so host memory holds the shards in flight rather than everything read."""
        out: dict[str, Any] = {}
        adapter = registry.get(framework)
        if device is not None:
            adapter.empty("U8", (0,), device)  # an unusable device is refused before any byte is read
        by_file: dict[str, list[TensorEntry]] = defaultdict(list)
        for e in entries:
            by_file[e.file].append(e)

        def load(path: str) -> None:
            self._shard(path, by_file[path][0].layer)  # this layer's record: no other is decoded
            one_request = False
            if self.store.remote and not self.verify and path not in self._checked:
                # Remote: when the wanted tensors follow the header without a gap (a whole layer),
                # one request brings header and data straight into the destination; the size (from
                # the response) and the header are checked before the bytes are used. Only for
                # modest layers: their buffers are allocated before the file has proven its size.
                spans = sorted((e.begin, e.end) for e in by_file[path] if e.nbytes)
                one_request = bool(spans) and spans[-1][1] <= _ONE_REQUEST_MAX and spans[0][0] == len(
                    self._planned_header(path)) and all(x[1] == y[0] for x, y in zip(spans, spans[1:]))
            if not one_request:
                self.check_shard(path)  # before allocating: sizes are now proven by the file itself
            ranges = []
            filled = []
            for e in by_file[path]:
                buffer = destination(e)
                if buffer is None:
                    out[e.name], buffer = allocate(e, framework, device)
                else:
                    out[e.name] = None
                filled.append((e, buffer))
                if e.nbytes:
                    ranges.append((e.begin, buffer))
            ranges.sort(key=lambda r: r[0])
            if one_request:
                self._read_checked(path, ranges)
            elif self.verify:
                data = memoryview(self.read_file_verified(path))
                for start, buffer in ranges:
                    buffer[:] = data[start : start + len(buffer)]
            else:
                self.store.read_into(path, ranges)
            if self.check_tensors:
                self._check_digests(path, filled)
            if device is not None:
                for e in by_file[path]:
                    if out[e.name] is not None:
                        out[e.name] = adapter.to_device(out[e.name], device)

        run_parallel(load, list(by_file), self.max_workers)
        return out
