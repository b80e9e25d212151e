"""Optimizer state by parameter name, framework-neutral: what an adapter captures, and how the
manifest's optimizer description (spec §6) is built from it.

Frameworks key optimizer state their own way (torch by integer ids, Keras by variable order);
lamina keys it by parameter name, so a restore does not depend on the order a fresh optimizer
was built in. Tensor slots go to shards under ``<param>/<slot>``; scalars stay inline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lamina.format.manifest import OptimizerInfo, ParamGroup, ParamState, Scalar
from lamina.frameworks.base import TensorSource

__all__ = ["CapturedOptimizer", "SLOT_NAME", "slot_key", "optimizer_info"]

#: slot names never contain '/', so a shard key splits at its last '/'
SLOT_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def slot_key(param: str, slot: str) -> str:
    """Shard key of an optimizer slot."""
    return f"{param}/{slot}"


@dataclass
class CapturedOptimizer:
    """An optimizer's state regrouped by parameter name, ready to write."""

    class_name: str
    groups: list[tuple[list[str], dict[str, Any]]]  # (parameter names, hyperparameters) per group
    tensors: dict[str, dict[str, TensorSource]] = field(default_factory=dict)  # param -> slot -> source
    scalars: dict[str, dict[str, Scalar]] = field(default_factory=dict)
    slots: list[str] = field(default_factory=list)
    framework: str = "torch"
    #: the adapter's own description of where the state lives in its framework's files
    layout: Any = None


def optimizer_info(captured: CapturedOptimizer, tensor_entries: Mapping[str, Any]) -> OptimizerInfo:
    """Assemble the manifest's optimizer description; ``tensor_entries`` maps shard key -> TensorEntry."""
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
