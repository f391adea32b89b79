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
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from functools import cache
from pathlib import Path

__all__ = ["PACKAGE", "code_fingerprint", "imported_modules", "normalised_source"]

PACKAGE = "workflow_scripts"
ROOT = Path(__file__).resolve().parent
SKIPPED = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING}


def imported_modules(source: str, root: Path = ROOT) -> set[str]:
    """Project modules imported anywhere in ``source`` (relative or ``workflow_scripts.x``).

    Examples
    --------
    >>> code = "from .model import load\\nimport json\\ndef f():\\n    from workflow_scripts import data"
    >>> sorted(imported_modules(code))
    ['data', 'model']
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            package = "." * node.level + (node.module or "")
            if package in (".", PACKAGE):  # from . import x / from workflow_scripts import x
                found.update(alias.name for alias in node.names)
            elif package.startswith("."):
                found.add(package.lstrip(".").split(".")[0])
            elif package.startswith(PACKAGE + "."):
                found.add(package.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith(PACKAGE + "."))
    return {name for name in found if (root / f"{name}.py").is_file()}


def normalised_source(source: str) -> str:
    """The token stream of ``source`` without comments, docstrings and blank lines.

    A string that is a statement on its own (a docstring) is dropped with the comments;
    every other token is kept, so any change to what the code does changes the result.

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
    seen, todo = {module}, [module]
    while todo:
        for name in imported_modules((root / f"{todo.pop()}.py").read_text(), root) - seen:
            seen.add(name)
            todo.append(name)
    return frozenset(seen | {"__init__"})  # importing any module runs the package's __init__


def code_fingerprint(module: str, *extra: str, root: Path = ROOT) -> str:
    """Hash of ``module``, the project modules it imports (transitively) and ``extra`` files.

    ``extra`` names non-Python files of the package the stage runs (e.g. ``launch.sh``),
    hashed as they are. ``root`` is the package's folder (tests fingerprint edited copies).

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
        digest.update(f"{name}\n{normalised_source((root / f'{name}.py').read_text())}\n".encode())
    for name in sorted(extra):
        digest.update(f"{name}\n".encode() + (root / name).read_bytes())
    return f"{'+'.join(sorted(modules - {'__init__'}))}:{digest.hexdigest()[:16]}"
