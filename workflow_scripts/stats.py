"""How sure is each number: bootstrap intervals over queries, paired randomization tests, Holm.

Everything here reads per-query scores (one nDCG@10 per query of a split) and answers one
question about *query sampling*: had BRIGHT drawn other queries of the same kind, how far could
this number move? Nothing here sees corpus or annotation noise, nor training seeds (those are
the summary's seed rows).

- :func:`bootstrap_interval`: a percentile-corrected (BCa) bootstrap interval of the mean of
  one split, or of the equally weighted mean of several splits (the card's 12-split mean), with
  queries resampled *within* each split (``scipy.stats.bootstrap`` with one sample per split).
- :func:`paired_test`: a paired randomization test of two models on the same queries
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``: each query's two scores
  are swapped or not), on one split or on the equally weighted mean of several.
- :func:`holm`: Holm's step-down adjustment of p-values (scipy has none).

Every call takes an explicit seed; :func:`seed_for` derives one per cell from the configured
seed and the cell's names, so a cell's interval never depends on which other cells exist.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["bootstrap_interval", "holm", "paired_test", "seed_for", "weights"]

logger = logging.getLogger(__name__)


def seed_for(seed: int, *names: str) -> list[int]:
    """A generator seed for one cell: the configured seed and a CRC of the cell's names.

    Examples
    --------
    >>> seed_for(0, "card", "stage2", "pony") == seed_for(0, "card", "stage2", "pony")
    True
    >>> seed_for(0, "card", "stage2", "pony") != seed_for(0, "card", "stage1", "pony")
    True
    """
    return [seed, zlib.crc32("\0".join(names).encode())]


def weights(samples: Sequence[np.ndarray]) -> np.ndarray:
    """Per-query weights of the equally weighted mean of per-split means, concatenated.

    Each split weighs ``1 / len(samples)`` whatever its number of queries, as the card's mean
    of 12 split scores does.

    Examples
    --------
    >>> weights([np.zeros(2), np.zeros(4)]).tolist()
    [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    """
    return np.concatenate([np.full(len(s), 1 / (len(samples) * len(s))) for s in samples])


def _mean_of_means(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """The equally weighted mean of each sample's mean (vectorized over leading axes)."""
    return np.mean([np.mean(s, axis=axis) for s in samples], axis=0)


def bootstrap_interval(
    *, samples: Sequence[np.ndarray], resamples: int, confidence: float, seed: Sequence[int] | int
) -> tuple[float, float]:
    """Bootstrap interval of the equally weighted mean of per-split means, queries resampled within each split.

    Parameters
    ----------
    samples
        One array of per-query scores per split (a single split: the interval of its mean).
    resamples
        Bootstrap resamples.
    confidence
        Confidence level, e.g. 0.95.
    seed
        Seed of the resampling (:func:`seed_for`).

    Returns
    -------
    tuple[float, float]
        (low, high). BCa, scipy's default; where BCa is undefined (every resample gives the same
        mean, e.g. a split whose queries all score 0) the percentile interval, which is then that
        value.

    Examples
    --------
    >>> bootstrap_interval(samples=[np.full(10, 0.25)], resamples=200, confidence=0.95, seed=0)
    (0.25, 0.25)
    >>> low, high = bootstrap_interval(samples=[np.arange(10.0), np.full(4, 1.0)], resamples=500,
    ...                                confidence=0.95, seed=0)
    >>> low < (4.5 + 1.0) / 2 < high
    True
    """
    from scipy import stats

    arrays = tuple(np.asarray(s, dtype=float) for s in samples)
    kwargs = dict(n_resamples=resamples, confidence_level=confidence, vectorized=True, rng=np.random.default_rng(seed))
    # BCa's acceleration is 0/0 when every jackknife mean is equal: scipy warns, we fall back
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(arrays, _mean_of_means, method="BCa", **kwargs)
        interval = result.confidence_interval
        if not (np.isfinite(interval.low) and np.isfinite(interval.high)):
            interval = stats.bootstrap(arrays, _mean_of_means, method="percentile", **kwargs).confidence_interval
    return float(interval.low), float(interval.high)


def paired_test(
    *, a: Sequence[np.ndarray], b: Sequence[np.ndarray], resamples: int, seed: Sequence[int] | int
) -> dict[str, float]:
    """Paired randomization test of two models scored on the same queries.

    The statistic is the difference of the equally weighted means of per-split means (one
    split: the mean difference); under the null hypothesis each query's two scores are
    exchangeable, so the test swaps them at random (``permutation_type="samples"``), exactly
    when ``2**queries <= resamples``.

    Parameters
    ----------
    a, b
        Per-query scores per split, the same queries in the same order in both.
    resamples
        Random relabellings (an exact test when there are fewer possible ones).
    seed
        Seed of the relabelling (:func:`seed_for`).

    Returns
    -------
    dict[str, float]
        ``delta`` (mean of ``a`` minus mean of ``b``) and the two-sided ``p``.

    Examples
    --------
    >>> x = np.array([0.1, 0.5, 0.3, 0.0])
    >>> paired_test(a=[x], b=[x], resamples=100, seed=0)
    {'delta': 0.0, 'p': 1.0}
    >>> round(paired_test(a=[x + 0.2], b=[x], resamples=100, seed=0)["p"], 4)  # 16 relabellings, exact
    0.125
    """
    from scipy import stats

    x, y = np.concatenate([np.asarray(s, float) for s in a]), np.concatenate([np.asarray(s, float) for s in b])
    if x.shape != y.shape or [len(s) for s in a] != [len(s) for s in b]:
        raise ValueError("paired samples differ in shape")
    w = weights(a)

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum((u - v) * w, axis=axis)

    result = stats.permutation_test((x, y), statistic, permutation_type="samples", vectorized=True,
                                    n_resamples=resamples, alternative="two-sided", rng=np.random.default_rng(seed))  # fmt: skip
    return {"delta": float(statistic(x, y)), "p": float(min(1.0, result.pvalue))}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1`` (i from 1), made
    non-decreasing along that order, and capped at 1; rejecting where the adjusted value is
    at most alpha controls the family-wise error rate at alpha.

    Examples
    --------
    By hand: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running
    maximum 0.02, 0.03, 0.06, 0.06.

    >>> [round(p, 10) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
    >>> holm([0.5, 0.9])
    [1.0, 1.0]
    >>> holm([])
    []
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
