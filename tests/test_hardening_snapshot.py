"""Hardening of local snapshot reads and writes (issue 9): special files, bounded manifest reads,
a full disk. The input → error cases live in the adversarial corpus (tests/adversarial/snapshot.py);
these are the ones that need more than that: memory peaks, the CLI, a real full filesystem."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from adversarial.snapshot import ENC, make_snapshot, tensors
from cli_helpers import assert_clean_cli_error, cli_parallel, leftovers

import lamina
from lamina.format.codec import MANIFEST_NAME


def peak_rss_mb(code: str) -> float:
    """Peak resident memory (MiB) of a fresh interpreter running ``code``, which must exit 0.

    VmHWM, not ru_maxrss: ru_maxrss keeps the high-water mark of the forked pytest process across
    exec, which would hide the child's own peak."""
    probe = code + ("\nimport re; print('PEAK', re.search(r'VmHWM:\\s+(\\d+) kB', "
                    "open('/proc/self/status').read()).group(1))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("PEAK")[-1]) / 1024


def test_sparse_manifest_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A sparse 2 GiB manifest.msgpack costs no more memory than a normal open (it was read whole: ~2 GB)."""
    make_snapshot(tmp_path / "ok")
    make_snapshot(tmp_path / "sparse")
    os.truncate(tmp_path / "sparse" / MANIFEST_NAME, 2 << 30)
    attempt = textwrap.dedent(f"""
        import lamina
        lamina.open({str(tmp_path / 'ok')!r})
        try:
            lamina.open({str(tmp_path / 'sparse')!r})
        except lamina.FormatError as exc:
            assert "more than the 1073741824-byte limit" in str(exc), exc
        else:
            raise SystemExit("accepted")
    """)
    baseline = peak_rss_mb(f"import lamina\nlamina.open({str(tmp_path / 'ok')!r})")
    assert peak_rss_mb(attempt) < baseline + 32


@pytest.mark.parametrize("where", [ENC, MANIFEST_NAME])
def test_cli_refuses_a_fifo_instead_of_hanging(tmp_path: Path, where: str) -> None:
    """``lamina inspect`` and ``lamina verify`` on a snapshot holding a FIFO end at once with a typed error."""
    snap = tmp_path / "snap"
    make_snapshot(snap)
    (snap / where).unlink()
    os.mkfifo(snap / where)
    inspected, verified = cli_parallel(("inspect", snap), ("verify", snap))
    if where != MANIFEST_NAME:
        assert inspected.returncode == 0, inspected.stderr  # inspect reads only the manifest
        assert verified.returncode == 1 and "Traceback" not in verified.stderr, verified.stderr  # verify's report
        assert f"FAILED {where}: " in verified.stderr and "is a FIFO" in verified.stderr, verified.stderr
        return
    assert_clean_cli_error(inspected, lamina.FormatError, where, "is a FIFO")
    assert_clean_cli_error(verified, lamina.FormatError, where, "is a FIFO")


def test_load_into_refuses_a_device_shard_and_changes_nothing(tmp_path: Path) -> None:
    """A shard replaced by a symlink to /dev/zero: load_into raises before touching a parameter."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    lamina.save(model, tmp_path / "snap")
    shard = tmp_path / "snap" / "weights" / "1.safetensors"
    shard.unlink()
    shard.symlink_to("/dev/zero")
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(lamina.FormatError, match=r"1\.safetensors: is a character device, not a regular file"):
        lamina.open(tmp_path / "snap").load_into(fresh)
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A real 2 MiB tmpfs, so writes fail with ENOSPC as on a full disk (the tests run as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"this test needs to mount a tmpfs (root): {done.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_full_disk_during_save_is_a_storage_error(small_filesystem: Path) -> None:
    """Saving 4 MiB onto a 2 MiB filesystem over an existing snapshot: StorageError naming the full
    disk; the old snapshot is intact and nothing is left behind."""
    old = small_filesystem / "model"
    make_snapshot(old)
    before = {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()}
    big = {f"layer{i}.weight": np.full((256, 1024), i, dtype=np.float32) for i in range(4)}  # 4 MiB
    with pytest.raises(lamina.StorageError, match=r"cannot write the snapshot .*model: No space left on device "
                                                  r"\(the disk is full\)"):
        lamina.save(big, old, overwrite=True)
    assert {p.relative_to(old): p.read_bytes() for p in old.rglob("*") if p.is_file()} == before
    assert lamina.open(old).state_dict(framework="np").keys() == tensors().keys()
    assert leftovers(small_filesystem) == [] and sorted(os.listdir(small_filesystem)) == ["model"]


def test_file_size_limit_during_save_is_a_storage_error(tmp_path: Path) -> None:
    """Any OSError while writing (here EFBIG from RLIMIT_FSIZE) is a StorageError, not a raw OSError."""
    code = textwrap.dedent(f"""
        import resource, signal, numpy as np, lamina
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        try:
            lamina.save({{"w.weight": np.zeros((1024, 1024), np.float32)}}, {str(tmp_path / 'm')!r})
        except lamina.StorageError as exc:
            print("ERROR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ERROR cannot write the snapshot" in out.stdout, (out.stdout, out.stderr)
    assert "File too large" in out.stdout
    assert os.listdir(tmp_path) == []
