"""Run by tests/test_keras_resume.py, once per Keras backend (KERAS_BACKEND set by the test):
N epochs, ``CheckpointManager.save``, restore in a fresh process, M more epochs, against N+M
epochs uninterrupted. Prints one JSON line: per optimizer, sha256 of all weights (incl. BatchNorm
statistics) and of all optimizer variables.

``python resume_job.py first ROOT OPT...``: for each optimizer the uninterrupted run (``full``)
and the first N epochs, saved to ``ROOT/OPT``.
``python resume_job.py second ROOT OPT...``: for each optimizer a fresh model restored from
``ROOT/OPT`` in ``on_train_begin`` (``resumed``); for the first optimizer also the negative
control (``control``): the same restore, except the random state the control leaves out."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import keras
import numpy as np

import lamina

N, M = 2, 2

from _deterministic import X, Y, mlp  # noqa: E402  (deterministic ops, shared data)

OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(1e-2, momentum=0.9),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-3, momentum=0.5, centered=True),
}


def make(name: str) -> keras.Model:
    keras.utils.set_random_seed(7)  # as a new process running the same script would
    model = mlp()
    model.compile(optimizer=OPTIMIZERS[name](), loss="mse")
    return model


def digests(model: keras.Model) -> dict:
    def sha(variables: list) -> str:
        return hashlib.sha256(b"".join(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes()
                                       for v in variables)).hexdigest()

    return {"weights": sha(model.weights), "optimizer": sha(model.optimizer.variables),
            "iterations": int(model.optimizer.iterations)}


class Restore(keras.callbacks.Callback):
    """Restores in on_train_begin: on torch the first fit of a process draws from torch's
    generator before that, so a restore before fit() would not be exact."""

    def __init__(self, manager: lamina.CheckpointManager, control: bool) -> None:
        super().__init__()
        self.manager, self.control = manager, control

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.control and keras.backend.backend() == "tensorflow":
            # everything but the dropout layer's seed generator: its state goes back to a fresh one's
            fresh = [(g.state, g.state.numpy()) for layer in self.model.layers for g in layer._seed_generators]
            assert fresh, "the model has no seed generator: the control would prove nothing"
            self.manager.restore(self.model, self.model.optimizer)
            for variable, value in fresh:
                variable.assign(value)
        elif self.control:  # torch: Dropout draws from torch's global generator
            self.manager.restore(self.model, self.model.optimizer, rng=False)
        else:
            self.manager.restore(self.model, self.model.optimizer)


mode, root, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
out: dict = {"backend": keras.backend.backend()}
for i, name in enumerate(names):
    manager = lamina.CheckpointManager(root / name)
    if mode == "first":
        model = make(name)
        model.fit(X, Y, epochs=N + M, batch_size=8, verbose=0)
        full = digests(model)
        model = make(name)
        model.fit(X, Y, epochs=N, batch_size=8, verbose=0)
        manager.save(int(model.optimizer.iterations), model=model, optimizer=model.optimizer, epoch=N)
        out[name] = {"full": full, "first": digests(model)}
    else:
        runs = ("resumed", "control") if i == 0 else ("resumed",)
        out[name] = {}
        for run in runs:
            model = make(name)
            model.fit(X, Y, epochs=N + M, initial_epoch=N, batch_size=8, verbose=0,
                      callbacks=[Restore(manager, control=run == "control")])
            out[name][run] = digests(model)
print(json.dumps(out), flush=True)
