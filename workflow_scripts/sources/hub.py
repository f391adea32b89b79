"""The download: a source resolved to a directory laid out like its hub repository, and its manifest."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import write_json
from .manifest import escaping_link, file_entry, tree_files
from .revisions import REF_RE, is_pinned, mirror_commit, resolve_pin

__all__ = ["fetch_source"]

logger = logging.getLogger(__name__)


def fetch_source(
    *,
    name: str,
    repo: str,
    revision: str,
    repo_type: str,
    local: str | None,
    cache_dir: str | Path,
    manifest: str | Path,
    allow_patterns: list[str] | None = None,
) -> dict[str, Any]:
    """Resolve one source to a directory laid out like its hub repository; write a manifest.

    With ``local`` set the directory is used as is (a mirror); otherwise the revision is
    downloaded with ``huggingface_hub.snapshot_download`` into ``cache_dir``. A revision that
    is not pinned (a branch or tag name such as ``main``, or 40 zeros) is first resolved to
    the commit it points at (:func:`~workflow_scripts.sources.revisions.resolve_pin`, one
    warning line), and that commit is what is downloaded and recorded: the manifest's
    ``revision`` is always the commit the data came from when it is known
    (``configured_revision`` keeps what the config said), and ``python -m
    workflow_scripts.data lock`` writes it back into the config. A mirror made by
    ``huggingface-cli download --local-dir`` records its commit in ``.cache/huggingface``,
    which resolves an unpinned revision the same way.

    The manifest lists every file with size, mtime and sha256, and every reader checks the
    data against it (:func:`~workflow_scripts.sources.manifest.source_root`). Its ``path`` is the
    directory as given: a relative ``local`` or ``cache_dir`` stays relative to the working
    directory, so a moved checkout reads its own copy.

    Parameters
    ----------
    name
        The source's key in the config (``sources.<name>``): messages name it, the manifest records it.
    repo, repo_type
        The hub repository (``xlangai/BRIGHT``) and its kind (``dataset``, ``model``).
    revision
        A 40-hex commit, or a branch or tag name (or 40 zeros: the default branch), resolved first.
    local
        A mirror folder laid out like the repository, used as it is; None downloads.
    cache_dir
        Where a download goes (``<cache_dir>/<name>``).
    manifest
        The manifest to write.
    allow_patterns
        Only the repository's files matching these (None: all), as ``snapshot_download`` takes them.

    Returns
    -------
    The manifest's content.
    """
    if not REF_RE.match(revision or ""):
        raise UserError(
            f"sources.{name}.revision: {revision!r} is neither a 40-hex commit sha nor a branch or tag name"
        )
    if local:
        root, pinned = _local_root(name=name, local=local, revision=revision)
    else:
        root, pinned = _hub_root(
            name=name,
            repo=repo,
            revision=revision,
            repo_type=repo_type,
            cache_dir=Path(cache_dir),
            allow_patterns=allow_patterns,
        )
    files = _checked_files(name=name, root=root, key="local" if local else "repo")
    data = {
        "name": name,
        "repo": repo,
        "repo_type": repo_type,
        "revision": pinned,
        "configured_revision": revision,
        "path": str(root),
        "mode": "local" if local else "hub",
        "files": [file_entry(root, p) for p in files],
    }
    write_json(manifest, data)
    return data


def _local_root(*, name: str, local: str, revision: str) -> tuple[Path, str]:
    """A mirror folder checked to be one; returns it and the revision (its commit where unpinned and known)."""
    root = Path(local).expanduser()
    if root.exists() and not root.is_dir():
        raise UserError(
            f"sources.{name}.local: {local} is a file, not a directory (a mirror is a folder laid out like "
            "the hub repository)"
        )
    if not root.is_dir():
        raise UserError(f"sources.{name}.local: directory {local} does not exist")
    if not is_pinned(revision) and (commit := mirror_commit(root)):
        logger.warning(
            "sources.%s.revision %r is not pinned: the mirror %s holds commit %s; pin it with "
            "`python -m workflow_scripts.data lock --config config.yaml`",
            name,
            revision,
            root,
            commit,
        )
        return root, commit
    return root, revision


def _hub_root(
    *,
    name: str,
    repo: str,
    revision: str,
    repo_type: str,
    cache_dir: Path,
    allow_patterns: list[str] | None,
) -> tuple[Path, str]:
    """The revision resolved to a commit and downloaded; returns ``<cache_dir>/<name>`` and the commit."""
    pinned = (
        revision if is_pinned(revision) else resolve_pin(name=name, repo=repo, repo_type=repo_type, revision=revision)
    )
    _snapshot(
        name=name,
        repo=repo,
        revision=pinned,
        repo_type=repo_type,
        cache_dir=cache_dir,
        allow_patterns=allow_patterns,
    )
    return cache_dir / name, pinned  # where snapshot_download put it, not its resolved path


def _checked_files(*, name: str, root: Path, key: str) -> list[Path]:
    """The source's files; none, or a link out of ``root``, is a one-line error naming ``sources.<name>.<key>``."""
    files = tree_files(root)
    if not files:
        raise UserError(f"sources.{name}: {root} holds no files")
    if escaped := escaping_link(root):
        raise UserError(f"sources.{name}.{key}: {escaped}")
    return files


def _snapshot(
    *,
    name: str,
    repo: str,
    revision: str,
    repo_type: str,
    cache_dir: Path,
    allow_patterns: list[str] | None,
) -> Path:
    """Download a pinned hub snapshot; offline or unreachable → one line naming the key."""
    if not is_pinned(revision):  # fetch_source resolves first: a branch here would be a moving target
        raise UserError(f"sources.{name}.revision {revision!r}: only a commit sha is downloaded (resolve it first)")
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id=repo,
            repo_type=repo_type,
            revision=revision,
            local_dir=cache_dir / name,
            allow_patterns=allow_patterns,
        )
    except Exception as err:  # offline mode, DNS, 404: all mean "use a mirror"
        raise UserError(
            f"cannot download {repo}@{revision[:12]} ({type(err).__name__}); set "
            f"sources.{name}.local to a directory mirrored with `huggingface-cli download "
            f"--repo-type {repo_type} {repo} --revision {revision} --local-dir DIR`"
        ) from err
    return Path(path)
