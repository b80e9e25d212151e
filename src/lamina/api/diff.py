"""``lamina.diff``: two snapshots or revisions, wherever they live."""

from __future__ import annotations

from typing import Any

from lamina.snapshot.diff import SnapshotDiff, diff_manifests

__all__ = ["diff"]


def diff(a: Any, b: Any, *, storage_options: Any = None) -> SnapshotDiff:
    """Compare two snapshots: Artifacts, or anything :func:`lamina.open` accepts (paths, URIs,
    ``repo@ref``). Reads the two manifests only.

    Example:
        >>> import lamina, numpy as np, tempfile, os
        >>> tmp = tempfile.mkdtemp()
        >>> a = lamina.save({"enc.w": np.zeros(2, "f4"), "dec.w": np.zeros(2, "f4")}, os.path.join(tmp, "a"))
        >>> b = lamina.save({"enc.w": np.zeros(2, "f4"), "dec.w": np.ones(2, "f4")}, os.path.join(tmp, "b"))
        >>> d = lamina.diff(a, b)
        >>> d.changed, d.unchanged
        (['dec'], ['enc'])
    """
    from lamina.api.snapshots import open as open_snapshot
    from lamina.snapshot.artifact import Artifact

    arts = [x if isinstance(x, Artifact) else open_snapshot(x, storage_options=storage_options) for x in (a, b)]
    return diff_manifests(arts[0].manifest, arts[1].manifest, arts[0].location, arts[1].location)


