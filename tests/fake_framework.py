"""A framework for registry tests: its model class is also a ``torch.nn.Module`` (as a Keras 3
model on the torch backend is), and its adapter is the torch one under another name."""

from __future__ import annotations

import torch

from lamina.frameworks.torch import Adapter as TorchAdapter


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(2, 2)


class Adapter(TorchAdapter):
    name = "fake"
