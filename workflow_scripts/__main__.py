"""``python -m workflow_scripts <stage> <command> --flag value ...``: the one entry of every rule.

Light on purpose (standard library only): when the Snakefile started a warm server
(:mod:`workflow_scripts.warm`), the job is handed to a child forked from it, which has the
heavy libraries imported already; otherwise, or when the server declines, the stage runs
here, cold, exactly as ``python -m workflow_scripts.<stage> <command> ...`` would.

Ctrl-C (SIGINT) ends the job with one line, not a traceback, and by SIGINT itself (the shell
reports 130): an interrupted job's log ends with what stopped it.
"""

from __future__ import annotations

import os
import signal
import sys

from .stages import run
from .warm import delegate


def main() -> None:
    argv = sys.argv[1:]  # run() rewrites sys.argv
    try:
        status = delegate(argv)
        status = run(argv) if status is None else status
    except KeyboardInterrupt:  # outputs are atomic: what the job was writing is removed already
        print(f"interrupted (SIGINT): {' '.join(argv[:2])} stopped", file=sys.stderr)
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(status)


if __name__ == "__main__":
    main()
