"""Outputs that are never half-written: atomic files and folders, the umask's modes, strict JSON, file hashes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import UserError, naming_write_errors

__all__ = ["atomic_dir", "atomic_file", "follow_umask", "process_umask", "read_json", "sha256_file", "write_json"]


def _umask_by_setting() -> int:
    mask = os.umask(0o077)  # os.umask can only be read by setting it: set and restore at once
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_by_setting()  # fallback where /proc/self/status has no Umask line


def process_umask() -> int:
    """The process umask, read from ``/proc/self/status`` (Linux) without changing it.

    Elsewhere the value read once at import (a set-and-restore there, before any threads).

    Examples
    --------
    >>> previous = os.umask(0o002)
    >>> oct(process_umask())
    '0o2'
    >>> _ = os.umask(previous)
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def follow_umask(root: str | Path) -> None:
    """Give a tree the modes freshly created files get: files 0o666, dirs 0o777, minus the umask.

    For copies (``shutil.copytree`` copies the source's modes: a read-only mirror would give a
    read-only output, an 0o600 cache a private one). An executable file stays executable.

    Parameters
    ----------
    root
        The folder whose modes are reset, itself and everything under it; symlinks are left alone.

    Examples
    --------
    >>> import tempfile, pathlib, stat
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "f").write_text("x"); (d / "f").chmod(0o400)
    >>> previous = os.umask(0o022); follow_umask(d); _ = os.umask(previous)
    >>> oct(stat.S_IMODE((d / "f").stat().st_mode)), oct(stat.S_IMODE(d.stat().st_mode))
    ('0o644', '0o755')
    """
    mask = process_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
        path.chmod((0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` through a temporary sibling renamed into place on success.

    Parameters
    ----------
    path
        The file to write; missing parent folders are made.
    mode
        ``open()``'s mode: ``"w"`` for text, ``"wb"`` for bytes.

    Yields
    ------
    The temporary sibling, open in ``mode``.

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
    os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp makes 0o600: give it open()'s mode
    os.close(fd)
    try:
        with naming_write_errors(path), open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only when the block succeeds.

    A killed job leaves a ``.<name>.tmp-*`` sibling, never a half-written ``path``. The
    finished tree gets the umask's modes (:func:`follow_umask`), whatever its writers chose.

    Parameters
    ----------
    path
        The folder to create or replace; missing parent folders are made.

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
    tmp.chmod(0o777 & ~process_umask())  # mkdtemp makes 0o700: give it mkdir()'s mode
    try:
        with naming_write_errors(path):
            yield tmp
        follow_umask(tmp)  # writers that ignore the umask (safetensors' save_file makes 0o600)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented, key-sorted JSON (stable bytes across runs).

    Parameters
    ----------
    path
        The file to write.
    data
        JSON-serialisable data; any other value is written as its ``str()``.
    """
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


class _DuplicateKey(ValueError):
    """A key given twice in one JSON object (readers keep the later value silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.load``'s ``object_pairs_hook``: the object, or :class:`_DuplicateKey` naming the key."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file when it is missing or malformed, or repeats a key in an object.

    Parameters
    ----------
    path
        The JSON file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = f.write_text('{"a": {"b": 1, "b": 2}}')
    >>> try:
    ...     read_json(f)
    ... except UserError as err:
    ...     print(str(err).replace(str(f), "FILE"))
    FILE: duplicate key 'b' in one object (a reader would keep the later value silently)
    """
    try:
        with open(path) as handle:
            return json.load(handle, object_pairs_hook=_unique_keys)
    except FileNotFoundError as err:
        raise UserError(f"{path}: file not found") from err
    except _DuplicateKey as err:
        raise UserError(
            f"{path}: duplicate key {err.args[0]!r} in one object (a reader would keep the later value silently)"
        ) from err
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks (constant memory).

    Parameters
    ----------
    path
        The file to hash.
    block
        Bytes read at a time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()
