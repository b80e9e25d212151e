"""HttpStore: a read-only Store over HTTP(S) range requests.

Any static web server that honours ``Range`` serves a snapshot directory or a repository this
way. Requests go through one urllib3 connection pool (keep-alive, thread-safe). A failing, broken or
hostile server ends in a :class:`StorageError` naming the URL, never a hang or unbounded memory:

- connection errors and 429/5xx answers are retried a bounded number of times, with backoff;
- every body is streamed in bounded chunks and capped by what the call expects (the range asked,
  else ``max_body``), and a Content-Length above the cap is refused before anything is read;
- a deadline bounds each call as a whole (a socket timeout bounds each ``recv`` only, so a server
  trickling a byte at a time would otherwise hold a read open for hours);
- redirects are followed here, not by urllib3, so that the caller's headers (credentials, API keys)
  are sent only to the origin they were given for.
"""

from __future__ import annotations

import functools
import io
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, urljoin, urlsplit

from lamina._errors import (
    FormatError,
    IntegrityError,
    LaminaError,
    NotFoundError,
    StorageError,
)
from lamina.storage.base import Store, coalesce
from lamina.storage.http_body import (
    PrefixBuffer,
    bytes_view,
    fill_from_body,
    slice_views,
)
from lamina.storage.http_deadline import (
    ACTIVE,
    DEADLINE_SPAN,
    Deadline,
    watched_pool_classes,
)
from lamina.storage.paths import check_relative_path

__all__ = ["HttpStore"]

T = TypeVar("T")

#: the largest whole-file read by default (the manifest size limit of the format, spec §4)
DEFAULT_MAX_BODY = 1 << 30
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))
_REDIRECT_STATUSES = frozenset((301, 302, 303, 307, 308))
_MAX_REDIRECTS = 10
#: an unwanted body (error page, redirect) up to this size is read to keep the connection; a longer one closes it
_DISCARD_LIMIT = 64 << 10


class HttpStore(Store):
    """Files under ``url``, read with GET/HEAD and ``Range``.

    Args:
        url: ``http(s)://host/path`` of a snapshot directory or repository.
        retries: attempts after the first, on connection errors, cut answers and 429/500/502/503/504.
        timeout: seconds for connecting and for each socket read.
        deadline: seconds one call (a read, a size) may take in all: retries, backoff and redirects
            included, plus as many again for each full 16 MiB of body received (a multi-GB shard on
            a slow link still finishes; a server trickling bytes is cut off). The time a caller of
            ``iter_chunks`` spends between chunks does not count. Exceeding it raises StorageError
            ("deadline of N s exceeded"); it is not retried.
        max_body: the most bytes a read without an end (a whole file, or from an offset to the end)
            accepts; the default is the manifest size limit. Ranged reads are capped by the range.
        headers: extra request headers (e.g. ``Authorization``). They are sent to the origin
            (scheme, host, port) of ``url`` only: a redirect to another origin drops them all.
    """

    read_only = True
    can_list = False
    remote = True
    max_concurrency = 16

    def __init__(self, url: str, *, retries: int = 3, timeout: float = 10.0, deadline: float = 60.0,
                 max_body: int = DEFAULT_MAX_BODY, headers: Mapping[str, str] | None = None) -> None:
        import urllib3

        for name, value, integer in (("retries", retries, True), ("max_body", max_body, True),
                                     ("timeout", timeout, False), ("deadline", deadline, False)):
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not (
                    0 <= value < math.inf) or (value == 0 and not integer):
                kind = "a non-negative integer" if integer else "a positive finite number"
                raise FormatError(f"HttpStore {url}: {name} must be {kind}, not {value!r}")
        self.base_url = url.rstrip("/")
        self.location = self.base_url  # what messages show; a wrapper may name it (hf://org/name@rev)
        self.headers = dict(headers or {})
        self.retries = retries
        self.deadline = float(deadline)
        self.max_body = max_body
        # Keeps up to 64 idle connections per host (more than any max_concurrency a reader is
        # likely given: beyond the pool, urllib3 would close each extra one after its answer, with
        # a warning); connections are opened only as requests need them.
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=max(64, self.max_concurrency),
                                         timeout=urllib3.Timeout(connect=timeout, read=timeout), block=False)
        self._pool.pool_classes_by_scheme = watched_pool_classes()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{quote(check_relative_path(path))}"

    def _deadline(self, path: str) -> Deadline:
        return Deadline(self.deadline, f"{self.location}/{path}")

    # ------------------------------------------------------------------ requests
    def _send(self, method: str, url: str, headers: Mapping[str, str], deadline: Deadline) -> Any:
        """One request, neither retried nor redirected; the body is left unread."""
        ACTIVE.deadline = deadline
        try:
            return self._pool.urlopen(method, url, headers=dict(headers), redirect=False, retries=False,
                                      preload_content=False, decode_content=False)
        finally:
            ACTIVE.deadline = None

    def _follow(self, method: str, path: str, headers: Mapping[str, str], deadline: Deadline) -> Any:
        """The answer after redirects. urllib3 would forward every custom header to another host
        (it strips only Authorization, Cookie and Proxy-Authorization), so redirects are followed
        here: a hop to another origin keeps ``Range`` and nothing else the caller set."""
        url = self._url(path)
        sent = {**self.headers, **headers}
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send(method, url, sent, deadline)
            if response.status not in _REDIRECT_STATUSES:
                return response
            location = response.headers.get("Location")
            self._release(response, method, deadline, discard=True)
            try:
                target = urljoin(url, location or "")
            except ValueError:  # e.g. an unclosed IPv6 bracket
                target = ""
            origin = _origin(target)
            if not location or origin is None:
                raise StorageError(f"{self.location}/{path}: HTTP {response.status} redirect to {location!r}, "
                                   f"not a valid http(s) URL")
            if origin != _origin(url):
                sent = {name: value for name, value in sent.items() if name.lower() == "range"}
            url = target
        raise StorageError(f"{self.location}/{path}: more than {_MAX_REDIRECTS} redirects")

    def _call(self, method: str, path: str, headers: Mapping[str, str], deadline: Deadline,
              read: Callable[[Any], T] | None) -> T:
        """``read(answer)`` (which consumes the body, or raises) under bounded retries. With
        ``read=None`` the answer itself is returned, its body unread and its connection held: the
        caller streams it and must close it."""
        import urllib3

        failure = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.0 if attempt == 1 else 0.1 * 2 ** (attempt - 1), 2.0, deadline.left()))
                deadline.check()
            try:
                response = self._follow(method, path, headers, deadline)
            except urllib3.exceptions.HTTPError as exc:
                failure = str(getattr(exc, "reason", None) or exc)
                deadline.check()  # the deadline shut the socket: say so, and do not retry
                continue
            if response.status in _RETRY_STATUSES and attempt < self.retries:
                failure = f"HTTP {response.status}"
                self._release(response, method, deadline, discard=True)
                continue
            try:
                self._refuse(response, path)
                if read is None:
                    return response  # type: ignore[no-any-return]
                result = read(response)
            except urllib3.exceptions.HTTPError as exc:  # the body was cut (or the deadline cut it)
                self._release(response, method, deadline, discard=False)
                failure = str(exc)
                deadline.check()
                continue
            except BaseException as exc:  # a refusal: a short error page is read, keeping the connection
                self._release(response, method, deadline, discard=isinstance(exc, LaminaError))
                raise
            self._release(response, method, deadline, discard=True)
            return result
        tries = f"{self.retries + 1} attempt{'s' if self.retries else ''}"
        raise StorageError(f"{self.location}/{path}: {method} failed after {tries}: {failure}")

    def _release(self, response: Any, method: str, deadline: Deadline, *, discard: bool) -> None:
        """Give the connection back to the pool. A body left unread is read when ``discard`` and
        it is short (an error page, a redirect), so the connection stays reusable; otherwise the
        connection is closed, so no unread byte can be taken for the next answer."""
        import urllib3

        length = response.headers.get("Content-Length", "")
        try:
            if response.closed:  # the body was read to its end
                pass
            elif discard and (method == "HEAD" or (length.isdigit() and int(length) <= _DISCARD_LIMIT)):
                response.read(decode_content=False)
            else:
                response.close()
        except urllib3.exceptions.HTTPError:
            response.close()
        finally:
            deadline.unwatch()  # before the connection can serve another call
            response.release_conn()

    def _refuse(self, response: Any, path: str) -> None:
        if response.status in (404, 410):
            raise NotFoundError(f"{self.location}/{path}: file not found (HTTP {response.status})")
        if response.status in (401, 403):
            raise StorageError(f"{self.location}/{path}: access denied (HTTP {response.status}); "
                               f"pass credentials with headers= or storage_options={{'headers': ...}}")

    def _check_status(self, response: Any, path: str, ok: tuple[int, ...]) -> None:
        if response.status not in ok:
            raise StorageError(f"{self.location}/{path}: HTTP {response.status} {response.reason or ''}".rstrip())

    def _body(self, response: Any, cap: int, deadline: Deadline,
              too_long: Callable[[int | None], LaminaError]) -> bytes:
        """The whole body, refused (``too_long(declared length or None)``) once it exceeds ``cap``:
        a larger Content-Length before reading, a longer stream (chunked, or a lying length) as soon
        as byte ``cap + 1`` arrives, so at most ``cap + 1`` bytes are ever held."""
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            raise too_long(int(length))
        data, body, got = b"", None, 0
        while chunk := response.read(min(DEADLINE_SPAN, cap + 1 - got), decode_content=False):
            got += len(chunk)
            if got > cap:
                raise too_long(None)
            if body is None and not data:
                data = chunk  # usually the whole body: returned as is, no copy
            else:
                if body is None:  # grows in place; getvalue() hands its buffer over without a copy
                    body = io.BytesIO(data)
                    body.seek(0, io.SEEK_END)
                body.write(chunk)
            deadline.received(len(chunk))
        deadline.check()  # a socket shut by the deadline can look like the end of a body without a length
        return data if body is None else body.getvalue()

    def _exceeds(self, path: str, cap: int, what: str) -> Callable[[int | None], StorageError]:
        def error(declared: int | None) -> StorageError:
            told = "" if declared is None else f" (Content-Length {declared})"
            return StorageError(f"{self.location}/{path}: body exceeds {cap} bytes{told}, {what}")
        return error

    # ------------------------------------------------------------------ reads
    def _range(self, path: str, start: int, end: int | None, deadline: Deadline) -> tuple[bytes, int | None]:
        """Bytes ``[start, end)`` (to EOF when ``end`` is None, at most ``max_body``) and the file
        size if the server said it. Servers may answer a range with fewer bytes than asked
        (gateways cap ranges): the rest is requested until the range or the file ends."""
        parts: list[bytes] = []
        total: int | None = None
        position = start
        while end is None or position < end:
            wanted = f"bytes={position}-" + ("" if end is None else str(end - 1))
            cap = end - position if end is not None else self.max_body - (position - start)
            what = f"the range asked ({wanted})" if end is not None else f"max_body (reading from {start} to the end)"
            answer = self._call("GET", path, {"Range": wanted}, deadline, functools.partial(
                self._range_answer, path=path, position=position, wanted=wanted, deadline=deadline,
                too_long=self._exceeds(path, cap, what), cap=cap))
            if answer is None:  # 416: at or past EOF
                break
            data, size = answer
            total = size if size is not None else total
            parts.append(data)
            position += len(data)
            if not data or (total is not None and position >= total):
                break
        return b"".join(parts) if len(parts) != 1 else parts[0], total

    def _range_answer(self, response: Any, *, path: str, position: int, wanted: str, cap: int, deadline: Deadline,
                      too_long: Callable[[int | None], LaminaError]) -> tuple[bytes, int | None] | None:
        if response.status == 416:
            return None
        self._check_status(response, path, (200, 206))
        if response.status == 200:
            # The server ignored Range and sent the whole file: refuse rather than silently
            # transferring everything on every tensor read.
            raise self._no_ranges(path)
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range)
        if match is None or int(match.group(1)) != position:
            raise self._bad_range(path, content_range, wanted)
        data = self._body(response, cap, deadline, too_long)
        if len(data) != int(match.group(2)) - int(match.group(1)) + 1:
            raise self._bad_range(path, content_range, wanted)
        return data, None if match.group(3) == "*" else int(match.group(3))

    def _range_into(self, path: str, start: int, end: int,
                    sink: Callable[[int, int, int | None], Iterator[memoryview]],
                    deadline: Deadline) -> tuple[int, int | None]:
        """Bytes ``[start, end)`` read straight into the buffers ``sink(offset, count, file size or
        None)`` yields (the ones covering ``count`` bytes from ``start + offset``, in order, taken as
        each is filled; called once an answer's headers are checked);
        returns how many bytes were filled (fewer at EOF) and the file size if the server said it.
        Capped ranges are completed with follow-up requests, as in ``_range``."""
        total: int | None = None
        position = start
        while position < end:
            wanted = f"bytes={position}-{end - 1}"
            answer = self._call("GET", path, {"Range": wanted}, deadline, functools.partial(
                self._range_answer_into, path=path, position=position, wanted=wanted, cap=end - position,
                sink=functools.partial(sink, position - start), deadline=deadline,
                too_long=self._exceeds(path, end - position, f"the range asked ({wanted})")))
            if answer is None:  # 416: at or past EOF
                break
            got, size = answer
            total = size if size is not None else total
            position += got
            if total is not None and position >= total:
                break
        return position - start, total

    def _range_answer_into(self, response: Any, *, path: str, position: int, wanted: str, cap: int,
                           sink: Callable[[int, int | None], Iterator[memoryview]], deadline: Deadline,
                           too_long: Callable[[int | None], LaminaError]) -> tuple[int, int | None] | None:
        """One ranged answer (at most ``cap`` bytes) read into ``sink(count, total)``'s buffers. Every header
        is checked before a byte lands in one: the status, a Content-Range that starts where asked
        and ends within the range and the file, a Content-Length that agrees with it. A body cut
        short is retried (its bytes are written again); one going on past its Content-Range is refused."""
        import urllib3

        if response.status == 416:
            return None
        self._check_status(response, path, (200, 206))
        if response.status == 200:
            raise self._no_ranges(path)
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range)
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            raise too_long(int(length))
        last = int(match.group(2)) if match is not None else -1
        total = None if match is None or match.group(3) == "*" else int(match.group(3))
        count = last - position + 1
        if (match is None or int(match.group(1)) != position or not 0 < count <= cap
                or (total is not None and last >= total) or (length.isdigit() and int(length) != count)):
            raise self._bad_range(path, content_range, wanted)
        got = 0
        for target in sink(count, total):
            n = fill_from_body(response, target, deadline)
            got += n
            if n < len(target):  # the body ended
                break
        deadline.check()  # a socket shut by the deadline looks like the end of the body
        if got < count:
            if length.isdigit():  # the connection ended before its Content-Length: a cut answer, retried
                raise urllib3.exceptions.IncompleteRead(got, count - got)
            raise self._bad_range(path, content_range, wanted)
        if not response.closed and fill_from_body(response, memoryview(bytearray(1)), deadline):
            raise too_long(None) if count == cap else self._bad_range(path, content_range, wanted)
        return count, total

    def _bad_range(self, path: str, content_range: str, wanted: str) -> StorageError:
        return StorageError(f"{self.location}/{path}: bad Content-Range {content_range!r} for {wanted}")

    def _whole(self, path: str, cap: int, too_long: Callable[[int | None], LaminaError]) -> bytes:
        deadline = self._deadline(path)

        def body(response: Any) -> bytes:
            self._check_status(response, path, (200,))
            return self._body(response, cap, deadline, too_long)

        try:
            return self._call("GET", path, {}, deadline, body)
        finally:
            deadline.unwatch()

    def read_prefix(self, path: str, length: int) -> tuple[bytes, int]:
        # One ranged GET (usually): its Content-Range ends with the file's total size.
        if length <= 0:
            return b"", self.size(path)
        pieces = PrefixBuffer(length)
        deadline = self._deadline(path)
        try:
            got, total = self._range_into(path, 0, length, pieces.views, deadline)
        finally:
            deadline.unwatch()
        return pieces.result(got), total if total is not None else self.size(path)

    def read_into(self, path: str, ranges: list[tuple[int, memoryview]]) -> int | None:
        # One GET per run of adjacent ranges, its body read straight into the buffers.
        total = None
        for start, views in coalesce(ranges):
            views = [bytes_view(view) for view in views]
            wanted = sum(len(view) for view in views)
            deadline = self._deadline(path)
            try:
                got, size = self._range_into(path, start, start + wanted,
                                             lambda offset, count, _, views=views: iter(slice_views(views, offset, count)),
                                             deadline)
            finally:
                deadline.unwatch()
            total = size if size is not None else total
            if got != wanted:
                raise IntegrityError(f"{path}: truncated (wanted {wanted} bytes at {start}, got {got})",
                                     [(path, "truncated")])
        return total

    def read(self, path: str, start: int = 0, end: int | None = None) -> bytes:
        if end is not None and end <= start:
            self.size(path)  # still report a missing file
            return b""
        if start == 0 and end is None:
            return self._whole(path, self.max_body, self._exceeds(path, self.max_body, "max_body (a whole-file read)"))
        deadline = self._deadline(path)
        try:
            return self._range(path, start, end, deadline)[0]
        finally:
            deadline.unwatch()

    def read_limited(self, path: str, limit: int) -> bytes:
        """The whole file, refused with FormatError when it holds more than ``limit`` bytes (one
        GET; a larger Content-Length is refused before any body byte is read). ``max_body`` still
        caps it, with a StorageError."""
        if limit > self.max_body:
            return self._whole(path, self.max_body, self._exceeds(path, self.max_body, "max_body (a whole-file read)"))

        def too_large(declared: int | None) -> FormatError:
            held = "" if declared is None else f"{declared} bytes, "
            return FormatError(f"{self.location}/{path}: {held}more than the {limit}-byte limit for this file; "
                               f"refusing to read it")
        return self._whole(path, limit, too_large)

    def _no_ranges(self, path: str) -> StorageError:
        return StorageError(f"{self.location}/{path}: the server ignores HTTP Range requests; lazy reads need "
                            f"a server that answers 206 Partial Content")

    def size(self, path: str) -> int:
        def length(response: Any) -> int:
            self._check_status(response, path, (200,))
            value = response.headers.get("Content-Length")
            if value is None or not value.isdigit():
                raise StorageError(f"{self.location}/{path}: the server sent no Content-Length")
            return int(value)

        deadline = self._deadline(path)
        try:
            return self._call("HEAD", path, {}, deadline, length)
        finally:
            deadline.unwatch()

    def exists(self, path: str) -> bool:
        try:
            self.size(path)
        except NotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        raise StorageError(f"{self.location}: listing files is not possible over HTTP; the manifest lists a "
                           f"snapshot's files (repositories: `lamina fsck` and `gc` need a listable store)")

    def iter_chunks(self, path: str, chunk_size: int = 16 << 20) -> Iterator[bytes]:
        # One streamed GET instead of a request per chunk. No cap: the caller checks the size it
        # expects and stops reading (hashed_chunks); each chunk is at most chunk_size bytes.
        import urllib3

        deadline = self._deadline(path)
        try:
            response = self._call("GET", path, {}, deadline, None)
        except BaseException:
            deadline.unwatch()
            raise
        try:
            self._check_status(response, path, (200,))
            while chunk := response.read(chunk_size, decode_content=False):
                deadline.received(len(chunk))
                deadline.pause()  # the consumer's time between chunks is not the server's
                yield chunk
                deadline.resume()
            deadline.check()
        except urllib3.exceptions.HTTPError as exc:
            deadline.check()
            raise StorageError(f"{self.location}/{path}: download interrupted: {exc}") from None
        finally:
            self._release(response, "GET", deadline, discard=False)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL; None for any other URL or a malformed one."""
    try:
        parts = urlsplit(url)
        scheme, port = parts.scheme.lower(), parts.port
    except ValueError:  # a port that is not a number
        return None
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (80 if scheme == "http" else 443)


def http_store(url: str, storage_options: Mapping[str, Any] | None) -> HttpStore:
    """An HttpStore from ``storage_options`` (``headers``, ``retries``, ``timeout``, ``deadline``, ``max_body``)."""
    options = dict(storage_options or {})
    known = {"headers", "retries", "timeout", "deadline", "max_body"}
    unknown = set(options) - known
    if unknown:
        raise FormatError(f"storage_options for http(s):// accepts {', '.join(sorted(known))}; got {sorted(unknown)}")
    return HttpStore(url, **options)
