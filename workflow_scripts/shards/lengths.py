"""Token lengths of the training text: percentiles on a uniform sample of the triples."""

from __future__ import annotations

import random
from typing import Any

__all__ = ["length_stats", "reservoir_add"]


def reservoir_add(rng: random.Random, sample: list, item: Any, seen: int, size: int) -> None:
    if len(sample) < size:
        sample.append(item)
    elif (j := rng.randrange(seen)) < size:
        sample[j] = item


def length_stats(sample: list[dict[str, str]], tokenizer_dir: str | None) -> dict[str, dict[str, float]]:
    """Token-length percentiles of query/positive/negative on a sample (base tokenizer)."""
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
