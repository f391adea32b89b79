"""Revisions: a commit sha (pinned) or a branch or tag name, resolved to the commit it points at.

A revision that is not pinned is resolved once, on the hub or from what a mirror records, and
the download records that commit (:mod:`workflow_scripts.sources.lock` writes it back into
the config).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import UserError

__all__ = ["REF_RE", "is_pinned", "mirror_commit", "print_revision", "resolve_pin", "resolve_revision"]

logger = logging.getLogger(__name__)

REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
ZERO_REVISION = "0" * 40  # the hub's "default branch" revision: not a pin
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")  # a commit, or a branch / tag name (main, v1.0)


def is_pinned(revision: str) -> bool:
    """True for a 40-hex commit sha other than the "not pinned yet" 40 zeros.

    Parameters
    ----------
    revision
        A configured revision: a commit sha, a branch or tag name, or 40 zeros.

    Examples
    --------
    >>> is_pinned("a75a0eb483f6a5233a6efc2d63d71540a4443dfb"), is_pinned("main"), is_pinned("0" * 40)
    (True, False, False)
    """
    return bool(REVISION_RE.match(revision)) and revision != ZERO_REVISION


def resolve_revision(repo: str, repo_type: str, revision: str | None = None) -> str:
    """The commit sha ``revision`` (a branch or tag; None: the default branch) of ``repo`` points at on the hub.

    Parameters
    ----------
    repo, repo_type
        The hub repository (``xlangai/BRIGHT``) and its kind (``dataset``, ``model``).
    revision
        A branch, tag or commit; None: the repository's default branch.
    """
    from huggingface_hub import HfApi

    return HfApi().repo_info(repo, repo_type=repo_type, revision=revision).sha


def resolve_pin(*, name: str, repo: str, repo_type: str, revision: str) -> str:
    """The commit an unpinned ``sources.<name>.revision`` points at now, with one warning line.

    40 zeros ("not pinned yet") mean the default branch. Offline or unknown: one line naming
    the keys that fix it.

    Parameters
    ----------
    name
        The source's key in the config (``sources.<name>``), for the messages.
    repo, repo_type
        The hub repository (``xlangai/BRIGHT``) and its kind (``dataset``, ``model``).
    revision
        The configured revision: a branch or tag name, or 40 zeros (the default branch).
    """
    ref = None if revision == ZERO_REVISION else revision
    try:
        sha = resolve_revision(repo, repo_type, ref)
    except Exception as err:  # offline mode, DNS, 404, a branch that does not exist
        raise UserError(
            f"sources.{name}.revision {revision!r} is not pinned and cannot be resolved on the hub "
            f"({type(err).__name__}); set sources.{name}.revision to a commit sha, or sources.{name}.local to a mirror"
        ) from err
    if not is_pinned(sha or ""):
        raise UserError(f"sources.{name}.revision {revision!r}: the hub answered {sha!r}, not a commit sha")
    logger.warning(
        "sources.%s.revision %r is not pinned: resolved to %s on the hub; pin it with "
        "`python -m workflow_scripts.data lock --config config.yaml`",
        name,
        revision,
        sha,
    )
    return sha


def mirror_commit(root: Path) -> str | None:
    """The one commit a ``huggingface-cli download --local-dir`` mirror records for all its files, or None.

    The CLI keeps ``.cache/huggingface/download/<file>.metadata`` per file; its first line is
    the commit the file came from.

    Parameters
    ----------
    root
        The mirror's directory (``sources.<name>.local``).

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> mirror_commit(root) is None
    True
    >>> meta = root / ".cache/huggingface/download/vl"
    >>> meta.mkdir(parents=True)
    >>> _ = (meta / "train.parquet.metadata").write_text("c" * 40 + "\\netag\\n1.0\\n")
    >>> mirror_commit(root) == "c" * 40
    True
    """
    folder = root / ".cache" / "huggingface" / "download"
    commits = {path.read_text().split("\n", 1)[0].strip() for path in folder.rglob("*.metadata")}
    if len(commits) != 1:  # none recorded, or files from several commits: no single answer
        return None
    commit = commits.pop()
    return commit if is_pinned(commit) else None


def print_revision(*, repo: str, repo_type: str = "dataset", revision: str | None = None) -> None:
    """Print the commit a branch or tag (default: the default branch) points at on the hub.

    Parameters
    ----------
    repo, repo_type
        The hub repository (``xlangai/BRIGHT``) and its kind (``dataset``, ``model``).
    revision
        A branch or tag name; None: the default branch.
    """
    print(resolve_revision(repo, repo_type, revision))
