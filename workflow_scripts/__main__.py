"""``python -m workflow_scripts <stage> <command> --flag value ...``: the one entry of every rule.

Light on purpose (standard library only): when the Snakefile started a warm server
(:mod:`workflow_scripts.warm`), the job is handed to a child forked from it, which has the
heavy libraries imported already; otherwise, or when the server declines, the stage runs
here, cold, exactly as ``python -m workflow_scripts.<stage> <command> ...`` would.
"""

from __future__ import annotations

import importlib
import sys

STAGES = ("data", "demo", "evaluate", "model", "preflight", "rehearsal", "report", "summarize", "train")


def run(argv: list[str]) -> int | None:
    """Run ``<stage> <command> ...`` in this process (the stage's own ``main``)."""
    if not argv or argv[0] not in STAGES:
        print(f"usage: python -m workflow_scripts {{{','.join(STAGES)}}} COMMAND [--flag value ...]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"workflow_scripts.{argv[0]}")
    sys.argv = [module.__file__, *argv[1:]]  # argparse names the stage, as a cold start would
    return module.main(argv[1:])


def main() -> None:
    from .warm import delegate

    status = delegate(sys.argv[1:])
    sys.exit(run(sys.argv[1:]) if status is None else status)


if __name__ == "__main__":
    main()
