"""Every read is verified by default (format 1.2, spec §4.4 and §8): a shard whose bytes changed
without changing its size — bit rot, a bad disk, a tampered blob — gives an IntegrityError naming
the file and the tensor on every path (local snapshot, local repository, S3, HTTP with and without
the cache; one tensor, one layer, everything, in place), never a wrong tensor; ``verify=False``
opts out; 1.0/1.1 snapshots without per-tensor checksums still read, and ``verify=True`` checks
them the old way (sha256 of whole shards)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from servers import RangeHTTPServer

import lamina
from lamina.format.digests import tensor_digest

VECTORS = Path(__file__).resolve().parents[1] / "format_spec" / "vectors"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def _flip_one_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _tamper(files_root: Path, art: lamina.Artifact, name: str, locate: Callable[[str], Path]) -> None:
    """Flip one byte inside tensor ``name``'s range, keeping the file's size."""
    entry = next(t for t in art.manifest.tensors if t.name == name)
    _flip_one_byte(locate(entry.file), entry.begin + entry.nbytes // 2)


def test_the_writer_records_each_tensors_xxh3(tmp_path: Path) -> None:
    model = _model()
    art = lamina.save(model, tmp_path / "snap")
    assert art.format_version == "1.3"
    for entry in art.manifest.tensors:
        raw = (tmp_path / "snap" / entry.file).read_bytes()[entry.begin:entry.end]
        assert entry.xxh3 == tensor_digest(raw) and len(entry.xxh3) == 32
        assert raw == model.state_dict()[entry.name].numpy().tobytes()


READS: dict[str, Callable[[lamina.Artifact], Any]] = {
    "tensor": lambda art: art.tensor("2.weight"),
    "layer": lambda art: art.layer("2"),
    "state_dict": lambda art: art.state_dict(framework="np"),
    "load_into": lambda art: art.load_into(_model()),
    "load_into_lenient": lambda art: art.load_into(_model(), strict=False),
}


@pytest.mark.parametrize("read", list(READS))
def test_a_changed_byte_in_a_local_snapshot_is_an_integrity_error(tmp_path: Path, read: str) -> None:
    art = lamina.save(_model(), tmp_path / "snap")
    _tamper(tmp_path, art, "2.weight", lambda f: tmp_path / "snap" / f)
    with pytest.raises(lamina.IntegrityError, match=r"weights/2\.safetensors: tensor '2\.weight'.*expected XXH3-128"):
        READS[read](lamina.open(tmp_path / "snap"))
    # the other layer is intact and reads
    assert torch.equal(lamina.open(tmp_path / "snap").tensor("0.weight"), _model().state_dict()["0.weight"])


def test_verify_false_opts_out_and_returns_the_bytes_as_stored(tmp_path: Path) -> None:
    model = _model()
    art = lamina.save(model, tmp_path / "snap")
    _tamper(tmp_path, art, "2.weight", lambda f: tmp_path / "snap" / f)
    got = lamina.open(tmp_path / "snap", verify=False).tensor("2.weight")
    assert not torch.equal(got, model.state_dict()["2.weight"])  # the changed byte, as asked
    with pytest.raises(lamina.IntegrityError):  # verify() still finds it
        lamina.open(tmp_path / "snap", verify=False).verify()


def test_a_changed_blob_in_a_local_repository_is_found_on_read(tmp_path: Path) -> None:
    repo = lamina.Repo(tmp_path / "repo")
    repo.save(_model(), message="v1")
    art = repo.open("main")
    entry = next(t for t in art.manifest.tensors if t.name == "2.weight")
    sha = next(f.digest[1] for f in art.manifest.files if f.path == entry.file)
    blob = next((tmp_path / "repo").rglob(sha))
    blob.chmod(0o644)
    _flip_one_byte(blob, entry.begin + 3)
    with pytest.raises(lamina.IntegrityError, match=r"tensor '2\.weight'"):
        lamina.open(f"{tmp_path / 'repo'}@main").layer("2")
    with pytest.raises(lamina.IntegrityError, match=r"tensor '2\.weight'"):
        lamina.load(_model(), f"{tmp_path / 'repo'}@main")


@pytest.mark.parametrize("cache", [False, True], ids=["ranges", "cached"])
def test_a_changed_byte_served_over_http_is_found_with_and_without_the_cache(tmp_path: Path, cache: bool) -> None:
    art = lamina.save(_model(), tmp_path / "www" / "snap")
    _tamper(tmp_path, art, "2.weight", lambda f: tmp_path / "www" / "snap" / f)
    with RangeHTTPServer(tmp_path / "www") as server:
        remote = lamina.open(f"{server.url}/snap", cache=tmp_path / "cache" if cache else False)
        with pytest.raises(lamina.IntegrityError):
            remote.tensor("2.weight")
        assert torch.equal(remote.tensor("0.bias"), _model().state_dict()["0.bias"])


def test_a_changed_byte_on_s3_is_found(tmp_path: Path, s3_bucket: str, s3_options: dict[str, Any],
                                       s3_client: Any) -> None:
    art = lamina.save(_model(), tmp_path / "snap")
    entry = next(t for t in art.manifest.tensors if t.name == "0.weight")
    _flip_one_byte(tmp_path / "snap" / entry.file, entry.begin + 1)
    for f in (tmp_path / "snap").rglob("*"):
        if f.is_file():
            s3_client.upload_file(str(f), s3_bucket, f"snap/{f.relative_to(tmp_path / 'snap')}")
    remote = lamina.open(f"s3://{s3_bucket}/snap", storage_options=s3_options, cache=False)
    with pytest.raises(lamina.IntegrityError, match=r"tensor '0\.weight'"):
        remote.tensor("0.weight")


def test_format_1_0_snapshots_still_read_and_verify_true_checks_them_the_old_way(tmp_path: Path) -> None:
    old = VECTORS / "valid" / "minimal_1_0"
    art = lamina.open(old)
    assert art.format_version == "1.0" and all(t.xxh3 is None for t in art.manifest.tensors)
    np.testing.assert_array_equal(art.tensor("w", framework="np"), np.arange(6, dtype="<f4").reshape(2, 3))
    copy = tmp_path / "old"
    shutil.copytree(old, copy)
    entry = art.manifest.tensors[0]
    _flip_one_byte(copy / entry.file, entry.begin)
    assert lamina.open(copy).tensor("w", framework="np").tobytes() != art.tensor("w", framework="np").tobytes()
    with pytest.raises(lamina.IntegrityError, match="sha256"):
        lamina.open(copy, verify=True).tensor("w", framework="np")


def test_a_malformed_checksum_in_the_manifest_is_a_format_error(tmp_path: Path) -> None:
    import dataclasses

    from lamina.format.codec import encode_manifest

    art = lamina.save(_model(), tmp_path / "snap")
    bad = dataclasses.replace(art.manifest, tensors=tuple(dataclasses.replace(t, xxh3="XYZ") for t in art.manifest.tensors))
    (tmp_path / "snap" / "manifest.msgpack").write_bytes(encode_manifest(bad))
    opened = lamina.open(tmp_path / "snap")  # 1.3: a layer's record is checked when first used
    for read in (lambda: opened.layer("2"), opened.verify, lambda: lamina.open(tmp_path / "snap").keys()):
        with pytest.raises(lamina.FormatError, match="xxh3 must be 32 lowercase hex"):
            read()
