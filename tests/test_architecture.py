"""The architecture as executable rules (docs/architecture.md): import-linter contracts for the
layers and the framework boundary (in pyproject.toml), no import cycle anywhere in the package,
nothing below the façade importing it, small modules, and a light ``import lamina``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "lamina"
CONVERTERS = ROOT / "converters"


@pytest.fixture(scope="module")
def whole_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as it ships: ``src/lamina`` with ``converters/`` as ``lamina/converters`` (the
    repository keeps them apart; import analysis needs the tree a wheel installs)."""
    tree = tmp_path_factory.mktemp("package")
    shutil.copytree(PACKAGE, tree / "lamina", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(CONVERTERS, tree / "lamina" / "converters", ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def _run(code: str, tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


def test_import_linter_contracts_hold(whole_package: Path) -> None:
    """Layers (cli > api > training > converters > repo > hub > snapshot > frameworks > format >
    storage > base), the framework boundary and independent storage backends, as pyproject.toml's
    [tool.importlinter] states them."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    done = _run(code, whole_package)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "Contracts: 3 kept" in done.stdout, done.stdout


_GRAPH = textwrap.dedent("""
    import json, sys, grimp
    sys.path.insert(0, sys.argv[1])
    from test_architecture import _strongly_connected
    graph = grimp.build_graph("lamina", cache_dir=None, exclude_type_checking_imports=True)
    assert "lamina.converters.torch_pickle" in graph.modules
    print(json.dumps({"cycles": [sorted(g) for g in _strongly_connected(graph) if len(g) > 1],
                      "facade_importers": sorted(graph.find_modules_that_directly_import("lamina"))}))
""")


@pytest.fixture(scope="module")
def graph_facts(whole_package: Path) -> dict:
    done = _run(_GRAPH, whole_package, str(ROOT / "tests"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _strongly_connected(graph: Any) -> list[set[str]]:
    """Tarjan's algorithm over the module import graph: the groups of modules that import each
    other in a circle (function-level imports included)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []
    counter = [0]

    def visit(start: str) -> None:
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if not child.startswith("lamina"):
                    continue
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    groups.append(group)

    for module in sorted(graph.modules):
        if module.startswith("lamina") and module not in index:
            visit(module)
    return groups


def test_no_import_cycles_anywhere(graph_facts: dict) -> None:
    """Module level, function-level imports included (only imports under TYPE_CHECKING are not
    imports at run time)."""
    assert graph_facts["cycles"] == []


def test_nothing_below_the_facade_imports_it(graph_facts: dict) -> None:
    """``lamina/__init__.py`` re-exports the public API; only the CLI and ``__main__`` sit above it."""
    assert all(m == "lamina.__main__" or m.startswith("lamina.cli") for m in graph_facts["facade_importers"]), \
        graph_facts["facade_importers"]


def test_modules_are_small() -> None:
    """No module over ~500 lines (the guide's bound; a module that needs more is two modules)."""
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines())
             for p in [*PACKAGE.rglob("*.py"), *CONVERTERS.rglob("*.py")]}
    assert {p: n for p, n in sizes.items() if n > 520} == {}


def test_import_lamina_imports_no_framework() -> None:
    code = ("import sys, lamina; heavy = [m for m in ('torch', 'tensorflow', 'keras', 'onnx', 'onnxruntime', "
            "'jax', 'h5py', 'huggingface_hub', 'fsspec', 'urllib3', 'numpy') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
