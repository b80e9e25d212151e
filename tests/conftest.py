from __future__ import annotations

from pathlib import Path

import pytest
import torch


class TiedLM(torch.nn.Module):
    """A small model with every kind of state: tied weights, LayerNorm, BatchNorm buffers."""

    def __init__(self, vocab: int = 16, dim: int = 8) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm = torch.nn.LayerNorm(dim)
        self.bn = torch.nn.BatchNorm1d(dim)
        self.head = torch.nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.norm(self.proj(self.embed(tokens)))))


@pytest.fixture
def tied_model() -> TiedLM:
    torch.manual_seed(0)
    return TiedLM()


@pytest.fixture
def snapshot(tmp_path: Path, tied_model: TiedLM) -> Path:
    path = tmp_path / "snap"
    import lamina

    lamina.save(tied_model, path, info={"name": "tied"}, files={"config.json": {"dim": 8}})
    return path
