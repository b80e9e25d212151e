"""HttpStore against hostile servers on 127.0.0.1: bodies capped (memory measured in a child
process), an overall deadline per call, and custom headers kept to their origin on redirects.
The hostile servers live in tests/adversarial/http.py (its typed-error cases run in
test_adversarial.py)."""

from __future__ import annotations

import gzip
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from adversarial.http import (
    Handler,
    HostileServer,
    endless_chunks,
    make_snapshot,
    serve_file,
)

import lamina
from lamina.format.codec import MAX_MANIFEST_BYTES
from lamina.storage.http_store import HttpStore

SECRETS = {"X-Api-Key": "key-123", "Authorization": "Bearer token-456", "Cookie": "session=789"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_snapshot(tmp_path)


@pytest.fixture
def serve(root: Path) -> Iterator[Callable[[Callable[[Handler], None]], HostileServer]]:
    servers: list[HostileServer] = []

    def start(answer: Callable[[Handler], None]) -> HostileServer:
        servers.append(HostileServer(root, answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _expected(root: Path) -> dict[str, np.ndarray]:
    return lamina.open(root / "snap").state_dict("np")


def _assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


# ====================================================================== a. bodies are capped
_CHILD = textwrap.dedent("""
    import sys
    import lamina

    def peak_kib():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

    honest, hostile, options = sys.argv[1], sys.argv[2], eval(sys.argv[3])
    lamina.open(honest, cache=False, storage_options=options).state_dict("np")  # the baseline: imports, pools
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := RSS now
    baseline = peak_kib()
    try:
        lamina.open(hostile, cache=False, storage_options=options).state_dict("np")
        print("opened")
    except lamina.StorageError as exc:
        print("StorageError:", exc)
    print((peak_kib() - baseline) * 1024)
""")


def test_http_endless_chunked_manifest_memory_is_capped(serve: Callable[..., HostileServer]) -> None:
    """An endless chunked manifest.msgpack: the read stops at max_body, and the reader's peak RSS
    (in a child process, over its own baseline after an honest open) grows by about max_body, not
    with what the server sends."""
    honest = serve(serve_file)
    endless = serve(lambda h: endless_chunks(h) if h.path.endswith("manifest.msgpack") else serve_file(h))
    cap = 32 << 20
    done = subprocess.run([sys.executable, "-c", _CHILD, f"{honest.url}/snap", f"{endless.url}/snap",
                           repr({"max_body": cap})], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    outcome, growth = done.stdout.strip().splitlines()[-2:]
    assert outcome == f"StorageError: {endless.url}/snap/manifest.msgpack: body exceeds {cap} bytes, " \
                      f"max_body (a whole-file read)"
    # the capped body (a growing buffer: up to ~1.25x while it grows), plus one 16 MiB read in
    # flight (http.client joins a chunked read's pieces: twice that); 64 MiB measured
    assert cap // 2 < int(growth) < cap * 3 // 2 + (32 << 20), int(growth) / 2**20


def test_http_default_body_cap_is_the_manifest_limit(serve: Callable[..., HostileServer]) -> None:
    store = HttpStore(serve(serve_file).url)
    assert store.max_body == MAX_MANIFEST_BYTES


def test_http_declared_length_over_the_limit_is_refused_unread(serve: Callable[..., HostileServer]) -> None:
    """read_limited (the manifest read) refuses a Content-Length over its limit before reading a body
    byte; a plain whole-file read refuses one over max_body."""
    def huge(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(10**12))
        h.end_headers()
        h.wfile.write(bytes(1 << 16))
        h.pause(30)  # then nothing: a client that waits for the body hangs

    server = serve(huge)
    store = HttpStore(server.url, timeout=20, deadline=30)
    started = time.monotonic()
    with pytest.raises(lamina.FormatError, match=r"f\.bin: 1000000000000 bytes, more than the 1000-byte limit"):
        store.read_limited("f.bin", 1000)
    with pytest.raises(lamina.StorageError, match=r"f\.bin: body exceeds 2000 bytes \(Content-Length 1000000000000\)"):
        HttpStore(server.url, max_body=2000, timeout=20).read("f.bin")
    assert time.monotonic() - started < 5


def test_http_range_answered_beyond_the_range_is_refused(serve: Callable[..., HostileServer]) -> None:
    """A chunked 206 longer than the range asked is cut at the range (byte range + 1) with an error."""
    def long_range(h: Handler) -> None:
        h.send_response(206)
        h.send_header("Content-Range", "bytes 0-9/100")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        h.wfile.write(b"14\r\n" + b"x" * 20 + b"\r\n0\r\n\r\n")

    with pytest.raises(lamina.StorageError, match=r"f\.bin: body exceeds 10 bytes, the range asked \(bytes=0-9\)"):
        HttpStore(serve(long_range).url).read("f.bin", 0, 10)


def test_http_bytes_past_content_length_are_not_data(serve: Callable[..., HostileServer]) -> None:
    """Bytes sent after a Content-Length body are not taken as data, nor as the next answer on the
    kept-alive connection."""
    sent: list[int] = []

    def overlong(h: Handler) -> None:
        sent.append(1)
        h.send_response(200)
        h.send_header("Content-Length", "10")
        h.end_headers()
        h.wfile.write(b"0123456789" + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad" * 10)

    store = HttpStore(serve(overlong).url)
    assert store.read("f.bin") == b"0123456789"
    time.sleep(0.1)
    assert store.read("f.bin") == b"0123456789"
    assert len(sent) == 2


def test_http_content_encoding_is_not_decompressed(serve: Callable[..., HostileServer]) -> None:
    """A gzip bomb (64 MiB of zeros in 64 KiB, sent with Content-Encoding: gzip though lamina never
    asks for it) comes back as the bytes sent: nothing inflates past the cap."""
    bomb = gzip.compress(bytes(64 << 20), compresslevel=9)

    def gzipped(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(bomb)))
        h.end_headers()
        h.wfile.write(bomb)

    store = HttpStore(serve(gzipped).url, max_body=1 << 20)
    assert store.read("f.bin") == bomb
    assert len(bomb) < 1 << 20


# ====================================================================== b. an overall deadline
def test_http_trickling_server_hits_the_deadline(serve: Callable[..., HostileServer]) -> None:
    """One byte every 3 s never trips a 5 s socket timeout; the 1 s deadline ends the read."""
    def trickle(h: Handler) -> None:
        h.send_response(206)
        h.send_header("Content-Range", "bytes 0-99/100")
        h.send_header("Content-Length", "100")
        h.end_headers()
        while h.pause(3.0):
            h.wfile.write(b"x")

    server = serve(trickle)
    store = HttpStore(server.url, timeout=5.0, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(lamina.StorageError, match=rf"^{server.url}/f\.bin: deadline of 1 s exceeded$"):
        store.read("f.bin", 0, 100)
    assert time.monotonic() - started < 2.5
    assert len(server.requests) == 1  # a deadline is final: not retried


def test_http_deadline_includes_retries(serve: Callable[..., HostileServer]) -> None:
    def unavailable(h: Handler) -> None:
        h.pause(0.2)
        h.send_response(503)
        h.send_header("Content-Length", "0")
        h.end_headers()

    server = serve(unavailable)
    started = time.monotonic()
    with pytest.raises(lamina.StorageError, match="deadline of 1 s exceeded"):
        HttpStore(server.url, retries=100, deadline=1.0).read("f.bin")
    assert time.monotonic() - started < 2.5
    assert 1 < len(server.requests) < 20


def test_http_deadline_grows_with_the_body(serve: Callable[..., HostileServer]) -> None:
    """48 MiB in three bursts 0.7 s apart takes longer than the 1 s deadline, but each 16 MiB
    received adds a second: a steady large download is not cut."""
    span = 16 << 20
    data = np.random.default_rng(1).integers(0, 256, 3 * span, dtype=np.uint8).tobytes()

    def bursts(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for i in range(3):
            if i:
                h.pause(0.7)
            h.wfile.write(data[i * span:(i + 1) * span])

    store = HttpStore(serve(bursts).url, deadline=1.0, max_body=len(data))
    started = time.monotonic()
    assert store.read("f.bin") == data
    assert time.monotonic() - started > 1.0


def test_http_consumer_time_between_chunks_is_not_counted(serve: Callable[..., HostileServer], root: Path) -> None:
    server = serve(serve_file)
    shard = root / "snap" / "weights" / "a.safetensors"
    store = HttpStore(f"{server.url}/snap", deadline=0.5)
    chunks = []
    for chunk in store.iter_chunks("weights/a.safetensors", chunk_size=64):
        chunks.append(chunk)
        if len(chunks) <= 4:
            time.sleep(0.3)  # 1.2 s in all: more than the deadline, none of it the server's
    assert b"".join(chunks) == shard.read_bytes()
    assert len(chunks) > 4


def test_http_deadline_and_body_cap_are_storage_options(serve: Callable[..., HostileServer], root: Path) -> None:
    server = serve(serve_file)
    opened = lamina.open(f"{server.url}/snap", cache=False, storage_options={"deadline": 5, "max_body": 1 << 20})
    store = opened._store
    assert isinstance(store, HttpStore) and (store.deadline, store.max_body) == (5.0, 1 << 20)
    _assert_same(opened.state_dict("np"), _expected(root))
    for bad in ({"deadline": 0}, {"deadline": "60"}, {"deadline": float("inf")}, {"max_body": -1}, {"retries": 1.5},
                {"timeout": None}):
        with pytest.raises(lamina.FormatError, match=next(iter(bad))):
            lamina.open(f"{server.url}/snap", cache=False, storage_options=bad)
    with pytest.raises(lamina.FormatError, match="deadline, headers, max_body, retries, timeout"):
        lamina.open(f"{server.url}/snap", cache=False, storage_options={"dead_line": 1})


# ====================================================================== c. headers stay with their origin
def _redirect(to: Callable[[str], str]) -> Callable[[Handler], None]:
    def answer(h: Handler) -> None:
        h.send_response(307)
        h.send_header("Location", to(h.path))
        h.send_header("Content-Length", "0")
        h.end_headers()
    return answer


def test_http_cross_origin_redirect_drops_custom_headers(serve: Callable[..., HostileServer], root: Path) -> None:
    """Every file redirects to another port (another origin): it receives no header of
    storage_options (Authorization, Cookie or a custom one), but Range still."""
    other = serve(serve_file)
    first = serve(_redirect(lambda path: f"{other.url}{path}"))
    opened = lamina.open(f"{first.url}/snap", cache=False, storage_options={"headers": SECRETS})
    _assert_same(opened.state_dict("np"), _expected(root))
    assert first.requests and all(headers.get(k) == v for _, _, headers in first.requests for k, v in SECRETS.items())
    assert other.requests
    for method, path, headers in other.requests:
        leaked = {k for k in headers if k.lower() in {s.lower() for s in SECRETS}}
        assert not leaked, (method, path, leaked)
    assert any("Range" in headers for _, path, headers in other.requests if path.endswith(".safetensors"))


def test_http_same_origin_redirect_keeps_headers(serve: Callable[..., HostileServer], root: Path) -> None:
    def moved(h: Handler) -> None:
        if h.path.startswith("/old/"):
            return _redirect(lambda path: path.removeprefix("/old"))(h)
        if any(h.headers.get(k) != v for k, v in SECRETS.items()):
            return h.send_error(403)
        serve_file(h)

    server = serve(moved)
    opened = lamina.open(f"{server.url}/old/snap", cache=False, storage_options={"headers": SECRETS})
    _assert_same(opened.state_dict("np"), _expected(root))
    assert {path.split("/")[1] for _, path, _ in server.requests} == {"old", "snap"}
    assert all(headers.get("X-Api-Key") == "key-123" for _, _, headers in server.requests)


def test_http_headers_stay_dropped_after_leaving_the_origin(serve: Callable[..., HostileServer]) -> None:
    """A -> B -> back to A: the second visit to A does not get the headers back either (B chose it)."""
    holder: list[HostileServer] = []
    bounce = serve(_redirect(lambda path: f"{holder[0].url}/back{path}"))

    def first(h: Handler) -> None:
        if h.path.startswith("/back/"):
            h.send_response(200)
            h.send_header("Content-Length", "2")
            h.end_headers()
            h.wfile.write(b"ok")
        else:
            _redirect(lambda path: f"{bounce.url}{path}")(h)

    holder.append(serve(first))
    store = HttpStore(holder[0].url, headers=SECRETS)
    assert store.read("f.bin") == b"ok"
    (_, _, sent_first), (_, _, sent_back) = holder[0].requests
    assert sent_first["X-Api-Key"] == "key-123" and "X-Api-Key" not in sent_back
