"""``hf://org/name[@revision]`` sources: downloaded through huggingface_hub's own cache, then converted.

Online, ``snapshot_download`` fetches the repository at that revision (weights in other formats
skipped by the same patterns as a local directory's); a second conversion of the same revision
downloads nothing. With ``HF_HUB_OFFLINE=1`` nothing goes to the network: the cache is used, or
the conversion fails at once with one line (``NotFoundError``) saying what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lamina._errors import FormatError
from lamina.format.codec import MANIFEST_NAME
from lamina.hub.errors import hub_errors
from lamina.hub.remote import parse_hub

__all__ = ["hub_format", "download"]


def _hub() -> tuple[object, object]:
    try:
        import huggingface_hub
        from huggingface_hub import constants
    except ImportError:
        raise FormatError("hf:// sources need huggingface_hub: pip install 'lamina[hub]'") from None
    return huggingface_hub, constants


def _offline() -> bool:
    return bool(_hub()[1].HF_HUB_OFFLINE)  # type: ignore[attr-defined]


def hub_format(location: str) -> str:
    """``"lamina"`` when the hub repository holds a lamina snapshot (``manifest.msgpack``), else
    ``"hf"``. Offline, only the cache is asked."""
    huggingface_hub, _ = _hub()
    repo_id, revision = parse_hub(location)
    with hub_errors(repo_id, "find out what the repository holds"):
        if _offline():
            cached = huggingface_hub.try_to_load_from_cache(repo_id, MANIFEST_NAME,  # type: ignore[attr-defined]
                                                             revision=revision or "main")
            return "lamina" if isinstance(cached, str) else "hf"
        api = huggingface_hub.HfApi()  # type: ignore[attr-defined]
        return "lamina" if api.file_exists(repo_id, MANIFEST_NAME, revision=revision or "main") else "hf"


def download(location: str, exclude: Sequence[str]) -> tuple[Path, dict[str, str]]:
    """The local snapshot folder of ``hf://org/name[@rev]`` in huggingface_hub's cache, and where
    it came from (``{"repo", "revision", "commit"}``)."""
    huggingface_hub, _ = _hub()
    repo_id, revision = parse_hub(location)
    with hub_errors(repo_id, "download"):
        folder = huggingface_hub.snapshot_download(  # type: ignore[attr-defined]
            repo_id, revision=revision or "main", local_files_only=_offline(), ignore_patterns=list(exclude) or None)
    path = Path(folder)
    return path, {"repo": repo_id, "revision": revision or "main", "commit": os.path.basename(path)}
