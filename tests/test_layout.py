"""The package's layout: no import cycle (sub-packages and imports inside functions included), short
functions, documented parameters, and a README table that names every module."""

from __future__ import annotations

import ast
from pathlib import Path

from workflow_scripts.fingerprint import ROOT, imported_modules, module_file
from workflow_scripts.stages import STAGES


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


LONG_REASON = "Longer than ~50 lines because"
MAX_CODE_LINES = 50


def functions(root: Path = ROOT):
    """(module, function node, code lines without its docstring) for every function and method in the package."""
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if (
                    isinstance(first, ast.Expr)
                    and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)
                ):
                    lines -= first.end_lineno - first.lineno + 1
                yield module_name(path, root), node, lines


def test_functions_are_short_or_say_why_they_are_not():
    """No function holds more than ~50 lines of code (docstrings aside) unless its docstring says why."""
    long = [
        f"{module}.{node.name}: {lines} lines"
        for module, node, lines in functions()
        if lines > MAX_CODE_LINES and LONG_REASON not in (ast.get_docstring(node) or "")
    ]
    assert not long, long


def public_functions(root: Path = ROOT):
    """(module, function node) for each module-level function a user may import: in ``__all__`` (or not
    starting with ``_`` where a module has none), taking at least one parameter."""
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        exported = next(
            (
                set(ast.literal_eval(n.value))
                for n in tree.body
                if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
            ),
            None,
        )
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            if exported is not None and node.name not in exported:
                continue
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            if [a for a in arguments if a.arg not in ("self", "cls")] or node.args.vararg or node.args.kwarg:
                yield module_name(path, root), node


def test_public_functions_document_their_parameters():
    """numpy-style ``Parameters`` sections (ruff's D417 then checks that every parameter is in it)."""
    missing = [
        f"{module}.{node.name}"
        for module, node in public_functions()
        if "Parameters\n----------" not in (ast.get_docstring(node) or "")
    ]
    assert not missing, missing


def layout_table() -> str:
    text = (ROOT.parent / "README.md").read_text()
    return text.split("## Layout", 1)[1].split("\n## ", 1)[0]


def test_the_readme_layout_names_every_module():
    """One row per sub-package naming each of its modules; every top-level module named in the table."""
    table = layout_table()
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `workflow_scripts/")}
    for package in sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        row = rows.get(f"`workflow_scripts/{package.name}/`")
        assert row, f"no README Layout row for workflow_scripts/{package.name}/"
        for module in sorted(package.glob("*.py")):
            assert module.stem == "__init__" or f"`{module.stem}`" in row, (
                f"{package.name}/{module.name} not in its row"
            )
    for module in sorted(ROOT.glob("*.py")):
        if module.stem != "__init__":
            names = (f"`{module.stem}`", f"`{module.name}`", f"`workflow_scripts/{module.name}`")
            assert any(name in table for name in names), f"workflow_scripts/{module.name} not in README Layout"


def test_every_stage_runs_a_module_with_a_main():
    """The registry's modules exist, each with the ``main`` that holds the stage's commands."""
    for stage, module in STAGES.items():
        path = module_file(module)
        assert path is not None, f"stage {stage}: no module {module}"
        tree = ast.parse(path.read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), f"{module} has no main"
