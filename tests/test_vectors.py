"""The implementation against format_spec/vectors (spec §10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lamina
from lamina.format.codec import (
    MANIFEST_NAME,
    encode_manifest,
    unpack_wire,
    wire_as_json,
)
from lamina.format.dtypes import numpy_dtype
from lamina.format.shards import plan_shard

VECTORS = Path(__file__).resolve().parents[1] / "format_spec" / "vectors"
VALID = sorted(p for p in (VECTORS / "valid").iterdir() if p.is_dir())
INVALID = sorted(p for p in (VECTORS / "invalid").iterdir() if p.is_dir())
ERRORS = {
    "format": lamina.FormatError,
    "unsafe_path": lamina.UnsafePathError,
    "unsupported_version": lamina.UnsupportedVersionError,
    "integrity": lamina.IntegrityError,
    "not_found": lamina.NotFoundError,
}


def test_vectors_exist() -> None:
    assert len(VALID) >= 3 and len(INVALID) >= 3


@pytest.mark.parametrize("snapshot", VALID, ids=lambda p: p.name)
def test_valid_manifest_decodes_to_the_recorded_json(snapshot: Path) -> None:
    expected = json.loads((snapshot.parent / f"{snapshot.name}.json").read_text())
    data = (snapshot / MANIFEST_NAME).read_bytes()
    assert wire_as_json(unpack_wire(data)) == expected
    art = lamina.open(snapshot)
    assert encode_manifest(art.manifest) == data  # decoding then encoding is lossless and deterministic


@pytest.mark.parametrize("snapshot", VALID, ids=lambda p: p.name)
def test_valid_tensors_read_exactly_and_verify(snapshot: Path) -> None:
    expected = json.loads((snapshot.parent / f"{snapshot.name}.tensors.json").read_text())
    art = lamina.open(snapshot)
    art.verify()
    weights = art.state_dict(framework="np")
    for name, want in expected.items():
        if name in weights:
            got = weights[name]
            assert got.dtype == numpy_dtype(want["dtype"]) and list(got.shape) == want["shape"]
            assert np.ascontiguousarray(got).tobytes().hex() == want["hex"], name
    assert set(expected) >= set(t.name for t in art.manifest.tensors)


@pytest.mark.parametrize("snapshot", VALID, ids=lambda p: p.name)
def test_writer_reproduces_every_shard_byte_for_byte(snapshot: Path) -> None:
    expected = json.loads((snapshot.parent / f"{snapshot.name}.tensors.json").read_text())
    by_file: dict[str, list[tuple[str, dict]]] = {}
    for name, t in expected.items():
        by_file.setdefault(t["file"], []).append((name, t))
    for file, tensors in by_file.items():
        header, entries = plan_shard([(n, t["dtype"], t["shape"]) for n, t in tensors])
        data = dict((n, bytes.fromhex(t["hex"])) for n, t in tensors)
        rebuilt = header + b"".join(data[e.name] for e in entries)
        assert rebuilt == (snapshot / file).read_bytes(), file


def test_save_reproduces_the_dtype_vector(tmp_path: Path) -> None:
    """Writing the vector's tensors with lamina.save gives identical weight shards."""
    snapshot = VECTORS / "valid" / "dtypes_and_names"
    art = lamina.open(snapshot)
    out = lamina.save(art.state_dict(framework="np"), tmp_path / "again")
    for t in art.manifest.tensors:
        assert (tmp_path / "again" / t.file).read_bytes() == (snapshot / t.file).read_bytes()
    assert [t.file for t in out.manifest.tensors] == [t.file for t in art.manifest.tensors]


@pytest.mark.parametrize("snapshot", INVALID, ids=lambda p: p.name)
def test_invalid_vector_raises_the_named_error_at_the_named_moment(snapshot: Path) -> None:
    spec = json.loads((snapshot.parent / f"{snapshot.name}.json").read_text())
    error = ERRORS[spec["error"]]
    if spec["when"] == "open":
        with pytest.raises(error, match="manifest"):
            lamina.open(snapshot)
        return
    art = lamina.open(snapshot)  # the top level of the manifest is fine
    if spec["when"] == "read":
        # the layer (1.3 record problems) or its shard file (integrity) is named
        with pytest.raises(error, match=r"embed|layer_hashes"):
            art.state_dict(framework="np")
        with pytest.raises(error):
            lamina.open(snapshot).layer("embed", framework="np")  # the lazy path, alone
    with pytest.raises(error) as caught:
        art.verify()
    if error is lamina.IntegrityError:
        assert caught.value.files, "verify must name the failing files"
