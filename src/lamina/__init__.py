"""lamina: a versioned, per-layer, safetensors-based artifact format for ML models.

Example:
    >>> import lamina, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> _ = lamina.save({"enc.weight": np.ones((2, 2), "float32")}, path, info={"name": "demo"})
    >>> lamina.open(path).layer("enc", framework="np")["enc.weight"].sum()
    np.float32(4.0)
"""

from ._api import open, save
from ._checkpoints import Checkpoint, CheckpointManager, RestoredState
from ._convert import convert
from ._publish import pull, push
from ._diff import LayerDiff, SnapshotDiff, diff
from ._repo import FsckReport, GcResult, PushResult, Repo
from ._repo_layout import Revision
from ._artifact import Artifact
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
from ._load import LoadReport, TensorMismatch
from ._manifest import FORMAT_VERSION, ModelInfo, TrainingState
from ._version import __version__

__all__ = [
    "save",
    "open",
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
