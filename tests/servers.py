"""Real servers on 127.0.0.1 for storage tests: a ranged static HTTP server and a moto S3 server."""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

from moto.s3.responses import S3Response
from moto.server import ThreadedMotoServer

__all__ = ["RangeHTTPServer", "free_port", "start_moto"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_MOTO_WRITE_LOCK = threading.RLock()


def _make_moto_conditional_writes_atomic() -> None:
    """Serialize moto's object PUTs and DELETEs.

    moto checks ``If-Match`` / ``If-None-Match`` and then writes, with nothing held in between, so
    two racing conditional writes can both succeed; real S3 evaluates the condition atomically with
    the write. Compare-and-swap tests need S3's guarantee, not moto's race.
    """
    if getattr(S3Response, "_lamina_atomic_writes", False):
        return
    for name in ("put_object", "delete_object"):
        original = getattr(S3Response, name)

        @functools.wraps(original)
        def locked(self: S3Response, *args: object, _original: object = original, **kwargs: object) -> object:
            with _MOTO_WRITE_LOCK:
                return _original(self, *args, **kwargs)  # type: ignore[operator]

        setattr(S3Response, name, locked)
    S3Response._lamina_atomic_writes = True  # type: ignore[attr-defined]


def start_moto() -> tuple[ThreadedMotoServer, str]:
    """Start a moto S3 server in this process; returns it (call ``.stop()``) and its endpoint URL."""
    _make_moto_conditional_writes_atomic()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


class Unsatisfiable(Exception):
    """The range starts at or past the end of the file (answered with 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, end)`` of a single ``bytes=`` range, or None to ignore the header (absent,
    malformed or multi-range: RFC 9110 lets a server answer the whole file)."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if not match or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        if match[2] and int(match[2]) < start:
            return None
        if start >= size:
            raise Unsatisfiable
        return start, min(size, int(match[2]) + 1) if match[2] else size
    suffix = int(match[2])  # "bytes=-n": the last n bytes
    if suffix == 0 or size == 0:
        raise Unsatisfiable
    return max(0, size - suffix), size


class _Handler(BaseHTTPRequestHandler):
    """GET/HEAD of files under the owner's root, with single byte ranges and injected failures."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no delayed-ACK stall between the header and body writes
    server: _Server
    timeout = 30  # idle keep-alive connections do not pin a thread forever

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        range_header = self.headers.get("Range")
        injected = owner._record(self.command, self.path, range_header)
        if injected == "drop":
            self.close_connection = True  # no answer at all: the client sees a dropped connection
            return
        if injected is not None:
            self._status(int(injected))
            return
        target = owner._resolve(self.path)
        if target is None:
            self._status(HTTPStatus.NOT_FOUND)
            return
        size = target.stat().st_size
        try:
            span = parse_range(range_header, size)
        except Unsatisfiable:
            self._status(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, {"Content-Range": f"bytes */{size}"})
            return
        start, end = span or (0, size)
        status = HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        with open(target, "rb") as f:
            f.seek(start)
            remaining = end - start
            while remaining:
                chunk = f.read(min(remaining, 1 << 16))
                if not chunk:  # the file shrank under us: the client sees a short body
                    self.close_connection = True
                    return
                owner._count(len(chunk))  # before the write: the client may read it before we return
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def _status(self, status: int, headers: dict[str, str] | None = None) -> None:
        """A short plain-text answer with an exact Content-Length (keeps the connection usable)."""
        payload = f"{int(status)} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: RangeHTTPServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that hang up mid-answer are expected in these tests


class RangeHTTPServer:
    """A threaded static file server for ``root`` on 127.0.0.1 (random port), with byte ranges.

    Use as a context manager; ``url`` has no trailing slash. Counters (``bytes_served``: file bytes
    sent in bodies; ``requests``: ``(method, path, Range header or None)``) and failure injection
    (``fail_next``, ``drop_next``) are thread-safe.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self.bytes_served = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self._injected: list[int | str] = []
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RangeHTTPServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"RangeHTTPServer {self.url}")
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def reset(self) -> None:
        """Zero the counters and cancel pending injected failures."""
        with self._lock:
            self.bytes_served = 0
            self.requests = []
            self._injected = []

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests with ``status`` instead of the file."""
        with self._lock:
            self._injected.extend([status] * n)

    def drop_next(self, n: int) -> None:
        """Close the connection without answering for the next ``n`` requests."""
        with self._lock:
            self._injected.extend(["drop"] * n)

    # ------------------------------------------------------------------ used by the handler
    def _record(self, method: str, path: str, range_header: str | None) -> int | str | None:
        with self._lock:
            self.requests.append((method, path, range_header))
            return self._injected.pop(0) if self._injected else None

    def _count(self, n: int) -> None:
        with self._lock:
            self.bytes_served += n

    def _resolve(self, url_path: str) -> Path | None:
        """The regular file a request path names under ``root``, or None (missing, directory, escaping)."""
        path = unquote(urlsplit(url_path).path)
        if "\x00" in path or not path.startswith("/"):
            return None
        parts = path.split("/")[1:]
        if any(part in ("", ".", "..") for part in parts):
            return None
        target = self.root.joinpath(*parts).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target

