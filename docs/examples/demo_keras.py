"""The Keras part of the lamina demo (run by demo.py, or alone): train a small Keras model, save it
from memory with its optimizer, export it to ``.keras`` and load that with Keras, load the snapshot
into a fresh model with ``lamina.load``, and read it back with numpy alone.

Output goes to ``<out>/keras`` (``demo-out/keras`` by default).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import lamina  # noqa: E402


def build() -> keras.Model:
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Dropout(0.2),
                              keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    x = np.random.rand(256, 8).astype("float32")
    y = np.random.rand(256, 3).astype("float32")
    model = build()
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)

    art = lamina.save(model, out / "keras-mlp", optimizer=model.optimizer, overwrite=True,
                      info={"name": "keras-mlp", "license": "Apache-2.0", "tags": ["demo", "keras"]})
    print(f"keras: saved {len(art.keys())} tensors in layers {art.layers}")

    exported = lamina.convert(art.location, out / "keras-mlp.keras", overwrite=True)
    loaded = keras.models.load_model(exported)
    same = np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    print(f"keras: exported {exported.name}; keras.models.load_model predicts bitwise equal: {same}")

    fresh = build()
    report = lamina.load(fresh, art.location)  # weights, and the compiled optimizer's state
    restored = all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(fresh.optimizer.variables,
                                                                         model.optimizer.variables))
    print(f"keras: lamina.load: {report}; optimizer state restored: {restored}")

    kernel = lamina.open(art.location).tensor("dense/kernel", framework="np")  # numpy only
    print(f"keras: dense/kernel read with numpy: {kernel.dtype}{list(kernel.shape)}")
    if not (same and report.ok and restored):
        raise SystemExit("keras demo failed")
    print("keras demo: OK")


if __name__ == "__main__":
    main((Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-out")) / "keras")
