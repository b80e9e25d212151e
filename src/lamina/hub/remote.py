"""The Hugging Face Hub as a home for snapshots: push (one commit), lazy reads (range requests on
``resolve`` URLs), pull (through huggingface_hub's cache, so ``HF_HUB_OFFLINE=1`` works).

A snapshot goes to the hub unchanged: the hub versions it by git commit, and since it carries a
``model.safetensors.index.json`` with ``{"format": "pt"}`` shards, transformers loads it directly.
Locations are ``hf://<org>/<name>[@<revision>]`` (models only).
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lamina._errors import (
    ConflictError,
    ExistsError,
    FormatError,
    LaminaError,
    NotFoundError,
    StorageError,
)
from lamina.format.codec import MANIFEST_NAME
from lamina.format.manifest import FileEntry
from lamina.hub.card import CARD_PATH, is_generated, model_card
from lamina.hub.errors import hub_errors, unreachable_hub
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.open import open_snapshot
from lamina.snapshot.reader import read_manifest
from lamina.snapshot.transfer import Progress, PushResult, copy_snapshot, hashed_chunks
from lamina.storage.local import LocalStore

__all__ = ["is_hub", "parse_hub", "hub_push", "hub_open", "hub_pull"]

_CARD_LIMIT = 1 << 20  # a README.md larger than this is not read: never ours to replace
_HUB = re.compile(r"^hf://(?:models/)?([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(.+))?/?\Z")


def is_hub(location: str | os.PathLike[str]) -> bool:
    return os.fspath(location).startswith("hf://")


def parse_hub(location: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``hf://org/name@rev`` -> ``("org/name", "rev")``."""
    match = _HUB.match(os.fspath(location))
    if match is None:
        raise FormatError(f"{location}: a hub location is hf://<org>/<name>[@<revision>] (models only)")
    return match.group(1), match.group(2)


def _api(token: str | None, endpoint: str | None) -> Any:
    try:
        from huggingface_hub import HfApi, constants
    except ImportError:
        raise FormatError("hf:// needs huggingface_hub: pip install 'lamina[hub]'") from None
    return HfApi(endpoint=endpoint or constants.ENDPOINT, token=token)


def _git_blob_sha1(data: bytes) -> str:
    """The id git (and the hub) gives a regular file's content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_push(artifact: Artifact, location: str, *, revision: str | None = None, message: str = "",
             tag: str | None = None, private: bool = False, token: str | None = None, endpoint: str | None = None,
             progress: Progress | None = None, card: bool = True) -> PushResult:
    """One commit holding the snapshot; only files the branch does not already hold are sent, each
    checked against the manifest first (a local snapshot's files by path; others staged in a
    temporary directory, so memory stays bounded).

    With ``card`` (default) the same commit creates or updates ``README.md`` from the snapshot's
    info (:mod:`lamina.hub.card`), unless the snapshot carries its own ``README.md`` (pushed as it
    is) or the branch holds one that lamina did not generate (left alone). The card is not counted
    in the result's uploaded bytes and files, which describe the snapshot."""
    import tempfile

    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    repo_id, at = parse_hub(location)
    branch = revision or at or "main"
    # ``lamina.push`` opens the source, wherever it lives (one opening path: repo.open_location).
    source = artifact._store.source()
    manifest_bytes = artifact.manifest_bytes()
    snapshot = hashlib.sha256(manifest_bytes).hexdigest()
    api = _api(token, endpoint)
    # before anything reaches the hub: a card field of the wrong type is refused with nothing created
    own_card = any(f.path == CARD_PATH for f in artifact.manifest.files)
    generated = model_card(artifact, repo_id, snapshot) if card and not own_card else None
    with hub_errors(repo_id, "push"), tempfile.TemporaryDirectory(prefix="lamina-hub-") as staging:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if tag is not None and any(t.name == tag for t in api.list_repo_refs(repo_id).tags):
            raise ExistsError(f"hf://{repo_id}: tag {tag!r} exists; nothing was pushed")
        parent, remote, branch_exists = _remote_state(api, repo_id, branch)
        previous = _remote_manifest_paths(api, repo_id, parent, remote)
        wanted = {f.path: f for f in artifact.manifest.files}
        operations: list[Any] = []
        uploaded = reused = uploaded_files = reused_files = 0
        for f in artifact.manifest.files:
            if _unchanged(remote.get(f.path), f, lambda f=f: source.read(f.path),
                          lambda f=f: _streamed_sha256(source, f.path)):
                reused += f.size
                reused_files += 1
                continue
            path = _checked_file(source, f, Path(staging), f"{artifact.location}/{f.path}")
            operations.append(CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=path))
            uploaded += f.size
            uploaded_files += 1
        manifest_entry = FileEntry(MANIFEST_NAME, len(manifest_bytes), snapshot, "manifest")
        if not _unchanged(remote.get(MANIFEST_NAME), manifest_entry, lambda: manifest_bytes):
            operations.append(CommitOperationAdd(path_in_repo=MANIFEST_NAME, path_or_fileobj=manifest_bytes))
            uploaded += len(manifest_bytes)
            uploaded_files += 1
        keep = {MANIFEST_NAME}
        if generated is not None:
            keep.add(CARD_PATH)  # replaced below, or a card someone wrote: never deleted
            if _card_replaceable(api, repo_id, parent, remote.get(CARD_PATH), previous, generated):
                operations.append(CommitOperationAdd(path_in_repo=CARD_PATH, path_or_fileobj=generated))
        operations += [CommitOperationDelete(path_in_repo=p) for p in sorted(previous - set(wanted) - keep)
                       if p in remote]
        if not operations:
            commit = parent
        else:
            if not branch_exists:  # only now: a refused push leaves no branch behind
                api.create_branch(repo_id, branch=branch, revision=parent, exist_ok=True)
            info = api.create_commit(repo_id, operations, commit_message=message or f"lamina snapshot {snapshot[:12]}",
                                     revision=branch, parent_commit=parent)
            commit = info.oid
        if progress is not None:
            progress(uploaded + reused, uploaded + reused)
    if tag is not None:
        try:
            with hub_errors(repo_id, f"tag the new commit {str(commit)[:12]} (the commit itself succeeded)"):
                api.create_tag(repo_id, tag=tag, revision=commit)
        except ConflictError:
            raise ExistsError(f"hf://{repo_id}: tag {tag!r} was created by someone else meanwhile; the commit "
                              f"{str(commit)[:12]} was pushed to {branch!r}, the tag was not set") from None
    return PushResult(revision=commit or "", snapshot=snapshot, branch=branch, parent=parent, tag=tag,
                      created=bool(operations), uploaded_bytes=uploaded, uploaded_files=uploaded_files,
                      reused_bytes=reused, reused_files=reused_files)


def _remote_state(api: Any, repo_id: str, branch: str) -> tuple[str | None, dict[str, Any], bool]:
    """(head commit or None, {path: RepoFile}, whether the branch exists); a missing branch is
    read as ``main``, where it will start."""
    from huggingface_hub.errors import RevisionNotFoundError

    exists = True
    try:
        head = api.repo_info(repo_id, revision=branch).sha
    except RevisionNotFoundError:
        if branch == "main":
            return None, {}, True
        exists = False
        head = api.repo_info(repo_id, revision="main").sha
    if head is None:
        return None, {}, exists
    files = {e.path: e for e in api.list_repo_tree(repo_id, revision=head, recursive=True)
             if getattr(e, "blob_id", None) is not None}
    return head, files, exists


def _remote_manifest_paths(api: Any, repo_id: str, head: str | None, remote: Mapping[str, Any]) -> set[str]:
    """Files the branch's current lamina snapshot lists (to delete those the new one drops)."""
    if head is None or MANIFEST_NAME not in remote:
        return set()
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, MANIFEST_NAME, revision=head, endpoint=api.endpoint, token=api.token)
    try:
        manifest = read_manifest(LocalStore(Path(path).parent), Path(path).name)[1]
    except FormatError:
        return set()  # not ours to interpret: replace nothing but what we add
    return {f.path for f in manifest.files}


def _card_replaceable(api: Any, repo_id: str, head: str | None, remote: Any, previous: set[str],
                      generated: bytes) -> bool:
    """Whether to write ``generated`` as README.md: none there yet, or one that differs and was
    generated by lamina or shipped by the branch's previous snapshot (never a card a person wrote)."""
    if remote is None:
        return True
    if _unchanged(remote, FileEntry(CARD_PATH, len(generated), hashlib.sha256(generated).hexdigest(), "extra"),
                  lambda: generated):
        return False
    if CARD_PATH in previous:
        return True
    if remote.size > _CARD_LIMIT or head is None:
        return False
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id, CARD_PATH, revision=head, endpoint=api.endpoint, token=api.token)
    return is_generated(Path(path).read_bytes())


def _unchanged(remote: Any, entry: Any, content: Callable[[], bytes],
               sha256: Callable[[], str] | None = None) -> bool:
    if remote is None or remote.size != entry.size:
        return False
    if remote.lfs is not None:
        # the hub addresses LFS files by sha256; a 1.3 entry is addressed by lt1, so its bytes are
        # hashed here, only when the sizes already match
        return remote.lfs.sha256 == (entry.sha256 or (sha256() if sha256 else hashlib.sha256(content()).hexdigest()))
    return remote.blob_id == _git_blob_sha1(content())


def _streamed_sha256(source: Any, path: str) -> str:
    sha = hashlib.sha256()
    for chunk in source.iter_chunks(path):
        sha.update(chunk)
    return sha.hexdigest()


def _checked_file(source: Any, entry: FileEntry, staging: Path, where: str) -> str:
    """A local path holding ``entry``'s bytes, checked against its size and sha256: the snapshot's
    own file when it is a local directory (read once to check), else a copy streamed into
    ``staging``."""
    root = getattr(source, "root", None)
    if isinstance(root, Path) and (root / entry.path).is_file():
        for _ in hashed_chunks(source.iter_chunks(entry.path), entry, where):
            pass
        return str(root / entry.path)
    target = staging / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        for chunk in hashed_chunks(source.iter_chunks(entry.path), entry, where):
            f.write(chunk)
    return str(target)


def _resolve(api: Any, repo_id: str, revision: str | None) -> str:
    with hub_errors(repo_id, "resolve the revision"):
        sha = api.repo_info(repo_id, revision=revision or "main").sha
    if sha is None:
        raise NotFoundError(f"hf://{repo_id}: the repository is empty")
    return sha


def hub_open(location: str, *, verify: bool | None = None, cache: Any = None, max_concurrency: int | None = None,
             token: str | None = None, endpoint: str | None = None) -> Artifact:
    """A lazy Artifact over the hub: the revision pinned to its commit, then range requests."""
    from huggingface_hub import constants
    from huggingface_hub.utils import build_hf_headers

    from lamina.storage.http_store import HttpStore

    repo_id, revision = parse_hub(location)
    if constants.HF_HUB_OFFLINE:
        local = LocalStore(_download(repo_id, revision, token, endpoint, offline=True))
        local.can_list = False  # the hub adds files of its own (.gitattributes); only the manifest's count
        local.location = f"hf://{repo_id}@{revision or 'main'} (offline: {local.root})"
        return Artifact(local, read_manifest(local)[1], verify=verify)
    api = _api(token, endpoint)
    commit = _resolve(api, repo_id, revision)
    store = HttpStore(f"{api.endpoint}/{repo_id}/resolve/{commit}", headers=build_hf_headers(token=token))
    store.location = f"hf://{repo_id}@{revision or 'main'}"
    with hub_errors(repo_id, "read the manifest"):
        manifest = read_manifest(store)[1]
    view: Any = store
    if cache is not False:
        from lamina.snapshot.cache import BlobCache, CachedSnapshotStore

        view = CachedSnapshotStore(store, manifest.files, BlobCache(cache if isinstance(cache, (str, os.PathLike)) else None))
    return Artifact(view, manifest, verify=verify, max_workers=max_concurrency)


def _download(repo_id: str, revision: str | None, token: str | None, endpoint: str | None, offline: bool) -> str:
    """The snapshot's files only (the manifest first, then what it lists) through huggingface_hub's
    cache; other files of the hub repository are not downloaded."""
    from huggingface_hub import constants, hf_hub_download, snapshot_download

    endpoint = endpoint or constants.ENDPOINT
    with hub_errors(repo_id, "download"):
        manifest_path = hf_hub_download(repo_id, MANIFEST_NAME, revision=revision or "main", token=token,
                                        endpoint=endpoint, local_files_only=offline)
        manifest = read_manifest(LocalStore(Path(manifest_path).parent), Path(manifest_path).name)[1]
        return snapshot_download(repo_id, revision=revision or "main", token=token, endpoint=endpoint,
                                 local_files_only=offline, allow_patterns=[glob.escape(p) for p in (MANIFEST_NAME, *(f.path for f in manifest.files))])


def hub_pull(location: str, dst: str | os.PathLike[str], *, overwrite: bool = False, token: str | None = None,
             endpoint: str | None = None, progress: Progress | None = None) -> Artifact:
    """Download through huggingface_hub's cache (reused, and enough offline), then write ``dst``
    as a plain snapshot directory, checking every file against the manifest."""
    from huggingface_hub import constants

    repo_id, revision = parse_hub(location)
    offline = bool(constants.HF_HUB_OFFLINE)
    if not offline:
        # Resolve the revision first: one request, no retries, so an unreachable hub fails at once
        # (as in hub_open) instead of after huggingface_hub's download retries (~24 s); a revision
        # already in the cache is still pulled from there. The download keeps the name asked for,
        # so huggingface_hub records it (a later HF_HUB_OFFLINE=1 pull of the same name works).
        try:
            _resolve(_api(token, endpoint), repo_id, revision)
        except StorageError as unreachable:
            if not unreachable_hub(unreachable):
                raise
            try:
                local = _download(repo_id, revision, token, endpoint, offline=True)
            except LaminaError:
                raise unreachable from None
        else:
            local = _download(repo_id, revision, token, endpoint, offline=False)
    else:
        local = _download(repo_id, revision, token, endpoint, offline=True)
    source = open_snapshot(local)
    copy_snapshot(source._store, source.manifest, source._store.read(MANIFEST_NAME), dst,
                  where=f"hf://{repo_id}", overwrite=overwrite, progress=progress)
    return open_snapshot(dst)
