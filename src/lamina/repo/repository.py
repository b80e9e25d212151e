"""Repo: versioned, content-addressed snapshots on any Store (format_spec/repository.md)."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lamina._errors import (
    ConflictError,
    ExistsError,
    FormatError,
    IntegrityError,
    NotFoundError,
)
from lamina._parallel import run_parallel
from lamina.format.codec import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    decode_manifest,
    open_manifest,
)
from lamina.format.manifest import FileEntry, Manifest
from lamina.format.repository import (
    REPO_MARKER,
    REPO_MARKER_BYTES,
    Revision,
    blob_path,
    check_ref_name,
    decode_revision,
    default_author,
    encode_revision,
    file_blob_path,
    head_path,
    is_sha256,
    revision_path,
    tag_path,
)
from lamina.hub.remote import hub_open, is_hub
from lamina.repo.blobs import BlobSnapshotStore
from lamina.repo.maintenance import (
    FsckReport,
    GcResult,
    check_repository,
    collect_garbage,
)
from lamina.repo.markers import GC_LOCK, HEARTBEAT, TTL, Marker, marker_live
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.cache import BlobCache, CachedSnapshotStore
from lamina.snapshot.open import open_snapshot, open_store_snapshot
from lamina.snapshot.transfer import Progress, PushResult, copy_snapshot, hashed_chunks
from lamina.storage.base import Store
from lamina.storage.local import LocalStore
from lamina.storage.locations import is_remote, open_store, split_ref

__all__ = ["Repo", "PushResult", "GcResult", "FsckReport"]



class _Counter:
    """Thread-safe upload accounting for one push."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.lock = threading.Lock()
        self.uploaded_bytes = self.uploaded_files = self.reused_bytes = self.reused_files = 0
        self.progress, self.total, self.done = progress, total, 0

    def add(self, size: int, uploaded: bool) -> None:
        with self.lock:
            if uploaded:
                self.uploaded_bytes += size
                self.uploaded_files += 1
            else:
                self.reused_bytes += size
                self.reused_files += 1
            self.done += size
            if self.progress is not None:
                self.progress(min(self.done, self.total), self.total)


class Repo:
    """A lamina repository: snapshots stored once per distinct file, revisions, branches and tags,
    on a local directory or any object store. Created on the first push.

    Args:
        location: a directory, ``s3://bucket/prefix``, ``memory://name``, ``http(s)://`` (read-only),
            or a :class:`Store`.
        storage_options: fsspec options for the backend (e.g. s3fs ``key``, ``secret``,
            ``client_kwargs={"endpoint_url": ...}``); by default the AWS conventions apply.
        cache: for remote repositories, a directory for whole files cached by sha256, ``True`` for
            the default (``$LAMINA_CACHE`` or ``~/.cache/lamina``), ``False`` for none.
        max_concurrency: parallel transfers (default: the backend's).

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> tmp = tempfile.mkdtemp()
        >>> repo = lamina.Repo(os.path.join(tmp, "repo"))
        >>> first = repo.save({"enc.w": np.zeros(4, "float32"), "dec.w": np.ones(4, "float32")}, message="init")
        >>> second = repo.save({"enc.w": np.zeros(4, "float32"), "dec.w": np.full(4, 2, "float32")}, tag="v2")
        >>> second.reused_files > 0, [r.message for r in repo.log("main")]
        (True, ['', 'init'])
        >>> repo.diff(first.revision, "v2").changed
        ['dec']
    """

    def __init__(self, location: str | os.PathLike[str] | Store, *, storage_options: Mapping[str, Any] | None = None,
                 cache: bool | str | os.PathLike[str] | None = None, max_concurrency: int | None = None) -> None:
        from lamina.storage.locations import is_remote, open_store

        if isinstance(location, Store):
            self.store = location
            remote = not isinstance(location, LocalStore)
        else:
            self.store = open_store(location, storage_options)
            remote = is_remote(location)
        self.location = self.store.location
        self.max_concurrency = max_concurrency or self.store.max_concurrency
        use_cache = remote if cache is None else bool(cache)
        root = cache if isinstance(cache, (str, os.PathLike)) else None
        self.cache = BlobCache(root) if use_cache else None

    #: seconds a push waits for a running garbage collection before a ConflictError
    gc_wait: float = TTL + HEARTBEAT
    #: seconds a garbage collection waits for pushes already running before a ConflictError
    push_drain_wait: float = TTL + HEARTBEAT

    def __repr__(self) -> str:
        return f"<lamina.Repo {self.location!r}>"

    # ------------------------------------------------------------------ refs
    def exists(self) -> bool:
        """Whether a repository has been created here."""
        return self.store.exists(REPO_MARKER)

    def _require(self) -> None:
        if not self.exists():
            raise NotFoundError(f"{self.location}: no lamina repository here (no {REPO_MARKER}); push to create one")

    def _ensure_created(self) -> None:
        if not self.store.exists(REPO_MARKER):
            if self.store.exists(MANIFEST_NAME):
                raise ExistsError(f"{self.location} holds a plain snapshot (manifest.msgpack); a repository cannot "
                                  f"be created over it. Push the snapshot into a repository elsewhere")
            self.store.compare_and_swap(REPO_MARKER, None, REPO_MARKER_BYTES)

    def _read_ref(self, path: str) -> str | None:
        try:
            text = self.store.read(path)
        except NotFoundError:
            return None
        value = text.decode("ascii", "replace").strip()
        if not is_sha256(value):
            raise FormatError(f"{self.location}/{path}: not a revision id: {text[:80]!r}")
        return value

    def _refs(self, prefix: str) -> dict[str, str]:
        out = {}
        for path in self.store.list(prefix):
            value = self._read_ref(path)
            if value is not None:
                out[path[len(prefix):]] = value
        return out

    def branches(self) -> dict[str, str]:
        """Branch name -> revision id."""
        return self._refs("refs/heads/")

    def tags(self) -> dict[str, str]:
        """Tag name -> revision id."""
        return self._refs("refs/tags/")

    def revision(self, ref: str = "main") -> Revision:
        """Resolve a branch, tag, revision id or unique id prefix (at least 7 hex digits)."""
        self._require()
        if not isinstance(ref, str) or not ref:
            raise FormatError(f"a ref must be a non-empty string, got {ref!r}")
        revision_id = None
        if not all(c in "0123456789abcdef" for c in ref) or len(ref) < 7:
            check_ref_name(ref)
            revision_id = self._read_ref(head_path(ref)) or self._read_ref(tag_path(ref))
            if revision_id is None:
                hint = ""
                if self.store.can_list:  # HTTP cannot list refs
                    known = sorted(self.branches()) + sorted(self.tags())
                    hint = f"; branches and tags: {', '.join(known) or '(none)'}"
                raise NotFoundError(f"{self.location}: unknown ref {ref!r}{hint}")
        elif len(ref) == 64:
            revision_id = ref
        else:
            matches = [p.rsplit("/", 1)[1] for p in self.store.list(f"revisions/{ref[:2]}")
                       if p.rsplit("/", 1)[1].startswith(ref)]
            if len(matches) != 1:
                raise NotFoundError(f"{self.location}: revision prefix {ref!r} matches "
                                    f"{'nothing' if not matches else ', '.join(m[:12] for m in matches)}")
            revision_id = matches[0]
        return self._load_revision(revision_id, f"{ref!r}")

    def _load_revision(self, revision_id: str, named: str) -> Revision:
        path = revision_path(revision_id)
        try:
            data = self.store.read(path)
        except NotFoundError:
            raise NotFoundError(f"{self.location}: {named} points at revision {revision_id[:12]}, which is missing "
                                f"(run `lamina fsck`)") from None
        return decode_revision(revision_id, data, f"{self.location}/{path}")

    def log(self, ref: str = "main", limit: int | None = None) -> list[Revision]:
        """History of ``ref``, newest first, following first parents."""
        out: list[Revision] = []
        current: Revision | None = self.revision(ref)
        while current is not None and (limit is None or len(out) < limit):
            out.append(current)
            current = self._load_revision(current.parent, f"the parent of {current.short_id}") if current.parent else None
        return out

    def tag(self, name: str, ref: str = "main", *, force: bool = False) -> Revision:
        """Create tag ``name`` at ``ref``. Tags do not move: an existing tag raises ExistsError
        unless ``force``."""
        path = tag_path(name)
        with self._push_marker():  # gc must not delete the revision between resolving and tagging it
            return self._tag(name, path, ref, force)

    def _tag(self, name: str, path: str, ref: str, force: bool) -> Revision:
        target = self.revision(ref)
        if self.store.exists(head_path(name)):
            raise ExistsError(f"{self.location}: {name!r} is a branch; a tag cannot share its name")
        current = self._read_ref(path)
        if current == target.id:
            return target
        if current is not None and not force:
            raise ExistsError(f"{self.location}: tag {name!r} exists (at {current[:12]}); pass force=True to move it")
        if not self.store.compare_and_swap(path, None if current is None else f"{current}\n".encode(),
                                           f"{target.id}\n".encode()):
            raise ConflictError(f"{self.location}: tag {name!r} changed while it was being set; retry")
        return target

    def delete_tag(self, name: str) -> None:
        self._delete_ref(tag_path(name), "tag", name)

    def delete_branch(self, name: str) -> None:
        self._delete_ref(head_path(name), "branch", name)

    def _delete_ref(self, path: str, kind: str, name: str) -> None:
        current = self._read_ref(path)
        if current is None:
            raise NotFoundError(f"{self.location}: no {kind} {name!r}")
        if not self.store.compare_and_swap(path, f"{current}\n".encode(), None):
            raise ConflictError(f"{self.location}: {kind} {name!r} changed while it was being deleted; retry")

    # ------------------------------------------------------------------ reading
    def _manifest_bytes(self, snapshot: str) -> bytes:
        path = blob_path(snapshot)
        try:
            data = self.store.read_limited(path, MAX_MANIFEST_BYTES)
        except NotFoundError:
            raise NotFoundError(f"{self.location}: snapshot {snapshot[:12]} is missing its manifest blob "
                                f"(run `lamina fsck`)") from None
        if hashlib.sha256(data).hexdigest() != snapshot:
            raise IntegrityError(f"{self.location}/{path}: blob bytes do not match its name",
                                 [(path, "sha256 mismatch")])
        return data

    def _snapshot(self, revision: Revision) -> tuple[bytes, Manifest]:
        data = self._manifest_bytes(revision.snapshot)
        return data, decode_manifest(data, f"{self.location}/{blob_path(revision.snapshot)}")

    def open(self, ref: str = "main", *, verify: bool | None = None) -> Artifact:
        """A revision as a lazy :class:`Artifact` (reads only the manifest until asked for tensors).

        Blobs are checked against their names as they are read: shard headers always, whole
        files' sha256 with ``verify=True``; remote repositories read whole shards through the cache.
        """
        revision = self.revision(ref)
        data = self._manifest_bytes(revision.snapshot)
        view = open_manifest(data, f"{self.location}/{blob_path(revision.snapshot)}")  # records decoded on use
        where = f"{self.location}@{ref}"
        store: Store = BlobSnapshotStore(self.store, revision.snapshot, view, where)
        if self.cache is not None:
            store = CachedSnapshotStore(store, view, self.cache)
        return Artifact(store, view, verify=verify, max_workers=self.max_concurrency)

    def diff(self, a: str, b: str) -> Any:
        """Per-layer differences from revision ``a`` to ``b`` (a :class:`lamina.SnapshotDiff`)."""
        from lamina.snapshot.diff import diff_manifests

        return diff_manifests(self._snapshot(self.revision(a))[1], self._snapshot(self.revision(b))[1],
                              f"{self.location}@{a}", f"{self.location}@{b}")

    def pull(self, ref: str, dst: str | os.PathLike[str], *, overwrite: bool = False,
             progress: Progress | None = None) -> Artifact:
        """Write revision ``ref`` as a plain snapshot directory at ``dst``, checking every file's
        sha256 as it arrives; ``dst`` appears only once complete."""
        revision = self.revision(ref)
        data, manifest = self._snapshot(revision)
        source = BlobSnapshotStore(self.store, revision.snapshot, manifest.files, f"{self.location}@{ref}")
        copy_snapshot(source, manifest, data, dst, where=f"{self.location}@{ref}", overwrite=overwrite,
                      progress=progress, max_workers=self.max_concurrency)
        return open_snapshot(dst)

    # ------------------------------------------------------------------ publishing
    def push(self, src: str | os.PathLike[str] | Artifact, branch: str = "main", *, message: str = "",
             tag: str | None = None, author: str | None = None, storage_options: Mapping[str, Any] | None = None,
             progress: Progress | None = None, allow_empty: bool = False) -> PushResult:
        """Publish a snapshot (a directory, a URI, or an open Artifact) as a new revision of ``branch``.

        Uploads only files the repository lacks (by content address, checking each file's bytes against
        its manifest entry while uploading), then the manifest, then the revision, then moves the
        branch with compare-and-swap. A snapshot that is already the branch head makes no new
        revision (with or without ``message``) unless ``allow_empty``.

        Raises:
            ConflictError: the branch moved during the push (another push won); nothing was published.
            ExistsError: ``tag`` exists at another revision.
            IntegrityError: a source file does not match its manifest entry.
        """
        artifact = src if isinstance(src, Artifact) else open_location(src, storage_options=storage_options)
        source = artifact._store
        manifest_bytes = artifact.manifest_bytes()  # the files uploaded are exactly the ones it lists

        def upload_all(counter: _Counter) -> None:
            def one(entry: FileEntry) -> None:
                where = f"{artifact.location}/{entry.path}"
                self._put_blob(file_blob_path(entry), entry.size,
                               lambda: hashed_chunks(source.iter_chunks(entry.path), entry, where), counter)
            run_parallel(one, list(artifact.manifest.files), self.max_concurrency)

        total = sum(f.size for f in artifact.manifest.files)
        return self._publish(upload_all, manifest_bytes, total, branch=branch, message=message, tag=tag,
                             author=author, progress=progress, allow_empty=allow_empty)

    def save(self, model_or_tensors: Any, branch: str = "main", *, message: str = "", tag: str | None = None,
             author: str | None = None, optimizer: Any = None, progress: Progress | None = None,
             **snapshot_options: Any) -> PushResult:
        """Save a model straight into the repository as a new revision of ``branch``, one layer at a
        time, without a local copy; unchanged layers are not uploaded again.

        Takes the arguments of :func:`lamina.save` (``optimizer``, ``info``, ``training``,
        ``files``, ``layer_of``) plus those of :meth:`push`.
        """
        from lamina.snapshot.build import collect_for_save

        collected, captured = collect_for_save(model_or_tensors, optimizer)
        return self.write_collected(collected, branch, optimizer=captured, message=message, tag=tag, author=author,
                                    progress=progress, **snapshot_options)

    def write_collected(self, collected: Any, branch: str | None = "main", *, message: str = "",
                        tag: str | None = None, author: str | None = None, progress: Progress | None = None,
                        move_tag: bool = False, **snapshot_options: Any) -> PushResult:
        """The repository end of the one writer path (``lamina.api.snapshots.fill_snapshot``); see
        :meth:`_publish` for ``branch=None`` and ``move_tag``."""
        from lamina.repo.writer import RepoWriter
        from lamina.snapshot.build import fill_snapshot

        if snapshot_options.pop("overwrite", None):
            raise FormatError(f"{self.location} is a repository: a save adds a revision and replaces nothing, "
                              f"so overwrite=True does not apply")
        if snapshot_options.pop("durable", True) is False and isinstance(self.store, LocalStore):
            self.store.durable = False  # the caller accepts losing this save to a power cut
        box: dict[str, bytes] = {}

        def upload_all(counter: _Counter) -> None:
            # A few layers in flight: each upload buffers up to one multipart part (s3fs: 50 MB).
            with RepoWriter(self, counter, max_workers=min(4, self.max_concurrency)) as writer:
                box["manifest"] = fill_snapshot(writer, collected, progress=progress, **snapshot_options)

        return self._publish(upload_all, None, 0, branch=branch, message=message, tag=tag, author=author,
                             progress=None, manifest_box=box, move_tag=move_tag)

    def _put_blob(self, path: str, size: int, chunks: Callable[[], Iterable[Any]], counter: _Counter) -> None:
        """Upload a blob unless the repository holds it (blob paths are content addresses)."""
        if self.store.exists(path):
            counter.add(size, False)
            return
        self.store.write(path, chunks())
        counter.add(size, True)

    def _publish(self, upload_all: Callable[[_Counter], None], manifest_bytes: bytes | None, total: int, *,
                 branch: str | None, message: str, tag: str | None, author: str | None, progress: Progress | None,
                 manifest_box: dict[str, bytes] | None = None, move_tag: bool = False,
                 allow_empty: bool = False) -> PushResult:
        """Upload (``upload_all``), then the manifest and revision, then move the branch and set the
        tag. ``branch=None`` publishes a revision reachable only from ``tag`` (checkpoints: no
        history chain, so dropping the tag frees its blobs); ``move_tag`` lets that tag move. An
        unchanged head gets no new revision unless ``allow_empty`` (a message alone makes none)."""
        if not isinstance(message, str):
            raise FormatError(f"message must be a string, got {type(message).__name__}")
        if branch is None and tag is None:
            raise FormatError("publishing without a branch needs a tag")
        branch_ref = head_path(branch) if branch is not None else None
        if tag is not None:
            check_ref_name(tag, "tag")
            if self.store.exists(head_path(tag)):
                raise ExistsError(f"{self.location}: {tag!r} is a branch; a tag cannot share its name")
        if branch is not None and self.store.exists(tag_path(branch)):
            raise ExistsError(f"{self.location}: {branch!r} is a tag; push to a branch")
        self._ensure_created()
        parent = self._read_ref(branch_ref) if branch_ref is not None else None
        existing_tag = self._read_ref(tag_path(tag)) if tag is not None else None
        if existing_tag is not None and not move_tag and (parent is None or existing_tag != parent):
            # Refuse before uploading anything (only re-tagging an unchanged head can still succeed).
            raise ExistsError(f"{self.location}: tag {tag!r} exists (at {existing_tag[:12]}); nothing was "
                              f"published; choose another tag")
        counter = _Counter(progress, total)
        with self._push_marker():
            upload_all(counter)
            if manifest_box is not None:
                manifest_bytes = manifest_box["manifest"]
            assert manifest_bytes is not None
            snapshot = hashlib.sha256(manifest_bytes).hexdigest()
            self._put_blob(blob_path(snapshot), len(manifest_bytes), lambda: [manifest_bytes], counter)
            parent_rev = self._load_revision(parent, f"branch {branch!r}") if parent else None
            created = parent_rev is None or parent_rev.snapshot != snapshot or allow_empty
            if created:
                revision_id, data = encode_revision(snapshot, (parent,) if parent else (), message,
                                                    author or default_author())
                if not self.store.exists(revision_path(revision_id)):
                    self.store.write(revision_path(revision_id), data)
            else:
                revision_id = parent  # type: ignore[assignment]
                if branch_ref is not None and self._read_ref(branch_ref) != parent:
                    raise ConflictError(f"{self.location}: branch {branch!r} moved during this push (another push "
                                        f"won); nothing was published. Re-read the branch and push again")
            if existing_tag is not None and existing_tag != revision_id and not move_tag:
                raise ExistsError(f"{self.location}: tag {tag!r} exists (at {existing_tag[:12]}); nothing was "
                                  f"published; choose another tag")
            if branch_ref is not None and created and not self.store.compare_and_swap(
                    branch_ref, None if parent is None else f"{parent}\n".encode(), f"{revision_id}\n".encode()):
                now = self._read_ref(branch_ref)
                raise ConflictError(f"{self.location}: branch {branch!r} moved from {parent[:12] if parent else 'nothing'} "
                                    f"to {now[:12] if now else 'nothing'} during this push (another push won); nothing "
                                    f"was published. Pull or re-read the branch and push again")
            if tag is not None and existing_tag != revision_id:
                expected = None if existing_tag is None else f"{existing_tag}\n".encode()
                if not self.store.compare_and_swap(tag_path(tag), expected, f"{revision_id}\n".encode()):
                    where = f"the branch moved to {revision_id[:12]}, " if branch_ref is not None else ""
                    raise ExistsError(f"{self.location}: tag {tag!r} was set by someone else during this push; "
                                      f"{where}the tag was not set")
        return PushResult(revision=revision_id, snapshot=snapshot, branch=branch, parent=parent, tag=tag,
                          created=created, uploaded_bytes=counter.uploaded_bytes,
                          uploaded_files=counter.uploaded_files, reused_bytes=counter.reused_bytes,
                          reused_files=counter.reused_files)

    # ------------------------------------------------------------------ markers
    @contextmanager
    def _push_marker(self) -> Iterator[None]:
        """Register a push for its whole duration (repository.md §6). A push that finds a
        collection running steps back (removes its marker, so the collection is not kept waiting
        for it) and leaves a ``locks/wait-`` marker, which makes the next collection let it go
        first; it waits up to ``gc_wait`` seconds (a killed collection's marker expires within a
        minute), then is a ConflictError."""
        deadline = time.monotonic() + self.gc_wait
        waiting: Marker | None = None
        try:
            while True:
                marker = Marker(self.store, f"locks/push-{secrets.token_hex(8)}")
                marker.acquire()
                if not marker_live(self.store, GC_LOCK):
                    break
                marker.release()
                if waiting is None:
                    waiting = Marker(self.store, f"locks/wait-{secrets.token_hex(8)}")
                    waiting.acquire()
                while marker_live(self.store, GC_LOCK):
                    if time.monotonic() >= deadline:
                        raise ConflictError(f"{self.location}: garbage collection is running; push again when it ends")
                    time.sleep(0.1)
        finally:
            if waiting is not None:
                waiting.release()
        try:
            yield
        finally:
            marker.release()

    # ------------------------------------------------------------------ maintenance
    def gc(self, *, dry_run: bool = False) -> GcResult:
        """Delete every blob and revision no ref can reach (history of a ref counts as reachable),
        and nothing else. Pushes already running are waited for (up to ``push_drain_wait``
        seconds); pushes that start meanwhile wait for the collection to end."""
        return collect_garbage(self, dry_run=dry_run)

    def fsck(self, *, full: bool = False) -> FsckReport:
        """Check refs, revisions, manifests and blob sizes (``full``: every blob's sha256 too)."""
        return check_repository(self, full=full)


def open_location(location: str | os.PathLike[str], *, verify: bool | None = None,
                  storage_options: Mapping[str, Any] | None = None, cache: bool | str | os.PathLike[str] | None = None,
                  max_concurrency: int | None = None) -> Artifact:
    """Any snapshot lamina can name: a directory or URI, ``repo[@ref]``, or ``hf://org/name[@rev]``
    (what :func:`lamina.open` documents)."""
    if is_hub(location):
        return hub_open(os.fspath(location), verify=verify, cache=cache, max_concurrency=max_concurrency)
    base, ref = split_ref(location)
    remote = is_remote(base)
    store = open_store(base, storage_options)
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise NotFoundError(f"{base}: no such snapshot directory")
    if ref is None:
        artifact = open_store_snapshot(store, remote=remote, verify=verify, cache=cache,
                                       max_concurrency=max_concurrency)
        if artifact is not None:
            return artifact
    if store.exists(REPO_MARKER):
        repo = Repo(store, cache=cache if remote else False, max_concurrency=max_concurrency)
        return repo.open(ref or "main", verify=verify)
    if ref is not None:
        raise NotFoundError(f"{base}: no lamina repository here (no {REPO_MARKER}), so {ref!r} names nothing")
    raise NotFoundError(f"{store.location}: no {MANIFEST_NAME}; not a lamina snapshot (or an interrupted save)")
