"""Run by tests/test_keras_callback.py, once per Keras backend (KERAS_BACKEND set by the test):
``fit`` with ``lamina.keras.Checkpoint`` killed by SIGKILL mid-epoch, then the same script again.

``python callback_job.py kill ROOT``: an uninterrupted ``fit`` (no callback), printed as one JSON
line, then the same ``fit`` with the callback writing to ``ROOT/run``, which kills its own process
after batch ``KILL_BATCH`` of epoch ``KILL_EPOCH`` (a checkpoint was written two batches before).
``python callback_job.py resume ROOT``: the same ``fit`` again with the callback, which resumes;
prints one JSON line. The test compares the two lines."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import keras
import numpy as np

import lamina.keras

EPOCHS, SAVE_FREQ = 3, 3
KILL_EPOCH, KILL_BATCH = 1, 4  # 0-based: the 13th optimizer step; the checkpoint is step 12 = epoch 1, 4 batches

from _deterministic import X, Y, mlp, rs  # noqa: E402  (deterministic ops, shared data)

VAL = (rs.rand(16, 4).astype("float32"), rs.rand(16, 1).astype("float32"))


def digest(variables: list) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes()
                                   for v in variables)).hexdigest()


class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._epoch == KILL_EPOCH and batch == KILL_BATCH:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch


def fit(callbacks: list) -> dict:
    keras.utils.set_random_seed(7)
    model = mlp()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", metrics=["mae"])
    history = model.fit(X, Y, epochs=EPOCHS, batch_size=8, validation_data=VAL, verbose=0, callbacks=callbacks)
    return {"weights": digest(model.weights), "optimizer": digest(model.optimizer.variables),
            "iterations": int(model.optimizer.iterations), "history": history.history,
            "initial_epoch": model._initial_epoch}


mode, root = sys.argv[1], Path(sys.argv[2])
checkpoint = lamina.keras.Checkpoint(root / "run", save_freq=SAVE_FREQ, keep_last=2)
if mode == "kill":
    print(json.dumps({"full": fit([])}), flush=True)
    fit([checkpoint, Kill()])
    print("not killed", flush=True)
else:
    resumed = fit([checkpoint])
    steps = lamina.CheckpointManager(root / "run").steps()
    print(json.dumps({"resumed": resumed, "steps": steps}), flush=True)
