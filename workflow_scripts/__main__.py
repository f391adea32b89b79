"""``python -m workflow_scripts <stage> <command> --flag value ...``: the one entry of every rule.

Light on purpose (standard library only): when the Snakefile started a warm server
(:mod:`workflow_scripts.warm`, an opt-in local tool: config ``warm_start``), the job is handed
to a child forked from it, which has the heavy libraries imported already; otherwise, or when
the server declines, the stage runs here, cold, exactly as ``python -m
workflow_scripts.<module> <command> ...`` would (:data:`~workflow_scripts.stages.STAGES`). ``warm`` is imported only when a server was
started (:data:`WARM_ENV` set), so no stage, and no cold job, ever imports it.

Ctrl-C (SIGINT) ends the job with one line, not a traceback, and by SIGINT itself (the shell
reports 130): an interrupted job's log ends with what stopped it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from .job_usage import ENV_VAR as USAGE_ENV
from .stages import run

WARM_ENV = "REASON_COLBERT_WARM"  # warm.ENV_VAR (tests/test_warm.py checks they agree)


def main() -> None:
    argv = sys.argv[1:]  # run() rewrites sys.argv
    if os.environ.get(USAGE_ENV):  # a sidecar of an earlier, forked run of this job is not this run's
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.environ[USAGE_ENV])
    try:
        status = None
        if os.environ.get(WARM_ENV):
            from .warm import delegate  # only here: a cold job never imports the warm-start client

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
