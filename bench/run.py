"""lamina performance benchmark: save, save memory, full load, one-layer load.

    python bench/run.py                 # full run (~0.73 GB model, plus a 4x ~2.9 GB one); a few minutes
    python bench/run.py --scale 0.1     # quick smoke run (fewer blocks, smaller vocabulary)
    python bench/run.py --out DIR       # where data goes (default: a temp dir under bench/_data)

Compares ``lamina.save`` / ``lamina.open(...).load_into`` / ``lamina.open(...).layer`` against
``safetensors.torch`` (one file) and ``torch.save`` / ``torch.load`` on a generated bf16
transformer-like state dict, prints a table with ratios and whether each target is met, and writes
results.json and results.md into the output directory. Big files are removed at the end (unless
``--keep``). See docs/performance.md for the method and the numbers of a reference run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import safetensors  # noqa: E402
import safetensors.torch  # noqa: E402
import torch  # noqa: E402

import lamina  # noqa: E402
import _investigate as inv  # noqa: E402
from _common import (  # noqa: E402
    MID_LAYER,
    Config,
    build_module,
    fsync_path,
    layer_bytes,
    make_state_dict,
    median,
    pressure,
    read_all,
    rm,
    timed,
    timed_cpu,
    total_bytes,
)

MB = 1e6
GB = 1e9
MEM_SLACK = 64 * 2**20  # the save-memory target: largest layer + 64 MiB


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    mem = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem / 2**30, 1), "kernel": platform.release(),
        "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "safetensors": safetensors.__version__, "lamina": lamina.__version__,
    }


def fmt_range(xs: list[float]) -> str:
    return f"{median(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


# ----------------------------------------------------------------------------------- save
def run_rounds(methods: dict, reps: int, label: str, warmup: bool = True) -> dict[str, dict[str, list[float]]]:
    """Time ``methods`` ({name: (path, fn(path))}) round-robin, shuffled order each round, after one
    untimed warm-up round. Before every timed call: the method's previous output is deleted and
    ``os.sync()`` runs, so (1) no dirty pages of an earlier call are being written back meanwhile and
    (2) every method writes into page cache just freed by a same-size file (see docs/performance.md:
    on this VM, growing the page cache into long-idle memory costs up to ~10x). The outputs of the
    last round are left in place."""
    res: dict[str, dict[str, list[float]]] = {m: {"wall": [], "cpu": []} for m in methods}
    rng = random.Random(label)
    for rep in range(reps + (1 if warmup else 0)):
        counted = rep or not warmup
        order = list(methods)
        rng.shuffle(order)
        for name in order:
            path, fn = methods[name]
            if path is not None:
                rm(path)
            os.sync()
            wall, cpu = timed_cpu(lambda: fn(path))
            if counted:
                res[name]["wall"].append(wall)
                res[name]["cpu"].append(cpu)
        if counted:
            log(f"  {label} round {rep if warmup else rep + 1}/{reps}: "
                + ", ".join(f"{n}={res[n]['wall'][-1]:.2f}s" for n in order))
    os.sync()
    return res


def bench_save(sd: dict, out: Path, reps: int) -> dict[str, dict[str, list[float]]]:
    def st_fsync(p: Path) -> None:
        safetensors.torch.save_file(sd, p)
        fsync_path(p)
        fsync_path(p.parent)

    methods = {
        "lamina.save durable=True": (out / "lamina_durable", lambda p: lamina.save(sd, p, durable=True)),
        "lamina.save durable=False": (out / "lamina_fast", lambda p: lamina.save(sd, p, durable=False)),
        "safetensors save_file": (out / "st.safetensors", lambda p: safetensors.torch.save_file(sd, p)),
        "safetensors save_file + fsync": (out / "st_fsync.safetensors", st_fsync),
        "torch.save": (out / "model.pt", lambda p: torch.save(sd, p)),
    }
    return run_rounds(methods, reps, "save")


def save_breakdown(sd: dict, out: Path, reps: int) -> dict[str, dict[str, list[float]]]:
    """Where lamina.save time goes: lamina with sha256 stubbed out, and its parts done by hand on
    the same bytes (per-layer files with no / per-file / deferred fsync; sha256 alone)."""
    groups = inv.group_layers(sd)
    methods = {
        "lamina.save durable=False, sha256 stubbed": (out / "nohash_fast", lambda p: inv.lamina_save_nohash(sd, p, False)),
        "lamina.save durable=True, sha256 stubbed": (out / "nohash_durable", lambda p: inv.lamina_save_nohash(sd, p, True)),
        "per-layer files, plain write, no fsync": (out / "w_none", lambda p: inv.write_layers(groups, p, "none")),
        "per-layer files, fsync after each file": (out / "w_each", lambda p: inv.write_layers(groups, p, "each")),
        "per-layer files, sync_file_range each + fsync all at end":
            (out / "w_deferred", lambda p: inv.write_layers(groups, p, "deferred")),
        "sha256 of every byte, 1 thread (no I/O)": (None, lambda p: inv.sha256_layers(groups, 1)),
        "sha256 of every byte, 2 threads across layers (no I/O)": (None, lambda p: inv.sha256_layers(groups, 2)),
    }
    res = run_rounds(methods, reps, "breakdown", warmup=False)
    for path, _ in methods.values():
        if path is not None:
            rm(path)
    os.sync()
    return res


# ----------------------------------------------------------------------------------- memory
def mem_worker(kind: str, method: str, path: Path, cfg: Config) -> dict:
    cmd = [sys.executable, str(HERE / "_memworker.py"), kind, method, str(path), *cfg.args()]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


