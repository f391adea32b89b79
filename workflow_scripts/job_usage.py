"""A forked job's own resource use: the line its client ends the log with, and reading it back.

Snakemake's ``benchmark:`` samples a warm-started job's client, not the child forked to run
it (:mod:`workflow_scripts.warm`), so the client writes the child's figures as the kernel
counted them; the cost page (:mod:`workflow_scripts.report`) reads them from there. Both ends
of that line are here, in a module the report imports: an edit to either reruns the cost page.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["log_beside", "usage_beside", "usage_from_log", "usage_line"]

PREFIX = "warm: child "


def usage_line(*, child: int, status: int, maxrss_kb: float, cpu_s: float) -> str:
    """The log line of a forked job's exit status, peak RSS (MB) and CPU seconds.

    Parameters
    ----------
    child
        The forked child's process id.
    status
        Its exit status.
    maxrss_kb
        Its peak resident set size in KiB, as ``wait4`` reports it.
    cpu_s
        Its user plus system CPU seconds.

    Examples
    --------
    >>> usage_line(child=12, status=0, maxrss_kb=627200, cpu_s=1.25)
    'warm: child 12 exit 0, peak RSS 612.5 MB, CPU 1.25 s'
    """
    return f"{PREFIX}{child} exit {status}, peak RSS {maxrss_kb / 1024:.1f} MB, CPU {cpu_s:.2f} s"


def usage_beside(benchmark: str | Path) -> dict[str, float] | None:
    """:func:`usage_from_log` of the job whose Snakemake ``benchmark:`` file is ``benchmark``.

    A rule's log and benchmark share their path below the run (tests/test_rules.py checks it):
    ``results/<run>/benchmarks/<job>.tsv`` and ``results/<run>/logs/<job>.log``.

    Examples
    --------
    >>> str(log_beside("results/demo/benchmarks/evaluate/base/pony.tsv"))
    'results/demo/logs/evaluate/base/pony.log'
    """
    return usage_from_log(log_beside(benchmark))


def log_beside(benchmark: str | Path) -> Path:
    """The log of the job whose ``benchmark:`` file is ``benchmark`` (see :func:`usage_beside`)."""
    run, _, job = str(benchmark).rpartition("/benchmarks/")
    return Path(f"{run}/logs/{job}").with_suffix(".log")


def usage_from_log(path: str | Path) -> dict[str, float] | None:
    """Peak RSS (MB) and CPU seconds of a warm-started job, from its log's last :func:`usage_line`.

    Examples
    --------
    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "job.log"
    >>> _ = log.write_text("work\\nwarm: child 12 exit 0, peak RSS 612.5 MB, CPU 1.25 s\\n")
    >>> usage_from_log(log)
    {'max_rss': 612.5, 'cpu_time': 1.25}
    >>> usage_from_log(log.with_name("missing.log")) is None
    True
    """
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith(PREFIX) and ", peak RSS " in line:
            rss = float(line.split(", peak RSS ")[1].split(" MB")[0])
            cpu = float(line.split(", CPU ")[1].split(" s")[0])
            return {"max_rss": rss, "cpu_time": cpu}
    return None
