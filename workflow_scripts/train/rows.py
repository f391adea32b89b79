"""A stage's training rows: its parquet triple shards, and the dataset loaded from them in collator order."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ..errors import UserError

__all__ = ["COLUMNS", "load_triples", "shard_files"]

COLUMNS = ["query", "positive", "negative"]  # collator order: anchor, positive, negative


def shard_files(shards: str | Path) -> list[str]:
    """The parquet shards of a stage, checked for the columns training needs.

    Parameters
    ----------
    shards
        The stage's shard folder, holding ``part-*.parquet`` files with ``query``, ``positive`` and ``negative``.
    """
    files = sorted(str(p) for p in Path(shards).glob("part-*.parquet"))
    if not files:
        raise UserError(f"{shards}: no part-*.parquet shards")
    for path in files:
        names = pq.read_schema(path).names
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: parquet shard is missing column(s) {missing}")
    return files


def load_triples(files: list[str], cache_dir: Path):
    """Memory-mapped Arrow dataset of (query, positive, negative): streamed in, never in RAM.

    Parameters
    ----------
    files
        The stage's parquet shards (:func:`shard_files`).
    cache_dir
        The ``datasets`` cache folder the Arrow files are written to.
    """
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache_dir))
    return dataset.select_columns(COLUMNS)
