"""Hardening of the torch pickle converter (issue 9, items 11-13) beyond "input -> typed error"
(those cases live in tests/adversarial/torch_pickle.py).

- zip checkpoints: the ambiguous archives of the corpus really are accepted by torch (so refusing
  them is the converter's job), and an ordinary checkpoint still passes the new checks;
- the recorded optimizer class: real torch 2.13 optimizers are named correctly or "unknown", never
  wrongly, and "unknown" still resumes training bit for bit;
- optimizer ids -> names without recorded names: decay / no-decay splits and frozen parameters are
  matched when exactly one assignment fits, resumed bit for bit, and refused, naming the
  parameters, when several fit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from adversarial.torch_pickle import real_checkpoint, rezip
from lamina.converters import torch_pickle
from lamina.converters._torch_optim_class import _SIGNATURES, UNKNOWN
from torch import nn
from torch.nn import functional as F

import lamina

N_BEFORE = 3
M_AFTER = 3


# ------------------------------------------------------------------------------ helpers
def assert_params_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


class TinyLM(nn.Module):
    """A transformer-like model: embedding + positions, pre-norm attention and MLP blocks, final
    norm, LM head tied to the embedding."""

    def __init__(self, vocab: int = 32, dim: int = 16, blocks: int = 2, context: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(context, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 4 * dim)
        self.out = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(att)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


def lm_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3000 + step)
    tokens = torch.randint(0, 32, (4, 9), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def train_lm(model: nn.Module, opt: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        x, y = lm_batch(step)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        opt.step()


def decay_split(model: nn.Module) -> torch.optim.Optimizer:
    """The usual fine-tuning recipe, built from parameters (no names recorded)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": 0.01},
                              {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0}], lr=1e-2)


def freeze_embeddings(model: nn.Module) -> None:
    model.embed.weight.requires_grad_(False)
    model.pos.requires_grad_(False)


def resume_both_ways(tmp_path: Path, build: Callable[[nn.Module], torch.optim.Optimizer],
                     prepare: Callable[[nn.Module], None] | None = None, **convert: Any) -> lamina.Artifact:
    """Train N steps, save {"model", "optimizer"}, convert; resume M steps from the snapshot (by name,
    ``load_optimizer``) and from the torch checkpoint written back (``load_state_dict``): both equal
    the uninterrupted run bit for bit. Returns the snapshot."""
    def fresh(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        model = TinyLM()
        if prepare is not None:
            prepare(model)
        return model, build(model)

    model, opt = fresh(0)
    train_lm(model, opt, range(N_BEFORE))
    assert "param_names" not in opt.state_dict()["param_groups"][0]
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": N_BEFORE}, tmp_path / "c.pt")
    art = lamina.open(lamina.convert(tmp_path / "c.pt", tmp_path / "snap", **convert))
    names = {id(p): n for n, p in model.named_parameters()}
    assert [list(g.params) for g in art.optimizer.param_groups] == [
        [names[id(p)] for p in g["params"]] for g in opt.param_groups]

    by_name, by_name_opt = fresh(1)
    assert art.load_into(by_name).ok
    art.load_optimizer(by_name_opt, by_name)
    back = torch.load(lamina.convert(art.location, tmp_path / "back.pt", checkpoint=True), weights_only=True)
    by_id, by_id_opt = fresh(2)
    by_id.load_state_dict(back["model"])
    by_id_opt.load_state_dict(back["optimizer"])

    train_lm(model, opt, range(N_BEFORE, N_BEFORE + M_AFTER))
    for other, other_opt in ((by_name, by_name_opt), (by_id, by_id_opt)):
        train_lm(other, other_opt, range(N_BEFORE, N_BEFORE + M_AFTER))
        assert_params_equal(model, other)
    return art


# ====================================================================== item 11: zip ambiguities
def test_torch_reads_one_copy_of_a_duplicated_entry_so_the_converter_refuses(tmp_path: Path) -> None:
    """torch.load accepts an archive with two m/data/0 entries (reading the second); the converter
    refuses it as ambiguous, naming the entry, and writes nothing."""
    (tmp_path / "base").mkdir()
    src = rezip(real_checkpoint(tmp_path / "base" / "m.pt"), tmp_path / "m.pt", extra=[("m/data/0", bytes(48))])
    loaded = torch.load(src, weights_only=True)
    assert torch.equal(loaded["fc.weight"], torch.zeros(4, 3))  # torch took the second copy, silently
    with pytest.raises(lamina.FormatError, match=r"'m/data/0' appears twice"):
        torch_pickle.to_lamina(src, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def test_ordinary_checkpoints_pass_the_zip_checks(tmp_path: Path) -> None:
    """The checks accept what torch.save writes, including for a file name with non-ASCII characters,
    and a checkpoint re-zipped with directory entries."""
    torch.manual_seed(0)
    sd = {"enc.weight": torch.randn(3, 4), "enc.bias": torch.randn(3)}
    torch.save(sd, tmp_path / "modèle.pt")
    art = torch_pickle.to_lamina(tmp_path / "modèle.pt", tmp_path / "snap")
    assert all(torch.equal(art.tensor(k), v) for k, v in sd.items())
    with zipfile.ZipFile(tmp_path / "modèle.pt") as zf:
        root = zf.namelist()[0].split("/")[0]
    rezip(tmp_path / "modèle.pt", tmp_path / "dirs.pt", first=[(f"{root}/", b""), (f"{root}/data/", b"")])
    assert torch.equal(torch.load(tmp_path / "dirs.pt", weights_only=True)["enc.bias"], sd["enc.bias"])
    art = torch_pickle.to_lamina(tmp_path / "dirs.pt", tmp_path / "snap2")
    assert all(torch.equal(art.tensor(k), v) for k, v in sd.items())


# ====================================================================== item 12: optimizer class
class Lion(torch.optim.Optimizer):
    """An optimizer torch does not ship (sign of interpolated momentum): its class is not knowable."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                p.mul_(1 - group["lr"] * group["weight_decay"])
                update = state["exp_avg"].mul(beta1).add(p.grad, alpha=1 - beta1).sign_()
                p.add_(update, alpha=-group["lr"])
                state["exp_avg"].mul_(beta2).add_(p.grad, alpha=1 - beta2)


O = torch.optim
REAL_OPTIMIZERS: dict[str, tuple[Callable[[Any], torch.optim.Optimizer], str]] = {
    "sgd": (lambda ps: O.SGD(ps, lr=0.05), "SGD"),
    "sgd_momentum": (lambda ps: O.SGD(ps, lr=0.05, momentum=0.9, nesterov=True), "SGD"),
    "adam": (lambda ps: O.Adam(ps, lr=1e-2), "Adam"),
    "adam_amsgrad": (lambda ps: O.Adam(ps, lr=1e-2, amsgrad=True), "Adam"),
    "adamw": (lambda ps: O.AdamW(ps, lr=1e-2), "AdamW"),
    "rmsprop": (lambda ps: O.RMSprop(ps, lr=1e-2), "RMSprop"),
    "rmsprop_momentum": (lambda ps: O.RMSprop(ps, lr=1e-2, momentum=0.9), "RMSprop"),
    "rmsprop_centered": (lambda ps: O.RMSprop(ps, lr=1e-2, momentum=0.9, centered=True), "RMSprop"),
    "adagrad": (lambda ps: O.Adagrad(ps, lr=1e-2), "Adagrad"),
    "adadelta": (lambda ps: O.Adadelta(ps), "Adadelta"),
    "adamax": (lambda ps: O.Adamax(ps, lr=1e-2), "Adamax"),
    "nadam": (lambda ps: O.NAdam(ps, lr=1e-2), "NAdam"),
    "radam": (lambda ps: O.RAdam(ps, lr=1e-2), "RAdam"),
    "asgd": (lambda ps: O.ASGD(ps, lr=1e-2), "ASGD"),
    "rprop": (lambda ps: O.Rprop(ps, lr=1e-2), "Rprop"),
    "adafactor": (lambda ps: O.Adafactor(ps, lr=1e-2), "Adafactor"),
}


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 4))


def _train_net(model: nn.Module, opt: torch.optim.Optimizer, steps: range, sched: Any = None) -> None:
    for step in steps:
        g = torch.Generator().manual_seed(4000 + step)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if sched is not None:
            sched.step()


def _class_round_trip(tmp_path: Path, build: Callable[[Any], torch.optim.Optimizer],
                      edit: Callable[[dict], None] | None = None) -> lamina.Artifact:
    """Train with a StepLR (it adds initial_lr to the groups), save, convert, and resume by name:
    bit for bit equal to the uninterrupted run."""
    model = _net(0)
    opt = build(model.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    _train_net(model, opt, range(N_BEFORE), sched)
    osd = opt.state_dict()
    if edit is not None:
        edit(osd)
    torch.save({"model": model.state_dict(), "optimizer": osd, "scheduler": sched.state_dict()}, tmp_path / "c.pt")
    art = lamina.open(lamina.convert(tmp_path / "c.pt", tmp_path / "snap"))
    assert art.optimizer.slots == tuple(dict.fromkeys(k for s in osd["state"].values() for k in s))

    fresh = _net(1)
    fresh_opt = build(fresh.parameters())
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2, gamma=0.5)
    assert art.load_into(fresh).ok
    art.load_optimizer(fresh_opt, fresh)
    fresh_sched.load_state_dict(art.training.extra["scheduler"])
    _train_net(model, opt, range(N_BEFORE, N_BEFORE + M_AFTER), sched)
    _train_net(fresh, fresh_opt, range(N_BEFORE, N_BEFORE + M_AFTER), fresh_sched)
    assert_params_equal(model, fresh)
    return art


@pytest.mark.parametrize("kind", list(REAL_OPTIMIZERS))
def test_recorded_optimizer_class_is_right_for_real_torch_optimizers(tmp_path: Path, kind: str) -> None:
    """Each optimizer of torch 2.13 is named by its own class (never another one: before, RMSprop with
    momentum was recorded as SGD, Adamax / NAdam / RAdam as Adam, Adagrad as Optimizer), and the
    snapshot resumes training bit for bit."""
    build, expected = REAL_OPTIMIZERS[kind]
    art = _class_round_trip(tmp_path, build)
    assert art.optimizer.class_name == f"torch.optim.{expected}"


def test_signatures_agree_with_the_installed_torch() -> None:
    """The table's keys and slots are those torch 2.13 writes: every key it writes is allowed, every
    key the table requires is written, every slot after a step is allowed."""
    checked = set()
    for sig in _SIGNATURES:
        cls = getattr(torch.optim, sig.name.rsplit(".", 1)[1])
        model = _net(0)
        params = [p for p in model.parameters() if p.ndim == 2 or not sig.name.endswith("Muon")]  # Muon: matrices
        momentum = {"momentum": 0.9} if sig.name in ("torch.optim.SGD", "torch.optim.RMSprop") else {}
        opt = cls(params, lr=1e-2, **momentum)
        if sig.name.endswith("SparseAdam"):
            keys = set(opt.state_dict()["param_groups"][0]) - {"params"}
            slots: set[str] = set()
        else:
            _train_net(model, opt, range(2))
            keys = set(opt.state_dict()["param_groups"][0]) - {"params"}
            slots = {k for s in opt.state_dict()["state"].values() for k in s}
        assert sig.core <= keys <= sig.core | sig.later, (sig.name, keys ^ (sig.core | sig.later))
        assert slots <= sig.slots, (sig.name, slots - sig.slots)
        assert all(opt.state_dict()["param_groups"][0][k] is v for k, v in sig.values.items()), sig.name
        checked.add(sig.name)
    assert len(checked) == len(_SIGNATURES) >= 14


def _drop_decoupled_flag(osd: dict) -> None:
    """What torch before the flag wrote: AdamW's groups exactly like Adam's."""
    for group in osd["param_groups"]:
        del group["decoupled_weight_decay"]


@pytest.mark.parametrize(("kind", "build", "edit"), [
    ("custom_lion", lambda ps: Lion(ps, lr=1e-3, weight_decay=0.1), None),
    ("adamw_without_decoupled_flag", REAL_OPTIMIZERS["adamw"][0], _drop_decoupled_flag),
    ("adam_with_an_extra_group_key", REAL_OPTIMIZERS["adam"][0],
     lambda osd: osd["param_groups"][0].update(bias_correction=True)),
], ids=["custom_lion", "adamw_without_decoupled_flag", "adam_with_an_extra_group_key"])
def test_undetermined_optimizer_class_is_unknown_and_still_resumes(tmp_path: Path, kind: str, build: Any,
                                                                    edit: Any) -> None:
    """When the keys and slots do not single out one class, the class is recorded as unknown (before:
    Optimizer for Lion, Adam for an older AdamW) and the snapshot still resumes bit for bit, by
    name and through a torch checkpoint."""
    art = _class_round_trip(tmp_path, build, edit)
    assert art.optimizer.class_name == UNKNOWN
    assert lamina.open(art.location).optimizer.class_name == UNKNOWN
    back = torch.load(lamina.convert(art.location, tmp_path / "back.pt", checkpoint=True), weights_only=True)
    reloaded = build(_net(5).parameters())
    reloaded.load_state_dict(back["optimizer"])
    assert set(reloaded.state_dict()["state"]) == set(back["optimizer"]["state"])


# ====================================================================== item 13: ids -> names
def test_decay_no_decay_split_from_parameters_resumes_bit_exactly(tmp_path: Path) -> None:
    """The usual fine-tuning recipe, without recorded names: matrices in one group, biases and norms
    in the other. Before: refused with "pass param_names"."""
    art = resume_both_ways(tmp_path, decay_split)
    decay, no_decay = (list(g.params) for g in art.optimizer.param_groups)
    assert decay[:2] == ["pos", "embed.weight"] and "blocks.1.out.weight" in decay  # own parameters first
    assert all(n.endswith("bias") or ".ln" in n or n.startswith("norm.") for n in no_decay)
    assert art.optimizer.class_name == "torch.optim.AdamW"


def test_frozen_parameters_are_left_out_when_the_shapes_say_which(tmp_path: Path) -> None:
    """Frozen embedding and positions (not in the optimizer, tied head frozen with them): the
    optimizer's parameters are a subset of the model's. Before: refused (count mismatch)."""
    art = resume_both_ways(tmp_path, decay_split, prepare=freeze_embeddings)
    held = [n for g in art.optimizer.param_groups for n in g.params]
    assert "embed.weight" not in held and "pos" not in held and len(held) == 2 * 12 + 2


def test_backbone_head_blocks_still_match(tmp_path: Path) -> None:
    """Two groups that are contiguous runs (backbone / head with their own lr): the simpler block
    hypothesis decides it even though interleavings of the norms' [16] vectors would also fit."""
    def build(m: nn.Module) -> torch.optim.Optimizer:
        head = [m.norm.weight, m.norm.bias]
        body = [p for p in m.parameters() if all(p is not h for h in head)]
        return torch.optim.Adam([{"params": body}, {"params": head, "lr": 1e-3}], lr=1e-2)

    art = resume_both_ways(tmp_path, build)
    assert list(art.optimizer.param_groups[1].params) == ["norm.weight", "norm.bias"]


def test_ambiguous_split_is_refused_naming_the_parameters_and_param_names_resolve_it(tmp_path: Path) -> None:
    """No decay on biases only: a LayerNorm weight ([16], decayed) and the bias next to it ([16], not)
    fit either group, so more than one assignment fits; the refusal names them."""
    def biases_apart(m: nn.Module) -> torch.optim.Optimizer:
        named = list(m.named_parameters())
        return torch.optim.AdamW([{"params": [p for n, p in named if not n.endswith("bias")], "weight_decay": 0.1},
                                  {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0}],
                                 lr=1e-2)

    torch.manual_seed(0)
    model = TinyLM()
    opt = biases_apart(model)
    train_lm(model, opt, range(N_BEFORE))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.pt")
    with pytest.raises(lamina.StateMismatchError) as refused:
        lamina.convert(tmp_path / "c.pt", tmp_path / "snap")
    message = str(refused.value)
    assert "more than one assignment" in message and "param_names" in message, message
    assert "(group 0 or group 1)" in message and "(group 1 or group 0)" in message, message
    assert any(f"'blocks.{b}.{m}.{w}'" in message for b in "01" for m in ("ln1", "ln2", "proj", "out")
               for w in ("weight", "bias")), message
    assert not (tmp_path / "snap").exists()

    names = [n for g in opt.param_groups for p in g["params"] for n, q in model.named_parameters() if q is p]
    (tmp_path / "names.json").write_text(json.dumps(names))
    (tmp_path / "named").mkdir()
    art = resume_both_ways(tmp_path / "named", biases_apart, param_names=str(tmp_path / "names.json"))
    assert [n for g in art.optimizer.param_groups for n in g.params] == names


def test_frozen_layer_among_identical_layers_is_refused(tmp_path: Path) -> None:
    """The first of two identical blocks frozen, one group: the state cannot tell which block is
    frozen (shifting by a block fits too); refused, naming parameters it could not place."""
    torch.manual_seed(0)
    model = TinyLM()
    model.blocks[0].requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train_lm(model, opt, range(N_BEFORE))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.pt")
    with pytest.raises(lamina.StateMismatchError, match=r"not in the optimizer or group 0|group 0 or not in the "
                                                         r"optimizer") as refused:
        lamina.convert(tmp_path / "c.pt", tmp_path / "snap")
    assert "'blocks." in str(refused.value)
    assert not (tmp_path / "snap").exists()


def test_matching_is_fast_on_a_deep_model(tmp_path: Path) -> None:
    """48 blocks (578 parameters), frozen embeddings, decay / no-decay: matched without an
    exponential search (a 30 s deadline guards against one; it takes milliseconds); a stateless
    two-group SGD on the same model is refused under the same guard. Not a timing assertion."""
    torch.manual_seed(0)
    model = TinyLM(dim=4, blocks=48)
    freeze_embeddings(model)
    opt = decay_split(model)
    train_lm(model, opt, range(1))
    sd, osd = model.state_dict(), opt.state_dict()
    aliases = {"head.weight": "embed.weight"}
    with _deadline(30):
        names = torch_pickle._param_names(osd, sd, aliases, None, "deep")
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert names == [by_id[id(p)] for g in opt.param_groups for p in g["params"]]
    assert len(names) == 48 * 12 + 2

    sgd = torch.optim.SGD([{"params": [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]},
                           {"params": [p for p in model.parameters() if p.requires_grad and p.ndim < 2],
                            "lr": 0.5}], lr=0.1)
    train_lm(model, sgd, range(1))
    with _deadline(30), pytest.raises(lamina.StateMismatchError, match="more than one assignment"):
        torch_pickle._param_names(sgd.state_dict(), model.state_dict(), aliases, None, "deep sgd")


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fail (rather than hang the suite) if the block runs longer than ``seconds``."""
    def expired(signum: int, frame: object) -> None:
        raise AssertionError(f"still running after {seconds} s: the search is not polynomial")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ====================================================================== typed errors on these paths
def test_param_names_of_the_wrong_type_are_format_errors(tmp_path: Path) -> None:
    model = _net(0)
    opt = torch.optim.SGD(model[3].parameters(), lr=0.1, momentum=0.9)
    _train_net(model, opt, range(2))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, tmp_path / "c.pt")
    (tmp_path / "five.json").write_text("5")
    for bad in (5, str(tmp_path / "five.json")):
        with pytest.raises(lamina.FormatError, match="param_names must be a list"):  # before: TypeError
            lamina.convert(tmp_path / "c.pt", tmp_path / "snap", param_names=bad)
    with pytest.raises(lamina.StateMismatchError, match=r"name \['3.weight'\] more than once"):
        lamina.convert(tmp_path / "c.pt", tmp_path / "snap", param_names=["3.weight", "3.weight"])
    assert not (tmp_path / "snap").exists()


def test_odd_ids_and_recorded_names_are_not_raw_errors(tmp_path: Path) -> None:
    """Ids that are lists and recorded param_names that are not strings (forged): before, raw
    TypeErrors (unhashable type); now the ids are matched by position and the bad names ignored."""
    model = _net(0)
    opt = torch.optim.SGD(model.named_parameters(), lr=0.1)
    _train_net(model, opt, range(1))
    osd = opt.state_dict()
    osd["param_groups"][0]["params"] = [[i] for i in osd["param_groups"][0]["params"]]
    osd["param_groups"][0]["param_names"] = [[n] for n in osd["param_groups"][0]["param_names"]]
    torch.save({"model": model.state_dict(), "optimizer": osd}, tmp_path / "c.pt")
    art = lamina.open(lamina.convert(tmp_path / "c.pt", tmp_path / "snap"))
    assert list(art.optimizer.param_groups[0].params) == [n for n, _ in model.named_parameters()]
    assert art.optimizer.class_name == "torch.optim.SGD"


def test_group_matching_agrees_with_brute_force() -> None:
    """assign_groups on 600 random small instances (3 groups, up to 6 candidates of 4 shapes, some
    left out, some items without state) against enumerating every labelling: the same answer, or
    the same refusal."""
    import itertools
    import random

    from lamina.converters._torch_align import assign_groups, shape_fits

    rng = random.Random(0)
    shapes = [(2,), (3,), (2, 2), (4, 2)]
    outcomes = {"blocks": 0, "interleaved": 0, "ambiguous": 0, "none": 0}
    for _ in range(600):
        # a hidden true assignment, then the state shapes it implies (some missing, some altered)
        n = rng.randint(1, 6)
        candidates = [(f"p{i}", rng.choice(shapes)) for i in range(n)]
        truth = [rng.randrange(-1, 3) if rng.random() < 0.2 else rng.randrange(3) for _ in range(n)]
        groups = [[[] if rng.random() < 0.2 else [rng.choice(shapes) if rng.random() < 0.1 else shape]
                   for (_, shape), label in zip(candidates, truth) if label == j] for j in range(3)]
        sizes = [len(g) for g in groups]
        fits, blocks = [], []
        for labels in itertools.product(range(-1, len(sizes)), repeat=n):
            members = [[i for i, label in enumerate(labels) if label == j] for j in range(len(sizes))]
            if [len(m) for m in members] != sizes or not all(
                    shape_fits(candidates[i][1], groups[j][q]) for j, m in enumerate(members) for q, i in enumerate(m)):
                continue
            fits.append(labels)
            runs = [label for label in labels if label >= 0]
            if len({label for label in runs}) == len([a for a, b in zip(runs, [None, *runs]) if a != b]):
                blocks.append(labels)  # each group one contiguous run of the trained parameters
        chosen = blocks if blocks else fits
        try:
            got = assign_groups(candidates, groups, "w", "hint")
        except lamina.StateMismatchError as exc:
            if len(chosen) > 1:
                assert "more than one assignment" in str(exc), (candidates, groups, str(exc))
                outcomes["ambiguous"] += 1
            else:
                assert not chosen and "no assignment" in str(exc), (candidates, groups, str(exc))
                outcomes["none"] += 1
            continue
        assert len(chosen) == 1, (candidates, groups, got, chosen)
        assert got == [[candidates[i][0] for i, label in enumerate(chosen[0]) if label == j]
                       for j in range(len(sizes))]
        outcomes["blocks" if blocks else "interleaved"] += 1
    assert all(count >= 10 for count in outcomes.values()), outcomes
