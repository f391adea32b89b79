"""The stage registry: which modules ``python -m workflow_scripts <stage> ...`` runs, and running one.

Standard library only, and importing no project module, so both the entry point
(:mod:`workflow_scripts.__main__`) and a warm child (:mod:`workflow_scripts.warm`) can run a
stage without importing each other.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["STAGES", "run"]

# stage name -> the module (relative to the package) whose ``main`` holds the stage's command table
STAGES = {
    "data": "data",
    "demo": "synthetic.demo",
    "evaluate": "evaluate.job",
    "model": "model.widen",
    "preflight": "preflight.commands",
    "rehearsal": "synthetic.rehearsal",
    "report": "report",
    "summarize": "summarize",
    "train": "train.stage",
}


def run(argv: list[str]) -> int | None:
    """Run ``<stage> <command> ...`` in this process (the stage's own ``main``).

    Parameters
    ----------
    argv
        The stage name, its command and the command's flags.

    Returns
    -------
    The stage's exit status (None: success), or 2 for an unknown stage.

    Examples
    --------
    >>> run(["no-such-stage"])
    2
    """
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m workflow_scripts {{{','.join(STAGES)}}} COMMAND [--flag value ...]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"workflow_scripts.{STAGES[argv[0]]}")
    sys.argv = [f"python -m workflow_scripts {argv[0]}", *argv[1:]]  # argparse names the stage in its messages
    return module.main(argv[1:])
