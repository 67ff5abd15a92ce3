"""Layering of the keras_trpo package, read from its source with ``ast`` (nothing is imported).

* no import cycles between keras_trpo modules, counting imports inside functions too;
* no module longer than 400 lines;
* the leaf modules import (almost) nothing from keras_trpo, so any layer may use them.

The package inspected is the one ``import keras_trpo`` would load (found with
``importlib.util.find_spec``, without running it).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGE = "keras_trpo"
MAX_LINES = 400
#: Leaf modules and the keras_trpo modules each may import.
LEAVES = {
    "keras_trpo.errors": set(),
    "keras_trpo.validation": set(),
    "keras_trpo.ops": {"keras_trpo.errors", "keras_trpo.validation"},
    "keras_trpo.policies": {"keras_trpo.errors", "keras_trpo.validation"},
    "keras_trpo.spaces": {"keras_trpo.errors", "keras_trpo.validation"},
    "keras_trpo.networks": {"keras_trpo.errors", "keras_trpo.validation"},
    "keras_trpo.observations": {"keras_trpo.errors", "keras_trpo.validation"},
}


def package_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file of the package (``__init__.py``: the package)."""
    root = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])
    modules = {}
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """``{module: {imported keras_trpo module: first line}}``, from every import statement in the file.

    ``import keras_trpo.a.b`` and ``from keras_trpo.a import b`` (b a module) are edges to
    the submodule only, not to the packages on the way; an import of the package
    itself, or of a name defined in it, is an edge to its ``__init__.py``.
    """

    def nearest_module(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        targets: dict[str, int] = {}

        def add(target: str, line: int) -> None:
            if target != module:
                targets[target] = min(line, targets.get(target, line))

        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                        add(nearest_module(alias.name), node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    package = module if is_package else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    base = f"{package}.{node.module}" if node.module else package
                else:
                    base = node.module or ""
                if base != PACKAGE and not base.startswith(PACKAGE + "."):
                    continue
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    add(candidate if candidate in modules else nearest_module(base), node.lineno)
        edges[module] = targets
    return edges


def strongly_connected_components(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm; returns the components with more than one module."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def a_cycle(component: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """One cycle through the first module of a strongly connected component (shortest, by BFS)."""
    start, members = component[0], set(component)
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def test_import_graph_has_no_cycles():
    """Catches: an import (even inside a function) that makes two keras_trpo modules depend on each other."""
    modules = package_modules()
    edges = import_edges(modules)
    problems = []
    for component in strongly_connected_components(edges):
        cycle = a_cycle(component, edges)
        steps = [
            f"{a} ({modules[a].name}:{edges[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])
        ]
        inside = [
            f"{a} ({modules[a].name}:{line}) -> {b}"
            for a in component
            for b, line in sorted(edges[a].items())
            if b in component
        ]
        problems.append(f"cycle among {component}: " + "; ".join(steps))
        problems.append("  all imports inside it: " + "; ".join(inside))
    assert not problems, "keras_trpo import cycles:\n" + "\n".join(problems)


def test_no_module_is_longer_than_400_lines():
    """Catches: a module growing past 400 lines (e.g. the TRPO update pasted back into model.py)."""
    root = package_modules()[PACKAGE].parent
    lengths = {
        str(path.relative_to(root.parent)): len(path.read_text(encoding="utf-8").splitlines())
        for path in package_modules().values()
    }
    too_long = {name: n for name, n in sorted(lengths.items()) if n > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


OPTIONAL_LEAVES = {"keras_trpo.networks"}


@pytest.mark.parametrize(
    "leaf", [leaf for leaf in sorted(LEAVES) if leaf not in OPTIONAL_LEAVES or leaf in package_modules()]
)
def test_leaf_modules_import_only_other_leaves(leaf):
    """Catches: a leaf module (errors, validation, ops, policies, spaces, networks) importing an upper layer.

    E.g. ``from keras_trpo import model`` inside a function of ops.py.
    """
    modules = package_modules()
    assert leaf in modules, f"{leaf} is missing"
    imported = import_edges(modules)[leaf]
    forbidden = {target: line for target, line in imported.items() if target not in LEAVES[leaf]}
    assert not forbidden, (
        f"{leaf} may import only {sorted(LEAVES[leaf]) or 'nothing'} from keras_trpo; it imports "
        + ", ".join(f"{target} (line {line})" for target, line in sorted(forbidden.items()))
    )
