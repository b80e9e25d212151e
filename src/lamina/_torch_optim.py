"""torch optimizer state <-> lamina's per-parameter-name form.

torch keys optimizer state by integer ids (parameter order across param groups); lamina keys it
by parameter name, so a restore does not depend on the order a fresh optimizer was built in.
Tensor slots (exp_avg, momentum_buffer, ...) go to shards under ``<param>/<slot>``; 0-d tensors
and Python numbers (step) are kept inline in the manifest with their dtype.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import FormatError, StateMismatchError
from ._manifest import OptimizerInfo, ParamGroup, Scalar, plain_value
from ._tensors import Collected, TensorSource, tensor_source

__all__ = ["CapturedOptimizer", "capture_optimizer", "restore_optimizer", "slot_key"]

_SLOT = re.compile(r"[A-Za-z0-9_.-]+")


def slot_key(param: str, slot: str) -> str:
    """Shard key of an optimizer slot. Slots never contain '/', so the key splits at its last '/'."""
    return f"{param}/{slot}"


@dataclass
class CapturedOptimizer:
    class_name: str
    groups: list[tuple[list[str], dict[str, Any]]]
    tensors: dict[str, dict[str, TensorSource]] = field(default_factory=dict)  # param -> slot -> source
    scalars: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    slots: list[str] = field(default_factory=list)


def _parameter_names(optimizer: Any, collected: Collected) -> list[str]:
    """Names of the optimizer's parameters in torch's id order."""
    by_memory = {}
    for s in collected.tensors:
        if s.obj.__class__.__module__.startswith("torch") and s.obj.numel():
            by_memory[(s.obj.data_ptr(), tuple(s.obj.shape), s.obj.dtype)] = s.name
    recorded = [g.get("param_names") for g in optimizer.state_dict()["param_groups"]]
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


def capture_optimizer(optimizer: Any, collected: Collected) -> CapturedOptimizer:
    """Regroup ``optimizer.state_dict()`` by parameter name."""
    if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "param_groups"):
        raise FormatError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    import torch

    names = _parameter_names(optimizer, collected)
    sd = optimizer.state_dict()
    cls = type(optimizer)
    captured = CapturedOptimizer(class_name=f"{cls.__module__}.{cls.__qualname__}", groups=[])
    position = 0
    for gi, group in enumerate(sd["param_groups"]):
        members = names[position : position + len(group["params"])]
        position += len(group["params"])
        hyper = {}
        for k, v in group.items():
            if k in ("params", "param_names"):
                continue
            if isinstance(v, torch.Tensor):
                raise FormatError(f"optimizer param group {gi}: hyperparameter {k!r} is a tensor; "
                                  "lamina 1.0 stores hyperparameters as plain numbers")
            hyper[k] = plain_value(v, f"optimizer.param_groups[{gi}].{k}")
        captured.groups.append((members, hyper))
    slots: dict[str, None] = {}
    for pid, state in sd["state"].items():
        name = names[pid]
        for slot, value in state.items():
            if not isinstance(slot, str) or not _SLOT.fullmatch(slot):
                raise FormatError(f"optimizer state of {name!r}: slot name {slot!r} must match {_SLOT.pattern}")
            slots.setdefault(slot, None)
            where = f"optimizer state {name!r}/{slot}"
            if isinstance(value, torch.Tensor) and (value.dim() > 0 or value.is_complex()):
                source, _ = tensor_source(slot_key(name, slot), value)
                captured.tensors.setdefault(name, {})[slot] = source
            elif isinstance(value, torch.Tensor):
                source, _ = tensor_source(slot_key(name, slot), value)  # validates the dtype
                captured.scalars.setdefault(name, {})[slot] = Scalar(value.item(), source.dtype.code)
            elif value is None or isinstance(value, (bool, int, float)):
                captured.scalars.setdefault(name, {})[slot] = Scalar(plain_value(value, where))
            else:
                raise FormatError(f"{where}: {type(value).__name__} values are not supported")
    captured.slots = list(slots)
    return captured


def _match_type(saved: Any, live: Any) -> Any:
    """msgpack turns tuples into lists; give back the live optimizer's container type (betas)."""
    if isinstance(live, tuple) and isinstance(saved, list):
        return tuple(saved)
    return saved


def restore_optimizer(
    info: OptimizerInfo, optimizer: Any, module: Any, read_tensors: Any
) -> None:
    """Load saved state into ``optimizer`` (built over ``module``'s parameters) by name.

    ``read_tensors(entries)`` returns torch tensors by entry name.
    """
    import torch

    names_by_id = {id(p): n for n, p in module.named_parameters()}
    live_groups = optimizer.param_groups
    if len(live_groups) != len(info.param_groups):
        raise StateMismatchError(f"the optimizer has {len(live_groups)} param groups, the snapshot "
                                 f"{len(info.param_groups)}; build it with the same groups")
    ids: dict[str, int] = {}
    groups = []
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
        for n in live_names:
            ids[n] = len(ids)
        group = {k: _match_type(v, live.get(k)) for k, v in saved.hyperparameters.items()}
        group["params"] = [ids[n] for n in live_names]
        if "param_names" in live:
            group["param_names"] = list(live_names)
        groups.append(group)
    entries = [t for s in info.state for t in s.tensors.values()]
    tensors = read_tensors(entries)
    state: dict[int, dict[str, Any]] = {}
    for s in info.state:
        slots: dict[str, Any] = {slot: tensors[t.name] for slot, t in s.tensors.items()}
        for slot, scalar in s.scalars.items():
            if scalar.dtype is None:
                slots[slot] = scalar.value
            else:
                from ._dtypes import torch_dtype

                slots[slot] = torch.tensor(scalar.value, dtype=torch_dtype(scalar.dtype))
        state[ids[s.param]] = slots
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def optimizer_info(captured: CapturedOptimizer, tensor_entries: Mapping[str, Any]) -> OptimizerInfo:
    """Assemble the manifest's optimizer description; ``tensor_entries`` maps shard key -> TensorEntry."""
    from ._manifest import ParamState

    state = []
    for name in (n for params, _ in captured.groups for n in params):
        tensors = {slot: tensor_entries[slot_key(name, slot)] for slot in captured.tensors.get(name, {})}
        scalars = captured.scalars.get(name, {})
        if tensors or scalars:
            state.append(ParamState(param=name, tensors=tensors, scalars=dict(scalars)))
    return OptimizerInfo(
        class_name=captured.class_name,
        framework="torch",
        param_groups=tuple(ParamGroup(tuple(n), h) for n, h in captured.groups),
        slots=tuple(captured.slots),
        state=tuple(state),
    )
