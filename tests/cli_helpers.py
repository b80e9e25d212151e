"""Shared helpers for tests that run the ``lamina`` CLI as users do (a subprocess)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def cli(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lamina", *map(str, args)], capture_output=True, text=True)


def cli_start(*args: str | os.PathLike[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "lamina", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def cli_wait(proc: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def cli_parallel(*calls: tuple[str | os.PathLike[str], ...]) -> list[subprocess.CompletedProcess[str]]:
    """Independent ``lamina`` invocations run side by side (each one imports torch: ~2 s)."""
    return [cli_wait(proc) for proc in [cli_start(*args) for args in calls]]


def leftovers(directory: Path) -> list[str]:
    """Temporary siblings a failed or finished write must not leave behind."""
    return sorted(p.name for p in directory.iterdir() if "lamina-tmp" in p.name or "lamina-convert" in p.name
                  or "lamina-old" in p.name)


def assert_clean_cli_error(res: subprocess.CompletedProcess[str], error: type, *needles: str) -> None:
    """Exit code 2, exactly one ``error: <Type>: ...`` line naming every needle, no traceback."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {error.__name__}: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def wait_for_line(proc: subprocess.Popen[str], wanted: str, timeout: float = 120.0,
                  stderr: Callable[[], str] | None = None) -> None:
    """Block until the child prints ``wanted`` on stdout (fail after ``timeout`` or if it exits);
    ``stderr()`` gives the child's error output for the failure message."""
    assert proc.stdout is not None
    errors = stderr or (lambda: proc.stderr.read() if proc.stderr else "")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == wanted:
                return
            if not line:
                raise AssertionError(f"the child exited ({proc.wait()}) before printing {wanted!r}: {errors()}")
    raise AssertionError(f"the child did not print {wanted!r} within {timeout} s")
