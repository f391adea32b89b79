"""Measurement helpers: the device, its memory and threads, the model's architecture, the rows and their token counts."""

from __future__ import annotations

import os
import resource
from typing import Any

from .flops import GIB

__all__ = [
    "architecture",
    "current_device",
    "device_memory",
    "reset_peak_memory",
    "row_token_lengths",
    "set_threads",
    "shards_for",
    "stage_rows",
    "synchronize",
    "token_counts",
]


def current_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(threads: int | None) -> None:
    """Give torch ``threads`` CPU threads (intra-op).

    Parameters
    ----------
    threads
        The job's thread count; None or 0 leaves torch's default.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def device_memory() -> dict[str, Any]:
    """Peak memory of this process so far and its device's capacity (CUDA allocator, or RSS and RAM on a CPU)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        # reserved, not allocated: what the caching allocator holds, fragmentation included
        peak, capacity = torch.cuda.max_memory_reserved(), props.total_memory
        kind, name = (
            f"cuda max_memory_reserved (allocated {torch.cuda.max_memory_allocated() / GIB:.2f} GiB)",
            props.name,
        )
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
        capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        kind, name = "process peak RSS", f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return {
        "device": name,
        "kind": kind,
        "peak_bytes": peak,
        "capacity_bytes": capacity,
        "headroom_bytes": capacity - peak,
    }


def architecture(model: Any) -> dict[str, int]:
    """The sizes the FLOP count needs, read from a loaded PyLate ColBERT.

    Parameters
    ----------
    model
        A loaded ``pylate.models.ColBERT``: module 0 the Transformer, the last a Dense layer.

    Returns
    -------
    ``parameters``, ``matmul_parameters`` (all but the input embeddings), ``layers``, ``hidden``, ``dim``
    (the output width) and ``largest_parameter`` (elements of the largest tensor).
    """
    backbone = model[0].auto_model
    embeddings = backbone.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    config = backbone.config
    return {
        "parameters": total,
        "matmul_parameters": total - embeddings,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "dim": int(model[-1].out_features),
        "largest_parameter": max(p.numel() for p in model.parameters()),
    }


def shards_for(files: list[str], rows: int) -> list[str]:
    """The first shards holding at least ``rows`` rows (all of them if fewer): shards are a uniform
    hash-shuffle of the stage, so a prefix is a random sample of it.

    Parameters
    ----------
    files
        The stage's parquet shards, in order.
    rows
        Rows wanted.
    """
    import pyarrow.parquet as pq

    chosen, total = [], 0
    for path in files:
        chosen.append(path)
        total += pq.read_metadata(path).num_rows
        if total >= rows:
            break
    return chosen


def stage_rows(files: list[str]) -> int:
    """Rows in all of ``files``, from the parquet footers (no data is read).

    Parameters
    ----------
    files
        A stage's parquet shards.
    """
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in files)


def token_counts(model: Any, texts: list[str], *, is_query: bool) -> list[int]:
    """Tokens each text is encoded with (specials included, truncated at the model's length).

    Parameters
    ----------
    model
        A loaded PyLate ColBERT; its tokenizer and lengths are used, 256 texts at a time.
    texts
        The texts to count.
    is_query
        True: tokenized as queries (query prefix and length); False: as documents.
    """
    counts: list[int] = []
    for start in range(0, len(texts), 256):
        masks = model.tokenize(texts[start : start + 256], is_query=is_query)["attention_mask"]
        counts += masks.sum(dim=1).tolist()
    return counts


def row_token_lengths(model: Any, dataset: Any, *, rows: int) -> dict[str, list[int]]:
    """Token lengths (specials included, truncated at the model's lengths) of the first ``rows`` rows, per column.

    Parameters
    ----------
    model
        A loaded PyLate ColBERT: its tokenizer and lengths count the tokens.
    dataset
        The loaded triples (``query``, ``positive``, ``negative`` columns).
    rows
        Rows counted (all of them if the dataset holds fewer).
    """
    sample = dataset.select(range(min(rows, len(dataset))))
    return {
        column: token_counts(model, sample[column], is_query=column == "query")
        for column in ("query", "positive", "negative")
    }
