"""In-batch false negatives: a candidate scored as a negative of a query though it is a positive of it.

:func:`false_negatives` counts them in one contrastive batch from row identities (texts or
hashes); :class:`FalseNegativeCounter` wraps a loss's forward and counts every batch it sees
(the training stage and the preflight, through :func:`workflow_scripts.train.trainer.make_trainer`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

__all__ = ["FalseNegativeCounter", "false_negatives", "row_identities"]


def false_negatives(queries: list[Any], positives: list[Any], negatives: list[Any]) -> dict[str, int]:
    """In-batch false negatives of one contrastive batch, from an identity (text or hash) per row.

    CachedContrastive scores each row's query against every positive and negative of the
    batch (gathered across devices) and labels only the row's own positive slot as right. Any
    other slot holding a document that is a positive of that query -- its own positive again,
    or the positive of another row with the same query (bge-reasoner rows expand to up to
    2 x 4 triples sharing it), in a positive or a negative column -- is a *false negative*.

    Parameters
    ----------
    queries, positives, negatives
        Row ``i``'s query, positive and negative identities (equal values = equal texts).

    Returns
    -------
    ``rows``; ``rows_with_false_negative`` (rows with at least one); ``false_negative_pairs``
    ((query row, candidate) pairs); ``duplicate_query_rows`` (rows whose query occurs twice or more).

    Examples
    --------
    >>> false_negatives(["q", "q", "r"], ["p", "p", "s"], ["n1", "n2", "p"])  # rows 0, 1: same query and positive
    {'rows': 3, 'rows_with_false_negative': 2, 'false_negative_pairs': 4, 'duplicate_query_rows': 2}
    >>> false_negatives(["q", "r"], ["p", "s"], ["n", "t"])
    {'rows': 2, 'rows_with_false_negative': 0, 'false_negative_pairs': 0, 'duplicate_query_rows': 0}
    """
    relevant: dict[Any, set[Any]] = {}
    for query, positive in zip(queries, positives):
        relevant.setdefault(query, set()).add(positive)
    slots = Counter([*positives, *negatives])  # candidate documents, by identity
    per_row = [sum(slots[p] for p in relevant[q]) - 1 for q in queries]  # -1: the row's own positive
    repeated = Counter(queries)
    return {
        "rows": len(queries),
        "rows_with_false_negative": sum(1 for n in per_row if n > 0),
        "false_negative_pairs": sum(per_row),
        "duplicate_query_rows": sum(1 for q in queries if repeated[q] > 1),
    }


def row_identities(features: dict[str, Any]) -> Any:
    """One int64 per row of a tokenized column: a hash of its unpadded token ids (what the model sees).

    Parameters
    ----------
    features
        One tokenized column: ``input_ids`` and ``attention_mask``, (rows, tokens); only the tokens
        the mask keeps are hashed.

    Returns
    -------
    A (rows,) int64 tensor on the device of ``input_ids``: rows with the same tokens get the same value.
    """
    import torch

    ids, mask = features["input_ids"].cpu(), features["attention_mask"].cpu().bool()
    digests = [hashlib.blake2b(row[keep].numpy().tobytes(), digest_size=8).digest() for row, keep in zip(ids, mask)]
    hashes = [int.from_bytes(d, "big", signed=True) for d in digests]
    return torch.tensor(hashes, dtype=torch.int64, device=features["input_ids"].device)


class FalseNegativeCounter:
    """Wraps the loss's forward and counts :func:`false_negatives` of every contrastive batch.

    Rows are identified by their token ids after truncation; with ``gather`` the batch is the
    global one (each rank's rows gathered, as CachedContrastive gathers the documents), so every
    rank takes part in one small all-gather of int64 hashes per loss call.
    """

    def __init__(self, forward: Any, gather: bool) -> None:
        self.forward, self.gather = forward, gather
        self.batches: list[dict[str, int]] = []

    def __call__(self, sentence_features: list[dict[str, Any]], labels: Any = None) -> Any:
        import torch
        from pylate.utils import all_gather

        columns = [row_identities(f) for f in sentence_features[:3]]  # query, positive, negative
        if self.gather:
            columns = [torch.cat(list(all_gather(c))) for c in columns]
        self.batches.append(false_negatives(*(c.tolist() for c in columns)))
        return self.forward(sentence_features, labels)

    def summary(self, batch_sampler: str) -> dict[str, Any]:
        """Per-batch rates over the batches this process saw (a resumed run: its part only)."""
        rates = [b["rows_with_false_negative"] / max(b["rows"], 1) for b in self.batches]
        pairs = [b["false_negative_pairs"] for b in self.batches]
        return {
            "batch_sampler": batch_sampler,
            "batches": len(self.batches),
            "rows_per_batch": self.batches[0]["rows"] if self.batches else 0,
            "rows_with_false_negative_rate_mean": sum(rates) / len(rates) if rates else None,
            "rows_with_false_negative_rate_max": max(rates, default=None),
            "false_negative_pairs_per_batch_mean": sum(pairs) / len(pairs) if pairs else None,
            "duplicate_query_rows_per_batch_mean": (
                sum(b["duplicate_query_rows"] for b in self.batches) / len(self.batches) if self.batches else None
            ),
            "definition": "a candidate document scored as a negative of a query although it is a positive of that "
            "query (same token ids) in another row of the same contrastive batch",
        }
