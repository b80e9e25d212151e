"""``lamina.keras.Checkpoint``: a ``model.fit`` callback that saves through
:class:`lamina.CheckpointManager` and, like Keras's ``BackupAndRestore``, resumes an interrupted
``fit`` from its latest checkpoint — but to the batch, and bitwise (docs/design-keras-adapter.md §5).

How a resumed ``fit`` reproduces the uninterrupted one: ``on_train_begin`` loads the model, the
optimizer and the random state of the checkpoint (the RNG must be restored there: on the torch
backend the first ``fit`` of a process draws from torch's generator before ``on_train_begin``) and
sets the epoch ``fit`` starts from. A checkpoint taken after *b* batches of an epoch also carries
the random state of that epoch's start and the epoch's metric accumulators: the resumed epoch
starts from that random state (so the data order is the same), its first *b* ``train_function``
calls consume their batch without training, and the last of them puts back the checkpoint's
random state; training continues from there.

Private Keras APIs relied on (Keras 3.6 to 3.15; TensorFlow and torch backends):
``Model._initial_epoch`` (read by ``fit``, never reset by Keras), replacing
``Model.train_function`` (built by ``make_train_function`` before ``on_train_begin`` and looked up
on every batch), ``Model.steps_per_execution``, ``Model._compile_metrics`` and
``Model._symbolic_build`` (to build compiled metrics, which TensorFlow builds in the first
training step, before their saved state is put back), and through the adapter the optimizer's
slot lists and the layers' ``_seed_generators``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from lamina._errors import FormatError, StateMismatchError
from lamina.frameworks.rng import capture_rng, restore_rng
from lamina.training.checkpoints import CheckpointManager

__all__ = ["Checkpoint"]


class Checkpoint(keras.callbacks.Callback):
    """Save a ``fit`` through :class:`lamina.CheckpointManager` and resume it exactly after a crash.

    At the start of ``fit`` the latest checkpoint in ``directory`` is restored (model weights and
    non-weight state such as BatchNorm statistics and dropout seed generators, optimizer state,
    Python/numpy/torch/Keras random state) and ``fit`` continues from the epoch *and batch* where
    it was saved. Each checkpoint is a ``step-<n>`` revision with ``n = optimizer.iterations``, so
    unchanged layers are stored once and ``lamina.CheckpointManager(directory)`` lists, restores
    and prunes them as usual.

    **Guarantee.** A ``fit`` killed at any point (``SIGKILL`` included) and started again — a new
    process running the same script — ends with weights and optimizer state bitwise equal to an
    uninterrupted ``fit``, and the resumed epoch reports the same logs. Granularity: one
    ``train_function`` call (a batch; ``steps_per_execution`` batches when that is set): the
    checkpoint holds the position to the call, so what is redone is only what followed it, at
    most ``save_freq`` batches (one epoch with ``"epoch"``). A kill during a save leaves the
    previous checkpoint (``CheckpointManager`` writes its tag last). Preconditions, as for any
    exact replay: the same seed set before the model is built (``keras.utils.set_random_seed``),
    deterministic ops (``tf.config.experimental.enable_op_determinism()`` /
    ``torch.use_deterministic_algorithms(True)``), the same data, batch size and
    ``steps_per_execution``, each epoch one full pass over arrays or a ``PyDataset`` without
    hidden randomness (no ``steps_per_epoch`` shorter than the data, no ``tf.data`` reshuffled by
    its own seed), and a model built before ``fit`` (``keras.Input``), as for ``BackupAndRestore``.
    Checked on the TensorFlow and torch backends; on JAX a resume mid-epoch is refused (whole
    epochs are not tested there).

    When ``fit`` ends, its final state is saved as a checkpoint marked complete; with
    ``restore="auto"`` a complete run is not resumed, so the next ``fit`` continues from the
    model in memory (and, in a new process, starts afresh, replacing checkpoints step by step).

    Args:
        directory: where the checkpoints live (a lamina repository: a local path or a store URL).
        keep_last: keep the N most recently saved checkpoints (None: all).
        keep_every: also keep every checkpoint whose step is a multiple of this.
        save_freq: ``"epoch"`` (at each epoch's end, with its logs) or an integer N: whenever the
            optimizer's step reaches a multiple of N (N batches).
        monitor: a log name (``"val_loss"``, ``"accuracy"``): the checkpoint with its best value
            is also kept (its step is ``CheckpointManager.best_step()``).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for names containing ``acc`` or ``auc``).
        restore: ``"auto"`` resumes an unfinished run, ``True`` always continues from the latest
            checkpoint (also to train a finished run for more epochs), ``False`` never restores.
        blocking: False copies the state to host memory and writes in a background thread.
        storage_options: fsspec options for a remote ``directory``.

    Raises:
        StateMismatchError: ``directory`` holds checkpoints of another model or optimizer.

    Example:
        >>> import keras, lamina, lamina.keras, numpy as np, tempfile
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.2), keras.layers.Dense(1)])
        >>> model.compile(optimizer="adam", loss="mse")
        >>> x, y = np.ones((32, 3), "float32"), np.zeros((32, 1), "float32")
        >>> run = tempfile.mkdtemp()
        >>> history = model.fit(x, y, batch_size=8, epochs=1, verbose=0,
        ...                     callbacks=[lamina.keras.Checkpoint(run, save_freq=2, keep_last=2)])
        >>> lamina.CheckpointManager(run).steps()  # steps 2 and 4; the last one marked complete
        [2, 4]
    """

    def __init__(self, directory: Any, *, keep_last: int | None = 3, keep_every: int | None = None,
                 save_freq: str | int = "epoch", monitor: str | None = None, mode: str = "auto",
                 restore: str | bool = "auto", blocking: bool = True,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1):
            raise FormatError(f"save_freq must be 'epoch' or a positive integer, got {save_freq!r}")
        if mode not in ("auto", "min", "max"):
            raise FormatError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if not (restore is True or restore is False or restore == "auto"):
            raise FormatError(f"restore must be 'auto', True or False, got {restore!r}")
        if mode == "auto":
            mode = "max" if monitor is not None and ("acc" in monitor or "auc" in monitor) else "min"
        self.save_freq, self.monitor, self.mode, self.restore, self.blocking = save_freq, monitor, mode, restore, blocking
        self.manager = CheckpointManager(directory, keep_last=keep_last, keep_every=keep_every, best_metric=monitor,
                                         mode=mode, storage_options=storage_options)
        self._reset_run()

    def __repr__(self) -> str:
        return f"<lamina.keras.Checkpoint {self.manager.location!r} save_freq={self.save_freq!r}>"

    def _reset_run(self) -> None:
        self._epoch = 0  # epochs completed (= the epoch in progress, 0-based)
        self._calls = 0  # train_function calls done in that epoch
        self._epoch_rng: Any = None  # the random state at its start
        self._last_step = -1  # step of the latest checkpoint written or restored
        self._last_metrics: dict[str, float] = {}
        self._resume: dict[str, Any] | None = None  # a mid-epoch resume still to replay
        self._train_function: Any = None  # Keras's, while ours stands in for it
        self._owns_initial_epoch = False
        self._warned = False

    # ------------------------------------------------------------------ fit events
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        model = self.model
        self._put_back(model)  # a previous fit that raised left ours in place
        if self._owns_initial_epoch:
            model._initial_epoch = None
        self._reset_run()
        if model.optimizer is None:
            raise FormatError("lamina.keras.Checkpoint: compile the model with an optimizer before fit()")
        if model.optimizer.built:
            self._last_step = int(model.optimizer.iterations)
        if self.restore is not False:
            self._restore(model)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch, self._calls = epoch, 0
        resume = self._resume
        if resume is not None and epoch == resume["epoch"]:
            # the data order and the replayed epoch's draws start from the saved epoch-start state
            restore_rng(resume["epoch_start_rng"], f"{self._where()} (epoch-start random state)", self.model)
            self._epoch_rng = resume["epoch_start_rng"]
        elif self.save_freq != "epoch":
            self._epoch_rng = capture_rng(self.model)

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._calls += 1
        if self.save_freq == "epoch" or self._resume is not None:
            return
        step = int(self.model.optimizer.iterations)
        if step // self.save_freq > max(self._last_step, 0) // self.save_freq:
            self._save(step, logs, complete=False)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._epoch, self._calls = epoch + 1, 0
        if self.save_freq == "epoch":
            if self.monitor is not None and not self._warned and self.monitor not in (logs or {}):
                warnings.warn(f"lamina.keras.Checkpoint: monitor {self.monitor!r} is not in the epoch logs "
                              f"({', '.join(sorted(logs or {})) or 'none'}); no checkpoint is kept as best",
                              stacklevel=2)
                self._warned = True
            self._save(int(self.model.optimizer.iterations), logs, complete=False)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        model = self.model
        self._put_back(model)
        self._resume = None
        if self._owns_initial_epoch:
            model._initial_epoch = None  # Keras never resets it: the next fit would skip epochs
            self._owns_initial_epoch = False
        self._save(int(model.optimizer.iterations), logs, complete=True)
        self.manager.wait()

    # ------------------------------------------------------------------ saving
    def _save(self, step: int, logs: Mapping[str, Any] | None, complete: bool) -> None:
        model = self.model
        metrics = {k: x for k, v in (logs or {}).items() if (x := _scalar(v)) is not None}
        if complete and not metrics and step == self._last_step:
            metrics = self._last_metrics  # a fit that ran no epoch: keep the checkpoint's metrics
        mid_epoch = self._calls > 0
        fit_state = {"epoch": self._epoch, "batch": self._calls, "complete": complete,
                     "epoch_start_rng": self._epoch_rng if mid_epoch else None,
                     "metrics": _metric_state(model) if mid_epoch else None}
        self.manager.save(step, model=model, optimizer=model.optimizer, epoch=self._epoch, metrics=metrics,
                          extra={"keras_fit": fit_state}, blocking=self.blocking)
        self._last_step, self._last_metrics = step, metrics

    # ------------------------------------------------------------------ restoring
    def _where(self) -> str:
        return f"{self.manager.location}@step-{self._last_step}"

    def _restore(self, model: Any) -> None:
        step = self.manager.latest_step()
        if step is None:
            return
        saved = self.manager.repo.open(f"step-{step}").training
        fit_state = saved.extra.get("keras_fit") if saved is not None else None
        if self.restore == "auto" and isinstance(fit_state, Mapping) and fit_state.get("complete") is True:
            return  # a finished run: this fit starts from the model as it is
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        try:
            restored = self.manager.restore(model, optimizer, step=step)
        except StateMismatchError as exc:
            raise StateMismatchError(
                f"lamina.keras.Checkpoint: {self.manager.location} holds checkpoints of another model or optimizer "
                f"({exc}). Use a new directory for this model, or pass restore=False to train afresh (its "
                f"checkpoints are then replaced step by step).", exc.report) from None
        fit_state = restored.extra.get("keras_fit")
        epoch, batch = _position(fit_state, restored.epoch, f"{self.manager.location}@step-{step}")
        self._last_step, self._last_metrics = step, dict(restored.metrics)
        self._epoch, self._calls = epoch, batch
        model._initial_epoch = epoch
        self._owns_initial_epoch = True
        if batch == 0:
            return
        if keras.backend.backend() not in ("tensorflow", "torch"):
            raise FormatError(f"lamina.keras.Checkpoint: resuming mid-epoch (step {step}, epoch {epoch} batch {batch}) "
                              f"is supported on the TensorFlow and torch backends, not {keras.backend.backend()!r}; "
                              "use save_freq='epoch'")
        self._resume = {"epoch": epoch, "batch": batch, "epoch_start_rng": fit_state["epoch_start_rng"],
                        "metrics": fit_state["metrics"], "rng": capture_rng(model)}  # the state just restored
        self._train_function = model.train_function
        model.train_function = self._replay

    def _replay(self, data: Any) -> Any:
        """Stands in for ``train_function`` for the first ``batch`` calls of the resumed epoch:
        each consumes its batch without training; the last puts back the checkpoint's random
        state and Keras's function."""
        resume, model = self._resume, self.model
        if resume is None or self._epoch != resume["epoch"] or self._calls >= resume["batch"]:
            self._put_back(model)
            return model.train_function(data)
        first = data
        if keras.backend.backend() == "tensorflow":  # data is the iterator the step would read from
            batches = []
            for _ in range(int(model.steps_per_execution)):
                try:
                    batches.append(next(data))
                except StopIteration:
                    break
            first = batches[0] if batches else None
        elif isinstance(data, (list, tuple)):  # torch: the call's batches
            first = data[0]
        if self._calls == 0:  # the epoch's metric accumulators as they were saved
            metrics = model._compile_metrics
            if metrics is not None and not metrics.built and first is not None:
                model._symbolic_build(data_batch=first)  # TF builds compiled metrics in the first step
            _set_metric_state(model, resume["metrics"], self._where())
        if self._calls + 1 == resume["batch"]:
            restore_rng(resume["rng"], f"{self._where()} (random state)", model)
            self._put_back(model)
            self._resume = None
        return model.get_metrics_result()

    def _put_back(self, model: Any) -> None:
        if self._train_function is not None:
            model.train_function, self._train_function = self._train_function, None


def _scalar(value: Any) -> float | None:
    """A log value as a finite float (logs reach callbacks as Python numbers), else None."""
    if isinstance(value, (bool, np.bool_)):
        return None
    try:
        number = float(value) if np.ndim(value) == 0 else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _position(fit_state: Any, epoch: Any, where: str) -> tuple[int, int]:
    """(epochs completed, train_function calls done in the next) from a checkpoint's record."""
    if fit_state is None:  # saved by hand with CheckpointManager: resume at its epoch
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
            return epoch, 0
        raise FormatError(f"{where}: not written by lamina.keras.Checkpoint and has no integer epoch; "
                          "pass restore=False or save with epoch=<epochs completed>")
    try:
        epoch, batch = fit_state["epoch"], fit_state["batch"]
        ok = all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (epoch, batch))
        if ok and batch > 0 and (not isinstance(fit_state["epoch_start_rng"], Mapping)
                                 or not isinstance(fit_state["metrics"], list)):
            ok = False
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise FormatError(f"{where}: malformed keras_fit record in the training state: {fit_state!r}")
    return epoch, batch


def _metric_state(model: Any) -> list[dict[str, Any]]:
    """The epoch's metric accumulators (loss mean, compiled metrics), bytes as hex: exact. (On
    torch an accumulator's value can drift to shape [1] from its declared []: the declared shape
    is kept.)"""
    out = []
    for variable in model.metrics_variables:
        value = np.ascontiguousarray(variable.numpy())
        shape = tuple(variable.shape) if value.size == int(np.prod(variable.shape)) else value.shape
        out.append({"dtype": value.dtype.str, "shape": list(shape), "hex": value.tobytes().hex()})
    return out


def _set_metric_state(model: Any, saved: list[dict[str, Any]], where: str) -> None:
    variables = model.metrics_variables
    if len(variables) != len(saved):
        raise StateMismatchError(f"{where}: the model has {len(variables)} metric variables, the checkpoint "
                                 f"{len(saved)}; compile the model with the same loss and metrics")
    for variable, value in zip(variables, saved):
        array = np.frombuffer(bytes.fromhex(value["hex"]), dtype=np.dtype(value["dtype"])).reshape(value["shape"])
        if tuple(variable.shape) != array.shape:
            raise StateMismatchError(f"{where}: metric variable {variable.path}: saved shape {list(array.shape)}, "
                                     f"live {list(variable.shape)}; compile the model with the same loss and metrics")
        variable.assign(array)
