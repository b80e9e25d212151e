"""Run by tests/test_keras_adapter.py with KERAS_BACKEND=torch: the adapter's checks on Keras's
torch backend. Prints one JSON line of findings; argv[1] is a directory holding ``from-tf``
(a snapshot with optimizer state saved on the TensorFlow backend)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import keras
import numpy as np

import lamina

root = Path(sys.argv[1])
rng = np.random.RandomState(0)
X = rng.rand(32, 6).astype("float32")
Y = rng.rand(32, 2).astype("float32")


def sequential() -> keras.Model:  # the same model as tests/test_keras_adapter.py's _sequential
    return keras.Sequential([keras.Input((6,)), keras.layers.Reshape((2, 3)), keras.layers.Conv1D(4, 2),
                             keras.layers.BatchNormalization(scale=False), keras.layers.Flatten(),
                             keras.layers.Dropout(0.2), keras.layers.Dense(2)])


def digest(variables: list) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes()
                                   for v in variables)).hexdigest()


out: dict = {"backend": keras.backend.backend()}
keras.utils.set_random_seed(1)
model = sequential()
model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
model.fit(X, Y, epochs=1, batch_size=8, verbose=0)

model.save(root / "torch.keras")
converted = lamina.open(lamina.convert(root / "torch.keras", root / "torch-converted"))
art = lamina.save(model, root / "torch-memory", optimizer=model.optimizer)
out["names_equal_converter"] = art.keys() == converted.keys() and len(art.keys()) == len(model.weights)
layouts = [json.loads(a.read_file("keras/layout.json")) for a in (art, converted)]
out["layout_equal_converter"] = all(
    sorted(layouts[0][k], key=lambda d: d["path"]) == sorted(layouts[1][k], key=lambda d: d["path"])
    for k in ("groups", "datasets"))

loaded = keras.models.load_model(lamina.convert(art.location, root / "torch-export.keras"))
out["export_predicts_bitwise"] = bool(np.array_equal(keras.ops.convert_to_numpy(loaded.predict(X, verbose=0)),
                                                     keras.ops.convert_to_numpy(model.predict(X, verbose=0))))

fresh = sequential()
fresh.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
lamina.load(fresh, art)
out["optimizer_round_trip"] = (digest(fresh.weights) == digest(model.weights)
                               and digest(fresh.optimizer.variables) == digest(model.optimizer.variables))

other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
before = digest(other.weights)
try:
    art.load_into(other)
    out["strict_refused_and_unchanged"] = False
except lamina.StateMismatchError:
    out["strict_refused_and_unchanged"] = digest(other.weights) == before

from_tf = sequential()
from_tf.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
lamina.load(from_tf, root / "from-tf")
out["tf_snapshot_weights"] = digest(from_tf.weights)
out["tf_snapshot_iteration"] = int(keras.ops.convert_to_numpy(from_tf.optimizer.iterations))
out["tf_snapshot_optimizer"] = digest(from_tf.optimizer.variables[1:])
print(json.dumps(out))
