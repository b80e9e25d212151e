"""lamina: a versioned, per-layer, safetensors-based artifact format for ML models.

Example:
    >>> import lamina, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> _ = lamina.save({"enc.weight": np.ones((2, 2), "float32")}, path, info={"name": "demo"})
    >>> lamina.open(path).layer("enc", framework="np")["enc.weight"].sum()
    np.float32(4.0)
"""

from lamina.api.convert import convert
from lamina.api.diff import diff
from lamina.api.publish import pull, push
from lamina.api.snapshots import load, open, save
from lamina.format.manifest import FORMAT_VERSION, ModelInfo, TrainingState
from lamina.format.repository import Revision
from lamina.frameworks.base import LoadReport, TensorMismatch
from lamina.repo.maintenance import FsckReport, GcResult
from lamina.repo.repository import Repo
from lamina.snapshot.artifact import Artifact
from lamina.snapshot.diff import LayerDiff, SnapshotDiff
from lamina.snapshot.transfer import PushResult
from lamina.training.checkpoints import Checkpoint, CheckpointManager, RestoredState

from ._errors import (
    ConflictError,
    ExistsError,
    FormatError,
    IntegrityError,
    LaminaError,
    NotFoundError,
    StateMismatchError,
    StorageError,
    UnsafeInputError,
    UnsafePathError,
    UnsupportedVersionError,
)
from ._version import __version__

__all__ = [
    "save",
    "open",
    "load",
    "convert",
    "push",
    "pull",
    "diff",
    "Artifact",
    "Repo",
    "CheckpointManager",
    "Checkpoint",
    "RestoredState",
    "Revision",
    "PushResult",
    "GcResult",
    "FsckReport",
    "SnapshotDiff",
    "LayerDiff",
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
    "ConflictError",
    "StorageError",
    "__version__",
]


def __getattr__(name: str) -> object:
    """``lamina.keras`` (the Keras ``fit`` callback) is imported on first use: it imports Keras,
    which ``import lamina`` never does."""
    if name == "keras":
        import importlib

        return importlib.import_module("lamina.keras")
    raise AttributeError(f"module 'lamina' has no attribute {name!r}")
