"""HttpStore: a read-only Store over HTTP(S) range requests.

Any static web server that honours ``Range`` serves a snapshot directory or a repository this
way. Requests go through one urllib3 connection pool (keep-alive, thread-safe) with bounded
retries on connection errors and 429/5xx answers, and timeouts on connect and read, so an
unreachable or failing server ends in a :class:`StorageError`, never a hang.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ._errors import FormatError, NotFoundError, StorageError
from ._naming import check_relative_path
from ._store import Store

__all__ = ["HttpStore"]

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HttpStore(Store):
    """Files under ``url``, read with GET/HEAD and ``Range``.

    Args:
        url: ``http(s)://host/path`` of a snapshot directory or repository.
        retries: attempts after the first, on connection errors and 429/500/502/503/504.
        timeout: seconds for connecting and for each read.
        headers: extra request headers (e.g. ``Authorization``).
    """

    read_only = True
    can_list = False
    remote = True
    max_concurrency = 16

    def __init__(self, url: str, *, retries: int = 3, timeout: float = 10.0,
                 headers: Mapping[str, str] | None = None) -> None:
        import urllib3

        self.base_url = url.rstrip("/")
        self.location = self.base_url  # what messages show; a wrapper may name it (hf://org/name@rev)
        self.headers = dict(headers or {})
        retry = urllib3.Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.1,
                              backoff_max=2.0, status_forcelist=(429, 500, 502, 503, 504),
                              allowed_methods=("GET", "HEAD"), raise_on_status=False, respect_retry_after_header=False)
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=self.max_concurrency, retries=retry,
                                         timeout=urllib3.Timeout(connect=timeout, read=timeout), block=False)

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{quote(check_relative_path(path))}"

    def _request(self, method: str, path: str, headers: Mapping[str, str] | None = None,
                 preload: bool = True) -> Any:
        import urllib3

        try:
            response = self._pool.request(method, self._url(path), headers={**self.headers, **(headers or {})},
                                          preload_content=preload, redirect=True)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise StorageError(f"{self.location}/{path}: {method} failed after retries: {reason}") from None
        if response.status == 404 or response.status == 410:
            raise NotFoundError(f"{self.location}/{path}: file not found (HTTP {response.status})")
        if response.status in (401, 403):
            raise StorageError(f"{self.location}/{path}: access denied (HTTP {response.status}); "
                               f"pass credentials with headers= or storage_options={{'headers': ...}}")
        return response

    def _range(self, path: str, start: int, end: int | None) -> tuple[bytes, int | None]:
        """Bytes ``[start, end)`` (to EOF when ``end`` is None) and the file size if the server
        said it. Servers may answer a range with fewer bytes than asked (gateways cap ranges): the
        rest is requested until the range or the file ends."""
        parts: list[bytes] = []
        total: int | None = None
        position = start
        while end is None or position < end:
            wanted = f"bytes={position}-" + ("" if end is None else str(end - 1))
            response = self._request("GET", path, {"Range": wanted})
            if response.status == 416:  # at or past EOF
                break
            self._check_status(response, path, (200, 206))
            if response.status == 200:
                # The server ignored Range and sent the whole file: refuse rather than silently
                # transferring everything on every tensor read.
                raise self._no_ranges(path)
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != position or len(response.data) != (
                    int(match.group(2)) - int(match.group(1)) + 1):
                raise StorageError(f"{self.location}/{path}: bad Content-Range "
                                   f"{response.headers.get('Content-Range')!r} for {wanted}")
            if match.group(3) != "*":
                total = int(match.group(3))
            parts.append(response.data)
            position += len(response.data)
            if not response.data or (total is not None and position >= total):
                break
        return b"".join(parts) if len(parts) != 1 else parts[0], total

    def read_prefix(self, path: str, length: int) -> tuple[bytes, int]:
        # One ranged GET (usually): its Content-Range ends with the file's total size.
        if length <= 0:
            return b"", self.size(path)
        data, total = self._range(path, 0, length)
        return data, total if total is not None else self.size(path)

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        if end is not None and end <= start:
            self.size(path)  # still report a missing file
            return b""
        if start == 0 and end is None:
            response = self._request("GET", path)
            self._check_status(response, path, (200,))
            return response.data
        return self._range(path, start, end)[0]

    def _no_ranges(self, path: str) -> StorageError:
        return StorageError(f"{self.location}/{path}: the server ignores HTTP Range requests; lazy reads need "
                            f"a server that answers 206 Partial Content")

    def _check_status(self, response: Any, path: str, ok: tuple[int, ...]) -> None:
        if response.status not in ok:
            raise StorageError(f"{self.location}/{path}: HTTP {response.status} {response.reason or ''}".rstrip())

    def size(self, path: str) -> int:
        response = self._request("HEAD", path)
        self._check_status(response, path, (200,))
        length = response.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise StorageError(f"{self.location}/{path}: the server sent no Content-Length")
        return int(length)

    def exists(self, path: str) -> bool:
        try:
            self.size(path)
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        raise StorageError(f"{self.location}: listing files is not possible over HTTP; the manifest lists a "
                           f"snapshot's files (repositories: `lamina fsck` and `gc` need a listable store)")

    def iter_chunks(self, path: str, chunk_size: int = 16 << 20) -> Any:
        # One streamed GET instead of a request per chunk.
        response = self._request("GET", path, preload=False)
        try:
            self._check_status(response, path, (200,))
            yield from response.stream(chunk_size)
        except Exception as exc:
            if isinstance(exc, (StorageError, NotFoundError)):
                raise
            raise StorageError(f"{self.location}/{path}: download interrupted: {exc}") from None
        finally:
            response.release_conn()


def http_store(url: str, storage_options: Mapping[str, Any] | None) -> HttpStore:
    """An HttpStore from ``storage_options`` (``headers``, ``retries``, ``timeout``)."""
    options = dict(storage_options or {})
    unknown = set(options) - {"headers", "retries", "timeout"}
    if unknown:
        raise FormatError(f"storage_options for http(s):// accepts headers, retries and timeout; got {sorted(unknown)}")
    return HttpStore(url, **options)
