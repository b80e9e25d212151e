"""Which model parameters a torch optimizer's param groups hold, when the checkpoint does not say.

A state dict built from ``parameters()`` keys the optimizer by position only. What is known: the
model's candidate parameters in order, each group's size, and for each optimizer parameter the
shapes of its state tensors (none for a parameter that never had a gradient). Every group is
assumed to keep model order (``parameters()`` and list comprehensions over it do), and the
groups share out the candidates, leaving out frozen ones.

Two hypotheses are tried, the simpler first:

1. *blocks*: the groups are contiguous runs of the trained parameters, in some group order (a
   backbone / head split, one group per sub-module);
2. *interleaved*: each group is any subsequence of model order (a decay / no-decay split).

A hypothesis is used only when exactly one assignment fits every state shape; two or more is a
refusal naming the parameters they disagree on. The search is a depth-first walk over states
(candidate index, progress in each group), each state visited once and the walk stopped at the
second solution, within a bounded amount of work.

Nothing here imports torch: shapes are tuples.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from lamina._errors import StateMismatchError

__all__ = ["Shape", "shape_fits", "assign_groups"]

Shape = tuple[int, ...]
_MAX_BLOCK_GROUPS = 6  # block orders tried: at most 6! = 720
_BUDGET = 2_000_000  # work units for one alignment (about 2 s): bounds time and memory on any input
_STATE_COST = 20  # entering a search state costs about 20 times one shape test


def shape_fits(param: Shape, slots: Sequence[Shape]) -> bool:
    """Whether state tensors of shapes ``slots`` can belong to a parameter of shape ``param``.

    Each slot has the parameter's shape, or that shape with some dimensions reduced to 1 as long
    as together they span it (Adafactor's row and column variances); no slot fits anything.
    """
    if not slots:
        return True
    for s in slots:
        if len(s) != len(param) or any(a != b and a != 1 for a, b in zip(s, param)):
            return False
    return tuple(max(dims) for dims in zip(*slots)) == param


class _TooMany(Exception):
    pass


def _search(n: int, sizes: Sequence[int], fits: Callable[[int, int, int], bool], skip: bool,
            budget: list[int]) -> list[tuple[int, ...]]:
    """Up to two labelings of candidates ``0..n-1`` that place sequence ``j``'s items ``0..sizes[j]-1``
    in order (label ``j``), candidate ``i`` taking item ``q`` of ``j`` only if ``fits(i, j, q)``;
    with ``skip``, other candidates are left out (label -1). The work is charged to ``budget[0]``.

    A depth-first walk along the candidates; a state (candidate index, items placed per sequence)
    is encoded as one integer and entered at most once: afterwards it is known dead, or known to
    lead to the end (``succ`` keeps one way on), and reaching it again by another path is a
    second solution.
    """
    # One iterative walk, kept whole (~100 lines): the state encoding, the dead/leads-on memo and
    # the explicit stack are shared by every step, and splitting them apart hides the invariant.
    k, total = len(sizes), sum(sizes)
    budget[0] -= k * n + total
    if budget[0] < 0:
        raise _TooMany
    # latest[j][q]: the last candidate that can take item q of sequence j with items q+1.. still
    # placeable after it (sequence j alone); a state past it is dead. Found backwards in O(n) per j.
    latest: list[list[int]] = []
    for j, size in enumerate(sizes):
        row, i = [0] * size, n
        for q in reversed(range(size)):
            i -= 1
            while i >= 0 and not fits(i, j, q):
                i -= 1
            row[q] = i
        latest.append(row)
    weights, stride = [], 1  # code = i * stride + sum(p[j] * weights[j])
    for size in sizes:
        weights.append(stride)
        stride *= size + 1
    final = n * stride + sum(size * w for size, w in zip(sizes, weights))
    succ: dict[int, tuple[int, int] | None] = {final: None}
    dead: set[int] = set()
    p, placed = [0] * k, 0

    def alive(i: int) -> bool:
        return (total - placed <= n - i and i < n
                and all(p[j] >= sizes[j] or latest[j][p[j]] >= i for j in range(k)))

    def suffix(code: int) -> tuple[int, ...]:
        out = []
        while (step := succ[code]) is not None:
            out.append(step[0])
            code = step[1]
        return tuple(out)

    if final == 0:
        return [()]
    if not alive(0):
        return []
    found: list[tuple[int, ...]] = []
    codes, nexts, labels = [0], [0], []  # per depth (= candidate index): state, next option, label taken
    while codes:
        i, code = len(labels), codes[-1]
        entered = False
        while nexts[-1] <= k:
            option = nexts[-1]
            nexts[-1] += 1
            if option < k:
                if p[option] >= sizes[option] or not fits(i, option, p[option]):
                    continue
                label, child = option, code + stride + weights[option]
            elif skip and total - placed < n - i:
                label, child = -1, code + stride
            else:
                continue
            if child in dead:
                continue
            if child in succ:  # a way on to the end is known: a new solution through this edge
                found.append((*labels, label, *suffix(child)))
                succ.setdefault(code, (label, child))
                if len(found) == 2:
                    return found
                continue
            if label >= 0:
                p[label] += 1
                placed += 1
            if not alive(i + 1):
                dead.add(child)
                if label >= 0:
                    p[label] -= 1
                    placed -= 1
                continue
            budget[0] -= _STATE_COST
            if budget[0] < 0:
                raise _TooMany
            codes.append(child)
            nexts.append(0)
            labels.append(label)
            entered = True
            break
        if entered:
            continue
        codes.pop()
        nexts.pop()
        if code in succ:
            if codes:
                succ.setdefault(codes[-1], (labels[-1], code))
        else:
            dead.add(code)
        if labels:
            label = labels.pop()
            if label >= 0:
                p[label] -= 1
                placed -= 1
    return found


def assign_groups(candidates: Sequence[tuple[str, Shape]], groups: Sequence[Sequence[Sequence[Shape]]],
                  where: str, hint: str) -> list[list[str]]:
    """The candidates each group holds, in order.

    Args:
        candidates: the model's parameters (name, shape) in model order.
        groups: for each param group, for each of its parameters in order, the shapes of its state
            tensors (empty when it has none).
        where, hint: for messages.
    Raises:
        StateMismatchError: no assignment fits, or more than one does (naming the parameters
        they disagree on), or the search is too large.
    """
    n = len(candidates)
    sizes = [len(g) for g in groups]
    skip = sum(sizes) < n
    if sum(sizes) > n:
        raise StateMismatchError(f"{where}: the optimizer holds {sum(sizes)} parameters but the model has only {n} "
                                 f"candidate parameters; {hint}")
    # fits depends on shapes only: decide it once per (candidate shape, state shapes) pair
    cand_kind: dict[Shape, int] = {}
    item_kind: dict[tuple[Shape, ...], int] = {}
    cand_of = [cand_kind.setdefault(shape, len(cand_kind)) for _, shape in candidates]
    item_of = [[item_kind.setdefault(tuple(slots), len(item_kind)) for slots in g] for g in groups]
    cand_shapes, item_slots, width = list(cand_kind), list(item_kind), len(item_kind)
    table: dict[int, bool] = {}  # filled lazily: forged inputs can make every shape distinct

    def fits_kinds(cand: int, item: int) -> bool:
        key = cand * width + item
        known = table.get(key)
        if known is None:
            known = table[key] = shape_fits(cand_shapes[cand], item_slots[item])
        return known

    def fits_item(i: int, j: int, q: int) -> bool:
        return fits_kinds(cand_of[i], item_of[j][q])

    budget = [_BUDGET]
    nonempty = [j for j, size in enumerate(sizes) if size]
    try:
        solutions: list[tuple[int, ...]] = []
        if len(nonempty) <= _MAX_BLOCK_GROUPS:
            for order in itertools.permutations(nonempty):
                owner = [j for j in order for _ in range(sizes[j])]  # the group of each item of the run
                kinds = [kind for j in order for kind in item_of[j]]
                fits_run = lambda i, _, q: fits_kinds(cand_of[i], kinds[q])  # noqa: E731
                for labels in _search(n, [len(kinds)], fits_run, skip, budget):
                    owners = iter(owner)
                    solutions.append(tuple(next(owners) if label == 0 else -1 for label in labels))
                if len(solutions) >= 2:
                    break
        if not solutions and len(nonempty) > 1:
            solutions = _search(n, sizes, fits_item, skip, budget)
    except _TooMany:
        raise StateMismatchError(f"{where}: too many ways to share the model's {n} parameters among the "
                                 f"{len(groups)} param groups to search them all; {hint}") from None
    if not solutions:
        raise StateMismatchError(f"{where}: no assignment of the model's {n} candidate parameters to the "
                                 f"{len(groups)} param group(s) of sizes {sizes} keeps model order and fits "
                                 f"every state shape; {hint}")
    if len(solutions) > 1:
        a, b = solutions[:2]

        def place(label: int) -> str:
            return "not in the optimizer" if label < 0 else f"group {label}"

        differ = [f"{candidates[i][0]!r} ({place(a[i])} or {place(b[i])})" for i in range(n) if a[i] != b[i]]
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise StateMismatchError(f"{where}: cannot tell which param group holds which parameter: more than one "
                                 f"assignment keeps model order and fits every state shape; two of them differ "
                                 f"on {shown}; {hint}")
    out: list[list[str]] = [[] for _ in groups]
    for (name, _), label in zip(candidates, solutions[0]):
        if label >= 0:
            out[label].append(name)
    return out
