"""CheckpointManager: periodic training checkpoints in a lamina repository, with retention,
exact resumption (model, optimizer, scheduler, RNG) and background saves.

Each checkpoint is a revision tagged ``step-<n>`` and reachable only from that tag, so layers that
do not change between checkpoints (a frozen backbone) are stored once, and dropping a checkpoint
(its tag) lets ``gc`` free exactly the blobs no other checkpoint uses. The tag is written last: a
save killed at any point leaves no checkpoint listed that cannot be restored.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lamina._errors import (
    ConflictError,
    FormatError,
    LaminaError,
    NotFoundError,
    StateMismatchError,
)
from lamina.frameworks.base import LoadReport
from lamina.frameworks.rng import capture_rng, restore_rng
from lamina.repo.repository import Repo
from lamina.snapshot.training_state import pack_training_extra, unpack_training_extra

__all__ = ["CheckpointManager", "Checkpoint", "RestoredState"]

_TAG = re.compile(r"step-(0|[1-9][0-9]*)")
POLICY_FILE = "checkpoints.json"


@dataclass(frozen=True)
class Checkpoint:
    """One listed checkpoint: ``kept_by`` names the retention rules that keep it
    (``last``, ``every``, ``best``; empty = dropped at the next save); ``saved`` is when it was
    written (``last`` means the most recently saved, so after a rollback the new steps are kept)."""

    step: int
    revision: str
    saved: datetime
    epoch: int | float | None
    metrics: Mapping[str, float]
    size: int
    new_bytes: int
    kept_by: tuple[str, ...]


@dataclass(frozen=True)
class RestoredState:
    """What :meth:`CheckpointManager.restore` restored: where training stood, and the load report."""

    step: int
    epoch: int | float | None
    metrics: Mapping[str, float]
    extra: Mapping[str, Any]
    report: LoadReport
    revision: str = ""
    restored: tuple[str, ...] = field(default_factory=tuple)


class CheckpointManager:
    """Periodic checkpoints of a training run, kept in a lamina repository (local directory by
    default, or any store: ``s3://bucket/runs/exp1``).

    Args:
        location: where the checkpoints live (a repository; created on the first save).
        keep_last: keep the N most recently saved checkpoints (None: keep every checkpoint).
        keep_every: also keep every checkpoint whose step is a multiple of this.
        best_metric: also keep the checkpoint with the best value of this metric.
        mode: ``"min"`` or ``"max"``: which value of ``best_metric`` is best.
        storage_options: fsspec options for a remote location.

    Example:
        >>> import lamina, torch, tempfile
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> mgr = lamina.CheckpointManager(tempfile.mkdtemp(), keep_last=2, best_metric="loss")
        >>> for step in (10, 20, 30):
        ...     mgr.save(step, model=model, optimizer=opt, metrics={"loss": 1.0 / step})
        >>> mgr.steps(), mgr.latest_step(), mgr.best_step()
        ([20, 30], 30, 30)
        >>> mgr.restore(model, opt).step
        30
    """

    def __init__(self, location: str | os.PathLike[str], *, keep_last: int | None = None,
                 keep_every: int | None = None, best_metric: str | None = None, mode: str = "min",
                 storage_options: Mapping[str, Any] | None = None) -> None:
        for name, value in (("keep_last", keep_last), ("keep_every", keep_every)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise FormatError(f"{name} must be a positive integer or None, got {value!r}")
        if mode not in ("min", "max"):
            raise FormatError(f"mode must be 'min' or 'max', got {mode!r}")
        self.repo = Repo(location, storage_options=storage_options, cache=False)
        self.location = self.repo.location
        self.policy = {"keep_last": keep_last, "keep_every": keep_every, "best_metric": best_metric, "mode": mode}
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._atexit = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<lamina.CheckpointManager {self.location!r} {self.policy}>"

    # ------------------------------------------------------------------ saving
    def save(self, step: int, *, model: Any, optimizer: Any = None, epoch: int | float | None = None,
             metrics: Mapping[str, float] | None = None, scheduler: Any = None, extra: Mapping[str, Any] | None = None,
             rng: bool = True, blocking: bool = True, info: Any = None) -> None:
        """Save checkpoint ``step`` (tag ``step-<n>``; an existing checkpoint of that step is
        replaced), then apply retention and collect garbage.

        Args:
            step: the training step (a non-negative integer).
            model: the torch module (or a mapping of tensors).
            optimizer: a torch optimizer over ``model``'s parameters.
            epoch, metrics: recorded in the manifest's training state (metrics: name -> number).
            scheduler: an LR scheduler (anything with ``state_dict``/``load_state_dict``).
            extra: more training state (plain data and tensors, no pickles).
            rng: record the Python, numpy and torch RNG states.
            blocking: False copies the tensors to CPU memory now and writes in a background
                thread; the next ``save``, ``wait`` or ``restore`` joins it and raises its error.
        """
        self.wait()  # one save at a time; raises the previous background save's error
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise FormatError(f"step must be a non-negative integer, got {step!r}")
        from lamina.snapshot.build import collect_for_save

        collected, captured = collect_for_save(model, optimizer)
        dropped: list[str] = []
        state: dict[str, Any] = dict(extra or {})
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if rng:
            state["rng"] = capture_rng(model)
        plain_extra, files = pack_training_extra(state, dropped)
        if dropped:
            raise FormatError(f"checkpoint {step}: cannot store {', '.join(dropped)} without pickles; "
                              f"pass plain values or tensors")
        training = {"step": step, "epoch": epoch, "metrics": dict(metrics or {}), "extra": plain_extra}
        if not blocking:
            collected, captured = _copied_to_cpu(collected, captured)

        def write() -> None:
            self._write_policy()
            replaced = step in self._tags()
            self.repo.write_collected(collected, None, tag=f"step-{step}", move_tag=True, message=f"step {step}",
                                      optimizer=captured, training=training, files=files or None, info=info)
            self._apply_retention(collect=replaced)  # a replaced checkpoint's own blobs are garbage now

        if blocking:
            write()
            return

        def background() -> None:
            try:
                write()
            except BaseException as exc:  # surfaces in wait()/save()/restore(), never lost
                with self._lock:
                    self._error = exc

        self._thread = threading.Thread(target=background, name=f"lamina-checkpoint-{step}", daemon=False)
        self._thread.start()
        if not self._atexit:
            # threading's exit hooks run before concurrent.futures refuses new work (the save uses
            # thread pools), and in reverse order of registration: a save still running when the
            # script ends completes. Plain atexit runs too late for that.
            getattr(threading, "_register_atexit", atexit.register)(self._report_at_exit)
            self._atexit = True

    def _report_at_exit(self) -> None:
        """At interpreter exit: finish the background save; nobody is left to call wait(), so an
        error is printed on stderr instead of being lost."""
        try:
            self.wait()
        except BaseException as exc:  # noqa: BLE001 - reported, not swallowed
            print(f"lamina: a background checkpoint save to {self.location} failed and was never waited for: "
                  f"{type(exc).__name__}: {exc}", file=sys.stderr)

    def wait(self) -> None:
        """Join a background save; raise its error, if any."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _write_policy(self) -> None:
        data = (json.dumps(self.policy, sort_keys=True) + "\n").encode()
        try:
            current = self.repo.store.read(POLICY_FILE)
        except NotFoundError:
            current = None
        if current != data:
            self.repo.store.write(POLICY_FILE, data)

    # ------------------------------------------------------------------ listing
    def _tags(self) -> dict[int, str]:
        if not self.repo.exists():
            return {}
        return {int(m.group(1)): rev for name, rev in self.repo.tags().items() if (m := _TAG.fullmatch(name))}

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending."""
        self.wait()
        return sorted(self._tags())

    def latest_step(self) -> int | None:
        """The most recently saved checkpoint's step (after a rollback: the new run's, not the
        abandoned higher steps)."""
        listed = self.checkpoints()
        return max(listed, key=lambda c: (c.saved, c.step)).step if listed else None

    def best_step(self) -> int | None:
        """The step with the best ``best_metric`` (None without a metric or without checkpoints)."""
        return next((c.step for c in self.checkpoints() if "best" in c.kept_by), None)

    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint with its metrics, size, bytes not shared with the previous one, and
        the retention rules that keep it."""
        self.wait()
        return list_checkpoints(self.repo, self.policy)

    # ------------------------------------------------------------------ retention
    def _apply_retention(self, collect: bool = False) -> None:
        listed = list_checkpoints(self.repo, self.policy)
        doomed = [c for c in listed if not c.kept_by]
        for c in doomed:
            try:
                self.repo.delete_tag(f"step-{c.step}")
            except NotFoundError:
                pass
        if doomed or collect:
            try:
                self.repo.gc()
            except ConflictError:
                pass  # another writer is busy; the next save collects

    # ------------------------------------------------------------------ restoring
    def restore(self, model: Any, optimizer: Any = None, *, step: int | None = None, scheduler: Any = None,
                strict: bool = True, rng: bool = True) -> RestoredState:
        """Load checkpoint ``step`` (default: the latest) into ``model``, ``optimizer`` and
        ``scheduler``, and restore the RNG states, so training continues exactly.

        With ``strict`` (default) a model that does not match raises
        :class:`lamina.StateMismatchError` with a report, and nothing is loaded.

        Raises:
            NotFoundError: no checkpoint (at that step).
        """
        self.wait()
        tags = self._tags()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise NotFoundError(f"{self.location}: no checkpoints to restore")
        if step not in tags:
            raise NotFoundError(f"{self.location}: no checkpoint at step {step}; steps: {sorted(tags) or 'none'}")
        art = self.repo.open(f"step-{step}")
        where = f"{self.location}@step-{step}"
        extra = unpack_training_extra(art)
        # Everything asked for must be there before anything is loaded.
        if optimizer is not None and art.optimizer is None:
            raise StateMismatchError(f"{where}: the checkpoint holds no optimizer state; nothing was restored")
        if scheduler is not None and "scheduler" not in extra:
            raise NotFoundError(f"{where}: the checkpoint holds no scheduler state; nothing was restored")
        report = art.load_into(model, strict=strict)
        restored = ["model"]
        if optimizer is not None:
            art.load_optimizer(optimizer, model)
            restored.append("optimizer")
        if scheduler is not None:
            scheduler.load_state_dict(extra["scheduler"])
            restored.append("scheduler")
        if rng and "rng" in extra:
            restore_rng(extra["rng"], where, model)
            restored.append("rng")
        user_extra = {k: v for k, v in extra.items() if k not in ("scheduler", "rng")}
        training = art.training
        return RestoredState(step=step, epoch=training.epoch, metrics=dict(training.metrics), extra=user_extra,
                             report=report, revision=tags[step], restored=tuple(restored))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _copied_to_cpu(collected: Any, captured: Any) -> tuple[Any, Any]:
    """The same tensors copied to CPU memory now, so training may change them while a background
    thread writes (aliases stay aliases: they refer to names, not memory)."""
    def copy(source: Any) -> Any:
        return dataclasses.replace(source, obj=source.adapter.host_copy(source.obj))

    collected = dataclasses.replace(collected, tensors=[copy(s) for s in collected.tensors])
    if captured is not None:
        captured = dataclasses.replace(captured, tensors={p: {slot: copy(s) for slot, s in slots.items()}
                                                          for p, slots in captured.tensors.items()})
    return collected, captured


def read_policy(repo: Repo) -> dict[str, Any]:
    """The retention policy a CheckpointManager recorded in the repository (empty if none)."""
    where = f"{repo.location}/{POLICY_FILE}"
    try:
        policy = json.loads(repo.store.read(POLICY_FILE))
    except NotFoundError:
        return {}
    except ValueError:
        raise FormatError(f"{where}: not JSON") from None
    if not isinstance(policy, dict):
        raise FormatError(f"{where}: expected a JSON object")
    for key in ("keep_last", "keep_every"):
        value = policy.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise FormatError(f"{where}: {key} must be a positive integer or null, got {value!r}")
    if policy.get("best_metric") is not None and not isinstance(policy["best_metric"], str):
        raise FormatError(f"{where}: best_metric must be a string or null")
    if policy.get("mode", "min") not in ("min", "max"):
        raise FormatError(f"{where}: mode must be 'min' or 'max'")
    return policy


def list_checkpoints(repo: Repo, policy: Mapping[str, Any]) -> list[Checkpoint]:
    """The checkpoints of ``repo`` (tags ``step-<n>``) and which rules of ``policy`` keep each."""
    if not repo.exists():
        return []
    tags = {int(m.group(1)): rev for name, rev in repo.tags().items() if (m := _TAG.fullmatch(name))}
    rows = []
    previous: set[str] = set()
    for step in sorted(tags):
        try:
            revision = repo._load_revision(tags[step], f"tag step-{step}")
            _, manifest = repo._snapshot(revision)
        except LaminaError as exc:
            raise type(exc)(f"checkpoint step-{step} is damaged: {exc}") from None
        files = {f.digest: f.size for f in manifest.files}
        training = manifest.training
        rows.append((step, tags[step], revision.time, training.epoch if training else None,
                     dict(training.metrics) if training else {}, sum(files.values()),
                     sum(size for sha, size in files.items() if sha not in previous)))
        previous = set(files)
    keep_last, keep_every = policy.get("keep_last"), policy.get("keep_every")
    metric, mode = policy.get("best_metric"), policy.get("mode", "min")
    by_save = [r[0] for r in sorted(rows, key=lambda r: (r[2], r[0]))]
    last = set(by_save if keep_last is None else by_save[-keep_last:])
    best: int | None = None
    if metric is not None:
        scored = {r[0]: r[4][metric] for r in rows if _is_number(r[4].get(metric))}
        if scored:
            sign = 1 if mode == "min" else -1
            best = min(scored, key=lambda s: (sign * scored[s], -s))
    out = []
    for step, revision, saved, epoch, metrics, size, new in rows:
        kept_by = tuple(name for name, keeps in (("last", step in last),
                                                  ("every", bool(keep_every) and step % keep_every == 0),
                                                  ("best", step == best)) if keeps)
        out.append(Checkpoint(step, revision, saved, epoch, metrics, size, new, kept_by))
    return out
