"""Progress lines for long work, readable with ``tail -f`` on the job's log.

A 414k-document evaluation or a 2.7M-triple epoch runs for hours; the log Snakemake keeps
must say how far it is. One plain line at a steady interval (no carriage returns, no bars)::

    evaluate stage2/leetcode: 120,000/413,932 documents (29.0%), 812.4 documents/s, ETA 6m02s
"""

from __future__ import annotations

import logging
import os
import sys
import time

__all__ = ["PROGRESS_BAR_SWITCHES", "Progress", "default_interval", "format_seconds", "quiet_library_progress_bars"]

logger = logging.getLogger(__name__)

INTERVAL_ENV = "PROGRESS_INTERVAL_S"


def default_interval() -> float:
    """Seconds between two progress lines: ``$PROGRESS_INTERVAL_S``, else 30.

    An environment variable, not a config key: how often a job reports is not what it
    computes, so changing it reruns nothing.

    Examples
    --------
    >>> default_interval() if INTERVAL_ENV not in os.environ else 30.0
    30.0
    """
    return float(os.environ.get(INTERVAL_ENV, "30"))


def format_seconds(seconds: float) -> str:
    """A duration as ``1h02m``, ``6m02s`` or ``42s``.

    Parameters
    ----------
    seconds
        The duration, rounded to whole seconds.

    Examples
    --------
    >>> format_seconds(3725), format_seconds(362), format_seconds(4.2)
    ('1h02m', '6m02s', '4s')
    """
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts work done and logs ``done/total unit (pct), rate unit/s, ETA`` every ``interval``
    seconds, and once more when closed.

    Parameters
    ----------
    what
        What is being done (``"evaluate stage2/leetcode"``), the start of every line.
    total
        How much work there is (None when unknown: no percentage, no ETA).
    unit
        The unit counted (``"documents"``, ``"triples"``, ``"steps"``).
    interval
        Seconds between two lines.

    Examples
    --------
    >>> clock = iter(range(0, 1000, 10)).__next__
    >>> progress = Progress("demo", total=100, unit="rows", interval=15, clock=clock, log=print)
    >>> progress.update(30); progress.update(30); progress.close()
    demo: 60/100 rows (60.0%), 3.0 rows/s, ETA 13s
    demo: 60/100 rows (60.0%), 2.0 rows/s, ETA 20s
    """

    def __init__(
        self, what: str, *, total: int | None, unit: str, interval: float | None = None, clock=time.monotonic, log=None
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.interval = default_interval() if interval is None else interval
        self.clock = clock
        self.log = log or logger.info
        self.done = 0
        self.started = self.last = clock()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; log a line when ``interval`` seconds passed since the last."""
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.log(self.line(now))

    def line(self, now: float) -> str:
        """The progress line at time ``now``."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total is None:
            return f"{self.what}: {self.done:,} {self.unit}, {rate:,.1f} {self.unit}/s"
        share = 100 * self.done / max(self.total, 1)
        eta = format_seconds((self.total - self.done) / rate) if rate > 0 else "unknown"
        return (
            f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({share:.1f}%), "
            f"{rate:,.1f} {self.unit}/s, ETA {eta}"
        )

    def close(self) -> None:
        """Log the final line."""
        self.log(self.line(self.clock()))


# Read at import by the libraries (tqdm, huggingface_hub, datasets); a warm-started job has
# them imported already, so their switches are flipped too (:func:`quiet_library_progress_bars`).
PROGRESS_BAR_SWITCHES = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def quiet_library_progress_bars() -> None:
    """No library progress bars when stderr is a log file: each redraw is a carriage return,
    and `tail -f` shows one unreadable line. The stages log their own (progress.py)."""
    if sys.stderr.isatty():
        return
    os.environ.update(PROGRESS_BAR_SWITCHES)
    for module, switch in (
        ("huggingface_hub.utils", "disable_progress_bars"),
        ("transformers.utils.logging", "disable_progress_bar"),
        ("datasets.utils.tqdm", "disable_progress_bars"),
    ):
        if module in sys.modules:
            getattr(sys.modules[module], switch)()
