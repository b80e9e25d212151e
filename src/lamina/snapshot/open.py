"""Opening a plain snapshot (a directory or a URI holding ``manifest.msgpack``) as an Artifact."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lamina._errors import NotFoundError
from lamina.format.codec import MANIFEST_NAME
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.reader import read_manifest_view
from lamina.storage.base import Store
from lamina.storage.local import LocalStore
from lamina.storage.locations import is_remote, open_store

__all__ = ["open_snapshot", "open_store_snapshot"]


def open_store_snapshot(store: Store, *, remote: bool, verify: bool | None = None,
                        cache: bool | str | os.PathLike[str] | None = None,
                        max_concurrency: int | None = None) -> Artifact | None:
    """The snapshot at the root of ``store``, or None when it holds no manifest. Remote snapshots
    read through the sha256-keyed local cache unless ``cache`` is False."""
    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise NotFoundError(f"{store.location}: no such snapshot directory")
    try:
        manifest = read_manifest_view(store)[1]
    except NotFoundError:
        return None
    if remote and cache is not False:
        from lamina.snapshot.cache import BlobCache, CachedSnapshotStore

        root = cache if isinstance(cache, (str, os.PathLike)) else None
        store = CachedSnapshotStore(store, manifest, BlobCache(root))
    return Artifact(store, manifest, verify=verify, max_workers=max_concurrency)


def open_snapshot(location: str | os.PathLike[str], *, verify: bool | None = None,
                  storage_options: Mapping[str, Any] | None = None,
                  cache: bool | str | os.PathLike[str] | None = None,
                  max_concurrency: int | None = None) -> Artifact:
    """A plain snapshot directory or URI (no repository refs, no hub); NotFoundError otherwise."""
    store = open_store(location, storage_options)
    artifact = open_store_snapshot(store, remote=is_remote(location), verify=verify, cache=cache,
                                   max_concurrency=max_concurrency)
    if artifact is None:
        raise NotFoundError(f"{store.location}: no {MANIFEST_NAME}; not a lamina snapshot (or an interrupted save)")
    return artifact
