"""The torch pickle converter (``lamina.converters.torch_pickle``, ``lamina.convert``, ``lamina convert``).

Real torch models and optimizers, real ``torch.save`` files: plain state dicts, Hugging Face
layouts, training checkpoints (resumed bit for bit), Lightning ``.ckpt``, optimizer id -> name
mapping, hostile and broken inputs, format detection and the CLI.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from cli_helpers import (
    assert_clean_cli_error,
    cli,
    cli_parallel,
    cli_start,
    cli_wait,
    leftovers,
)
from conftest import TiedLM
from lamina.converters import torch_pickle
from lamina.converters._detect import destination_format, detect_source
from torch import nn
from torch.nn import functional as F

import lamina

N_BEFORE = 3
M_AFTER = 3


# ------------------------------------------------------------------------------ helpers


def assert_tensor_equal(got: Any, want: torch.Tensor, where: str = "") -> None:
    assert isinstance(got, torch.Tensor), where
    assert got.dtype == want.dtype and got.shape == want.shape, (where, got.dtype, want.dtype, got.shape, want.shape)
    assert torch.equal(got, want), f"{where}: tensors differ"


def assert_state_dicts_equal(got: dict, want: dict) -> None:
    assert list(got) == list(want)
    for name, t in want.items():
        assert_tensor_equal(got[name], t, name)


def plain(value: Any) -> Any:
    """Tuples as lists (msgpack and torch disagree on betas' container type)."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def assert_optimizer_sd_equal(got: dict, want: dict) -> None:
    """Two torch optimizer state dicts hold the same state (param_names may be added by lamina)."""
    assert len(got["param_groups"]) == len(want["param_groups"])
    for g, w in zip(got["param_groups"], want["param_groups"]):
        assert g["params"] == w["params"]
        assert set(g) - {"param_names"} == set(w) - {"param_names"}
        for key in w:
            if key != "param_names":
                assert plain(g[key]) == plain(w[key]), key
    assert set(got["state"]) == set(want["state"]) and want["state"]
    for pid, slots in want["state"].items():
        assert set(got["state"][pid]) == set(slots), pid
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                assert_tensor_equal(got["state"][pid][slot], value, f"{pid}/{slot}")
            else:
                assert got["state"][pid][slot] == value


def data_pkl(path: Path) -> bytes:
    """The pickle inside a torch zip checkpoint, whatever its archive folder is called."""
    with zipfile.ZipFile(path) as zf:
        (entry,) = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        return zf.read(entry)


def layers_of(names: list[str]) -> list[str]:
    return list(dict.fromkeys(n.rsplit(".", 1)[0] if "." in n else n for n in names))


# ------------------------------------------------------------------------------ models
class Net(nn.Module):
    """Linear, LayerNorm, BatchNorm (running stats + num_batches_tracked), Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.norm = nn.LayerNorm(16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.norm(self.fc1(x)))))


class Lit(nn.Module):
    """What a LightningModule's state_dict looks like: the network under ``model.``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def make(cls: type, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return cls()


def net_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)


def lm_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2000 + step)
    return torch.randint(0, 16, (10,), generator=g), torch.randint(0, 16, (10,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range, sched: Any = None,
          batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]] = net_batch) -> None:
    model.train()
    for step in steps:
        x, y = batch(step)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def assert_models_equal(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert_tensor_equal(sb[name], sa[name], name)
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


# ====================================================================== 1. plain state dicts
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_plain_state_dict_round_trip(tmp_path: Path, tied_model: TiedLM, suffix: str) -> None:
    with torch.no_grad():  # make BatchNorm statistics non-trivial
        tied_model.bn.running_mean.uniform_(-1, 1)
        tied_model.bn.running_var.uniform_(0.5, 2)
        tied_model.bn.num_batches_tracked.fill_(7)
    sd = tied_model.state_dict()
    src = tmp_path / f"model{suffix}"
    torch.save(sd, src)

    snap = lamina.convert(src, tmp_path / "snap")
    art = lamina.open(snap)
    assert art.layers == layers_of(list(sd)) == ["embed", "proj", "norm", "bn", "head"]
    assert set(art.keys()) == set(sd)
    assert art.aliases == {"head.weight": "embed.weight"}
    assert len(art.manifest.tensors) == len(sd) - 1
    assert_state_dicts_equal({n: art.tensor(n) for n in sd}, sd)
    assert art.training.step is None and art.optimizer is None
    art.verify()

    out = lamina.convert(snap, tmp_path / "out.pt")
    assert out == tmp_path / "out.pt"
    assert data_pkl(out)[:2] == b"\x80\x02"  # pickle protocol 2
    back = torch.load(out, weights_only=True)
    assert set(back) == set(sd)
    for name, t in sd.items():
        assert_tensor_equal(back[name], t, name)
    assert back["head.weight"].data_ptr() == back["embed.weight"].data_ptr()  # still tied
    assert leftovers(tmp_path) == []

    fresh = make(TiedLM, 99)
    fresh.load_state_dict(back)
    assert_models_equal(tied_model, fresh, torch.arange(16))


def test_from_lamina_writes_pth_and_bin_too(tmp_path: Path) -> None:
    sd = make(Net, 1).state_dict()
    torch.save(sd, tmp_path / "m.pt")
    torch_pickle.to_lamina(tmp_path / "m.pt", tmp_path / "snap")
    for name in ("w.pth", "w.bin", "nested/dir/w.ckpt"):
        out = torch_pickle.from_lamina(tmp_path / "snap", tmp_path / name)
        assert data_pkl(out)[:2] == b"\x80\x02"
        back = torch.load(out, weights_only=True)
        assert_state_dicts_equal(dict(back), sd)
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "nested" / "dir") == []


def test_torch_output_is_laid_out_like_torch_save(tmp_path: Path) -> None:
    """``<stem>/data.pkl``, protocol 2: the layout ``torch.save(obj, dst)`` itself produces."""
    torch.save(make(Net, 1).state_dict(), tmp_path / "m.pt")
    snap = lamina.convert(tmp_path / "m.pt", tmp_path / "snap")
    for name in ("model.pt", "weights.bin"):
        out = lamina.convert(snap, tmp_path / name)
        with zipfile.ZipFile(out) as zf:
            names = zf.namelist()
            assert f"{out.stem}/data.pkl" in names, names
            assert zf.read(f"{out.stem}/data.pkl")[:2] == b"\x80\x02"
            assert all(n.startswith(f"{out.stem}/") for n in names), names


# ====================================================================== 2. Hugging Face layouts
def test_hf_directory_with_pytorch_model_bin(tmp_path: Path) -> None:
    sd = make(Net, 2).state_dict()
    hf = tmp_path / "hf"
    hf.mkdir()
    torch.save(sd, hf / "pytorch_model.bin")
    (hf / "config.json").write_text('{"model_type": "net"}')
    art = lamina.open(lamina.convert(hf, tmp_path / "snap"))
    assert art.layers == ["fc1", "norm", "bn", "fc2"]
    assert_state_dicts_equal(art.state_dict(), sd)


def _sharded_hf(tmp_path: Path, sd: dict[str, torch.Tensor]) -> Path:
    hf = tmp_path / "hf"
    hf.mkdir()
    names = list(sd)
    half = len(names) // 2
    parts = {"pytorch_model-00001-of-00002.bin": names[:half], "pytorch_model-00002-of-00002.bin": names[half:]}
    weight_map = {}
    for shard, members in parts.items():
        torch.save({n: sd[n] for n in members}, hf / shard)
        weight_map.update({n: shard for n in members})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (hf / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return hf


def test_hf_sharded_directory(tmp_path: Path) -> None:
    model = make(Net, 3)
    sd = model.state_dict()
    hf = _sharded_hf(tmp_path, sd)
    assert detect_source(hf) == "torch"
    art = lamina.open(lamina.convert(hf, tmp_path / "snap"))
    assert sorted(art.keys()) == sorted(sd)
    for name, t in sd.items():
        assert_tensor_equal(art.tensor(name), t, name)
    fresh = make(Net, 50)
    assert art.load_into(fresh).ok
    assert_models_equal(model, fresh, net_batch(0)[0])


def test_hf_index_naming_a_shard_outside_the_directory_is_refused(tmp_path: Path) -> None:
    sd = make(Net, 3).state_dict()
    hf = _sharded_hf(tmp_path, sd)
    torch.save({"fc2.bias": sd["fc2.bias"]}, tmp_path / "x.bin")  # a real file the index points at
    index_path = hf / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["fc2.bias"] = "../x.bin"
    index_path.write_text(json.dumps(index))
    with pytest.raises(lamina.UnsafePathError, match=r"\.\./x\.bin"):
        torch_pickle.to_lamina(hf, tmp_path / "snap")
    with pytest.raises(lamina.UnsafePathError):
        lamina.convert(hf, tmp_path / "snap")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


def test_hf_index_listing_a_tensor_absent_from_its_shard(tmp_path: Path) -> None:
    sd = make(Net, 3).state_dict()
    hf = _sharded_hf(tmp_path, sd)
    index_path = hf / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["decoder.ghost.weight"] = "pytorch_model-00002-of-00002.bin"
    index_path.write_text(json.dumps(index))
    with pytest.raises(lamina.FormatError, match="decoder.ghost.weight"):
        torch_pickle.to_lamina(hf, tmp_path / "snap")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


# ====================================================================== 3. training checkpoints
def _named(model: nn.Module, keep: Callable[[str, torch.Tensor], bool]) -> list:
    return [(n, p) for n, p in model.named_parameters() if keep(n, p)]


OPTIMIZERS: dict[str, Callable[[nn.Module], torch.optim.Optimizer]] = {
    "sgd_momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
    # two groups built from parameters() (no names): backbone and head with their own lr
    "sgd_two_groups": lambda m: torch.optim.SGD(
        [{"params": [*m.fc1.parameters(), *m.norm.parameters()]},
         {"params": [*m.bn.parameters(), *m.fc2.parameters()], "lr": 0.01, "weight_decay": 0.01}],
        lr=0.05, momentum=0.9),
    # the usual decay / no-decay split, built from named parameters (torch records param_names)
    "adamw_named_two_groups": lambda m: torch.optim.AdamW(
        [{"params": _named(m, lambda n, p: p.dim() > 1)},
         {"params": _named(m, lambda n, p: p.dim() <= 1), "weight_decay": 0.0}],
        lr=1e-2, weight_decay=0.1),
}
CLASS_NAMES = {"sgd_momentum": "torch.optim.SGD", "adam": "torch.optim.Adam", "adamw": "torch.optim.AdamW",
               "sgd_two_groups": "torch.optim.SGD", "adamw_named_two_groups": "torch.optim.AdamW"}
KEY_VARIANTS = {
    "plain": ("model", "optimizer", "step", "scheduler"),
    "suffixed": ("model_state_dict", "optimizer_state_dict", "global_step", "lr_scheduler"),
    "state_dict": ("state_dict", "optimizer", "global_step", "scheduler"),
}
CASES = [("sgd_momentum", "plain"), ("adam", "suffixed"), ("adamw", "state_dict"),
         ("sgd_two_groups", "suffixed"), ("adamw_named_two_groups", "plain")]


def _make_run(kind: str, seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    model = make(Net, seed)
    opt = OPTIMIZERS[kind](model)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


@pytest.mark.parametrize(("kind", "variant"), CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_training_checkpoint_converts_and_resumes_bit_exactly(tmp_path: Path, kind: str, variant: str) -> None:
    model_key, opt_key, step_key, sched_key = KEY_VARIANTS[variant]
    model, opt, sched = _make_run(kind, 0)
    train(model, opt, range(N_BEFORE), sched)
    best = torch.tensor(0.3)
    rng = torch.get_rng_state()
    ckpt = {model_key: model.state_dict(), opt_key: opt.state_dict(), "epoch": 1, step_key: N_BEFORE,
            sched_key: sched.state_dict(), "best_metric": best, "rng_state": rng,
            "config": {"lr": 0.05, "name": "net", "sizes": [6, 16, 4]}}
    src = tmp_path / "ckpt.pt"
    torch.save(ckpt, src)

    snap = lamina.convert(src, tmp_path / "snap")
    art = lamina.open(snap)
    assert art.training.step == N_BEFORE and art.training.epoch == 1
    assert art.training.extra["scheduler"] == sched.state_dict()
    assert art.training.extra["config"] == {"lr": 0.05, "name": "net", "sizes": [6, 16, 4]}
    assert art.optimizer is not None and art.optimizer.class_name == CLASS_NAMES[kind]
    names = {id(p): n for n, p in model.named_parameters()}
    assert [list(g.params) for g in art.optimizer.param_groups] == [
        [names[id(p)] for p in g["params"]] for g in opt.param_groups]
    assert_state_dicts_equal(art.state_dict(), model.state_dict())
    files = [p for p in Path(snap).rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".safetensors", ".json", ".msgpack") for p in files), files
    assert not any(zipfile.is_zipfile(p) for p in files)
    art.verify()
    if kind == "sgd_momentum":
        res = cli("verify", snap)
        assert res.returncode == 0 and res.stdout.startswith("OK"), res.stderr

    back_path = lamina.convert(snap, tmp_path / "back.pt", checkpoint=True)
    back = torch.load(back_path, weights_only=True)
    assert back["epoch"] == 1 and back["step"] == N_BEFORE
    assert_state_dicts_equal(back["model"], model.state_dict())
    assert_optimizer_sd_equal(back["optimizer"], opt.state_dict())
    assert back["scheduler"] == sched.state_dict()
    assert_tensor_equal(back["best_metric"], best, "best_metric")
    assert_tensor_equal(back["rng_state"], rng, "rng_state")
    assert back["config"] == {"lr": 0.05, "name": "net", "sizes": [6, 16, 4]}
    assert "source" not in back and "dropped" not in back

    # resume: a fresh run restored from the round-tripped checkpoint follows the original exactly
    fresh, fresh_opt, fresh_sched = _make_run(kind, 123)
    fresh.load_state_dict(back["model"])
    fresh_opt.load_state_dict(back["optimizer"])
    fresh_sched.load_state_dict(back["scheduler"])
    train(model, opt, range(N_BEFORE, N_BEFORE + M_AFTER), sched)
    train(fresh, fresh_opt, range(N_BEFORE, N_BEFORE + M_AFTER), fresh_sched)
    assert_models_equal(model, fresh, net_batch(99)[0])
    assert_optimizer_sd_equal(fresh_opt.state_dict(), opt.state_dict())
    assert fresh_sched.state_dict() == sched.state_dict()


def test_training_checkpoint_resumes_by_name_through_load_optimizer(tmp_path: Path) -> None:
    model, opt, sched = _make_run("adamw_named_two_groups", 0)
    train(model, opt, range(N_BEFORE), sched)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "global_step": N_BEFORE}, tmp_path / "c.pt")
    art = torch_pickle.to_lamina(tmp_path / "c.pt", tmp_path / "snap")
    assert [list(g.params) for g in art.optimizer.param_groups] == [
        ["fc1.weight", "fc2.weight"], ["fc1.bias", "norm.weight", "norm.bias", "bn.weight", "bn.bias", "fc2.bias"]]
    fresh = make(Net, 7)
    # the fresh optimizer lists its groups' parameters in another order: restore goes by name
    fresh_opt = torch.optim.AdamW(
        [{"params": _named(fresh, lambda n, p: p.dim() > 1)[::-1]},
         {"params": _named(fresh, lambda n, p: p.dim() <= 1)[::-1], "weight_decay": 0.0}],
        lr=1e-2, weight_decay=0.1)
    assert art.load_into(fresh).ok
    art.load_optimizer(fresh_opt, fresh)
    train(model, opt, range(N_BEFORE, N_BEFORE + M_AFTER))
    train(fresh, fresh_opt, range(N_BEFORE, N_BEFORE + M_AFTER))
    assert_models_equal(model, fresh, net_batch(98)[0])


# ====================================================================== 4. Lightning
def _lightning_ckpt(tmp_path: Path, optimizers: int = 1) -> tuple[Path, nn.Module, list, Any]:
    lit = make(Lit, 4)
    opts = [torch.optim.SGD(lit.parameters(), lr=0.05, momentum=0.9)]
    if optimizers > 1:
        opts.append(torch.optim.Adam(lit.parameters(), lr=1e-3))
    sched = torch.optim.lr_scheduler.StepLR(opts[0], step_size=2, gamma=0.5)
    for step in range(N_BEFORE):
        x, y = net_batch(step)
        for o in opts:
            o.zero_grad(set_to_none=True)
        F.cross_entropy(lit(x), y).backward()
        for o in opts:
            o.step()
        sched.step()
    ckpt = {
        "epoch": 2,
        "global_step": 6,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": lit.state_dict(),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [o.state_dict() for o in opts],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.05, "hidden": 16, "name": "net"},
    }
    path = tmp_path / "epoch=2-step=6.ckpt"
    torch.save(ckpt, path)
    return path, lit, opts, sched


def test_lightning_checkpoint(tmp_path: Path) -> None:
    src, lit, (opt,), sched = _lightning_ckpt(tmp_path)
    assert detect_source(src) == "torch"
    art = lamina.open(lamina.convert(src, tmp_path / "snap"))
    sd = lit.state_dict()
    assert art.keys() == list(sd) and art.keys()[0] == "model.fc1.weight"  # names verbatim, prefix kept
    assert art.layers == ["model.fc1", "model.norm", "model.bn", "model.fc2"]
    assert_state_dicts_equal(art.state_dict(), sd)
    assert art.training.step == 6 and art.training.epoch == 2
    assert art.optimizer.class_name == "torch.optim.SGD"
    names = [n for n, _ in lit.named_parameters()]
    assert [list(g.params) for g in art.optimizer.param_groups] == [names]
    extra = art.training.extra
    assert extra["lr_schedulers"] == [sched.state_dict()]
    assert extra["hyper_parameters"] == {"lr": 0.05, "hidden": 16, "name": "net"}
    assert extra["pytorch-lightning_version"] == "2.4.0" and extra["hparams_name"] == "kwargs"

    osd = art.optimizer_state_dict()
    assert osd["param_groups"][0]["param_names"] == names
    for i, name in enumerate(names):
        assert_tensor_equal(osd["state"][i]["momentum_buffer"], opt.state[dict(lit.named_parameters())[name]]
                            ["momentum_buffer"], name)

    back = torch.load(lamina.convert(art.location, tmp_path / "back.pt", checkpoint=True), weights_only=True)
    assert back["step"] == 6 and back["epoch"] == 2
    assert_optimizer_sd_equal(back["optimizer"], opt.state_dict())
    fresh = make(Lit, 77)
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2, gamma=0.5)
    fresh.load_state_dict(back["model"])
    fresh_opt.load_state_dict(back["optimizer"])
    fresh_sched.load_state_dict(back["lr_schedulers"][0])
    train(lit, opt, range(N_BEFORE, N_BEFORE + M_AFTER), sched)
    train(fresh, fresh_opt, range(N_BEFORE, N_BEFORE + M_AFTER), fresh_sched)
    assert_models_equal(lit, fresh, net_batch(97)[0])


def test_lightning_checkpoint_with_two_optimizers_needs_optimizer_index(tmp_path: Path) -> None:
    src, lit, (sgd, adam), _ = _lightning_ckpt(tmp_path, optimizers=2)
    with pytest.raises(lamina.FormatError, match="optimizer_index"):
        torch_pickle.to_lamina(src, tmp_path / "snap")
    with pytest.raises(lamina.FormatError, match="optimizer_index"):
        lamina.convert(src, tmp_path / "snap")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []

    art = lamina.open(lamina.convert(src, tmp_path / "snap", optimizer_index=1))
    assert art.optimizer.class_name == "torch.optim.Adam"
    assert set(art.optimizer.slots) == {"step", "exp_avg", "exp_avg_sq"}
    assert_optimizer_sd_equal(art.optimizer_state_dict(), adam.state_dict())
    art0 = torch_pickle.to_lamina(src, tmp_path / "snap0", optimizer_index=0)
    assert art0.optimizer.class_name == "torch.optim.SGD"
    assert_optimizer_sd_equal(art0.optimizer_state_dict(), sgd.state_dict())

    refused, chosen = cli_parallel(("convert", src, tmp_path / "snap_cli"),
                                   ("convert", src, tmp_path / "snap_cli1", "--optimizer-index", "1"))
    assert_clean_cli_error(refused, lamina.FormatError, "--optimizer-index")
    assert not (tmp_path / "snap_cli").exists()
    assert chosen.returncode == 0, chosen.stderr
    assert lamina.open(tmp_path / "snap_cli1").optimizer.class_name == "torch.optim.Adam"


def test_lightning_optimizer_index_out_of_range_is_a_format_error(tmp_path: Path) -> None:
    src, *_ = _lightning_ckpt(tmp_path, optimizers=2)
    res = cli("convert", src, tmp_path / "cli_snap", "--optimizer-index", "5")
    assert_clean_cli_error(res, lamina.FormatError)
    with pytest.raises(lamina.FormatError, match="optimizer"):
        torch_pickle.to_lamina(src, tmp_path / "snap", optimizer_index=5)
    assert not (tmp_path / "snap").exists() and not (tmp_path / "cli_snap").exists()
    assert leftovers(tmp_path) == []


# ====================================================================== 5. optimizer id -> name
def test_optimizer_from_named_parameters_uses_recorded_names(tmp_path: Path) -> None:
    model = make(Net, 5)
    # only the head, listed in reverse: alignment by order could not work, the recorded names do
    opt = torch.optim.Adam([("fc2.bias", model.fc2.bias), ("fc2.weight", model.fc2.weight)], lr=1e-2)
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["fc2.bias", "fc2.weight"]
    train(model, opt, range(N_BEFORE))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": N_BEFORE}, tmp_path / "c.pt")
    art = torch_pickle.to_lamina(tmp_path / "c.pt", tmp_path / "snap")
    assert [list(g.params) for g in art.optimizer.param_groups] == [["fc2.bias", "fc2.weight"]]
    assert [s.param for s in art.optimizer.state] == ["fc2.bias", "fc2.weight"]
    assert tuple(art.optimizer.state[1].tensors["exp_avg"].shape) == (4, 16)
    osd = art.optimizer_state_dict()
    assert_tensor_equal(osd["state"][0]["exp_avg"], opt.state[model.fc2.bias]["exp_avg"])
    assert_tensor_equal(osd["state"][1]["exp_avg_sq"], opt.state[model.fc2.weight]["exp_avg_sq"])


@pytest.mark.parametrize("kind", ["sgd_momentum", "adam"])
def test_optimizer_from_parameters_aligns_with_buffers_and_tied_weights(tmp_path: Path, kind: str) -> None:
    model = make(TiedLM, 6)
    build = {"sgd_momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
             "adam": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2)}[kind]
    opt = build(model)
    assert "param_names" not in opt.state_dict()["param_groups"][0]
    train(model, opt, range(N_BEFORE), batch=lm_batch)
    sd = model.state_dict()
    assert "bn.num_batches_tracked" in sd and "head.weight" in sd
    torch.save({"model": sd, "optimizer": opt.state_dict()}, tmp_path / "c.pt")

    art = torch_pickle.to_lamina(tmp_path / "c.pt", tmp_path / "snap")
    named = list(model.named_parameters())
    assert [list(g.params) for g in art.optimizer.param_groups] == [[n for n, _ in named]]
    assert [s.param for s in art.optimizer.state] == [n for n, _ in named]
    for state, (name, p) in zip(art.optimizer.state, named):
        for slot, entry in state.tensors.items():
            assert tuple(entry.shape) == tuple(p.shape), (name, slot)
    osd = art.optimizer_state_dict()
    for i, (name, p) in enumerate(named):
        for slot, value in opt.state[p].items():
            got = osd["state"][i][slot]
            if isinstance(value, torch.Tensor):
                assert_tensor_equal(got, value, f"{name}/{slot}")

    fresh = make(TiedLM, 60)
    fresh_opt = build(fresh)
    assert art.load_into(fresh).ok and fresh.head.weight is fresh.embed.weight
    art.load_optimizer(fresh_opt, fresh)
    train(model, opt, range(N_BEFORE, N_BEFORE + M_AFTER), batch=lm_batch)
    train(fresh, fresh_opt, range(N_BEFORE, N_BEFORE + M_AFTER), batch=lm_batch)
    assert_models_equal(model, fresh, torch.arange(16))


def test_ambiguous_optimizer_needs_param_names(tmp_path: Path) -> None:
    model = make(Net, 8)
    opt = torch.optim.SGD(model.norm.parameters(), lr=0.05, momentum=0.9)  # a subset of five same-shaped candidates, no names
    train(model, opt, range(N_BEFORE))
    src = tmp_path / "c.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, src)

    with pytest.raises(lamina.StateMismatchError, match="param_names"):
        torch_pickle.to_lamina(src, tmp_path / "snap")
    with pytest.raises(lamina.StateMismatchError, match="param_names"):
        lamina.convert(src, tmp_path / "snap")
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []
    with pytest.raises(lamina.StateMismatchError):
        torch_pickle.to_lamina(src, tmp_path / "snap", param_names=["norm.weight", "nope.bias"])
    assert not (tmp_path / "snap").exists()

    art = torch_pickle.to_lamina(src, tmp_path / "snap", param_names=["norm.weight", "norm.bias"])
    assert [list(g.params) for g in art.optimizer.param_groups] == [["norm.weight", "norm.bias"]]
    osd = art.optimizer_state_dict()
    assert_tensor_equal(osd["state"][0]["momentum_buffer"], opt.state[model.norm.weight]["momentum_buffer"])
    assert_tensor_equal(osd["state"][1]["momentum_buffer"], opt.state[model.norm.bias]["momentum_buffer"])
    by_id = torch_pickle.to_lamina(src, tmp_path / "snap_by_id", param_names={0: "norm.weight", 1: "norm.bias"})
    assert [list(g.params) for g in by_id.optimizer.param_groups] == [["norm.weight", "norm.bias"]]

    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(["norm.weight", "norm.bias"]))
    refused, named = cli_parallel(("convert", src, tmp_path / "snap_cli"),
                                  ("convert", src, tmp_path / "snap_cli2", "--param-names", names_file))
    assert_clean_cli_error(refused, lamina.StateMismatchError, "--param-names")
    assert not (tmp_path / "snap_cli").exists()
    assert named.returncode == 0, named.stderr
    cli_art = lamina.open(tmp_path / "snap_cli2")
    assert [list(g.params) for g in cli_art.optimizer.param_groups] == [["norm.weight", "norm.bias"]]
    assert_optimizer_sd_equal(cli_art.optimizer_state_dict(), osd)

    fresh = make(Net, 80)
    fresh_opt = torch.optim.SGD(fresh.norm.parameters(), lr=0.05, momentum=0.9)
    assert art.load_into(fresh).ok
    art.load_optimizer(fresh_opt, fresh)
    train(model, opt, range(N_BEFORE, N_BEFORE + M_AFTER))
    train(fresh, fresh_opt, range(N_BEFORE, N_BEFORE + M_AFTER))
    assert_models_equal(model, fresh, net_batch(96)[0])


def test_explicit_param_names_that_disagree_with_the_state_shapes_are_refused(tmp_path: Path) -> None:
    """Names given by hand get the same shape check as names found by alignment: a momentum
    buffer of shape [4, 16] must not be filed under a [4] bias (that snapshot would only fail
    later, mid-training, after ``load_optimizer``)."""
    model = make(Net, 8)
    opt = torch.optim.SGD(model.fc2.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, range(N_BEFORE))
    src = tmp_path / "c.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, src)
    with pytest.raises(lamina.StateMismatchError):
        torch_pickle.to_lamina(src, tmp_path / "snap", param_names=["fc2.bias", "fc2.weight"])
    assert not (tmp_path / "snap").exists() and leftovers(tmp_path) == []


# ====================================================================== 6. safety / bad input
def check_refused(tmp_path: Path, src: Path, error: type, *needles: str, cli_needles: tuple[str, ...] = (),
                  sentinel: Path | None = None, **options: Any) -> str:
    """The API and the CLI refuse ``src`` with ``error``, leaving no DST and no temporary sibling
    (and, when given, no ``sentinel`` file: nothing from the input ran); then the messages name
    ``needles``."""
    dst = tmp_path / "out_snap"
    proc = cli_start("convert", src, tmp_path / "cli_snap")
    with pytest.raises(error) as direct:
        torch_pickle.to_lamina(src, dst, **options)
    with pytest.raises(error) as converted:
        lamina.convert(src, dst, **options)
    res = cli_wait(proc)
    if sentinel is not None:
        assert not sentinel.exists(), "code from the input ran"
    for exc in (direct.value, converted.value):
        assert type(exc) is error, (type(exc), exc)
    assert_clean_cli_error(res, error)
    for target in (dst, tmp_path / "cli_snap"):
        assert not target.exists()
    assert leftovers(tmp_path) == [] and leftovers(src.parent) == []
    for message in (str(direct.value), str(converted.value), res.stderr):
        for needle in needles:
            assert needle in message, (needle, message)
    for needle in cli_needles:
        assert needle in res.stderr, (needle, res.stderr)
    return str(direct.value)


def test_truncated_zip_checkpoint(tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save(make(Net, 9).state_dict(), full)
    data = full.read_bytes()
    src = tmp_path / "cut.pt"
    src.write_bytes(data[: len(data) // 2])
    check_refused(tmp_path, src, lamina.FormatError)


class OpenMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


class SystemMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["zip", "legacy", "raw_pickle"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path, container: str) -> None:
    opened, touched = tmp_path / "opened", tmp_path / "touched"
    obj = {"fc.weight": torch.ones(2, 2), "fc.bias": OpenMarker(opened), "fc.extra": SystemMarker(touched)}
    src = tmp_path / "evil.pt"
    if container == "zip":
        torch.save(obj, src)
    elif container == "legacy":
        torch.save(obj, src, _use_new_zipfile_serialization=False)
    else:
        src.write_bytes(pickle.dumps(obj, protocol=2))
    system = f"{os.system.__module__}.system"
    # a zip checkpoint can be scanned for every global; a plain pickle stops at the first one
    needles = ("io.open", system) if container == "zip" else ("io.open",)
    try:
        msg = check_refused(tmp_path, src, lamina.UnsafeInputError, *needles, sentinel=opened)
        assert "trust_pickle" in msg and "\n" not in msg and "\x1b" not in msg, msg
    finally:
        ran = [p.name for p in (opened, touched) if p.exists()]
    assert not ran, f"the pickle's code ran: {ran}"


def test_whole_pickled_module_needs_trust_pickle(tmp_path: Path) -> None:
    model = make(lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.LayerNorm(5), nn.Linear(5, 2)), 10)
    src = tmp_path / "whole.pt"
    torch.save(model, src)
    trusted_cli = cli_start("convert", src, tmp_path / "trusted_cli", "--trust-pickle")
    msg = check_refused(tmp_path, src, lamina.UnsafeInputError, "torch.nn.modules.", cli_needles=("--trust-pickle",))
    assert "torch.nn.modules.container.Sequential" in msg or "torch.nn.modules.linear.Linear" in msg

    art = torch_pickle.to_lamina(src, tmp_path / "trusted", trust_pickle=True)
    assert art.layers == ["0", "2", "3"]
    assert_state_dicts_equal(art.state_dict(), model.state_dict())
    converted = lamina.open(lamina.convert(src, tmp_path / "trusted2", trust_pickle=True))
    assert_state_dicts_equal(converted.state_dict(), model.state_dict())

    res = cli_wait(trusted_cli)
    assert res.returncode == 0, res.stderr
    assert any(line.startswith("WARNING") for line in res.stderr.splitlines()), res.stderr
    assert "wrote" in res.stdout
    fresh = make(lambda: nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.LayerNorm(5), nn.Linear(5, 2)), 11)
    assert lamina.open(tmp_path / "trusted_cli").load_into(fresh).ok
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fresh(x), model(x))


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "bomb.pt"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("bomb/data.pkl", pickle.dumps({"w": 1}, protocol=2), compress_type=zipfile.ZIP_STORED)
        zf.writestr("bomb/data/0", b"\x00" * (32 << 20), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    assert src.stat().st_size < (1 << 20)
    assert detect_source(src) == "torch"
    check_refused(tmp_path, src, lamina.FormatError, "compressed")


def test_missing_source(tmp_path: Path) -> None:
    src = tmp_path / "nowhere.pt"
    with pytest.raises(lamina.NotFoundError):
        torch_pickle.to_lamina(src, tmp_path / "snap")
    with pytest.raises(lamina.NotFoundError):
        lamina.convert(src, tmp_path / "snap")
    with pytest.raises(lamina.NotFoundError):
        torch_pickle.from_lamina(tmp_path / "no_snap", tmp_path / "x.pt")
    res = cli("convert", src, tmp_path / "snap")
    assert_clean_cli_error(res, lamina.NotFoundError, "nowhere.pt")
    assert not (tmp_path / "snap").exists() and not (tmp_path / "x.pt").exists() and leftovers(tmp_path) == []


def test_existing_destination_needs_overwrite_both_directions(tmp_path: Path) -> None:
    first, second = make(Net, 12).state_dict(), make(Net, 13).state_dict()
    torch.save(first, tmp_path / "a.pt")
    torch.save(second, tmp_path / "b.pt")
    snap, snap_a = tmp_path / "snap", tmp_path / "snap_a"
    lamina.convert(tmp_path / "a.pt", snap)
    lamina.convert(tmp_path / "a.pt", snap_a)
    out, out2 = tmp_path / "out.pt", tmp_path / "out2.pt"
    out.write_bytes(b"precious")
    torch.save({"x": torch.zeros(1)}, out2)
    # CLI: torch -> lamina onto an existing snapshot is refused; lamina -> torch with --overwrite works
    refused_proc = cli_start("convert", tmp_path / "b.pt", snap)
    overwrite_proc = cli_start("convert", snap_a, out2, "--overwrite")

    # API, without overwrite: both directions refuse and leave DST untouched
    with pytest.raises(lamina.ExistsError):
        lamina.convert(tmp_path / "b.pt", snap)
    with pytest.raises(lamina.ExistsError):
        torch_pickle.to_lamina(tmp_path / "b.pt", snap)
    with pytest.raises(lamina.ExistsError):
        lamina.convert(snap, out)
    with pytest.raises(lamina.ExistsError):
        torch_pickle.from_lamina(snap, out)
    assert out.read_bytes() == b"precious"

    refused = cli_wait(refused_proc)
    assert_clean_cli_error(refused, lamina.ExistsError, str(snap))
    assert_state_dicts_equal(lamina.open(snap).state_dict(), first)
    assert leftovers(tmp_path) == []
    res = cli_wait(overwrite_proc)
    assert res.returncode == 0, res.stderr
    assert_state_dicts_equal(dict(torch.load(out2, weights_only=True)), first)

    # API, with overwrite: both directions replace DST
    lamina.convert(snap, out, overwrite=True)
    assert_state_dicts_equal(dict(torch.load(out, weights_only=True)), first)
    lamina.convert(tmp_path / "b.pt", snap, overwrite=True)
    assert_state_dicts_equal(lamina.open(snap).state_dict(), second)
    torch_pickle.to_lamina(tmp_path / "a.pt", snap, overwrite=True)
    assert_state_dicts_equal(lamina.open(snap).state_dict(), first)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("head", [b"\x13\x37", b"\x80\x02"], ids=["garbage", "garbage_like_a_pickle"])
def test_random_bytes_are_not_a_checkpoint(tmp_path: Path, head: bytes) -> None:
    src = tmp_path / "x.pt"
    src.write_bytes(head + random.Random(0).randbytes(4096))
    dst = tmp_path / "snap"
    with pytest.raises(lamina.FormatError) as direct:
        torch_pickle.to_lamina(src, dst)
    with pytest.raises(lamina.FormatError) as converted:
        lamina.convert(src, dst)
    res = cli("convert", src, dst)
    assert_clean_cli_error(res, lamina.FormatError)
    assert not dst.exists() and leftovers(tmp_path) == []
    # not a pickle needing unsafe globals: telling the user to --trust-pickle random bytes is wrong
    for exc in (direct.value, converted.value):
        assert not isinstance(exc, lamina.UnsafeInputError), f"random bytes reported as unsafe: {exc}"


def test_checkpoint_without_a_model_state_dict(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "history": [0.5, 0.4], "notes": "no weights here", "weights": {"a": 1}}, src)
    msg = check_refused(tmp_path, src, lamina.FormatError, "'epoch'", "'history'", "'notes'", "'weights'")
    assert "model" in msg


# ====================================================================== 7. format detection
def test_detect_source(tmp_path: Path, snapshot: Path) -> None:
    sd = make(Net, 14).state_dict()
    torch.save(sd, tmp_path / "m.pt")
    weird = tmp_path / "m.weird"
    (tmp_path / "m.pt").rename(weird)
    assert detect_source(weird) == "torch"
    art = lamina.open(lamina.convert(weird, tmp_path / "from_weird"))
    assert_state_dicts_equal(art.state_dict(), sd)

    legacy = tmp_path / "legacy.pt"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    assert detect_source(legacy) == "torch"
    assert_state_dicts_equal(lamina.open(lamina.convert(legacy, tmp_path / "from_legacy")).state_dict(), sd)
    legacy_odd = tmp_path / "legacy.data"
    legacy_odd.write_bytes(legacy.read_bytes())
    assert detect_source(legacy_odd) == "torch"

    assert detect_source(snapshot) == "lamina"
    hf = tmp_path / "hf"
    hf.mkdir()
    torch.save(sd, hf / "pytorch_model.bin")
    assert detect_source(hf) == "torch"
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "pytorch_model.bin.index.json").write_text('{"weight_map": {}}')
    assert detect_source(sharded) == "torch"

    (tmp_path / "empty").mkdir()
    with pytest.raises(lamina.FormatError):
        detect_source(tmp_path / "empty")
    with pytest.raises(lamina.NotFoundError):
        detect_source(tmp_path / "missing.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(lamina.FormatError):
        detect_source(tmp_path / "text.pt")


def test_destination_format() -> None:
    for name in ("m.pt", "m.pth", "m.bin", "m.ckpt", "dir/M.PT", "m.Pth"):
        assert destination_format(name) == "torch", name
    assert destination_format("m.keras") == "keras" and destination_format("m.h5") == "keras"
    assert destination_format("m.onnx") == "onnx"
    for name in ("snap", "out/model_v2", "snap.d"):
        assert destination_format(name) == "lamina", name
    assert destination_format("snap", "torch") == "torch"
    assert destination_format("m.pt", "lamina") == "lamina"
    with pytest.raises(lamina.FormatError, match="bogus"):
        destination_format("m.pt", "bogus")


# ====================================================================== 8. the CLI
def test_cli_round_trip(tmp_path: Path) -> None:
    model = make(Net, 15)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train(model, opt, range(N_BEFORE))
    src = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 4, "step": 40}, src)

    res = cli("convert", src, tmp_path / "snap")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"wrote {tmp_path / 'snap'}"
    art = lamina.open(tmp_path / "snap")
    assert art.training.step == 40 and art.training.epoch == 4

    ckpt = cli("convert", tmp_path / "snap", tmp_path / "back.ckpt", "--checkpoint")
    assert ckpt.returncode == 0 and ckpt.stdout.strip() == f"wrote {tmp_path / 'back.ckpt'}", ckpt.stderr
    back = torch.load(tmp_path / "back.ckpt", weights_only=True)
    assert back["epoch"] == 4 and back["step"] == 40
    assert_state_dicts_equal(back["model"], model.state_dict())
    assert_optimizer_sd_equal(back["optimizer"], opt.state_dict())
    assert leftovers(tmp_path) == []


def test_torch_to_torch_goes_through_a_temporary_snapshot(tmp_path: Path) -> None:
    model, opt, sched = _make_run("adam", 16)
    train(model, opt, range(N_BEFORE), sched)
    src = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": 2, "global_step": N_BEFORE}, src)
    out = lamina.convert(src, tmp_path / "resaved.pth", checkpoint=True)
    back = torch.load(out, weights_only=True)
    assert back["step"] == N_BEFORE and back["epoch"] == 2 and back["scheduler"] == sched.state_dict()
    assert_state_dicts_equal(back["model"], model.state_dict())
    assert_optimizer_sd_equal(back["optimizer"], opt.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "resaved.pth"]


def test_big_endian_checkpoint_converts_to_the_values_torch_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch byte-swaps big-endian checkpoints in place in the mapping; releasing those pages after
    a shard is written would bring back unswapped bytes for neighbours written later."""
    import sys as _sys

    true = {f"l{i}.weight": torch.arange(1024.0) + 1000 * i for i in range(6)}  # several tensors per page
    swapped = {k: torch.from_numpy(v.numpy().byteswap().copy()) for k, v in true.items()}
    monkeypatch.setattr(_sys, "byteorder", "big")
    torch.save(swapped, tmp_path / "be.pt")  # a genuine big-endian checkpoint
    monkeypatch.setattr(_sys, "byteorder", "little")
    loaded = torch.load(tmp_path / "be.pt", weights_only=True)
    assert all(torch.equal(loaded[k], true[k]) for k in true)
    art = lamina.open(lamina.convert(tmp_path / "be.pt", tmp_path / "snap"))
    for name, want in true.items():
        assert torch.equal(art.tensor(name), want), name


def test_param_groups_in_another_order_with_equal_shapes_are_refused_not_guessed(tmp_path: Path) -> None:
    """Two same-shape layers, groups listed in reverse model order: by shapes alone both orders fit,
    so the converter must ask for names instead of giving one layer's state to the other."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    opt = torch.optim.Adam([{"params": model[1].parameters(), "lr": 1e-2},
                            {"params": model[0].parameters(), "lr": 1e-4}])
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "ckpt.pt")
    with pytest.raises(lamina.StateMismatchError, match="param_names"):
        lamina.convert(tmp_path / "ckpt.pt", tmp_path / "snap")
    names = ["1.weight", "1.bias", "0.weight", "0.bias"]
    art = lamina.open(lamina.convert(tmp_path / "ckpt.pt", tmp_path / "snap", param_names=names))
    state = art.optimizer_state()
    assert torch.equal(state["1.weight"]["exp_avg"], opt.state[model[1].weight]["exp_avg"])
    assert [g.hyperparameters["lr"] for g in art.optimizer.param_groups] == [1e-2, 1e-4]
    assert art.optimizer.param_groups[0].params == ("1.weight", "1.bias")


def test_malformed_lightning_and_options_are_format_errors_and_leave_no_folders(tmp_path: Path) -> None:
    torch.save({"state_dict": [1, 2], "loops": {}}, tmp_path / "l1.ckpt")
    torch.save({"state_dict": {"w": torch.ones(1)}, "loops": {}, "optimizer_states": 5}, tmp_path / "l2.ckpt")
    for name, match in (("l1.ckpt", "state_dict"), ("l2.ckpt", "optimizer_states")):
        with pytest.raises(lamina.FormatError, match=match):
            lamina.convert(tmp_path / name, tmp_path / f"{name}-snap")  # no extension: a lamina directory
    with pytest.raises(lamina.FormatError, match="unknown format"):
        lamina.convert(tmp_path / "l1.ckpt", tmp_path / "x", from_format="pytorch")
    torch.save({"w.weight": torch.ones(2)}, tmp_path / "w.pt")
    with pytest.raises(lamina.FormatError, match="onnx_template"):  # torch -> onnx needs a graph
        lamina.convert(tmp_path / "w.pt", tmp_path / "new" / "deep" / "out.onnx")
    assert not (tmp_path / "new").exists()
    out = lamina.convert(tmp_path / "w.pt", tmp_path / "sub" / "dir" / "out.pth")  # torch -> torch creates parents
    assert torch.equal(torch.load(out, weights_only=True)["w.weight"], torch.ones(2))
