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

from lamina._errors import FormatError, StateMismatchError
from lamina.format.manifest import OptimizerInfo, ParamGroup, Scalar, plain_value
from lamina.frameworks.base import Collected, TensorSource, tensor_source

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
    framework: str = "torch"


def _parameter_names(optimizer: Any, sd: Mapping[str, Any], collected: Collected) -> list[str]:
    """Names of the optimizer's parameters in torch's id order."""
    by_memory = {}
    for s in collected.tensors:
        if s.obj.__class__.__module__.startswith("torch") and s.obj.numel():
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


def capture_optimizer(optimizer: Any, collected: Collected) -> CapturedOptimizer:
    """Regroup a live optimizer's state by parameter name."""
    if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "param_groups"):
        raise FormatError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    cls = type(optimizer)
    sd = optimizer.state_dict()
    return capture_state_dict(sd, _parameter_names(optimizer, sd, collected), f"{cls.__module__}.{cls.__qualname__}")


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
    import torch

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
            if not isinstance(slot, str) or not _SLOT.fullmatch(slot):
                raise FormatError(f"{where}: state of {name!r}: slot name {slot!r} must match {_SLOT.pattern}")
            slots.setdefault(slot, None)
            at = f"{where} state {name!r}/{slot}"
            if isinstance(value, torch.Tensor) and (value.dim() > 0 or value.is_complex()):
                source, _ = tensor_source(slot_key(name, slot), value)
                captured.tensors.setdefault(name, {})[slot] = source
            elif isinstance(value, torch.Tensor):
                source, _ = tensor_source(slot_key(name, slot), value)  # validates the dtype
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
    info: OptimizerInfo, group_names: list[list[str]], read_tensors: Any,
    live_groups: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A torch optimizer state dict from the snapshot's description.

    ``group_names[i]`` lists group i's parameters in the order the target optimizer holds them
    (ids are positions in that order); ``live_groups`` (a live optimizer's groups) restores tuple
    hyperparameters and ``param_names`` the way that optimizer expects them.
    """
    import torch

    from lamina.format.dtypes import torch_dtype

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
            slots[slot] = (scalar.value if scalar.dtype is None
                           else torch.tensor(scalar.value, dtype=torch_dtype(scalar.dtype)))
        state[ids[s.param]] = slots
    return {"state": state, "param_groups": groups}


def restore_optimizer(info: OptimizerInfo, optimizer: Any, module: Any, read_tensors: Any) -> None:
    """Load saved state into ``optimizer`` (built over ``module``'s parameters) by name, whatever
    order its groups hold the parameters in. ``read_tensors(entries)`` returns torch tensors."""
    names_by_id = {id(p): n for n, p in module.named_parameters()}
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
    optimizer.load_state_dict(build_state_dict(info, group_names, read_tensors, live_groups))


def optimizer_info(captured: CapturedOptimizer, tensor_entries: Mapping[str, Any]) -> OptimizerInfo:
    """Assemble the manifest's optimizer description; ``tensor_entries`` maps shard key -> TensorEntry."""
    from lamina.format.manifest import ParamState

    state = []
    for name in (n for params, _ in captured.groups for n in params):
        tensors = {slot: tensor_entries[slot_key(name, slot)] for slot in captured.tensors.get(name, {})}
        scalars = captured.scalars.get(name, {})
        if tensors or scalars:
            state.append(ParamState(param=name, tensors=tensors, scalars=dict(scalars)))
    return OptimizerInfo(
        class_name=captured.class_name,
        framework=captured.framework,
        param_groups=tuple(ParamGroup(tuple(n), h) for n, h in captured.groups),
        slots=tuple(captured.slots),
        state=tuple(state),
    )
