"""Property-based tests: the manifest decoder and the safetensors header parser only ever raise
lamina errors, and numpy tensors of every supported dtype round-trip bit for bit."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import struct
import tempfile
from pathlib import Path

import ml_dtypes
import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import lamina
from lamina.format.codec import MANIFEST_NAME, RECORDS_FEATURE, decode_manifest
from lamina.format.dtypes import DTYPES
from lamina.format.records import flat_wire, records_wire
from lamina.format.shards import parse_header
from lamina.snapshot.artifact import Artifact
from lamina.storage.local import LocalStore

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SMALL = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ fixtures
class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(5, 3)
        self.fc = torch.nn.Linear(3, 3)
        self.bn = torch.nn.BatchNorm1d(3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.emb.weight


def _rich_snapshot(path: Path) -> bytes:
    """A snapshot using every manifest section: tensors, aliases, optimizer (tensor slots and
    scalars), training, info, extra files. Returns the manifest bytes."""
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    out = model.head(model.bn(model.fc(model.emb(torch.tensor([0, 1, 2, 3])))))
    out.sum().backward()
    opt.step()
    lamina.save(model, path, optimizer=opt,
                info={"name": "tiny", "version": "1.0", "tags": ["a", "b"], "extra": {"k": [1, 2.5, None]}},
                training={"step": 3, "epoch": 0.5, "metrics": {"loss": 1.25}, "extra": {"seed": 7}},
                files={"config.json": {"hidden": 3}, "notes/readme.txt": b"hello"})
    return (path / MANIFEST_NAME).read_bytes()


@pytest.fixture(scope="module")
def rich(tmp_path_factory) -> tuple[Path, bytes, dict]:
    path = tmp_path_factory.mktemp("fuzz") / "rich"
    data = _rich_snapshot(path)
    return path, data, flat_wire(msgpack.unpackb(data, raw=False))  # 1.3 in the flat layout: edits reach every entry


def with_checksum(wire: dict) -> bytes:
    """Encode with a correct checksum; a 1.3 manifest given in the flat layout goes back into records."""
    if isinstance(wire.get("required"), list) and RECORDS_FEATURE in wire["required"] and "tensors" in wire:
        wire = records_wire(wire)
    wire = {k: v for k, v in wire.items() if k != "checksum"}
    wire["checksum"] = bytes(32)
    data = msgpack.packb(wire, use_bin_type=True)
    return data[:-32] + hashlib.sha256(data[:-32]).digest()


def decode_or_lamina_error(data: bytes):
    """Decode; a lamina error is fine, anything else propagates and fails the test."""
    try:
        return decode_manifest(data, "fuzz/manifest.msgpack")
    except lamina.LaminaError:
        return None


def test_rich_manifest_is_valid(rich):
    path, data, wire = rich
    assert with_checksum(wire) == data
    m = decode_manifest(data)
    assert m.optimizer is not None and m.optimizer.state and m.aliases and m.training.step == 3
    lamina.open(path).verify()


# ------------------------------------------------------------------------------ strategies
msgpack_leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=6))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))
)
msgpack_values = st.recursive(
    msgpack_leaves,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8) | st.binary(max_size=4),
                                                              kids, max_size=4),
    max_leaves=16,
)
interesting = st.sampled_from([
    None, True, False, 0, -1, 7, 8, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1.5, math.nan, math.inf,
    "", "F32", "BF16", "F8_E4M3", "complex128", "weights", "manifest.msgpack", "../evil", "/etc/passwd",
    "a\\b", "weights/tiny.safetensors", "emb.weight", "fc", "1.0", "1.9", "2.0", "lamina", "weights",
    "extra", "index", b"", bytes(32), [], {}, [0], [0, 0], [8, 8], [8, 4], [9, 8], [[]], ["F32"],
    {"": None}, {"dtype": "F32"}, [None], ["x", "x"],
])
values = interesting | msgpack_values
top_keys = st.sampled_from(["format", "format_version", "required", "producer", "framework", "info",
                            "training", "tensors", "aliases", "optimizer", "files"])


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _parent(root, path):
    node = root
    for p in path[:-1]:
        node = node[p]
    return node


# ------------------------------------------------------------------------------ (a) random bytes
@FUZZ
@given(st.binary(max_size=600))
@example(b"")
@example(b"\x80")
@example(b"\xdf\xff\xff\xff\xff")
@example(b"\xc1")
def test_decode_random_bytes(data):
    decode_or_lamina_error(data)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_random_bytes_behind_valid_prefix(data):
    """Random bytes after a valid map header and format entries reach the field validators."""
    head = b"\x8c" + msgpack.packb("format") + msgpack.packb("lamina") + msgpack.packb(
        "format_version") + msgpack.packb("1.0")
    decode_or_lamina_error(head + data)


# ------------------------------------------------------------------------------ (b) mutations
@st.composite
def mutated(draw, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not buf:
            break
        i = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            buf[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del buf[i:]
        elif kind == "insert":
            buf[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del buf[i : i + draw(st.integers(1, 8))]
    return bytes(buf)


@FUZZ
@given(st.data())
def test_decode_mutated_manifest(rich, data):
    _, manifest, _ = rich
    buf = data.draw(mutated(manifest))
    result = decode_or_lamina_error(buf)
    if buf != manifest and result is not None:
        # Only a change the checksum cannot see may decode: none exist, since it covers every
        # byte before itself and is itself compared.
        raise AssertionError("a mutated manifest decoded successfully")


@FUZZ
@given(st.data())
def test_decode_mutated_then_rechecksummed(rich, data):
    """Mutate the body, then repair the checksum, so the mutation reaches the validators."""
    _, manifest, _ = rich
    body = data.draw(mutated(manifest[:-32]))
    buf = body + hashlib.sha256(body).digest()
    decode_or_lamina_error(buf)


# ------------------------------------------------------------------------------ (c) well-formed maps
@FUZZ
@given(st.dictionaries(top_keys | st.text(max_size=8), values, max_size=12), st.booleans())
def test_decode_random_msgpack_maps(wire, lamina_header):
    if lamina_header:
        wire = {"format": "lamina", "format_version": "1.0", **wire}
    decode_or_lamina_error(with_checksum(wire))
    # without a checksum entry, and with the checksum not last
    decode_or_lamina_error(msgpack.packb(wire))
    decode_or_lamina_error(msgpack.packb({"checksum": bytes(32), **wire}))


@FUZZ
@given(msgpack_values)
def test_decode_random_msgpack_values(value):
    decode_or_lamina_error(msgpack.packb(value))


def _apply(wire: dict, path: tuple, action: str, value) -> dict:
    wire = copy.deepcopy(wire)
    if not path:
        return wire
    parent = _parent(wire, path)
    key = path[-1]
    if action == "replace":
        parent[key] = value
    elif action == "delete":
        del parent[key]
    elif action == "append" and isinstance(parent, list):
        parent.append(value)
    elif action == "add_key" and isinstance(parent, dict):
        parent[f"zz{len(parent)}"] = value
    else:
        parent[key] = value
    return wire


@st.composite
def field_edits(draw, wire: dict) -> dict:
    paths = [p for p in _paths(wire) if p and p[0] != "checksum"]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "append", "add_key"]))
        try:
            wire = _apply(wire, path, action, draw(values))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or retyped this path
    return wire


def _read_everything(root: Path, manifest) -> None:
    art = Artifact(LocalStore(root), manifest)
    for name in art.keys():
        art.tensor(name, framework="np")
    for layer in art.layers:
        art.layer(layer)
    for f in art.files:
        art.read_file(f)
    art.verify()


@FUZZ
@given(st.data())
def test_decode_valid_manifest_with_field_edits(rich, data):
    """Random replacements / deletions anywhere in a valid manifest, re-checksummed; whatever
    decodes must also read (or fail with a lamina error) against the real snapshot files."""
    root, _, wire = rich
    edited = data.draw(field_edits(wire))
    manifest = decode_or_lamina_error(with_checksum(edited))
    if manifest is not None:
        try:
            _read_everything(root, manifest)
        except lamina.LaminaError:
            pass


@st.composite
def plausible_tensor(draw):
    """A tensor entry whose fields each have the right type most of the time."""
    def field(typed):
        return draw(typed | values) if draw(st.integers(0, 4)) == 0 else draw(typed)

    entry = {
        "name": field(st.text(max_size=8)),
        "layer": field(st.text(max_size=8)),
        "file": field(st.sampled_from(["weights/tiny.safetensors", "weights/emb.safetensors", "x"])),
        "dtype": field(st.sampled_from(sorted(DTYPES))),
        "shape": field(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 4), max_size=3)),
        "offsets": field(st.lists(st.integers(0, 64) | st.integers(0, 2**64 - 1), min_size=2, max_size=2)),
    }
    for k in draw(st.lists(st.sampled_from(sorted(entry)), max_size=1)):
        del entry[k]
    return entry



@st.composite
def plausible_scalar(draw):
    value = draw(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | values)
    entry = {"value": value, "dtype": draw(st.none() | st.sampled_from(sorted(DTYPES)) | values)}
    for k in draw(st.lists(st.sampled_from(sorted(entry)), max_size=1)):
        del entry[k]
    return entry


@st.composite
def plausible_file(draw):
    entry = {
        "path": draw(st.sampled_from(["config.json", "weights/tiny.safetensors", "a/b", "../x", "", "a//b"])
                     | st.text(max_size=8) | values),
        "size": draw(st.integers(0, 2**64 - 1) | values),
        "sha256": draw(st.sampled_from(["0" * 64, "A" * 64, "0" * 63, ""]) | values),
        "lt1": draw(st.sampled_from(["0" * 64, "A" * 64, "0" * 63, ""]) | values),  # the 1.3 address
        "role": draw(st.sampled_from(["weights", "optimizer", "index", "extra", "other"]) | values),
    }
    for k in draw(st.lists(st.sampled_from(sorted(entry)), max_size=1)):
        del entry[k]
    return entry


@FUZZ
@given(st.data())
def test_decode_valid_manifest_with_plausible_entries(rich, data):
    """Insert or substitute entries whose fields are mostly well typed, so decoding gets past the
    type checks into the range, reference and uniqueness rules."""
    root, _, wire = rich
    wire = copy.deepcopy(wire)
    where = data.draw(st.sampled_from(["tensor", "file", "scalar", "slot", "alias", "group"]))
    opt = wire["optimizer"]
    if where == "tensor":
        entries = wire["tensors"]
        entry = data.draw(plausible_tensor())
    elif where == "file":
        entries = wire["files"]
        entry = data.draw(plausible_file())
    elif where == "scalar":
        entries = None
        state = data.draw(st.sampled_from(opt["state"]))
        state["scalars"][data.draw(st.sampled_from(["step", "other"]))] = data.draw(plausible_scalar())
    elif where == "slot":
        entries = None
        state = data.draw(st.sampled_from(opt["state"]))
        state["tensors"][data.draw(st.sampled_from(["exp_avg", "new"]))] = data.draw(plausible_tensor())
    elif where == "alias":
        entries = wire["aliases"]
        entry = {"name": data.draw(st.text(max_size=6) | values),
                 "layer": data.draw(st.text(max_size=6) | values),
                 "target": data.draw(st.sampled_from(["emb.weight", "fc.weight", "nope"]) | values)}
    else:
        entries = opt["param_groups"]
        entry = {"params": data.draw(st.lists(st.sampled_from(["emb.weight", "fc.bias", "x"]), max_size=3)
                                     | values),
                 "hyperparameters": data.draw(st.dictionaries(st.text(max_size=4), values, max_size=3)
                                              | values)}
    if entries is not None:
        if entries and data.draw(st.booleans()):
            entries[data.draw(st.integers(0, len(entries) - 1))] = entry
        else:
            entries.append(entry)
    manifest = decode_or_lamina_error(with_checksum(wire))
    if manifest is not None:
        try:
            _read_everything(root, manifest)
        except lamina.LaminaError:
            pass


# Regressions the properties above can hit; pinned so they run on every invocation.
def _rechecksummed_rich(rich, edit) -> bytes:
    wire = copy.deepcopy(rich[2])
    edit(wire)
    return with_checksum(wire)


@pytest.mark.parametrize("dtype", [["F32"], {"F32": 1}])
def test_unhashable_tensor_dtype_is_format_error(rich, dtype):
    data = _rechecksummed_rich(rich, lambda w: w["tensors"][0].__setitem__("dtype", dtype))
    with pytest.raises(lamina.FormatError):
        decode_manifest(data)


def test_unhashable_scalar_dtype_is_format_error(rich):
    data = _rechecksummed_rich(
        rich, lambda w: w["optimizer"]["state"][0]["scalars"]["step"].__setitem__("dtype", ["F32"]))
    with pytest.raises(lamina.FormatError):
        decode_manifest(data)


def test_huge_version_number_is_format_error():
    for version in ("9" * 5000 + ".0", "1." + "9" * 5000):
        data = with_checksum({"format": "lamina", "format_version": version})
        with pytest.raises(lamina.LaminaError):
            decode_manifest(data)


# ------------------------------------------------------------------------------ (d) shard headers
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=4),
    max_leaves=12,
)


def _parse_or_format_error(raw: bytes, file_size: int):
    try:
        return parse_header(raw, file_size, "x")
    except lamina.FormatError:
        return None


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 2**40) | st.none())
@example(b"", None)
@example(b"\x02\x00\x00\x00\x00\x00\x00\x00{}", None)
@example(b"\x08\x00\x00\x00\x00\x00\x00\x00[]      ", None)
@example(b"\x04\x00\x00\x00\x00\x00\x00\x00{\xff}}", None)
def test_parse_header_random_bytes(raw, file_size):
    _parse_or_format_error(raw, len(raw) if file_size is None else file_size)


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 300))
def test_parse_header_random_json_body(body, length_delta):
    raw = struct.pack("<Q", len(body)) + body
    _parse_or_format_error(raw, len(raw) + length_delta)


@st.composite
def header_entry(draw):
    def pick(typed):
        return draw(typed | json_values) if draw(st.integers(0, 3)) == 0 else draw(typed)

    entry = {
        "dtype": pick(st.sampled_from(sorted(DTYPES)) | st.sampled_from(["F4", "f32", "C128", ""])),
        "shape": pick(st.lists(st.integers(-2, 5) | st.sampled_from([2**64, 2**63 - 1, True, 1.0]), max_size=3)),
        "data_offsets": pick(st.lists(st.integers(-1, 80) | st.sampled_from([2**64, False, 0.0]),
                                      min_size=0, max_size=3)),
    }
    action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "extra"]))
    if action == "drop":
        del entry[draw(st.sampled_from(sorted(entry)))]
    elif action == "extra":
        entry["extra"] = draw(json_values)
    return entry


_metadata = st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)


@FUZZ
@given(
    st.dictionaries(st.text(max_size=6), st.one_of(header_entry(), header_entry(), header_entry(), json_values),
                    max_size=4),
    st.one_of(st.none(), _metadata, _metadata, json_values),
    st.integers(0, 200),
    st.integers(-8, 8),
    st.booleans(),
)
@example({"a": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, None, 4, 0, True)
@example({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, {"format": "pt"}, 4, 0, True)
def test_parse_header_structured_json(entries, metadata, data_size, length_delta, pad):
    header = {} if metadata is None else {"__metadata__": metadata}
    header.update(entries)
    text = json.dumps(header).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    length = max(0, len(text) + length_delta) if length_delta % 3 == 0 else len(text)
    raw = struct.pack("<Q", length) + text + bytes(data_size)
    result = _parse_or_format_error(raw, len(raw))
    if result is not None:
        metadata_out, parsed = result
        assert set(parsed) == set(entries)


@FUZZ
@given(st.lists(st.tuples(st.text(min_size=1, max_size=6), st.sampled_from(sorted(DTYPES)),
                          st.lists(st.integers(0, 3), max_size=3)), max_size=5,
                unique_by=lambda t: t[0]).filter(lambda ts: all(t[0] != "__metadata__" for t in ts)),
       st.integers(-3, 3))
def test_parse_header_of_planned_layout(tensors, slack):
    """Layouts lamina writes parse back exactly; a buffer of the wrong size is a FormatError."""
    from lamina.format.shards import plan_shard

    header, entries = plan_shard(tensors)
    size = sum(e.nbytes for e in entries)
    raw = header + bytes(max(0, size + slack))
    if slack == 0 or size + slack < 0:
        result = _parse_or_format_error(raw, len(raw))
        if size + slack >= 0:
            assert result is not None
            _, parsed = result
            assert [parsed[e.name] for e in entries] == entries
    else:
        with pytest.raises(lamina.FormatError):
            parse_header(raw, len(raw), "x")


@pytest.mark.parametrize("info", [
    {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]},
    {"dtype": {"F32": 1}, "shape": [1], "data_offsets": [0, 4]},
])
def test_parse_header_unhashable_dtype_is_format_error(info):
    text = json.dumps({"a": info}).encode()
    raw = struct.pack("<Q", len(text)) + text + bytes(4)
    with pytest.raises(lamina.FormatError):
        parse_header(raw, len(raw), "x")


def test_parse_header_duplicate_keys():
    text = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    raw = struct.pack("<Q", len(text)) + text + b"\0"
    with pytest.raises(lamina.FormatError):
        parse_header(raw, len(raw), "x")


# ------------------------------------------------------------------------------ (e) round trip
def _numpy_dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name)
    except TypeError:
        return np.dtype(getattr(ml_dtypes, name))


NP_DTYPES = sorted({d.numpy for d in DTYPES.values()})


@st.composite
def arrays(draw):
    dtype = _numpy_dtype(draw(st.sampled_from(NP_DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    n = math.prod(shape)
    raw = draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    if dtype == np.bool_:
        raw = bytes(b & 1 for b in raw)
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


name_chars = st.characters(codec="utf-8") | st.sampled_from(list("./A_Zaz09-%~é日\u0301 "))
tensor_names = st.text(name_chars, min_size=1, max_size=24).filter(lambda n: n != "__metadata__")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@FUZZ_SMALL
@given(st.dictionaries(tensor_names, arrays(), min_size=1, max_size=6))
@example({"Dense_1/kernel": np.ones((2, 2), ml_dtypes.bfloat16), "a.b.c": np.zeros(0, ml_dtypes.float8_e4m3fn),
          "con.x": np.array(True), "日本.語": np.arange(3, dtype=np.uint64)})
def test_numpy_round_trip_bit_exact_and_deterministic(tensors):
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        lamina.save(tensors, a, durable=False)
        lamina.save({k: v.copy() for k, v in tensors.items()}, b, durable=False)

        art = lamina.open(a)
        art.verify()
        out = art.state_dict(framework="np")
        assert set(out) == set(tensors)
        for name, arr in tensors.items():
            got = out[name]
            assert isinstance(got, np.ndarray)
            assert got.dtype == arr.dtype, (name, got.dtype, arr.dtype)
            assert got.shape == arr.shape, name
            assert got.tobytes() == arr.tobytes(), name
            single = art.tensor(name, framework="np")
            assert single.tobytes() == arr.tobytes() and single.dtype == arr.dtype

        files_a, files_b = _files(a), _files(b)
        assert sorted(files_a) == sorted(files_b)
        shards = [p for p in files_a if p.startswith("weights/")]
        assert shards
        for p in shards:
            assert files_a[p] == files_b[p], f"{p} differs between two saves of the same tensors"
        assert files_a == files_b  # manifest and index too
