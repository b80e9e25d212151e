"""Converters between lamina snapshots and foreign formats (torch pickles, Keras, ONNX).

Each converter is one module with a symmetric pair ``to_lamina(...)`` / ``from_lamina(...)``
and imports its framework lazily, so ``import lamina.converters`` stays light. None ships yet.
"""

__all__: list[str] = []
