"""Code fingerprints: which project modules a stage runs, and a hash of what they do.

A stage's jobs must rerun when any project module it imports changes (``evaluate`` imports
``model`` and ``bright``, so an edit inside ``load_colbert`` reruns every evaluation), and
must not rerun because the checkout moved. Rules therefore carry a *fingerprint* param:
the sha256 of the stage module and every project module it imports, transitively (imports
inside functions count: stages import heavy code lazily), found by reading the import
statements, never by importing. No path enters the hash, only module names and code.

What the hash covers is the token stream of each module without comments, docstrings and
blank lines: a comment or docstring edit cannot change a result, so it reruns nothing; any
other edit (code, a string literal, a default value) reruns every stage that imports the
module.

A few modules cannot change a number: they shape log lines or how a job's process starts
(:data:`NOT_RESULT_BEARING`, the one list of them). They are left out of every fingerprint,
and what they import is not followed through them: a module they import still counts for
each stage that imports it itself (``warm`` imports ``job_usage``, which counts for
``report``, which reads the cost figures with it).
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from functools import cache
from pathlib import Path

__all__ = ["NOT_RESULT_BEARING", "PACKAGE", "code_fingerprint", "imported_modules", "module_file", "normalised_source"]

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parent
SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING}
# Modules whose edits cannot change any output, only log lines or how a job's process starts, so an
# edit to them reruns nothing: the progress lines (how often and in what words a job reports), the
# entry point and the stage registry (which function a command runs is the stage module's own table),
# and the warm start (a forked child runs exactly the code a cold process would; tests/test_warm.py).
# Anything that computes a result, or reads one back (job_usage), must not be listed here.
NOT_RESULT_BEARING = frozenset({"__main__", "progress", "stages", "warm"})


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module ``name`` (dotted, relative to the package), or None.

    ``a.b`` is ``a/b.py`` or, for a sub-package, ``a/b/__init__.py``; ``__init__`` is the
    package's own.

    Parameters
    ----------
    name
        A dotted module name relative to the package (``model.load``), or ``__init__``.
    root
        The package's folder (default: this package's).

    Examples
    --------
    >>> module_file("fingerprint").name
    'fingerprint.py'
    >>> module_file("no_such_module") is None
    True
    """
    if name == "__init__":
        return root / "__init__.py"
    base = root.joinpath(*name.split("."))
    for path in (base.with_name(base.name + ".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _with_parents(name: str, root: Path) -> set[str]:
    """``name`` and every sub-package above it: importing ``a.b.c`` runs ``a`` and ``a.b`` first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1) if module_file(".".join(parts[:i]), root)}


def _package_of(module: str, root: Path) -> list[str]:
    """Where ``module``'s relative imports start: itself for a sub-package, else its parent."""
    if not module or module == "__init__":
        return []
    parts = module.split(".")
    return parts if module_file(module, root) == root.joinpath(*parts, "__init__.py") else parts[:-1]


def _import_target(node: ast.ImportFrom, package: list[str]) -> list[str] | None:
    """The dotted path (relative to the project package) a ``from ... import`` reads from."""
    named = [part for part in (node.module or "").split(".") if part]
    if node.level:
        if node.level - 1 > len(package):
            return None
        return package[: len(package) - (node.level - 1)] + named
    if named[:1] == [PACKAGE]:
        return named[1:]
    return None


def imported_modules(source: str, root: Path = ROOT, *, module: str = "") -> set[str]:
    """Project modules imported anywhere in ``source``, as dotted names relative to the package.

    Understands ``from . import x``, ``from .x import y``, ``from ..x import y`` (relative to
    ``module``, the dotted name of the module ``source`` is), ``from workflow_scripts.a import b``
    and ``import workflow_scripts.a.b``; a name imported from a package counts as a module when
    it is one (``from .sub import helper``: ``sub.helper``), and every sub-package on the way is
    included (its ``__init__`` runs).

    Parameters
    ----------
    source
        A module's Python source; parsed, never run.
    root
        The package's folder: a name counts when :func:`module_file` finds it there.
    module
        The dotted name of the module ``source`` is; ``""``: a module at the package's top.

    Examples
    --------
    >>> code = "from .errors import UserError\\nimport json\\ndef f():\\n    from workflow_scripts import data"
    >>> sorted(imported_modules(code))
    ['data', 'errors']
    """
    package = _package_of(module, root)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            target = _import_target(node, package)
            if target is None:
                continue  # another library, or relative beyond the project package
            if target:
                found.add(".".join(target))
            found.update(".".join([*target, alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(PACKAGE + "."))
    modules: set[str] = set()
    for name in found:
        if module_file(name, root):
            modules |= _with_parents(name, root)
    return modules


def normalised_source(source: str) -> str:
    """The token stream of ``source`` without comments, docstrings and blank lines.

    A string that is a statement on its own (a docstring) is dropped with the comments;
    every other token is kept, so any change to what the code does changes the result.

    Parameters
    ----------
    source
        The Python source of one module.

    Returns
    -------
    One line per kept token: its type and its text's repr (``NAME 'def'``).

    Examples
    --------
    >>> a = 'def f(x):\\n    \"\"\"Doc.\"\"\"\\n    return x + 1  # why\\n'
    >>> b = 'def f(x):\\n    \"\"\"Other words.\"\"\"\\n\\n    return x + 1\\n'
    >>> normalised_source(a) == normalised_source(b)
    True
    >>> normalised_source(a) == normalised_source(a.replace("1", "2"))
    False
    """
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in SKIPPED]
    kept: list[str] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j].type == tokenize.STRING:
            j += 1
        at_start = i == 0 or tokens[i - 1].type in STATEMENT_START
        if j > i and at_start and (j == len(tokens) or tokens[j].type == tokenize.NEWLINE):
            i = j + 1  # a bare string statement (docstring) and its NEWLINE
            continue
        kept.append(f"{tokenize.tok_name[tokens[i].type]} {tokens[i].string!r}")
        i += 1
    return "\n".join(kept)


@cache
def _closure(module: str, root: Path) -> frozenset[str]:
    """``module`` and the project modules it imports, transitively, without :data:`NOT_RESULT_BEARING`.

    A module in that list is neither included nor followed: its own imports count only where
    a result-bearing module imports them too.
    """
    seen, todo = _with_parents(module, root), list(_with_parents(module, root))
    while todo:
        name = todo.pop()
        for found in imported_modules(module_file(name, root).read_text(), root, module=name) - seen:
            if found not in NOT_RESULT_BEARING:
                seen.add(found)
                todo.append(found)
    return frozenset(seen | {"__init__"})  # importing any module runs the package's __init__


def code_fingerprint(module: str, *extra: str, root: Path = ROOT) -> str:
    """Hash of ``module``, the project modules it imports (transitively) and ``extra`` files.

    ``extra`` names non-Python files of the package the stage runs (e.g. ``launch.sh``),
    hashed as they are. ``root`` is the package's folder (tests fingerprint edited copies).

    Parameters
    ----------
    module
        The stage's module, dotted relative to the package (``evaluate.job``).
    *extra
        Paths of non-Python files, relative to ``root``.
    root
        The package's folder (default: this package's).

    Returns
    -------
    ``<modules>:<hash>``: the modules hashed but ``__init__``, sorted and joined by ``+``, and the first 16 hex
    digits of the sha256.

    Examples
    --------
    >>> code_fingerprint("summarize") == code_fingerprint("summarize")
    True
    >>> code_fingerprint("summarize") == code_fingerprint("evaluate")
    False
    """
    modules = _closure(module, Path(root))
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(f"{name}\n{normalised_source(module_file(name, root).read_text())}\n".encode())
    for name in sorted(extra):
        digest.update(f"{name}\n".encode() + (root / name).read_bytes())
    return f"{'+'.join(sorted(modules - {'__init__'}))}:{digest.hexdigest()[:16]}"
