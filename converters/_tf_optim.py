"""Which variables of a TensorFlow checkpoint are optimizer state, and whose (no TensorFlow import).

Three layouts, each grouped only where the checkpoint itself proves the pairing:

* **Object graph with slot variables** (TF2 ``tf.train.Checkpoint`` of ``tf.compat.v1.train``
  optimizers and of tf.keras 2 optimizers): the optimizer node lists ``(original variable, slot
  name, slot variable)`` triples; those are used as they are.
* **Object graph of a Keras 3 optimizer** (no slot variables): the optimizer node has a list
  ``_trainable_variables`` and per-slot lists (``_momentums``, ``_velocities``, ...) indexed the
  same way; a slot list is used only if every element has the shape of the variable at its index.
* **Names** (TF1 ``Saver``, e.g. the original BERT release): ``<p>/<suffix>`` is a slot of ``p``
  when ``p`` is a variable of the same shape and ``suffix`` a slot name TF1 optimizers or BERT's
  ``AdamWeightDecayOptimizer`` use.

Optimizer scalars (0-d variables owned by the optimizer: ``beta1_power``, Keras's ``_iterations``
and ``_learning_rate``) become hyperparameters; ``global_step`` is the training loop's, not the
optimizer's, and stays a tensor. Anything unproven stays a plain tensor with a note saying why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from lamina.frameworks.optim import SLOT_NAME

__all__ = ["Node", "Plan", "plan_object_graph", "plan_by_names", "NAME_SLOTS"]

#: slot names of TF1 optimizers (``<var>/<slot>`` in a Saver checkpoint) and of BERT's optimizer
NAME_SLOTS = frozenset({"Adam", "Adam_1", "Momentum", "RMSProp", "RMSProp_1", "Adagrad", "Adadelta",
                        "Adadelta_1", "Ftrl", "Ftrl_1", "ProximalAdagrad", "adam_m", "adam_v", "lamb_m", "lamb_v"})
_NAME_SCALAR = re.compile(r"(?:.*/)?beta[12]_power(?:_\d+)?")
#: children of a Keras 3 optimizer that are lists but not slots
_KERAS_NOT_SLOTS = {"_variables", "_trainable_variables", "_trainable_variables_indices"}


@dataclass
class Node:
    """One node of a ``TrackableObjectGraph``, reduced to what grouping needs."""

    children: list[tuple[int, str]]  # (node id, local name)
    key: str | None = None  # checkpoint key of its VARIABLE_VALUE attribute
    full_name: str = ""
    slot_variables: list[tuple[int, str, int]] = field(default_factory=list)  # (original, slot, slot variable)


@dataclass
class Plan:
    """The optimizer found in a checkpoint, by checkpoint names."""

    params: list[str]  # parameter names in group order
    slots: dict[str, tuple[str, str]]  # slot variable's name -> (parameter name, slot name)
    scalars: dict[str, str]  # optimizer scalar's name -> hyperparameter role

    @property
    def slot_names(self) -> list[str]:
        return list(dict.fromkeys(slot for _, slot in self.slots.values()))


def _scalars(nodes: list[Node], opt: int, shapes: Mapping[str, tuple[int, ...]], taken: set[str]) -> dict[str, str]:
    out = {}
    for child, local in nodes[opt].children:
        key = nodes[child].key
        if key is not None and key not in taken and shapes.get(key) == ():
            out[key] = local
    return out


def _from_slot_variables(nodes: list[Node], opt: int, shapes: Mapping[str, tuple[int, ...]],
                         notes: list[str]) -> Plan | None:
    params: dict[str, None] = {}
    slots: dict[str, tuple[str, str]] = {}
    for original, slot, variable in nodes[opt].slot_variables:
        if not (0 <= original < len(nodes) and 0 <= variable < len(nodes)):
            notes.append("the object graph names a slot variable node that does not exist")
            return None
        param, key = nodes[original].key, nodes[variable].key
        if param is None or key is None or param not in shapes or key not in shapes:
            continue  # a slot TF did not save (e.g. of an untracked variable)
        if not SLOT_NAME.fullmatch(slot) or shapes[param] != shapes[key] or key in slots:
            notes.append(f"slot {slot!r} of {param!r} does not pair with it (name, shape or duplicate)")
            return None
        params[param] = None
        slots[key] = (param, slot)
    if not slots:
        return None
    return Plan(list(params), slots, _scalars(nodes, opt, shapes, set(params) | set(slots)))


def _slot_name(local: str, members: list[tuple[Node, Node]]) -> str:
    """Keras names a slot ``<optimizer>/<variable path with _>_<slot>``; else the list's name."""
    names = set()
    for param, slot in members:
        stem = param.full_name.replace("/", "_") + "_"
        tail = slot.full_name.rpartition("/")[2]
        names.add(tail[len(stem):] if tail.startswith(stem) and len(tail) > len(stem) else None)
    found = names.pop() if len(names) == 1 else None
    return found if found and SLOT_NAME.fullmatch(found) else local.lstrip("_")


def _from_keras_lists(nodes: list[Node], opt: int, shapes: Mapping[str, tuple[int, ...]],
                      notes: list[str]) -> Plan | None:
    children = dict((local, child) for child, local in nodes[opt].children)
    trainable = [(local, nodes[c]) for c, local in nodes[children["_trainable_variables"]].children]
    if not trainable or any(not local.isdigit() or node.key not in shapes for local, node in trainable):
        return None
    by_index = {int(local): node for local, node in trainable}
    params = [by_index[i].key for i in sorted(by_index)]
    slots: dict[str, tuple[str, str]] = {}
    for local, child in children.items():
        if local in _KERAS_NOT_SLOTS or nodes[child].key is not None or not nodes[child].children:
            continue
        members = []
        for element, index in nodes[child].children:
            node = nodes[element]
            if not index.isdigit() or int(index) not in by_index or node.key not in shapes:
                members = []
                break
            members.append((by_index[int(index)], node))
        if not members:
            continue  # not a per-variable list
        if any(shapes[slot.key] != shapes[param.key] for param, slot in members):  # type: ignore[index]
            notes.append(f"optimizer list {local!r} does not match the trainable variables' shapes; kept as tensors")
            return None
        name = _slot_name(local, members)
        for param, slot in members:
            slots[slot.key] = (param.key, name)  # type: ignore[index]
    if not slots:
        return None
    return Plan([p for p in params if p is not None], slots, _scalars(nodes, opt, shapes, set(params) | set(slots)))


def plan_object_graph(nodes: list[Node], shapes: Mapping[str, tuple[int, ...]], notes: list[str]) -> Plan | None:
    """The optimizer of a TF2 object-based checkpoint, or None (reasons appended to ``notes``).

    Example:
        >>> nodes = [Node([(1, "w"), (2, "opt")]), Node([], "w/.A"), Node([], slot_variables=[(1, "m", 3)]),
        ...          Node([], "w/.S/m")]
        >>> plan_object_graph(nodes, {"w/.A": (2,), "w/.S/m": (2,)}, []).slots
        {'w/.S/m': ('w/.A', 'm')}
    """
    with_slots = [i for i, n in enumerate(nodes) if n.slot_variables]
    keras = [i for i, n in enumerate(nodes) if any(local == "_trainable_variables" for _, local in n.children)
             and not n.slot_variables]
    found = [p for p in ([_from_slot_variables(nodes, i, shapes, notes) for i in with_slots]
                         + [_from_keras_lists(nodes, i, shapes, notes) for i in keras]) if p is not None]
    if len(found) > 1:
        notes.append(f"{len(found)} optimizers in one checkpoint; lamina records one, so all slots are kept as tensors")
        return None
    return found[0] if found else None


def plan_by_names(shapes: Mapping[str, tuple[int, ...]]) -> Plan | None:
    """The optimizer of a name-based (TF1 ``Saver``) checkpoint, or None.

    Example:
        >>> plan_by_names({"a/kernel": (2,), "a/kernel/Adam": (2,), "beta1_power": ()}).slots
        {'a/kernel/Adam': ('a/kernel', 'Adam')}
    """
    params: dict[str, None] = {}
    slots: dict[str, tuple[str, str]] = {}
    for name in sorted(shapes):
        param, _, suffix = name.rpartition("/")
        if suffix in NAME_SLOTS and param in shapes and shapes[param] == shapes[name] \
                and param.rpartition("/")[2] not in NAME_SLOTS:
            params[param] = None
            slots[name] = (param, suffix)
    if not slots:
        return None
    scalars = {n: n for n in sorted(shapes) if _NAME_SCALAR.fullmatch(n) and shapes[n] == ()}
    return Plan(list(params), slots, scalars)
