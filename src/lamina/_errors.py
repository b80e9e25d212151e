"""The lamina exception tree.

Every failure caused by input (a file, a manifest, a model handed to ``save``) raises one of
these; each also derives from the builtin a caller would naturally catch::

    LaminaError
    ├── FormatError (ValueError)              malformed manifest, shard, path or argument
    │   ├── UnsupportedVersionError           newer major format version / unknown required feature
    │   ├── UnsafePathError                   a path that is absolute or escapes the snapshot
    │   └── UnsafeInputError                  input that would need code execution (pickles, Lambda layers)
    ├── IntegrityError                        bytes on disk disagree with the manifest (size, sha256, header)
    ├── NotFoundError (KeyError)              missing snapshot, tensor, layer or file
    ├── ExistsError (FileExistsError)         the save target (or a tag) exists and overwrite=False
    ├── ConflictError                         a concurrent update won (a ref moved since it was read)
    ├── StorageError (OSError)                a store failed: unreachable, refusing, read-only, timed out
    └── StateMismatchError (ValueError)       a model / optimizer does not match the snapshot
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "LaminaError",
    "FormatError",
    "UnsupportedVersionError",
    "UnsafePathError",
    "UnsafeInputError",
    "IntegrityError",
    "NotFoundError",
    "ExistsError",
    "StateMismatchError",
    "ConflictError",
    "StorageError",
]


class LaminaError(Exception):
    """Base class of every error lamina raises on bad input."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class FormatError(LaminaError, ValueError):
    """A manifest, shard, path or argument is malformed."""


class UnsupportedVersionError(FormatError):
    """The snapshot needs a newer reader (newer major version or unknown required feature)."""


class UnsafePathError(FormatError):
    """A path is absolute, empty, or escapes the snapshot directory."""


class UnsafeInputError(FormatError):
    """The input can only be read by running code from it (a pickle needing non-allow-listed
    globals, a Keras Lambda layer); nothing was executed."""


class IntegrityError(LaminaError):
    """Bytes on storage disagree with the manifest.

    Attributes:
        files: the snapshot-relative paths that failed, each with a reason.
    """

    def __init__(self, message: str, files: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.files: list[tuple[str, str]] = list(files)


class NotFoundError(LaminaError, KeyError):
    """A snapshot, tensor, layer or file does not exist."""


class ExistsError(LaminaError, FileExistsError):
    """The save target exists; pass ``overwrite=True`` to replace it."""


class ConflictError(LaminaError):
    """Another writer moved a ref first (compare-and-swap lost); nothing of this update was
    published. Re-read the ref and retry."""


class StorageError(LaminaError, OSError):
    """A storage backend failed after bounded retries: unreachable or refusing server, permission
    denied, timeout, or a write to a read-only store."""


class StateMismatchError(LaminaError, ValueError):
    """A module or optimizer does not match the snapshot.

    Attributes:
        report: the :class:`lamina.LoadReport` describing the differences, when there is one.
    """

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report
