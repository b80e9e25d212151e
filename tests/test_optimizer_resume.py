"""Resuming training from a lamina snapshot must match uninterrupted training bit for bit (CPU).

Each test trains a small deterministic model N steps, saves model + optimizer, rebuilds a fresh
model and optimizer from a different seed, restores both from the snapshot, continues both runs
M steps on identical batches and compares every parameter, buffer and optimizer state tensor.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lamina

N_BEFORE = 5
M_AFTER = 4
VOCAB, DIM, HIDDEN = 12, 8, 16


class Net(nn.Module):
    """Embedding tied with the output head, Linear, LayerNorm, BatchNorm (buffers) and an
    auxiliary branch that only joins the loss when ``use_aux`` is set (so before the save its
    parameters never get a gradient and have no optimizer state)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.fc1 = nn.Linear(DIM, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN)
        self.bn = nn.BatchNorm1d(HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, DIM)
        self.aux = nn.Linear(DIM, DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.emb.weight  # tied pair

    def forward(self, idx: torch.Tensor, use_aux: bool = False) -> torch.Tensor:
        h = self.emb(idx)
        if use_aux:
            h = h + self.aux(h)
        h = torch.relu(self.bn(self.norm(self.fc1(h))))
        h = self.fc2(h)
        return self.head(h)


def make_model(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + step)
    idx = torch.randint(0, VOCAB, (6,), generator=g)
    target = torch.randint(0, VOCAB, (6,), generator=g)
    return idx, target


def train(model: Net, opt: torch.optim.Optimizer, steps: range, use_aux: bool) -> None:
    model.train()
    for step in steps:
        idx, target = batch(step)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(idx, use_aux=use_aux), target)
        loss.backward()
        opt.step()


# ------------------------------------------------------------------------------ optimizers
def _one_group(model: Net) -> list:
    return list(model.parameters())


def _two_groups(model: Net) -> list:
    first = [model.emb.weight, model.fc1.weight, model.fc1.bias, model.norm.weight, model.norm.bias]
    second = [model.bn.weight, model.bn.bias, model.fc2.weight, model.fc2.bias,
              model.aux.weight, model.aux.bias]
    return [{"params": first}, {"params": second, "lr": 0.003, "weight_decay": 0.1}]


OPTIMIZERS = {
    "sgd_momentum": lambda m, lr: torch.optim.SGD(_one_group(m), lr=lr, momentum=0.9),
    "sgd_nesterov_wd": lambda m, lr: torch.optim.SGD(_one_group(m), lr=lr, momentum=0.8, nesterov=True,
                                                     weight_decay=0.01, dampening=0.0),
    "adam": lambda m, lr: torch.optim.Adam(_one_group(m), lr=lr),
    "adam_amsgrad": lambda m, lr: torch.optim.Adam(_one_group(m), lr=lr, amsgrad=True),
    "adamw": lambda m, lr: torch.optim.AdamW(_one_group(m), lr=lr, weight_decay=0.05),
    "adamw_two_groups": lambda m, lr: torch.optim.AdamW(_two_groups(m), lr=lr, weight_decay=0.01),
    "sgd_two_groups": lambda m, lr: torch.optim.SGD(_two_groups(m), lr=lr, momentum=0.9),
}


# ------------------------------------------------------------------------------ comparisons
def named_state(opt: torch.optim.Optimizer, model: nn.Module) -> tuple[list, dict]:
    """The optimizer's state_dict keyed by parameter name: (groups, state by name)."""
    names = {id(p): n for n, p in model.named_parameters()}
    sd = opt.state_dict()
    groups = []
    state = {}
    for live, saved in zip(opt.param_groups, sd["param_groups"]):
        pnames = [names[id(p)] for p in live["params"]]
        hyper = {k: v for k, v in saved.items() if k not in ("params", "param_names")}
        groups.append((sorted(pnames), hyper))
        for pname, pid in zip(pnames, saved["params"]):
            if pid in sd["state"]:
                state[pname] = sd["state"][pid]
    return groups, state


def assert_values_equal(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype, f"{where}: {a.dtype} vs {b.dtype}"
        assert a.shape == b.shape, where
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
        assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_optimizers_equal(opt_a, model_a, opt_b, model_b) -> None:
    groups_a, state_a = named_state(opt_a, model_a)
    groups_b, state_b = named_state(opt_b, model_b)
    assert len(groups_a) == len(groups_b)
    for (pa, ha), (pb, hb) in zip(groups_a, groups_b):
        assert pa == pb
        assert set(ha) == set(hb)
        for k in ha:
            assert_values_equal(ha[k], hb[k], f"hyperparameter {k}")
    assert set(state_a) == set(state_b)
    assert state_a, "expected some optimizer state"
    for name in state_a:
        assert set(state_a[name]) == set(state_b[name]), name
        for slot in state_a[name]:
            assert_values_equal(state_a[name][slot], state_b[name][slot], f"{name}/{slot}")


def assert_raw_state_dicts_equal(opt_a, opt_b) -> None:
    """Integer-keyed torch state_dicts, for optimizers built over parameters in the same order."""
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sorted(sa["state"]) == sorted(sb["state"])
    for pid in sa["state"]:
        assert set(sa["state"][pid]) == set(sb["state"][pid])
        for slot, value in sa["state"][pid].items():
            assert_values_equal(value, sb["state"][pid][slot], f"state[{pid}][{slot}]")
    assert len(sa["param_groups"]) == len(sb["param_groups"])
    for ga, gb in zip(sa["param_groups"], sb["param_groups"]):
        assert set(ga) == set(gb)
        for k in ga:
            assert_values_equal(ga[k], gb[k], f"param_groups.{k}")


def assert_models_equal(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), f"{name} differs"


def assert_models_differ(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[n], sb[n]) for n in sa if sa[n].is_floating_point())


# ------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_resume_matches_uninterrupted(tmp_path, kind):
    make_opt = OPTIMIZERS[kind]
    model_a = make_model(0)
    opt_a = make_opt(model_a, 0.01)
    train(model_a, opt_a, range(N_BEFORE), use_aux=False)

    aux_ids = {id(model_a.aux.weight), id(model_a.aux.bias)}
    stateful = {id(p) for p in opt_a.state}
    assert aux_ids.isdisjoint(stateful), "aux params must have no state before the save"
    assert stateful, "the other params must have state"

    art = lamina.save(model_a, tmp_path / "snap", optimizer=opt_a, training={"step": N_BEFORE})
    assert art.optimizer is not None
    assert "head.weight" in art.aliases
    saved_params = {s.param for s in art.optimizer.state}
    assert "aux.weight" not in saved_params and "fc1.weight" in saved_params

    model_b = make_model(1)
    assert_models_differ(model_a, model_b)
    opt_b = make_opt(model_b, 0.5)  # different lr: the snapshot's hyperparameters must win
    reopened = lamina.open(tmp_path / "snap")
    report = reopened.load_into(model_b)
    assert report.ok
    reopened.load_optimizer(opt_b, model_b)
    # Tying survives the load: the module's own tie is untouched, values equal.
    assert model_b.head.weight is model_b.emb.weight

    assert_models_equal(model_a, model_b)
    assert_optimizers_equal(opt_a, model_a, opt_b, model_b)
    assert_raw_state_dicts_equal(opt_a, opt_b)

    later = range(N_BEFORE, N_BEFORE + M_AFTER)
    train(model_a, opt_a, later, use_aux=True)
    train(model_b, opt_b, later, use_aux=True)
    assert_models_equal(model_a, model_b)
    assert_optimizers_equal(opt_a, model_a, opt_b, model_b)
    assert_raw_state_dicts_equal(opt_a, opt_b)
    # The aux branch now has state on both sides.
    assert id(model_b.aux.weight) in {id(p) for p in opt_b.state}


def test_two_groups_hyperparameters_restored_per_group(tmp_path):
    model = make_model(0)
    opt = OPTIMIZERS["adamw_two_groups"](model, 0.01)
    train(model, opt, range(3), use_aux=False)
    art = lamina.save(model, tmp_path / "snap", optimizer=opt)
    groups = art.optimizer.param_groups
    assert len(groups) == 2
    assert groups[0].hyperparameters["lr"] == 0.01 and groups[1].hyperparameters["lr"] == 0.003
    assert groups[1].hyperparameters["weight_decay"] == 0.1
    assert "aux.weight" in groups[1].params

    model2 = make_model(7)
    opt2 = torch.optim.AdamW(_two_groups(model2), lr=1.0, weight_decay=0.0)
    art.load_into(model2)
    art.load_optimizer(opt2, model2)
    assert opt2.param_groups[0]["lr"] == 0.01 and opt2.param_groups[0]["weight_decay"] == 0.01
    assert opt2.param_groups[1]["lr"] == 0.003 and opt2.param_groups[1]["weight_decay"] == 0.1
    assert isinstance(opt2.param_groups[0]["betas"], tuple)
    assert id(model2.aux.weight) not in {id(p) for p in opt2.state}


def test_optimizer_built_in_different_order_restores_by_name(tmp_path):
    model_a = make_model(0)
    opt_a = torch.optim.Adam(list(model_a.parameters()), lr=0.01)
    train(model_a, opt_a, range(N_BEFORE), use_aux=True)
    lamina.save(model_a, tmp_path / "snap", optimizer=opt_a)

    model_b = make_model(3)
    opt_b = torch.optim.Adam(list(reversed(list(model_b.parameters()))), lr=0.01)
    art = lamina.open(tmp_path / "snap")
    art.load_into(model_b)
    art.load_optimizer(opt_b, model_b)

    # The raw integer-keyed state differs in order, but by name it must be identical.
    assert opt_b.param_groups[0]["params"][0] is list(model_b.parameters())[-1]
    assert_optimizers_equal(opt_a, model_a, opt_b, model_b)
    # Specifically: the state held for each parameter object matches its namesake's.
    names_b = {id(p): n for n, p in model_b.named_parameters()}
    params_a = dict(model_a.named_parameters())
    for p, st in opt_b.state.items():
        assert torch.equal(st["exp_avg"], opt_a.state[params_a[names_b[id(p)]]]["exp_avg"])

    later = range(N_BEFORE, N_BEFORE + M_AFTER)
    train(model_a, opt_a, later, use_aux=True)
    train(model_b, opt_b, later, use_aux=True)
    assert_models_equal(model_a, model_b)
    assert_optimizers_equal(opt_a, model_a, opt_b, model_b)


def test_optimizer_from_named_parameters(tmp_path):
    model_a = make_model(0)
    opt_a = torch.optim.Adam(model_a.named_parameters(), lr=0.01)
    assert "param_names" in opt_a.state_dict()["param_groups"][0]
    train(model_a, opt_a, range(N_BEFORE), use_aux=True)
    art = lamina.save(model_a, tmp_path / "snap", optimizer=opt_a)
    assert set(art.optimizer.param_groups[0].params) == {n for n, _ in model_a.named_parameters()}

    # Restore into an optimizer also built from named_parameters, in reverse order.
    model_b = make_model(5)
    opt_b = torch.optim.Adam(list(reversed(list(model_b.named_parameters()))), lr=0.2)
    art.load_into(model_b)
    art.load_optimizer(opt_b, model_b)
    names_b = opt_b.state_dict()["param_groups"][0]["param_names"]
    assert names_b == [n for n, _ in reversed(list(model_b.named_parameters()))]
    assert_optimizers_equal(opt_a, model_a, opt_b, model_b)

    # And into a plain one built from parameters().
    model_c = make_model(6)
    opt_c = torch.optim.Adam(model_c.parameters(), lr=0.2)
    art.load_into(model_c)
    art.load_optimizer(opt_c, model_c)
    assert_optimizers_equal(opt_a, model_a, opt_c, model_c)

    later = range(N_BEFORE, N_BEFORE + M_AFTER)
    for m, o in ((model_a, opt_a), (model_b, opt_b), (model_c, opt_c)):
        train(m, o, later, use_aux=True)
    assert_models_equal(model_a, model_b)
    assert_models_equal(model_a, model_c)


def test_saved_state_is_keyed_by_parameter_name(tmp_path):
    """Optimizer state is stored under parameter names, with its slots listed."""
    model = make_model(0)
    opt = torch.optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    train(model, opt, range(2), use_aux=True)
    art = lamina.save(model, tmp_path / "snap", optimizer=opt)
    assert {s.param for s in art.optimizer.state} == {n for n, _ in model.named_parameters()}
    assert "momentum_buffer" in art.optimizer.slots


# ------------------------------------------------------------------------------ mismatches
def _trained_snapshot(tmp_path, make_opt=OPTIMIZERS["adamw_two_groups"]):
    model = make_model(0)
    opt = make_opt(model, 0.01)
    train(model, opt, range(3), use_aux=True)
    return lamina.save(model, tmp_path / "snap", optimizer=opt), model, opt


def test_load_optimizer_with_fewer_param_groups_raises(tmp_path):
    art, _, _ = _trained_snapshot(tmp_path)
    model2 = make_model(1)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.01)  # one group, snapshot has two
    before = opt2.state_dict()
    with pytest.raises(lamina.StateMismatchError):
        art.load_optimizer(opt2, model2)
    after = opt2.state_dict()
    assert after["state"] == {} and after["param_groups"] == before["param_groups"]


def test_load_optimizer_with_different_group_membership_raises(tmp_path):
    art, _, _ = _trained_snapshot(tmp_path)
    model2 = make_model(1)
    groups = _two_groups(model2)
    moved = groups[1]["params"].pop()  # aux.bias moves from group 1 to group 0
    groups[0]["params"].append(moved)
    opt2 = torch.optim.AdamW(groups, lr=0.01)
    with pytest.raises(lamina.StateMismatchError) as info:
        art.load_optimizer(opt2, model2)
    assert "aux.bias" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_load_optimizer_with_missing_param_raises(tmp_path):
    art, _, _ = _trained_snapshot(tmp_path, OPTIMIZERS["adam"])
    model2 = make_model(1)
    opt2 = torch.optim.Adam([p for n, p in model2.named_parameters() if n != "fc2.bias"], lr=0.01)
    with pytest.raises(lamina.StateMismatchError):
        art.load_optimizer(opt2, model2)


def test_load_optimizer_with_foreign_tensor_raises(tmp_path):
    art, _, _ = _trained_snapshot(tmp_path, OPTIMIZERS["adam"])
    model2 = make_model(1)
    params = list(model2.parameters())
    params[-1] = nn.Parameter(torch.zeros_like(params[-1]))  # not a parameter of model2
    opt2 = torch.optim.Adam(params, lr=0.01)
    with pytest.raises(lamina.StateMismatchError):
        art.load_optimizer(opt2, model2)


def test_load_optimizer_without_saved_optimizer_raises(tmp_path):
    model = make_model(0)
    art = lamina.save(model, tmp_path / "snap")
    assert art.optimizer is None
    model2 = make_model(1)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.01)
    with pytest.raises(lamina.StateMismatchError):
        art.load_optimizer(opt2, model2)
    with pytest.raises(lamina.StateMismatchError):
        lamina.open(tmp_path / "snap").load_optimizer(opt2, model2)


def test_no_lr_scheduler_needed(tmp_path):
    """Restoring needs nothing but the optimizer: the lr comes from the snapshot's hyperparameters
    (here one a scheduler had changed before the save), no scheduler object is involved."""
    model = make_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for step in range(3):
        train(model, opt, range(step, step + 1), use_aux=True)
        sched.step()
    lr_now = opt.param_groups[0]["lr"]
    assert lr_now == pytest.approx(0.1 * 0.5**3)
    art = lamina.save(model, tmp_path / "snap", optimizer=opt)

    model2 = make_model(1)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    art.load_into(model2)
    art.load_optimizer(opt2, model2)
    assert opt2.param_groups[0]["lr"] == lr_now
    train(model, opt, range(3, 6), use_aux=True)
    train(model2, opt2, range(3, 6), use_aux=True)
    assert_models_equal(model, model2)


# ------------------------------------------------------------------------------ load_into
class Small(nn.Module):
    def __init__(self, hidden: int = 4, extra: bool = False, head: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(3, hidden)
        self.norm = nn.BatchNorm1d(hidden)
        if head:
            self.head = nn.Linear(hidden, 2)
        if extra:
            self.extra = nn.Linear(2, 2)


def _clone_state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def test_load_into_strict_wrong_shape_raises_and_loads_nothing(tmp_path):
    torch.manual_seed(0)
    src = Small(hidden=4)
    with torch.no_grad():
        src.norm.running_mean.fill_(3.0)
    art = lamina.save(src, tmp_path / "snap")

    torch.manual_seed(1)
    dst = Small(hidden=4)
    dst.head = nn.Linear(4, 3)  # wrong shape: [3, 4] vs [2, 4]
    before = _clone_state(dst)
    with pytest.raises(lamina.StateMismatchError) as info:
        art.load_into(dst, strict=True)
    err = info.value
    assert isinstance(err.report, lamina.LoadReport)
    assert {m.name for m in err.report.mismatched} == {"head.weight", "head.bias"}
    after = _clone_state(dst)
    assert list(before) == list(after)
    for k in before:
        assert torch.equal(before[k], after[k]), f"{k} was modified by a failed strict load"
    # Matching tensors were not loaded either.
    assert not torch.equal(dst.fc.weight, src.fc.weight)


def test_load_into_strict_missing_or_unexpected_raises(tmp_path):
    torch.manual_seed(0)
    art = lamina.save(Small(), tmp_path / "snap")
    torch.manual_seed(1)
    for dst in (Small(extra=True), Small(head=False)):
        before = _clone_state(dst)
        with pytest.raises(lamina.StateMismatchError):
            art.load_into(dst)
        for k, v in _clone_state(dst).items():
            assert torch.equal(before[k], v)


def test_load_into_non_strict_reports_and_loads_matching(tmp_path):
    torch.manual_seed(0)
    src = Small(hidden=4, head=True)
    src.train()
    src.norm(torch.randn(5, 4))  # non-trivial running stats and num_batches_tracked
    art = lamina.save(src, tmp_path / "snap")

    torch.manual_seed(1)
    dst = Small(hidden=4, head=False, extra=True)  # missing extra.*, unexpected head.*
    dst.fc = nn.Linear(3, 4, dtype=torch.float64)  # dtype mismatch on fc.*
    fc_before = _clone_state(dst.fc)
    extra_before = _clone_state(dst.extra)
    report = art.load_into(dst, strict=False)

    assert isinstance(report, lamina.LoadReport)
    assert not report.ok
    assert sorted(report.missing) == ["extra.bias", "extra.weight"]
    assert sorted(report.unexpected) == ["head.bias", "head.weight"]
    mism = {m.name: m for m in report.mismatched}
    assert set(mism) == {"fc.bias", "fc.weight"}
    assert isinstance(mism["fc.weight"], lamina.TensorMismatch)
    assert mism["fc.weight"].snapshot_dtype == "F32" and mism["fc.weight"].module_dtype == "F64"
    assert mism["fc.weight"].snapshot_shape == (4, 3) and mism["fc.weight"].module_shape == (4, 3)
    assert sorted(report.loaded) == sorted(
        ["norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"])

    src_state = src.state_dict()
    for name in report.loaded:
        assert torch.equal(dst.state_dict()[name], src_state[name]), name
    assert int(dst.norm.num_batches_tracked) == 1
    for k, v in _clone_state(dst.fc).items():
        assert torch.equal(fc_before[k], v)
    for k, v in _clone_state(dst.extra).items():
        assert torch.equal(extra_before[k], v)


def test_load_into_non_strict_shape_mismatch(tmp_path):
    torch.manual_seed(0)
    src = Small(hidden=4)
    art = lamina.save(src, tmp_path / "snap")
    torch.manual_seed(1)
    dst = Small(hidden=4)
    dst.head = nn.Linear(4, 5)
    head_before = _clone_state(dst.head)
    report = art.load_into(dst, strict=False)
    assert report.missing == [] and report.unexpected == []
    assert {m.name: m.module_shape for m in report.mismatched} == {"head.weight": (5, 4), "head.bias": (5,)}
    assert torch.equal(dst.fc.weight, src.fc.weight)
    assert torch.equal(dst.head.weight, head_before["weight"])
