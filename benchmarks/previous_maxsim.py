"""The exact MaxSim scorer as it was before issue #15, kept as the "before" baseline of
``bench_evaluate.py`` (same run, same vectors). Not used by the workflow.

Length-sorted groups padded to their longest document, padding masked through an extra
coordinate of the GEMM (sim -1e4), a whole group's similarities (up to 128 MiB) made by
one GEMM, then ``amax`` and a second GEMM for the per-query sums.
"""

from __future__ import annotations

import torch

SCORE_BUDGET = 1 << 25  # query-token x document-token scores held at once (128 MiB fp32)


def previous_maxsim_scores(
    queries: list[torch.Tensor], documents: list[torch.Tensor], budget: int = SCORE_BUDGET
) -> torch.Tensor:
    """Exact ColBERT scores ``sum_q max_d <q, d>`` of every query against every document.

    Documents are sorted by length and scored in groups padded to the group's longest
    document, so padding stays small; padded positions carry an extra coordinate that makes
    their similarity -1e4, so they never win a max (token vectors are unit-norm, |sim| <= 1)
    and no mask pass is needed. The per-query sum over tokens is one more GEMM. Each group
    holds at most ``budget`` query-token x document-token scores.

    Parameters
    ----------
    queries
        One tensor per query, shape (query tokens, dim).
    documents
        One tensor per document, shape (document tokens, dim).
    budget
        Most query-token x document-token scores held at once (bounds memory).

    Returns
    -------
    Tensor of shape (queries, documents), float32.

    Examples
    --------
    >>> q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    >>> d = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8], [-1.0, 0.0]])]
    >>> previous_maxsim_scores(q, d)
    tensor([[1.0000, 1.4000]])
    """
    device, dtype = queries[0].device, queries[0].dtype
    q_lens = torch.tensor([len(q) for q in queries])
    q_all = torch.cat(queries)  # (Q tokens, dim)
    q_all = torch.cat([q_all, torch.ones(len(q_all), 1, dtype=dtype, device=device)], dim=1)  # (Q tokens, dim+1)
    owner = torch.repeat_interleave(torch.arange(len(queries)), q_lens)
    summer = torch.zeros(len(q_all), len(queries), dtype=torch.float32, device=device)  # (Q tokens, queries)
    summer[torch.arange(len(q_all)), owner] = 1.0
    d_lens = torch.tensor([len(d) for d in documents])
    order = torch.argsort(d_lens, stable=True)
    out = torch.empty(len(queries), len(documents), dtype=torch.float32, device=device)
    start = 0
    while start < len(documents):
        longest = int(d_lens[order[min(len(order) - 1, start)]])
        group = max(1, budget // max(1, longest * len(q_all)))
        idx = order[start : start + group]
        longest = int(d_lens[idx].max())
        padded = torch.zeros(len(idx), longest, q_all.shape[1], dtype=dtype, device=device)
        padded[:, :, -1] = -1e4  # padding: sim = -1e4 with the queries' extra 1
        for row, j in enumerate(idx.tolist()):
            padded[row, : d_lens[j], :-1] = documents[j]
            padded[row, : d_lens[j], -1] = 0
        sims = padded.view(-1, q_all.shape[1]) @ q_all.T  # (group x longest, Q tokens)
        best = sims.view(len(idx), longest, -1).amax(dim=1).float()  # (group, Q tokens)
        out[:, idx] = (best @ summer).T
        start += len(idx)
    return out
