"""Reading snapshots and repositories from remote stores, end to end through ``lamina.open``.

A ranged static HTTP server and a moto S3 server run on 127.0.0.1; every expected byte count is
derived from the manifest (file sizes, tensor byte ranges), never hard-coded. Nothing here touches
the user's cache: every open names a cache directory under ``tmp_path`` (or ``cache=False``) and
``LAMINA_CACHE`` points into ``tmp_path`` as well.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import s3fs
import torch
from servers import RangeHTTPServer, _Handler, free_port

import lamina
from lamina.format.codec import MANIFEST_NAME
from lamina.format.digests import file_hasher
from lamina.format.manifest import FileEntry, Manifest
from lamina.format.repository import blob_path, file_blob_path
from lamina.snapshot.cache import BlobCache

N_LAYERS = 24
IN_FEATURES = 64
SLACK = 64 << 10  # the allowance above "the layer's shard + the manifest"
HANG = 10.0  # seconds after which a call that should fail fast counts as hung


# ====================================================================== helpers
def make_model(seed: int) -> torch.nn.Sequential:
    """A 24-layer model whose layers ``layer0``..``layer23`` each hold a weight and a bias, of growing sizes."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(OrderedDict(
        (f"layer{i}", torch.nn.Linear(IN_FEATURES, IN_FEATURES // 2 + 8 * i)) for i in range(N_LAYERS)))


def state_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def of_layer(state: dict[str, torch.Tensor], layer: str) -> dict[str, torch.Tensor]:
    return {name: t for name, t in state.items() if name.rpartition(".")[0] == layer}


def assert_bit_exact(got: dict[str, Any], want: dict[str, torch.Tensor]) -> None:
    """Same names, dtypes, shapes and bytes."""
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        value = got[name]
        assert isinstance(value, torch.Tensor), name
        assert (value.dtype, value.shape) == (expected.dtype, expected.shape), name
        assert value.contiguous().numpy().tobytes() == expected.contiguous().numpy().tobytes(), name


def shard_of(manifest: Manifest, layer: str) -> FileEntry:
    """The file entry of the one shard that holds ``layer``."""
    paths = {t.file for t in manifest.tensors if t.layer == layer}
    assert len(paths) == 1, paths
    (path,) = paths
    return next(f for f in manifest.files if f.path == path)


def data_span(manifest: Manifest, path: str) -> tuple[int, int]:
    """``[first tensor byte, last tensor byte + 1)`` of a shard, from the manifest."""
    entries = [t for t in manifest.tensors if t.file == path]
    return min(t.begin for t in entries), max(t.end for t in entries)


def digest_of(path: Path, entry: FileEntry) -> str:
    """The file's content address under ``entry``'s algorithm (lt1 for 1.3 snapshots)."""
    hasher = file_hasher(entry.digest[0])
    hasher.update(path.read_bytes())
    return hasher.hexdigest()


def flip_tail(path: Path, n: int = 16) -> None:
    """Invert the last ``n`` bytes of a file (tensor data; the length and header stay the same)."""
    data = bytearray(path.read_bytes())
    for i in range(len(data) - n, len(data)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def shard_gets(server: RangeHTTPServer, url_path: str) -> list[str | None]:
    """The Range headers of the GET requests the server saw for one file."""
    return [rng for method, path, rng in server.requests if method == "GET" and path == url_path]


def fails_within(limit: float, error: type[BaseException], call: Callable[[], object]) -> BaseException:
    """Run ``call`` on a thread; it must raise ``error`` before ``limit`` seconds (a hang fails the test)."""
    outcome: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            call()
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still running after {limit} s: a hang, not a fast failure"
    assert time.monotonic() - started < limit
    raised = outcome["error"]
    assert isinstance(raised, error), f"expected {error.__name__}, got {raised!r}"
    return raised


class _IgnoresRange(_Handler):
    """A static server without Range support: every GET is answered 200 with the whole file."""

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            del self.headers["Range"]
        return ok


class _CapsRanges(_Handler):
    """A gateway that answers any range with at most 1000 bytes (206 with the shorter Content-Range)."""

    def parse_request(self) -> bool:
        ok = super().parse_request()
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "") or "") if ok else None
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else start + 999, start + 999)
            del self.headers["Range"]
            self.headers["Range"] = f"bytes={start}-{end}"
        return ok


@dataclass
class InFlight:
    """Requests being answered right now, and the most seen at once."""

    lock: threading.Lock
    now: int = 0
    peak: int = 0


def tracking_handler(tracker: InFlight, delay: float) -> type[_Handler]:
    """A handler class that records concurrent requests (each held ``delay`` seconds so overlaps show)."""

    class Tracking(_Handler):
        def _answer(self, body: bool) -> None:
            with tracker.lock:
                tracker.now += 1
                tracker.peak = max(tracker.peak, tracker.now)
            try:
                time.sleep(delay)
                super()._answer(body)
            finally:
                with tracker.lock:
                    tracker.now -= 1

    return Tracking


# ====================================================================== fixtures
@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the default cache into tmp_path and start each test with no cache entries verified."""
    default = tmp_path / "default-cache"
    monkeypatch.setenv("LAMINA_CACHE", str(default))
    monkeypatch.setattr(BlobCache, "_verified", {})
    yield default


@dataclass
class Site:
    """A snapshot directory served over HTTP."""

    server: RangeHTTPServer
    root: Path  # the served directory
    snap: Path  # the snapshot directory under it
    url: str  # the snapshot's URL
    state: dict[str, torch.Tensor]  # what was saved
    manifest: Manifest
    manifest_size: int


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """The 24-layer model saved with lamina.save under a RangeHTTPServer."""
    root = tmp_path / "www"
    model = make_model(0)
    art = lamina.save(model, root / "snap", info={"name": "remote"})
    with RangeHTTPServer(root) as server:
        yield Site(server, root, root / "snap", f"{server.url}/snap", state_of(model), art.manifest,
                   (root / "snap" / MANIFEST_NAME).stat().st_size)


@dataclass
class RepoSite:
    """A local repository (v1 tagged, v2 on main) served over HTTP."""

    server: RangeHTTPServer
    path: Path
    url: str
    v1: dict[str, torch.Tensor]
    v2: dict[str, torch.Tensor]
    local: lamina.Repo


@pytest.fixture
def repo_site(tmp_path: Path) -> Iterator[RepoSite]:
    """Two revisions saved into a local repository, then served read-only over HTTP."""
    root = tmp_path / "www"
    local = lamina.Repo(root / "repo")
    first, second = make_model(1), make_model(2)
    local.save(first, tag="v1", message="first")
    local.save(second, message="second")
    with RangeHTTPServer(root) as server:
        yield RepoSite(server, root / "repo", f"{server.url}/repo", state_of(first), state_of(second), local)


# ====================================================================== 1. lazy reads over HTTP
@pytest.mark.parametrize("layer", ["layer0", "layer13", f"layer{N_LAYERS - 1}"])
def test_http_layer_read_transfers_only_that_shard(site: Site, layer: str) -> None:
    """open + layer() over HTTP without a cache moves at most shard + manifest + 64 KiB, and is bit-exact."""
    shard = shard_of(site.manifest, layer)
    others = sum(f.size for f in site.manifest.files if f.path != shard.path)
    assert others > shard.size + SLACK  # the budget really excludes the rest of the model
    site.server.reset()
    art = lamina.open(site.url, cache=False)
    got = art.layer(layer)
    assert_bit_exact(got, of_layer(site.state, layer))
    begin, end = data_span(site.manifest, shard.path)
    assert end - begin <= site.server.bytes_served - site.manifest_size  # the tensors themselves came over
    assert site.server.bytes_served <= shard.size + site.manifest_size + SLACK
    touched = {path for _, path, _ in site.server.requests}
    assert touched == {f"/snap/{MANIFEST_NAME}", f"/snap/{shard.path}"}


def test_http_cache_fetches_shard_once_then_reads_locally(site: Site, tmp_path: Path,
                                                         _isolated_cache: Path) -> None:
    """With a cache the first read downloads the whole shard once; a second open + read serves 0 bytes."""
    layer = "layer7"
    shard = shard_of(site.manifest, layer)
    cache = tmp_path / "cache"
    site.server.reset()
    art = lamina.open(site.url, cache=cache)
    assert site.server.bytes_served == site.manifest_size
    site.server.reset()
    first = art.layer(layer)
    assert site.server.bytes_served == shard.size
    assert shard_gets(site.server, f"/snap/{shard.path}") == [None]  # one whole-file GET, no ranges
    cached = cache / file_blob_path(shard)  # blobs/lt1/.. for a 1.3 snapshot
    assert cached.stat().st_size == shard.size and digest_of(cached, shard) == shard.digest[1]
    assert_bit_exact(first, of_layer(site.state, layer))

    site.server.reset()
    again = lamina.open(site.url, cache=cache)
    assert site.server.bytes_served == site.manifest_size  # the manifest is always fetched fresh
    site.server.reset()
    second = again.layer(layer)
    assert site.server.bytes_served == 0 and site.server.requests == []
    assert_bit_exact(second, first)
    assert not _isolated_cache.exists()  # the explicit directory was used, not the default one


# ====================================================================== 2. cache integrity
def test_corrupted_and_truncated_cache_entries_are_refetched(site: Site, tmp_path: Path) -> None:
    """A cache entry with flipped bytes and one cut short are detected, fetched again and repaired."""
    cache = tmp_path / "cache"
    flipped_layer, cut_layer = "layer3", "layer11"
    flipped, cut = shard_of(site.manifest, flipped_layer), shard_of(site.manifest, cut_layer)
    art = lamina.open(site.url, cache=cache)
    art.layer(flipped_layer)
    art.layer(cut_layer)
    flipped_path, cut_path = cache / file_blob_path(flipped), cache / file_blob_path(cut)
    flip_tail(flipped_path)
    assert flipped_path.stat().st_size == flipped.size and digest_of(flipped_path, flipped) != flipped.digest[1]
    os.truncate(cut_path, cut.size // 2)

    BlobCache._verified.clear()  # what a new process knows about this cache: nothing
    reopened = lamina.open(site.url, cache=cache)
    site.server.reset()
    assert_bit_exact(reopened.layer(flipped_layer), of_layer(site.state, flipped_layer))
    assert site.server.bytes_served == flipped.size
    site.server.reset()
    assert_bit_exact(reopened.layer(cut_layer), of_layer(site.state, cut_layer))
    assert site.server.bytes_served == cut.size
    for entry, path in ((flipped, flipped_path), (cut, cut_path)):
        assert path.stat().st_size == entry.size and digest_of(path, entry) == entry.digest[1]  # repaired in place

    BlobCache._verified.clear()
    site.server.reset()
    assert_bit_exact(lamina.open(site.url, cache=cache).layer(cut_layer), of_layer(site.state, cut_layer))
    assert site.server.bytes_served == site.manifest_size  # the repaired entry is used again


def test_server_serving_wrong_bytes_raises_and_caches_nothing(site: Site, tmp_path: Path) -> None:
    """A shard whose served bytes differ from the manifest (same length) raises IntegrityError; no blob is kept."""
    cache = tmp_path / "cache"
    layer = "layer5"
    shard = shard_of(site.manifest, layer)
    art = lamina.open(site.url, cache=cache)
    flip_tail(site.snap / shard.path)
    assert (site.snap / shard.path).stat().st_size == shard.size
    for _ in range(2):  # and again: nothing bad was cached by the first attempt
        error = fails_within(HANG, lamina.IntegrityError, lambda: art.layer(layer))
        assert shard.path in str(error)
        assert [path for path, _ in error.files] == [shard.path]  # type: ignore[attr-defined]
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert not any(p.name == shard.digest[1] for p in leftovers)
    assert not any(p.name.startswith(".lamina-") for p in leftovers)  # no half-written download either
    assert_bit_exact(art.layer("layer6"), of_layer(site.state, "layer6"))  # other shards are unaffected


# ====================================================================== 3. full remote loads
@pytest.mark.parametrize("workers", [1, 8])
def test_http_state_dict_is_bit_exact_and_concurrent(site: Site, workers: int) -> None:
    """state_dict() over HTTP is bit-exact; max_concurrency bounds the requests in flight (1 stays serial)."""
    tracker = InFlight(threading.Lock())
    site.server._httpd.RequestHandlerClass = tracking_handler(tracker, delay=0.005)
    art = lamina.open(site.url, cache=False, max_concurrency=workers)
    site.server.reset()
    tracker.peak = 0
    assert_bit_exact(art.state_dict(), site.state)
    if workers == 1:
        assert tracker.peak == 1
    else:
        assert 2 <= tracker.peak <= workers  # requests overlapped, never more than asked for
    weights = [f for f in site.manifest.files if f.role == "weights"]
    assert site.server.bytes_served == sum(f.size for f in weights)  # each shard byte exactly once


def test_adjacent_tensors_of_a_shard_come_in_one_request(site: Site) -> None:
    """Per shard: one request fetching header and weight+bias together (its Content-Range gives the
    size, so no HEAD); no per-tensor requests."""
    art = lamina.open(site.url, cache=False, max_concurrency=8)
    site.server.reset()
    art.state_dict()
    weights = [f for f in site.manifest.files if f.role == "weights"]
    assert len(weights) == N_LAYERS
    for entry in weights:
        assert len([t for t in site.manifest.tensors if t.file == entry.path]) >= 2
        _, end = data_span(site.manifest, entry.path)
        requests = [(m, r) for m, p, r in site.server.requests if p == f"/snap/{entry.path}"]
        assert requests == [("GET", f"bytes=0-{end - 1}")], (entry.path, requests)
    assert {path for _, path, _ in site.server.requests} == {f"/snap/{f.path}" for f in weights}  # no index read


def test_single_tensor_reads_header_then_exact_range(site: Site) -> None:
    """One tensor that does not start right after the header: a header request, then exactly its bytes."""
    art = lamina.open(site.url, cache=False)
    entry = max((t for t in site.manifest.tensors), key=lambda t: t.begin)  # the last tensor of its shard
    site.server.reset()
    art.tensor(entry.name)
    requests = [r for _, p, r in site.server.requests if p == f"/snap/{entry.file}"]
    assert len(requests) == 2 and requests[1] == f"bytes={entry.begin}-{entry.end - 1}", requests
    assert site.server.bytes_served < entry.end - entry.begin + 64 * 1024


def test_verify_over_http_without_cache(site: Site) -> None:
    """Artifact.verify() over HTTP (cache=False) passes on an intact snapshot and names a tampered shard."""
    lamina.open(site.url, cache=False).verify()
    shard = shard_of(site.manifest, "layer4")
    flip_tail(site.snap / shard.path)
    error = fails_within(HANG, lamina.IntegrityError, lambda: lamina.open(site.url, cache=False).verify())
    assert error.files == [(shard.path, "lt1 mismatch")]  # type: ignore[attr-defined]


def test_verify_over_http_with_cache(site: Site, tmp_path: Path) -> None:
    """Artifact.verify() over HTTP with a cache passes on an intact snapshot (HTTP cannot list files)
    and checks the server's bytes, not the cache: every file is served, nothing is cached."""
    cache = tmp_path / "cache"
    art = lamina.open(site.url, cache=cache)
    site.server.reset()
    art.verify()
    assert site.server.bytes_served >= sum(entry.size for entry in site.manifest.files)
    assert not any(p.is_file() for p in cache.rglob("*")) if cache.exists() else True


# ====================================================================== 4. repositories over HTTP
def test_http_repository_revisions_and_budget(repo_site: RepoSite, tmp_path: Path) -> None:
    """url@v1 and url@main read their own revisions bit-exactly; one layer stays within its byte budget."""
    layer = "layer9"
    v1 = lamina.open(f"{repo_site.url}@v1", cache=False)
    assert_bit_exact(v1.state_dict(), repo_site.v1)
    assert_bit_exact(lamina.open(f"{repo_site.url}@main", cache=False).state_dict(), repo_site.v2)
    assert_bit_exact(lamina.open(repo_site.url, cache=False).layer(layer), of_layer(repo_site.v2, layer))

    revision = repo_site.local.revision("v1")
    manifest_size = (repo_site.path / blob_path(revision.snapshot)).stat().st_size
    shard = shard_of(v1.manifest, layer)
    repo_site.server.reset()
    got = lamina.open(f"{repo_site.url}@v1", cache=False).layer(layer)
    assert_bit_exact(got, of_layer(repo_site.v1, layer))
    assert repo_site.server.bytes_served <= shard.size + manifest_size + SLACK
    other_blobs = {f"/repo/{file_blob_path(f)}" for f in v1.manifest.files if f.path != shard.path}
    assert not other_blobs & {path for _, path, _ in repo_site.server.requests}

    cache = tmp_path / "cache"
    warm = lamina.open(f"{repo_site.url}@main", cache=cache)
    main_shard = shard_of(warm.manifest, layer)
    repo_site.server.reset()
    warm.layer(layer)
    assert repo_site.server.bytes_served == main_shard.size  # the whole blob, once
    repo_site.server.reset()
    cached = lamina.open(f"{repo_site.url}@main", cache=cache).layer(layer)
    assert_bit_exact(cached, of_layer(repo_site.v2, layer))
    assert f"/repo/{file_blob_path(main_shard)}" not in {p for _, p, _ in repo_site.server.requests}


def test_http_repository_log(repo_site: RepoSite) -> None:
    """Repo(url).log() follows the history over HTTP, same as the local repository."""
    remote = lamina.Repo(repo_site.url, cache=False)
    assert remote.exists()
    log = remote.log()
    assert [r.id for r in log] == [r.id for r in repo_site.local.log()]
    assert [r.message for r in log] == ["second", "first"]
    assert remote.revision("v1").id == repo_site.local.revision("v1").id


def test_http_repository_is_read_only(repo_site: RepoSite, site: Site) -> None:
    """Pushing to an http(s) repository raises StorageError and writes nothing."""
    before = sorted(p.relative_to(repo_site.path) for p in repo_site.path.rglob("*"))
    remote = lamina.Repo(repo_site.url, cache=False)
    error = fails_within(HANG, lamina.StorageError, lambda: remote.push(site.snap, message="nope"))
    assert "read-only" in str(error)
    assert all(method in ("GET", "HEAD") for method, _, _ in repo_site.server.requests)
    assert sorted(p.relative_to(repo_site.path) for p in repo_site.path.rglob("*")) == before


# ====================================================================== 5. S3 (moto)
def upload_dir(s3_client: Any, bucket: str, prefix: str, directory: Path) -> int:
    """Put every file under ``directory`` at ``prefix/<relative path>``; returns how many."""
    files = [p for p in directory.rglob("*") if p.is_file()]
    for path in files:
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(directory).as_posix()}",
                             Body=path.read_bytes())
    return len(files)


def test_s3_snapshot_and_repository(tmp_path: Path, s3_client: Any, s3_bucket: str,
                                    s3_options: dict[str, Any], _isolated_cache: Path) -> None:
    """A snapshot uploaded to S3 reads bit-exactly without a cache; a repository saved to S3 reads through one."""
    model = make_model(4)
    art = lamina.save(model, tmp_path / "snap")
    assert upload_dir(s3_client, s3_bucket, "snap", tmp_path / "snap") == len(art.manifest.files) + 1
    remote = lamina.open(f"s3://{s3_bucket}/snap", storage_options=s3_options, cache=False)
    state = state_of(model)
    assert_bit_exact(remote.layer("layer2"), of_layer(state, "layer2"))
    assert_bit_exact(remote.state_dict(), state)

    first, second = make_model(5), make_model(6)
    repo = lamina.Repo(f"s3://{s3_bucket}/repo", storage_options=s3_options, cache=False)
    repo.save(first, tag="v1")
    repo.save(second)
    cache = tmp_path / "cache"
    main = lamina.open(f"s3://{s3_bucket}/repo@main", storage_options=s3_options, cache=cache)
    assert_bit_exact(main.layer("layer4"), of_layer(state_of(second), "layer4"))
    shard = shard_of(main.manifest, "layer4")
    assert digest_of(cache / file_blob_path(shard), shard) == shard.digest[1]
    assert_bit_exact(lamina.open(f"s3://{s3_bucket}/repo@v1", storage_options=s3_options, cache=cache).state_dict(),
                     state_of(first))
    assert not _isolated_cache.exists()


def test_s3_configured_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str,
                                            s3_client: Any, s3_bucket: str, s3_options: dict[str, Any]) -> None:
    """With only AWS_* environment variables (no storage_options) snapshots and repositories open on S3."""
    model = make_model(7)
    lamina.save(model, tmp_path / "snap")
    upload_dir(s3_client, s3_bucket, "snap", tmp_path / "snap")
    lamina.Repo(f"s3://{s3_bucket}/repo", storage_options=s3_options, cache=False).save(model)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": s3_endpoint,
                        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    # fsspec reuses S3FileSystem instances by constructor arguments; one made under another
    # environment would be handed back here, so start (and leave) with none cached.
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        state = state_of(model)
        snap = lamina.open(f"s3://{s3_bucket}/snap", cache=False)
        assert_bit_exact(snap.layer("layer1"), of_layer(state, "layer1"))
        repo = lamina.open(f"s3://{s3_bucket}/repo@main", cache=tmp_path / "cache")
        assert_bit_exact(repo.state_dict(), state)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


# ====================================================================== 6. bad input
def test_nothing_listening_is_a_storage_error() -> None:
    """A URL whose port nobody listens on fails fast with StorageError naming the URL."""
    url = f"http://127.0.0.1:{free_port()}/snap"
    error = fails_within(HANG, lamina.StorageError, lambda: lamina.open(url, cache=False))
    assert url in str(error)


def test_server_answering_503_forever(site: Site) -> None:
    """503 on every request ends, after the bounded retries, in StorageError mentioning 503."""
    retries = 2
    site.server.reset()
    site.server.fail_next(1000)
    error = fails_within(HANG, lamina.StorageError,
                         lambda: lamina.open(site.url, cache=False, storage_options={"retries": retries}))
    assert "503" in str(error) and MANIFEST_NAME in str(error)
    assert len(site.server.requests) == retries + 1
    site.server.reset()
    site.server.fail_next(1000)
    error = fails_within(HANG, lamina.StorageError, lambda: lamina.open(site.url, cache=False))  # default retries
    assert "503" in str(error)
    assert 1 < len(site.server.requests) < 1000  # retried, but gave up


def test_missing_manifest_is_not_found(site: Site) -> None:
    """A URL with no manifest.msgpack (404) raises NotFoundError naming the location and the manifest."""
    (site.root / "empty").mkdir()
    (site.root / "empty" / "README").write_text("not a snapshot")
    url = f"{site.server.url}/empty"
    error = fails_within(HANG, lamina.NotFoundError, lambda: lamina.open(url, cache=False))
    assert url in str(error) and MANIFEST_NAME in str(error)


@pytest.mark.parametrize("location, needles", [
    ("foo://x", ("foo", "pip install")),  # a scheme nobody knows
    ("ftpx://host/snap", ("ftpx", "pip install")),  # ftp-like, but unknown
    ("sftp://host/snap", ("sftp", "pip install")),  # known to fsspec, its backend not installed
])
def test_unsupported_schemes_are_format_errors(location: str, needles: tuple[str, ...]) -> None:
    """A scheme lamina cannot read raises FormatError naming it and the pip install that would help."""
    error = fails_within(HANG, lamina.FormatError, lambda: lamina.open(location, cache=False))
    for needle in needles:
        assert needle in str(error), (needle, str(error))


def test_unknown_ref_over_http_is_not_found(repo_site: RepoSite) -> None:
    """url@nope on an HTTP repository raises NotFoundError naming 'nope'."""
    error = fails_within(HANG, lamina.NotFoundError, lambda: lamina.open(f"{repo_site.url}@nope", cache=False))
    assert "'nope'" in str(error)


def test_ref_on_a_plain_snapshot_is_not_found(site: Site) -> None:
    """url@v1 where url is a snapshot, not a repository, raises NotFoundError naming the ref."""
    error = fails_within(HANG, lamina.NotFoundError, lambda: lamina.open(f"{site.url}@v1", cache=False))
    assert "'v1'" in str(error) and site.url in str(error)


def test_shard_truncated_after_open_is_an_integrity_error(site: Site) -> None:
    """A shard cut short on the server after open raises IntegrityError naming it (no cache)."""
    layer = "layer8"
    shard = shard_of(site.manifest, layer)
    art = lamina.open(site.url, cache=False)
    os.truncate(site.snap / shard.path, shard.size // 2)
    error = fails_within(HANG, lamina.IntegrityError, lambda: art.layer(layer))
    assert shard.path in str(error) and "truncated" in str(error)
    assert_bit_exact(art.layer("layer9"), of_layer(site.state, "layer9"))


def test_shard_changed_in_place_or_grown_on_the_server_is_an_integrity_error(site: Site) -> None:
    """A whole layer comes in one request (header and data straight into the tensors); the size
    and header that came back are still checked before anything is returned."""
    art = lamina.open(site.url, cache=False)
    header_layer, grown_layer = "layer3", "layer4"
    shard = site.snap / shard_of(site.manifest, header_layer).path
    data = bytearray(shard.read_bytes())
    data[data.index(b'"shape":[') + len(b'"shape":[')] ^= 0x01  # a digit of a shape: same size
    shard.write_bytes(bytes(data))
    error = fails_within(HANG, lamina.IntegrityError, lambda: art.layer(header_layer))
    assert shard_of(site.manifest, header_layer).path in str(error)
    assert "header" in str(error) or "does not match the manifest" in str(error)
    grown = site.snap / shard_of(site.manifest, grown_layer).path
    grown.write_bytes(grown.read_bytes() + b"\0" * 8)
    error = fails_within(HANG, lamina.IntegrityError, lambda: lamina.open(site.url, cache=False).layer(grown_layer))
    assert "grown" in str(error)
    assert_bit_exact(art.layer("layer9"), of_layer(site.state, "layer9"))


def test_server_ignoring_range_is_a_storage_error(site: Site) -> None:
    """A server that answers ranged GETs with 200 and the whole file raises StorageError about Range."""
    site.server._httpd.RequestHandlerClass = _IgnoresRange
    art = lamina.open(site.url, cache=False)  # the manifest is one whole-file GET: fine
    error = fails_within(HANG, lamina.StorageError, lambda: art.layer("layer2"))
    assert "Range" in str(error) and shard_of(site.manifest, "layer2").path in str(error)


def test_server_capping_range_sizes_is_read_completely(site: Site) -> None:
    """A server that answers long ranges with shorter 206s: the reader asks for the rest, tensors exact."""
    site.server._httpd.RequestHandlerClass = _CapsRanges
    art = lamina.open(site.url, cache=False)
    assert_bit_exact(art.layer("layer2"), of_layer(site.state, "layer2"))
    entry = max(site.manifest.tensors, key=lambda t: t.begin)
    assert torch.equal(art.tensor(entry.name), site.state[entry.name])


# ====================================================================== 7. the CLI
def _lamina_cli(args: list[str], cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LAMINA_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "lamina", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@dataclass
class CliRuns:
    manifest: Manifest
    url: str
    tampered: str  # the shard path changed on the server between the two rounds
    inspect: subprocess.CompletedProcess[str]
    verify: subprocess.CompletedProcess[str]
    verify_tampered_fresh_cache: subprocess.CompletedProcess[str]
    verify_tampered_warm_cache: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRuns]:
    """`lamina inspect` and `lamina verify` on a served snapshot, then `verify` again after a shard is
    tampered with on the server: with a fresh cache and with the cache the first verify filled."""
    base = tmp_path_factory.mktemp("cli")
    art = lamina.save(make_model(8), base / "www" / "snap")
    tampered = shard_of(art.manifest, "layer5").path
    with RangeHTTPServer(base / "www") as server:
        url = f"{server.url}/snap"
        inspect, verify = map(_finish, [_lamina_cli(["inspect", url], base / "cache-a"),
                                        _lamina_cli(["verify", url], base / "cache-a")])
        flip_tail(base / "www" / "snap" / tampered)
        fresh, warm = map(_finish, [_lamina_cli(["verify", url], base / "cache-b"),
                                    _lamina_cli(["verify", url], base / "cache-a")])
    yield CliRuns(art.manifest, url, tampered, inspect, verify, fresh, warm)


def test_cli_inspect_over_http(cli_runs: CliRuns) -> None:
    """`lamina inspect URL` prints every layer of a served snapshot."""
    inspect = cli_runs.inspect
    assert inspect.returncode == 0, inspect.stderr
    assert cli_runs.url in inspect.stdout
    for layer in cli_runs.manifest.layers:
        assert layer in inspect.stdout


def test_cli_verify_over_http(cli_runs: CliRuns) -> None:
    """`lamina verify URL` on an intact served snapshot prints OK with the number of files."""
    verify = cli_runs.verify
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith(f"OK {cli_runs.url}: {len(cli_runs.manifest.files)} files")


def test_cli_verify_tampered_shard_over_http(cli_runs: CliRuns) -> None:
    """`lamina verify URL` (nothing cached yet) exits 1 naming the shard tampered with on the server."""
    bad = cli_runs.verify_tampered_fresh_cache
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert f"FAILED {cli_runs.tampered}" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_verify_checks_the_server_not_a_warm_cache(cli_runs: CliRuns) -> None:
    """`lamina verify URL` after a shard was tampered with on the server exits 1 even though an earlier
    verify left good copies in the cache (it must check the snapshot at URL, not local copies)."""
    bad = cli_runs.verify_tampered_warm_cache
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert f"FAILED {cli_runs.tampered}" in bad.stderr
