"""The lamina demo: train a small torch model, save it with its optimizer, inspect, verify, load
one layer lazily, and resume training bit-identically. Run with ``make demo``.

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
    return float(loss)


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


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("demo-out"))
