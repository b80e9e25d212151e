"""``lamina.load`` from every kind of source, and loading onto devices.

One call, ``lamina.load(model, source, optimizer=opt)``, restores a torch module and its optimizer
from a local directory, a local repository ``@ref``, ``s3://`` (the moto server of conftest), an
``http://`` static server (tests/servers.py) and ``hf://`` (the FakeHub of tests/hub_server.py);
each resumes training bit for bit. Then ``device=`` on ``Artifact.tensor/layer/state_dict`` and
``load_into`` into parameters that are not plain contiguous host tensors (non-contiguous views,
``meta``, another dtype), with the extra memory of a load bounded by one shard per reader thread.

No accelerator here: devices are tested with ``"cpu"`` / ``torch.device("cpu")`` and the error
paths; the CUDA-only branches (pinned staging, asynchronous copies) are checked with a patched
``torch.accelerator`` for the decisions they make, not for real transfers.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hub_server import FakeHub
from servers import RangeHTTPServer

import lamina
from lamina.frameworks import registry
from lamina.frameworks import torch as torch_adapter

# huggingface_hub itself passes a file object as ``data=`` to its HTTP client for LFS PUTs.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


# ------------------------------------------------------------------------------------------ helpers
class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = torch.nn.Linear(6, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.dec = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.relu(self.norm(self.enc(x))))


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 6, generator=g), torch.randn(5, 3, generator=g)


def step(model: Net, opt: torch.optim.Optimizer, seed: int) -> None:
    x, y = batch(seed)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()


def trained() -> tuple[Net, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for seed in range(3):
        step(model, opt, seed)
    return model, opt


def fresh() -> tuple[Net, torch.optim.Optimizer]:
    torch.manual_seed(123)  # different weights from trained()
    model = Net()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_resumes(source: Any, **options: Any) -> None:
    """load(model, source, optimizer=) restores weights and optimizer state, and one more step on
    the loaded pair equals one more step on the original pair, bit for bit."""
    original, original_opt = trained()
    model, opt = fresh()
    assert not same_state(model.state_dict(), original.state_dict())
    report = lamina.load(model, source, optimizer=opt, **options)
    assert report.ok and sorted(report.loaded) == sorted(original.state_dict())
    assert same_state(model.state_dict(), original.state_dict())
    assert opt.state_dict()["state"][0]["step"] == original_opt.state_dict()["state"][0]["step"]
    step(original, original_opt, 99)
    step(model, opt, 99)
    assert same_state(model.state_dict(), original.state_dict())


def save_trained(path: str | Path, **options: Any) -> lamina.Artifact:
    model, opt = trained()
    return lamina.save(model, path, optimizer=opt, info={"name": "net"}, **options)


# ------------------------------------------------------------------------------------------ sources
def test_load_from_a_local_directory_and_an_open_artifact(tmp_path: Path) -> None:
    art = save_trained(tmp_path / "snap")
    assert_resumes(tmp_path / "snap")
    assert_resumes(os.fspath(tmp_path / "snap"))
    assert_resumes(art)


def test_load_from_a_local_repository_ref(tmp_path: Path) -> None:
    repo = lamina.Repo(tmp_path / "repo")
    model, opt = trained()
    repo.save(model, optimizer=opt, tag="v1")
    repo.save(Net(), message="something else on main")
    assert_resumes(f"{tmp_path / 'repo'}@v1")
    with pytest.raises(lamina.StateMismatchError, match="no optimizer state"):
        lamina.load(Net(), f"{tmp_path / 'repo'}@main", optimizer=fresh()[1])


def test_load_from_s3_snapshot_and_repository(tmp_path: Path, s3_client: Any, s3_bucket: str,
                                              s3_options: dict[str, Any]) -> None:
    art = save_trained(tmp_path / "snap")
    for p in (tmp_path / "snap").rglob("*"):
        if p.is_file():
            s3_client.put_object(Bucket=s3_bucket, Key=f"snap/{p.relative_to(tmp_path / 'snap').as_posix()}",
                                 Body=p.read_bytes())
    assert_resumes(f"s3://{s3_bucket}/snap", storage_options=s3_options, cache=False)
    assert_resumes(f"s3://{s3_bucket}/snap", storage_options=s3_options, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").rglob("*"))) >= len(art.manifest.files)  # the shards went through it

    save_trained(f"s3://{s3_bucket}/repo@main", storage_options=s3_options)
    assert_resumes(f"s3://{s3_bucket}/repo@main", storage_options=s3_options, cache=False)


def test_load_from_a_static_http_server(tmp_path: Path) -> None:
    save_trained(tmp_path / "www" / "snap")
    repo = lamina.Repo(tmp_path / "www" / "repo")
    model, opt = trained()
    repo.save(model, optimizer=opt, tag="v1")
    with RangeHTTPServer(tmp_path / "www") as server:
        assert_resumes(f"{server.url}/snap", cache=False)
        assert_resumes(f"{server.url}/repo@v1", cache=tmp_path / "cache")
        server.reset()
        assert_resumes(f"{server.url}/repo@v1", cache=tmp_path / "cache")
        shards = {f.digest[1] for f in lamina.open(f"{tmp_path / 'www' / 'repo'}@v1").manifest.files}
        gets = [p for m, p, _ in server.requests if m == "GET" and p.rpartition("/")[2] in shards]
        assert gets == []  # the second load read every shard from the cache (only the manifest came)


def test_load_from_the_hub(hub: FakeHub, tmp_path: Path) -> None:
    save_trained(tmp_path / "snap")
    repo_id = f"{FakeHub.USER}/load-{uuid.uuid4().hex[:8]}"
    result = lamina.push(tmp_path / "snap", f"hf://{repo_id}", tag="v1")
    lamina.push(lamina.save(Net(), tmp_path / "other"), f"hf://{repo_id}")  # main moves on
    assert_resumes(f"hf://{repo_id}@v1", cache=False)
    assert_resumes(f"hf://{repo_id}@{result.revision}", cache=tmp_path / "cache")


def test_load_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    save_trained(tmp_path / "snap")
    with pytest.raises(lamina.FormatError, match="not a model"):
        lamina.load({"enc.weight": torch.zeros(8, 6)}, tmp_path / "snap")


# ------------------------------------------------------------------------------------------ device=
@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_reads_land_on_the_device_asked_for(tmp_path: Path, device: Any) -> None:
    art = save_trained(tmp_path / "snap")
    model, _ = trained()
    want = model.state_dict()
    got = art.state_dict(device=device)
    assert same_state(got, want) and {t.device.type for t in got.values()} == {"cpu"}
    layer = art.layer("enc", device=device)
    assert same_state(layer, {k: v for k, v in want.items() if k.startswith("enc.")})
    assert art.tensor("dec.bias", device=device).device == torch.device("cpu")
    assert np.array_equal(art.tensor("dec.bias", "np", device=device), want["dec.bias"].numpy())


def test_tied_tensors_stay_one_object_on_a_device(snapshot: Path) -> None:
    sd = lamina.open(snapshot).state_dict(device="cpu")
    assert sd["head.weight"] is sd["embed.weight"]


@pytest.mark.skipif(torch.accelerator.is_available(), reason="these devices exist here")
@pytest.mark.parametrize("device, message", [
    ("cuda", "not available"), ("cuda:3", "not available"), ("meta", "to_empty"), ("nonsense", "not a usable"),
    (0, "not a usable"),
])
def test_unusable_devices_are_refused_before_any_byte_is_read(tmp_path: Path, device: Any, message: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    art = lamina.open(save_trained(tmp_path / "snap").location)
    read: list[str] = []
    store = art._store
    monkeypatch.setattr(store, "read_into", lambda path, ranges: read.append(path))
    for call in (lambda: art.tensor("enc.weight", device=device), lambda: art.layer("enc", device=device),
                 lambda: art.state_dict(device=device)):
        with pytest.raises(lamina.FormatError, match=message):
            call()
    assert read == []


def test_numpy_reads_accept_only_host_devices(tmp_path: Path) -> None:
    art = save_trained(tmp_path / "snap")
    assert art.tensor("enc.bias", "np", device=None).shape == (8,)
    with pytest.raises(lamina.FormatError, match="numpy tensors live in host memory"):
        art.state_dict("np", device="cuda")
    with pytest.raises(lamina.FormatError, match="host memory"):
        registry.get("np").empty("F32", (2,), "cuda:0")


def test_accelerator_devices_stage_in_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a (pretended) CUDA device present: indices are checked, reads are staged in pinned host
    memory. The transfer itself needs a real GPU and is not exercised here."""
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.accelerator, "device_count", lambda: 2)
    assert torch_adapter.torch_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(lamina.FormatError, match="2 cuda device"):
        torch_adapter.torch_device("cuda:2")
    with pytest.raises(lamina.FormatError, match="not available"):
        torch_adapter.torch_device("xpu")
    pinned: list[bool] = []
    real_empty = torch.empty

    def empty(*args: Any, pin_memory: bool = False, **kwargs: Any) -> torch.Tensor:
        pinned.append(pin_memory)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    adapter = registry.get("pt")
    adapter.empty("F32", (2,), "cuda")
    adapter.empty("F32", (2,), "cpu")
    adapter.empty("F32", (2,))
    assert pinned == [True, False, False]


# ------------------------------------------------------------------------------------------ load_into
def test_load_into_non_contiguous_parameters(tmp_path: Path) -> None:
    """Parameters that are views (here: transposed storage) are filled through host staging."""
    save_trained(tmp_path / "snap")
    original, _ = trained()
    model, _ = fresh()
    model.enc.weight = torch.nn.Parameter(torch.zeros(6, 8).t())
    model.dec.weight = torch.nn.Parameter(torch.zeros(3, 16)[:, ::2])
    assert not model.enc.weight.is_contiguous() and not model.dec.weight.is_contiguous()
    report = lamina.open(tmp_path / "snap").load_into(model)
    assert report.ok
    assert same_state(model.state_dict(), original.state_dict())
    assert not model.enc.weight.is_contiguous()  # written in place, not replaced


def test_meta_modules_are_refused_with_to_empty_guidance(tmp_path: Path) -> None:
    save_trained(tmp_path / "snap")
    with torch.device("meta"):
        model = Net()
    for strict in (True, False):
        with pytest.raises(lamina.StateMismatchError, match=r"meta device.*to_empty\(device=") as err:
            lamina.load(model, tmp_path / "snap", strict=strict)
        assert "enc.weight" in str(err.value)
    model.to_empty(device="cpu")
    assert lamina.load(model, tmp_path / "snap").ok
    assert same_state(model.state_dict(), trained()[0].state_dict())


def test_other_dtypes_are_reported_never_cast(tmp_path: Path) -> None:
    save_trained(tmp_path / "snap")
    model, _ = fresh()
    model.dec.to(torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(lamina.StateMismatchError, match="never cast silently") as err:
        lamina.load(model, tmp_path / "snap")
    assert same_state(model.state_dict(), before)  # strict: nothing loaded
    report = err.value.report
    assert sorted(m.name for m in report.mismatched) == ["dec.bias", "dec.weight"]
    assert {(m.snapshot_dtype, m.module_dtype) for m in report.mismatched} == {("F32", "BF16")}
    report = lamina.load(model, tmp_path / "snap", strict=False)
    assert sorted(m.name for m in report.mismatched) == ["dec.bias", "dec.weight"]
    assert torch.equal(model.enc.weight, trained()[0].enc.weight)
    assert torch.equal(model.dec.weight, before["dec.weight"])


class Wide(torch.nn.Module):
    """Eight equal layers, so each shard is one eighth of the model."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(torch.nn.Linear(64, 64) for _ in range(8))


def track_staging(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the bytes of tensors the torch adapter allocates while they are alive (their peak)."""
    adapter = registry.get("pt")
    real = type(adapter).empty
    stats = {"live": 0, "peak": 0, "total": 0}

    def released(n: int) -> None:
        stats["live"] -= n

    def empty(self: Any, dtype: str, shape: tuple[int, ...], device: Any = None) -> tuple[Any, memoryview]:
        tensor, view = real(self, dtype, shape, device)
        stats["live"] += len(view)
        stats["total"] += len(view)
        stats["peak"] = max(stats["peak"], stats["live"])
        weakref.finalize(tensor, released, len(view))
        return tensor, view

    monkeypatch.setattr(type(adapter), "empty", empty)
    return stats


@pytest.mark.parametrize("workers", [1, 4])
def test_staged_loads_hold_one_shard_per_reader_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       workers: int) -> None:
    torch.manual_seed(1)
    art = lamina.save(Wide(), tmp_path / "snap")
    shard = max(f.size for f in art.manifest.files if f.role == "weights")
    model = Wide()
    for block in model.blocks:  # every weight a view: all of it goes through staging
        block.weight = torch.nn.Parameter(torch.zeros(64, 64).t())
    stats = track_staging(monkeypatch)
    report = lamina.open(tmp_path / "snap", max_concurrency=workers).load_into(model)
    total, peak = stats["total"], stats["peak"]
    assert report.ok and same_state(model.state_dict(), lamina.open(tmp_path / "snap").state_dict())
    assert total == sum(t.nbytes for t in art.manifest.tensors if t.name.endswith(".weight"))  # biases: in place
    assert peak <= workers * shard < 8 * shard


def test_state_dict_on_a_device_moves_each_shard_as_it_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """to_device runs per file inside the reader: with one reader thread, the host copies alive at
    once never exceed one shard (here the move is a real copy to another dtype-preserving tensor)."""
    torch.manual_seed(2)
    art = lamina.save(Wide(), tmp_path / "snap")
    shard = max(f.size for f in art.manifest.files if f.role == "weights")
    stats = track_staging(monkeypatch)
    moved: list[str] = []
    adapter = registry.get("pt")

    def to_device(self: Any, tensor: Any, device: Any) -> Any:  # a stand-in for a host-to-GPU copy
        moved.append(str(device))
        return tensor.clone()

    monkeypatch.setattr(type(adapter), "to_device", to_device)
    sd = lamina.open(tmp_path / "snap", max_concurrency=1).state_dict(device="cpu")
    assert len(moved) == len(sd) and set(moved) == {"cpu"}
    assert stats["peak"] <= shard < stats["total"] / 4
    assert same_state(sd, lamina.open(tmp_path / "snap").state_dict())


def test_numpy_adapter_takes_the_device_argument() -> None:
    """Host-only adapters (numpy; Keras shares the same two lines, covered by its own tests) accept
    None / "cpu" and refuse accelerators."""
    adapter = registry.get("np")
    tensor, view = adapter.empty("F32", (3,), "cpu")
    assert len(view) == 12 and adapter.to_device(tensor, "cpu") is tensor
    with pytest.raises(lamina.FormatError, match="host memory"):
        adapter.empty("F32", (3,), torch.device("meta"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LAMINA_CACHE", str(tmp_path / "default-cache"))
    yield
