"""Where a snapshot or repository lives: a path or URI, turned into a Store.

``path``, ``file://path`` -> LocalStore; ``http(s)://`` -> HttpStore (read-only); any other
scheme -> FsspecStore when fsspec knows it (``s3://``, ``memory://``, ``gs://``...). A trailing
``@ref`` names a revision of a repository (see :func:`split_ref`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from lamina._errors import FormatError
from lamina.storage.base import Store
from lamina.storage.local import LocalStore

__all__ = ["open_store", "split_ref", "is_remote", "scheme_of"]

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
# scheme -> (the package fsspec needs, the lamina extra that installs it)
_EXTRAS = {"s3": ("s3fs", "s3"), "s3a": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"),
           "az": ("adlfs", "azure"), "abfs": ("adlfs", "azure"), "abfss": ("adlfs", "azure")}
_REF = re.compile(r"@([A-Za-z0-9._-]+)\Z")  # in the last path component: "a@b.com/m" is a path


def scheme_of(location: str | os.PathLike[str]) -> str | None:
    match = _SCHEME.match(os.fspath(location))
    return match.group(1).lower() if match else None


def is_remote(location: str | os.PathLike[str]) -> bool:
    return scheme_of(location) not in (None, "file")


def split_ref(location: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``"s3://b/repo@v1.0"`` -> ``("s3://b/repo", "v1.0")``; no ``@ref`` -> ``(location, None)``.

    The ref is what follows the last ``@`` of the last path component (so ref names with ``/``
    are reachable through :class:`lamina.Repo` only). A local path that exists as given (an ``@``
    in a directory name) is never split.
    """
    text = os.fspath(location)
    match = _REF.search(text)
    if match is None or (scheme_of(text) is None and os.path.exists(text)):
        return text, None
    return text[: match.start()], match.group(1)


def open_store(location: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Store:
    """The Store for a path or URI.

    Raises:
        FormatError: an unknown scheme, or one whose filesystem package is not installed (the
            message names the extra to install).
    """
    text = os.fspath(location)
    scheme = scheme_of(text)
    if scheme is None:
        return LocalStore(text)
    if scheme == "file":
        return LocalStore(text[len("file://"):])
    if scheme == "hf":
        raise FormatError(f"{text}: hf:// is the Hugging Face Hub, not a lamina repository: use lamina.open, "
                          f"lamina.push and lamina.pull with it")
    if scheme in ("http", "https"):
        from lamina.storage.http_store import http_store

        return http_store(text, storage_options)
    try:
        import fsspec
        from fsspec.registry import get_filesystem_class
    except ImportError:
        raise FormatError(f"{text}: {scheme}:// needs fsspec: pip install fsspec") from None
    package, extra = _EXTRAS.get(scheme, (None, None))
    try:
        get_filesystem_class(scheme)
    except ValueError:
        raise FormatError(f"{text}: unsupported scheme {scheme}://; lamina reads local paths, http(s):// and the "
                          f"fsspec schemes (s3:// with pip install 'lamina[s3]')") from None
    except ImportError:
        hint = f"pip install 'lamina[{extra}]'" if extra else f"pip install the fsspec backend for {scheme}://"
        raise FormatError(f"{text}: {scheme}:// needs {package or 'an fsspec backend'}: {hint}") from None
    del fsspec
    from lamina.storage.fsspec_store import FsspecStore

    return FsspecStore(text, storage_options)
