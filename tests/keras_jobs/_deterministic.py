"""What the Keras job scripts share: deterministic ops on the backend Keras picked, and the data."""

from __future__ import annotations

import keras
import numpy as np

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
else:
    import torch

    torch.use_deterministic_algorithms(True)

rs = np.random.RandomState(0)
X, Y = rs.rand(64, 4).astype("float32"), rs.rand(64, 1).astype("float32")


def mlp() -> keras.Model:
    """The model both jobs train: Dense, BatchNormalization and Dropout (a seed generator)."""
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.BatchNormalization(), keras.layers.Dropout(0.3), keras.layers.Dense(1)])
