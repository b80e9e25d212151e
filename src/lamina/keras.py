"""Keras integration: ``lamina.keras.Checkpoint``, a ``model.fit`` callback that saves through
:class:`lamina.CheckpointManager` and resumes an interrupted ``fit`` exactly.

Importing this module imports Keras; ``import lamina`` does not.
"""

from __future__ import annotations

from lamina.training.keras_callback import Checkpoint

__all__ = ["Checkpoint"]
