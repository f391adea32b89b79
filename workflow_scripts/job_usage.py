"""A forked job's own resource use: the JSON sidecar its warm-start client writes, and reading it back.

Snakemake's ``benchmark:`` samples a warm-started job's client, not the child forked to run
it (:mod:`workflow_scripts.warm`), so the client writes the child's figures, as the kernel
counted them, to a small JSON file beside the job's benchmark file (:func:`sidecar`); the cost
page (:mod:`workflow_scripts.report`) reads them from there, never from a log. A rule names the
file for its job through :data:`ENV_VAR` (``rules/common.smk``: ``usage_of``); a job started
cold writes none. Both ends are here, in a module the report imports: an edit to either reruns
the cost page. Standard library only (the job's entry point imports it before any stage).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["ENV_VAR", "UsageError", "read_usage", "sidecar", "usage_beside", "write_usage"]

# The sidecar a job's client writes, if its job is forked; unset (a cluster job, a test): none.
ENV_VAR = "REASON_COLBERT_USAGE"
KEYS = ("child", "status", "max_rss", "cpu_time")


class UsageError(ValueError):
    """A sidecar that is not one :func:`write_usage` wrote: its one-line message names the file."""


def sidecar(benchmark: str | Path) -> Path:
    """The usage sidecar of the job whose Snakemake ``benchmark:`` file is ``benchmark``.

    Parameters
    ----------
    benchmark
        The job's ``benchmark:`` file; the sidecar is that path with the suffix ``.usage.json``.

    Examples
    --------
    >>> str(sidecar("results/demo/benchmarks/evaluate/base/pony.tsv"))
    'results/demo/benchmarks/evaluate/base/pony.usage.json'
    """
    return Path(benchmark).with_suffix(".usage.json")


def write_usage(path: str | Path, *, child: int, status: int, maxrss_kb: float, cpu_s: float) -> None:
    """Write a forked job's exit status, peak RSS (MB) and CPU seconds to ``path``, atomically.

    Parameters
    ----------
    path
        The sidecar (:func:`sidecar` of the job's benchmark file).
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
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "job.usage.json"
    >>> write_usage(path, child=12, status=0, maxrss_kb=627200, cpu_s=1.25)
    >>> read_usage(path)
    {'child': 12, 'status': 0, 'max_rss': 612.5, 'cpu_time': 1.25}
    """
    path = Path(path)
    record = {"child": child, "status": status, "max_rss": round(maxrss_kb / 1024, 1), "cpu_time": round(cpu_s, 2)}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, path)


def read_usage(path: str | Path) -> dict[str, float] | None:
    """The record :func:`write_usage` wrote to ``path``; None if there is none (the job started cold).

    Raises :class:`UsageError`, naming the file, if it is not such a record.

    Parameters
    ----------
    path
        The sidecar (:func:`sidecar` of the job's benchmark file).

    Returns
    -------
    ``child`` (process id), ``status`` (exit status), ``max_rss`` (peak RSS, MB) and ``cpu_time`` (CPU seconds).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "job.usage.json"
    >>> read_usage(path) is None
    True
    >>> _ = path.write_text("warm: child 12 exit 0")
    >>> try:
    ...     read_usage(path)
    ... except UsageError as err:
    ...     print(str(err).replace(str(path), "PATH"))
    PATH: not a job usage record (a JSON object with child, status, max_rss, cpu_time); delete it and rerun the job
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
        if not isinstance(record, dict) or sorted(record) != sorted(KEYS):
            raise ValueError
        if not all(isinstance(record[k], int | float) and not isinstance(record[k], bool) for k in KEYS):
            raise ValueError
    except ValueError:
        raise UsageError(
            f"{path}: not a job usage record (a JSON object with {', '.join(KEYS)}); delete it and rerun the job"
        ) from None
    return record


def usage_beside(benchmark: str | Path) -> dict[str, float] | None:
    """:func:`read_usage` of the sidecar of the job whose ``benchmark:`` file is ``benchmark``.

    Parameters
    ----------
    benchmark
        The job's ``benchmark:`` file.
    """
    return read_usage(sidecar(benchmark))
