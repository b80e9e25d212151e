"""The README's demo runs end to end (what `make demo` does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lamina

DEMO = Path(__file__).resolve().parents[1] / "docs" / "examples" / "demo.py"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(DEMO), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed training matches uninterrupted training bit for bit: True" in res.stdout
    assert "OK " in res.stdout and "repository demo: OK" in res.stdout
    assert "keras demo: OK" in res.stdout and "predicts bitwise equal: True" in res.stdout
    assert lamina.open(tmp_path / "keras" / "keras-mlp").optimizer.framework == "keras"
    art = lamina.open(tmp_path / "tiny-lm")
    art.verify()
    assert art.info.name == "tiny-lm" and art.training.step == 20 and art.optimizer is not None
    repo = lamina.Repo(tmp_path / "repo")
    assert [r.message for r in repo.log("v1.1")] == ["fine-tuned blocks.1.3", "pretrained"]
    assert repo.fsck(full=True).ok
    assert lamina.diff(tmp_path / "pulled-v1.0", f"{tmp_path / 'repo'}@v1.0").identical
