"""The out-of-core shuffle: triples hashed into bucket files, each sorted and de-duplicated, written as shards.

Memory does not grow with the number of rows: peak memory is one bucket.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..progress import Progress
from .schema import SHARD_SCHEMA

__all__ = ["shuffle_to_shards"]

logger = logging.getLogger(__name__)

BATCH_ROWS = 1024
PROGRESS_INTERVAL: float | None = None  # between two progress lines; None: $PROGRESS_INTERVAL_S or 30 s


def _key(seed: int, triple: dict[str, str]) -> bytes:
    text = "\x1f".join(triple[c] for c in ("query", "positive", "negative"))
    return hashlib.blake2b(f"{seed}\x1e{text}".encode(), digest_size=8).digest()


class ShardWriter:
    """Writes fixed-size zstd parquet shards ``part-NNNNN.parquet`` as rows arrive."""

    def __init__(self, out_dir: Path, rows_per_shard: int) -> None:
        self.out_dir, self.rows_per_shard = out_dir, rows_per_shard
        self.buffer: list[dict[str, str]] = []
        self.shards = 0
        self.rows = 0

    def add(self, rows: Iterable[dict[str, str]]) -> None:
        for row in rows:
            self.buffer.append(row)
            if len(self.buffer) == self.rows_per_shard:
                self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_pylist(self.buffer, schema=SHARD_SCHEMA)
        pq.write_table(table, self.out_dir / f"part-{self.shards:05d}.parquet", compression="zstd")
        self.rows += len(self.buffer)
        self.shards += 1
        self.buffer = []


def shuffle_to_shards(
    triples: Iterable[dict[str, str]],
    *,
    out_dir: Path,
    seed: int,
    buckets: int,
    rows_per_shard: int,
    label: str = "shuffle",
) -> tuple[int, int]:
    """Shuffle and deduplicate out of core: hash → bucket files → sort each bucket → shards.

    A triple's key is a seeded hash of its text, so identical triples share a bucket and sit
    side by side after the sort: de-duplication needs no global set, and peak memory is one
    bucket (about triples / buckets rows). The order is a pure function of the triples and
    the seed (same bytes on rerun). Returns (rows written, duplicates removed).

    Both passes log ``label: N rows, R rows/s`` lines every ``PROGRESS_INTERVAL`` seconds
    (the second with a total and an ETA), so a multi-hour build shows where it is.

    Parameters
    ----------
    triples
        The triples, as rows of :data:`~workflow_scripts.shards.schema.SHARD_SCHEMA`'s columns.
    out_dir
        An existing, empty folder: ``part-NNNNN.parquet`` shards are written there, bucket files
        in ``out_dir/.buckets`` meanwhile.
    seed
        Seeds the key hash, so the order.
    buckets
        How many bucket files: peak memory is about ``len(triples) / buckets`` rows.
    rows_per_shard
        Rows of each shard (the last may hold fewer).
    label
        The start of the progress lines.

    Returns
    -------
    (rows written, duplicates removed)
    """
    scratch = out_dir / ".buckets"
    scratch.mkdir()
    read = _bucket_pass(triples, scratch=scratch, seed=seed, buckets=buckets, label=label)
    rows, duplicates = _shard_pass(
        scratch=scratch, out_dir=out_dir, buckets=buckets, rows_per_shard=rows_per_shard, label=label, total=read
    )
    scratch.rmdir()
    return rows, duplicates


def _bucket_pass(triples: Iterable[dict[str, str]], *, scratch: Path, seed: int, buckets: int, label: str) -> int:
    """The first pass: each triple keyed and appended to its bucket file in ``scratch``; returns rows read."""
    writers: dict[int, pq.ParquetWriter] = {}
    pending: dict[int, list[dict[str, Any]]] = {}
    bucket_schema = SHARD_SCHEMA.append(pa.field("key", pa.binary()))
    # reading, expanding and hashing the sources is the long pass; its total is unknown
    reading = Progress(f"{label}: read + bucket", total=None, unit="rows", interval=PROGRESS_INTERVAL, log=logger.info)
    for triple in triples:
        reading.update()
        key = _key(seed, triple)
        b = int.from_bytes(key[:4], "big") % buckets
        pending.setdefault(b, []).append({**triple, "key": key})
        if len(pending[b]) >= BATCH_ROWS:
            _flush_bucket(writers=writers, pending=pending, b=b, scratch=scratch, schema=bucket_schema)
    for b in list(pending):
        _flush_bucket(writers=writers, pending=pending, b=b, scratch=scratch, schema=bucket_schema)
    for writer in writers.values():
        writer.close()
    reading.close()
    return reading.done


def _shard_pass(
    *, scratch: Path, out_dir: Path, buckets: int, rows_per_shard: int, label: str, total: int
) -> tuple[int, int]:
    """The second pass: each bucket file sorted, de-duplicated, written as shards and removed.

    Returns (rows written, duplicates removed).
    """
    shards = ShardWriter(out_dir, rows_per_shard)
    writing = Progress(
        f"{label}: sort + write shards", total=total, unit="rows", interval=PROGRESS_INTERVAL, log=logger.info
    )
    duplicates = 0
    for b in range(buckets):
        path = scratch / f"{b:05d}.parquet"
        if not path.exists():
            continue
        rows = pq.read_table(path).to_pylist()
        unique = _sorted_unique(rows=rows)
        duplicates += len(rows) - len(unique)
        shards.add({k: v for k, v in r.items() if k != "key"} for r in unique)
        path.unlink()
        writing.update(len(rows))  # rows read back, duplicates included: the total counts them too
    shards.flush()
    writing.close()
    return shards.rows, duplicates


def _text(row: dict[str, Any]) -> tuple[str, str, str]:
    """A row's (query, positive, negative): what makes two triples duplicates."""
    return row["query"], row["positive"], row["negative"]


def _sorted_unique(*, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One bucket's rows sorted by (key, text), each duplicate after the first left out (sorts ``rows``)."""
    rows.sort(key=lambda r: (r["key"], _text(r)))
    return [r for i, r in enumerate(rows) if i == 0 or _text(r) != _text(rows[i - 1])]


def _flush_bucket(
    *,
    writers: dict[int, pq.ParquetWriter],
    pending: dict[int, list[dict[str, Any]]],
    b: int,
    scratch: Path,
    schema: pa.Schema,
) -> None:
    """Append bucket ``b``'s pending rows to its bucket file (opened on first use)."""
    if not pending.get(b):
        return
    if b not in writers:
        writers[b] = pq.ParquetWriter(scratch / f"{b:05d}.parquet", schema, compression="zstd")
    writers[b].write_table(pa.Table.from_pylist(pending.pop(b), schema=schema))
