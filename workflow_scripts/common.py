"""Shared plumbing: one-line user errors, atomic outputs, hashing, JSON I/O.

Every stage module exposes plain typed functions plus a ``main()`` built with
:func:`run_cli`, so a bad input ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "UserError",
    "atomic_dir",
    "atomic_file",
    "read_json",
    "run_cli",
    "sha256_file",
    "write_json",
]

logger = logging.getLogger(__name__)

ZERO_REVISION = "0" * 40


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint): shown as one line."""


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` through a temporary sibling renamed into place on success.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_file(d / "a.txt") as f:
    ...     _ = f.write("hi")
    >>> (d / "a.txt").read_text()
    'hi'
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only when the block succeeds.

    A killed job leaves a ``.<name>.tmp-*`` sibling, never a half-written ``path``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_dir(d / "out") as tmp:
    ...     _ = (tmp / "x").write_text("1")
    >>> (d / "out" / "x").read_text()
    '1'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented, key-sorted JSON (stable bytes across runs)."""
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file when it is missing or malformed."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except FileNotFoundError as err:
        raise UserError(f"{path}: file not found") from err
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def config_problem(config: dict[str, Any], schema_path: str | Path) -> str | None:
    """The most relevant schema violation of ``config`` as one line naming the key, or None.

    Examples
    --------
    >>> import pathlib
    >>> schema = pathlib.Path(__file__).with_name("config.schema.yaml")
    >>> config_problem({"run_name": "x y"}, schema)
    "config: (top level): 'seed' is a required property"
    >>> import yaml
    >>> config = yaml.safe_load(schema.parents[1].joinpath("config.yaml").read_text())
    >>> config["data"]["rows_per_shard"] = "many"
    >>> config_problem(config, schema)
    "config: data/rows_per_shard: 'many' is not of type 'integer'"
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message = error.message if len(error.message) < 300 else error.message[:300] + "..."
    return f"config: {where}: {message}"


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a CLI entry point: user errors and OS errors become one line and exit code 2."""
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # disk full, permission denied: the path and the reason
        where = f" {err.filename}" if getattr(err, "filename", None) else ""
        print(f"error:{where}: {err.strerror or err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
