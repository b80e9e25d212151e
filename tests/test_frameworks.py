"""The framework adapter seam (lamina.frameworks): the registry picks the most specific
framework, duck-typed torch wrappers keep working, adapters are checked at the writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lamina
from lamina.frameworks import registry
from lamina.frameworks.numpy import Adapter as NumpyAdapter


class OptimizerWrapper:
    """What Lightning/accelerate hand around: not a torch.optim.Optimizer, but with its members."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.inner = inner

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.inner.load_state_dict(sd)


class ModuleWrapper:
    def __init__(self, inner: torch.nn.Module) -> None:
        self.inner = inner

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def named_parameters(self) -> Any:
        return self.inner.named_parameters()


def trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    return model, opt


def test_duck_typed_wrappers_save_load_and_restore(tmp_path: Path) -> None:
    model, opt = trained()
    art = lamina.save(ModuleWrapper(model), tmp_path / "snap", optimizer=OptimizerWrapper(opt))
    assert art.manifest.framework["name"] == "torch"
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.01)
    assert art.load_into(ModuleWrapper(fresh)).ok
    art.load_optimizer(OptimizerWrapper(fresh_opt), fresh)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    want, got = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert all(torch.equal(want[i]["exp_avg"], got[i]["exp_avg"]) for i in want)


def test_objects_that_are_not_models_or_optimizers_are_refused(tmp_path: Path) -> None:
    art = lamina.save({"w": np.ones(2, "float32")}, tmp_path / "snap")
    with pytest.raises(lamina.FormatError, match="cannot load into a Tensor: it is not a model"):
        art.load_into(torch.ones(2))
    with pytest.raises(lamina.FormatError, match="optimizer must be an optimizer of .*torch.optim.Optimizer.*got dict"):
        lamina.save(torch.nn.Linear(2, 2), tmp_path / "other", optimizer={})


def test_the_most_specific_framework_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model class of a registered framework that also derives from torch.nn.Module goes to that
    framework's adapter (a Keras 3 model on the torch backend), plain torch to torch."""
    import fake_framework

    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    monkeypatch.setattr(registry, "_instances", dict(registry._instances))
    registry.register("fake", "fake_framework", ("fk",), ("fake_framework",))
    assert registry.for_value(fake_framework.Model()).name == "fake"
    assert registry.for_value(torch.nn.Linear(2, 2)).name == "torch"
    assert registry.get("fk").name == "fake" and "fake" in registry.registered()


class HalfBytes(NumpyAdapter):
    """An adapter that hands over only part of a tensor (what a careless distributed adapter would)."""

    def tensor_bytes(self, value: Any) -> memoryview:
        return super().tensor_bytes(value)[: value.nbytes // 2]


def test_the_writer_refuses_bytes_that_do_not_fill_the_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_instances", {**registry._instances, "numpy": HalfBytes()})
    with pytest.raises(lamina.FormatError, match=r"tensor 'w': 8 bytes for F32\[4\], which needs 16"):
        lamina.save({"w": np.ones(4, "float32")}, tmp_path / "snap")
    assert list(tmp_path.iterdir()) == []


def test_framework_of_record() -> None:
    from lamina.frameworks.collect import collect_tensors

    assert collect_tensors({"a": np.ones(1)}).framework["name"] == "numpy"
    assert collect_tensors({"a": np.ones(1), "b": torch.ones(1)}).framework["name"] == "torch"
    assert collect_tensors(torch.nn.Module()).framework["name"] == "numpy"  # no tensor: as before adapters
