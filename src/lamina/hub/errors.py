"""huggingface_hub's exceptions as lamina errors that say what to do — one translation for every
hub call (push, lazy reads, pull, ``hf://`` conversions), so the same cause gives the same error
type and message shape everywhere."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lamina._errors import (
    ConflictError,
    FormatError,
    LaminaError,
    NotFoundError,
    StorageError,
)

__all__ = ["hub_errors", "unreachable_hub"]


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def hub_errors(repo_id: str, action: str) -> Iterator[None]:
    """Translate huggingface_hub's exceptions raised while trying to ``action`` on ``repo_id``."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"hf://{repo_id}"
    try:
        yield
    except LaminaError:
        raise
    except HFValidationError as exc:
        raise FormatError(f"{where}: not a valid repository name or revision ({str(exc).splitlines()[0]})") from None
    except RevisionNotFoundError:
        raise NotFoundError(f"{where}: revision not found while trying to {action}") from None
    except GatedRepoError:  # (a kind of RepositoryNotFoundError)
        raise StorageError(f"{where}: a gated repository; accept its terms on the hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise NotFoundError(f"{where}: repository not found, or private and your token cannot see it "
                            f"(while trying to {action}); check HF_TOKEN / `hf auth login`") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if _offline():
            raise NotFoundError(f"{where}: not (completely) in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                                f"forbids downloading it (while trying to {action}); run once online, or unset "
                                "HF_HUB_OFFLINE") from None
        raise NotFoundError(f"{where}: not in the local cache and the hub cannot be reached while trying to "
                            f"{action}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise StorageError(f"{where}: authentication failed (HTTP 401) while trying to {action}; "
                               f"set HF_TOKEN or run `hf auth login`") from None
        if status == 403:
            raise StorageError(f"{where}: permission denied (HTTP 403) while trying to {action}; the token "
                               f"needs write access to this repository") from None
        if status in (409, 412):
            raise ConflictError(f"{where}: the branch moved during this push (HTTP {status}); nothing was "
                                f"committed; push again") from None
        raise StorageError(f"{where}: hub error while trying to {action}: {exc}") from None
    except ValueError as exc:  # huggingface_hub checks a README.md's front matter with the hub first
        if "README.md" not in str(exc):
            raise
        raise FormatError(f"{where}: the hub refused README.md ({' '.join(str(exc).split())}); nothing was "
                          "committed. Fix the snapshot's info (license, tags, info.extra) or its own README.md, "
                          "or push with card=False") from None
    except (OSError, ConnectionError, *_transport_errors()) as exc:
        error = StorageError(f"{where}: cannot reach the hub while trying to {action}: {exc}")
        error.unreachable = True  # type: ignore[attr-defined]
        raise error from None


def unreachable_hub(error: BaseException) -> bool:
    """Whether ``error`` (from :func:`hub_errors`) says the hub could not be reached at all."""
    return bool(getattr(error, "unreachable", False))


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own errors (huggingface_hub 2.x uses httpx2, 1.x httpx, older requests)."""
    errors: list[type[BaseException]] = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)
