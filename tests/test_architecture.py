"""The package's shape: no import circles, and no module imports a higher layer.

Layers (README, "Architecture"), lowest first; a subpackage may import its own modules and any
lower layer, never a higher one or a sibling of its own layer::

    core  <  data  <  exchange  <  brain | encoder | router  <  agents  <  strategy  <  bench
    <  commands + cli

Every import counts, also those inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "learning"
LAYERS: dict[str, int] = {
    "core": 0, "data": 1, "exchange": 2, "brain": 3, "encoder": 3, "router": 3, "agents": 4,
    "strategy": 5, "bench": 6, "commands": 7, "cli": 7,
}
CLI_LAYER = {"commands", "cli"}  # one layer: the command line


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """Modules of this package that ``path`` imports (a name imported from a package that is
    itself a module counts as that module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("learning."):
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(p, known) - {m} for m, p in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package root


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    subpackages |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert subpackages == set(LAYERS), "add the new subpackage to LAYERS and the README"


def test_no_module_imports_a_higher_layer_or_a_sibling_subsystem():
    bad = []
    for src, targets in _graph().items():
        a = _layer(src)
        for dst in targets:
            b = _layer(dst)
            if a is None or b is None or a == b or {a, b} <= CLI_LAYER:
                continue
            if LAYERS[a] <= LAYERS[b]:
                bad.append(f"{src} -> {dst}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("root", ["strategies", "freqai_models"])
def test_plugin_files_stay_thin(root):
    """The files freqtrade loads hold one class and import only from the package."""
    for path in (ROOT / root).glob("*.py"):
        tree = ast.parse(path.read_text())
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
        imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)]
        assert len(classes) == 1, path
        assert all(n.module.startswith("learning.") for n in imports), path
