"""``lamina.push`` and ``lamina.pull``: one entry point for repositories and the Hugging Face Hub."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lamina._errors import ExistsError
from lamina.repo.repository import open_location
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.transfer import Progress, PushResult

__all__ = ["push", "pull"]


def push(src: str | os.PathLike[str] | Artifact, dst: str | os.PathLike[str], *, branch: str | None = None,
         message: str = "", tag: str | None = None, private: bool = False, author: str | None = None,
         storage_options: Mapping[str, Any] | None = None, token: str | None = None,
         progress: Progress | None = None, card: bool = True, allow_empty: bool = False) -> PushResult:
    """Publish snapshot ``src`` to ``dst``: a lamina repository (a directory, ``s3://...``), or the
    Hugging Face Hub (``hf://org/name``: one commit; the repository is created when needed,
    ``private`` on request; files the branch already holds are not sent again; a ``README.md``
    model card is written from the snapshot's info in the same commit, see ``card``).

    Args:
        src: a snapshot directory, URI, ``repo@ref`` or open Artifact.
        dst: the repository, or ``hf://org/name[@branch]``.
        branch: the branch to publish to (default ``main``, or the ``@branch`` of an hf:// dst).
        message: the revision (commit) message.
        tag: also tag the new revision.
        private: hub only: create the repository private.
        author: lamina repositories only: the revision author (default ``user@host``).
        storage_options: fsspec options for ``src`` and a remote repository.
        token: hub only: a token (default: ``HF_TOKEN`` or the huggingface_hub login).
        card: hub only: create or update ``README.md`` with YAML front matter (license, tags,
            library_name, base_model, pipeline_tag from ``info`` and ``info.extra``); a snapshot
            carrying its own ``README.md`` keeps it byte for byte, and a README on the hub that
            lamina did not generate is left alone. False: README.md is not touched.
        allow_empty: lamina repositories only: make a new revision even when the snapshot is
            already the branch head (by default, with or without ``message``, none is made).

    Raises:
        ExistsError: ``dst`` is a local directory that is neither empty nor a repository (a push
            never turns an ordinary directory into a repository).

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> tmp = tempfile.mkdtemp()
        >>> _ = lamina.save({"fc.w": np.ones(2, "f4")}, os.path.join(tmp, "snap"))
        >>> lamina.push(os.path.join(tmp, "snap"), os.path.join(tmp, "repo"), tag="v1").uploaded_files
        3
    """
    from lamina.hub.remote import hub_push, is_hub

    if is_hub(dst):
        if not isinstance(src, Artifact):  # any location lamina can open: a repository ref too
            src = open_location(src, storage_options=storage_options)
        return hub_push(src, os.fspath(dst), revision=branch, message=message, tag=tag, private=private,
                        token=token, progress=progress, card=card)
    from lamina.repo.repository import Repo

    _check_repository_destination(dst)
    return Repo(dst, storage_options=storage_options).push(src, branch or "main", message=message, tag=tag,
                                                          author=author, storage_options=storage_options,
                                                          progress=progress, allow_empty=allow_empty)


def _check_repository_destination(dst: str | os.PathLike[str]) -> None:
    """Refuse a local directory that holds files but no repository: a push creates a repository
    only in a new or empty directory."""
    from pathlib import Path

    from lamina.format.codec import MANIFEST_NAME
    from lamina.format.repository import REPO_MARKER
    from lamina.storage.locations import scheme_of

    text = os.fspath(dst)
    scheme = scheme_of(text)
    if scheme not in (None, "file"):
        return
    path = Path(text[len("file://"):] if scheme == "file" else text)
    if not path.is_dir() or (path / REPO_MARKER).exists() or (path / MANIFEST_NAME).exists():
        return  # new, a repository, or a snapshot (the repository refuses that one with its own message)
    if any(path.iterdir()):
        raise ExistsError(f"{text} is a directory holding other files, not a lamina repository (no {REPO_MARKER}); "
                          f"a push creates a repository only in a new or empty directory. Choose another one")


def pull(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, overwrite: bool = False,
         storage_options: Mapping[str, Any] | None = None, token: str | None = None,
         progress: Progress | None = None) -> Artifact:
    """Write revision ``src`` (``repo[@ref]`` or ``hf://org/name[@revision]``) to ``dst`` as a plain
    snapshot directory, checking every file's sha256; from the hub through huggingface_hub's cache
    (so ``HF_HUB_OFFLINE=1`` works once it is cached)."""
    from lamina.hub.remote import hub_pull, is_hub

    if is_hub(src):
        return hub_pull(os.fspath(src), dst, overwrite=overwrite, token=token, progress=progress)
    from lamina.repo.repository import Repo
    from lamina.storage.locations import split_ref

    base, ref = split_ref(src)
    return Repo(base, storage_options=storage_options).pull(ref or "main", dst, overwrite=overwrite, progress=progress)
