"""The lamina CLI, run as a real subprocess (what users type)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lamina


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lamina", *args], capture_output=True, text=True)


def test_version_and_help_on_every_command() -> None:
    out = run("--version")
    assert out.returncode == 0 and lamina.__version__ in out.stdout
    for args in (["--help"], ["inspect", "--help"], ["verify", "--help"]):
        res = run(*args)
        assert res.returncode == 0 and "Usage:" in res.stdout, args


def test_inspect_tables_show_info_layers_and_files(snapshot: Path) -> None:
    res = run("inspect", str(snapshot))
    assert res.returncode == 0, res.stderr
    for text in ("Info", "tied", "Layers", "embed", "proj", "Files", "weights/proj.safetensors", "head.weight"):
        assert text in res.stdout, text


def test_inspect_json_is_machine_readable(snapshot: Path, tied_model) -> None:
    res = run("inspect", str(snapshot), "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert {"format_version", "info", "training", "layers", "total_bytes", "optimizer", "files"} <= set(data)
    assert data["format_version"] == "{}.{}".format(*lamina.FORMAT_VERSION) and data["info"]["name"] == "tied"
    layers = {row["name"]: row for row in data["layers"]}
    assert layers["proj"]["parameters"] == tied_model.proj.weight.numel() + tied_model.proj.bias.numel()
    assert layers["proj"]["dtypes"] == ["F32"]
    assert data["total_bytes"] == sum(t.numel() * t.element_size() for n, t in tied_model.state_dict().items()
                                      if n != "head.weight")
    on_disk = {f.relative_to(snapshot).as_posix() for f in snapshot.rglob("*") if f.is_file()}
    assert {f["path"] for f in data["files"]} == on_disk - {"manifest.msgpack"}


def test_verify_exit_codes_and_listing(snapshot: Path) -> None:
    ok = run("verify", str(snapshot))
    assert ok.returncode == 0 and "OK" in ok.stdout
    shard = snapshot / "weights" / "proj.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    (snapshot / "config.json").unlink()
    bad = run("verify", str(snapshot))
    assert bad.returncode == 1
    assert "weights/proj.safetensors: lt1 mismatch" in bad.stderr and "config.json: missing" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("damage", ["missing", "not_msgpack", "truncated"])
def test_bad_input_gives_one_line_and_nonzero_exit(snapshot: Path, damage: str) -> None:
    manifest = snapshot / "manifest.msgpack"
    target = snapshot
    if damage == "missing":
        target = snapshot / "nope"
    elif damage == "not_msgpack":
        manifest.write_text('{"format": "lamina"}')
    else:
        manifest.write_bytes(manifest.read_bytes()[:50])
    for command in ("inspect", "verify"):
        res = run(command, str(target))
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.stderr
        assert ("NotFoundError" if damage == "missing" else "FormatError") in lines[0]
