"""The package's layout: no import cycle among its modules (sub-packages and imports inside functions included)."""

from __future__ import annotations

from pathlib import Path

from workflow_scripts.fingerprint import ROOT, imported_modules


def module_name(path: Path, root: Path) -> str:
    """``a/b.py`` -> ``a.b``; ``a/__init__.py`` -> ``a``; the package's own ``__init__.py`` -> ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each project module -> the project modules it imports anywhere in its code, read with ``ast``.

    An import of a module's own enclosing package is left out: Python runs a package's ``__init__``
    before any module in it, so ``sources.cards`` importing ``sources`` is not a cycle even when
    ``sources`` re-exports from ``sources.cards``.
    """
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        graph[name] = imported_modules(path.read_text(), root, module=name) - ancestors - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search, modules in sorted order).

    >>> find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()})
    ['a', 'b', 'c', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target):
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start):
            return cycle
    return None


def test_the_walk_sees_sub_packages_and_imports_inside_functions():
    graph = import_graph()
    assert {"sources", "sources.cards", "sources.readers"} <= set(graph)
    assert "sources.cards" in graph["bright.load"]  # a module of another sub-package, imported at the top
    assert "lineage" in graph["config_checks"]  # imported inside functions only: still an edge


def test_a_cycle_is_found_through_a_sub_package_and_an_import_inside_a_function(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub" / "__init__.py").write_text("from .inner import helper\n")
    (tmp_path / "sub" / "inner.py").write_text("def helper():\n    from ..top import thing\n")
    (tmp_path / "top.py").write_text("from .sub.inner import helper\nthing = 1\n")
    assert find_cycle(import_graph(tmp_path)) == ["sub", "sub.inner", "top", "sub"]


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"
