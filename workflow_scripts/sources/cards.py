"""Dataset cards: which files hold a dataset config and split, as the hub's README declares.

A hub dataset's ``README.md`` opens with YAML front matter whose ``configs`` block maps each
config name to its ``data_files`` (a path, a list of paths, or ``{split, path}`` entries), as
``datasets.load_dataset`` reads it; without one, ``<config>/**`` is the config's folder.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError

__all__ = ["config_files"]


def config_files(root: str | Path, config: str, split: str | None = None) -> list[Path]:
    """Data files of one dataset config (and split), as the hub's README metadata declares.

    Falls back to ``<config>/**`` when the README has no ``configs`` block.

    Parameters
    ----------
    root
        The dataset's directory, laid out like its hub repository (``README.md`` at the top).
    config
        The config (``vl``, ``hq``): a ``config_name`` of the card's ``configs`` block, else a folder.
    split
        The split (``train``); None: every split of the config.

    Returns
    -------
    The matching ``.parquet``, ``.jsonl`` and ``.json`` files, sorted; none is a UserError.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "vl").mkdir(); _ = (root / "vl" / "train-0.parquet").write_bytes(b"")
    >>> [p.name for p in config_files(root, "vl", "train")]
    ['train-0.parquet']
    """
    root = Path(root)
    patterns = _readme_patterns(root, config, split)
    if patterns is None:
        prefix = f"{split}-" if split else ""
        patterns = [f"{config}/**/{prefix}*", f"{config}/{prefix}*"]
    files = sorted(
        {
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix in (".parquet", ".jsonl", ".json")
            and any(fnmatch.fnmatch(str(p.relative_to(root)), pat) for pat in patterns)
        }
    )
    if not files:
        where = f"{config}/{split}" if split else config
        raise UserError(f"{root}: no data files for {where} (patterns {patterns})")
    return files


def _readme_patterns(root: Path, config: str, split: str | None) -> list[str] | None:
    """``data_files`` patterns the dataset card gives ``config`` (and ``split``); None without them."""
    readme = root / "README.md"
    meta = _front_matter(readme)
    if meta is None:
        return None
    configs = meta.get("configs") or []
    if not isinstance(configs, list):
        raise UserError(f"{readme}: configs must be a list of {{config_name, data_files}}")
    for i, entry in enumerate(configs):
        if not isinstance(entry, dict):
            raise UserError(f"{readme}: configs[{i}] must be a mapping with config_name and data_files")
        if entry.get("config_name") == config:
            return _data_file_patterns(entry.get("data_files") or [], split, f"{readme}: configs[{i}].data_files")
    return None


def _front_matter(readme: Path) -> dict[str, Any] | None:
    """The YAML front matter of a dataset card, or None when there is no card or no front matter.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> card = pathlib.Path(tempfile.mkdtemp()) / "README.md"
    >>> _ = card.write_text("---\\nconfigs: [a, b\\n---\\n")
    >>> _front_matter(card)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: .../README.md:3: front matter is not valid YAML (expected ',' or ']', but got '<stream end>')
    """
    if not readme.exists():
        return None
    try:
        text = readme.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{readme}: not valid UTF-8 (byte {err.start})") from err
    if not text.startswith("---"):
        return None
    try:
        meta = yaml.safe_load(text.split("---")[1]) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{readme}:{mark.line + 1}" if mark is not None else str(readme)  # starts after the first ---
        reason = getattr(err, "problem", None) or type(err).__name__
        raise UserError(f"{where}: front matter is not valid YAML ({' '.join(str(reason).split())})") from err
    if not isinstance(meta, dict):
        raise UserError(f"{readme}: front matter is not a mapping (got {type(meta).__name__})")
    return meta


def _data_file_patterns(data_files: Any, split: str | None, where: str) -> list[str]:
    """Patterns of one ``data_files`` entry: a path, a list of paths (the train split), or ``{split, path}``s."""
    if isinstance(data_files, str):
        return [data_files]
    if not isinstance(data_files, list):
        raise UserError(f"{where}: expected a path, a list of paths or of {{split, path}}, got {data_files!r:.80}")
    out: list[str] = []
    for item in data_files:
        if isinstance(item, str):
            out += [item] if split in (None, "train") else []
            continue
        paths = item.get("path") if isinstance(item, dict) else None
        if not isinstance(paths, str) and not (isinstance(paths, list) and all(isinstance(x, str) for x in paths)):
            raise UserError(
                f"{where}: expected {{split, path}} with path a string or a list of strings, got {item!r:.80}"
            )
        if split is None or item.get("split") == split:
            out += [paths] if isinstance(paths, str) else paths
    return out
