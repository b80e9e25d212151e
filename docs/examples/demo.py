"""The lamina demo: train a small torch model, save it with its optimizer, inspect, verify, load
one layer lazily, resume training bit-identically, then version it in a local repository
(push, fine-tune one layer, push again: only that layer is uploaded; log, diff, pull, fsck);
then the same with a Keras model (``demo_keras.py``: save from memory, export to ``.keras``,
``lamina.load``).
Run with ``make demo``.

Everything is made locally (no downloads); output goes to ``demo-out/`` (or the first argument).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

import lamina


class TinyLM(torch.nn.Module):
    """Embedding -> 2 pre-norm MLP blocks -> tied output head."""

    def __init__(self, vocab: int = 64, dim: int = 32, blocks: int = 2) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(),
                                torch.nn.Linear(4 * dim, dim))
            for _ in range(blocks)
        )
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied, stored once

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def train(model: TinyLM, opt: torch.optim.Optimizer, steps: int, seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        tokens = torch.randint(0, 64, (8, 16), generator=g)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
    return float(loss.detach())


def cli(*args: str) -> None:
    print(f"\n$ lamina {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "lamina", *args], check=True)


def main(out: Path) -> None:
    torch.manual_seed(0)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loss = train(model, opt, steps=20, seed=1)
    print(f"trained 20 steps, loss {loss:.4f}")

    path = out / "tiny-lm"
    lamina.save(model, path, optimizer=opt, overwrite=True,
                info={"name": "tiny-lm", "version": "1.0.0", "creator": "lamina demo",
                      "description": "2-block MLP language model", "license": "Apache-2.0",
                      "tags": ["demo"], "extra": {"vocab": 64, "dim": 32}},
                training={"step": 20, "epoch": 1, "metrics": {"loss": loss}},
                files={"config.json": {"vocab": 64, "dim": 32, "blocks": 2}})
    print(f"saved to {path}")

    cli("inspect", str(path))
    cli("verify", str(path))

    art = lamina.open(path)  # reads the manifest only
    layer = art.layer("blocks.1.1")  # reads only weights/blocks.1.1.safetensors
    print(f"\nlazy layer 'blocks.1.1': {[(n, tuple(t.shape)) for n, t in layer.items()]}")
    assert torch.equal(layer["blocks.1.1.weight"], model.blocks[1][1].weight)

    resumed = TinyLM()
    resumed_opt = torch.optim.AdamW(resumed.parameters(), lr=3e-3)
    print(f"restore: {art.load_into(resumed)}")
    art.load_optimizer(resumed_opt, resumed)
    train(model, opt, steps=5, seed=2)
    train(resumed, resumed_opt, steps=5, seed=2)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))
    print(f"resumed training matches uninterrupted training bit for bit: {same}")
    if not same:
        raise SystemExit("demo failed: resumed training diverged")

    version_in_a_repository(out, path)
    # Keras runs in its own process: it picks its backend once, and the torch part stays light
    subprocess.run([sys.executable, str(Path(__file__).with_name("demo_keras.py")), str(out)], check=True)


def version_in_a_repository(out: Path, snapshot: Path) -> None:
    """Push v1, fine-tune one layer of it, save v2 straight into the repository, compare."""
    import shutil

    repo_path = out / "repo"
    shutil.rmtree(repo_path, ignore_errors=True)
    cli("push", str(snapshot), str(repo_path), "-m", "pretrained", "-t", "v1.0")

    model = TinyLM()
    lamina.open(f"{repo_path}@v1.0").load_into(model)  # weights only; the optimizer state stays in v1.0

    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("blocks.1.3"))  # fine-tune one Linear layer only
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    train(model, opt, steps=3, seed=3)
    repo = lamina.Repo(repo_path)
    result = repo.save(model, message="fine-tuned blocks.1.3", tag="v1.1",  # no local copy
                       info={"name": "tiny-lm", "version": "1.1.0"}, files={"config.json": {"vocab": 64, "dim": 32, "blocks": 2}})
    print(f"\nv1.1: uploaded {result.uploaded_bytes} bytes in {result.uploaded_files} files, "
          f"reused {result.reused_bytes} bytes in {result.reused_files}")
    diff = repo.diff("v1.0", "v1.1")
    print(f"diff v1.0 -> v1.1: changed {diff.changed}, unchanged {len(diff.unchanged)} layers")
    if diff.changed != ["blocks.1.3"]:
        raise SystemExit(f"demo failed: expected only blocks.1.3 to change, got {diff.changed}")

    cli("log", str(repo_path))
    cli("diff", "--repo", str(repo_path), "v1.0", "v1.1")
    cli("pull", f"{repo_path}@v1.0", str(out / "pulled-v1.0"), "--overwrite")
    cli("fsck", str(repo_path), "--full")
    lazy = lamina.open(f"{repo_path}@v1.1").layer("blocks.1.3")
    assert torch.equal(lazy["blocks.1.3.weight"], model.blocks[1][3].weight)
    print("repository demo: OK")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-out"))
