"""Streamed readers of a source's files: parquet record batches and rows, jsonl lines.

Memory does not grow with a file: parquet is read ``BATCH_ROWS`` rows at a time and jsonl
line by line. A damaged, empty or malformed file is one line naming it (and the line).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import UserError, one_line

__all__ = ["BATCH_ROWS", "iter_jsonl_rows", "iter_parquet_batches", "iter_parquet_rows"]

BATCH_ROWS = 1024


def _open_parquet(path: Path, columns: list[str]) -> pq.ParquetFile:
    """A parquet file with ``columns`` and at least one row; anything else is one line naming it."""
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable parquet file ({one_line(err)})") from err
    missing = [c for c in columns if c not in handle.schema_arrow.names]
    if missing:
        raise UserError(f"{path}: missing column(s) {missing}; has {handle.schema_arrow.names}")
    if handle.metadata.num_rows == 0:
        raise UserError(f"{path}: empty file (no rows)")
    return handle


def iter_parquet_batches(files: Iterable[Path], columns: list[str]) -> Iterator[tuple[Path, pa.RecordBatch]]:
    """Stream (file, record batch of ``columns``); a damaged page is one line naming the file.

    Parameters
    ----------
    files
        Parquet files, read in this order, ``BATCH_ROWS`` rows at a time.
    columns
        The columns to read: a file without one of them, or without rows, is refused.
    """
    for path in files:
        batches = _open_parquet(path, columns).iter_batches(batch_size=BATCH_ROWS, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as err:  # only the read: the consumer's errors pass
                raise UserError(f"{path}: not a readable parquet file ({one_line(err)})") from err
            yield path, batch


def iter_parquet_rows(files: Iterable[Path], columns: list[str]) -> Iterator[tuple[Path, int, dict]]:
    """Stream rows as dicts (file, row number from 0, row), naming the file when a column is missing.

    Parameters
    ----------
    files
        Parquet files, read in this order.
    columns
        The columns each row holds.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.parquet"
    >>> pq.write_table(pa.table({"id": ["q1", "q2"], "x": [1, 2]}), path)
    >>> [(row_no, row) for _, row_no, row in iter_parquet_rows([path], ["id"])]
    [(0, {'id': 'q1'}), (1, {'id': 'q2'})]
    """
    for path in files:
        row = 0
        for _, batch in iter_parquet_batches([path], columns):
            for record in batch.to_pylist():
                yield path, row, record
                row += 1


def iter_jsonl_rows(path: Path) -> Iterator[tuple[Path, int, dict]]:
    """Stream a jsonl file; a truncated, malformed or undecodable line is an error naming file and line.

    Parameters
    ----------
    path
        The file: one JSON object per line (blank lines are skipped).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.jsonl"
    >>> _ = path.write_text('{"q": "why"}\\n\\n{"q": "how"}\\n')
    >>> [(line_no, row) for _, line_no, row in iter_jsonl_rows(path)]
    [(1, {'q': 'why'}), (3, {'q': 'how'})]
    >>> _ = path.write_text('{"q": "why"}\\n{"q": \\n')
    >>> list(iter_jsonl_rows(path))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: .../a.jsonl:2: malformed JSON line (Expecting value)
    """
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:{line_no}: not valid UTF-8") from err
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_no}: malformed JSON line ({err.msg})") from err
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object")
            yield path, line_no, row
