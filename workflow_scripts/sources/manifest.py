"""Download manifests: the files a source was, and the check that it still is.

A manifest (``resources/sources/<name>.manifest.json``) records a source's repository, the
commit its data came from, its directory and every file in it (path, size, mtime, sha256);
every reader goes through :func:`source_root`, which refuses a directory that changed since.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import read_json, sha256_file

__all__ = ["escaping_link", "file_entry", "source_root", "source_roots", "tree_files"]


def tree_files(root: Path) -> list[Path]:
    """Files under ``root`` in sorted order, without the hub's ``.cache`` bookkeeping.

    Parameters
    ----------
    root
        A source's directory (a download or a mirror).
    """
    return [p for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(root).parts]


def escaping_link(root: Path) -> str | None:
    """The first entry under ``root`` that is a symlink resolving outside it, in words; None if none.

    A mirror's data is what lies inside it: a link to a system file would otherwise be hashed
    into the manifest and read as data. A folder link is not followed (its target must be
    inside anyway); the hub's ``.cache`` bookkeeping is never read, so not checked.

    Parameters
    ----------
    root
        A mirror's directory.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "m").mkdir(); (d / "m" / "a.jsonl").symlink_to("/etc/hostname")
    >>> print(escaping_link(d / "m").replace(str(d), "D"))
    D/m/a.jsonl is a symlink to /etc/hostname, outside the mirror D/m; copy the files in (cp -rL) or mirror again
    """
    real = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".cache" or Path(folder) != Path(root)]
        for entry in sorted(dirs + files):
            path = Path(folder, entry)
            target = os.path.realpath(path)
            if path.is_symlink() and target != real and not target.startswith(real.rstrip(os.sep) + os.sep):
                return (
                    f"{path} is a symlink to {target}, outside the mirror {root}; copy the files in (cp -rL) "
                    "or mirror again"
                )
    return None


def file_entry(root: Path, path: Path) -> dict[str, Any]:
    """One manifest row: the path relative to ``root``, size, mtime (ns) and sha256.

    Parameters
    ----------
    root
        The source's directory; the recorded path is relative to it.
    path
        A file below ``root``, hashed whole.
    """
    stat = path.stat()
    return {
        "path": path.relative_to(root).as_posix(),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": sha256_file(path),
    }


def source_root(manifest: str | Path) -> Path:
    """The directory a download manifest describes, checked against the manifest.

    Every listed file must exist with its recorded size; a file whose mtime differs (a copied
    checkout) is hashed again and must keep its sha256; a file the manifest does not list, or
    a symlink resolving outside the directory, is a change too. A relative
    ``path`` resolves against the working directory. Any difference is one line naming the
    file and the fix: rerun the download.

    Parameters
    ----------
    manifest
        A ``resources/sources/<name>.manifest.json`` written by :func:`~workflow_scripts.sources.hub.fetch_source`.

    Returns
    -------
    The directory, as the manifest gives it (relative or absolute).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from workflow_scripts.sources.hub import fetch_source
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "src").mkdir(); _ = (d / "src" / "a.jsonl").write_text("{}")
    >>> _ = fetch_source(name="x", repo="o/x", revision="a" * 40, repo_type="dataset",
    ...                  local=str(d / "src"), cache_dir=d, manifest=d / "x.json")
    >>> source_root(d / "x.json") == d / "src"
    True
    >>> _ = (d / "src" / "b.jsonl").write_text("{}")
    >>> source_root(d / "x.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: .../src/b.jsonl: changed since its download manifest .../x.json was written (not listed in it); rerun the download (snakemake --forcerun download)
    """
    data = read_json(manifest)
    if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not isinstance(data.get("files"), list):
        raise UserError(
            f"{manifest}: not a download manifest (no path and files); rerun the download "
            "(snakemake --forcerun download)"
        )
    root = Path(data["path"])
    if not root.is_dir():
        raise UserError(_changed(root, manifest, "directory missing"))
    if escaped := escaping_link(root):
        raise UserError(_changed(root, manifest, escaped))
    for entry in data["files"]:
        problem = _file_problem(root / entry["path"], entry)
        if problem:
            raise UserError(_changed(root / entry["path"], manifest, problem))
    listed = {entry["path"] for entry in data["files"]}
    for path in tree_files(root):  # any file: a reader or loader may pick up what it finds
        if path.relative_to(root).as_posix() not in listed:
            raise UserError(_changed(path, manifest, "not listed in it"))
    return root


def source_roots(manifests: list[str]) -> dict[str, Path]:
    """Source name -> its directory, from download manifests (each names its source), verified.

    Parameters
    ----------
    manifests
        Download manifests, each checked by :func:`source_root`.
    """
    roots = {}
    for manifest in manifests:
        root = source_root(manifest)  # first: a malformed manifest is one line, not a KeyError
        roots[read_json(manifest)["name"]] = root
    return roots


def _file_problem(path: Path, entry: dict[str, Any]) -> str | None:
    """How ``path`` differs from its manifest row, or None; hashes only when the mtime moved."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if stat.st_size != entry["size"]:
        return f"size {stat.st_size}, was {entry['size']}"
    if stat.st_mtime_ns == entry.get("mtime_ns"):  # older manifests have no mtime: hash
        return None
    if sha256_file(path) != entry["sha256"]:
        return "same size, other content: sha256 differs"
    return None


def _changed(path: Path, manifest: str | Path, problem: str) -> str:
    return (
        f"{path}: changed since its download manifest {manifest} was written ({problem}); "
        "rerun the download (snakemake --forcerun download)"
    )
