"""lamina: a versioned, per-layer, safetensors-based artifact format for ML models.

Example:
    >>> import lamina, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> _ = lamina.save({"enc.weight": np.ones((2, 2), "float32")}, path, info={"name": "demo"})
    >>> lamina.open(path).layer("enc", framework="np")["enc.weight"].sum()
    np.float32(4.0)
"""

from ._api import open, save
from ._convert import convert
from ._artifact import Artifact
from ._errors import (
    ExistsError,
    FormatError,
    IntegrityError,
    LaminaError,
    NotFoundError,
    StateMismatchError,
    UnsafeInputError,
    UnsafePathError,
    UnsupportedVersionError,
)
from ._load import LoadReport, TensorMismatch
from ._manifest import FORMAT_VERSION, ModelInfo, TrainingState
from ._version import __version__

__all__ = [
    "save",
    "open",
    "convert",
    "Artifact",
    "ModelInfo",
    "TrainingState",
    "LoadReport",
    "TensorMismatch",
    "FORMAT_VERSION",
    "LaminaError",
    "FormatError",
    "UnsupportedVersionError",
    "UnsafePathError",
    "UnsafeInputError",
    "IntegrityError",
    "NotFoundError",
    "ExistsError",
    "StateMismatchError",
    "__version__",
]
