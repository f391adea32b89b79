"""One-line user errors: :class:`UserError` and the wording of a failed write."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FULL_ERRNOS", "TORCH_WRITE_FAILED", "UserError", "naming_write_errors", "one_line", "write_error"]


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint): shown as one line."""


# torch's stream writer loses errno: a short or failed write (disk full, quota) reads like these
TORCH_WRITE_FAILED = ("basic_ios", "file write failed", "unexpected pos")

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none).

    Parameters
    ----------
    err
        The exception to describe.

    Examples
    --------
    >>> one_line(OSError("no such\\n  file")), one_line(ValueError())
    ('no such file', 'ValueError')
    """
    return " ".join(str(err).split()) or type(err).__name__


def write_error(err: BaseException, path: str | Path | None) -> OSError | None:
    """``err`` as an ``OSError`` naming ``path`` if it is a failed write (disk full), else None.

    A full disk reaches us as ``OSError(ENOSPC)`` without a file name (``write()``, ``close()``),
    as safetensors' ``SafetensorError("... No space left on device (os error 28)")`` or as
    torch's ``RuntimeError("basic_ios::clear: iostream error")``: none says which file.

    Parameters
    ----------
    err
        The exception a write raised.
    path
        The file or folder being written (None: the error names no file).

    Examples
    --------
    >>> str(write_error(OSError(errno.ENOSPC, "No space left on device"), "out/eval.json"))
    "[Errno 28] No space left on device: 'out/eval.json'"
    >>> write_error(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), "m").strerror
    'No space left on device (torch: write failed)'
    >>> write_error(RuntimeError("shape mismatch"), "m") is None
    True
    """
    text = str(err)
    if isinstance(err, OSError):
        if err.errno not in FULL_ERRNOS or err.filename is not None:
            return None
        reason = err.strerror
    elif "No space left on device" in text or "os error 28" in text:
        reason = os.strerror(errno.ENOSPC)
    elif isinstance(err, RuntimeError) and any(s in text for s in TORCH_WRITE_FAILED):
        reason = f"{os.strerror(errno.ENOSPC)} (torch: write failed)"
    else:
        return None
    return OSError(getattr(err, "errno", None) or errno.ENOSPC, reason, None if path is None else str(path))


@contextlib.contextmanager
def naming_write_errors(path: str | Path) -> Iterator[None]:
    """Re-raise a failed write (disk full) inside the block as an ``OSError`` naming ``path``.

    Parameters
    ----------
    path
        The file or folder the block writes: the name the error gets.

    Examples
    --------
    >>> with naming_write_errors("results/eval.json"):
    ...     raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name
    Traceback (most recent call last):
    OSError: [Errno 28] No space left on device: 'results/eval.json'
    """
    try:
        yield
    except Exception as err:
        named = write_error(err, path)
        if named is None:
            raise
        raise named from err
