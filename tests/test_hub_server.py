"""Self-test of the fake Hugging Face Hub (tests/hub_server.py) with the real huggingface_hub client.

Every test drives ``huggingface_hub`` itself (HfApi, hf_hub_download, snapshot_download) against a
``FakeHub`` on 127.0.0.1; expected values are computed from the inputs (sha256 / git blob sha1 of the
bytes uploaded), never copied from the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from hub_server import DEFAULT_GITATTRIBUTES, FakeHub
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub import hf_api as hf_api_module
from huggingface_hub.errors import (
    BadRequestError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils._runtime import is_xet_available

# huggingface_hub itself passes a file object as ``data=`` to httpx2 for LFS PUTs.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

USER, ORG, OTHER = FakeHub.USER, FakeHub.ORG, FakeHub.OTHER_USER
WRITE, READ, OTHER_TOKEN = FakeHub.WRITE_TOKEN, FakeHub.READ_TOKEN, FakeHub.OTHER_TOKEN


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256(data)}\nsize {len(data)}\n".encode()


def blob(seed: str, size: int) -> bytes:
    """Deterministic incompressible-looking bytes."""
    out, counter = bytearray(), 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def puts(hub: FakeHub) -> list[tuple[str, str, str | None, int]]:
    return [r for r in hub.requests if r[0] == "PUT"]


def client_env(hub: FakeHub, tmp_path: Path, token: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for a client subprocess: ``hub.env`` (endpoint, Xet off, isolated HF_HOME) on top of
    the current environment stripped of every Hugging Face variable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGING_FACE_", "HUGGINGFACE_")) and k != "TRANSFORMERS_OFFLINE"}
    env.update(hub.env(tmp_path / "hf_home", token=token))
    env.update(extra)
    return env


def run_client(code: str, env: dict[str, str]) -> Any:
    """Run ``code`` in a fresh interpreter (constants are read at import) and return the JSON it prints last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, f"client subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def hub() -> Any:
    with FakeHub() as server:
        yield server


@pytest.fixture(autouse=True)
def hf_client(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Point the in-process client at nothing real: Xet off, no ambient token, throwaway default cache."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    hub.reset()
    yield
    assert hub.server_errors == [], "\n".join(hub.server_errors)


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=WRITE)


def new_repo(api: HfApi, namespace: str = USER, private: bool = False, repo_type: str | None = None) -> str:
    repo_id = f"{namespace}/repo-{uuid.uuid4().hex[:10]}"
    api.create_repo(repo_id, private=private, repo_type=repo_type)
    return repo_id


@pytest.fixture
def folder(tmp_path: Path) -> dict[str, bytes]:
    """A small model folder on disk: two LFS-by-extension files, regular text files, a subfolder."""
    files = {
        "config.json": json.dumps({"dim": 8, "layers": 2}).encode(),
        "model.safetensors": blob("weights", 3000),
        "shards/extra.bin": blob("extra", 1500),
        "shards/index.json": b'{"weight_map": {}}',
        "notes.txt": b"plain text\n" * 20,
    }
    root = tmp_path / "folder"
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return files


def add_ops(root: Path, paths: list[str]) -> list[CommitOperationAdd]:
    return [CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(root / p)) for p in paths]


# ------------------------------------------------------------------------------------------ accounts
def test_whoami_with_good_and_bad_tokens(hub: FakeHub) -> None:
    api = HfApi(endpoint=hub.endpoint)
    me = api.whoami(token=WRITE)
    assert me["name"] == USER
    assert [org["name"] for org in me["orgs"]] == [ORG]
    assert me["auth"]["accessToken"]["role"] == "write"
    assert api.whoami(token=READ)["auth"]["accessToken"]["role"] == "read"
    assert api.whoami(token=OTHER_TOKEN)["name"] == OTHER

    with pytest.raises(HfHubHTTPError) as info:
        api.whoami(token="hf_not_a_token")
    assert info.value.response.status_code == 401
    assert not isinstance(info.value, RepositoryNotFoundError)
    assert info.value.response.headers["X-Error-Message"] == "Invalid credentials in Authorization header"


def test_invalid_token_is_401_everywhere_not_repo_not_found(hub: FakeHub, api: HfApi) -> None:
    repo_id = new_repo(api)
    with pytest.raises(HfHubHTTPError) as info:
        HfApi(endpoint=hub.endpoint, token="hf_bogus").model_info(repo_id)
    assert info.value.response.status_code == 401
    assert not isinstance(info.value, RepositoryNotFoundError)


# ------------------------------------------------------------------------------------------ repos
def test_create_repo_public_private_exist_ok_and_visibility(hub: FakeHub, api: HfApi) -> None:
    public = new_repo(api)
    private = new_repo(api, namespace=ORG, private=True)
    assert hub.has_repo(public) and hub.has_repo(private)

    info = api.model_info(public)
    assert (info.id, info.private, info.sha) == (public, False, hub.head(public))
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]  # the Hub's initial commit
    assert api.model_info(private).private is True

    # 409 without exist_ok; exist_ok returns the same URL (the client reads "url" from the 409 body).
    with pytest.raises(HfHubHTTPError) as info_409:
        api.create_repo(public)
    assert info_409.value.response.status_code == 409
    url = api.create_repo(public, exist_ok=True)
    assert (url.repo_id, url.endpoint, str(url)) == (public, hub.endpoint, f"{hub.endpoint}/{public}")

    # Private: invisible to another user and to anonymous clients; public: visible to both.
    other = HfApi(endpoint=hub.endpoint, token=OTHER_TOKEN)
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    for client in (other, anonymous):
        with pytest.raises(RepositoryNotFoundError):
            client.model_info(private)
        assert client.repo_exists(private) is False
        assert client.model_info(public).sha == hub.head(public)

    # Namespace rules: bob cannot create under alice's org (403), alice's read token cannot create.
    with pytest.raises(HfHubHTTPError) as info_403:
        other.create_repo(f"{ORG}/not-yours")
    assert info_403.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as info_read:
        HfApi(endpoint=hub.endpoint, token=READ).create_repo(f"{USER}/read-only")
    assert info_read.value.response.status_code == 403
    assert not hub.has_repo(f"{ORG}/not-yours") and not hub.has_repo(f"{USER}/read-only")


def test_update_visibility_and_delete_repo(hub: FakeHub, api: HfApi) -> None:
    repo_id = new_repo(api)
    other = HfApi(endpoint=hub.endpoint, token=OTHER_TOKEN)
    assert other.repo_exists(repo_id)
    api.update_repo_settings(repo_id, private=True)
    assert not other.repo_exists(repo_id)
    api.delete_repo(repo_id)
    assert not hub.has_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_id)
    api.delete_repo(repo_id, missing_ok=True)


# ------------------------------------------------------------------------------------------ commits
def test_create_commit_uploads_lfs_and_skips_unchanged(hub: FakeHub, api: HfApi, folder: dict[str, bytes],
                                                       tmp_path: Path) -> None:
    root = tmp_path / "folder"
    repo_id = new_repo(api)
    hub.reset()
    lfs_paths = {"model.safetensors", "shards/extra.bin"}  # by the .gitattributes patterns

    first = api.create_commit(repo_id, add_ops(root, sorted(folder)), commit_message="first",
                              commit_description="all files")
    assert first.oid == hub.head(repo_id)
    assert first.commit_url == f"{hub.endpoint}/{repo_id}/commit/{first.oid}"
    assert hub.files(repo_id) == {".gitattributes": DEFAULT_GITATTRIBUTES.encode(), **folder}
    assert hub.lfs_files(repo_id) == {p: sha256(folder[p]) for p in lfs_paths}
    assert sorted(hub.lfs_uploads) == sorted(sha256(folder[p]) for p in lfs_paths)
    assert hub.lfs_uploaded_bytes == sum(len(folder[p]) for p in lfs_paths)
    assert sorted(r[3] for r in puts(hub)) == sorted(len(folder[p]) for p in lfs_paths)
    # Upload order: preupload, LFS batch, PUT x2 (storage origin), verify x2, then the commit.
    methods_paths = [(m, p) for m, p, _, _ in hub.requests]
    assert methods_paths[0] == ("POST", f"/api/models/{repo_id}/preupload/main")
    assert methods_paths[1] == ("POST", f"/{repo_id}.git/info/lfs/objects/batch")
    assert methods_paths[-1] == ("POST", f"/api/models/{repo_id}/commit/main")
    assert sum(p.endswith("/objects/verify") for _, p in methods_paths) == 2

    # Second commit: the unchanged safetensors is re-added next to a changed .bin and a new file.
    hub.reset()
    (root / "shards/extra.bin").write_bytes(new_bin := blob("extra-v2", 1700))
    (root / "added.txt").write_bytes(b"new\n")
    second = api.create_commit(repo_id, add_ops(root, ["model.safetensors", "shards/extra.bin", "added.txt"]),
                               commit_message="second")
    assert hub.lfs_uploads == [sha256(new_bin)]  # the batch API said the safetensors object exists
    assert hub.lfs_uploaded_bytes == len(new_bin)
    assert [r[3] for r in puts(hub)] == [len(new_bin)]
    expected = {".gitattributes": DEFAULT_GITATTRIBUTES.encode(), **folder,
                "shards/extra.bin": new_bin, "added.txt": b"new\n"}
    assert hub.files(repo_id) == expected
    assert hub.commits(repo_id)[:2] == [second.oid, first.oid]

    # Third: nothing changed at all -> the client sends no commit and returns the current head.
    hub.reset()
    third = api.create_commit(repo_id, add_ops(root, ["model.safetensors", "config.json"]), commit_message="noop")
    assert third.oid == second.oid == hub.head(repo_id)
    assert not any(p.endswith("/commit/main") for _, p, _, _ in hub.requests)
    assert puts(hub) == []


def test_upload_modes_size_threshold_and_binary_sample(tmp_path: Path) -> None:
    with FakeHub(lfs_threshold=4096) as small:
        api = HfApi(endpoint=small.endpoint, token=WRITE)
        repo_id = new_repo(api)
        files = {
            "big.txt": b"a" * 4097,          # over the threshold -> lfs
            "edge.txt": b"a" * 4096,         # at the threshold -> regular
            "bytes.dat": b"\x00\x01" * 10,   # binary sample -> lfs
            "w.safetensors": b"{}",          # pattern -> lfs even if tiny
            "empty.bin": b"",                # empty files are always regular (client-side rule)
        }
        api.create_commit(repo_id, [CommitOperationAdd(p, d) for p, d in files.items()], commit_message="modes")
        assert small.lfs_files(repo_id) == {p: sha256(files[p]) for p in ("big.txt", "bytes.dat", "w.safetensors")}
        assert {p: d for p, d in small.files(repo_id).items() if p != ".gitattributes"} == files
        assert small.server_errors == []


def test_upload_folder_upload_file_delete_and_copy(hub: FakeHub, api: HfApi, folder: dict[str, bytes],
                                                   tmp_path: Path) -> None:
    root = tmp_path / "folder"
    (root / "README.md").write_text("---\nlicense: apache-2.0\n---\n# Model\n")  # triggers /api/validate-yaml
    repo_id = new_repo(api, namespace=ORG)
    info = api.upload_folder(repo_id=repo_id, folder_path=root, commit_message="upload folder")
    assert info.oid == hub.head(repo_id)
    assert hub.files(repo_id)["README.md"] == (root / "README.md").read_bytes()
    assert any(p == "/api/validate-yaml" for _, p, _, _ in hub.requests)

    api.upload_file(path_or_fileobj=b"single", path_in_repo="dir/one.txt", repo_id=repo_id)
    api.delete_file("notes.txt", repo_id=repo_id)
    api.create_commit(repo_id, [CommitOperationCopy("model.safetensors", "copy.safetensors"),
                                CommitOperationCopy("config.json", "copy.json"),
                                CommitOperationDelete("shards/")], commit_message="copy and delete folder")
    files = hub.files(repo_id)
    assert files["dir/one.txt"] == b"single"
    assert files["copy.safetensors"] == folder["model.safetensors"]
    assert files["copy.json"] == folder["config.json"]
    assert "notes.txt" not in files and not any(p.startswith("shards/") for p in files)
    assert hub.lfs_files(repo_id)["copy.safetensors"] == sha256(folder["model.safetensors"])

    with pytest.raises(RemoteEntryNotFoundError, match="A file with this name doesn't exist"):
        api.delete_file("never-existed.txt", repo_id=repo_id)
    with pytest.raises(BadRequestError, match="dir/one.txt is a file"):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="dir/one.txt/nested.txt", repo_id=repo_id)

    # Non-ASCII names and spaces survive the URL quoting of commits, tree listings and downloads.
    odd = "données/模型 v1.txt"
    api.upload_file(path_or_fileobj=b"unicode", path_in_repo=odd, repo_id=repo_id)
    assert [e.path for e in api.list_repo_tree(repo_id, path_in_repo="données")] == [odd]
    path = hf_hub_download(repo_id, odd, endpoint=hub.endpoint, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"unicode"
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("données/模型 v2.txt", repo_id=repo_id)


def test_parent_commit_mismatch_is_412(hub: FakeHub, api: HfApi) -> None:
    repo_id = new_repo(api)
    base = api.upload_file(path_or_fileobj=b"v1", path_in_repo="a.txt", repo_id=repo_id).oid
    # Matching parent: accepted.
    second = api.create_commit(repo_id, [CommitOperationAdd("b.txt", b"b")], commit_message="b",
                               parent_commit=base)
    # Stale parent (someone committed since): 412 Precondition Failed, a plain HfHubHTTPError.
    concurrent = hub.commit(repo_id, {"c.txt": b"concurrent"}, "concurrent writer")
    with pytest.raises(HfHubHTTPError) as info:
        api.create_commit(repo_id, [CommitOperationAdd("d.txt", b"d")], commit_message="d",
                          parent_commit=second.oid)
    assert info.value.response.status_code == 412
    assert not isinstance(info.value, (RepositoryNotFoundError, RevisionNotFoundError, BadRequestError))
    assert hub.head(repo_id) == concurrent
    assert "d.txt" not in hub.files(repo_id)


def test_read_token_cannot_write(hub: FakeHub, api: HfApi) -> None:
    repo_id = new_repo(api)
    reader = HfApi(endpoint=hub.endpoint, token=READ)
    head = hub.head(repo_id)
    for attempt in (
        lambda: reader.create_commit(repo_id, [CommitOperationAdd("x.txt", b"x")], commit_message="x"),
        lambda: reader.create_commit(repo_id, [CommitOperationAdd("x.bin", b"x" * 100)], commit_message="x"),
        lambda: reader.create_tag(repo_id, tag="v0"),
        lambda: reader.create_branch(repo_id, branch="dev"),
        lambda: reader.delete_repo(repo_id),
    ):
        with pytest.raises(HfHubHTTPError) as info:
            attempt()
        assert info.value.response.status_code == 403
        assert not isinstance(info.value, RepositoryNotFoundError)
    assert hub.head(repo_id) == head and hub.refs(repo_id) == {"branches": {"main": head}, "tags": {}}
    assert reader.model_info(repo_id).sha == head  # reading is fine


def test_private_repo_is_invisible_to_other_users(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=repo_id)
    for token in (OTHER_TOKEN, False):
        client = HfApi(endpoint=hub.endpoint, token=token)
        with pytest.raises(RepositoryNotFoundError):
            list(client.list_repo_tree(repo_id))
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(repo_id, "s.txt", endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "c")
        with pytest.raises(RepositoryNotFoundError):
            client.create_commit(repo_id, [CommitOperationAdd("t.txt", b"t")], commit_message="t")
        assert client.file_exists(repo_id, "s.txt") is False
    # The org member's read token sees it.
    path = hf_hub_download(repo_id, "s.txt", endpoint=hub.endpoint, token=READ, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"secret"


def test_gated_repo(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"gated", path_in_repo="g.txt", repo_id=repo_id)
    hub.set_gated(repo_id)
    with pytest.raises(GatedRepoError):
        hf_hub_download(repo_id, "g.txt", endpoint=hub.endpoint, token=OTHER_TOKEN, cache_dir=tmp_path / "c")
    assert HfApi(endpoint=hub.endpoint, token=OTHER_TOKEN).model_info(repo_id).gated == "auto"
    hub.set_gated(repo_id, granted=[OTHER])
    path = hf_hub_download(repo_id, "g.txt", endpoint=hub.endpoint, token=OTHER_TOKEN, cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"gated"


# ------------------------------------------------------------------------------------------ refs
def test_tags_branches_refs_and_commits(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    v1 = api.upload_file(path_or_fileobj=b"one", path_in_repo="f.txt", repo_id=repo_id, commit_message="v1").oid
    api.create_tag(repo_id, tag="v1", tag_message="first release")
    with pytest.raises(HfHubHTTPError) as info:
        api.create_tag(repo_id, tag="v1")
    assert info.value.response.status_code == 409
    api.create_tag(repo_id, tag="v1", exist_ok=True)

    v2 = api.upload_file(path_or_fileobj=b"two", path_in_repo="f.txt", repo_id=repo_id, commit_message="v2").oid
    api.create_tag(repo_id, tag="first", revision=v1)
    api.create_branch(repo_id, branch="dev", revision="v1")
    dev = api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id=repo_id, revision="dev").oid

    refs = api.list_repo_refs(repo_id)
    assert {(b.name, b.ref, b.target_commit) for b in refs.branches} == {
        ("main", "refs/heads/main", v2), ("dev", "refs/heads/dev", dev)}
    assert {(t.name, t.ref, t.target_commit) for t in refs.tags} == {
        ("v1", "refs/tags/v1", v1), ("first", "refs/tags/first", v1)}

    cache = tmp_path / "cache"
    for revision, content in (("v1", b"one"), (v1, b"one"), (v1[:8], b"one"), ("main", b"two"),
                              ("dev", b"dev"), ("refs/heads/dev", b"dev")):
        path = hf_hub_download(repo_id, "f.txt", revision=revision, endpoint=hub.endpoint, token=WRITE,
                               cache_dir=cache)
        assert Path(path).read_bytes() == content, revision

    commits = api.list_repo_commits(repo_id, revision="dev")
    assert [c.commit_id for c in commits] == [dev, v1, hub.commits(repo_id)[-1]]
    assert [c.title for c in commits][1:] == ["v1", "initial commit"]
    assert api.revision_exists(repo_id, "v1") and not api.revision_exists(repo_id, "v9")

    api.delete_tag(repo_id, tag="v1")
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(repo_id, tag="v1")
    with pytest.raises(HfHubHTTPError) as info_branch:
        api.create_branch(repo_id, branch="dev")
    assert info_branch.value.response.status_code == 409
    api.delete_branch(repo_id, branch="dev")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="dev")


# ------------------------------------------------------------------------------------------ listing
def test_list_repo_tree_paths_info_and_model_info(hub: FakeHub, api: HfApi, folder: dict[str, bytes],
                                                  tmp_path: Path) -> None:
    root = tmp_path / "folder"
    repo_id = new_repo(api)
    head = api.create_commit(repo_id, add_ops(root, sorted(folder)), commit_message="files").oid
    lfs_paths = {"model.safetensors", "shards/extra.bin"}

    entries = {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, expand=True)}
    assert set(entries) == {".gitattributes", *folder, "shards"}
    assert isinstance(entries["shards"], RepoFolder)
    for path, data in folder.items():
        entry = entries[path]
        assert isinstance(entry, RepoFile)
        assert entry.size == len(data)
        assert entry.last_commit is not None and entry.last_commit.oid == head
        if path in lfs_paths:
            assert entry.lfs is not None
            assert (entry.lfs.sha256, entry.lfs.size, entry.lfs.pointer_size) == (
                sha256(data), len(data), len(lfs_pointer(data)))
            assert entry.blob_id == git_sha1(lfs_pointer(data))
        else:
            assert entry.lfs is None and entry.blob_id == git_sha1(data)
    assert entries[".gitattributes"].last_commit.title == "initial commit"

    top = [(e.path, type(e).__name__) for e in api.list_repo_tree(repo_id)]
    assert sorted(top) == sorted([("shards", "RepoFolder"), (".gitattributes", "RepoFile"),
                                  ("config.json", "RepoFile"), ("model.safetensors", "RepoFile"),
                                  ("notes.txt", "RepoFile")])
    assert sorted(e.path for e in api.list_repo_tree(repo_id, path_in_repo="shards")) == [
        "shards/extra.bin", "shards/index.json"]
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree(repo_id, path_in_repo="missing"))
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *folder])

    infos = api.get_paths_info(repo_id, ["model.safetensors", "shards", "nope.txt"], expand=True)
    assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "model.safetensors"),
                                                          ("RepoFolder", "shards")]
    assert infos[0].lfs.sha256 == sha256(folder["model.safetensors"])

    info = api.model_info(repo_id, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert siblings["model.safetensors"].lfs.sha256 == sha256(folder["model.safetensors"])
    assert siblings["config.json"].lfs is None and siblings["config.json"].size == len(folder["config.json"])
    assert api.file_exists(repo_id, "shards/index.json") and not api.file_exists(repo_id, "shards/nope.json")


# ------------------------------------------------------------------------------------------ downloads
def test_hf_hub_download_and_snapshot_download(hub: FakeHub, api: HfApi, folder: dict[str, bytes],
                                               tmp_path: Path) -> None:
    root = tmp_path / "folder"
    repo_id = new_repo(api, private=True)
    head = api.create_commit(repo_id, add_ops(root, sorted(folder)), commit_message="files").oid
    cache = tmp_path / "cache"

    hub.reset()
    weights = hf_hub_download(repo_id, "model.safetensors", endpoint=hub.endpoint, token=WRITE, cache_dir=cache)
    assert Path(weights).read_bytes() == folder["model.safetensors"]
    assert f"/snapshots/{head}/" in weights
    # HEAD /resolve -> 302 with X-Linked-Etag (the client stops there: other origin), then GET on the
    # storage origin without the Authorization header (the client strips it off-Hub).
    assert [(e["server"], e["method"], e["status"]) for e in hub.log] == [
        ("hub", "HEAD", 302), ("storage", "GET", 200)]
    assert hub.log[0]["authorization"] is True and hub.log[1]["authorization"] is False
    blob_name = Path(os.path.realpath(weights)).name
    assert blob_name == sha256(folder["model.safetensors"])  # the cache keys LFS blobs by X-Linked-Etag

    config = hf_hub_download(repo_id, "config.json", endpoint=hub.endpoint, token=WRITE, cache_dir=cache)
    assert Path(os.path.realpath(config)).name == git_sha1(folder["config.json"])  # regular: ETag = git sha1

    hub.reset()  # cached: one HEAD to check the ETag, no body transferred
    assert hf_hub_download(repo_id, "model.safetensors", endpoint=hub.endpoint, token=WRITE,
                           cache_dir=cache) == weights
    assert [(m, r) for m, _, r, _ in hub.requests] == [("HEAD", None)]

    snapshot = Path(snapshot_download(repo_id, endpoint=hub.endpoint, token=WRITE, cache_dir=tmp_path / "snap"))
    got = {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()}
    assert got == {".gitattributes": DEFAULT_GITATTRIBUTES.encode(), **folder}
    assert snapshot.name == head

    local = Path(snapshot_download(repo_id, endpoint=hub.endpoint, token=WRITE, local_dir=tmp_path / "local",
                                   allow_patterns=["*.safetensors", "shards/*"]))
    assert sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                  if p.is_file() and ".cache" not in p.parts) == ["model.safetensors", "shards/extra.bin",
                                                                   "shards/index.json"]


def test_direct_lfs_serving_without_redirect(tmp_path: Path) -> None:
    with FakeHub(lfs_redirect=False) as direct:
        api = HfApi(endpoint=direct.endpoint, token=WRITE)
        repo_id = new_repo(api)
        data = blob("direct", 5000)
        api.upload_file(path_or_fileobj=data, path_in_repo="w.safetensors", repo_id=repo_id)
        direct.reset()
        path = hf_hub_download(repo_id, "w.safetensors", endpoint=direct.endpoint, cache_dir=tmp_path / "c")
        assert Path(path).read_bytes() == data
        assert Path(os.path.realpath(path)).name == sha256(data)
        assert [(e["server"], e["method"], e["status"]) for e in direct.log] == [("hub", "HEAD", 200),
                                                                                 ("hub", "GET", 200)]
        assert direct.server_errors == []


def test_download_errors(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    kwargs: dict[str, Any] = {"endpoint": hub.endpoint, "token": WRITE, "cache_dir": tmp_path / "c"}
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{USER}/no-such-repo", ".gitattributes", **kwargs)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(repo_id, revision="no-such-branch", **kwargs)


def test_ranged_get_on_resolve_url(hub: FakeHub, api: HfApi) -> None:
    repo_id = new_repo(api, private=True)
    lfs_data, text = blob("ranged", 10_000), b"0123456789" * 50
    api.create_commit(repo_id, [CommitOperationAdd("w.safetensors", lfs_data), CommitOperationAdd("t.txt", text)],
                      commit_message="ranged")
    auth = {"Authorization": f"Bearer {WRITE}"}
    with requests.Session() as session:
        for path, data in (("w.safetensors", lfs_data), ("t.txt", text)):
            url = hub.resolve_url(repo_id, path)
            for header, (start, end) in (("bytes=100-199", (100, 200)), ("bytes=-7", (len(data) - 7, len(data))),
                                         (f"bytes={len(data) - 3}-", (len(data) - 3, len(data)))):
                response = session.get(url, headers={**auth, "Range": header})  # follows the LFS redirect
                assert response.status_code == 206, (path, header)
                assert response.content == data[start:end]
                assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{len(data)}"
            head = session.head(url, headers=auth, allow_redirects=True)
            assert (head.status_code, int(head.headers["Content-Length"])) == (200, len(data))
            assert session.get(url, headers={**auth, "Range": f"bytes={len(data)}-"}).status_code == 416
            assert session.get(url, headers=auth).content == data
        raw = session.head(hub.resolve_url(repo_id, "w.safetensors"), headers=auth, allow_redirects=False)
        assert raw.status_code == 302
        assert raw.headers["X-Linked-Etag"] == f'"{sha256(lfs_data)}"'
        assert raw.headers["X-Linked-Size"] == str(len(lfs_data))
        assert raw.headers["X-Repo-Commit"] == hub.head(repo_id)
        assert raw.headers["Location"].startswith(hub.storage_endpoint + "/")
        tampered = raw.headers["Location"].replace("X-Signature=", "X-Signature=0")
        assert session.get(tampered).status_code == 403
        assert session.get(hub.resolve_url(repo_id, "t.txt")).status_code == 401  # private, anonymous


def test_fail_next_and_client_retries(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    # preupload goes through http_backoff: a 503 is retried (after ~1 s) and the commit succeeds.
    hub.reset()
    hub.fail_next(1, 503, match="/preupload/")
    api.upload_file(path_or_fileobj=b"retried", path_in_repo="r.txt", repo_id=repo_id)
    assert [p for _, p, _, _ in hub.requests].count(f"/api/models/{repo_id}/preupload/main") == 2
    assert hub.files(repo_id)["r.txt"] == b"retried"
    # hf_hub_download: a failed HEAD is retried at once (no sleep); a dropped download connection is
    # resumed (after ~1 s); a 5xx on the download GET itself is not retried.
    hub.reset()
    hub.fail_next(1, 503, match="^HEAD .*/resolve/")
    hub.drop_next(1, match="^GET /cdn-lfs/")
    weights = blob("retry", 3000)
    api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=repo_id)
    path = hf_hub_download(repo_id, "w.safetensors", endpoint=hub.endpoint, cache_dir=tmp_path / "c1")
    assert Path(path).read_bytes() == weights
    assert [(e["server"], e["method"], e["status"]) for e in hub.log if e["method"] in ("HEAD", "GET")] == [
        ("hub", "HEAD", 503), ("hub", "HEAD", 302), ("storage", "GET", None), ("storage", "GET", 200)]
    hub.fail_next(1, 503, match="^GET /cdn-lfs/")
    with pytest.raises(HfHubHTTPError) as info_get:
        hf_hub_download(repo_id, "w.safetensors", endpoint=hub.endpoint, cache_dir=tmp_path / "c2")
    assert info_get.value.response.status_code == 503
    # The commit POST itself is not retried by the client: a 500 surfaces as HfHubHTTPError.
    head = hub.head(repo_id)
    hub.fail_next(1, 500, match="/commit/")
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"lost", path_in_repo="l.txt", repo_id=repo_id)
    assert info.value.response.status_code == 500
    assert hub.head(repo_id) == head


def test_dataset_repo(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api, repo_type="dataset")
    data = blob("parquet", 2048)
    api.upload_file(path_or_fileobj=data, path_in_repo="data/train.parquet", repo_id=repo_id, repo_type="dataset")
    assert hub.lfs_files(repo_id, repo_type="dataset") == {"data/train.parquet": sha256(data)}
    path = hf_hub_download(repo_id, "data/train.parquet", repo_type="dataset", endpoint=hub.endpoint,
                           cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == data
    assert api.dataset_info(repo_id).sha == hub.head(repo_id, repo_type="dataset")


# ------------------------------------------------------------------------------------------ pointing the client
def test_patching_module_constants_instead_of_passing_endpoint(hub: FakeHub, api: HfApi, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Without endpoint=: constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE and the module-level
    ``hf_api.api`` (behind ``huggingface_hub.model_info``, ``upload_file``...) must all be patched."""
    import huggingface_hub

    repo_id = new_repo(api)
    monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api_module.api, "endpoint", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", WRITE)
    huggingface_hub.upload_file(path_or_fileobj=b"patched", path_in_repo="p.txt", repo_id=repo_id)
    assert HfApi().model_info(repo_id).sha == hub.head(repo_id)
    path = huggingface_hub.hf_hub_download(repo_id, "p.txt", cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b"patched"
    assert Path(huggingface_hub.snapshot_download(repo_id, cache_dir=tmp_path / "s")).name == hub.head(repo_id)


def test_hf_endpoint_env_in_subprocess(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo_id = new_repo(api)
    result = run_client(f"""
        import json, huggingface_hub
        repo_id = {repo_id!r}
        info = huggingface_hub.upload_file(path_or_fileobj=b"via env", path_in_repo="e.bin", repo_id=repo_id)
        path = huggingface_hub.hf_hub_download(repo_id, "e.bin")
        print(json.dumps({{"oid": info.oid, "content": open(path, "rb").read().decode()}}))
    """, client_env(hub, tmp_path, token=WRITE))
    assert result == {"oid": hub.head(repo_id), "content": "via env"}
    assert hub.lfs_files(repo_id) == {"e.bin": sha256(b"via env")}


def test_offline_mode_uses_the_cache_without_contacting_the_server(hub: FakeHub, api: HfApi,
                                                                   tmp_path: Path) -> None:
    repo_id = new_repo(api)
    data = blob("offline", 4000)
    api.create_commit(repo_id, [CommitOperationAdd("w.safetensors", data), CommitOperationAdd("c.json", b"{}")],
                      commit_message="offline")
    cache = tmp_path / "cache"
    online = snapshot_download(repo_id, endpoint=hub.endpoint, token=WRITE, cache_dir=cache)
    hub.reset()
    result = run_client(f"""
        import json
        from huggingface_hub import constants, hf_hub_download, snapshot_download
        assert constants.HF_HUB_OFFLINE
        kwargs = dict(endpoint={hub.endpoint!r}, token={WRITE!r}, cache_dir={str(cache)!r})
        path = hf_hub_download({repo_id!r}, "w.safetensors", **kwargs)
        snapshot = snapshot_download({repo_id!r}, **kwargs)
        print(json.dumps({{"path": path, "snapshot": snapshot}}))
    """, client_env(hub, tmp_path, HF_HUB_OFFLINE="1"))
    assert Path(result["path"]).read_bytes() == data
    assert result["snapshot"] == online
    assert hub.requests == []


def test_offline_mode_can_be_monkeypatched_in_process(hub: FakeHub, api: HfApi, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``constants.HF_HUB_OFFLINE`` is read at call time (``is_offline_mode()``), so patching it works too."""
    repo_id = new_repo(api)
    api.upload_file(path_or_fileobj=b"cached", path_in_repo="c.txt", repo_id=repo_id)
    kwargs: dict[str, Any] = {"endpoint": hub.endpoint, "token": WRITE, "cache_dir": tmp_path / "c"}
    online = hf_hub_download(repo_id, "c.txt", **kwargs)
    hub.reset()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert hf_hub_download(repo_id, "c.txt", **kwargs) == online
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", **kwargs)
    assert hub.requests == []


def test_xet_must_be_disabled(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    """huggingface_hub uploads through Xet whenever hf_xet is importable: the fake answers the Xet token
    endpoint 501, so a client without HF_HUB_DISABLE_XET=1 fails fast instead of half-working."""
    repo_id = new_repo(api)
    env = client_env(hub, tmp_path, token=WRITE)
    del env["HF_HUB_DISABLE_XET"]
    result = run_client(f"""
        import json, huggingface_hub
        from huggingface_hub.utils._runtime import is_xet_available
        try:
            huggingface_hub.upload_file(path_or_fileobj=b"x" * 100, path_in_repo="x.bin", repo_id={repo_id!r})
            error = None
        except Exception as exc:
            error = f"{{type(exc).__name__}}: {{exc}}"
        print(json.dumps({{"xet": is_xet_available(), "error": error}}))
    """, env)
    xet_token_calls = [p for m, p, _, _ in hub.requests if p.endswith("/xet-write-token/main")]
    if result["xet"]:
        assert result["error"] is not None and "xet-write-token" in result["error"]
        assert xet_token_calls and puts(hub) == []
        assert "x.bin" not in hub.files(repo_id)
    else:  # hf_xet not installed: the client uses the LFS basic transfer on its own
        assert result["error"] is None and xet_token_calls == []
    assert is_xet_available() is False  # in this process, the autouse fixture disabled it
