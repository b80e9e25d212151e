"""``lamina.keras.Checkpoint``, the Keras ``fit`` callback (docs/design-keras-adapter.md §5).

A ``fit`` killed by SIGKILL mid-epoch and run again by a new process ends bitwise equal to an
uninterrupted ``fit``, with the same epoch logs, on the TensorFlow and torch backends
(``tests/keras_jobs/callback_job.py`` in subprocesses, both backends at once). In process, on
TensorFlow: epoch saves with ``monitor``/``mode`` and ``keep_last``; batch saves and their
records; a ``fit`` that raised resumes mid-epoch bitwise; a complete run is not resumed;
``model._initial_epoch`` is reset; ``restore=False``/``True``; another model's directory is a
clear ``StateMismatchError``; argument checks; the docstring example.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402  (a missing Keras must fail the suite, never skip it)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402
import lamina.keras  # noqa: E402
import lamina.training.keras_callback  # noqa: E402

JOB = Path(__file__).parent / "keras_jobs" / "callback_job.py"
BACKENDS = ("tensorflow", "torch")
RS = np.random.RandomState(0)
X, Y = RS.rand(64, 4).astype("float32"), RS.rand(64, 1).astype("float32")
VAL = (RS.rand(16, 4).astype("float32"), RS.rand(16, 1).astype("float32"))
BATCH = 16  # 4 batches per epoch


# ---------------------------------------------------------------- SIGKILL mid-epoch, both backends
def _record(directory: Path, step: int) -> dict[str, Any]:
    """The ``keras_fit`` record the callback stored with checkpoint ``step``."""
    return lamina.CheckpointManager(directory).repo.open(f"step-{step}").training.extra["keras_fit"]


def _run_backends(phase: str, root: Path) -> dict[str, tuple[int, str, str]]:
    procs = {}
    for backend in BACKENDS:
        (root / backend).mkdir(exist_ok=True)
        log = open(root / f"{backend}-{phase}.log", "w+")
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs[backend] = (subprocess.Popen([sys.executable, str(JOB), phase, str(root / backend)],
                                           stdout=subprocess.PIPE, stderr=log, text=True, env=env), log)
    out = {}
    for backend, (proc, log) in procs.items():
        stdout, _ = proc.communicate(timeout=300)
        log.seek(0)
        out[backend] = (proc.returncode, stdout, log.read()[-4000:])
        log.close()
    return out


@pytest.fixture(scope="module")
def sigkill_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Per backend: the uninterrupted fit, the killed run's return code and checkpoints, and the
    rerun's result."""
    root = tmp_path_factory.mktemp("keras-sigkill")
    killed = _run_backends("kill", root)
    out: dict[str, dict[str, Any]] = {}
    for backend, (rc, stdout, stderr) in killed.items():
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        run = root / backend / "run"
        steps = lamina.CheckpointManager(run).steps()
        out[backend] = {"rc": rc, "stdout": stdout, "stderr": stderr, "full": lines[0]["full"] if lines else None,
                        "steps_after_kill": steps, "record": _record(run, max(steps)) if steps else None}
    for backend, (rc, stdout, stderr) in _run_backends("resume", root).items():
        assert rc == 0, f"{backend} rerun: rc {rc}\n{stderr}"
        out[backend]["rerun"] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_epoch_then_rerun_is_bitwise(sigkill_runs: dict, backend: str) -> None:
    run = sigkill_runs[backend]
    assert run["rc"] == -signal.SIGKILL, f"{backend}: the job was not killed (rc {run['rc']})\n{run['stderr']}"
    assert "not killed" not in run["stdout"] and run["full"] is not None, run["stdout"]
    # killed after optimizer step 13 (epoch 1, batch index 4); checkpoints every 3 steps, keep_last=2
    assert run["steps_after_kill"] == [9, 12]
    record = run["record"]
    assert (record["epoch"], record["batch"], record["complete"]) == (1, 4, False)  # a mid-epoch resume point
    assert isinstance(record["epoch_start_rng"], dict) and len(record["metrics"]) == 4  # loss, mae: total, count
    rerun, full = run["rerun"]["resumed"], run["full"]
    assert rerun["weights"] == full["weights"], f"{backend}: weights differ from the uninterrupted fit"
    assert rerun["optimizer"] == full["optimizer"], f"{backend}: optimizer state differs"
    assert rerun["iterations"] == full["iterations"] == 24
    # the rerun ran epochs 1 and 2 only, with the uninterrupted run's logs (metric accumulators restored)
    assert rerun["history"] == {name: values[1:] for name, values in full["history"].items()}
    assert rerun["initial_epoch"] is None
    assert run["rerun"]["steps"] == [21, 24]


# ---------------------------------------------------------------- in process (TensorFlow by default)
def _model(units: int = 16) -> keras.Model:
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dropout(0.3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    return model


def _digest(model: keras.Model) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(v.numpy()).tobytes()
                                   for v in model.weights + model.optimizer.variables)).hexdigest()


def _fit(model: keras.Model, callbacks: list, epochs: int = 3, validation: bool = False) -> keras.callbacks.History:
    return model.fit(X, Y, epochs=epochs, batch_size=BATCH, validation_data=VAL if validation else None, verbose=0,
                     callbacks=callbacks)


class Crash(keras.callbacks.Callback):
    """Raises after batch ``batch`` of epoch ``epoch`` (an interruption that runs no on_train_end)."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__()
        self.at, self.epoch = (epoch, batch), -1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if (self.epoch, batch) == self.at:
            raise RuntimeError("interrupted")


@pytest.fixture(scope="module")
def uninterrupted() -> str:
    model = _model()
    history = _fit(model, [])
    assert history.epoch == [0, 1, 2]
    return _digest(model)


def test_epoch_saves_keep_last_and_the_best_by_monitor(tmp_path: Path) -> None:
    model = _model()
    callback = lamina.keras.Checkpoint(tmp_path / "run", monitor="loss", mode="max", keep_last=1, blocking=False)
    history = _fit(model, [callback], epochs=4, validation=True)
    assert "val_loss" in history.history
    worst = int(np.argmax(history.history["loss"]))  # mode "max": the highest loss is the "best"
    best_step = 4 * (worst + 1)
    listed = {c.step: c for c in callback.manager.checkpoints()}
    assert lamina.CheckpointManager(tmp_path / "run").steps() == sorted({best_step, 16})
    assert "best" in listed[best_step].kept_by and "last" in listed[16].kept_by
    assert callback.manager.best_step() == best_step
    for step, checkpoint in listed.items():  # each epoch's numeric logs, validation included
        epoch = step // 4 - 1
        assert checkpoint.epoch == epoch + 1
        assert checkpoint.metrics == {name: values[epoch] for name, values in history.history.items()}
    assert _record(tmp_path / "run", 16) == {"epoch": 4, "batch": 0, "complete": True, "epoch_start_rng": None,
                                            "metrics": None}


def test_mode_auto_follows_keras() -> None:
    def mode(monitor: str | None) -> str:
        return lamina.keras.Checkpoint("unused", monitor=monitor).mode

    assert (mode("val_accuracy"), mode("auc"), mode("val_loss"), mode("mae"), mode(None)) == \
        ("max", "max", "min", "min", "min")
    assert lamina.keras.Checkpoint("unused", monitor="val_accuracy", mode="min").mode == "min"


def test_raised_fit_resumes_mid_epoch_bitwise_then_completes(tmp_path: Path, uninterrupted: str) -> None:
    run = tmp_path / "run"
    model = _model()
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(model, [lamina.keras.Checkpoint(run, save_freq=3, keep_last=None), Crash(epoch=1, batch=3)])
    assert lamina.CheckpointManager(run).steps() == [3, 6]
    record = _record(run, 6)
    assert (record["epoch"], record["batch"], record["complete"]) == (1, 2, False)

    model = _model()  # the script run again
    history = _fit(model, [lamina.keras.Checkpoint(run, save_freq=3, keep_last=None)])
    assert history.epoch == [1, 2]
    assert _digest(model) == uninterrupted
    assert model._initial_epoch is None  # else the next fit would skip epochs
    assert lamina.CheckpointManager(run).steps() == [3, 6, 9, 12]
    assert _record(run, 12)["complete"] is True

    history = _fit(model, [lamina.keras.Checkpoint(run, save_freq=3, keep_last=None)], epochs=1)
    assert history.epoch == [0] and int(model.optimizer.iterations) == 16  # continues in memory
    assert lamina.CheckpointManager(run).steps() == [3, 6, 9, 12, 15, 16]  # steps keep increasing

    model = _model()  # a finished run is not resumed: this fit starts afresh
    history = _fit(model, [lamina.keras.Checkpoint(run, save_freq=3, keep_last=None)])
    assert history.epoch == [0, 1, 2] and _digest(model) == uninterrupted


def test_restore_false_starts_afresh_and_true_continues_a_complete_run(tmp_path: Path, uninterrupted: str) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(_model(), [lamina.keras.Checkpoint(run, save_freq=2), Crash(epoch=1, batch=1)])
    model = _model()
    history = _fit(model, [lamina.keras.Checkpoint(run, save_freq=2, restore=False)])
    assert history.epoch == [0, 1, 2] and _digest(model) == uninterrupted
    assert _record(run, 12)["complete"] is True

    model = _model()
    history = _fit(model, [lamina.keras.Checkpoint(run, restore=True)], epochs=4)
    assert history.epoch == [3] and int(model.optimizer.iterations) == 16


def test_another_models_directory_is_a_state_mismatch(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(_model(), [lamina.keras.Checkpoint(run, save_freq=2), Crash(epoch=0, batch=2)])
    with pytest.raises(lamina.StateMismatchError) as caught:
        _fit(_model(units=8), [lamina.keras.Checkpoint(run, save_freq=2)])
    message = str(caught.value)
    assert str(run) in message and "another model" in message and "restore=False" in message


@pytest.mark.parametrize("kwargs", [{"save_freq": 0}, {"save_freq": "batch"}, {"save_freq": True},
                                    {"mode": "best"}, {"restore": "yes"}, {"keep_last": 0}])
def test_bad_arguments_are_format_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(lamina.FormatError):
        lamina.keras.Checkpoint("unused", **kwargs)


def test_docstring_example_runs() -> None:
    result = doctest.testmod(lamina.training.keras_callback, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
