"""Token vectors of queries and documents, as the evaluation (and the preflight's measurement of it) encodes them."""

from __future__ import annotations

import torch

__all__ = ["encode"]


def encode(
    model, texts: list[str], *, is_query: bool, batch_size: int, device: str, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Normalised token vectors, one (tokens, dim) tensor per text (padding/skiplist removed).

    Parameters
    ----------
    model
        A loaded PyLate ColBERT (:func:`workflow_scripts.model.load.load_colbert`).
    texts
        The queries (already formatted by their template) or the documents.
    is_query
        Encode as queries (query prefix and length) rather than documents.
    batch_size
        The encoder's batch size.
    device, dtype
        Where the returned tensors are put (``cuda``, ``cpu``) and their dtype.
    """
    with torch.inference_mode():
        vecs = model.encode(
            texts,
            is_query=is_query,
            batch_size=batch_size,
            convert_to_numpy=False,
            convert_to_tensor=False,
            show_progress_bar=False,
        )
    return [v.to(device=device, dtype=dtype) for v in vecs]
