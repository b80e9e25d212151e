"""One contract suite for every Store backend: local directory, fsspec (memory://, S3 via a moto
server) and read-only HTTP (a ranged static server), plus ``open_store`` and HTTP failure handling.

Every backend runs against real components on 127.0.0.1: nothing is mocked.
"""

from __future__ import annotations

import multiprocessing
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import s3fs
from servers import RangeHTTPServer, free_port

import lamina
from lamina.storage.base import Store
from lamina.storage.fsspec_store import FsspecStore
from lamina.storage.http_store import HttpStore
from lamina.storage.local import LocalStore
from lamina.storage.locations import open_store

WRITABLE = ["local", "memory", "s3"]
ALL = [*WRITABLE, "http"]
UNSAFE = ["/etc/passwd", "../outside/secret", "a/../../outside/secret", "..", "a/.."]


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` reproducible pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


@dataclass
class Backend:
    """One storage backend, able to open a store at any sub-root of its base location."""

    name: str
    open: Callable[[str], Store]  # the store under test at a sub-root
    writer: Callable[[str], Store]  # a writable store over the same files (LocalStore for HTTP)


def _backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if name == "local":
        yield Backend(name, lambda sub: LocalStore(tmp_path / sub), lambda sub: LocalStore(tmp_path / sub))
    elif name == "memory":
        base = f"memory://lamina-test-{uuid.uuid4().hex}"
        opener = lambda sub: FsspecStore(f"{base}/{sub}")  # noqa: E731
        yield Backend(name, opener, opener)
        fs = fsspec.filesystem("memory")
        if fs.exists(base):  # the memory filesystem is process-wide: leave nothing behind
            fs.rm(base, recursive=True)
    elif name == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        options = request.getfixturevalue("s3_options")
        opener = lambda sub: FsspecStore(f"s3://{bucket}/{sub}", options)  # noqa: E731
        yield Backend(name, opener, opener)
    else:
        with RangeHTTPServer(tmp_path) as server:
            yield Backend(name, lambda sub: HttpStore(f"{server.url}/{sub}", retries=3, timeout=5.0),
                          lambda sub: LocalStore(tmp_path / sub))


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)


@pytest.fixture(params=WRITABLE)
def writable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from _backend(request.param, request, tmp_path)


@pytest.fixture
def store(writable: Backend) -> Store:
    """A writable store under test."""
    return writable.open("root")


# ====================================================================== reads (every backend)
def test_read_whole_and_ranges(backend: Backend) -> None:
    data = payload(1000)
    backend.writer("root").write("blob.bin", data)
    s = backend.open("root")
    assert s.read("blob.bin") == data
    assert s.read("blob.bin", 10, 20) == data[10:20]
    assert s.read("blob.bin", 990) == data[990:]
    assert s.read("blob.bin", 995, 2000) == data[995:]  # short at EOF
    assert s.read("blob.bin", 1000, 1010) == b""
    assert s.read("blob.bin", 5000) == b""
    assert s.read("blob.bin", 7, 7) == b""


def test_size_exists_and_not_found(backend: Backend) -> None:
    data = payload(321)
    backend.writer("root").write("nested/dir/file.bin", data)
    s = backend.open("root")
    assert s.size("nested/dir/file.bin") == len(data)
    assert s.exists("nested/dir/file.bin")
    assert not s.exists("nested/dir/other.bin")
    assert not s.exists("nested/dir")  # a "directory" is not a file
    for missing in ("missing.bin", "nested/dir/other.bin", "nested/dir"):
        with pytest.raises(lamina.NotFoundError):
            s.read(missing)
        with pytest.raises(lamina.NotFoundError):
            s.read(missing, 2, 5)
        with pytest.raises(lamina.NotFoundError):
            s.size(missing)


def test_empty_file(backend: Backend) -> None:
    backend.writer("root").write("empty", b"")
    s = backend.open("root")
    assert s.exists("empty")
    assert s.size("empty") == 0
    assert s.read("empty") == b""
    assert s.read("empty", 0, 10) == b""
    assert list(s.iter_chunks("empty", 4)) == []


def test_read_into_adjacent_and_separate(backend: Backend) -> None:
    data = payload(1024, seed=1)
    backend.writer("root").write("shard", data)
    a, b, c = bytearray(5), bytearray(7), np.zeros(8, dtype=np.uint8)
    backend.open("root").read_into("shard", [(10, memoryview(a)), (15, memoryview(b)), (100, memoryview(c))])
    assert bytes(a) == data[10:15]
    assert bytes(b) == data[15:22]
    assert c.tobytes() == data[100:108]


def test_read_into_truncated_and_missing(backend: Backend) -> None:
    backend.writer("root").write("short", payload(50))
    s = backend.open("root")
    with pytest.raises(lamina.IntegrityError):
        s.read_into("short", [(40, memoryview(bytearray(20)))])
    with pytest.raises(lamina.IntegrityError):
        s.read_into("short", [(0, memoryview(bytearray(10))), (60, memoryview(bytearray(1)))])
    with pytest.raises(lamina.NotFoundError):
        s.read_into("absent", [(0, memoryview(bytearray(1)))])


def test_iter_chunks(backend: Backend) -> None:
    data = payload(1000, seed=2)
    backend.writer("root").write("big", data)
    chunks = list(backend.open("root").iter_chunks("big", 300))
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= 300 for chunk in chunks)
    assert len(chunks) >= -(-len(data) // 300)
    with pytest.raises(lamina.NotFoundError):
        list(backend.open("root").iter_chunks("absent", 300))


def test_unsafe_paths_refused(backend: Backend) -> None:
    """Absolute and ``..`` paths are refused, even where they would reach a real file."""
    outside = backend.writer("outside")
    outside.write("secret", b"secret")
    s = backend.open("root")
    reads: list[Callable[[str], object]] = [
        s.read, lambda p: s.read(p, 0, 3), s.size, s.exists,
        lambda p: s.read_into(p, [(0, memoryview(bytearray(3)))]), lambda p: list(s.iter_chunks(p, 2)),
    ]
    writes: list[Callable[[str], object]] = [
        lambda p: s.write(p, b"pwned"), s.delete, lambda p: s.compare_and_swap(p, b"secret", b"pwned"),
        lambda p: s.compare_and_swap(p, b"secret", None), lambda p: s.compare_and_swap(p, None, b"pwned"),
    ]
    for path in UNSAFE:
        for op in reads:
            with pytest.raises(lamina.UnsafePathError):
                op(path)
        for op in writes:
            # A read-only store may refuse the write itself first; either way nothing is written.
            with pytest.raises(lamina.UnsafePathError if not s.read_only else (lamina.UnsafePathError,
                                                                                  lamina.StorageError)):
                op(path)
    assert outside.read("secret") == b"secret"
    assert issubclass(lamina.UnsafePathError, lamina.FormatError)


# ====================================================================== listing (writable backends)
def test_list(store: Store) -> None:
    names = ["b.txt", "ab", "a/x", "a/y/z", "refs/heads/main", "refs/tags/v1"]
    for i, name in enumerate(names):
        store.write(name, payload(10 + i, seed=i))
    assert store.list() == sorted(names)
    assert store.list("") == sorted(names)
    assert store.list("a/") == ["a/x", "a/y/z"]
    assert store.list("a") == ["a/x", "a/y/z", "ab"]  # a plain string prefix
    assert store.list("refs/heads/") == ["refs/heads/main"]
    assert store.list("refs/") == ["refs/heads/main", "refs/tags/v1"]
    assert store.list("missing/") == []
    assert store.list("zzz") == []


def test_list_empty_store(store: Store) -> None:
    assert store.list() == []
    assert store.list("refs/") == []


@pytest.mark.parametrize("prefix", ["../", "../outside/", "a/../../", "/etc/"])
def test_list_refuses_escaping_prefix(store: Store, writable: Backend, prefix: str) -> None:
    writable.writer("outside").write("secret", b"secret")
    with pytest.raises(lamina.UnsafePathError):
        store.list(prefix)


# ====================================================================== writes (writable backends)
def test_write_bytes_round_trip(store: Store) -> None:
    data = payload(4096, seed=3)
    assert store.write("deep/ly/nested/file.bin", data) == len(data)  # parents are created
    assert store.read("deep/ly/nested/file.bin") == data
    assert store.size("deep/ly/nested/file.bin") == len(data)
    assert store.list() == ["deep/ly/nested/file.bin"]


def test_write_chunk_iterables(store: Store) -> None:
    array = np.arange(3 * 50, dtype=np.float32).reshape(3, 50)
    chunks = [b"head", bytearray(b"-mid-"), memoryview(array), memoryview(np.arange(7, dtype=np.int64)), b""]
    expected = b"head-mid-" + array.tobytes() + np.arange(7, dtype=np.int64).tobytes()
    assert store.write("list.bin", chunks) == len(expected)
    assert store.read("list.bin") == expected
    assert store.write("gen.bin", (bytes(c) for c in chunks)) == len(expected)
    assert store.read("gen.bin") == expected
    assert store.write("view.bin", memoryview(array)) == array.nbytes
    assert np.array_equal(np.frombuffer(store.read("view.bin"), dtype=np.float32).reshape(3, 50), array)


def test_write_large_streamed(store: Store) -> None:
    block = np.random.default_rng(4).integers(0, 256, size=1 << 20, dtype=np.uint8)
    n = 3
    assert store.write("large.bin", (memoryview(block) for _ in range(n))) == n * block.nbytes
    assert store.size("large.bin") == n * block.nbytes
    tail = store.read("large.bin", n * block.nbytes - 100)
    assert tail == block.tobytes()[-100:]
    assert b"".join(store.iter_chunks("large.bin", 1 << 20)) == block.tobytes() * n


def test_overwrite_replaces_whole_content(store: Store) -> None:
    store.write("f", payload(1000))
    store.write("f", b"short")
    assert store.read("f") == b"short"
    assert store.size("f") == 5
    assert store.list() == ["f"]


def test_write_is_invisible_until_complete(store: Store) -> None:
    """Mid-write, readers see the old content (or no file), and no temporary file is listed."""
    store.write("old", b"old content")
    seen: list[tuple[bytes, bool, list[str]]] = []

    def chunks() -> Iterator[bytes]:
        yield b"new "
        seen.append((store.read("old"), store.exists("fresh"), store.list()))
        yield b"content"

    store.write("old", chunks())
    store.write("fresh", chunks())
    assert seen == [(b"old content", False, ["old"]), (b"new content", False, ["old"])]
    assert store.read("old") == b"new content"
    assert store.read("fresh") == b"new content"


class _Boom(Exception):
    pass


def test_failed_write_changes_nothing(store: Store) -> None:
    """A write whose data source fails leaves the old file whole and no partial or temporary file."""
    store.write("f", b"old content")

    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise _Boom("source failed")

    with pytest.raises((_Boom, lamina.StorageError)):
        store.write("f", failing())
    with pytest.raises((_Boom, lamina.StorageError)):
        store.write("new/g", failing())
    assert store.read("f") == b"old content"
    assert not store.exists("new/g")
    assert store.list() == ["f"]


def test_delete(store: Store) -> None:
    store.write("dir/a", b"1")
    store.write("dir/b", b"2")
    store.delete("dir/a")
    assert not store.exists("dir/a")
    with pytest.raises(lamina.NotFoundError):
        store.read("dir/a")
    store.delete("dir/a")  # deleting twice is fine
    store.delete("never/existed")
    assert store.list() == ["dir/b"]
    assert store.read("dir/b") == b"2"


# ====================================================================== compare-and-swap
def test_cas_create_swap_and_delete(store: Store) -> None:
    assert store.compare_and_swap("refs/heads/main", None, b"one")  # created, parents included
    assert not store.compare_and_swap("refs/heads/main", None, b"two")  # must be absent: it is not
    assert store.read("refs/heads/main") == b"one"
    assert store.compare_and_swap("refs/heads/main", b"one", b"two")
    assert store.read("refs/heads/main") == b"two"
    assert not store.compare_and_swap("refs/heads/main", b"one", b"three")  # stale expectation
    assert store.read("refs/heads/main") == b"two"
    assert not store.compare_and_swap("refs/heads/main", b"two-", None)
    assert store.read("refs/heads/main") == b"two"
    assert store.compare_and_swap("refs/heads/main", b"two", None)  # delete
    assert not store.exists("refs/heads/main")
    assert not store.compare_and_swap("refs/heads/main", b"two", None)  # already gone
    assert not store.compare_and_swap("refs/heads/main", b"two", b"x")
    assert not store.exists("refs/heads/main")
    assert store.compare_and_swap("refs/heads/main", None, b"again")
    assert store.list() == ["refs/heads/main"]  # no lock or temporary files listed


def _increment_until(store: Store, path: str, successes: int, deadline: float) -> list[int]:
    """Move the counter at ``path`` from k to k+1 by CAS until ``successes`` swaps won; the values won."""
    won: list[int] = []
    while len(won) < successes:
        assert time.monotonic() < deadline, "CAS made no progress"
        current = store.read(path)
        new = int(current) + 1
        if store.compare_and_swap(path, current, str(new).encode()):
            won.append(new)
    return won


CONCURRENT_INCREMENTS = {"local": 25, "memory": 25, "s3": 4}


def test_cas_concurrent_threads_lose_no_update(store: Store, writable: Backend) -> None:
    threads, each = 8, CONCURRENT_INCREMENTS[writable.name]
    store.write("counter", b"0")
    deadline = time.monotonic() + 20
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda _: _increment_until(store, "counter", each, deadline), range(threads)))
    won = sorted(v for r in results for v in r)
    final = int(store.read("counter"))
    assert final == len(won) == threads * each
    assert won == list(range(1, final + 1))  # every value was won by exactly one swap


def _cas_process(root: str, barrier: Any, successes: int, out: Any) -> None:
    """Child process body: increment the counter under ``root`` after every process is ready."""
    store = LocalStore(root)
    barrier.wait()
    out.put(_increment_until(store, "counter", successes, time.monotonic() + 30))


def test_local_cas_across_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    LocalStore(tmp_path).write("counter", b"0")
    processes, each = 2, 100
    barrier, out = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_cas_process, args=(str(tmp_path), barrier, each, out)) for _ in range(processes)]
    for w in workers:
        w.start()
    won = sorted(v for _ in workers for v in out.get(timeout=60))
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    final = int(LocalStore(tmp_path).read("counter"))
    assert final == len(won) == processes * each
    assert won == list(range(1, final + 1))


# ====================================================================== read-only stores
def test_http_store_is_read_only(tmp_path: Path) -> None:
    LocalStore(tmp_path).write("ref", b"v1")
    with RangeHTTPServer(tmp_path) as server:
        s = HttpStore(server.url, retries=0, timeout=5.0)
        assert s.read_only is True
        with pytest.raises(lamina.StorageError):
            s.write("ref", b"v2")
        with pytest.raises(lamina.StorageError):
            s.write("new", [b"a", b"b"])
        with pytest.raises(lamina.StorageError):
            s.delete("ref")
        with pytest.raises(lamina.StorageError):
            s.compare_and_swap("ref", b"v1", b"v2")
        with pytest.raises(lamina.StorageError):
            s.compare_and_swap("ref", b"v1", None)
        assert s.read("ref") == b"v1"
        assert all(method in ("GET", "HEAD") for method, _, _ in server.requests)
    assert LocalStore(tmp_path).list() == ["ref"]


def test_writable_stores_are_not_read_only(store: Store) -> None:
    assert store.read_only is False


# ====================================================================== HTTP specifics
@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RangeHTTPServer, bytes]]:
    """A server over a directory holding ``snap/weights.bin`` (256 KiB); the content is returned too."""
    data = payload(256 << 10, seed=5)
    LocalStore(tmp_path / "snap").write("weights.bin", data)
    with RangeHTTPServer(tmp_path) as server:
        yield server, data


def test_http_cannot_list(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, _ = served
    with pytest.raises(lamina.StorageError) as info:
        HttpStore(f"{server.url}/snap").list()
    message = str(info.value).lower()
    assert "list" in message and "http" in message


def test_http_ranged_read_transfers_only_the_range(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, data = served
    s = HttpStore(f"{server.url}/snap")
    server.reset()
    assert s.read("weights.bin", 1000, 5000) == data[1000:5000]
    assert server.bytes_served == 4000
    assert [r for r in server.requests if r[0] == "GET"] == [("GET", "/snap/weights.bin", "bytes=1000-4999")]
    server.reset()
    assert s.size("weights.bin") == len(data)
    assert s.exists("weights.bin")
    assert server.bytes_served == 0  # size and existence cost no download


def test_http_read_into_coalesces_adjacent_ranges(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, data = served
    s = HttpStore(f"{server.url}/snap")
    a, b, c = bytearray(100), bytearray(200), bytearray(50)
    server.reset()
    s.read_into("weights.bin", [(1000, memoryview(a)), (1100, memoryview(b)), (9000, memoryview(c))])
    assert (bytes(a), bytes(b), bytes(c)) == (data[1000:1100], data[1100:1300], data[9000:9050])
    assert server.bytes_served == 350
    assert len([r for r in server.requests if r[0] == "GET"]) == 2


def test_http_quotes_paths(tmp_path: Path) -> None:
    name = "odd dir/name #1?.bin"
    LocalStore(tmp_path / "snap").write(name, b"odd")
    with RangeHTTPServer(tmp_path) as server:
        s = HttpStore(f"{server.url}/snap/")  # a trailing slash on the base is fine too
        assert s.read(name) == b"odd"
        assert s.read(name, 1) == b"dd"
        assert s.size(name) == 3
        assert not s.exists("odd dir/name #2?.bin")


def test_http_retries_server_errors(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, data = served
    s = HttpStore(f"{server.url}/snap", retries=3, timeout=5.0)
    server.reset()
    server.fail_next(2)
    assert s.read("weights.bin") == data
    assert len(server.requests) == 3  # two 503s, then the answer
    server.fail_next(1, status=500)
    assert s.read("weights.bin", 10, 20) == data[10:20]
    server.fail_next(1, status=502)
    assert s.size("weights.bin") == len(data)


def test_http_gives_up_after_bounded_retries(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, _ = served
    s = HttpStore(f"{server.url}/snap", retries=3, timeout=5.0)
    server.reset()
    server.fail_next(10)
    started = time.monotonic()
    with pytest.raises(lamina.StorageError) as info:
        s.read("weights.bin")
    assert time.monotonic() - started < 5
    assert len(server.requests) == 4  # the first attempt and 3 retries
    assert "503" in str(info.value)


def test_http_not_found_is_not_retried(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, _ = served
    s = HttpStore(f"{server.url}/snap", retries=3)
    server.reset()
    with pytest.raises(lamina.NotFoundError):
        s.read("absent.bin")
    with pytest.raises(lamina.NotFoundError):
        s.read("absent.bin", 5, 10)
    assert len(server.requests) == 2


def test_http_dropped_connection_is_retried(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, data = served
    s = HttpStore(f"{server.url}/snap", retries=3, timeout=5.0)
    assert s.read("weights.bin", 0, 10) == data[:10]  # a pooled keep-alive connection exists now
    server.reset()
    server.drop_next(1)
    assert s.read("weights.bin", 100, 200) == data[100:200]
    server.drop_next(1)
    assert s.read("weights.bin") == data
    assert len(server.requests) == 2 + 2


def test_http_nothing_listening_fails_fast() -> None:
    s = HttpStore(f"http://127.0.0.1:{free_port()}/snap", retries=2, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(lamina.StorageError):
        s.read("weights.bin")
    with pytest.raises(lamina.StorageError):
        s.exists("weights.bin")  # unreachable is an error, not "missing"
    assert time.monotonic() - started < 10


def test_http_silent_server_times_out() -> None:
    """A server that accepts connections but never answers ends in StorageError, not a hang."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accepted: the kernel completes handshakes, nobody answers
        s = HttpStore(f"http://127.0.0.1:{listener.getsockname()[1]}", retries=1, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(lamina.StorageError):
            s.read("weights.bin", 0, 10)
        assert time.monotonic() - started < 5


def test_http_concurrent_reads(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, data = served
    s = HttpStore(f"{server.url}/snap")
    spans = [(i * 4096, i * 4096 + 3000) for i in range(32)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda span: s.read("weights.bin", *span), spans))
    assert got == [data[a:b] for a, b in spans]


# ====================================================================== open_store
def test_open_store_local_path_and_file_uri(tmp_path: Path) -> None:
    by_path = open_store(str(tmp_path / "repo"))
    assert isinstance(by_path, LocalStore)
    by_path.write("f", b"local")
    assert isinstance(open_store(tmp_path / "repo"), LocalStore)
    by_uri = open_store(f"file://{tmp_path / 'repo'}")
    assert isinstance(by_uri, LocalStore)
    assert by_uri.read("f") == b"local"
    assert (tmp_path / "repo" / "f").read_bytes() == b"local"


def test_open_store_memory() -> None:
    uri = f"memory://lamina-test-{uuid.uuid4().hex}/repo"
    first = open_store(uri)
    assert isinstance(first, FsspecStore)
    first.write("refs/main", b"mem")
    assert open_store(uri).read("refs/main") == b"mem"
    fsspec.filesystem("memory").rm(uri, recursive=True)


def test_open_store_s3(s3_bucket: str, s3_options: dict[str, Any], s3_client: Any) -> None:
    s = open_store(f"s3://{s3_bucket}/models/repo", s3_options)
    assert isinstance(s, FsspecStore)
    s.write("refs/main", b"s3")
    assert s.read("refs/main") == b"s3"
    obj = s3_client.get_object(Bucket=s3_bucket, Key="models/repo/refs/main")
    assert obj["Body"].read() == b"s3"  # the object lives under the URI's prefix


def test_open_store_s3_from_environment(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, s3_bucket: str,
                                        s3_client: Any) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        s = open_store(f"s3://{s3_bucket}/env")
        s.write("f", b"from env")
        assert s.read("f") == b"from env"
        assert s3_client.get_object(Bucket=s3_bucket, Key="env/f")["Body"].read() == b"from env"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()  # no later test reuses this environment's client


def test_open_store_http(served: tuple[RangeHTTPServer, bytes]) -> None:
    server, data = served
    s = open_store(f"{server.url}/snap")
    assert isinstance(s, HttpStore)
    assert s.read_only
    assert s.read("weights.bin", 3, 9) == data[3:9]
    assert isinstance(open_store("https://127.0.0.1:1/x"), HttpStore)


def test_open_store_unknown_scheme() -> None:
    with pytest.raises(lamina.FormatError) as info:
        open_store("foo://x")
    assert "pip install" in str(info.value)
    assert "foo" in str(info.value)


# ====================================================================== the test server itself
def test_range_server_semantics(tmp_path: Path) -> None:
    """RangeHTTPServer answers like a static server with byte ranges (the HTTP tests rely on it)."""
    import http.client

    data = payload(100, seed=6)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.bin").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path.parent / f"{tmp_path.name}-sibling").write_bytes(b"outside")
    with RangeHTTPServer(tmp_path / "d") as server:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=5)

        def get(path: str, range_header: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
            conn.request(method, path, headers={"Range": range_header} if range_header else {})
            response = conn.getresponse()  # one keep-alive connection serves every request
            return response.status, dict(response.getheaders()), response.read()

        status, headers, body = get("/f.bin")
        assert (status, body, headers["Content-Length"]) == (200, data, str(len(data)))
        status, headers, body = get("/f.bin", "bytes=10-19")
        assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{len(data)}")
        assert get("/f.bin", "bytes=90-")[::2] == (206, data[90:])
        assert get("/f.bin", "bytes=95-500")[::2] == (206, data[95:])
        assert get("/f.bin", "bytes=-7")[::2] == (206, data[-7:])
        status, headers, body = get("/f.bin", "bytes=100-")
        assert (status, headers["Content-Range"]) == (416, f"bytes */{len(data)}")
        status, headers, body = get("/f.bin", method="HEAD")
        assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
        for path in ("/missing", "/", "/../empty", f"/../{tmp_path.name}-sibling", "/%2e%2e/empty"):
            assert get(path)[0] == 404, path
        assert server.bytes_served == len(data) + 10 + 10 + 5 + 7  # file bytes only; HEAD sends none
        assert len(server.requests) == 12
        server.fail_next(1, status=503)
        assert get("/f.bin")[0] == 503
        assert get("/f.bin")[0] == 200
        server.reset()
        assert (server.bytes_served, server.requests) == (0, [])
        conn.close()
