"""Adversarial cases: http. Hostile servers on 127.0.0.1 against ``lamina.open("http://...")``.

Each case serves a real snapshot (saved by ``lamina.save``) from a :class:`HostileServer` whose
``answer`` misbehaves in one way: endless or oversized bodies, bytes trickled slower than any
socket timeout notices, redirect loops, error pages that never end. See
tests/adversarial/__init__.py for the shape of a case; tests/test_hardening_http.py reuses the
server for checks that need more than "input -> typed error" (memory, headers sent).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from servers import Unsatisfiable, parse_range

import lamina

from . import Case

__all__ = ["CASES", "HostileServer", "Handler", "serve_file", "make_snapshot"]

Answer = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    """Hands every request to the owner's ``answer``; records method, path and headers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch()

    def _dispatch(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.requests.append((self.command, self.path, dict(self.headers.items())))
        try:
            owner.answer(self)
        except OSError:  # the client hung up (the point of most cases)
            self.close_connection = True

    @property
    def owner(self) -> HostileServer:
        return self.server.owner

    def pause(self, seconds: float) -> bool:
        """Sleep, or return False at once when the server is closing (ends hostile loops)."""
        return not self.server.owner.stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HostileServer

    def handle_error(self, request: object, client_address: object) -> None:
        pass


class HostileServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 (a free port) answering every request with
    ``answer(handler)``, serving files from ``root``. ``requests`` holds ``(method, path, headers)``."""

    def __init__(self, root: Path, answer: Answer) -> None:
        self.root = root
        self.answer = answer
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"HostileServer {self.url}")
        self._thread.start()

    def close(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_file(h: Handler, extra_headers: dict[str, str] | None = None) -> None:
    """An honest answer: the file under the server's root, with single byte ranges."""
    target = h.owner.root / h.path.lstrip("/").split("?")[0]
    if not target.is_file():
        _status(h, 404)
        return
    data = target.read_bytes()
    try:
        span = parse_range(h.headers.get("Range"), len(data))
    except Unsatisfiable:
        _status(h, 416, {"Content-Range": f"bytes */{len(data)}"})
        return
    start, end = span or (0, len(data))
    h.send_response(206 if span else 200)
    for name, value in (extra_headers or {}).items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(end - start))
    if span:
        h.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data[start:end])


def _status(h: Handler, status: int, headers: dict[str, str] | None = None) -> None:
    body = f"{status}\n".encode()
    h.send_response(status)
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def endless_chunks(h: Handler, status: int = 200, headers: dict[str, str] | None = None) -> None:
    """``status`` with a chunked body that never ends (until the client hangs up)."""
    h.send_response(status)
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"\x92" * (1 << 16))
    while not h.owner.stopping.is_set():
        h.wfile.write(chunk)


def make_snapshot(tmp: Path) -> Path:
    """A small real snapshot at ``tmp/snap`` (two layers); returns ``tmp``, the server root."""
    lamina.save({"a.weight": np.arange(64, dtype=np.float32), "b.weight": np.ones((8, 8), dtype=np.float16)},
                tmp / "snap")
    return tmp


def _server(answer: Answer) -> Callable[[Path], HostileServer]:
    return lambda tmp: HostileServer(make_snapshot(tmp), answer)


def _open_all(options: dict[str, Any]) -> Callable[[HostileServer], object]:
    """The user action: open the snapshot over HTTP and read every tensor."""
    return lambda server: lamina.open(f"{server.url}/snap", cache=False, storage_options=options).state_dict("np")


def _stop(server: HostileServer) -> None:
    server.close()


# ------------------------------------------------------------------ answers
def _endless_manifest(h: Handler) -> None:
    endless_chunks(h) if h.path.endswith("manifest.msgpack") else serve_file(h)


def _huge_declared_manifest(h: Handler) -> None:
    """Declares a 1 TB manifest (and would send it): refused before a byte of body is read."""
    if not h.path.endswith("manifest.msgpack"):
        return serve_file(h)
    h.send_response(200)
    h.send_header("Content-Length", str(10**12))
    h.end_headers()
    while not h.owner.stopping.is_set():
        h.wfile.write(b"\0" * (1 << 16))


def _endless_range(h: Handler) -> None:
    """Shards: a 206 whose Content-Range matches the range asked, then a chunked body that never ends."""
    if h.path.endswith("manifest.msgpack") or h.command == "HEAD" or "Range" not in h.headers:
        return serve_file(h)
    start, end = parse_range(h.headers["Range"], 1 << 40) or (0, 1)
    endless_chunks(h, 206, {"Content-Range": f"bytes {start}-{end - 1}/*"})


def _range_longer_than_asked(h: Handler) -> None:
    """Shards: a 206 from the start asked to the end of a file 4 KiB longer than the real one,
    whatever range was asked, its Content-Range and Content-Length consistent with what it sends
    (so only the range asked reveals it)."""
    if h.path.endswith("manifest.msgpack") or "Range" not in h.headers:
        return serve_file(h)
    data = (h.owner.root / h.path.lstrip("/")).read_bytes() + bytes(4096)
    start = (parse_range(h.headers["Range"], len(data)) or (0, 0))[0]
    h.send_response(206)
    h.send_header("Content-Length", str(len(data) - start))
    h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    h.end_headers()
    h.wfile.write(data[start:])


def _trickle_body(h: Handler) -> None:
    """The manifest's headers at once, then its body one byte per second (a socket timeout of 5 s
    never fires)."""
    if not h.path.endswith("manifest.msgpack"):
        return serve_file(h)
    data = (h.owner.root / "snap" / "manifest.msgpack").read_bytes()
    h.send_response(200)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    for byte in data:
        if not h.pause(1.0):
            return
        h.wfile.write(bytes([byte]))
        h.wfile.flush()


def _trickle_headers(h: Handler) -> None:
    """A status line, then one header byte every 0.5 s, forever."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while h.pause(0.5):
        h.wfile.write(b"z")
        h.wfile.flush()


def _redirect_loop(h: Handler) -> None:
    h.send_response(302)
    h.send_header("Location", h.path)
    h.send_header("Content-Length", "0")
    h.end_headers()


def _redirect_to(location: str) -> Answer:
    def answer(h: Handler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return answer


def _endless_503(h: Handler) -> None:
    """503 with an error page that never ends: a retry must not wait for it (urllib3 drains it)."""
    endless_chunks(h, 503)


_SHORT = {"deadline": 1.0, "timeout": 5.0, "retries": 0}

CASES: list[Case] = [
    Case("http_endless_chunked_manifest", _server(_endless_manifest), _open_all({"max_body": 1 << 20}),
         lamina.StorageError, r"manifest\.msgpack: body exceeds 1048576 bytes", deadline=20, cleanup=_stop),
    Case("http_manifest_declares_a_terabyte", _server(_huge_declared_manifest), _open_all({}),
         lamina.LaminaError, r"manifest\.msgpack: .*1000000000000", deadline=20, cleanup=_stop),
    Case("http_endless_chunked_range", _server(_endless_range), _open_all({}),
         lamina.StorageError, r"\.safetensors: body exceeds \d+ bytes.*range asked", deadline=20, cleanup=_stop),
    Case("http_range_answer_longer_than_asked", _server(_range_longer_than_asked), _open_all({}),
         lamina.StorageError, r"\.safetensors: body exceeds \d+ bytes \(Content-Length \d+\)", deadline=20,
         cleanup=_stop),
    Case("http_trickled_body", _server(_trickle_body), _open_all(_SHORT),
         lamina.StorageError, r"manifest\.msgpack: deadline of 1 s exceeded", deadline=10, cleanup=_stop),
    Case("http_trickled_headers", _server(_trickle_headers), _open_all(_SHORT),
         lamina.StorageError, r"manifest\.msgpack: deadline of 1 s exceeded", deadline=10, cleanup=_stop),
    Case("http_redirect_loop", _server(_redirect_loop), _open_all({}),
         lamina.StorageError, r"manifest\.msgpack: more than 10 redirects", deadline=20, cleanup=_stop),
    Case("http_redirect_to_file_url", _server(_redirect_to("file:///etc/passwd")), _open_all({}),
         lamina.StorageError, r"redirect to 'file:///etc/passwd', not a valid http\(s\) URL", deadline=20,
         cleanup=_stop),
    Case("http_redirect_to_bad_port", _server(_redirect_to("http://127.0.0.1:port/x")), _open_all({}),
         lamina.StorageError, r"redirect to 'http://127.0.0.1:port/x', not a valid http\(s\) URL", deadline=20,
         cleanup=_stop),
    Case("http_endless_503_page", _server(_endless_503), _open_all({"retries": 2, "deadline": 10.0}),
         lamina.StorageError, r"manifest\.msgpack: HTTP 503", deadline=20, cleanup=_stop),
]
