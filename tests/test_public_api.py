"""The public surface: exports, error tree, docstrings with runnable examples."""

from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

import lamina


def test_all_is_complete_and_importable() -> None:
    public = {n for n in dir(lamina) if not n.startswith("_") and not inspect.ismodule(getattr(lamina, n))}
    assert set(lamina.__all__) - {"__version__"} == public
    for name in lamina.__all__:
        assert getattr(lamina, name) is not None


def test_error_tree_derives_from_matching_builtins() -> None:
    assert issubclass(lamina.NotFoundError, KeyError) and issubclass(lamina.ExistsError, FileExistsError)
    assert issubclass(lamina.FormatError, ValueError) and issubclass(lamina.UnsafePathError, lamina.FormatError)
    assert issubclass(lamina.UnsupportedVersionError, lamina.FormatError)
    for name in lamina.__all__:
        obj = getattr(lamina, name)
        if inspect.isclass(obj) and issubclass(obj, Exception):
            assert issubclass(obj, lamina.LaminaError)
    assert str(lamina.NotFoundError("no tensor 'x'")) == "no tensor 'x'"  # no KeyError quoting


def test_public_callables_have_docstrings_with_examples() -> None:
    for name in ("save", "open", "Artifact", "ModelInfo", "TrainingState", "LoadReport"):
        doc = getattr(lamina, name).__doc__ or ""
        assert "Example" in doc and ">>>" in doc, name


@pytest.mark.parametrize("module", ["lamina", "lamina.api.snapshots", "lamina.snapshot.artifact", "lamina.format.manifest",
                                    "lamina.format.naming", "lamina.frameworks.base", "lamina.snapshot.summary",
                                    "lamina.frameworks.registry", "lamina.frameworks.numpy", "lamina.frameworks.torch"])
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
