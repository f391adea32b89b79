"""Locking: an unpinned revision in the config replaced, in place, by the commit its download recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..config_files import load_config_file
from ..errors import UserError, one_line
from ..files import atomic_file, read_json
from .revisions import is_pinned

__all__ = ["lock_revisions"]


def _locked_sources(config: dict[str, Any]) -> dict[tuple[str, ...], str]:
    """Config path of each source's revision -> the download manifest that records its commit.

    ``sources.<name>`` is downloaded as ``<name>``; ``evaluate_models.<name>`` as
    ``model_<name>``, or as ``base_model`` when it is the same source (one download, as the
    workflow does). Entries without a ``revision`` key (an overlay) are skipped.

    Examples
    --------
    >>> base = {"repo": "m/b", "revision": "main"}
    >>> _locked_sources({"sources": {"base_model": base}, "evaluate_models": {"base": dict(base), "x": {"repo": "m/x"}}})
    {('sources', 'base_model', 'revision'): 'base_model', ('evaluate_models', 'base', 'revision'): 'base_model'}
    """
    sources = config.get("sources") or {}
    out = {("sources", name, "revision"): name for name, src in sources.items() if "revision" in (src or {})}
    for name, src in (config.get("evaluate_models") or {}).items():
        if "revision" in (src or {}):
            same = src == sources.get("base_model")
            out[("evaluate_models", name, "revision")] = "base_model" if same else f"model_{name}"
    return out


def _scalar_spans(text: str, paths: list[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[int, int]]:
    """Character span of the scalar at each mapping path of a YAML document (comments untouched).

    Examples
    --------
    >>> text = "sources:\\n  a:\\n    revision: main  # moving\\n"
    >>> start, end = _scalar_spans(text, [("sources", "a", "revision")])[("sources", "a", "revision")]
    >>> text[start:end]
    'main'
    """
    spans, root = {}, yaml.compose(text)
    for path in paths:
        node = root
        for key in path:
            children = node.value if isinstance(node, yaml.MappingNode) else []
            node = next((value for name, value in children if name.value == key), None)
        if isinstance(node, yaml.ScalarNode):
            spans[path] = (node.start_mark.index, node.end_mark.index)
    return spans


def lock_revisions(*, config: str, manifest_dir: str = "resources/sources") -> list[str]:
    """Pin every unpinned revision of ``config`` to the commit its download recorded, in place.

    A revision that is a branch or tag name (``main``) or 40 zeros is replaced by the commit
    in its download manifest (:func:`~workflow_scripts.sources.hub.fetch_source` resolved it),
    when the manifest is of the same repository. Only those values change: comments, order and
    every other byte of the file stay; a pinned sha is never touched. Prints and returns one
    line per change (or why a revision stays unpinned).

    Parameters
    ----------
    config
        The config file to pin, rewritten in place (atomically) when anything changes.
    manifest_dir
        Where the downloads' manifests are (``<source>.manifest.json``).
    """
    path = Path(config)
    data = load_config_file(path)  # a duplicate key or a YAML tag: one line naming the file
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"{config}: cannot read the config ({one_line(err)})") from err
    wanted, lines = {}, []
    for keys, source in _locked_sources(data).items():
        entry, where = _get(data, keys[:-1]), ".".join(keys)
        if is_pinned(str(entry["revision"])):
            continue
        manifest = Path(manifest_dir) / f"{source}.manifest.json"
        recorded = read_json(manifest) if manifest.exists() else {}
        if recorded.get("repo") != entry.get("repo") or not is_pinned(str(recorded.get("revision", ""))):
            lines.append(
                f"{where}: {entry['revision']!r} stays: {manifest} records no commit of {entry.get('repo')} "
                "(download it first)"
            )
            continue
        wanted[keys] = recorded["revision"]
        lines.append(f"{where}: {entry['revision']!r} -> {recorded['revision']}")
    spans = _scalar_spans(text, list(wanted))
    for keys in sorted(wanted, key=lambda k: spans[k][0], reverse=True):  # from the end: earlier spans stay valid
        start, end = spans[keys]
        text = f'{text[:start]}"{wanted[keys]}"{text[end:]}'
    if wanted:
        with atomic_file(path) as handle:
            handle.write(text)
    for line in lines or [f"{config}: every revision is pinned already"]:
        print(line)
    return lines


def _get(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        data = data[key]
    return data
