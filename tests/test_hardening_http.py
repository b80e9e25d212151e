"""HttpStore against hostile servers on 127.0.0.1: bodies capped (memory measured in a child
process), an overall deadline per call, and custom headers kept to their origin on redirects.
The hostile servers live in tests/adversarial/http.py (its typed-error cases run in
test_adversarial.py)."""

from __future__ import annotations

import functools
import gzip
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
from servers import parse_range

import lamina
from lamina.format.codec import MAX_MANIFEST_BYTES
from lamina.storage import http_body
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


# ====================================================================== d. ranges read straight into the buffers
BLOB = np.random.default_rng(7).integers(0, 256, 100_000, dtype=np.uint8).tobytes()


def _blob(h: Handler, status: int = 206, content_range: str | None = None, length: int | None = None,
          body: bytes | None = None, chunked: bool = False, cut: bool = False) -> None:
    """An answer to a ranged GET of BLOB, honest unless told: the Content-Range, Content-Length and
    body sent can each be replaced; ``chunked`` sends the body as chunks (no Content-Length),
    ``cut`` hangs up halfway through it."""
    start, end = parse_range(h.headers["Range"], len(BLOB)) or (0, len(BLOB))
    body = BLOB[start:end] if body is None else body
    h.send_response(status)
    h.send_header("Content-Range", content_range or f"bytes {start}-{end - 1}/{len(BLOB)}")
    if chunked:
        h.send_header("Transfer-Encoding", "chunked")
    else:
        h.send_header("Content-Length", str(len(body) if length is None else length))
    h.end_headers()
    if cut:
        h.wfile.write(body[: len(body) // 2])
        h.close_connection = True
    elif chunked:
        h.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n")
    else:
        h.wfile.write(body)


def _sentinel_buffers() -> tuple[bytearray, np.ndarray]:
    return bytearray(b"\xee" * 1000), np.full(500, -1.0, dtype=np.float32)  # 1000 + 2000 bytes


def test_http_read_into_fills_buffers_in_place_and_returns_the_size(serve: Callable[..., HostileServer]) -> None:
    """Adjacent buffers (bytes and a float32 array) in one GET, a separate one in another; the
    file size comes back from Content-Range; every answer leaves its connection reusable."""
    server = serve(_blob)
    store = HttpStore(server.url)
    head, floats = _sentinel_buffers()
    tail = bytearray(10)
    assert store.read_into("f.bin", [(100, memoryview(head)), (1100, memoryview(floats)),
                                      (50_000, memoryview(tail))]) == len(BLOB)
    assert (bytes(head), floats.tobytes(), bytes(tail)) == (BLOB[100:1100], BLOB[1100:3100], BLOB[50_000:50_010])
    assert [headers["Range"] for _, _, headers in server.requests] == ["bytes=100-3099", "bytes=50000-50009"]
    for _ in range(3):
        store.read_into("f.bin", [(0, memoryview(tail))])
    assert store._pool.connection_from_url(server.url).num_connections == 1  # kept alive throughout


def test_http_read_prefix_returns_what_the_file_holds(serve: Callable[..., HostileServer]) -> None:
    store = HttpStore(serve(_blob).url)
    assert store.read_prefix("f.bin", 1234) == (BLOB[:1234], len(BLOB))
    data, size = store.read_prefix("f.bin", 10**6)  # longer than the file: what there is
    assert (bytes(data), size) == (BLOB, len(BLOB))


@pytest.mark.parametrize(("answer", "error"), [
    (functools.partial(_blob, chunked=True, body=BLOB[100:1100]), r"bad Content-Range 'bytes 100-3099/100000'"),
    (functools.partial(_blob, length=1000), r"bad Content-Range 'bytes 100-3099/100000'"),
    (functools.partial(_blob, content_range="bytes 0-2999/100000"), r"bad Content-Range 'bytes 0-2999/100000'"),
    (functools.partial(_blob, content_range="bytes 100-3099/2000"), r"bad Content-Range 'bytes 100-3099/2000'"),
    (functools.partial(_blob, content_range="bytes 100-5099/100000", chunked=True, body=BLOB[100:5100]),
     r"bad Content-Range 'bytes 100-5099/100000'"),
    (functools.partial(_blob, content_range="items 0-1/2"), r"bad Content-Range 'items 0-1/2'"),
    (functools.partial(_blob, chunked=True, body=BLOB[100:3100] + b"more"), r"body exceeds 3000 bytes, the range"),
    (functools.partial(_blob, length=10**12), r"body exceeds 3000 bytes \(Content-Length 1000000000000\)"),
    (functools.partial(_blob, status=200), r"ignores HTTP Range"),
    (functools.partial(_blob, cut=True), r"GET failed after 2 attempts"),
], ids=["chunked-body-short", "length-short", "range-elsewhere", "range-past-the-file", "range-longer-than-asked",
        "range-unparsable", "chunked-body-long", "length-too-long", "range-ignored", "cut-every-time"])
def test_http_read_into_refuses_a_body_that_is_not_the_range(serve: Callable[..., HostileServer],
                                                             answer: Callable[[Handler], None], error: str) -> None:
    """Fewer bytes, more bytes, or other bytes than asked: a StorageError naming the file, never
    buffers left partly filled as if read."""
    store = HttpStore(serve(answer).url, retries=1)
    head, floats = _sentinel_buffers()
    with pytest.raises(lamina.StorageError, match=rf"/f\.bin: .*{error}"):
        store.read_into("f.bin", [(100, memoryview(head)), (1100, memoryview(floats))])


def test_http_read_into_retries_a_cut_answer_and_overwrites_its_bytes(serve: Callable[..., HostileServer]) -> None:
    """The first answer sends wrong bytes and hangs up halfway; the retry's bytes replace them."""
    answers = iter([functools.partial(_blob, body=bytes(3000), cut=True)])
    server = serve(lambda h: next(answers, _blob)(h))
    head, floats = _sentinel_buffers()
    HttpStore(server.url, retries=1).read_into("f.bin", [(100, memoryview(head)), (1100, memoryview(floats))])
    assert bytes(head) + floats.tobytes() == BLOB[100:3100]
    assert len(server.requests) == 2


def test_http_read_into_completes_capped_ranges_across_buffers(serve: Callable[..., HostileServer]) -> None:
    """A server that sends at most 700 bytes per answer: follow-up requests fill the rest, across
    the boundary between two buffers."""
    def capped(h: Handler) -> None:
        start, end = parse_range(h.headers["Range"], len(BLOB)) or (0, len(BLOB))
        end = min(end, start + 700)
        _blob(h, content_range=f"bytes {start}-{end - 1}/{len(BLOB)}", body=BLOB[start:end])

    server = serve(capped)
    head, floats = _sentinel_buffers()
    assert HttpStore(server.url).read_into("f.bin", [(100, memoryview(head)), (1100, memoryview(floats))]) == len(BLOB)
    assert bytes(head) + floats.tobytes() == BLOB[100:3100]
    assert [headers["Range"] for _, _, headers in server.requests] == [
        "bytes=100-3099", "bytes=800-3099", "bytes=1500-3099", "bytes=2200-3099", "bytes=2900-3099"]
    assert HttpStore(server.url).read_prefix("f.bin", 2000) == (BLOB[:2000], len(BLOB))


def test_http_read_into_past_the_end_is_truncated(serve: Callable[..., HostileServer], root: Path) -> None:
    (root / "f.bin").write_bytes(BLOB)
    store = HttpStore(serve(serve_file).url)
    for start in (len(BLOB) - 10, len(BLOB) + 10):  # a short answer, then a 416
        with pytest.raises(lamina.IntegrityError, match=rf"f\.bin: truncated \(wanted 3000 bytes at {start}"):
            store.read_into("f.bin", [(start, memoryview(bytearray(3000)))])


def test_http_read_into_trickle_hits_the_deadline(serve: Callable[..., HostileServer]) -> None:
    def trickle(h: Handler) -> None:
        h.send_response(206)
        h.send_header("Content-Range", "bytes 0-99/100")
        h.send_header("Content-Length", "100")
        h.end_headers()
        while h.pause(3.0):
            h.wfile.write(b"x")

    server = serve(trickle)
    with pytest.raises(lamina.StorageError, match=rf"^{server.url}/f\.bin: deadline of 1 s exceeded$"):
        HttpStore(server.url, timeout=5.0, deadline=1.0).read_into("f.bin", [(0, memoryview(bytearray(100)))])
    assert len(server.requests) == 1


def test_http_read_into_without_socket_access_reads_and_copies(serve: Callable[..., HostileServer],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Should urllib3 hold something other than http.client's response, bodies are read as bytes
    and copied, with the same checks."""
    monkeypatch.setattr(http_body, "socket_body", lambda response: None)
    head, floats = _sentinel_buffers()
    HttpStore(serve(_blob).url).read_into("f.bin", [(100, memoryview(head)), (1100, memoryview(floats))])
    assert bytes(head) + floats.tobytes() == BLOB[100:3100]
    with pytest.raises(lamina.StorageError, match=r"body exceeds 3000 bytes, the range"):
        HttpStore(serve(functools.partial(_blob, chunked=True, body=BLOB[100:3100] + b"more")).url).read_into(
            "f.bin", [(100, memoryview(head)), (1100, memoryview(floats))])


def test_http_read_prefix_of_a_file_growing_between_answers(serve: Callable[..., HostileServer]) -> None:
    """Capped answers whose file size grows from one to the next: the prefix still holds exactly
    the bytes sent."""
    sizes = iter([1000, 3000])

    def growing(h: Handler) -> None:
        start, end = parse_range(h.headers["Range"], len(BLOB)) or (0, 0)
        end = min(end, start + 600)
        _blob(h, content_range=f"bytes {start}-{end - 1}/{next(sizes, 5000)}", body=BLOB[start:end])

    assert HttpStore(serve(growing).url).read_prefix("f.bin", 2000) == (BLOB[:2000], 5000)


def test_http_connections_are_kept_for_32_concurrent_reads(serve: Callable[..., HostileServer],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """More threads than the store's default max_concurrency: no connection is closed and reopened
    for want of room in the pool (urllib3 warns when it does)."""
    def slow(h: Handler) -> None:
        h.pause(0.05)  # keeps the 32 requests in flight together
        _blob(h)

    server = serve(slow)
    store = HttpStore(server.url)
    buffers = [bytearray(100) for _ in range(32)]
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: store.read_into("f.bin", [(i * 100, memoryview(buffers[i]))]), range(32)))
    assert b"".join(buffers) == BLOB[:3200]
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
