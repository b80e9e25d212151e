"""Runs the adversarial corpus (tests/adversarial/): every hostile input gets its typed error, in
bounded time."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from adversarial import Case, all_cases

CASES = all_cases()


def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 10, [c.name for c in CASES]


def _run_with_deadline(case: Case, target: object) -> BaseException | None:
    """The attack's exception (None if it returned), run in a daemon thread so a hang fails the
    test at the deadline instead of freezing the suite."""
    outcome: list[BaseException | None] = []

    def attack() -> None:
        try:
            case.attack(target)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever was raised
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=attack, name=f"adversarial-{case.name}", daemon=True)
    thread.start()
    thread.join(case.deadline)
    if thread.is_alive():
        pytest.fail(f"{case.name}: still running after {case.deadline} s (a hang)")
    return outcome[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_adversarial_input_gets_typed_error(case: Case, tmp_path: Path) -> None:
    target = case.build(tmp_path)
    try:
        raised = _run_with_deadline(case, target)
    finally:
        if case.cleanup is not None:
            case.cleanup(target)
    assert raised is not None, f"{case.name}: accepted without an error"
    assert isinstance(raised, case.error), f"{case.name}: {type(raised).__module__}.{type(raised).__qualname__}: {raised}"
    assert re.search(case.match, str(raised)), f"{case.name}: message {str(raised)!r} does not match {case.match!r}"
