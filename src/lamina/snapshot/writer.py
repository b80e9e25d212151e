"""Snapshot writers. ``SnapshotWriter`` lays out shards and files (shared by every destination);
``DirectoryWriter`` streams them into a temporary directory beside the target, writes the manifest
last, then moves the directory into place atomically.

A killed save leaves at most a hidden ``.<name>.lamina-tmp-<pid>-<hex>`` sibling (swept by the next
save to the same target once its process is gone); the target is either the previous snapshot,
the new one, or — only between the two renames of the non-Linux fallback — absent.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lamina._errors import ExistsError, FormatError, StorageError
from lamina._parallel import default_workers, run_parallel
from lamina.format.codec import MANIFEST_NAME, encode_manifest
from lamina.format.digests import Lt1, tensor_digest
from lamina.format.manifest import FileEntry, Manifest, TensorEntry
from lamina.format.naming import encode_layer
from lamina.format.shards import plan_shard
from lamina.frameworks.base import TensorSource
from lamina.storage.local import fsync_path as _fsync
from lamina.storage.local import open_regular, os_errors_as_storage_errors, pid_alive
from lamina.storage.paths import check_relative_path

__all__ = ["SnapshotWriter", "DirectoryWriter", "atomic_file_write", "check_file_destination", "INDEX_NAME", "WEIGHTS_DIR", "OPTIMIZER_DIR", "RESERVED_TOP_LEVEL"]

INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_DIR = "weights"
OPTIMIZER_DIR = "optimizer"
RESERVED_TOP_LEVEL = frozenset({MANIFEST_NAME, INDEX_NAME, WEIGHTS_DIR, OPTIMIZER_DIR})
_CHUNK = 64 << 20  # bounds each write() call; also the unit handed to the hashing thread


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unavailable."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a path component is a file, or no permission
        raise ExistsError(f"cannot create the directory {path.parent}: {exc.strerror}") from None


def check_file_destination(dst: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse a destination file that exists (unless ``overwrite``) or is not a regular file."""
    dst = Path(dst)
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise ExistsError(f"{dst} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        if not dst.is_file() or dst.is_symlink():
            raise ExistsError(f"{dst} exists and is not a regular file; refusing to replace it")
    return dst


def atomic_file_write(dst: str | os.PathLike[str], write: Callable[[Path], None], *, overwrite: bool) -> Path:
    """Create one file atomically: ``write(tmp)`` fills a temporary file, which is renamed to
    ``dst``; on any error it is removed and ``dst`` is untouched. The temporary file has ``dst``'s
    own name (inside a hidden sibling directory): some writers record it (torch.save names its
    archive's root folder after the file's stem)."""
    dst = check_file_destination(dst, overwrite=overwrite)
    _make_parent(dst)  # only now, once the content is ready: a failed export leaves no folders
    tmp_dir = dst.parent / f".{dst.name}.lamina-tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with os_errors_as_storage_errors(f"cannot write {dst}"):
            tmp_dir.mkdir()
            write(tmp_dir / dst.name)
            os.replace(tmp_dir / dst.name, dst)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return dst


def _exact_bytes(source: TensorSource, nbytes: int) -> memoryview:
    """A source's bytes, refused unless they are exactly what its dtype and shape need (an adapter
    handing over part of a tensor must never become a shard whose header promises all of it)."""
    data = source.buffer()
    if data.nbytes != nbytes:
        raise FormatError(f"tensor {source.name!r}: {data.nbytes} bytes for {source.dtype.code}{list(source.shape)}, "
                          f"which needs {nbytes}")
    return data


class SnapshotWriter:
    """What every snapshot writer shares: one shard per layer, extra files, the file table.

    Subclasses decide where bytes go (:class:`DirectoryWriter`: a local directory committed by a
    rename; the repository writer: content-addressed blobs) by implementing ``_put`` and
    ``commit``. Use as a context manager; call ``commit`` last.

    Args:
        max_workers: shards written (and hashed) at once; peak extra memory is about this many
            layers for tensors that need a copy (GPU or non-contiguous), none otherwise.
        on_shard: called with each written shard's size (progress).
        after_shard: called with each written shard's sources (e.g. to drop mapped pages).
    """

    def __init__(self, *, max_workers: int | None = None, on_shard: Callable[[int], None] | None = None,
                 after_shard: Callable[[Sequence[TensorSource]], None] | None = None) -> None:
        self.files: list[FileEntry] = []
        self.manifest: Manifest | None = None  # set by the caller once laid out
        self.max_workers = max_workers or default_workers()
        self.on_shard = on_shard
        self.after_shard = after_shard

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _put(self, relpath: str, chunks: Callable[[], Iterable[memoryview | bytes]], role: str) -> FileEntry:
        """Store one file; ``chunks()`` yields its bytes (and may be called again for a second pass)."""
        raise NotImplementedError

    def commit(self, manifest: Manifest) -> bytes:
        """Publish the snapshot, the manifest last; returns the manifest's bytes."""
        raise NotImplementedError

    def write_shards(
        self, directory: str, layers: Sequence[tuple[str, Sequence[tuple[str, TensorSource]]]], role: str
    ) -> list[TensorEntry]:
        """Write one shard per ``(layer, [(key in shard, source), ...])``, several at a time.

        Returns the index entries, layers in the given order; the file table keeps that order
        too, so the manifest does not depend on thread timing.
        """
        relpaths = [f"{directory}/{encode_layer(layer)}.safetensors" for layer, _ in layers]
        taken = {f.path for f in self.files}
        for relpath in relpaths:
            if relpath in taken:
                raise FormatError(f"two layers map to the shard file {relpath!r}; rename one of them")
            taken.add(relpath)

        def write(job: tuple[str, tuple[str, Sequence[tuple[str, TensorSource]]]]) -> tuple[FileEntry, list[TensorEntry]]:
            relpath, (layer, tensors) = job
            by_key = dict(tensors)
            header, planned = plan_shard([(k, s.dtype.code, s.shape) for k, s in tensors])
            data = {e.name: _exact_bytes(by_key[e.name], e.nbytes) for e in planned if e.nbytes}
            # before any byte is written; an empty tensor's source is never asked for bytes
            digests = {e.name: tensor_digest(data.get(e.name, b"")) for e in planned}
            chunks = [header] + [data[e.name] for e in planned if e.nbytes]
            entry = self._put(relpath, lambda: chunks, role)
            if self.after_shard is not None:
                self.after_shard([s for _, s in tensors])
            if self.on_shard is not None:
                self.on_shard(entry.size)
            return entry, [TensorEntry(e.name, e.dtype, e.shape, e.begin, e.end, layer=layer, file=relpath,
                                       xxh3=digests[e.name]) for e in planned]

        results = run_parallel(write, list(zip(relpaths, layers)), self.max_workers)
        self.files += [file for file, _ in results]
        return [t for _, entries in results for t in entries]

    def write_file(self, relpath: str, data: bytes | os.PathLike[str] | Mapping[str, Any], role: str = "extra") -> None:
        """Write an extra file: bytes, a path to copy, or a mapping written as JSON."""
        check_relative_path(relpath, f"files[{relpath!r}]")
        if role == "extra" and relpath.split("/", 1)[0] in RESERVED_TOP_LEVEL:
            raise FormatError(f"files[{relpath!r}]: {relpath.split('/', 1)[0]!r} is reserved by the lamina layout")
        if any(f.path == relpath for f in self.files):
            raise FormatError(f"files[{relpath!r}]: written twice")
        if isinstance(data, (bytes, bytearray, memoryview)):
            content = bytes(data)
            self.files.append(self._put(relpath, lambda: [content], role))
        elif isinstance(data, os.PathLike):
            src = Path(data)
            if not src.is_file():
                raise FormatError(f"files[{relpath!r}]: {src} is not a readable file")

            def read_file() -> Iterator[bytes]:
                with open_regular(src, f"files[{relpath!r}]: {src}") as f:
                    yield from iter(lambda: f.read(_CHUNK), b"")
            self.files.append(self._put(relpath, read_file, role))
        elif isinstance(data, Mapping):
            text = (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
            self.files.append(self._put(relpath, lambda: [text], role))
        else:
            raise FormatError(f"files[{relpath!r}]: expected bytes, a pathlib.Path or a JSON-able dict, "
                              f"got {type(data).__name__}")


class DirectoryWriter(SnapshotWriter):
    """Write one snapshot directory atomically: every file into a temporary directory beside the
    target, the manifest last, then one rename into place.

    Args:
        target: the snapshot directory to create (or replace, with ``overwrite``).
        overwrite: replace an existing snapshot (an empty directory also counts); any other
            existing path is refused, so a typo cannot delete unrelated data.
        durable: fsync files and directories before the commit, so a power loss cannot leave a
            manifest that points at unwritten data.
        **kwargs: see :class:`SnapshotWriter`.
    """

    def __init__(self, target: str | os.PathLike[str], *, overwrite: bool = False, durable: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = Path(target).absolute()
        self.overwrite = overwrite
        self.durable = durable
        self._tmp: Path | None = None
        self._written: list[Path] = []

    # -------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> DirectoryWriter:
        self._check_target()
        _make_parent(self.target)
        self._sweep_stale()
        self._tmp = self.target.parent / f".{self.target.name}.lamina-tmp-{os.getpid()}-{secrets.token_hex(4)}"
        with self._storage_errors():
            self._tmp.mkdir()
        return self

    def _storage_errors(self) -> Any:
        """A full disk or a permission error while writing: a StorageError naming the target (the
        temporary directory is removed on the way out, so nothing is left behind)."""
        return os_errors_as_storage_errors(f"cannot write the snapshot {self.target}")

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None and self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)

    def _check_target(self) -> None:
        t = self.target
        if not (t.exists() or t.is_symlink()):
            return
        if not self.overwrite:
            raise ExistsError(f"{t} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
        if not t.is_dir() or t.is_symlink() or (any(t.iterdir()) and not (t / MANIFEST_NAME).is_file()):
            raise ExistsError(f"{t} exists and is not a lamina snapshot; refusing to replace it")

    def _sweep_stale(self) -> None:
        """Remove temp/trash siblings left by killed saves of the same target."""
        for prefix in (f".{self.target.name}.lamina-tmp-", f".{self.target.name}.lamina-old-"):
            for stale in self.target.parent.glob(prefix + "*"):
                pid = stale.name[len(prefix):].split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    shutil.rmtree(stale, ignore_errors=True)

    # -------------------------------------------------------------------------- content
    def _dest(self, relpath: str) -> Path:
        assert self._tmp is not None, "use DirectoryWriter as a context manager"
        dest = self._tmp / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def _put(self, relpath: str, chunks: Callable[[], Iterable[memoryview | bytes]], role: str,
             expected: FileEntry | None = None) -> FileEntry:
        """Write chunks to relpath, hashing as it goes (both release the GIL, so shards written
        on several threads hash in parallel). Returns the entry; the caller records it.
        ``expected``: the entry of a file being copied, whose chunks the caller checks against it
        (``transfer.hashed_chunks``); it is returned and nothing is hashed twice."""
        with self._storage_errors():
            return self._write_file(relpath, chunks, role, expected)

    def _write_file(self, relpath: str, chunks: Callable[[], Iterable[memoryview | bytes]], role: str,
                    expected: FileEntry | None = None) -> FileEntry:
        digest = Lt1() if expected is None else None
        size = 0
        dest = self._dest(relpath)
        with open(dest, "wb", buffering=0) as f:
            for chunk in chunks():
                view = memoryview(chunk).cast("B")
                for start in range(0, len(view), _CHUNK):
                    piece = view[start : start + _CHUNK]
                    if digest is not None:
                        digest.update(piece)
                    written = 0
                    while written < len(piece):
                        written += f.write(piece[written:])
                    size += len(piece)
        self._written.append(dest)
        if digest is None:
            assert expected is not None
            return expected
        return FileEntry(path=relpath, size=size, sha256=None, role=role, lt1=digest.hexdigest())

    # -------------------------------------------------------------------------- commit
    def commit(self, manifest: Manifest, data: bytes | None = None) -> bytes:
        """Write the manifest (the commit point) and move the snapshot into place. ``data``: the
        manifest's exact bytes when copying a snapshot (default: encode ``manifest``)."""
        with self._storage_errors():
            return self._commit(manifest, data)

    def _commit(self, manifest: Manifest, data: bytes | None) -> bytes:
        assert self._tmp is not None
        if self.durable:  # all at once: the device flushes many files faster than one by one
            run_parallel(_fsync, self._written, 8)
        if data is None:
            data = encode_manifest(manifest)
        part = self._tmp / f"{MANIFEST_NAME}.part"
        with open(part, "wb") as f:
            f.write(data)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        if self.durable:
            for sub in (WEIGHTS_DIR, OPTIMIZER_DIR):
                if (self._tmp / sub).is_dir():
                    _fsync(self._tmp / sub)
        os.replace(part, self._tmp / MANIFEST_NAME)
        if self.durable:
            _fsync(self._tmp)
        self._move_into_place()
        if self.durable:
            _fsync(self.target.parent)
        return data

    def _move_into_place(self) -> None:
        assert self._tmp is not None
        target = self.target
        try:
            if not (target.exists() or target.is_symlink()):
                os.rename(self._tmp, target)
                return
            if _exchange(self._tmp, target):  # self._tmp now holds the old snapshot
                shutil.rmtree(self._tmp, ignore_errors=True)
                return
            trash = target.parent / f".{target.name}.lamina-old-{os.getpid()}-{secrets.token_hex(4)}"
            os.rename(target, trash)
            os.rename(self._tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        except OSError as exc:
            raise StorageError(f"could not move the new snapshot into {target}: {exc.strerror or exc}") from None
