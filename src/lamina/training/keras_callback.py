"""``lamina.keras.Checkpoint``: the Keras callback (being built; see docs/design-keras-adapter.md §5)."""

from __future__ import annotations

import keras

__all__ = ["Checkpoint"]


class Checkpoint(keras.callbacks.Callback):
    """Placeholder until the callback lands."""
