"""Token lengths of the training text: percentiles on a uniform sample of the triples."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["length_stats", "reservoir_add"]


def reservoir_add(rng: random.Random, sample: list, item: Any, seen: int, size: int) -> None:
    """Keep ``sample`` a uniform sample of at most ``size`` of the ``seen`` items so far (reservoir sampling).

    Parameters
    ----------
    rng
        The seeded generator (the same seed keeps the same sample).
    sample
        The sample so far, changed in place.
    item
        The ``seen``-th item (counted from 1).
    seen
        How many items have been offered, ``item`` included.
    size
        The sample's size.

    Examples
    --------
    >>> rng, sample = random.Random(0), []
    >>> for seen, item in enumerate(range(100), start=1):
    ...     reservoir_add(rng, sample, item, seen, 5)
    >>> len(sample), len(set(sample)), all(0 <= x < 100 for x in sample)
    (5, 5, True)
    """
    if len(sample) < size:
        sample.append(item)
    elif (j := rng.randrange(seen)) < size:
        sample[j] = item


def length_stats(sample: list[dict[str, str]], tokenizer_dir: str | None) -> dict[str, dict[str, float]]:
    """Token-length percentiles and mean of query, positive and negative on a sample of triples.

    Parameters
    ----------
    sample
        Triples (dicts with ``query``, ``positive``, ``negative``), e.g. kept by :func:`reservoir_add`.
    tokenizer_dir
        The base model's folder, whose tokenizer counts tokens; None counts white-space words.

    Returns
    -------
    ``{column: {"p5": ..., "p25": ..., "p50": ..., "p75": ..., "p95": ..., "p99": ..., "mean": ...}}``;
    empty for an empty sample.

    Examples
    --------
    >>> stats = length_stats([{"query": "a b", "positive": "a b c d", "negative": "a"}], None)
    >>> stats["positive"]["p50"], stats["query"]["mean"]
    (4.0, 2.0)
    """
    import numpy as np

    if not sample:
        return {}
    if tokenizer_dir:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        count = lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    else:
        count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731
    out = {}
    for col in ("query", "positive", "negative"):
        lengths = np.array(count([r[col] for r in sample]))
        out[col] = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95, 99)}
        out[col]["mean"] = float(lengths.mean())
    return out
