"""The torch adapter: tensors and modules, optimizers by parameter name, loading in place, RNG.

The only module of lamina that imports torch (besides the torch-pickle converter). torch keys
optimizer state by integer ids (parameter order across param groups); lamina keys it by parameter
name, so a restore does not depend on the order a fresh optimizer was built in. Tensor slots
(exp_avg, momentum_buffer, ...) go to shards under ``<param>/<slot>``; 0-d tensors and Python
numbers (step) are kept inline in the manifest with their dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch

from lamina._errors import FormatError, StateMismatchError
from lamina._parallel import run_parallel
from lamina.format.dtypes import dtype_info, from_torch
from lamina.format.manifest import OptimizerInfo, Scalar, TensorEntry, plain_value
from lamina.frameworks.base import (
    Collected,
    FrameworkAdapter,
    LoadReport,
    TensorMismatch,
    TensorReader,
    TensorSource,
)
from lamina.frameworks.optim import SLOT_NAME, CapturedOptimizer, slot_key

__all__ = ["Adapter", "torch_dtype", "torch_device", "capture_state_dict", "state_dict_ids", "build_state_dict"]


#: device types whose host-to-device copies are asynchronous from pinned memory
_PINNED = ("cuda", "xpu")


def torch_dtype(code: str) -> torch.dtype:
    """The torch dtype for a safetensors dtype code."""
    return getattr(torch, dtype_info(code).torch)


def torch_device(device: Any) -> torch.device | None:
    """``device`` (a string, ``torch.device`` or index) checked to exist in this process; None stays
    None. FormatError for a malformed name, ``meta`` (it holds no data) or an absent accelerator."""
    if device is None:
        return None
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise FormatError(f"device={device!r} is not a usable torch device: {exc}") from None
    if target.type == "cpu":
        return target
    if target.type == "meta":
        raise FormatError("device='meta' holds no data to load into; to build a model without memory, create it "
                          "on meta, then module.to_empty(device=...) and load_into it")
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is None or accelerator.type != target.type:
        raise FormatError(f"device {str(target)!r} is not available to this torch {torch.__version__} "
                          f"(accelerator: {accelerator.type if accelerator else 'none'})")
    count = torch.accelerator.device_count()
    if target.index is not None and target.index >= count:
        raise FormatError(f"device {str(target)!r} does not exist: this process sees {count} {target.type} device(s)")
    return target


class Adapter(FrameworkAdapter):
    """torch tensors, ``nn.Module`` and ``torch.optim.Optimizer``.

    Example:
        >>> import torch
        >>> from lamina.frameworks.registry import get
        >>> tensor, view = get("pt").empty("BF16", (2,))
        >>> tensor.dtype, len(view)
        (torch.bfloat16, 4)
    """

    name = "torch"
    rng_keys = ("torch", "cuda")

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, torch.Tensor)

    def is_model(self, value: Any) -> bool:
        # duck-typed wrappers count, as they did before adapters: state_dict() and named_parameters()
        return isinstance(value, torch.nn.Module) or (callable(getattr(value, "state_dict", None))
                                                      and callable(getattr(value, "named_parameters", None)))

    def version(self) -> str:
        return str(torch.__version__)

    # ------------------------------------------------------------------ writing
    def tensor_source(self, name: str, value: Any) -> tuple[TensorSource, Hashable | None]:
        if value.is_sparse or value.layout != torch.strided:
            raise FormatError(f"tensor {name!r} has layout {value.layout}; convert it with .to_dense() first")
        if value.device.type == "meta":
            raise FormatError(f"tensor {name!r} is on the meta device and has no data to save")
        dtype = from_torch(value.dtype, f"tensor {name!r}")
        key = None
        if value.numel():
            key = ("pt", value.device.type, value.untyped_storage().data_ptr(), value.storage_offset(),
                   tuple(value.shape), tuple(value.stride()), value.dtype)
        return TensorSource(name, dtype, tuple(value.shape), value, self), key

    def tensor_bytes(self, value: Any) -> memoryview:
        t = value.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.resolve_conj().resolve_neg().contiguous()
        return memoryview(t.reshape(-1).view(torch.uint8).numpy())

    def host_copy(self, value: Any) -> Any:
        return value.detach().to("cpu", copy=True)

    def is_optimizer(self, value: Any) -> bool:
        # wrappers (Lightning, accelerate) expose the two members lamina uses
        return isinstance(value, torch.optim.Optimizer) or (hasattr(value, "state_dict")
                                                            and hasattr(value, "param_groups"))

    def named_tensors(self, model: Any) -> tuple[list[tuple[str, Any]], dict[int, str]]:
        return list(model.state_dict().items()), {id(p): n for n, p in model.named_parameters()}

    def capture_optimizer(self, optimizer: Any, collected: Collected) -> CapturedOptimizer:
        if not self.is_optimizer(optimizer):
            raise FormatError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        cls = type(optimizer)
        sd = optimizer.state_dict()
        return capture_state_dict(sd, _parameter_names(optimizer, sd, collected), f"{cls.__module__}.{cls.__qualname__}")

    # ------------------------------------------------------------------ reading
    def empty(self, dtype: str, shape: tuple[int, ...], device: Any = None) -> tuple[Any, memoryview]:
        # Reads land in host memory (no reader here fills device memory directly); for a CUDA or
        # XPU destination it is pinned, so to_device copies asynchronously.
        target = torch_device(device)
        t = torch.empty(shape, dtype=torch_dtype(dtype), pin_memory=target is not None and target.type in _PINNED)
        return t, memoryview(t.reshape(-1).view(torch.uint8).numpy())

    def to_device(self, tensor: Any, device: Any) -> Any:
        target = torch_device(device)
        if target is None or tensor.device == target:
            return tensor
        return tensor.to(target, non_blocking=tensor.is_pinned())

    def scalar(self, value: Any, dtype: str) -> Any:
        return torch.tensor(value, dtype=torch_dtype(dtype))

    def load_into(self, model: Any, resolve: Mapping[str, TensorEntry], strict: bool,
                  reader: TensorReader) -> LoadReport:
        return _load_into_module(reader, resolve, model, strict)

    def restore_optimizer(self, info: OptimizerInfo, optimizer: Any, model: Any,
                          read: Callable[[list[TensorEntry]], dict[str, Any]],
                          reader: TensorReader | None = None) -> None:
        names_by_id = {id(p): n for n, p in model.named_parameters()}
        live_groups = optimizer.param_groups
        if len(live_groups) != len(info.param_groups):
            raise StateMismatchError(f"the optimizer has {len(live_groups)} param groups, the snapshot "
                                     f"{len(info.param_groups)}; build it with the same groups")
        group_names = []
        for gi, (live, saved) in enumerate(zip(live_groups, info.param_groups)):
            try:
                live_names = [names_by_id[id(p)] for p in live["params"]]
            except KeyError:
                raise StateMismatchError(f"param group {gi} holds a tensor that is not a parameter of the module") from None
            if set(live_names) != set(saved.params) or len(live_names) != len(saved.params):
                missing = sorted(set(saved.params) - set(live_names))
                extra = sorted(set(live_names) - set(saved.params))
                raise StateMismatchError(f"param group {gi} differs from the snapshot: missing {missing}, "
                                         f"not in snapshot {extra}")
            group_names.append(live_names)
        optimizer.load_state_dict(build_state_dict(info, group_names, read, live_groups))

    def optimizer_state_dict(self, info: OptimizerInfo, read: Callable[[list[TensorEntry]], dict[str, Any]]) -> Any:
        return build_state_dict(info, [list(g.params) for g in info.param_groups], read)

    # ------------------------------------------------------------------ random state
    def capture_rng(self, model: Any = None) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = list(torch.cuda.get_rng_state_all())
        return state

    def restore_rng(self, state: Mapping[str, Any], model: Any = None) -> None:
        if "torch" in state:
            torch.set_rng_state(state["torch"])
            if "cuda" in state and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda"])


#: the adapter instance the module-level helpers (used by the torch converter too) share
_ADAPTER = Adapter()


# ---------------------------------------------------------------------------- optimizer state dicts
def _parameter_names(optimizer: Any, sd: Mapping[str, Any], collected: Collected) -> list[str]:
    """Names of the optimizer's parameters in torch's id order."""
    by_memory = {}
    for s in collected.tensors:
        if isinstance(s.obj, torch.Tensor) and s.obj.numel():
            by_memory[(s.obj.data_ptr(), tuple(s.obj.shape), s.obj.dtype)] = s.name
    recorded = [g.get("param_names") for g in sd["param_groups"]]
    names = []
    for gi, group in enumerate(optimizer.param_groups):
        for pi, p in enumerate(group["params"]):
            name = collected.parameter_names.get(id(p))
            if name is None and p.numel():
                name = by_memory.get((p.data_ptr(), tuple(p.shape), p.dtype))
            if name is None and recorded[gi] is not None:
                name = recorded[gi][pi]
            if name is None:
                raise StateMismatchError(
                    f"optimizer param group {gi}, parameter {pi} (shape {list(p.shape)}) is not a tensor "
                    "of the saved model; save the module the optimizer was built from"
                )
            names.append(name)
    if len(set(names)) != len(names):
        raise StateMismatchError("the optimizer holds the same parameter twice")
    return names


def state_dict_ids(sd: Any, where: str = "optimizer") -> list[Any]:
    """The parameter ids of a torch optimizer state dict in position order, validating its shape."""
    if not isinstance(sd, dict) or not isinstance(sd.get("state"), dict) or not isinstance(sd.get("param_groups"), list):
        raise FormatError(f"{where}: not a torch optimizer state dict (needs 'state' and 'param_groups')")
    ids = []
    for gi, group in enumerate(sd["param_groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list):
            raise FormatError(f"{where}: param_groups[{gi}] has no 'params' list")
        ids += group["params"]
    if len(set(map(repr, ids))) != len(ids):
        raise FormatError(f"{where}: a parameter id appears twice in param_groups")
    return ids


def capture_state_dict(sd: Any, names: list[str], class_name: str, where: str = "optimizer") -> CapturedOptimizer:
    """Regroup a torch optimizer state dict by parameter name; ``names[i]`` names the i-th
    parameter in param-group order (torch's id order)."""
    adapter = _ADAPTER
    ids = state_dict_ids(sd, where)
    if len(names) != len(ids):
        raise StateMismatchError(f"{where}: {len(ids)} parameters but {len(names)} names")
    name_of = dict(zip(map(repr, ids), names))
    captured = CapturedOptimizer(class_name=class_name, groups=[])
    position = 0
    for gi, group in enumerate(sd["param_groups"]):
        members = names[position : position + len(group["params"])]
        position += len(group["params"])
        hyper = {}
        for k, v in group.items():
            if k in ("params", "param_names"):
                continue
            if isinstance(v, torch.Tensor):
                raise FormatError(f"{where}: param group {gi}: hyperparameter {k!r} is a tensor; "
                                  "lamina 1.0 stores hyperparameters as plain numbers")
            hyper[k] = plain_value(v, f"{where}.param_groups[{gi}].{k}")
        captured.groups.append((members, hyper))
    slots: dict[str, None] = {}
    for pid, state in sd["state"].items():
        name = name_of.get(repr(pid))
        if name is None or not isinstance(state, dict):
            raise FormatError(f"{where}: state for parameter id {pid!r}, which is in no param group")
        for slot, value in state.items():
            if not isinstance(slot, str) or not SLOT_NAME.fullmatch(slot):
                raise FormatError(f"{where}: state of {name!r}: slot name {slot!r} must match {SLOT_NAME.pattern}")
            slots.setdefault(slot, None)
            at = f"{where} state {name!r}/{slot}"
            if isinstance(value, torch.Tensor) and (value.dim() > 0 or value.is_complex()):
                source, _ = adapter.tensor_source(slot_key(name, slot), value)
                captured.tensors.setdefault(name, {})[slot] = source
            elif isinstance(value, torch.Tensor):
                source, _ = adapter.tensor_source(slot_key(name, slot), value)  # validates the dtype
                captured.scalars.setdefault(name, {})[slot] = Scalar(value.item(), source.dtype.code)
            elif value is None or isinstance(value, (bool, int, float)):
                captured.scalars.setdefault(name, {})[slot] = Scalar(plain_value(value, at))
            else:
                raise FormatError(f"{at}: {type(value).__name__} values are not supported")
    captured.slots = list(slots)
    return captured


def _match_type(saved: Any, live: Any) -> Any:
    """msgpack turns tuples into lists; give back a tuple (torch's type for betas) unless the live
    optimizer holds a list."""
    if isinstance(live, tuple) and isinstance(saved, list):
        return tuple(saved)
    return saved


def build_state_dict(
    info: OptimizerInfo, group_names: list[list[str]], read_tensors: Callable[[list[TensorEntry]], dict[str, Any]],
    live_groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A torch optimizer state dict from the snapshot's description.

    ``group_names[i]`` lists group i's parameters in the order the target optimizer holds them
    (ids are positions in that order); ``live_groups`` (a live optimizer's groups) restores tuple
    hyperparameters and ``param_names`` the way that optimizer expects them.
    """
    ids: dict[str, int] = {}
    groups = []
    for gi, (names, saved) in enumerate(zip(group_names, info.param_groups)):
        live = live_groups[gi] if live_groups is not None else {"param_names": None}
        for n in names:
            ids[n] = len(ids)
        group = {k: _match_type(v, live.get(k, ())) for k, v in saved.hyperparameters.items()}
        group["params"] = [ids[n] for n in names]
        if "param_names" in live:
            group["param_names"] = list(names)
        groups.append(group)
    tensors = read_tensors([t for s in info.state for t in s.tensors.values()])
    state: dict[int, dict[str, Any]] = {}
    for s in info.state:
        slots: dict[str, Any] = {slot: tensors[t.name] for slot, t in s.tensors.items()}
        for slot, scalar in s.scalars.items():
            slots[slot] = scalar.value if scalar.dtype is None else _ADAPTER.scalar(scalar.value, scalar.dtype)
        state[ids[s.param]] = slots
    return {"state": state, "param_groups": groups}


# ---------------------------------------------------------------------------- loading in place
def _direct_buffer(target: Any) -> memoryview | None:
    """Target memory as bytes when the stored bytes can be read straight into it (host memory,
    contiguous, no lazy conjugate/negative bit)."""
    if (target.device.type != "cpu" or not target.is_contiguous() or target.numel() == 0
            or target.is_conj() or target.is_neg()):
        return None
    return memoryview(target.reshape(-1).view(torch.uint8).numpy())


def _mismatch_hint(mismatched: list[TensorMismatch]) -> str:
    if any(m.snapshot_shape == m.module_shape for m in mismatched):
        return (" A dtype-only difference is never cast silently: cast the module to the snapshot's dtype "
                "(module.to(dtype)) before loading, or read art.state_dict() and convert yourself.")
    return ""


def _load_into_module(reader: TensorReader, resolve: Mapping[str, TensorEntry], module: Any,
                      strict: bool) -> LoadReport:
    """Copy snapshot tensors into ``module``'s parameters and buffers, wherever they live. With
    ``strict``, any difference raises StateMismatchError before a single byte is loaded.

    Contiguous host tensors are read into directly. Others (an accelerator, a non-contiguous
    view) get the bytes through a host staging tensor, one shard at a time per reader worker
    (pinned for CUDA/XPU, copied with ``non_blocking``), so extra memory is bounded by the shards
    in flight, never the model. Tensors on ``meta`` have no memory: StateMismatchError, nothing loaded.
    """
    targets = module.state_dict()  # detached tensors sharing memory with parameters / buffers
    targets = {n: t for n, t in targets.items() if isinstance(t, torch.Tensor)}
    on_meta = [n for n, t in targets.items() if t.device.type == "meta" and n in resolve]
    if on_meta:
        shown = ", ".join(on_meta[:5]) + (f" and {len(on_meta) - 5} more" if len(on_meta) > 5 else "")
        raise StateMismatchError(f"{len(on_meta)} module tensor(s) are on the meta device, with no memory to load "
                                 f"into ({shown}); allocate them first with module.to_empty(device=...), then load. "
                                 "Nothing was loaded.")
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
                                 f"Pass strict=False to load the tensors that match.{_mismatch_hint(mismatched)}",
                                 report)
    # Tied module tensors (same memory) are filled once; a stored tensor feeding two untied
    # module tensors is read once per destination, straight into each.
    seen_memory: set[tuple[str, int, str]] = set()
    direct: dict[str, memoryview] = {}  # stored tensor name -> the module memory it is read into
    staged: dict[str, list[tuple[Any, TensorEntry]]] = {}  # shard path -> (target, entry)
    for name in loadable:
        target, entry = targets[name], resolve[name]
        key = (str(target.device), target.data_ptr(), entry.name)
        if target.numel() and key in seen_memory:
            continue
        seen_memory.add(key)
        buffer = _direct_buffer(target) if entry.name not in direct else None
        if buffer is not None:
            direct[entry.name] = buffer  # made once: the view costs ~10 µs of torch calls a tensor
        else:
            staged.setdefault(entry.file, []).append((target, entry))
    entries = [resolve[n] for n in loadable]
    by_name = {e.name: e for e in entries}
    if strict:  # a missing, truncated or mismatched shard is found before any parameter changes
        reader.check_files(sorted({e.file for e in entries}))
    reader.read([by_name[n] for n in direct], "pt", lambda e: direct[e.name])

    def through_host(path: str) -> None:
        pairs = staged[path]
        staging: dict[str, tuple[Any, memoryview]] = {}
        for target, entry in pairs:
            if entry.name not in staging:
                staging[entry.name] = _ADAPTER.empty(entry.dtype, entry.shape, target.device)
        reader.read([by_name[n] for n in staging], "pt", lambda e: staging[e.name][1])
        with torch.no_grad():
            for target, entry in pairs:
                host = staging[entry.name][0]
                target.copy_(host, non_blocking=host.is_pinned())

    run_parallel(through_host, sorted(staged), getattr(reader, "max_workers", 1))
    return report
