"""Repositories (format_spec/repository.md): push and save with deduplication, history, lazy reads,
pull, diff, tags and branches, concurrent and killed pushes, garbage collection, fsck and the CLI,
on a local directory and on S3 (a moto server on 127.0.0.1, through s3fs).

Everything is real: files on disk, an S3 server, subprocesses for the CLI and for killed or
concurrent writers. Expected values are derived from the inputs and the snapshots' own manifests.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import (
    assert_clean_cli_error,
    cli,
    cli_parallel,
    leftovers,
    wait_for_line,
)

import lamina
from lamina import PushResult, Repo
from lamina.format.digests import file_hasher
from lamina.repo.markers import TTL

N_LAYERS = 24
SIDE = 128  # a 128 x 128 float32 layer: 64 KiB
HEX64 = re.compile(r"[0-9a-f]{64}")
LAYOUT_PATH = re.compile(r"lamina-repo\.json|blobs/(sha256|lt1)/([0-9a-f]{2})/([0-9a-f]{64})|revisions/[0-9a-f]{64}"
                         r"|refs/(heads|tags)/[A-Za-z0-9._/-]+|locks/((push|wait)-[0-9a-f]+|gc)")


# ---------------------------------------------------------------------------- helpers
def blob_path(name: str, algorithm: str = "sha256") -> str:
    """The blob of a content address, as repository.md §1 lays it out (manifests: sha256)."""
    return f"blobs/{algorithm}/{name[:2]}/{name}"


def file_blob(entry: Any) -> str:
    """The blob of a snapshot file: under its entry's algorithm (lt1 for format 1.3 files)."""
    algorithm, name = entry.digest
    return blob_path(name, algorithm)


def model_tensors(seed: int, layers: int = N_LAYERS, side: int = SIDE) -> dict[str, np.ndarray]:
    """``layer{i}.weight`` arrays (one layer each) drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    return {f"layer{i}.weight": rng.standard_normal((side, side), dtype=np.float32) for i in range(layers)}


def with_layer(tensors: dict[str, np.ndarray], index: int, seed: int) -> dict[str, np.ndarray]:
    """A copy of ``tensors`` whose layer ``index`` holds new random values."""
    out = dict(tensors)
    name = f"layer{index}.weight"
    out[name] = np.random.default_rng(seed).standard_normal(tensors[name].shape, dtype=np.float32)
    return out


def blob_sizes(repo: Repo) -> dict[str, int]:
    """content address -> size of every blob the store holds (names are unique across algorithms)."""
    return {p.rsplit("/", 1)[1]: repo.store.size(p) for p in repo.store.list("blobs/")}


def manifest_bytes(repo: Repo, snapshot: str) -> bytes:
    """The manifest blob of a snapshot, checked against its name."""
    data = repo.store.read(blob_path(snapshot))
    assert hashlib.sha256(data).hexdigest() == snapshot
    return data


def shard_of(manifest: Any, layer: str) -> Any:
    """The FileEntry of a layer's weight shard."""
    path = next(t.file for t in manifest.tensors if t.layer == layer)
    return next(f for f in manifest.files if f.path == path)


def snapshot_blobs(repo: Repo, revision_id: str) -> set[str]:
    """Every blob a revision's snapshot uses: its manifest and each file it lists."""
    revision = repo.revision(revision_id)
    manifest = repo.open(revision.id).manifest
    return {revision.snapshot} | {f.digest[1] for f in manifest.files}


def reachable(repo: Repo) -> tuple[set[str], set[str]]:
    """(revision ids, blob shas) reachable from every branch and tag through all parents."""
    revisions: set[str] = set()
    pending = list(repo.branches().values()) + list(repo.tags().values())
    while pending:
        rid = pending.pop()
        if rid not in revisions:
            revisions.add(rid)
            pending += list(repo.revision(rid).parents)
    blobs: set[str] = set()
    for rid in revisions:
        blobs |= snapshot_blobs(repo, rid)
    return revisions, blobs


def listed_revisions(repo: Repo) -> set[str]:
    return {p.rsplit("/", 1)[1] for p in repo.store.list("revisions/")}


def assert_tensors_equal(got: dict[str, Any], want: dict[str, np.ndarray]) -> None:
    """Same names, dtypes, shapes and bits."""
    assert sorted(got) == sorted(want)
    for name, array in want.items():
        value = np.asarray(got[name])
        assert value.dtype == array.dtype and value.shape == array.shape, name
        assert value.tobytes() == array.tobytes(), name


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def local_blob_file(repo_dir: Path, name: str) -> Path:
    found = list(repo_dir.glob(f"blobs/*/{name[:2]}/{name}"))
    assert len(found) == 1, (name, found)
    return found[0]


def login_name() -> str:
    """The user part of the default author (repository.md §3: ``user@host``)."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@dataclass
class Where:
    """A repository location and the storage options to reach it."""

    kind: str
    url: str
    options: dict[str, Any] | None

    def repo(self) -> Repo:
        return Repo(self.url, storage_options=self.options)

    def open(self, ref: str | None = None) -> lamina.Artifact:
        return lamina.open(self.url if ref is None else f"{self.url}@{ref}", storage_options=self.options)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote reads cache blobs under this test's directory, never in the user's cache."""
    monkeypatch.setenv("LAMINA_CACHE", str(tmp_path / "cache"))


@pytest.fixture(params=["local", "s3"])
def repo_location(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    """A not-yet-created repository on a local directory or in a fresh S3 bucket."""
    if request.param == "local":
        return Where("local", str(tmp_path / "repo"), None)
    bucket = request.getfixturevalue("s3_bucket")
    return Where("s3", f"s3://{bucket}/models/repo", request.getfixturevalue("s3_options"))


@pytest.fixture
def local_repo(tmp_path: Path) -> Where:
    return Where("local", str(tmp_path / "repo"), None)


@dataclass
class History:
    """A repository with v1 (tagged ``v1.0``, pushed from a directory) and v2 on main (saved)."""

    where: Where
    repo: Repo
    v1: dict[str, np.ndarray]
    v2: dict[str, np.ndarray]
    v1_dir: Path
    changed: int
    first: PushResult
    second: PushResult
    started: datetime
    finished: datetime


def make_history(where: Where, tmp_path: Path, layers: int = N_LAYERS, side: int = SIDE) -> History:
    started = datetime.now(timezone.utc)
    repo = where.repo()
    v1 = model_tensors(1, layers, side)
    v1_dir = tmp_path / "v1-snap"
    lamina.save(v1, v1_dir, info={"name": "stack"})
    first = repo.push(v1_dir, message="first", tag="v1.0", author="Ada <ada@example.com>")
    changed = layers // 3
    v2 = with_layer(v1, changed, 1000)
    second = repo.save(v2, message="second", info={"name": "stack"})
    return History(where, repo, v1, v2, v1_dir, changed, first, second, started, datetime.now(timezone.utc))


@pytest.fixture
def history(repo_location: Where, tmp_path: Path) -> History:
    return make_history(repo_location, tmp_path)


@pytest.fixture
def small(local_repo: Where, tmp_path: Path) -> History:
    """A small local repository (4 layers of 16 x 16) for corruption tests."""
    return make_history(local_repo, tmp_path, layers=4, side=16)


# ---------------------------------------------------------------------------- 1. push and dedup
def publish(method: str, where: Where, tensors: dict[str, np.ndarray], tmp_path: Path, name: str, message: str,
            tag: str | None = None) -> PushResult | None:
    """Publish ``tensors`` to main by ``method``; the PushResult where the method returns one."""
    if method == "push":
        lamina.save(tensors, tmp_path / name)
        return where.repo().push(tmp_path / name, message=message, tag=tag)
    if method == "save":
        return where.repo().save(tensors, message=message, tag=tag)
    art = lamina.save(tensors, f"{where.url}@main", storage_options=where.options, message=message)
    assert art.keys() == list(tensors)
    return None


@pytest.mark.parametrize("method", ["push", "save", "lamina.save"])
def test_second_publish_uploads_only_the_changed_layer(method: str, repo_location: Where, tmp_path: Path) -> None:
    """A new revision differing in one layer stores exactly that shard and the manifest, no more."""
    repo = repo_location.repo()
    v1 = model_tensors(7)
    first = publish(method, repo_location, v1, tmp_path, "a", "v1", tag=None if method == "lamina.save" else "v1.0")
    head1 = repo.revision("main")
    files1 = repo.open("main").manifest.files
    if first is not None:
        distinct = {f.digest[1]: f.size for f in files1}
        assert first.parent is None and first.created and first.revision == head1.id
        assert first.uploaded_files == len(distinct) + 1
        assert first.uploaded_bytes == sum(distinct.values()) + len(manifest_bytes(repo, head1.snapshot))
        assert first.reused_files == len(files1) - len(distinct)
    before = blob_sizes(repo)

    changed = 11
    v2 = with_layer(v1, changed, 77)
    second = publish(method, repo_location, v2, tmp_path, "b", "v2")
    after = blob_sizes(repo)
    head = repo.revision("main")
    art = repo.open("main")
    shard = shard_of(art.manifest, f"layer{changed}")
    manifest = manifest_bytes(repo, head.snapshot)
    expected = {shard.digest[1]: shard.size, head.snapshot: len(manifest)}

    assert head.parents == (head1.id,) and head.message == "v2"
    assert set(before) <= set(after)
    assert {h: after[h] for h in set(after) - set(before)} == expected
    assert_tensors_equal(art.state_dict(framework="np"), v2)
    if method == "push":
        assert (tmp_path / "b" / "manifest.msgpack").read_bytes() == manifest
    if second is not None:
        assert (second.revision, second.snapshot, second.parent) == (head.id, head.snapshot, head1.id)
        assert second.created and second.branch == "main"
        assert second.uploaded_files == 2
        assert second.uploaded_bytes == shard.size + len(manifest) == sum(after[h] for h in expected)
        assert second.reused_files == len(art.manifest.files) - 1
        assert second.reused_bytes == sum(f.size for f in art.manifest.files if f.path != shard.path)


def test_pushing_the_head_again_creates_no_revision(local_repo: Where, tmp_path: Path) -> None:
    """Re-pushing the branch head's snapshot without a message uploads nothing and keeps the branch."""
    repo = local_repo.repo()
    lamina.save(model_tensors(3, 4, 16), tmp_path / "s")
    first = repo.push(tmp_path / "s", message="m")
    again = repo.push(tmp_path / "s")
    assert not again.created and again.revision == first.revision == repo.branches()["main"]
    assert again.uploaded_files == 0 and again.uploaded_bytes == 0
    assert again.reused_files == len(lamina.open(tmp_path / "s").manifest.files) + 1
    assert len(listed_revisions(repo)) == 1


def test_layout_on_the_store(history: History) -> None:
    """Marker, refs, revisions and blobs are the bytes repository.md prescribes."""
    store = history.repo.store
    assert json.loads(store.read("lamina-repo.json")) == {"format": "lamina-repo", "version": 1}
    assert store.read("refs/heads/main") == f"{history.second.revision}\n".encode("ascii")
    assert store.read("refs/tags/v1.0") == f"{history.first.revision}\n".encode("ascii")
    for path in store.list():
        assert LAYOUT_PATH.fullmatch(path), path
        assert not path.startswith("locks/"), path  # no push is running
    for path in store.list("blobs/"):
        algorithm, name = path.split("/")[1], path.rsplit("/", 1)[1]
        hasher = file_hasher(algorithm)
        hasher.update(store.read(path))
        assert path == blob_path(name, algorithm) and hasher.hexdigest() == name
    for rid in listed_revisions(history.repo):
        data = store.read(f"revisions/{rid}")
        assert hashlib.sha256(data).hexdigest() == rid
        body = json.loads(data)
        assert data == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert body["format"] == "lamina-revision" and body["version"] == 1
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["time"])


# ---------------------------------------------------------------------------- 2. history and reading
def test_log_records_history(history: History) -> None:
    """log: newest first, chained parents, messages, authors and times as pushed."""
    repo = history.repo
    log = repo.log("main")
    assert [r.id for r in log] == [history.second.revision, history.first.revision]
    assert log[0].parents == (log[1].id,) and log[1].parents == ()
    assert [r.message for r in log] == ["second", "first"]
    assert log[1].author == "Ada <ada@example.com>"
    assert log[0].author == f"{login_name()}@{socket.gethostname()}"
    assert history.started <= log[1].time <= log[0].time <= history.finished
    assert [r.snapshot for r in log] == [history.second.snapshot, history.first.snapshot]
    assert [r.id for r in repo.log("v1.0")] == [history.first.revision]
    assert [r.id for r in repo.log("main", limit=1)] == [history.second.revision]


def test_open_revisions_bit_exact(history: History) -> None:
    """open(tag) gives v1, open(main) v2; lamina.open(location@ref) and bare location agree."""
    repo, where = history.repo, history.where
    assert_tensors_equal(repo.open("v1.0").state_dict(framework="np"), history.v1)
    assert_tensors_equal(repo.open("main").state_dict(framework="np"), history.v2)
    assert_tensors_equal(where.open("v1.0").state_dict(framework="np"), history.v1)
    bare, main = where.open(), where.open("main")
    assert bare.manifest == main.manifest == repo.open("main").manifest
    assert_tensors_equal(bare.state_dict(framework="np"), history.v2)
    verified = repo.open("main", verify=True)
    assert verified.info.name == "stack"
    assert_tensors_equal(verified.state_dict(framework="np"), history.v2)


def test_lazy_artifact_api(history: History) -> None:
    """layer(), tensor() and load_into() on a revision read the right bytes."""
    import torch

    art = history.repo.open("main")
    name = f"layer{history.changed}.weight"
    assert art.layers == [f"layer{i}" for i in range(N_LAYERS)]
    layer = art.layer(f"layer{history.changed}", framework="np")
    assert_tensors_equal(layer, {name: history.v2[name]})
    assert torch.equal(art.tensor(name), torch.from_numpy(history.v2[name]))
    assert not np.array_equal(history.repo.open("v1.0").tensor(name, framework="np"), history.v2[name])

    module = torch.nn.Module()
    for i in range(N_LAYERS):
        module.add_module(f"layer{i}", torch.nn.Linear(SIDE, SIDE, bias=False))
    report = art.load_into(module)
    assert report.ok
    assert_tensors_equal({k: v.detach().numpy() for k, v in module.state_dict().items()}, history.v2)


def test_revision_prefix_and_unknown_ref(history: History) -> None:
    """A 12-digit id prefix resolves; an unknown ref is a NotFoundError naming it."""
    repo = history.repo
    rid = history.first.revision
    assert repo.revision(rid[:12]).id == rid
    assert repo.revision(rid).id == rid
    assert repo.open(rid[:12]).manifest == repo.open("v1.0").manifest
    assert_tensors_equal(history.where.open(rid[:12]).state_dict(framework="np"), history.v1)
    with pytest.raises(lamina.NotFoundError, match="no-such-branch"):
        repo.open("no-such-branch")
    with pytest.raises(lamina.NotFoundError, match="no-such-branch"):
        history.where.open("no-such-branch")
    missing = "0" * 12 if not rid.startswith("0" * 12) else "f" * 12
    with pytest.raises(lamina.NotFoundError, match=missing):
        repo.revision(missing)
    # two revision names sharing a 7-digit prefix: the prefix is ambiguous, a longer one is not
    twins = [rid[:7] + hashlib.sha256(bytes([i])).hexdigest()[7:] for i in range(2)]
    for twin in twins:
        repo.store.write(f"revisions/{twin}", b"{}")
    with pytest.raises(lamina.NotFoundError) as caught:
        repo.revision(rid[:7])
    assert all(name[:12] in str(caught.value) for name in [rid, *twins])
    assert repo.revision(rid[:20]).id == rid


# ---------------------------------------------------------------------------- 3. pull
def test_pull_reproduces_the_snapshot_byte_for_byte(history: History, tmp_path: Path) -> None:
    """pull writes a plain snapshot identical to the directory that was pushed, and verifies."""
    dst = tmp_path / "pulled"
    art = history.repo.pull("v1.0", dst)
    assert tree_bytes(dst) == tree_bytes(history.v1_dir)
    assert art.manifest == lamina.open(history.v1_dir).manifest
    lamina.open(dst).verify()
    assert leftovers(tmp_path) == []
    with pytest.raises(lamina.ExistsError, match="pulled"):
        history.repo.pull("main", dst)
    assert tree_bytes(dst) == tree_bytes(history.v1_dir)
    history.repo.pull("main", dst, overwrite=True)
    assert_tensors_equal(lamina.open(dst).state_dict(framework="np"), history.v2)


def test_pull_of_a_corrupted_blob_writes_nothing(small: History, tmp_path: Path) -> None:
    """A shard blob with same-length garbage: pull raises IntegrityError, leaves no dst and no temp dirs."""
    repo = small.repo
    manifest = repo.open("v1.0").manifest
    shard = shard_of(manifest, "layer0")
    blob = local_blob_file(Path(small.where.url), shard.digest[1])
    blob.write_bytes(bytes(b ^ 0xFF for b in blob.read_bytes()))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(lamina.IntegrityError) as caught:
        repo.pull("v1.0", out / "dst")
    assert shard.digest[1] in str(caught.value) or shard.digest[1][:12] in str(caught.value)
    assert list(out.iterdir()) == [] and leftovers(out) == []


def test_pull_of_a_missing_blob_writes_nothing(small: History, tmp_path: Path) -> None:
    """A deleted shard blob: pull raises IntegrityError naming the blob and writes nothing."""
    repo = small.repo
    shard = shard_of(repo.open("v1.0").manifest, "layer1")
    local_blob_file(Path(small.where.url), shard.digest[1]).unlink()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises((lamina.IntegrityError, lamina.NotFoundError), match=shard.digest[1]):
        repo.pull("v1.0", out / "dst")
    assert list(out.iterdir()) == [] and leftovers(out) == []


# ---------------------------------------------------------------------------- 4. diff
def test_diff_between_revisions(history: History, tmp_path: Path) -> None:
    """diff names exactly the changed, added and removed layers, with the manifests' shard sizes."""
    repo = history.repo
    old, new = repo.open("v1.0").manifest, repo.open("main").manifest
    d = repo.diff("v1.0", "main")
    target = f"layer{history.changed}"
    assert d.changed == [target] and d.added == [] and d.removed == []
    assert d.unchanged == [layer for layer in old.layers if layer != target]
    for entry in d.layers:
        assert (entry.old_bytes, entry.new_bytes) == (shard_of(old, entry.layer).size, shard_of(new, entry.layer).size)
    assert d.changed_bytes == shard_of(new, target).size

    v3 = dict(history.v2)
    del v3["layer0.weight"]
    v3["extra.weight"] = np.arange(SIDE * 4, dtype=np.float32).reshape(4, SIDE)
    repo.save(v3, message="reshape")
    third = repo.open("main").manifest
    d3 = repo.diff(history.second.revision[:12], "main")
    assert d3.removed == ["layer0"] and d3.added == ["extra"] and d3.changed == []
    removed = next(x for x in d3.layers if x.layer == "layer0")
    added = next(x for x in d3.layers if x.layer == "extra")
    assert (removed.old_bytes, removed.new_bytes) == (shard_of(new, "layer0").size, 0)
    assert (added.old_bytes, added.new_bytes) == (0, shard_of(third, "extra").size)

    lamina.save(history.v2, tmp_path / "v2-snap", info={"name": "stack"})
    by_path = lamina.diff(history.v1_dir, tmp_path / "v2-snap")
    by_ref = lamina.diff(f"{history.where.url}@v1.0", f"{history.where.url}@{history.second.revision[:12]}",
                         storage_options=history.where.options)
    for other in (by_path, by_ref):
        assert other.layers == d.layers and other.files == d.files
        assert (other.info_changed, other.training_changed) == (d.info_changed, d.training_changed)


# ---------------------------------------------------------------------------- 5. tags and branches
def test_tags_and_branches(history: History) -> None:
    """tag(), tags(), branches(); tags do not move without force; a tag cannot share a branch name."""
    repo = history.repo
    a, b = history.first.revision, history.second.revision
    assert repo.branches() == {"main": b}
    assert repo.tags() == {"v1.0": a}
    assert repo.tag("release/2", "main").id == b
    assert repo.tag("release/2", b[:12]).id == b  # the same revision again: fine
    assert repo.tags() == {"v1.0": a, "release/2": b}
    with pytest.raises(lamina.ExistsError, match="release/2"):
        repo.tag("release/2", "v1.0")
    assert repo.tags()["release/2"] == b
    assert repo.tag("release/2", "v1.0", force=True).id == a
    assert repo.tags()["release/2"] == a
    with pytest.raises(lamina.ExistsError, match="main"):
        repo.tag("main", "v1.0")
    assert "main" not in repo.tags()
    repo.save(history.v1, "dev", message="branch off")
    assert set(repo.branches()) == {"main", "dev"} and repo.branches()["main"] == b
    assert repo.revision("dev").parents == ()
    with pytest.raises(lamina.ExistsError, match="v1.0"):
        repo.save(history.v1, "v1.0")
    repo.delete_tag("release/2")
    assert "release/2" not in repo.tags()


@pytest.mark.parametrize("name", ["../x", "a..b", "x.lock", "a" * 40, "deadbeef", "/lead", "trail/", ".hidden",
                                  "a//b", "a/.b", "sp ace", "", "x" * 201])
def test_invalid_ref_names(small: History, name: str) -> None:
    """Names outside repository.md §2 are FormatErrors for tags and for branches, and change nothing."""
    repo = small.repo
    before = repo.store.list()
    with pytest.raises(lamina.FormatError):
        repo.tag(name, "main")
    with pytest.raises(lamina.FormatError):
        repo.save(small.v1, name)
    with pytest.raises(lamina.FormatError):
        repo.save(small.v1, "main", tag=name)
    assert repo.store.list() == before


def test_push_with_a_taken_tag_publishes_nothing(small: History, tmp_path: Path) -> None:
    """push(tag=) naming a tag at another revision: ExistsError, and the branch did not move."""
    repo = small.repo
    head, tags = repo.branches()["main"], repo.tags()
    with pytest.raises(lamina.ExistsError, match="v1.0"):
        repo.save(with_layer(small.v2, 0, 5), message="third", tag="v1.0")
    assert repo.branches()["main"] == head and repo.tags() == tags
    with pytest.raises(lamina.ExistsError, match="main"):
        repo.save(small.v2, message="tag as branch", tag="main")
    assert repo.branches()["main"] == head and repo.tags() == tags


# ---------------------------------------------------------------------------- 6. concurrency
def test_concurrent_pushes_to_one_branch(repo_location: Where, tmp_path: Path) -> None:
    """Two pushes from the same parent race: one wins, the other is a ConflictError; gc removes the loser."""
    repo = repo_location.repo()
    base = model_tensors(5)
    lamina.save(base, tmp_path / "base")
    parent = repo.push(tmp_path / "base", message="base").revision
    dirs = {}
    for who, layer in (("a", 3), ("b", 17)):
        dirs[who] = tmp_path / f"snap-{who}"
        lamina.save(with_layer(base, layer, 500 + layer), dirs[who])

    barrier = threading.Barrier(2, timeout=60)
    reads: list[str] = []
    results: dict[str, PushResult | BaseException] = {}

    def racer(who: str) -> None:
        mine = repo_location.repo()
        original = mine.store.compare_and_swap

        def synced(path: str, expected: bytes | None, new: bytes | None) -> bool:
            if path == "refs/heads/main":
                reads.append(expected.decode().strip() if expected else "")
                barrier.wait()  # both have read the parent and uploaded before either moves the ref
            return original(path, expected, new)

        mine.store.compare_and_swap = synced  # type: ignore[method-assign]
        try:
            results[who] = mine.push(dirs[who], message=f"push {who}")
        except BaseException as exc:  # noqa: BLE001 - recorded and checked below
            results[who] = exc

    threads = [threading.Thread(target=racer, args=(who,)) for who in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert reads == [parent, parent]
    winners = [w for w, r in results.items() if isinstance(r, PushResult)]
    losers = [w for w, r in results.items() if isinstance(r, lamina.ConflictError)]
    assert len(winners) == 1 and len(losers) == 1, results
    win, lose = results[winners[0]], results[losers[0]]
    assert isinstance(win, PushResult)
    message = str(lose)
    assert "'main'" in message and parent[:12] in message and win.revision[:12] in message
    assert "another push won" in message

    assert repo.branches() == {"main": win.revision}
    assert [r.id for r in repo.log("main")] == [win.revision, parent]
    assert_tensors_equal(repo.open("main").state_dict(framework="np"),
                         lamina.open(dirs[winners[0]]).state_dict(framework="np"))
    report = repo.fsck()
    assert report.ok, report.problems

    loser_dir = dirs[losers[0]]
    loser_snapshot = hashlib.sha256((loser_dir / "manifest.msgpack").read_bytes()).hexdigest()
    live_revisions, live_blobs = reachable(repo)
    loser_blobs = ({loser_snapshot} | {f.digest[1] for f in lamina.open(loser_dir).manifest.files}) - live_blobs
    orphans = listed_revisions(repo) - live_revisions
    assert len(orphans) == 1
    orphan = json.loads(repo.store.read(f"revisions/{orphans.pop()}"))
    assert orphan["snapshot"] == loser_snapshot and orphan["parents"] == [parent]
    sizes = blob_sizes(repo)
    assert set(sizes) == live_blobs | loser_blobs and len(loser_blobs) == 2
    assert report.unreachable_blobs == len(loser_blobs)
    assert report.unreachable_bytes == sum(sizes[h] for h in loser_blobs)

    gc = repo.gc()
    assert (gc.deleted_blobs, gc.deleted_revisions, gc.kept_blobs) == (2, 1, len(live_blobs))
    assert gc.deleted_bytes == sum(sizes[h] for h in loser_blobs)
    assert set(blob_sizes(repo)) == live_blobs and listed_revisions(repo) == live_revisions
    full = repo.fsck(full=True)
    assert full.ok and full.unreachable_blobs == 0, full.problems


PUSH_CHILD = r"""
import os, sys, time, json
import lamina
repo, src, branch, sync, parties = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
open(os.path.join(sync, branch.replace("/", "_")), "w").close()
deadline = time.monotonic() + 60
while len(os.listdir(sync)) < parties and time.monotonic() < deadline:
    time.sleep(0.005)
result = lamina.Repo(repo).push(src, branch, message=branch)
print(json.dumps({"revision": result.revision, "snapshot": result.snapshot}))
"""


def test_four_processes_push_four_branches(local_repo: Where, tmp_path: Path) -> None:
    """Four processes pushing to four branches of one fresh repository at once all succeed."""
    base = model_tensors(9, 8, 32)
    sync = tmp_path / "sync"
    sync.mkdir()
    branches = ["main", "exp/a", "exp/b", "exp-c"]
    snaps = {}
    for i, branch in enumerate(branches):
        snaps[branch] = tmp_path / f"s{i}"
        lamina.save(with_layer(base, i, 100 + i), snaps[branch])
    procs = {b: subprocess.Popen([sys.executable, "-c", PUSH_CHILD, local_repo.url, str(snaps[b]), b, str(sync),
                                  str(len(branches))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for b in branches}
    outputs = {b: p.communicate(timeout=120) for b, p in procs.items()}
    for b, p in procs.items():
        assert p.returncode == 0, (b, outputs[b][1])
    repo = local_repo.repo()
    results = {b: json.loads(outputs[b][0]) for b in branches}
    assert repo.branches() == {b: results[b]["revision"] for b in branches}
    for b in branches:
        rev = repo.revision(b)
        assert rev.parents == () and rev.message == b
        assert rev.snapshot == hashlib.sha256((snaps[b] / "manifest.msgpack").read_bytes()).hexdigest()
        assert_tensors_equal(repo.open(b).state_dict(framework="np"), lamina.open(snaps[b]).state_dict(framework="np"))
    report = repo.fsck(full=True)
    assert report.ok and report.unreachable_blobs == 0, report.problems
    assert repo.store.list("locks/") == []


# ---------------------------------------------------------------------------- 7. killed push
KILLED_CHILD = r"""
import sys, threading, time
import lamina
from lamina.storage.local import LocalStore
repo, src, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
original = LocalStore.write
lock = threading.Lock()
count = [0]
def slow_write(self, path, data):
    n = original(self, path, data)
    if path.startswith("blobs/"):
        with lock:
            count[0] += 1
            mine = count[0]
        if mine == after:
            print("REACHED", flush=True)
        if mine >= after:
            time.sleep(600)
    return n
LocalStore.write = slow_write
lamina.Repo(repo).push(src, message="killed")
print("FINISHED", flush=True)
"""


def test_killed_push_leaves_the_repository_valid(local_repo: Where, tmp_path: Path) -> None:
    """A push SIGKILLed mid-upload leaves the branch, reads and fsck intact; the next push reuses its blobs."""
    repo = local_repo.repo()
    old = model_tensors(21, 12, 64)
    old_result = repo.save(old, message="old")
    before = blob_sizes(repo)
    new = model_tensors(22, 12, 64)
    lamina.save(new, tmp_path / "new")
    new_files = lamina.open(tmp_path / "new").manifest.files
    after_n = 4
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, local_repo.url, str(tmp_path / "new"), str(after_n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(proc, "REACHED")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    left = blob_sizes(repo)
    uploaded_by_killed = set(left) - set(before)
    assert len(uploaded_by_killed) >= after_n
    assert uploaded_by_killed <= {f.digest[1] for f in new_files}  # shards only: no manifest, no revision
    assert repo.branches() == {"main": old_result.revision}
    assert listed_revisions(repo) == {old_result.revision}
    assert_tensors_equal(lamina.open(f"{local_repo.url}@main").state_dict(framework="np"), old)
    report = repo.fsck()
    assert report.ok, report.problems
    assert report.unreachable_blobs == len(uploaded_by_killed)
    listing = repo.store.list()
    assert all(LAYOUT_PATH.fullmatch(p) for p in listing), listing
    markers = [p for p in listing if p.startswith("locks/")]
    assert len(markers) == 1 and markers[0].startswith("locks/push-")
    assert json.loads(repo.store.read(markers[0]))["pid"] == proc.pid

    result = repo.push(tmp_path / "new", message="retry")
    present = {f.digest[1] for f in new_files} & set(left)
    assert result.reused_files == sum(1 for f in new_files if f.digest[1] in present) > 0
    assert result.reused_bytes == sum(f.size for f in new_files if f.digest[1] in present) > 0
    assert result.uploaded_files == len({f.digest[1] for f in new_files} - present) + 1
    assert result.parent == old_result.revision
    assert_tensors_equal(repo.open("main").state_dict(framework="np"), new)
    gc = repo.gc()  # the killed push's marker is stale (its process is gone): gc runs and removes it
    assert gc.deleted_blobs == 0 and gc.deleted_revisions == 0
    assert repo.store.list("locks/") == []
    assert repo.fsck(full=True).ok


# ---------------------------------------------------------------------------- 8. gc
def test_gc_deletes_exactly_the_unreachable(small: History, tmp_path: Path) -> None:
    """After deleting a branch and a tag, gc removes exactly their revisions' own blobs; dry_run deletes nothing."""
    repo = small.repo
    e1 = repo.save(with_layer(small.v1, 1, 301), "exp", message="e1")
    e2 = repo.save(with_layer(with_layer(small.v1, 1, 301), 2, 302), "exp", message="e2")
    side = repo.save(with_layer(small.v2, 3, 303), "side", message="s1")
    repo.tag("exp-tag", e1.revision)
    repo.tag("side-tag", side.revision)
    repo.delete_branch("side")  # still reachable through side-tag
    doomed_revisions = {e1.revision, e2.revision}
    repo.delete_branch("exp")
    assert repo.store.list("refs/heads/exp") == []
    live_revisions, _ = reachable(repo)
    assert e1.revision in live_revisions and e2.revision not in live_revisions  # e1 is still tagged
    repo.delete_tag("exp-tag")
    live_revisions, live_blobs = reachable(repo)
    assert side.revision in live_revisions and not live_revisions & doomed_revisions
    doomed_blobs = (snapshot_blobs(repo, e1.revision) | snapshot_blobs(repo, e2.revision)) - live_blobs
    assert doomed_blobs  # the layers only exp changed, and exp's manifests
    repo.store.write("NOTES.txt", b"not part of the layout: gc must keep it")
    sizes = blob_sizes(repo)
    listing = repo.store.list()

    dry = repo.gc(dry_run=True)
    assert dry.dry_run and repo.store.list() == listing
    real = repo.gc()
    for result in (dry, real):
        assert (result.deleted_blobs, result.deleted_revisions) == (len(doomed_blobs), len(doomed_revisions))
        assert result.deleted_bytes == sum(sizes[h] for h in doomed_blobs)
        assert result.kept_blobs == len(live_blobs)
    assert set(blob_sizes(repo)) == set(sizes) - doomed_blobs == live_blobs
    assert listed_revisions(repo) == live_revisions
    assert sorted(set(listing) - set(repo.store.list())) == sorted(
        [p for p in listing if p.startswith("blobs/") and p.rsplit("/", 1)[1] in doomed_blobs]
        + [f"revisions/{r}" for r in doomed_revisions])
    assert repo.store.read("NOTES.txt").startswith(b"not part of the layout")
    assert repo.fsck(full=True).ok
    assert_tensors_equal(repo.open("side-tag").state_dict(framework="np"), with_layer(small.v2, 3, 303))
    assert_tensors_equal(repo.open("v1.0").state_dict(framework="np"), small.v1)
    with pytest.raises(lamina.NotFoundError, match=e1.revision[:12]):
        repo.revision(e1.revision)
    assert repo.gc().deleted_blobs == 0


def marker_body(pid: int, started: float) -> bytes:
    return json.dumps({"started": started, "host": socket.gethostname(), "pid": pid}).encode()


def test_gc_waits_for_live_pushes_only(small: History) -> None:
    """gc waits for a live push marker and, past ``push_drain_wait``, is a ConflictError (nothing
    deleted), however old the marker is while its process lives; a dead pid, or another host's marker
    not refreshed within the TTL, does not count."""
    repo = small.repo
    repo.push_drain_wait = 0.5
    dropped = repo.save(with_layer(small.v1, 0, 404), "tmp", message="to drop")
    repo.delete_branch("tmp")
    doomed = snapshot_blobs(repo, dropped.revision) - reachable(repo)[1]
    listing = repo.store.list()
    for started in (time.time(), time.time() - 2 * 3600):  # a long push on this host stays live
        repo.store.write("locks/push-live", marker_body(os.getpid(), started))
        with pytest.raises(lamina.ConflictError, match="push"):
            repo.gc()
        assert repo.store.list() == sorted(listing + ["locks/push-live"])  # nothing deleted, gc lock released
    repo.store.delete("locks/push-live")
    elsewhere = json.loads(marker_body(os.getpid(), time.time()))
    elsewhere["host"] = "another-host"
    repo.store.write("locks/push-elsewhere", json.dumps(elsewhere).encode())  # refreshed just now: live
    with pytest.raises(lamina.ConflictError, match="push"):
        repo.gc()
    elsewhere["started"] = elsewhere["refreshed"] = time.time() - 2 * TTL  # no heartbeat for 2 TTLs: dead
    repo.store.write("locks/push-elsewhere", json.dumps(elsewhere).encode())
    repo.store.write("locks/push-deadpid", marker_body(dead_pid(), time.time()))
    result = repo.gc()
    assert (result.deleted_blobs, result.deleted_revisions) == (len(doomed), 1)
    assert doomed.isdisjoint(blob_sizes(repo))
    assert repo.store.list("locks/") == []


PUSHER = r"""
import sys, numpy as np, lamina
repo = lamina.Repo(sys.argv[1])
k, seconds = sys.argv[2], float(sys.argv[3])
import time
end, seed = time.monotonic() + seconds, 0
while time.monotonic() < end:
    seed += 1
    rng = np.random.default_rng(int(k) * 100000 + seed)
    tensors = {f"layer{i}.weight": rng.standard_normal((16, 16), dtype=np.float32) for i in range(4)}
    repo.save(tensors, f"p{k}", message=f"push {seed}")
    if seed % 2:  # leave garbage behind for the collector: a branch that is pushed, then dropped
        repo.save({"junk.weight": rng.standard_normal((16, 16), dtype=np.float32)}, f"junk{k}")
        repo.delete_branch(f"junk{k}")
    print("PUSHED", seed, flush=True)
"""


def test_gc_finishes_under_continuous_pushes(local_repo: Where) -> None:
    """Two processes push without pause while gc runs again and again: every gc completes (new pushes
    wait for it, running ones are waited for), pushes keep landing, and nothing reachable is lost."""
    repo = local_repo.repo()
    repo.save(model_tensors(1, 4, 16), message="first")
    seconds = 8.0
    pushers = [subprocess.Popen([sys.executable, "-c", PUSHER, local_repo.url, str(k), str(seconds)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    durations, deleted = [], 0
    try:
        time.sleep(1.5)  # both pushers running
        while any(p.poll() is None for p in pushers):
            started = time.monotonic()
            deleted += repo.gc().deleted_blobs  # never a ConflictError: nothing else collects
            durations.append(time.monotonic() - started)
    finally:
        outputs = [p.communicate(timeout=120) for p in pushers]
    for proc, (out, err) in zip(pushers, outputs):
        assert proc.returncode == 0, err
    pushed = [[int(line.split()[1]) for line in out.splitlines() if line.startswith("PUSHED")] for out, _ in outputs]
    assert all(len(p) >= 3 for p in pushed), pushed
    assert len(durations) >= 3 and max(durations) < 15, durations
    assert deleted > 0  # it really collected the dropped branches' blobs while pushes went on
    deleted += repo.gc().deleted_blobs
    report = repo.fsck(full=True)
    assert report.ok and report.unreachable_blobs == 0, report.problems
    for k, seeds in zip((1, 2), pushed):  # each branch holds its last push, bit for bit, with its whole history
        rng = np.random.default_rng(k * 100000 + seeds[-1])
        want = {f"layer{i}.weight": rng.standard_normal((16, 16), dtype=np.float32) for i in range(4)}
        assert_tensors_equal(repo.open(f"p{k}").state_dict(framework="np"), want)
        assert len(repo.log(f"p{k}")) == len(seeds)  # every push of the branch, in its history
    assert repo.store.list("locks/") == []


def test_push_refuses_while_gc_runs(small: History) -> None:
    """A live gc marker makes a push a ConflictError that publishes nothing."""
    repo = small.repo
    head = repo.branches()["main"]
    repo.store.write("locks/gc", marker_body(os.getpid(), time.time()))
    repo.gc_wait = 1.0  # a push waits this long for a running gc, then gives up
    started = time.monotonic()
    with pytest.raises(lamina.ConflictError, match="garbage collection"):
        repo.save(with_layer(small.v2, 0, 9), message="blocked")
    assert 1.0 <= time.monotonic() - started < 30
    assert repo.branches()["main"] == head and repo.store.list("locks/") == ["locks/gc"]
    with pytest.raises(lamina.ConflictError):
        repo.gc()
    repo.store.write("locks/gc", marker_body(dead_pid(), time.time()))  # a killed collection's marker
    pushed = repo.save(with_layer(small.v2, 0, 9), message="after")
    assert pushed.parent == head and repo.branches()["main"] == pushed.revision
    assert repo.gc().deleted_blobs == 0
    assert repo.store.list("locks/") == []


# ---------------------------------------------------------------------------- 9. fsck
def test_fsck_healthy_and_cli(small: History, tmp_path: Path) -> None:
    """fsck is ok on a healthy repository and the CLI exits 0; a non-repository exits 2 with one line."""
    report = small.repo.fsck(full=True)
    assert report.ok and report.full
    assert (report.revisions, report.snapshots) == (2, 2)
    assert report.refs == len(small.repo.store.list("refs/"))
    assert report.blobs == len(small.repo.store.list("blobs/")) and report.unreachable_blobs == 0
    (tmp_path / "not-a-repo").mkdir()
    ok, missing = cli_parallel(("fsck", small.where.url, "--full"), ("fsck", tmp_path / "not-a-repo"))
    assert ok.returncode == 0 and ok.stdout.startswith("OK "), (ok.stdout, ok.stderr)
    assert_clean_cli_error(missing, lamina.NotFoundError, "not-a-repo", "lamina-repo.json")


def test_fsck_reports_damage(small: History) -> None:
    """Each kind of damage is reported (not raised): dangling ref, bad revision, missing or wrong-size blob."""
    repo, root = small.repo, Path(small.where.url)
    manifest = repo.open("main").manifest
    ghost = hashlib.sha256(b"no such revision").hexdigest()
    repo.store.write("refs/heads/ghost", f"{ghost}\n".encode())
    v1_path = root / "revisions" / small.first.revision
    v1_path.write_bytes(v1_path.read_bytes().replace(b'"first"', b'"FIRST"'))
    missing = shard_of(manifest, "layer0")
    local_blob_file(root, missing.digest[1]).unlink()
    short = shard_of(manifest, f"layer{small.changed}")
    blob = local_blob_file(root, short.digest[1])
    blob.write_bytes(blob.read_bytes()[:-3])

    report = repo.fsck()
    assert not report.ok
    problems = dict(report.problems)
    assert ghost in " ".join(f"{p} {w}" for p, w in report.problems)
    assert f"revisions/{small.first.revision}" in problems
    assert "hash" in problems[f"revisions/{small.first.revision}"]
    assert "missing" in problems[file_blob(missing)]
    assert f"size {short.size - 3}, expected {short.size}" in problems[file_blob(short)]

    res = cli("fsck", small.where.url)
    assert res.returncode == 1, (res.stdout, res.stderr)
    for path in (file_blob(missing), file_blob(short), f"revisions/{small.first.revision}"):
        assert f"PROBLEM {path}" in res.stderr
    assert "Traceback" not in res.stderr


def test_fsck_full_finds_same_size_corruption(small: History) -> None:
    """A same-size corrupted blob passes the size check; fsck(full=True) reports it."""
    repo = small.repo
    shard = shard_of(repo.open("main").manifest, "layer2")
    blob = local_blob_file(Path(small.where.url), shard.digest[1])
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0x01
    blob.write_bytes(bytes(data))
    assert repo.fsck().ok
    full = repo.fsck(full=True)
    assert dict(full.problems) == {file_blob(shard): "blob bytes do not match its name"}
    with pytest.raises(lamina.IntegrityError):
        repo.open("main", verify=True).layer("layer2")


def test_fsck_reports_an_undecodable_manifest(small: History) -> None:
    """A manifest blob replaced by garbage is reported by fsck and refused by open."""
    repo = small.repo
    snapshot = small.second.snapshot
    blob = local_blob_file(Path(small.where.url), snapshot)
    blob.write_bytes(b"\x00" * blob.stat().st_size)
    problems = dict(repo.fsck().problems)
    assert blob_path(snapshot) in problems
    with pytest.raises(lamina.IntegrityError, match=snapshot):
        repo.open("main")
    assert_tensors_equal(repo.open("v1.0").state_dict(framework="np"), small.v1)


# ---------------------------------------------------------------------------- 10. bad input
def test_not_a_repository(tmp_path: Path) -> None:
    """A plain directory is not a repository: log and open are NotFoundErrors naming it."""
    plain = tmp_path / "plain"
    plain.mkdir()
    repo = Repo(plain)
    assert not repo.exists()
    for call in (repo.log, repo.open, lambda: repo.pull("main", tmp_path / "dst"), repo.fsck, repo.gc):
        with pytest.raises(lamina.NotFoundError, match="plain"):
            call()
    with pytest.raises(lamina.NotFoundError, match="plain"):
        lamina.open(f"{plain}@main")
    assert list(plain.iterdir()) == [] and not (tmp_path / "dst").exists()
    nowhere = Repo(tmp_path / "nowhere")
    with pytest.raises(lamina.NotFoundError, match="nowhere"):
        nowhere.log()
    assert not (tmp_path / "nowhere").exists()


def test_save_into_an_existing_local_repository(small: History) -> None:
    """lamina.save to an existing local repository's path (no @ref) adds a revision to main."""
    v3 = with_layer(small.v2, 1, 808)
    art = lamina.save(v3, small.where.url, message="plain path")
    head = small.repo.revision("main")
    assert head.parents == (small.second.revision,) and head.message == "plain path"
    assert art.manifest == small.repo.open("main").manifest
    assert_tensors_equal(art.state_dict(framework="np"), v3)


def test_garbage_ref_is_a_format_error(small: History) -> None:
    """A ref file that is not a revision id is a FormatError naming its path."""
    repo = small.repo
    repo.store.write("refs/heads/main", b"not a revision\n")
    for call in (lambda: repo.open("main"), lambda: repo.log("main"), repo.branches):
        with pytest.raises(lamina.FormatError, match="refs/heads/main"):
            call()
    report = repo.fsck()
    assert "refs/heads/main" in dict(report.problems)
    with pytest.raises(lamina.IntegrityError):
        repo.gc()


def test_edited_revision_is_an_integrity_error(small: History) -> None:
    """A revision object edited by hand no longer hashes to its name: IntegrityError on use."""
    repo = small.repo
    path = Path(small.where.url) / "revisions" / small.second.revision
    path.write_bytes(path.read_bytes().replace(b'"second"', b'"forged"'))
    with pytest.raises(lamina.IntegrityError, match=small.second.revision):
        repo.open("main")
    with pytest.raises(lamina.IntegrityError, match=small.second.revision):
        repo.log("main")
    assert_tensors_equal(repo.open("v1.0").state_dict(framework="np"), small.v1)


# ---------------------------------------------------------------------------- 11. CLI
def test_cli_round_trip(tmp_path: Path) -> None:
    """push, log, tag, refs, diff, pull, gc --dry-run, inspect and verify as a user runs them."""
    a, b = tmp_path / "a", tmp_path / "b"
    va = model_tensors(31, 6, 32)
    vb = with_layer(va, 4, 32)
    lamina.save(va, a, info={"name": "cli"})
    lamina.save(vb, b, info={"name": "cli"})
    repo_dir = tmp_path / "repo"

    res = cli("push", a, repo_dir, "-m", "first cli push", "-t", "v1")
    assert res.returncode == 0, res.stderr
    first = Repo(repo_dir).branches()["main"]
    assert first[:12] in res.stdout and "tagged v1" in res.stdout
    res = cli("push", b, repo_dir, "-m", "second")
    assert res.returncode == 0, res.stderr
    repo = Repo(repo_dir)
    second = repo.branches()["main"]
    shard = shard_of(lamina.open(b).manifest, "layer4")
    counts = re.search(r"uploaded .+ in (\d+) file\(s\), reused .+ in (\d+)", res.stdout)
    assert counts is not None, res.stdout
    assert (int(counts[1]), int(counts[2])) == (2, len(lamina.open(b).manifest.files) - 1)  # shard + manifest
    assert repo.log()[0].parents == (first,)
    assert shard.digest[1] in blob_sizes(repo)

    log, tag, diff_repo, diff_json, pull, inspect = cli_parallel(
        ("log", repo_dir), ("tag", repo_dir, "v2", "main"), ("diff", "--repo", repo_dir, "v1", "main"),
        ("diff", a, b, "--json"), ("pull", f"{repo_dir}@v1", tmp_path / "pulled"), ("inspect", f"{repo_dir}@v1"))
    for r in (log, tag, diff_repo, diff_json, pull, inspect):
        assert r.returncode == 0, (r.args, r.stderr)
    lines = log.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [second[:12], first[:12]]
    assert "second" in lines[0] and "first cli push" in lines[1]
    assert tag.stdout.strip() == f"v2 -> {second[:12]}"
    assert "layer4" in diff_repo.stdout
    parsed = json.loads(diff_json.stdout)
    statuses = {d["layer"]: d["status"] for d in parsed["layers"]}
    assert statuses == {f"layer{i}": ("changed" if i == 4 else "unchanged") for i in range(6)}
    assert parsed["changed_bytes"] == shard.size and parsed["identical"] is False
    assert tree_bytes(tmp_path / "pulled") == tree_bytes(a)
    assert "cli" in inspect.stdout and "layer4" in inspect.stdout

    refs, gc, verify, pulled_verify = cli_parallel(
        ("refs", repo_dir, "--json"), ("gc", repo_dir, "--dry-run"), ("verify", f"{repo_dir}@v1"),
        ("verify", tmp_path / "pulled"))
    for r in (refs, gc, verify, pulled_verify):
        assert r.returncode == 0, (r.args, r.stderr)
    assert json.loads(refs.stdout) == {"branches": {"main": second}, "tags": {"v1": first, "v2": second}}
    assert gc.stdout.startswith("would delete 0 blob(s)")
    assert f"{len(reachable(repo)[1])} blob(s) in use" in gc.stdout
    assert verify.stdout.startswith("OK ") and pulled_verify.stdout.startswith("OK ")

    res = cli("tag", repo_dir, "v1", "main")
    assert_clean_cli_error(res, lamina.ExistsError, "v1")
    res = cli("log", f"{repo_dir}@nope")
    assert_clean_cli_error(res, lamina.NotFoundError, "nope")


def test_cli_s3_with_aws_environment(s3_endpoint: str, s3_bucket: str, s3_options: dict[str, Any],
                                     tmp_path: Path) -> None:
    """push and log reach S3 with credentials and endpoint from AWS_* environment variables alone."""
    snap = tmp_path / "snap"
    tensors = model_tensors(41, 4, 32)
    lamina.save(tensors, snap)
    url = f"s3://{s3_bucket}/cli/repo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": s3_endpoint, "LAMINA_CACHE": str(tmp_path / "cli-cache"),
                "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials")})

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lamina", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=120)

    push = run("push", snap, url, "-m", "over s3", "-t", "s3-v1")
    assert push.returncode == 0, push.stderr
    log = run("log", url, "--json")
    assert log.returncode == 0, log.stderr
    entries = json.loads(log.stdout)
    repo = Repo(url, storage_options=s3_options)
    assert [e["id"] for e in entries] == [repo.branches()["main"]] and entries[0]["message"] == "over s3"
    assert entries[0]["snapshot"] == hashlib.sha256((snap / "manifest.msgpack").read_bytes()).hexdigest()
    assert repo.tags() == {"s3-v1": entries[0]["id"]}
    assert_tensors_equal(repo.open("s3-v1").state_dict(framework="np"), tensors)


def test_no_repository_over_a_plain_snapshot_and_no_overwrite(tmp_path: Path) -> None:
    """A save or push into a location holding a plain snapshot is refused (it would shadow it), and
    overwrite=True is refused for repository targets; '@' inside a path is not a ref."""
    from lamina.storage.locations import split_ref

    plain = tmp_path / "plain"
    lamina.save({"w": np.zeros(2, "f4")}, plain)
    with pytest.raises(lamina.ExistsError, match="plain snapshot"):
        lamina.save({"w": np.ones(2, "f4")}, f"{plain}@main")
    with pytest.raises(lamina.ExistsError, match="plain snapshot"):
        lamina.Repo(plain).push(plain)
    assert not (plain / "lamina-repo.json").exists() and lamina.open(plain).tensor("w", "np").sum() == 0
    with pytest.raises(lamina.FormatError, match="overwrite"):
        lamina.save({"w": np.ones(2, "f4")}, f"{tmp_path / 'repo'}@main", overwrite=True)
    assert split_ref("s3://b/users/alice@corp.com/bert") == ("s3://b/users/alice@corp.com/bert", None)
    assert split_ref("s3://b/repo@v1.0") == ("s3://b/repo", "v1.0")
