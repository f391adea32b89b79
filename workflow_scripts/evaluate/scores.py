"""Scores of one job checked and kept: the running top-k, finite scores, degenerate-score flags."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError

__all__ = ["ScoreSpread", "TopK", "check_finite_scores", "result_flags"]


class TopK:
    """Running top-k (score, document index) per query over streamed chunks."""

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = k
        self.scores = torch.empty(n_queries, 0)
        self.index = torch.empty(n_queries, 0, dtype=torch.long)

    def update(self, scores: torch.Tensor, offset: int) -> None:
        """Merge a chunk's scores (queries, chunk docs) whose first document is ``offset``."""
        idx = torch.arange(offset, offset + scores.shape[1]).expand(scores.shape[0], -1)
        all_scores = torch.cat([self.scores, scores.cpu()], dim=1)
        all_index = torch.cat([self.index, idx], dim=1)
        k = min(self.k, all_scores.shape[1])
        top = torch.topk(all_scores, k=k, dim=1)
        self.scores, self.index = top.values, torch.gather(all_index, 1, top.indices)


def check_finite_scores(scores: torch.Tensor, documents: list[torch.Tensor], ids: list[str], *, where: str) -> None:
    """Refuse NaN or infinite MaxSim scores before anything is ranked, in one line naming ``where``.

    ``torch.topk`` ranks NaN first, so a NaN score would be a silent ranking of garbage; ``-inf``
    is only legal for an empty document (a max over nothing: it never ranks).

    Parameters
    ----------
    scores
        One chunk's MaxSim scores, shape (queries, documents of the chunk).
    documents, ids
        The chunk's document vectors (an empty one may score ``-inf``) and their ids, in column order.
    where
        What the error line starts with (the job and split).

    Examples
    --------
    >>> docs = [torch.ones(2, 4), torch.empty(0, 4)]
    >>> check_finite_scores(torch.tensor([[1.0, float("-inf")]]), docs, ["a", "b"], where="x")
    >>> check_finite_scores(torch.tensor([[float("nan"), float("-inf")]]), docs, ["a", "b"], where="evaluate m")
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: evaluate m: 1 MaxSim scores are NaN or infinite (first document 'a'): the model's vectors are not finite; nothing was ranked
    """
    empty = torch.tensor([len(d) == 0 for d in documents], device=scores.device)
    bad = torch.isnan(scores) | torch.isposinf(scores) | (torch.isneginf(scores) & ~empty)
    if bool(bad.any()):
        first = ids[int(bad.any(dim=0).nonzero()[0])]
        raise UserError(
            f"{where}: {int(bad.sum())} MaxSim scores are NaN or infinite (first document {first!r}): "
            "the model's vectors are not finite; nothing was ranked"
        )


class ScoreSpread:
    """Running lowest and highest finite score of each query, and how many documents it scored.

    A query whose every document gets the same score is ranked in tie order: its nDCG@10 looks
    plausible but measures nothing (a last Dense of zeros does this to every query).
    """

    def __init__(self, n_queries: int) -> None:
        self.low = torch.full((n_queries,), float("inf"))
        self.high = torch.full((n_queries,), float("-inf"))
        self.scored = torch.zeros(n_queries, dtype=torch.long)

    def update(self, scores: torch.Tensor) -> None:
        """Merge a chunk's (queries, documents) scores; ``-inf`` (excluded, empty) is not a score."""
        scores = scores.detach().cpu().float()
        finite = torch.isfinite(scores)
        self.low = torch.minimum(self.low, torch.where(finite, scores, float("inf")).amin(dim=1))
        self.high = torch.maximum(self.high, torch.where(finite, scores, float("-inf")).amax(dim=1))
        self.scored += finite.sum(dim=1)

    def summary(self, qids: list[str]) -> dict[str, Any]:
        """``queries_all_scores_equal`` (count and the first ids), ``split_all_scores_equal``.

        Equal means within float32 rounding of the score's size (1e-6 relative).

        Examples
        --------
        >>> spread = ScoreSpread(2)
        >>> spread.update(torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.9, 0.5]]))
        >>> checks = spread.summary(["q1", "q2"])
        >>> checks["queries_all_scores_equal"], checks["queries_all_scores_equal_ids"], checks["split_all_scores_equal"]
        (1, ['q1'], False)
        """
        ranked = self.scored >= 2  # a query scored against one document has nothing to tie with
        tol = 1e-6 * torch.maximum(self.high.abs(), torch.ones_like(self.high))
        tied = ranked & (self.high - self.low <= tol)
        low, high = self.low[ranked], self.high[ranked]
        whole = bool(ranked.any()) and float(high.max() - low.min()) <= 1e-6 * max(1.0, float(high.abs().max()))
        return {
            "queries_all_scores_equal": int(tied.sum()),
            "queries_all_scores_equal_ids": [q for q, t in zip(qids, tied.tolist()) if t][:10],
            "split_all_scores_equal": whole,
            "queries_ranked": int(ranked.sum()),
        }


def result_flags(
    *, coverage: dict[str, int], score_checks: dict[str, Any], requested: dict[str, int], applied: dict[str, int]
) -> list[str]:
    """What a reader of one result must know before trusting or comparing it, one line each.

    Parameters
    ----------
    coverage
        The query set's coverage of its split (:func:`workflow_scripts.evaluate.job.query_coverage`).
    score_checks
        :meth:`ScoreSpread.summary` of the result's scores.
    requested, applied
        Token limits asked for and those in use (``query_length``, ``document_length``); every key of ``requested``
        is compared.

    Returns
    -------
    ``degenerate: ...``, ``partial: ...`` and ``capped: ...`` lines, in that order; empty when nothing is amiss.

    Examples
    --------
    >>> checks = {"queries_all_scores_equal": 3, "queries_ranked": 3, "split_all_scores_equal": True}
    >>> for line in result_flags(coverage={"queries": 8, "split_queries": 16, "missing": 8, "extra": 0},
    ...                          score_checks=checks, requested={"query_length": 900}, applied={"query_length": 512}):
    ...     print(line)
    degenerate: every document of the split has the same score (ranking is tie order; the nDCG measures nothing)
    partial: the query set covers 8 of the split's 16 queries; scored on those only (not comparable with a full split)
    capped: query_length 900 requested, 512 applied (the model's limit)
    """
    out = []
    tied, ranked = score_checks["queries_all_scores_equal"], score_checks["queries_ranked"]
    if score_checks["split_all_scores_equal"]:
        out.append(
            "degenerate: every document of the split has the same score (ranking is tie order; "
            "the nDCG measures nothing)"
        )
    elif tied:
        out.append(f"degenerate: {tied} of {ranked} queries give every document the same score (ranked in tie order)")
    if coverage.get("missing"):
        covered = coverage["queries"] - coverage["extra"]
        out.append(
            f"partial: the query set covers {covered} of the split's {coverage['split_queries']} queries; "
            "scored on those only (not comparable with a full split)"
        )
    for key, value in requested.items():
        if applied[key] != value:
            out.append(f"capped: {key} {value} requested, {applied[key]} applied (the model's limit)")
    return out
