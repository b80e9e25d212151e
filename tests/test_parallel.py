"""lamina._parallel.run_parallel: results in item order, the first failing item's error, no call
started after a failure, and every item run exactly once."""

from __future__ import annotations

import threading
import time

import pytest

from lamina._parallel import run_parallel


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_results_come_back_in_item_order_each_item_run_once(workers: int) -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def square(x: int) -> int:
        with lock:
            calls.append(x)
        return x * x

    assert run_parallel(square, list(range(200)), workers) == [x * x for x in range(200)]
    assert sorted(calls) == list(range(200))


def test_work_runs_on_several_pool_threads_not_the_caller() -> None:
    names: set[str] = set()
    barrier = threading.Barrier(2, timeout=5)

    def record(x: int) -> None:
        names.add(threading.current_thread().name)
        if x < 2:
            barrier.wait()  # the first two items run at the same time, on two threads

    run_parallel(record, list(range(20)), 2)
    assert len(names) == 2 and all(n.startswith("lamina-io") for n in names)


def test_the_first_items_error_is_raised_and_no_call_starts_after_a_failure() -> None:
    started: list[int] = []

    def job(x: int) -> None:
        started.append(x)
        if x == 1:
            time.sleep(0.05)
            raise ValueError("item 1")
        if x == 0:
            time.sleep(0.1)  # fails after item 1, but comes first in the list
            raise KeyError("item 0")
        time.sleep(0.01)

    with pytest.raises(KeyError, match="item 0"):
        run_parallel(job, list(range(50)), 2)
    # both threads were busy until they failed, so nothing else started (item 1 may not even
    # have started, on a machine slow enough to start its thread after item 0 failed)
    assert 0 in started and set(started) <= {0, 1}
