"""An adversarial corpus: hostile or broken inputs, each with the typed error a user must get.

Each module here owns one area (``snapshot``, ``http``, ``keras``, ``onnx``, ``torch_pickle``, ``hf``,
``tf_checkpoint``) and exports ``CASES``, a list of :class:`Case`. ``tests/test_adversarial.py``
runs every case with a deadline and checks that the attack raises exactly the promised :class:`lamina.LaminaError`
subclass with a message that names what is wrong. Adding a case is adding one ``Case(...)`` line
(and, when the input is new, a small builder function) — the suite grows without new test code.

A case's ``build`` makes the input under a fresh directory and returns what ``attack`` needs (a
path, a URL, an object); ``attack`` is the user action (``lamina.open(...).layer(...)``,
``lamina.convert(...)``, a CLI call). ``cleanup`` (optional) releases what ``build`` started.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Case", "all_cases", "AREAS", "varint"]

#: modules of this package that contribute cases (missing ones are an error, not a skip)
AREAS = ("snapshot", "http", "keras", "onnx", "torch_pickle", "tf_checkpoint", "hf")


@dataclass(frozen=True)
class Case:
    """One hostile input and what a user must see for it.

    Attributes:
        name: short id, unique in the corpus (shown as the pytest id).
        build: ``build(tmp_dir) -> target``; makes the input.
        attack: ``attack(target)``; what a user does with it.
        error: the lamina error class the attack must raise (subclasses allowed).
        match: a regex the error message must contain (``re.search``).
        deadline: seconds the attack may take before the case fails as a hang.
        cleanup: ``cleanup(target)`` after the attack, pass or fail (servers, FIFOs' writers).
    """

    name: str
    build: Callable[[Path], Any]
    attack: Callable[[Any], object]
    error: type[BaseException]
    match: str
    deadline: float = 30.0
    cleanup: Callable[[Any], None] | None = None


def varint(n: int) -> bytes:
    """A base-128 varint (protobuf, LevelDB tables): what hand-built hostile files are made of."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def all_cases() -> list[Case]:
    """Every case of every area, in area order; names must be unique."""
    cases: list[Case] = []
    for area in AREAS:
        module = importlib.import_module(f"{__name__}.{area}")
        cases += module.CASES
    names = [c.name for c in cases]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"duplicate adversarial case names: {duplicated}")
    return cases
