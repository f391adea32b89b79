"""The data stage's commands: ``python -m workflow_scripts data <command> ...``.

=====================  ==========================================================  ======================
command                what                                                        logic
=====================  ==========================================================  ======================
``fetch``              one source downloaded (or a mirror read), its manifest      ``sources.hub``
``build-shards``       one training stage's parquet triple shards, ``stats.json``  ``shards.build``
``resolve-revision``   the commit a branch or tag points at on the hub             ``sources.revisions``
``lock``               unpinned revisions in a config pinned to their downloads    ``sources.lock``
=====================  ==========================================================  ======================

This module only maps command names to those functions; each rule's code fingerprint is that
of the module its command runs (``rules/data.smk``), so an edit to the shards reruns no download.
"""

from __future__ import annotations

from .cli import run_commands
from .shards.build import build_shards
from .sources.hub import fetch_source
from .sources.lock import lock_revisions
from .sources.revisions import print_revision

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run one data command (``fetch``, ``build-shards``, ``resolve-revision``, ``lock``) with its flags.

    Parameters
    ----------
    argv
        The command and its ``--flag value`` words (None: ``sys.argv[1:]``).
    """
    run_commands(
        {
            "fetch": fetch_source,
            "build-shards": build_shards,
            "resolve-revision": print_revision,
            "lock": lock_revisions,
        },
        argv,
    )


if __name__ == "__main__":
    main()
