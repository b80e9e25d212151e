"""CheckpointManager (format_spec/repository.md §5, §6, §8): exact resumption over an epoch
boundary, background saves, retention and garbage collection, frozen-layer deduplication, save
errors, crash safety under SIGKILL, S3, bad input and the ``lamina checkpoints list`` CLI.

Everything is real: torch training on CPU, files on disk, a moto S3 server, subprocesses killed
with SIGKILL. Expected values come from an uninterrupted run computed in the test, from the
retention policy applied in the test, or from the checkpoints' own manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cli_helpers import assert_clean_cli_error, cli_parallel, wait_for_line
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lamina
from lamina import CheckpointManager, Repo
from lamina.training.checkpoints import read_policy

TESTS_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote reads cache blobs under this test's directory, never in the user's cache."""
    monkeypatch.setenv("LAMINA_CACHE", str(tmp_path / "cache"))


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_equal(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor]) -> None:
    """Same names, dtypes, shapes and bits."""
    assert sorted(got) == sorted(want)
    for name, tensor in want.items():
        assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name


def states_differ(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def clone_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A deep copy of ``optimizer.state_dict()`` (tensors cloned)."""
    sd = optimizer.state_dict()
    state = {pid: {slot: v.detach().clone() if isinstance(v, torch.Tensor) else v for slot, v in slots.items()}
             for pid, slots in sd["state"].items()}
    groups = [dict(g) for g in sd["param_groups"]]
    return {"state": state, "param_groups": groups}


def assert_optimizer_state_equal(got: Mapping[str, Any], want: Mapping[str, Any]) -> None:
    """Same hyperparameters and, per parameter and slot, the same values (tensors bit for bit)."""
    assert got["param_groups"] == want["param_groups"]
    assert got["state"].keys() == want["state"].keys()
    for pid, slots in want["state"].items():
        assert got["state"][pid].keys() == slots.keys(), pid
        for slot, value in slots.items():
            other = got["state"][pid][slot]
            if isinstance(value, torch.Tensor):
                assert isinstance(other, torch.Tensor) and other.dtype == value.dtype, (pid, slot)
                assert torch.equal(other, value), (pid, slot)
            else:
                assert other == value, (pid, slot)


def blob_set(repo: Repo) -> set[str]:
    """The sha256 of every blob the store holds."""
    return {p.rsplit("/", 1)[1] for p in repo.store.list("blobs/")}


def checkpoint_blobs(repo: Repo, step: int) -> set[str]:
    """Every blob checkpoint ``step`` uses: its manifest blob and each file its manifest lists."""
    revision = repo.revision(f"step-{step}")
    manifest = repo.open(f"step-{step}").manifest
    return {revision.snapshot} | {f.digest[1] for f in manifest.files}


def assert_only_kept_blobs(repo: Repo, steps: list[int]) -> None:
    """The store holds exactly the blobs and revisions of the listed checkpoints, nothing else."""
    wanted: set[str] = set()
    for step in steps:
        wanted |= checkpoint_blobs(repo, step)
    assert blob_set(repo) == wanted
    revisions = {p.rsplit("/", 1)[1] for p in repo.store.list("revisions/")}
    assert revisions == {repo.revision(f"step-{s}").id for s in steps}


def temporaries(root: Path) -> list[Path]:
    """Temporary files of killed writers left under a local repository."""
    return [p for p in root.rglob(".lamina-*") if p.is_file() and ".lamina-locks" not in p.parts]


class Small(nn.Module):
    """Two Linear layers (optionally of another hidden size, to make shapes disagree)."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def train_small(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> float:
    """One optimizer step on a batch drawn from ``seed``; returns the loss."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def small_setup(seed: int, hidden: int = 8) -> tuple[Small, torch.optim.Optimizer]:
    """A Small model and an AdamW that already holds state (one step taken)."""
    torch.manual_seed(seed)
    model = Small(hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    train_small(model, optimizer, seed + 1)
    return model, optimizer


# ---------------------------------------------------------------------------- 1. exact resumption
N_SAMPLES, BATCH, EPOCHS = 40, 8, 3
STEPS_PER_EPOCH = N_SAMPLES // BATCH


class DropNet(nn.Module):
    """An MLP with Dropout (draws from torch's global generator at every training step)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.fc1(x))))


def make_scheduler(kind: str, optimizer: torch.optim.Optimizer) -> Any:
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.7)
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=7, eta_min=1e-4)
    assert kind == "onecycle"
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=EPOCHS * STEPS_PER_EPOCH)


@dataclass
class Run:
    model: DropNet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: DataLoader


def build_run(kind: str) -> Run:
    """Model, AdamW, scheduler and a shuffling DataLoader, initialised from the global generators."""
    g = torch.Generator().manual_seed(7)
    data = TensorDataset(torch.randn(N_SAMPLES, 6, generator=g), torch.randint(0, 3, (N_SAMPLES,), generator=g))
    model = DropNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.05)
    return Run(model, optimizer, make_scheduler(kind, optimizer), DataLoader(data, batch_size=BATCH, shuffle=True))


def train_epoch(run: Run) -> list[float]:
    """One epoch; the loss depends on torch (shuffle, Dropout), numpy and Python draws."""
    run.model.train()
    losses = []
    for x, y in run.loader:
        noise = torch.from_numpy(np.random.standard_normal(tuple(x.shape)).astype(np.float32))
        weight = 1.0 + random.random()
        run.optimizer.zero_grad()
        loss = nn.functional.cross_entropy(run.model(x + 0.05 * noise), y) * weight
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "background"])
@pytest.mark.parametrize("split", [1, 2])
@pytest.mark.parametrize("kind", ["step", "cosine", "onecycle"])
def test_resume_over_an_epoch_boundary_is_exact(kind: str, split: int, blocking: bool, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Save at the end of epoch ``split``, perturb every RNG, rebuild and restore: the remaining epochs'
    losses and the final model/optimizer/scheduler states equal an uninterrupted run bit for bit; a
    background save holds the values at save() time although training mutates them meanwhile."""
    seed_everything(0)
    reference = build_run(kind)
    ref_losses = [loss for _ in range(EPOCHS) for loss in train_epoch(reference)]

    seed_everything(0)
    run = build_run(kind)
    losses = [loss for _ in range(split) for loss in train_epoch(run)]
    assert losses == ref_losses[: len(losses)]
    step = split * STEPS_PER_EPOCH
    mgr = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    at_save = clone_state(run.model)
    opt_at_save = clone_optimizer_state(run.optimizer)
    sched_at_save = dict(run.scheduler.state_dict())
    metrics = {"loss": losses[-1]}

    if blocking:
        mgr.save(step, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, epoch=split,
                 metrics=metrics)
    else:
        gate, entered = threading.Event(), threading.Event()
        original = mgr.repo.store.write

        def gated_write(path: str, data: Any) -> int:
            entered.set()
            assert gate.wait(60), "the test never released the background write"
            return original(path, data)

        monkeypatch.setattr(mgr.repo.store, "write", gated_write)
        mgr.save(step, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler, epoch=split,
                 metrics=metrics, blocking=False)
        assert entered.wait(30), "the background save never started writing"
        assert f"step-{step}" not in mgr.repo.tags()  # save() returned while the write is held back
        losses += train_epoch(run)  # training goes on, changing parameters and optimizer state in place
        assert states_differ(clone_state(run.model), at_save)
        gate.set()
        mgr.wait()
        monkeypatch.setattr(mgr.repo.store, "write", original)
        while len(losses) < len(ref_losses):
            losses += train_epoch(run)
        assert losses == ref_losses  # the background save did not disturb the run
        assert_state_equal(clone_state(run.model), clone_state(reference.model))

    assert mgr.steps() == [step]
    seed_everything(12345)  # a different process: other RNG states, other initial weights
    resumed = build_run(kind)
    assert states_differ(clone_state(resumed.model), at_save)
    state = mgr.restore(resumed.model, resumed.optimizer, scheduler=resumed.scheduler)
    assert (state.step, state.epoch, dict(state.metrics)) == (step, split, metrics)
    assert set(state.restored) == {"model", "optimizer", "scheduler", "rng"}
    assert state.revision == mgr.repo.tags()[f"step-{step}"]
    assert_state_equal(clone_state(resumed.model), at_save)
    assert_optimizer_state_equal(clone_optimizer_state(resumed.optimizer), opt_at_save)
    assert resumed.scheduler.state_dict() == sched_at_save

    resumed_losses = [loss for _ in range(EPOCHS - split) for loss in train_epoch(resumed)]
    assert resumed_losses == ref_losses[step:]
    assert_state_equal(clone_state(resumed.model), clone_state(reference.model))
    assert_optimizer_state_equal(clone_optimizer_state(resumed.optimizer), clone_optimizer_state(reference.optimizer))
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()


# ---------------------------------------------------------------------------- 2. retention
def retention_reasons(listed: Mapping[int, Mapping[str, float]], policy: Mapping[str, Any]) -> dict[int, tuple[str, ...]]:
    """Which rules of ``policy`` keep each listed step (repository.md §8, the manager's docs)."""
    steps = sorted(listed)
    keep_last, keep_every = policy.get("keep_last"), policy.get("keep_every")
    metric, mode = policy.get("best_metric"), policy.get("mode", "min")
    last = set(steps if keep_last is None else steps[-keep_last:])
    best_step = None
    scored = {s: m[metric] for s, m in listed.items() if metric is not None and metric in m}
    if scored:
        best = min(scored.values()) if mode == "min" else max(scored.values())
        best_step = max(s for s, v in scored.items() if v == best)
    return {s: tuple(name for name, keeps in (("last", s in last), ("every", bool(keep_every) and s % keep_every == 0),
                                              ("best", s == best_step)) if keeps) for s in steps}


def apply_saves(history: list[tuple[int, dict[str, float]]], policy: Mapping[str, Any]) -> dict[int, tuple[str, ...]]:
    """The checkpoints left (and why) after saving ``history`` in order, retention after each save."""
    listed: dict[int, dict[str, float]] = {}
    for step, metrics in history:
        listed[step] = metrics
        reasons = retention_reasons(listed, policy)
        listed = {s: m for s, m in listed.items() if reasons[s]}
    return retention_reasons(listed, policy)


def metric_history(steps: list[int], seed: int) -> list[tuple[int, dict[str, float]]]:
    """Per-step metrics with the best loss and best accuracy early on, and one step without metrics."""
    rng = np.random.default_rng(seed)
    loss = rng.uniform(1.0, 2.0, len(steps))
    acc = rng.uniform(0.2, 0.8, len(steps))
    loss[1] = loss.min() - 0.5
    acc[2] = acc.max() + 0.1
    history = [(s, {"loss": float(l_), "acc": float(a)}) for s, l_, a in zip(steps, loss, acc)]
    history[6] = (history[6][0], {})
    return history


POLICIES = [
    {"keep_last": 2},
    {"keep_last": 2, "keep_every": 3, "best_metric": "loss", "mode": "min"},
    {"keep_last": 1, "best_metric": "acc", "mode": "max"},
    {"keep_every": 4, "best_metric": "loss"},
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()))
def test_retention_keeps_exactly_what_the_policy_says(policy: dict[str, Any], tmp_path: Path) -> None:
    """After every save, steps() is the policy's set; kept_by, latest/best step and sizes match; dropped
    checkpoints' blobs and revisions are collected; every kept checkpoint restores its own weights."""
    history = metric_history(list(range(1, 11)), seed=3)
    mgr = CheckpointManager(tmp_path / "ckpt", **policy)
    model, optimizer = small_setup(0)
    saved: dict[int, dict[str, torch.Tensor]] = {}
    for i, (step, metrics) in enumerate(history):
        train_small(model, optimizer, 100 + step)
        saved[step] = clone_state(model)
        mgr.save(step, model=model, optimizer=optimizer, metrics=metrics, epoch=step // 4)
        expected = apply_saves(history[: i + 1], policy)
        assert mgr.steps() == sorted(expected), step
        assert_only_kept_blobs(mgr.repo, mgr.steps())

    expected = apply_saves(history, policy)
    if "keep_last" not in policy:
        assert sorted(expected) == [s for s, _ in history]  # keep_last=None keeps every checkpoint
    else:
        assert len(expected) < len(history)  # the policy really dropped some
    assert mgr.latest_step() == max(expected)
    best = [s for s, why in expected.items() if "best" in why]
    assert mgr.best_step() == (best[0] if best else None)
    metrics_of = dict(history)
    rows = mgr.checkpoints()
    assert [c.step for c in rows] == sorted(expected)
    previous: set[str] = set()
    for c in rows:
        manifest = mgr.repo.open(f"step-{c.step}").manifest
        assert c.kept_by == expected[c.step]
        assert dict(c.metrics) == metrics_of[c.step] and c.epoch == c.step // 4
        assert c.revision == mgr.repo.tags()[f"step-{c.step}"]
        assert c.size == sum(f.size for f in manifest.files)
        assert c.new_bytes == sum(f.size for f in manifest.files if f.digest not in previous)
        previous = {f.digest for f in manifest.files}
    assert read_policy(mgr.repo) == mgr.policy
    for step in expected:
        fresh, fresh_opt = small_setup(50)
        assert mgr.restore(fresh, fresh_opt, step=step).step == step
        assert_state_equal(clone_state(fresh), saved[step])
    assert mgr.repo.fsck(full=True).ok


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    """Saving a step that exists moves its tag to the new weights and leaves none of the old one's blobs."""
    mgr = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    model, optimizer = small_setup(0)
    for step in (1, 2, 3):
        train_small(model, optimizer, step)
        mgr.save(step, model=model, optimizer=optimizer, metrics={"loss": float(step)})
    old_revision = mgr.repo.tags()["step-3"]
    old_blobs = checkpoint_blobs(mgr.repo, 3)
    train_small(model, optimizer, 33)
    replaced = clone_state(model)
    mgr.save(3, model=model, optimizer=optimizer, metrics={"loss": 0.5})
    assert mgr.steps() == [2, 3]
    assert mgr.repo.tags()["step-3"] != old_revision
    assert dict(mgr.checkpoints()[-1].metrics) == {"loss": 0.5}
    fresh, fresh_opt = small_setup(9)
    mgr.restore(fresh, fresh_opt)
    assert_state_equal(clone_state(fresh), replaced)
    assert mgr.repo.fsck().ok
    assert old_blobs - checkpoint_blobs(mgr.repo, 3) - checkpoint_blobs(mgr.repo, 2)  # the old one had its own
    assert_only_kept_blobs(mgr.repo, [2, 3])


# ---------------------------------------------------------------------------- 3. frozen backbone
class Frozen(nn.Module):
    """A large backbone (frozen: whole modules without gradients) and a small trainable head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64))
        self.head = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def test_frozen_backbone_is_stored_once(tmp_path: Path) -> None:
    """Across checkpoints the frozen layers' shards are one blob each, later checkpoints' new_bytes
    leave them out, and each save adds exactly the blobs its manifest does not share."""
    torch.manual_seed(0)
    model = Frozen()
    model.backbone.requires_grad_(False)
    frozen_layers = {name for name, m in model.named_modules()
                     if isinstance(m, nn.Linear) and not any(p.requires_grad for p in m.parameters())}
    assert frozen_layers == {"backbone.0", "backbone.2"}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.01)
    mgr = CheckpointManager(tmp_path / "ckpt")
    manifests = []
    for step in range(1, 5):
        g = torch.Generator().manual_seed(step)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(16, 32, generator=g)), torch.randint(0, 3, (16,), generator=g))
        loss.backward()
        optimizer.step()
        before = {p: mgr.repo.store.size(p) for p in mgr.repo.store.list("blobs/")}
        mgr.save(step, model=model, optimizer=optimizer, metrics={"loss": loss.item()})
        after = {p: mgr.repo.store.size(p) for p in mgr.repo.store.list("blobs/")}
        manifest = mgr.repo.open(f"step-{step}").manifest
        files = {f.digest[1]: f.size for f in manifest.files}
        snapshot = mgr.repo.revision(f"step-{step}").snapshot
        new_blobs = {p.rsplit("/", 1)[1] for p in set(after) - set(before)}
        assert new_blobs == ({sha for sha in files if all(sha not in {f.digest[1] for f in m.files} for m in manifests)}
                             | {snapshot})
        assert sum(after.values()) - sum(before.values()) == sum(files[s] for s in new_blobs - {snapshot}) + after[
            f"blobs/sha256/{snapshot[:2]}/{snapshot}"]
        manifests.append(manifest)

    def shard(manifest: Any, layer: str) -> Any:
        path = next(t.file for t in manifest.tensors if t.layer == layer)
        return next(f for f in manifest.files if f.path == path)

    for layer in frozen_layers:
        assert len({shard(m, layer).digest for m in manifests}) == 1, layer
    for layer in ("head.0", "head.2"):
        assert len({shard(m, layer).digest for m in manifests}) == len(manifests), layer
    all_files = [f for m in manifests for f in m.files]
    distinct = {f.digest: f.size for f in all_files}
    assert len(blob_set(mgr.repo)) == len(distinct) + len(manifests) < len(all_files) + len(manifests)
    frozen_bytes = sum(shard(manifests[0], layer).size for layer in frozen_layers)
    rows = mgr.checkpoints()
    assert rows[0].new_bytes == rows[0].size == sum(f.size for f in manifests[0].files)
    for previous, manifest, row in zip(manifests, manifests[1:], rows[1:]):
        shared = {f.digest for f in previous.files}
        assert row.size == sum(f.size for f in manifest.files)
        assert row.new_bytes == sum(f.size for f in manifest.files if f.digest not in shared)
        assert 0 < row.new_bytes <= row.size - frozen_bytes
    fresh = Frozen()
    mgr.restore(fresh, step=2, rng=False)
    mgr.restore(fresh)
    assert_state_equal(clone_state(fresh), clone_state(model))


# ---------------------------------------------------------------------------- 4. save errors
def failing_blob_writes(mgr: CheckpointManager, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every blob write of ``mgr``'s store raise StorageError; returns the paths tried."""
    original = mgr.repo.store.write
    tried: list[str] = []

    def write(path: str, data: Any) -> int:
        if path.startswith("blobs/"):
            tried.append(path)
            raise lamina.StorageError(f"injected failure writing {path}")
        return original(path, data)

    monkeypatch.setattr(mgr.repo.store, "write", write)
    return tried


@pytest.mark.parametrize("surface", ["save", "wait", "restore", "steps"])
def test_background_save_error_surfaces_exactly_once(surface: str, tmp_path: Path) -> None:
    """A failed background save raises its StorageError from the next save/wait/restore/steps, once;
    nothing of it is listed, the repository stays valid, and saving works again afterwards."""
    mgr = CheckpointManager(tmp_path / "ckpt", keep_last=3)
    model, optimizer = small_setup(0)
    mgr.save(1, model=model, optimizer=optimizer)
    first = clone_state(model)
    train_small(model, optimizer, 2)
    fresh, fresh_opt = small_setup(7)
    untouched = clone_state(fresh)
    calls: dict[str, Callable[[], Any]] = {
        "save": lambda: mgr.save(3, model=model, optimizer=optimizer),
        "wait": mgr.wait,
        "restore": lambda: mgr.restore(fresh, fresh_opt),
        "steps": mgr.steps,
    }
    with pytest.MonkeyPatch.context() as mp:
        tried = failing_blob_writes(mgr, mp)
        mgr.save(2, model=model, optimizer=optimizer, blocking=False)  # returns; the failure comes later
        with pytest.raises(lamina.StorageError, match="injected failure writing blobs/"):
            calls[surface]()
    assert tried
    assert_state_equal(clone_state(fresh), untouched)  # the error came before anything was restored
    mgr.wait()  # reported once: not again
    assert mgr.steps() == [1]
    assert mgr.restore(fresh, fresh_opt).step == 1
    assert_state_equal(clone_state(fresh), first)
    assert mgr.repo.fsck().ok and mgr.repo.store.list("locks/") == []
    mgr.save(2, model=model, optimizer=optimizer, blocking=False)
    assert mgr.steps() == [1, 2]


def test_blocking_save_error_raises_immediately(tmp_path: Path) -> None:
    """A blocking save whose blob writes fail raises StorageError itself, lists nothing new, and leaves
    no error pending."""
    mgr = CheckpointManager(tmp_path / "ckpt")
    model, optimizer = small_setup(0)
    mgr.save(1, model=model, optimizer=optimizer)
    train_small(model, optimizer, 2)
    with pytest.MonkeyPatch.context() as mp:
        tried = failing_blob_writes(mgr, mp)
        with pytest.raises(lamina.StorageError, match="injected failure writing blobs/"):
            mgr.save(2, model=model, optimizer=optimizer)
    assert tried
    mgr.wait()
    assert mgr.steps() == [1]
    assert mgr.repo.fsck().ok and mgr.repo.store.list("locks/") == []


# ---------------------------------------------------------------------------- 5. crash safety
KILL_STEP, CRASH_LAST_STEP, CRASH_KEEP = 4, 6, 2


def crash_model() -> nn.Module:
    """The model the crash-test child trains (also built by the parent to restore into)."""
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


def crash_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=0.05)


def checksums(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, str]:
    """sha256 of every parameter and optimizer state value (child and parent compute the same)."""
    out = {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()}
    for pid, slots in optimizer.state_dict()["state"].items():
        for slot, v in slots.items():
            data = v.detach().contiguous().numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v).encode()
            out[f"optimizer.{pid}.{slot}"] = hashlib.sha256(data).hexdigest()
    return out


CRASH_CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import torch
import lamina
from lamina.storage.base import as_chunks
from lamina.storage.local import LocalStore
from test_checkpoints import checksums, crash_model, crash_optimizer

repo_dir, side, kind, blocking = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
kill_step, last_step, keep = int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
current = [0]
counts = {}
lock = threading.Lock()

def armed(event):
    # True on the first event of this kind during the save of kill_step (the 2nd for blob writes).
    if current[0] != kill_step or event != kind:
        return False
    with lock:
        counts[event] = counts.get(event, 0) + 1
        return counts[event] == (2 if event in ("mid-blob", "after-blob") else 1)

def hang():
    print("KILL-POINT", flush=True)
    time.sleep(600)

orig_write, orig_cas, orig_delete = LocalStore.write, LocalStore.compare_and_swap, LocalStore.delete

def write(self, path, data):
    if path.startswith("blobs/") and armed("mid-blob"):
        def half_then_hang():
            first = next(iter(as_chunks(data)))
            yield first[: len(first) // 2]
            hang()
        return orig_write(self, path, half_then_hang())
    if path.startswith("revisions/") and armed("revision"):
        hang()
    n = orig_write(self, path, data)
    if path.startswith("blobs/") and armed("after-blob"):
        hang()
    return n

def compare_and_swap(self, path, expected, new):
    if path == f"refs/tags/step-{kill_step}" and new is not None and armed("tag"):
        hang()
    if path.startswith("refs/tags/") and new is None and armed("drop-tag"):
        hang()
    swapped = orig_cas(self, path, expected, new)
    if path == f"refs/tags/step-{kill_step}" and new is not None and armed("tag-set"):
        hang()
    return swapped

def delete(self, path):
    orig_delete(self, path)
    if path.startswith("blobs/") and armed("gc-delete"):
        hang()

LocalStore.write, LocalStore.compare_and_swap, LocalStore.delete = write, compare_and_swap, delete

def record(entry):
    with open(side, "a") as f:
        f.write(json.dumps(entry) + "\n")

torch.manual_seed(0)
model = crash_model()
optimizer = crash_optimizer(model)
mgr = lamina.CheckpointManager(repo_dir, keep_last=keep)
g = torch.Generator().manual_seed(1)
pending = None
for step in range(1, last_step + 1):
    x, y = torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)
    optimizer.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    optimizer.step()  # with a background save pending, this changes what it is writing
    if pending is not None:
        mgr.wait()
        record({"step": pending, "phase": "saved"})
        pending = None
    record({"step": step, "phase": "before", "sums": checksums(model, optimizer)})
    current[0] = step
    mgr.save(step, model=model, optimizer=optimizer, metrics={"loss": loss.item()}, blocking=blocking)
    if blocking:
        record({"step": step, "phase": "saved"})
    else:
        pending = step
mgr.wait()
print("DONE", flush=True)
"""


@dataclass(frozen=True)
class KillPoint:
    """Where the child is killed during the save of KILL_STEP, and what that implies for listing."""

    name: str
    blocking: bool
    tag_set: bool  # the killed step's tag was set before the kill
    dropped: bool  # retention had deleted the oldest tag before the kill


KILL_POINTS = [
    KillPoint("mid-blob", True, False, False),     # halfway through writing the 2nd new blob
    KillPoint("after-blob", False, False, False),  # after the 2nd new blob, background save
    KillPoint("revision", True, False, False),     # every blob written, before the revision object
    KillPoint("tag", True, False, False),          # revision written, before the tag's compare-and-swap
    KillPoint("tag-set", False, True, False),      # tag set, before retention (background save)
    KillPoint("drop-tag", True, True, False),      # retention about to delete the oldest tag
    KillPoint("gc-delete", True, True, True),      # gc after deleting its first blob
]


@dataclass
class Crashed:
    repo_dir: Path
    side: Path
    returncode: int
    stderr: str


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Crashed]]:
    """One training child per kill point, all started at once, each SIGKILLed at its kill point."""
    root = tmp_path_factory.mktemp("crash")
    env = {**os.environ, "LAMINA_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    procs: dict[str, tuple[subprocess.Popen[str], Path, Path, Path]] = {}
    try:
        for point in KILL_POINTS:
            base = root / point.name
            base.mkdir()
            repo_dir, side, stderr = base / "ckpt", base / "side.jsonl", base / "stderr.txt"
            args = [sys.executable, "-c", CRASH_CHILD, str(TESTS_DIR), str(repo_dir), str(side), point.name,
                    "1" if point.blocking else "0", str(KILL_STEP), str(CRASH_LAST_STEP), str(CRASH_KEEP)]
            with open(stderr, "w") as err:  # a file, not a pipe: a chatty child cannot block on it
                procs[point.name] = (subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, text=True, env=env),
                                     repo_dir, side, stderr)
        results = {}
        for name, (proc, repo_dir, side, stderr) in procs.items():
            wait_for_line(proc, "KILL-POINT", stderr=stderr.read_text)
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            results[name] = Crashed(repo_dir, side, proc.returncode, stderr.read_text())
        yield results
    finally:
        for proc, _, _, _ in procs.values():
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.communicate(timeout=60)


def read_side(side: Path) -> tuple[dict[int, dict[str, str]], list[int]]:
    """(checksums the child recorded before each save, steps whose save returned)."""
    sums, saved = {}, []
    for line in side.read_text().splitlines():
        entry = json.loads(line)
        if entry["phase"] == "before":
            sums[entry["step"]] = entry["sums"]
        else:
            saved.append(entry["step"])
    return sums, saved


def restored_sums(mgr: CheckpointManager, step: int | None) -> tuple[int, dict[str, str]]:
    torch.manual_seed(999)
    model = crash_model()
    optimizer = crash_optimizer(model)
    state = mgr.restore(model, optimizer, step=step)
    return state.step, checksums(model, optimizer)


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: p.name)
def test_killed_save_leaves_only_complete_checkpoints(point: KillPoint, crashed: dict[str, Crashed]) -> None:
    """A training process SIGKILLed at any point of a save leaves exactly the complete checkpoints
    listed, each restoring what the child saved; fsck is clean; a new manager saves, collects the
    killed save's leftovers, and restores."""
    result = crashed[point.name]
    assert result.returncode == -signal.SIGKILL, result.stderr
    sums, saved = read_side(result.side)
    assert saved == list(range(1, KILL_STEP)) and KILL_STEP in sums  # killed during the save of KILL_STEP
    expected = saved[-CRASH_KEEP:] + ([KILL_STEP] if point.tag_set else [])
    if point.dropped:
        expected = expected[-CRASH_KEEP:]

    mgr = CheckpointManager(result.repo_dir, keep_last=CRASH_KEEP)
    repo = mgr.repo
    assert mgr.steps() == expected
    for step in expected:
        assert restored_sums(mgr, step) == (step, sums[step]), step
    assert restored_sums(mgr, None) == (expected[-1], sums[expected[-1]])
    report = repo.fsck(full=True)
    assert report.ok, report.problems
    # evidence that the kill hit where intended
    revisions = repo.store.list("revisions/")
    if point.name == "mid-blob":
        assert temporaries(result.repo_dir)
    if point.name in ("after-blob", "revision", "tag"):  # mid-blob: the other blob writes may still be in flight
        assert report.unreachable_blobs >= 1
        assert len(revisions) == len(expected) + (point.name == "tag")
    if point.name == "gc-delete":
        assert repo.store.exists("locks/gc")

    # a new run picks up from the latest complete checkpoint and saves again
    torch.manual_seed(5)
    model = crash_model()
    optimizer = crash_optimizer(model)
    assert mgr.restore(model, optimizer).step == expected[-1]
    g = torch.Generator().manual_seed(77)
    optimizer.zero_grad()
    ((model(torch.randn(4, 8, generator=g)) - 1.0) ** 2).mean().backward()
    optimizer.step()
    nxt = KILL_STEP + 1
    mgr.save(nxt, model=model, optimizer=optimizer)
    after = CheckpointManager(result.repo_dir, keep_last=CRASH_KEEP)
    assert after.steps() == (expected + [nxt])[-CRASH_KEEP:]
    assert restored_sums(after, None) == (nxt, checksums(model, optimizer))
    report = repo.fsck(full=True)
    assert report.ok and report.unreachable_blobs == 0, report
    assert_only_kept_blobs(repo, after.steps())
    assert repo.store.list("locks/") == [] and temporaries(result.repo_dir) == []


# ---------------------------------------------------------------------------- 6. S3
def test_checkpoints_on_s3(s3_bucket: str, s3_options: dict[str, Any]) -> None:
    """On S3 (moto through s3fs): saves (one in the background), retention with gc, restore of the
    latest and the best, the recorded policy, and a second manager seeing the same checkpoints."""
    url = f"s3://{s3_bucket}/runs/exp1"
    policy: dict[str, Any] = {"keep_last": 2, "best_metric": "loss", "mode": "min"}
    mgr = CheckpointManager(url, storage_options=s3_options, **policy)
    model, optimizer = small_setup(0)
    history = [(s, {"loss": v}) for s, v in zip(range(1, 6), (0.9, 0.3, 0.8, 0.7, 0.6))]
    saved = {}
    for step, metrics in history:
        train_small(model, optimizer, step)
        saved[step] = clone_state(model)
        mgr.save(step, model=model, optimizer=optimizer, metrics=metrics, blocking=step != 3)
    expected = apply_saves(history, policy)
    assert mgr.steps() == sorted(expected)
    assert {c.step: c.kept_by for c in mgr.checkpoints()} == expected
    best = next(s for s, why in expected.items() if "best" in why)
    assert mgr.best_step() == best and mgr.latest_step() == max(expected)
    assert_only_kept_blobs(mgr.repo, mgr.steps())
    assert read_policy(mgr.repo) == mgr.policy
    other = CheckpointManager(url, storage_options=s3_options)  # its own policy: keep everything
    assert [(c.step, c.revision, dict(c.metrics), c.size, c.new_bytes) for c in other.checkpoints()] == [
        (c.step, c.revision, dict(c.metrics), c.size, c.new_bytes) for c in mgr.checkpoints()]
    assert {c.step: c.kept_by for c in other.checkpoints()} == retention_reasons(
        {s: dict(history)[s] for s in expected}, other.policy)
    for step in (None, best):
        fresh, fresh_opt = small_setup(11)
        state = other.restore(fresh, fresh_opt, step=step)
        assert state.step == (max(expected) if step is None else step)
        assert_state_equal(clone_state(fresh), saved[state.step])
    assert mgr.repo.fsck().ok


# ---------------------------------------------------------------------------- 7. bad input
def test_restore_into_a_mismatched_model_loads_nothing(tmp_path: Path) -> None:
    """Shapes that differ: StateMismatchError with a report naming them; model, optimizer and RNG untouched."""
    mgr = CheckpointManager(tmp_path / "ckpt")
    model, optimizer = small_setup(0)
    mgr.save(1, model=model, optimizer=optimizer)
    other, other_opt = small_setup(1, hidden=6)
    weights, opt_state, rng = clone_state(other), clone_optimizer_state(other_opt), torch.get_rng_state()
    with pytest.raises(lamina.StateMismatchError) as caught:
        mgr.restore(other, other_opt)
    report = caught.value.report
    assert isinstance(report, lamina.LoadReport) and not report.ok
    assert {m.name for m in report.mismatched} == {"fc1.weight", "fc1.bias", "fc2.weight"}
    assert "fc1.weight" in str(caught.value)
    assert_state_equal(clone_state(other), weights)
    assert_optimizer_state_equal(clone_optimizer_state(other_opt), opt_state)
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("missing", ["scheduler", "optimizer"])
def test_restore_of_a_part_not_saved_fails_before_loading(missing: str, tmp_path: Path) -> None:
    """Asking for a scheduler (NotFoundError) or optimizer (StateMismatchError) the checkpoint lacks
    fails naming it, and leaves the model, optimizer and RNG as they were."""
    mgr = CheckpointManager(tmp_path / "ckpt")
    model, optimizer = small_setup(0)
    mgr.save(1, model=model, optimizer=optimizer if missing == "scheduler" else None)
    fresh, fresh_opt = small_setup(1)
    scheduler = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2) if missing == "scheduler" else None
    weights, opt_state, rng = clone_state(fresh), clone_optimizer_state(fresh_opt), torch.get_rng_state()
    error = lamina.NotFoundError if missing == "scheduler" else lamina.StateMismatchError
    with pytest.raises(error, match=f"{missing} state") as caught:
        mgr.restore(fresh, fresh_opt, scheduler=scheduler)
    assert "step-1" in str(caught.value)
    assert_state_equal(clone_state(fresh), weights)
    assert_optimizer_state_equal(clone_optimizer_state(fresh_opt), opt_state)
    assert torch.equal(torch.get_rng_state(), rng)


def test_restore_of_a_missing_step_lists_the_steps(tmp_path: Path) -> None:
    """restore(step=absent) and restore() of an empty run are NotFoundErrors naming what exists."""
    mgr = CheckpointManager(tmp_path / "ckpt", keep_last=3)
    model, optimizer = small_setup(0)
    with pytest.raises(lamina.NotFoundError, match="no checkpoints"):
        mgr.restore(model, optimizer)
    for step in (10, 20, 30, 40):
        mgr.save(step, model=model, optimizer=optimizer)
    with pytest.raises(lamina.NotFoundError) as caught:
        mgr.restore(model, optimizer, step=10)
    message = str(caught.value)
    assert "step 10" in message and all(str(s) in message for s in mgr.steps())
    assert mgr.steps() == [20, 30, 40]


@pytest.mark.parametrize("kwargs", [
    {"keep_last": 0}, {"keep_last": -1}, {"keep_last": 1.5}, {"keep_last": True}, {"keep_last": "2"},
    {"keep_every": 0}, {"keep_every": 2.0}, {"mode": "best"}, {"mode": "MIN"}, {"mode": None},
], ids=lambda kw: ",".join(f"{k}={v!r}" for k, v in kw.items()))
def test_invalid_policy_is_a_format_error(kwargs: dict[str, Any], tmp_path: Path) -> None:
    """Invalid keep_last, keep_every or mode: FormatError naming the argument; nothing is created."""
    with pytest.raises(lamina.FormatError, match=next(iter(kwargs))):
        CheckpointManager(tmp_path / "ckpt", **kwargs)
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize("step", [-1, 1.5, True, "3", None], ids=repr)
def test_invalid_step_is_a_format_error(step: Any, tmp_path: Path) -> None:
    """A step that is not a non-negative integer: FormatError, nothing written."""
    mgr = CheckpointManager(tmp_path / "ckpt")
    model, optimizer = small_setup(0)
    with pytest.raises(lamina.FormatError, match="step"):
        mgr.save(step, model=model, optimizer=optimizer)
    assert not (tmp_path / "ckpt").exists()
    assert mgr.steps() == []


def test_extra_state_round_trip_and_arbitrary_objects(tmp_path: Path) -> None:
    """extra= holds plain data and tensors (restored as given); an arbitrary object anywhere in it is a
    FormatError naming its path and type, and nothing is written."""
    mgr = CheckpointManager(tmp_path / "ckpt")
    model, optimizer = small_setup(0)
    for bad, needles in (({"handle": object()}, ("extra.handle", "object")),
                         ({"cfg": {"ok": 1, "fn": len}}, ("extra.cfg.fn", "builtin_function_or_method")),
                         ({"items": [1, {2, 3}]}, ("extra.items[1]", "set"))):
        with pytest.raises(lamina.FormatError) as caught:
            mgr.save(1, model=model, optimizer=optimizer, extra=bad)
        assert all(n in str(caught.value) for n in needles), (needles, str(caught.value))
    assert not (tmp_path / "ckpt").exists()
    ema = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    extra = {"seen": 12, "names": ["a", "b"], "ratio": 0.25, "nested": {"flag": True, "none": None}, "ema": ema}
    mgr.save(1, model=model, optimizer=optimizer, extra=extra)
    state = mgr.restore(*small_setup(3))
    assert sorted(state.extra) == sorted(extra)
    assert {k: v for k, v in state.extra.items() if k != "ema"} == {k: v for k, v in extra.items() if k != "ema"}
    assert state.extra["ema"].dtype == ema.dtype and torch.equal(state.extra["ema"], ema)


def saved_run(where: Path, steps: tuple[int, ...] = (1, 2, 3)) -> tuple[CheckpointManager, dict[int, dict[str, torch.Tensor]]]:
    """A run with a checkpoint at each of ``steps`` (weights changing every step)."""
    mgr = CheckpointManager(where)
    model, optimizer = small_setup(0)
    saved = {}
    for step in steps:
        train_small(model, optimizer, step)
        torch.rand(step)  # advance the global generator: each checkpoint's RNG state differs
        saved[step] = clone_state(model)
        mgr.save(step, model=model, optimizer=optimizer, metrics={"loss": 1.0 / step})
    return mgr, saved


def test_garbage_tag_file_is_a_format_error(tmp_path: Path) -> None:
    """A tag file edited into garbage: FormatError naming the file from steps(), checkpoints() and restore()."""
    mgr, _ = saved_run(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "refs" / "tags" / "step-2").write_bytes(b"garbage\n")
    fresh = CheckpointManager(tmp_path / "ckpt")
    for call in (fresh.steps, fresh.checkpoints, fresh.latest_step, lambda: fresh.restore(*small_setup(1))):
        with pytest.raises(lamina.FormatError, match="refs/tags/step-2"):
            call()


@pytest.mark.parametrize("which", ["weights", "optimizer", "training", "manifest"])
def test_deleted_blob_of_the_latest_checkpoint(which: str, tmp_path: Path) -> None:
    """A blob of the latest checkpoint deleted by hand: restore() raises a clear lamina error naming
    it (IntegrityError or NotFoundError), and the previous checkpoint still restores."""
    mgr, saved = saved_run(tmp_path / "ckpt")
    manifest = mgr.repo.open("step-3").manifest
    previous = checkpoint_blobs(mgr.repo, 2)
    if which == "manifest":
        sha, names = mgr.repo.revision("step-3").snapshot, ("manifest",)
    else:
        entry = next(f for f in manifest.files if f.path.startswith(f"{which}/") and f.digest[1] not in previous)
        sha, names = entry.digest[1], (entry.path,)
    assert sha not in previous
    next((tmp_path / "ckpt" / "blobs").glob(f"*/{sha[:2]}/{sha}")).unlink()
    fresh, fresh_opt = small_setup(1)
    with pytest.raises((lamina.IntegrityError, lamina.NotFoundError)) as caught:
        mgr.restore(fresh, fresh_opt)
    message = str(caught.value)
    assert sha[:12] in message or all(n in message for n in names), message  # names the blob or its file
    assert "step-3" in message or sha[:12] in message, message
    assert mgr.restore(fresh, fresh_opt, step=2).step == 2
    assert_state_equal(clone_state(fresh), saved[2])
    assert not mgr.repo.fsck().ok


def test_stray_files_do_not_break_listing(tmp_path: Path) -> None:
    """Files a user leaves in the run directory (logs, notes, another tag) do not disturb listing,
    restoring or retention, and gc leaves them alone."""
    root = tmp_path / "ckpt"
    mgr, saved = saved_run(root)
    (root / "notes.txt").write_text("lr sweep 3\n")
    (root / "tb").mkdir()
    (root / "tb" / "events.out.tfevents").write_bytes(os.urandom(64))
    mgr.repo.tag("release", "step-1")  # a user's own tag on a checkpoint's revision
    assert mgr.steps() == [1, 2, 3]
    assert [c.step for c in mgr.checkpoints()] == [1, 2, 3]
    kept = CheckpointManager(root, keep_last=1)
    model, optimizer = small_setup(0)
    kept.save(4, model=model, optimizer=optimizer)
    assert kept.steps() == [4]
    assert (root / "notes.txt").read_text() == "lr sweep 3\n" and (root / "tb" / "events.out.tfevents").is_file()
    release = lamina.open(f"{root}@release")  # its blobs survived gc: the tag reaches them
    assert_state_equal(release.state_dict(), saved[1])
    assert kept.repo.fsck(full=True).ok


# ---------------------------------------------------------------------------- 8. CLI
def test_cli_checkpoints_list(tmp_path: Path) -> None:
    """`lamina checkpoints list` (table and --json) shows what checkpoints() returns; a path that is not
    a repository, or one with a garbage tag, is exit 2 with one error line."""
    root = tmp_path / "run"
    mgr = CheckpointManager(root, keep_last=2, keep_every=2, best_metric="loss")
    model, optimizer = small_setup(0)
    for step, loss in zip(range(1, 6), (0.5, 0.9, 0.2, 0.8, 0.7)):
        train_small(model, optimizer, step)
        mgr.save(step, model=model, optimizer=optimizer, epoch=step // 2, metrics={"loss": loss, "acc": 1 - loss})
    saved_run(tmp_path / "broken")
    (tmp_path / "broken" / "refs" / "tags" / "step-3").write_text("not a revision\n")
    plain = tmp_path / "plain"
    plain.mkdir()
    as_json, table, not_repo, missing, garbage = cli_parallel(
        ("checkpoints", "list", root, "--json"), ("checkpoints", "list", root), ("checkpoints", "list", plain),
        ("checkpoints", "list", tmp_path / "nowhere"), ("checkpoints", "list", tmp_path / "broken"))

    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["policy"] == mgr.policy
    rows = mgr.checkpoints()
    assert len(rows) < 5  # retention dropped some
    assert data["checkpoints"] == [
        {"step": c.step, "revision": c.revision, "saved": c.saved.isoformat(), "epoch": c.epoch,
         "metrics": dict(c.metrics), "size": c.size, "new_bytes": c.new_bytes, "kept_by": list(c.kept_by)}
        for c in rows]

    assert table.returncode == 0, table.stderr
    assert f"{len(rows)} checkpoint(s)" in table.stdout
    assert "keep_last=2" in table.stdout
    for c in rows:
        assert str(c.step) in table.stdout
    assert_clean_cli_error(not_repo, lamina.NotFoundError, "plain")
    assert_clean_cli_error(missing, lamina.NotFoundError, "nowhere")
    assert_clean_cli_error(garbage, lamina.FormatError, "refs/tags/step-3")


def test_retention_after_a_rollback_keeps_the_new_run(tmp_path: Path) -> None:
    """keep_last counts the most recently saved checkpoints: after restoring an earlier step and
    saving again, the new steps are kept and the abandoned higher ones dropped; latest is the newest save."""
    model = torch.nn.Linear(3, 2)
    mgr = lamina.CheckpointManager(tmp_path / "run", keep_last=2)
    for step in (100, 200, 300):
        with torch.no_grad():
            model.weight.fill_(step)
        mgr.save(step, model=model)
    assert mgr.restore(model, step=200).step == 200
    for step in (210, 220):
        with torch.no_grad():
            model.weight.fill_(step)
        mgr.save(step, model=model)
        assert step in mgr.steps() and mgr.latest_step() == step
    assert mgr.steps() == [210, 220]
    restored = torch.nn.Linear(3, 2)
    assert mgr.restore(restored).step == 220 and torch.equal(restored.weight, model.weight)


@pytest.mark.parametrize("kind", ["MultiStepLR", "CyclicLR", "SequentialLR", "ChainedScheduler",
                                  "CosineAnnealingWarmRestarts", "PolynomialLR"])
def test_schedulers_resume_exactly(tmp_path: Path, kind: str) -> None:
    """Scheduler state survives the manifest with its key types (MultiStepLR's int milestones in a
    Counter): the learning rates after restore equal the uninterrupted run's."""
    sched = torch.optim.lr_scheduler

    def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
        make = {
            "MultiStepLR": lambda: sched.MultiStepLR(opt, milestones=[3, 5], gamma=0.1),
            "CyclicLR": lambda: sched.CyclicLR(opt, 0.1, 1.0, step_size_up=2),
            "SequentialLR": lambda: sched.SequentialLR(
                opt, [sched.ConstantLR(opt, factor=0.5, total_iters=2), sched.ExponentialLR(opt, 0.9)], milestones=[2]),
            "ChainedScheduler": lambda: sched.ChainedScheduler(
                [sched.ConstantLR(opt, factor=0.5, total_iters=2), sched.ExponentialLR(opt, 0.9)]),
            "CosineAnnealingWarmRestarts": lambda: sched.CosineAnnealingWarmRestarts(opt, 3),
            "PolynomialLR": lambda: sched.PolynomialLR(opt, total_iters=8),
        }[kind]
        return model, opt, make()

    def run(model: torch.nn.Module, opt: torch.optim.Optimizer, scheduler: object, steps: int) -> list[float]:
        lrs = []
        for _ in range(steps):
            opt.zero_grad()
            model(torch.ones(1, 3)).sum().backward()
            opt.step()
            scheduler.step()  # type: ignore[attr-defined]
            lrs.append(opt.param_groups[0]["lr"])
        return lrs

    reference = run(*build(), 10)
    model, opt, scheduler = build()
    first = run(model, opt, scheduler, 4)
    mgr = lamina.CheckpointManager(tmp_path / "run")
    mgr.save(4, model=model, optimizer=opt, scheduler=scheduler)
    model2, opt2, scheduler2 = build()
    mgr.restore(model2, opt2, scheduler=scheduler2)
    assert first + run(model2, opt2, scheduler2, 6) == reference


def test_background_save_completes_when_the_script_ends(tmp_path: Path) -> None:
    """A script that ends right after save(blocking=False) still writes the checkpoint; a failing one
    reports its error on stderr instead of losing it."""
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, torch, lamina\n"
        "from lamina.storage.local import LocalStore\n"
        "mgr = lamina.CheckpointManager(sys.argv[1])\n"
        "if sys.argv[2] == 'fail':\n"
        "    original = LocalStore.write\n"
        "    def write(self, path, data):\n"
        "        if path.startswith('blobs/'):\n"
        "            raise lamina.StorageError('disk full (simulated)')\n"
        "        return original(self, path, data)\n"
        "    LocalStore.write = write\n"
        "torch.manual_seed(0)\n"
        "mgr.save(7, model=torch.nn.Linear(64, 64), blocking=False)\n")
    ok = subprocess.run([sys.executable, str(script), str(tmp_path / "ok"), "ok"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    torch.manual_seed(0)
    expected = torch.nn.Linear(64, 64)
    restored = torch.nn.Linear(64, 64)
    assert lamina.CheckpointManager(tmp_path / "ok").restore(restored).step == 7
    assert torch.equal(restored.weight, expected.weight)
    failed = subprocess.run([sys.executable, str(script), str(tmp_path / "bad"), "fail"], capture_output=True,
                            text=True)
    assert "disk full (simulated)" in failed.stderr and "never waited for" in failed.stderr
    assert lamina.CheckpointManager(tmp_path / "bad").steps() == []
