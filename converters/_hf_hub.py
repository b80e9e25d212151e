"""``hf://org/name[@revision]`` sources: downloaded through huggingface_hub's own cache, then converted.

Online, ``snapshot_download`` fetches the repository at that revision (weights in other formats
skipped by the same patterns as a local directory's); a second conversion of the same revision
downloads nothing. With ``HF_HUB_OFFLINE=1`` nothing goes to the network: the cache is used, or
the conversion fails at once with one line (``NotFoundError``) saying what is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lamina._errors import FormatError, LaminaError, NotFoundError, StorageError
from lamina.format.codec import MANIFEST_NAME
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


@contextmanager
def _errors(location: str) -> Iterator[None]:
    """huggingface_hub's exceptions as one-line lamina errors (no retries: the first answer counts)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except LaminaError:
        raise
    except HFValidationError as exc:
        raise FormatError(f"{location}: not a valid repository name or revision ({str(exc).splitlines()[0]})") from None
    except RevisionNotFoundError:
        raise NotFoundError(f"{location}: no such revision on the hub") from None
    except GatedRepoError:
        raise StorageError(f"{location}: a gated repository; accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"{location}: repository not found, or private and your token cannot see it "
                            "(set HF_TOKEN or run `hf auth login`)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if _offline():
            raise NotFoundError(f"{location}: not (completely) in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                                "forbids downloading it; convert it once online, or unset HF_HUB_OFFLINE") from None
        raise StorageError(f"{location}: the hub cannot be reached and the local cache does not hold this "
                           "revision") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            raise StorageError(f"{location}: access denied (HTTP {status}); set HF_TOKEN or run `hf auth login`") from None
        raise StorageError(f"{location}: hub error (HTTP {status}): {str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise StorageError(f"{location}: cannot reach the hub or write the cache ({exc})") from None


def hub_format(location: str) -> str:
    """``"lamina"`` when the hub repository holds a lamina snapshot (``manifest.msgpack``), else
    ``"hf"``. Offline, only the cache is asked."""
    huggingface_hub, _ = _hub()
    repo_id, revision = parse_hub(location)
    with _errors(location):
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
    with _errors(location):
        folder = huggingface_hub.snapshot_download(  # type: ignore[attr-defined]
            repo_id, revision=revision or "main", local_files_only=_offline(), ignore_patterns=list(exclude) or None)
    path = Path(folder)
    return path, {"repo": repo_id, "revision": revision or "main", "commit": os.path.basename(path)}
