"""Loading a snapshot into an existing torch module: matching, reporting, in-place reads."""

from __future__ import annotations

from typing import Any

from lamina._errors import StateMismatchError
from lamina.format.dtypes import from_torch
from lamina.format.manifest import TensorEntry
from lamina.frameworks.base import LoadReport, TensorMismatch
from lamina.snapshot.reader import ShardReader

__all__ = ["LoadReport", "TensorMismatch", "load_into_module"]


def _direct_buffer(target: Any, entry: TensorEntry) -> memoryview | None:
    """Target memory as bytes when the stored bytes can be read straight into it."""
    import torch

    if target.device.type != "cpu" or not target.is_contiguous() or target.numel() == 0:
        return None
    return memoryview(target.reshape(-1).view(torch.uint8).numpy())


def load_into_module(
    reader: ShardReader, resolve: dict[str, TensorEntry], module: Any, strict: bool
) -> LoadReport:
    """Copy snapshot tensors into ``module``'s parameters and buffers.

    ``resolve`` maps every snapshot name (aliases included) to its stored entry. With ``strict``,
    any difference raises StateMismatchError before a single byte is loaded.
    """
    import torch

    targets = module.state_dict()  # detached tensors sharing memory with parameters / buffers
    targets = {n: t for n, t in targets.items() if isinstance(t, torch.Tensor)}
    missing = [n for n in targets if n not in resolve]
    unexpected = [n for n in resolve if n not in targets]
    mismatched, loadable = [], []
    for name, target in targets.items():
        entry = resolve.get(name)
        if entry is None:
            continue
        code = from_torch(target.dtype, f"module tensor {name!r}").code
        if code != entry.dtype or tuple(target.shape) != entry.shape:
            mismatched.append(TensorMismatch(name, entry.dtype, entry.shape, code, tuple(target.shape)))
        else:
            loadable.append(name)
    report = LoadReport(missing, unexpected, mismatched, loadable)
    if strict and not report.ok:
        raise StateMismatchError(f"module does not match the snapshot ({report}); nothing was loaded. "
                                 "Pass strict=False to load the tensors that match.", report)
    # Tied module tensors (same memory) are filled once; a stored tensor feeding two untied
    # module tensors is read once per destination, straight into each.
    seen_memory: set[tuple[int, str]] = set()
    direct: dict[str, list[Any]] = {}
    copies: list[tuple[Any, TensorEntry]] = []
    for name in loadable:
        target, entry = targets[name], resolve[name]
        key = (target.data_ptr(), entry.name)
        if target.numel() and key in seen_memory:
            continue
        seen_memory.add(key)
        if _direct_buffer(target, entry) is not None and entry.name not in direct:
            direct[entry.name] = [target]
        else:
            copies.append((target, entry))
    entries = [resolve[n] for n in loadable]
    by_name = {e.name: e for e in entries}
    if strict:  # a missing, truncated or mismatched shard is found before any parameter changes
        from lamina._parallel import run_parallel

        run_parallel(reader.check_shard, sorted({e.file for e in entries}), reader.max_workers)
    reader.read([by_name[n] for n in direct], "pt", lambda e: _direct_buffer(direct[e.name][0], e))
    if copies:
        fresh = reader.read(list({e.name: e for _, e in copies}.values()), "pt")
        with torch.no_grad():
            for target, entry in copies:
                target.copy_(fresh[entry.name])
    return report
