"""FsspecStore: any fsspec filesystem (``s3://``, ``memory://``, ``gs://``...) as a Store.

Compare-and-swap needs a conditional write from the backend: on S3 (and S3-compatible servers) it
is a ``PutObject`` with ``If-Match: <etag>`` or ``If-None-Match: *``; ``memory://`` lives in this
process, so a lock suffices. Other filesystems are readable and writable but cannot move refs.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from typing import Any

from lamina._errors import NotFoundError, StorageError
from lamina.storage.base import Chunks, Store, as_chunks, check_prefix
from lamina.storage.paths import check_relative_path

__all__ = ["FsspecStore"]

_MEMORY_LOCK = threading.Lock()
_S3_PROTOCOLS = ("s3", "s3a")


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, (FileNotFoundError, NotADirectoryError, IsADirectoryError))


def _precondition_failed(exc: BaseException) -> bool:
    # s3fs turns a 412 into OSError(EINVAL, "At least one of the pre-conditions ... did not hold");
    # the botocore error underneath carries the code.
    for error in (exc, exc.__cause__, exc.__context__):
        if error is None:
            continue
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "") if hasattr(error, "response") else ""
        text = f"{type(error).__name__} {error} {code}"
        if any(k in text for k in ("PreconditionFailed", "412", "ConditionalRequestConflict", "pre-conditions")):
            return True
    return False


class FsspecStore(Store):
    """Files under ``url`` on an fsspec filesystem.

    Args:
        url: ``protocol://bucket/prefix``.
        storage_options: passed to ``fsspec.filesystem`` (for s3fs: ``key``, ``secret``,
            ``client_kwargs={"endpoint_url": ...}``, ``profile``...). Without them s3fs follows the
            AWS conventions (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3``, profiles).
    """

    max_concurrency = 16

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        import fsspec

        self.location = url.rstrip("/")
        protocol, _, rest = self.location.partition("://")
        self.protocol = protocol
        options = dict(storage_options or {})
        if protocol in _S3_PROTOCOLS:
            # Refs and blobs change under other writers: never answer from a stale listing.
            options.setdefault("use_listings_cache", False)
            # Bounded waits: a silent endpoint fails within about a minute instead of hanging.
            config = {"connect_timeout": 10, "read_timeout": 30, "retries": {"max_attempts": 3}}
            options["config_kwargs"] = {**config, **dict(options.get("config_kwargs") or {})}
        try:
            self.fs = fsspec.filesystem(protocol, **options)
        except ImportError as exc:
            raise StorageError(f"{url}: the {protocol!r} filesystem needs {exc.name}") from None
        self.root = rest.rstrip("/")
        self.is_s3 = protocol in _S3_PROTOCOLS
        self.remote = protocol != "memory"

    def _key(self, path: str) -> str:
        return f"{self.root}/{check_relative_path(path)}"

    def _fail(self, action: str, path: str, exc: BaseException) -> StorageError:
        return StorageError(f"{self.location}/{path}: {action} failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ reads
    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        key = self._key(path)
        try:
            if end is not None and end <= start:
                self.fs.info(key)  # still report a missing file
                return b""
            return self.fs.cat_file(key, start=start or None, end=end)
        except Exception as exc:
            if _is_missing(exc):
                raise NotFoundError(f"{self.location}/{path}: file not found") from None
            if isinstance(exc, OSError) and "not satisfiable" in str(exc).lower():  # start at or past EOF
                return b""
            raise self._fail("read", path, exc) from None

    def size(self, path: str) -> int:
        key = self._key(path)
        try:
            info = self.fs.info(key)
        except Exception as exc:
            if _is_missing(exc):
                raise NotFoundError(f"{self.location}/{path}: file not found") from None
            raise self._fail("stat", path, exc) from None
        if info.get("type") != "file":
            raise NotFoundError(f"{self.location}/{path}: not a file")
        return int(info["size"])

    def exists(self, path: str) -> bool:
        key = self._key(path)
        try:
            return bool(self.fs.isfile(key))
        except Exception as exc:
            raise self._fail("stat", path, exc) from None

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        base = self.root + "/" + prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        try:
            found = self.fs.find(base, withdirs=False)
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self._fail("list", prefix, exc) from None
        strip = len(self.root.lstrip("/")) + 1
        out = []
        for key in found:
            rel = key.lstrip("/")[strip:]
            if rel.startswith(prefix) and not rel.rsplit("/", 1)[-1].startswith(".lamina-"):
                out.append(rel)
        return sorted(out)

    # ------------------------------------------------------------------ writes
    def write(self, path: str, data: Chunks) -> int:
        key = self._key(path)
        # S3 objects appear whole when the upload completes (one PUT, or a completed multipart
        # upload) and an aborted upload leaves nothing; elsewhere write a hidden temporary object
        # and move it into place.
        target = key if self.is_s3 else f"{key.rsplit('/', 1)[0]}/.lamina-{secrets.token_hex(6)}"
        size = 0
        try:
            f = self.fs.open(target, "wb")
        except Exception as exc:
            raise self._fail("write", path, exc) from None
        try:
            for chunk in as_chunks(data):
                f.write(chunk)
                size += len(chunk)
        except BaseException:
            f.discard()
            if self.is_s3:
                f.closed = True  # an S3File would otherwise upload what it has on garbage collection
            if not self.is_s3:
                self._remove_quietly(target)
            raise
        try:
            f.close()
            if not self.is_s3:
                self.fs.mv(target, key)
        except Exception as exc:
            if not self.is_s3:
                self._remove_quietly(target)
            raise self._fail("write", path, exc) from None
        return size

    def _remove_quietly(self, key: str) -> None:
        try:
            self.fs.rm_file(key)
        except Exception:
            pass

    def delete(self, path: str) -> None:
        key = self._key(path)
        try:
            self.fs.rm_file(key)
        except Exception as exc:
            if not _is_missing(exc):
                raise self._fail("delete", path, exc) from None

    def compare_and_swap(self, path: str, expected: bytes | None, new: bytes | None) -> bool:
        if self.is_s3:
            return self._s3_compare_and_swap(path, expected, new)
        if self.protocol == "memory":
            with _MEMORY_LOCK:
                return self._swap_holding_lock(path, expected, new)
        raise StorageError(f"{self.location}: {self.protocol}:// has no conditional write, so refs cannot be "
                           f"moved safely here; use a local directory, memory:// or an S3-compatible store")

    def _s3_compare_and_swap(self, path: str, expected: bytes | None, new: bytes | None) -> bool:
        key = self._key(path)
        bucket, object_key, _ = self.fs.split_path(key)
        etag = None
        try:
            head = self.fs.call_s3("get_object", Bucket=bucket, Key=object_key)
            current: bytes | None = _read_body(self.fs, head)
            etag = head["ETag"]
        except Exception as exc:
            if not _is_missing(exc):
                raise self._fail("read", path, exc) from None
            current = None
        if current != expected:
            return False
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            if new is None:
                self.fs.call_s3("delete_object", Bucket=bucket, Key=object_key, **condition)
            else:
                self.fs.call_s3("put_object", Bucket=bucket, Key=object_key, Body=new, **condition)
        except Exception as exc:
            if _precondition_failed(exc) or (new is None and _is_missing(exc)):
                return False
            raise self._fail("conditional write", path, exc) from None
        finally:
            self.fs.invalidate_cache(key)
        return True


def _read_body(fs: Any, response: dict[str, Any]) -> bytes:
    """The body of an aiobotocore GetObject response, read on s3fs's event loop."""
    from fsspec.asyn import sync

    async def read() -> bytes:
        async with response["Body"] as body:
            return await body.read()

    return sync(fs.loop, read)
