"""Exact resumption of Keras 3 training through ``lamina.CheckpointManager`` (issue 11, item 3):
N epochs, ``save``, a *fresh process* restores model, optimizer and random state in
``on_train_begin``, M more epochs — bitwise equal (sha256 of every weight, BatchNorm statistics
included, and of every optimizer variable) to N+M epochs uninterrupted, on a model with Dropout
and BatchNormalization; Adam, AdamW, SGD with momentum and RMSprop on TensorFlow, Adam on torch.
A negative control shows the random state is needed, so equality is not vacuous.

Keras picks its backend once per process: each backend runs ``tests/keras_jobs/resume_job.py``
in subprocesses with ``KERAS_BACKEND`` set (both backends at once, to bound the wall time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

JOB = Path(__file__).parent / "keras_jobs" / "resume_job.py"
OPTIMIZERS = {"tensorflow": ["adam", "adamw", "sgd_momentum", "rmsprop"], "torch": ["adam"]}


def _run_backends(phase: str, root: Path) -> dict[str, dict]:
    """Runs the job's ``phase`` for every backend in parallel; each prints one JSON line."""
    procs = {}
    for backend, names in OPTIMIZERS.items():
        log = open(root / f"{backend}-{phase}.log", "w+")
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs[backend] = (subprocess.Popen([sys.executable, str(JOB), phase, str(root / backend), *names],
                                           stdout=subprocess.PIPE, stderr=log, text=True, env=env), log)
    out = {}
    for backend, (proc, log) in procs.items():
        stdout, _ = proc.communicate(timeout=300)
        log.seek(0)
        assert proc.returncode == 0, f"{backend} {phase}: rc {proc.returncode}\n{log.read()[-4000:]}"
        log.close()
        out[backend] = json.loads(stdout.strip().splitlines()[-1])
        assert out[backend]["backend"] == backend
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per backend and optimizer: ``full`` (N+M epochs), ``first`` (N epochs, saved), and from a
    second process ``resumed`` and, for the first optimizer, ``control``."""
    root = tmp_path_factory.mktemp("keras-resume")
    first = _run_backends("first", root)
    second = _run_backends("second", root)
    return {b: {name: {**first[b][name], **second[b][name]} for name in names} for b, names in OPTIMIZERS.items()}


@pytest.mark.parametrize("backend, optimizer", [(b, n) for b, names in OPTIMIZERS.items() for n in names])
def test_checkpoint_manager_resume_is_bitwise(runs: dict, backend: str, optimizer: str) -> None:
    run = runs[backend][optimizer]
    assert run["first"]["iterations"] == 16 and run["full"]["iterations"] == run["resumed"]["iterations"] == 32
    assert run["first"]["weights"] != run["full"]["weights"]  # the M epochs after the restore did train
    assert run["resumed"]["weights"] == run["full"]["weights"], f"{backend}/{optimizer}: weights differ"
    assert run["resumed"]["optimizer"] == run["full"]["optimizer"], f"{backend}/{optimizer}: optimizer state differs"


@pytest.mark.parametrize("backend", list(OPTIMIZERS))
def test_random_state_is_needed(runs: dict, backend: str) -> None:
    """Negative control: the same restore, leaving out the Dropout layer's SeedGenerator state
    (TensorFlow) or the global random state (torch, whose Dropout draws from torch's generator),
    gives different weights — so the bitwise equality above depends on the RNG restore."""
    run = runs[backend][OPTIMIZERS[backend][0]]
    assert run["control"]["iterations"] == run["full"]["iterations"]
    assert run["control"]["weights"] != run["full"]["weights"]
