"""lamina and the Hugging Face Hub: push, lazy reads, pull, offline use, transformers, errors, CLI.

Every test drives the real ``huggingface_hub`` client (through lamina) against the in-memory
``FakeHub`` of tests/hub_server.py (fixture ``hub`` from conftest: endpoint, Xet off, an isolated
cache, ``HF_TOKEN`` = the write token). Expected values are derived from the snapshots themselves
(manifest file tables, sizes, sha256s, git blob ids), never copied from the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402  (a missing dependency must fail the suite, never skip it)
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from cli_helpers import assert_clean_cli_error  # noqa: E402
from hub_server import FakeHub  # noqa: E402
from huggingface_hub import CommitOperationAdd, HfApi, constants  # noqa: E402
from huggingface_hub.errors import RepositoryNotFoundError  # noqa: E402
from huggingface_hub.hf_api import RepoFile  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import lamina  # noqa: E402
from lamina.format.digests import Lt1  # noqa: E402
from lamina.format.manifest import FileEntry

# huggingface_hub itself passes a file object as ``data=`` to its HTTP client for LFS PUTs.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

MANIFEST = "manifest.msgpack"
HUB_ONLY = {".gitattributes", "README.md"}  # the Hub's initial commit, lamina's model card: not snapshot files


# ------------------------------------------------------------------------------------------ helpers
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lt1(data: bytes) -> str:
    hasher = Lt1()
    hasher.update(data)
    return hasher.hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def new_repo_id() -> str:
    return f"{FakeHub.USER}/t-{uuid.uuid4().hex[:10]}"


def weights(seed: int, layers: Sequence[str] = ("enc", "mid", "dec")) -> dict[str, torch.Tensor]:
    """A small float32 state dict: ``<layer>.weight`` (16x16) and ``<layer>.bias`` per layer."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for layer in layers:
        out[f"{layer}.weight"] = torch.randn(16, 16, generator=g)
        out[f"{layer}.bias"] = torch.randn(16, generator=g)
    return out


def weights_layer(seed: int, layer: str) -> dict[str, torch.Tensor]:
    """The tensors of one layer of ``weights(seed)``."""
    return {k: v for k, v in weights(seed).items() if k.startswith(f"{layer}.")}


def save(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    lamina.save(tensors, path, info={"name": "hub-test"}, files={"config.json": {"layers": sorted(tensors)}})
    return path


def disk_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by POSIX relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def shard_of(snapshot: Path, layer: str) -> FileEntry:
    """The manifest entry of the (single) shard holding ``layer``'s weights."""
    manifest = lamina.open(snapshot).manifest
    files = {t.file for t in manifest.tensors if t.layer == layer}
    assert len(files) == 1, files
    (path,) = files
    return next(f for f in manifest.files if f.path == path)


def remote_tree(repo_id: str, revision: str = "main") -> dict[str, RepoFile]:
    """The files of a hub revision (listed by the real client), without the Hub's .gitattributes."""
    entries = HfApi(token=FakeHub.WRITE_TOKEN).list_repo_tree(repo_id, revision=revision, recursive=True)
    return {e.path: e for e in entries if isinstance(e, RepoFile) and e.path not in HUB_ONLY}


def assert_tree_is_snapshot(repo_id: str, revision: str, snapshot: Path) -> None:
    """The hub revision holds exactly the snapshot's files: same paths, sizes and content ids."""
    on_disk = disk_files(snapshot)
    manifest = lamina.open(snapshot).manifest
    assert set(on_disk) == {f.path for f in manifest.files} | {MANIFEST}
    tree = remote_tree(repo_id, revision)
    assert sorted(tree) == sorted(on_disk)
    for f in manifest.files:
        remote = tree[f.path]
        assert remote.size == f.size == len(on_disk[f.path]), f.path
        assert lt1(on_disk[f.path]) == f.digest[1], f.path  # a 1.3 snapshot: files addressed by lt1
        if remote.lfs is not None:
            assert remote.lfs.sha256 == sha256(on_disk[f.path]), f.path  # the hub: by sha256
        else:
            assert remote.blob_id == git_sha1(on_disk[f.path]), f.path
        if f.path.endswith(".safetensors"):
            assert remote.lfs is not None, f"{f.path} should be stored in LFS"
    remote_manifest = tree[MANIFEST]
    assert remote_manifest.size == len(on_disk[MANIFEST])
    if remote_manifest.lfs is not None:
        assert remote_manifest.lfs.sha256 == sha256(on_disk[MANIFEST])
    else:
        assert remote_manifest.blob_id == git_sha1(on_disk[MANIFEST])


def commit_posts(hub: FakeHub, repo_id: str) -> list[tuple[str, str, str | None, int]]:
    return [r for r in hub.requests if r[0] == "POST" and r[1].startswith(f"/api/models/{repo_id}/commit/")]


def downloads(hub: FakeHub) -> list[tuple[str, str, str | None, int]]:
    """File-content transfers: GETs of ``/resolve/`` URLs and of the LFS CDN."""
    return [r for r in hub.requests if r[0] == "GET" and ("/resolve/" in r[1] or r[1].startswith("/cdn-lfs/"))]


def requested_files(hub: FakeHub, repo_id: str, by_sha: dict[str, str]) -> set[str]:
    """Snapshot paths whose content was requested (GET or HEAD), via ``/resolve/`` or the CDN."""
    out: set[str] = set()
    for method, path, _, _ in hub.requests:
        if method not in ("GET", "HEAD"):
            continue
        resolve = re.fullmatch(rf"/{re.escape(repo_id)}/resolve/[^/]+/(.+)", path)
        cdn = re.fullmatch(rf"/cdn-lfs/{re.escape(repo_id)}/([0-9a-f]{{64}})", path)
        if resolve:
            out.add(resolve.group(1))
        elif cdn:
            out.add(by_sha.get(cdn.group(1), f"<unknown oid {cdn.group(1)}>"))
    return out


def sha_index(snapshot: Path) -> dict[str, str]:
    """sha256 -> snapshot path, for every file of the snapshot (the manifest included)."""
    manifest = lamina.open(snapshot).manifest
    index = {sha256((snapshot / f.path).read_bytes()): f.path for f in manifest.files}
    index[sha256((snapshot / MANIFEST).read_bytes())] = MANIFEST
    return index


def range_bytes(header: str | None, size: int) -> int:
    """How many bytes a single ``Range`` header asks for (the whole file when there is none)."""
    if header is None:
        return size
    start, end = re.fullmatch(r"bytes=(\d*)-(\d*)", header).groups()  # type: ignore[union-attr]
    if not start:
        return min(size, int(end))
    return (min(size - 1, int(end)) if end else size - 1) - int(start) + 1


def assert_same_tensors(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        g = got[name]
        assert g.dtype == w.dtype and tuple(g.shape) == tuple(w.shape), name
        assert g.contiguous().numpy().tobytes() == w.contiguous().numpy().tobytes(), f"{name}: bytes differ"


def state(hub: FakeHub, repo_id: str) -> tuple[list[str], dict[str, bytes], dict[str, dict[str, str]]]:
    """Everything a failed push must leave alone: the history, the head's files and the refs."""
    return hub.commits(repo_id), hub.files(repo_id), hub.refs(repo_id)


def push_and_pull(hub: FakeHub, snapshot: Path, dst: Path) -> Path:
    """Push ``snapshot`` (tagged v1), pull ``@v1`` into ``dst``; the pull is byte-identical."""
    repo_id = new_repo_id()
    result = lamina.push(snapshot, f"hf://{repo_id}", tag="v1", message="converted")
    assert result.created and result.tag == "v1"
    assert_tree_is_snapshot(repo_id, "v1", snapshot)
    pulled = lamina.pull(f"hf://{repo_id}@{result.revision}", dst)
    assert disk_files(dst) == disk_files(snapshot)
    pulled.verify()
    return dst


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def lamina_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """lamina's default blob cache lives in this test's tmp dir."""
    path = tmp_path / "lamina-cache"
    monkeypatch.setenv("LAMINA_CACHE", str(path))
    return path


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    return save(weights(1), tmp_path / "v1")


@pytest.fixture
def pushed(hub: FakeHub, v1: Path) -> tuple[str, lamina.PushResult]:
    """``v1`` pushed to a fresh repo and tagged ``v1``; the hub's counters reset afterwards."""
    repo_id = new_repo_id()
    result = lamina.push(v1, f"hf://{repo_id}", tag="v1", message="first")
    hub.reset()
    return repo_id, result


def hub_cli_env(hub: FakeHub, home: Path, token: str | None = FakeHub.WRITE_TOKEN, **extra: str) -> dict[str, str]:
    """A subprocess environment: this one minus every Hugging Face variable, plus ``hub.env``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_")) and k != "TRANSFORMERS_OFFLINE"}
    env.update(hub.env(home, token=token))
    env.update(extra)
    return env


def hub_cli(env: dict[str, str], *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lamina", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


# ------------------------------------------------------------------------------------------ 1. push
def test_push_creates_a_private_repo_with_one_commit_holding_exactly_the_snapshot(
        hub: FakeHub, v1: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A first push creates the (private) repo, makes one commit with exactly the snapshot's files
    and tags it; another user's token cannot see the repo."""
    repo_id = new_repo_id()
    manifest_bytes = (v1 / MANIFEST).read_bytes()
    files = lamina.open(v1).manifest.files
    result = lamina.push(v1, f"hf://{repo_id}", message="first snapshot", tag="v1", private=True)

    assert hub.has_repo(repo_id)
    assert len(commit_posts(hub, repo_id)) == 1
    history = hub.commits(repo_id)
    assert len(history) == 2  # the Hub's initial commit, then ours
    assert result.revision == history[0] == hub.head(repo_id)
    assert result.parent == history[1]
    assert result.created and result.branch == "main" and result.tag == "v1"
    assert result.snapshot == sha256(manifest_bytes)
    assert result.uploaded_files == len(files) + 1
    assert result.uploaded_bytes == sum(f.size for f in files) + len(manifest_bytes)
    assert result.reused_files == result.reused_bytes == 0
    assert_tree_is_snapshot(repo_id, result.revision, v1)

    api = HfApi(token=FakeHub.WRITE_TOKEN)
    assert api.list_repo_commits(repo_id)[0].title == "first snapshot"
    assert {t.name: t.target_commit for t in api.list_repo_refs(repo_id).tags} == {"v1": result.revision}
    assert api.model_info(repo_id).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=FakeHub.OTHER_TOKEN).model_info(repo_id)

    monkeypatch.setenv("HF_TOKEN", FakeHub.OTHER_TOKEN)
    with pytest.raises(lamina.NotFoundError, match="repository not found"):
        lamina.open(f"hf://{repo_id}@v1")
    with pytest.raises(lamina.NotFoundError, match="repository not found"):
        lamina.pull(f"hf://{repo_id}@v1", tmp_path / "stolen")
    assert not (tmp_path / "stolen").exists()


def test_second_push_uploads_only_the_changed_shard_and_the_manifest(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], v1: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A version with one changed layer sends that shard and the manifest only, in one commit whose
    parent_commit is the previous head and whose tree holds the new manifest."""
    repo_id, first = pushed
    tensors = weights(1)
    tensors["dec.weight"] = tensors["dec.weight"] * 2 + 1
    v2 = save(tensors, tmp_path / "v2")
    old = {f.path: f for f in lamina.open(v1).manifest.files}
    new = lamina.open(v2).manifest.files
    changed = [f for f in new if f.path not in old or old[f.path].digest != f.digest]
    assert [f.path for f in changed] == [shard_of(v2, "dec").path]
    manifest_bytes = (v2 / MANIFEST).read_bytes()

    sent: list[dict[str, Any]] = []
    original = HfApi.create_commit

    def spy(self: HfApi, *args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", spy)
    result = lamina.push(v2, f"hf://{repo_id}", message="second")

    expected_bytes = sum(f.size for f in changed) + len(manifest_bytes)
    assert result.created
    assert result.uploaded_files == len(changed) + 1
    assert result.uploaded_bytes == expected_bytes
    assert hub.lfs_uploaded_bytes == expected_bytes
    assert sorted(hub.lfs_uploads) == sorted([*(sha256((v2 / f.path).read_bytes()) for f in changed),
                                              sha256(manifest_bytes)])
    assert result.reused_files == len(new) - len(changed)
    assert result.reused_bytes == sum(f.size for f in new) - sum(f.size for f in changed)

    assert len(sent) == 1 and sent[0]["parent_commit"] == first.revision
    assert len(commit_posts(hub, repo_id)) == 1
    assert result.parent == first.revision
    assert hub.commits(repo_id)[:2] == [result.revision, first.revision]
    assert hub.files(repo_id, result.revision)[MANIFEST] == manifest_bytes
    assert_tree_is_snapshot(repo_id, result.revision, v2)
    assert_tree_is_snapshot(repo_id, "v1", v1)  # the tag still names the first snapshot


def test_pushing_an_identical_snapshot_creates_no_commit(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                         v1: Path) -> None:
    """Pushing what the branch already holds makes no commit and reports nothing new or uploaded."""
    repo_id, first = pushed
    history = hub.commits(repo_id)
    files = lamina.open(v1).manifest.files

    result = lamina.push(v1, f"hf://{repo_id}", message="again")

    assert commit_posts(hub, repo_id) == []
    assert hub.commits(repo_id) == history
    assert hub.lfs_uploaded_bytes == 0
    assert result.revision == first.revision == result.parent
    assert result.snapshot == first.snapshot
    assert result.reused_files == len(files) and result.reused_bytes == sum(f.size for f in files)
    assert result.created is False
    assert result.uploaded_files == 0 and result.uploaded_bytes == 0


def test_a_dropped_or_renamed_layer_deletes_its_stale_shard(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                           v1: Path, tmp_path: Path) -> None:
    """A version without layer ``mid`` and with ``dec`` renamed ``out`` removes both old shards from
    the hub in the same single commit."""
    repo_id, first = pushed
    tensors = weights(1)
    for key in ("mid.weight", "mid.bias"):
        del tensors[key]
    tensors["out.weight"], tensors["out.bias"] = tensors.pop("dec.weight"), tensors.pop("dec.bias")
    v3 = save(tensors, tmp_path / "v3")
    stale = {shard_of(v1, "mid").path, shard_of(v1, "dec").path}
    assert stale.isdisjoint(disk_files(v3))
    assert stale <= set(remote_tree(repo_id))

    result = lamina.push(v3, f"hf://{repo_id}", message="drop mid, rename dec")

    assert result.created and len(commit_posts(hub, repo_id)) == 1
    assert hub.commits(repo_id)[1] == first.revision
    tree = remote_tree(repo_id)
    assert stale.isdisjoint(tree)
    assert_tree_is_snapshot(repo_id, result.revision, v3)
    assert stale <= set(remote_tree(repo_id, "v1"))  # history keeps them


def test_push_to_a_new_branch_starts_it_from_main(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                  tmp_path: Path) -> None:
    """``hf://org/name@dev`` creates branch dev from main and commits there; main does not move."""
    repo_id, first = pushed
    tensors = weights(1)
    tensors["enc.bias"] = tensors["enc.bias"] + 1
    v2 = save(tensors, tmp_path / "v2")

    result = lamina.push(v2, f"hf://{repo_id}@dev")

    assert result.branch == "dev" and result.parent == first.revision
    assert hub.head(repo_id, "dev") == result.revision != first.revision
    assert hub.head(repo_id, "main") == first.revision
    assert_tree_is_snapshot(repo_id, "dev", v2)
    assert_same_tensors(lamina.open(f"hf://{repo_id}@dev", cache=False).layer("enc"), lamina.open(v2).layer("enc"))


def test_an_artifact_opened_on_the_hub_pushes_to_another_repo(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                                v1: Path, tmp_path: Path) -> None:
    """push(open("hf://a@v1"), "hf://b") mirrors the snapshot: b's tree is exactly v1's files."""
    repo_id, _ = pushed
    mirror = new_repo_id()
    result = lamina.push(lamina.open(f"hf://{repo_id}@v1", cache=False), f"hf://{mirror}", tag="v1")
    assert result.created and result.snapshot == sha256((v1 / MANIFEST).read_bytes())
    assert_tree_is_snapshot(mirror, "v1", v1)
    lamina.pull(f"hf://{mirror}@v1", tmp_path / "pulled").verify()
    assert disk_files(tmp_path / "pulled") == disk_files(v1)


# ------------------------------------------------------------------------------------------ 2. converted snapshots
class TiedNet(torch.nn.Module):
    """Tied embedding/head, LayerNorm and BatchNorm buffers (an int64 counter included)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(12, 6)
        self.norm = torch.nn.LayerNorm(6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.head = torch.nn.Linear(6, 12, bias=False)
        self.head.weight = self.embed.weight


def test_torch_state_dict_snapshot_round_trips_through_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    """.pt -> snapshot -> hub -> pull is byte-identical, and converts back to the same tensors (still tied)."""
    torch.manual_seed(5)
    model = TiedNet()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.num_batches_tracked.fill_(3)
    sd = model.state_dict()
    torch.save(sd, tmp_path / "model.pt")
    snap = lamina.convert(tmp_path / "model.pt", tmp_path / "snap")

    dst = push_and_pull(hub, snap, tmp_path / "pulled")

    out = lamina.convert(dst, tmp_path / "back.pt")
    back = torch.load(out, weights_only=True)
    assert_same_tensors(back, sd)
    assert back["head.weight"].data_ptr() == back["embed.weight"].data_ptr()


def test_keras_snapshot_round_trips_through_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    """.keras -> snapshot -> hub -> pull is byte-identical; converted back, it loads with the same
    weights and predictions."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu", name="fc1"),
                              keras.layers.Dense(2, name="fc2")], name="mlp")
    model.save(tmp_path / "model.keras")
    snap = lamina.convert(tmp_path / "model.keras", tmp_path / "snap")

    dst = push_and_pull(hub, snap, tmp_path / "pulled")

    out = lamina.convert(dst, tmp_path / "back.keras")
    loaded = keras.models.load_model(out)
    assert len(loaded.weights) == len(model.weights) == 4
    for got, want in zip(loaded.weights, model.weights):
        g, w = np.asarray(got.numpy()), np.asarray(want.numpy())
        assert g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes(), want.path
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
    assert np.asarray(loaded.predict(x, verbose=0)).tobytes() == np.asarray(model.predict(x, verbose=0)).tobytes()


def test_onnx_snapshot_round_trips_through_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    """.onnx -> snapshot -> hub -> pull is byte-identical; converted back, the graph checks, its
    initializers are equal and onnxruntime gives the same outputs."""
    rng = np.random.default_rng(3)
    inits = {"fc.weight": rng.standard_normal((4, 3)).astype(np.float32),
             "fc.bias": rng.standard_normal(3).astype(np.float32)}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc.weight"], ["h"]), helper.make_node("Add", ["h", "fc.bias"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save_model(model, str(tmp_path / "model.onnx"))
    snap = lamina.convert(tmp_path / "model.onnx", tmp_path / "snap")

    dst = push_and_pull(hub, snap, tmp_path / "pulled")

    out = lamina.convert(dst, tmp_path / "back.onnx")
    onnx.checker.check_model(str(out))
    back = {t.name: numpy_helper.to_array(t) for t in onnx.load_model(str(out)).graph.initializer}
    assert sorted(back) == sorted(inits)
    for name, want in inits.items():
        assert back[name].dtype == want.dtype and back[name].tobytes() == want.tobytes(), name
    x = {"x": rng.standard_normal((2, 4)).astype(np.float32)}

    def run(path: Path) -> bytes:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, x)[0].tobytes()

    assert run(out) == run(tmp_path / "model.onnx")


# ------------------------------------------------------------------------------------------ 3. lazy reads
def test_lazy_layer_read_fetches_only_that_shard_and_the_manifest(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], v1: Path) -> None:
    """Opening reads the manifest; reading one layer then transfers at most that layer's shard."""
    repo_id, _ = pushed
    enc = shard_of(v1, "enc")
    by_sha = sha_index(v1)

    art = lamina.open(f"hf://{repo_id}@v1", cache=False)
    assert requested_files(hub, repo_id, by_sha) == {MANIFEST}
    assert art.manifest.files == lamina.open(v1).manifest.files
    hub.reset()

    got = art.layer("enc")

    assert_same_tensors(got, lamina.open(v1).layer("enc"))
    assert requested_files(hub, repo_id, by_sha) == {enc.path}
    shard_gets = [r for r in downloads(hub) if r[1] == f"/cdn-lfs/{repo_id}/{sha256((v1 / enc.path).read_bytes())}"]
    assert shard_gets and all(r[2] is not None for r in shard_gets)  # range requests, never whole-file GETs
    assert sum(range_bytes(r[2], enc.size) for r in shard_gets) <= enc.size
    assert hub.lfs_uploaded_bytes == 0 and not any(r[0] in ("POST", "PUT") for r in hub.requests)


def test_open_pins_the_revision_it_resolved(hub: FakeHub, pushed: tuple[str, lamina.PushResult], v1: Path,
                                            tmp_path: Path) -> None:
    """An Artifact opened at v1 keeps reading v1's bytes after the branch moves on."""
    repo_id, first = pushed
    art_v1 = lamina.open(f"hf://{repo_id}", cache=False)  # main, which is v1 now
    assert_same_tensors(art_v1.layer("enc"), lamina.open(v1).layer("enc"))

    tensors = weights(1)
    tensors["dec.weight"], tensors["dec.bias"] = -tensors["dec.weight"], tensors["dec.bias"] + 3
    v2 = save(tensors, tmp_path / "v2")
    second = lamina.push(v2, f"hf://{repo_id}", tag="v2")
    assert second.revision != first.revision == hub.commits(repo_id)[1]
    hub.reset()

    assert_same_tensors(art_v1.layer("dec"), lamina.open(v1).layer("dec"))
    assert {p for p in (r[1] for r in hub.requests) if "/resolve/" in p} \
        == {f"/{repo_id}/resolve/{first.revision}/{shard_of(v1, 'dec').path}"}
    assert_same_tensors(lamina.open(f"hf://{repo_id}", cache=False).layer("dec"), lamina.open(v2).layer("dec"))
    assert_same_tensors(lamina.open(f"hf://{repo_id}@v2", cache=False).layer("dec"), lamina.open(v2).layer("dec"))


def test_a_cached_open_reads_a_layer_from_the_hub_once(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                       v1: Path, tmp_path: Path) -> None:
    """With a cache directory the shard is fetched whole once; a second open and read sends no data request."""
    repo_id, _ = pushed
    cache = tmp_path / "blob-cache"
    enc = shard_of(v1, "enc")
    by_sha = sha_index(v1)
    want = lamina.open(v1).layer("mid")

    assert_same_tensors(lamina.open(f"hf://{repo_id}@v1", cache=cache).layer("mid"), want)
    mid = shard_of(v1, "mid")
    assert requested_files(hub, repo_id, by_sha) == {MANIFEST, mid.path}
    cached = [p for p in cache.rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in cached] == [(v1 / mid.path).read_bytes()]
    hub.reset()

    assert_same_tensors(lamina.open(f"hf://{repo_id}@v1", cache=cache).layer("mid"), want)

    assert mid.path not in requested_files(hub, repo_id, by_sha)
    assert enc.path not in requested_files(hub, repo_id, by_sha)
    assert requested_files(hub, repo_id, by_sha) <= {MANIFEST}


# ------------------------------------------------------------------------------------------ 4. pull, cache, offline
def test_pull_gives_a_verified_snapshot_and_reuses_the_hf_cache(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], v1: Path, tmp_path: Path) -> None:
    """A pull writes a plain, verifiable copy; a second pull comes from huggingface_hub's cache."""
    repo_id, _ = pushed
    first = lamina.pull(f"hf://{repo_id}@v1", tmp_path / "a")
    assert disk_files(tmp_path / "a") == disk_files(v1)
    first.verify()
    lamina.open(tmp_path / "a").verify()
    assert {r[1] for r in downloads(hub)}  # it did download
    hub.reset()

    second = lamina.pull(f"hf://{repo_id}@v1", tmp_path / "b")

    assert downloads(hub) == []
    assert all((r[0] == "GET" and r[1].startswith("/api/")) or r[0] == "HEAD" for r in hub.requests), hub.requests
    assert disk_files(tmp_path / "b") == disk_files(v1)
    second.verify()
    with pytest.raises(lamina.ExistsError):
        lamina.pull(f"hf://{repo_id}@v1", tmp_path / "b")


def test_offline_pull_and_open_use_the_cache_without_any_request(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], v1: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With HF_HUB_OFFLINE, pull and open of a revision pulled before work with zero server requests."""
    repo_id, _ = pushed
    lamina.pull(f"hf://{repo_id}@v1", tmp_path / "online")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset()

    lamina.pull(f"hf://{repo_id}@v1", tmp_path / "offline")
    art = lamina.open(f"hf://{repo_id}@v1")
    got = art.layer("dec")

    assert hub.requests == []
    assert disk_files(tmp_path / "offline") == disk_files(v1)
    lamina.open(tmp_path / "offline").verify()
    assert_same_tensors(got, lamina.open(v1).layer("dec"))


def test_an_offline_open_verifies_like_an_online_one(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify() of hf://...@v1 succeeds online and, from the cache, offline (the Hub's own
    .gitattributes is not part of the snapshot)."""
    repo_id, _ = pushed
    lamina.open(f"hf://{repo_id}@v1", cache=False).verify()
    lamina.pull(f"hf://{repo_id}@v1", tmp_path / "online")  # fills huggingface_hub's cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset()

    lamina.open(f"hf://{repo_id}@v1").verify()

    assert hub.requests == []


def test_offline_with_an_empty_cache_is_not_found(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, a revision never downloaded is a NotFoundError that says why, and nothing is sent."""
    repo_id, _ = pushed
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(lamina.NotFoundError, match="cache") as pulled:
        lamina.pull(f"hf://{repo_id}@v1", tmp_path / "dst")
    assert repo_id in str(pulled.value) and "HF_HUB_OFFLINE" in str(pulled.value)
    with pytest.raises(lamina.NotFoundError, match="cache") as opened:
        lamina.open(f"hf://{repo_id}@v1")
    assert repo_id in str(opened.value)
    assert not (tmp_path / "dst").exists()
    assert hub.requests == []


# ------------------------------------------------------------------------------------------ 5. transformers
def test_gpt2_pushed_and_pulled_loads_with_from_pretrained(hub: FakeHub, tmp_path: Path) -> None:
    """A tiny tied GPT-2 saved by lamina, pushed and pulled, loads with from_pretrained (from the pull
    and straight from the hub) with identical logits and still-tied weights."""
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=97, n_positions=64, bos_token_id=0,
                        eos_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(11)
    model = GPT2LMHeadModel(config).eval()
    lamina.save(model, tmp_path / "gpt2", files={"config.json": config.to_dict()})
    repo_id = new_repo_id()
    lamina.push(tmp_path / "gpt2", f"hf://{repo_id}", tag="v1")
    lamina.pull(f"hf://{repo_id}@v1", tmp_path / "pulled")
    assert disk_files(tmp_path / "pulled") == disk_files(tmp_path / "gpt2")

    tokens = torch.randint(0, config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(tokens).logits
    for source in (tmp_path / "pulled", repo_id):
        kwargs = {"revision": "v1"} if source == repo_id else {}
        loaded = GPT2LMHeadModel.from_pretrained(source, **kwargs).eval()
        assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
        assert_same_tensors(loaded.state_dict(), model.state_dict())
        with torch.no_grad():
            assert torch.equal(loaded(tokens).logits, want)


# ------------------------------------------------------------------------------------------ 6. auth and errors
def test_a_wrong_token_is_an_authentication_error_and_changes_nothing(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown token: StorageError naming authentication / HTTP 401, for push (existing or new
    repo), open and pull; nothing is created or committed."""
    repo_id, _ = pushed
    before = state(hub, repo_id)
    v2 = save(weights(2), tmp_path / "v2")
    monkeypatch.setenv("HF_TOKEN", "hf_garbage")
    fresh = new_repo_id()

    for action in (lambda: lamina.push(v2, f"hf://{repo_id}", tag="v2"), lambda: lamina.push(v2, f"hf://{fresh}"),
                   lambda: lamina.open(f"hf://{repo_id}@v1"), lambda: lamina.pull(f"hf://{repo_id}", tmp_path / "d")):
        with pytest.raises(lamina.StorageError, match="authentication") as caught:
            action()
        assert "401" in str(caught.value) and "HF_TOKEN" in str(caught.value)

    assert state(hub, repo_id) == before
    assert not hub.has_repo(fresh)
    assert hub.lfs_uploaded_bytes == 0 and commit_posts(hub, repo_id) == []
    assert not (tmp_path / "d").exists()


def test_a_read_only_token_cannot_push(hub: FakeHub, pushed: tuple[str, lamina.PushResult], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A read token: StorageError naming permission / HTTP 403, for an existing and a new repo."""
    repo_id, _ = pushed
    before = state(hub, repo_id)
    v2 = save(weights(2), tmp_path / "v2")
    monkeypatch.setenv("HF_TOKEN", FakeHub.READ_TOKEN)
    fresh = new_repo_id()

    for location in (f"hf://{repo_id}", f"hf://{fresh}"):
        with pytest.raises(lamina.StorageError, match="permission") as caught:
            lamina.push(v2, location, tag="v2")
        assert "403" in str(caught.value)

    assert state(hub, repo_id) == before
    assert not hub.has_repo(fresh)
    assert commit_posts(hub, repo_id) == [] and hub.lfs_uploaded_bytes == 0
    assert_same_tensors(lamina.open(f"hf://{repo_id}", cache=False).layer("enc"), weights_layer(1, "enc"))



def test_a_missing_repo_is_not_found(hub: FakeHub, tmp_path: Path) -> None:
    """open and pull of a repo that does not exist: NotFoundError naming it; nothing written."""
    repo_id = new_repo_id()
    for action in (lambda: lamina.open(f"hf://{repo_id}"), lambda: lamina.open(f"hf://{repo_id}@v1", cache=False),
                   lambda: lamina.pull(f"hf://{repo_id}", tmp_path / "dst")):
        with pytest.raises(lamina.NotFoundError, match="repository not found") as caught:
            action()
        assert repo_id in str(caught.value)
    assert not (tmp_path / "dst").exists()
    assert not hub.has_repo(repo_id)


def test_an_unknown_revision_is_not_found(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                          tmp_path: Path) -> None:
    """hf://org/name@nope: NotFoundError saying the revision is unknown, for open and pull."""
    repo_id, _ = pushed
    for action in (lambda: lamina.open(f"hf://{repo_id}@nope"), lambda: lamina.pull(f"hf://{repo_id}@nope", tmp_path / "d")):
        with pytest.raises(lamina.NotFoundError, match="revision not found") as caught:
            action()
        assert repo_id in str(caught.value)
    assert not (tmp_path / "d").exists()


def test_a_concurrent_commit_makes_the_push_a_conflict(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If the branch moves between lamina reading the head and committing, the hub refuses the commit
    (parent_commit) and lamina raises ConflictError; the other writer's commit stays the head."""
    repo_id, first = pushed
    v2 = save(weights(2), tmp_path / "v2")
    original = HfApi.create_commit
    other: list[str] = []

    def racing(self: HfApi, repo: str, operations: Any, **kwargs: Any) -> Any:
        if not other:  # another client commits first, with the real client
            info = original(self, repo, [CommitOperationAdd(path_in_repo="NOTES.md", path_or_fileobj=b"hello\n")],
                            commit_message="someone else")
            other.append(info.oid)
        return original(self, repo, operations, **kwargs)

    monkeypatch.setattr(HfApi, "create_commit", racing)
    with pytest.raises(lamina.ConflictError, match="moved") as caught:
        lamina.push(v2, f"hf://{repo_id}", tag="v2")

    assert repo_id in str(caught.value)
    assert hub.commits(repo_id)[:2] == [other[0], first.revision]
    assert hub.files(repo_id)[MANIFEST] == hub.files(repo_id, first.revision)[MANIFEST]
    assert set(hub.files(repo_id)) == set(hub.files(repo_id, first.revision)) | {"NOTES.md"}
    assert "v2" not in hub.refs(repo_id)["tags"]


def test_pushing_with_an_existing_tag_is_refused_before_any_commit(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], tmp_path: Path) -> None:
    """A tag that exists: ExistsError, no upload, no commit, the tag unmoved."""
    repo_id, first = pushed
    before = state(hub, repo_id)
    v2 = save(weights(2), tmp_path / "v2")

    with pytest.raises(lamina.ExistsError, match="v1"):
        lamina.push(v2, f"hf://{repo_id}", tag="v1")

    assert state(hub, repo_id) == before
    assert hub.refs(repo_id)["tags"]["v1"] == first.revision
    assert commit_posts(hub, repo_id) == [] and hub.lfs_uploaded_bytes == 0


def test_a_refused_push_to_a_new_branch_leaves_no_branch_behind(
        hub: FakeHub, pushed: tuple[str, lamina.PushResult], tmp_path: Path) -> None:
    """Pushing to a new branch with a tag that exists is refused (ExistsError) without creating the branch."""
    repo_id, _ = pushed
    before = state(hub, repo_id)
    v2 = save(weights(2), tmp_path / "v2")

    with pytest.raises(lamina.LaminaError) as caught:
        lamina.push(v2, f"hf://{repo_id}@dev", tag="v1")

    assert hub.refs(repo_id) == before[2], "the refused push created branch 'dev'"
    assert state(hub, repo_id) == before
    assert isinstance(caught.value, lamina.ExistsError), caught.value


@pytest.mark.parametrize("location", ["hf://onlyname", "hf://a/b/c", "hf://", "hf://a/", "hf:///b"])
def test_malformed_hub_locations_are_format_errors(hub: FakeHub, v1: Path, tmp_path: Path, location: str) -> None:
    """A hub location that is not hf://<org>/<name>[@rev]: FormatError from open, pull and push, no request."""
    for action in (lambda: lamina.open(location), lambda: lamina.pull(location, tmp_path / "d"),
                   lambda: lamina.push(v1, location)):
        with pytest.raises(lamina.FormatError, match="hf://<org>/<name>"):
            action()
    assert hub.requests == []
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------------ 7. CLI
def test_cli_push_inspect_pull_verify_and_offline_pull(hub: FakeHub, v1: Path, tmp_path: Path) -> None:
    """`lamina push --revision --tag --private -m`, `inspect`, `pull`, `verify` against the hub in a
    subprocess using HF_TOKEN; then with HF_HUB_OFFLINE=1 pull and inspect work with no request."""
    repo_id = new_repo_id()
    env = hub_cli_env(hub, tmp_path / "hf-home")
    manifest = lamina.open(v1).manifest

    res = hub_cli(env, "push", v1, f"hf://{repo_id}", "--revision", "main", "--tag", "v1", "--private",
                  "-m", "from the cli")
    assert res.returncode == 0, res.stderr
    head = hub.head(repo_id)
    assert f"main -> {head[:12]} (new revision)" in res.stdout and "tagged v1" in res.stdout
    assert len(commit_posts(hub, repo_id)) == 1
    assert hub.refs(repo_id)["tags"] == {"v1": head}
    api = HfApi(token=FakeHub.WRITE_TOKEN)
    assert api.model_info(repo_id).private is True
    assert api.list_repo_commits(repo_id)[0].title == "from the cli"
    assert_tree_is_snapshot(repo_id, head, v1)

    res = hub_cli(env, "inspect", f"hf://{repo_id}@v1", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert repo_id in summary["location"]
    assert [f["path"] for f in summary["files"]] == [f.path for f in manifest.files]
    assert [f["digest"] for f in summary["files"]] == [":".join(f.digest) for f in manifest.files]
    assert summary["info"]["name"] == "hub-test"
    res = hub_cli(env, "inspect", f"hf://{repo_id}@v1")
    assert res.returncode == 0 and "hub-test" in res.stdout, res.stderr

    dst = tmp_path / "pulled"
    res = hub_cli(env, "pull", f"hf://{repo_id}@v1", dst)
    assert res.returncode == 0, res.stderr
    assert f"{len(manifest.layers)} layers" in res.stdout
    assert disk_files(dst) == disk_files(v1)
    res = hub_cli(env, "verify", dst)
    assert res.returncode == 0 and res.stdout.startswith(f"OK {dst}"), res.stderr

    hub.reset()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    res = hub_cli(offline, "pull", f"hf://{repo_id}@v1", tmp_path / "offline")
    assert res.returncode == 0, res.stderr
    assert disk_files(tmp_path / "offline") == disk_files(v1)
    res = hub_cli(offline, "inspect", f"hf://{repo_id}@v1", "--json")
    assert res.returncode == 0, res.stderr
    assert [f["digest"] for f in json.loads(res.stdout)["files"]] == [":".join(f.digest) for f in manifest.files]
    assert hub.requests == []


def test_cli_errors_are_one_clean_line(hub: FakeHub, pushed: tuple[str, lamina.PushResult], tmp_path: Path) -> None:
    """A wrong HF_TOKEN, a missing repo and a bad location each exit 2 with one line naming the problem."""
    repo_id, _ = pushed
    before = state(hub, repo_id)
    v2 = save(weights(2), tmp_path / "v2")
    bad = hub_cli_env(hub, tmp_path / "hf-home", token="hf_garbage")
    good = hub_cli_env(hub, tmp_path / "hf-home")

    assert_clean_cli_error(hub_cli(bad, "push", v2, f"hf://{repo_id}"), lamina.StorageError,
                           "authentication", "401", repo_id)
    assert_clean_cli_error(hub_cli(bad, "pull", f"hf://{repo_id}@v1", tmp_path / "d"), lamina.StorageError,
                           "authentication", "401")
    missing = new_repo_id()
    assert_clean_cli_error(hub_cli(good, "pull", f"hf://{missing}", tmp_path / "d"), lamina.NotFoundError,
                           "repository not found", missing)
    assert_clean_cli_error(hub_cli(good, "inspect", "hf://a/b/c"), lamina.FormatError, "hf://<org>/<name>")

    assert state(hub, repo_id) == before
    assert not (tmp_path / "d").exists()


def test_cli_push_with_an_existing_tag_is_one_exists_error_line(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                                tmp_path: Path) -> None:
    """`lamina push --tag v1` when v1 exists: exit 2, one ExistsError line naming the tag; nothing committed."""
    repo_id, _ = pushed
    before = state(hub, repo_id)
    v2 = save(weights(2), tmp_path / "v2")
    res = hub_cli(hub_cli_env(hub, tmp_path / "hf-home"), "push", v2, f"hf://{repo_id}", "--tag", "v1")
    assert_clean_cli_error(res, lamina.ExistsError, "v1", repo_id)
    assert state(hub, repo_id) == before


# ------------------------------------------------------------------------------- review regressions
def test_a_corrupted_local_shard_is_refused_before_any_commit(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                               tmp_path: Path) -> None:
    """A shard whose bytes no longer match the manifest is never published: IntegrityError, no commit."""
    repo_id, _ = pushed
    v2 = save(weights(2), tmp_path / "v2")
    shard = shard_of(v2, "mid")
    data = bytearray((v2 / shard.path).read_bytes())
    data[-1] ^= 0xFF
    (v2 / shard.path).write_bytes(bytes(data))
    before = state(hub, repo_id)
    with pytest.raises(lamina.IntegrityError, match=shard.path):
        lamina.push(v2, f"hf://{repo_id}")
    assert state(hub, repo_id) == before


def test_pull_downloads_only_the_snapshot_files(hub: FakeHub, pushed: tuple[str, lamina.PushResult],
                                                tmp_path: Path) -> None:
    """Files of the hub repository that the manifest does not list (a GGUF beside it) are not downloaded."""
    from huggingface_hub import HfApi

    repo_id, _ = pushed
    extra = os.urandom(256 * 1024)
    HfApi().upload_file(path_or_fileobj=extra, path_in_repo="model.gguf", repo_id=repo_id)
    hub.reset()
    pulled = lamina.pull(f"hf://{repo_id}", tmp_path / "pulled")
    pulled.verify()
    assert not (tmp_path / "pulled" / "model.gguf").exists()
    assert all("model.gguf" not in path for _, path, _, _ in hub.requests)
    assert sum(size for _, path, _, size in downloads(hub)) < len(extra)


@pytest.mark.parametrize("location", ["hf://org/a..b", "hf://org/a--b", "hf://org/" + "x" * 120])
def test_invalid_repo_ids_are_format_errors(hub: FakeHub, location: str, tmp_path: Path, v1: Path) -> None:
    """Repo ids huggingface_hub rejects are a FormatError from open, push and pull, not its own exception."""
    for call in (lambda: lamina.open(location), lambda: lamina.push(v1, location),
                 lambda: lamina.pull(location, tmp_path / "x")):
        with pytest.raises(lamina.FormatError):
            call()


def test_an_unreachable_hub_is_a_storage_error(monkeypatch: pytest.MonkeyPatch, v1: Path) -> None:
    """Nothing listening at HF_ENDPOINT: StorageError from open and push, not an httpx exception."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", FakeHub.WRITE_TOKEN)
    for call in (lambda: lamina.open("hf://org/name"), lambda: lamina.push(v1, "hf://org/name")):
        with pytest.raises(lamina.StorageError):
            call()
