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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "bootstrap_interval",
    "card_check",
    "holm",
    "intervals",
    "pair_tests",
    "paired_test",
    "per_query_frame",
    "seed_for",
    "seed_rows",
    "weights",
]

logger = logging.getLogger(__name__)


def seed_for(seed: int, *names: str) -> list[int]:
    """A generator seed for one cell: the configured seed and a CRC of the cell's names.

    Parameters
    ----------
    seed
        The configured seed (``statistics.seed``).
    *names
        The cell's names (protocol, model(s), split or ``mean``), in a fixed order.

    Returns
    -------
    ``[seed, crc32 of the names joined by NUL]``, a seed sequence for ``numpy.random.default_rng``.

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

    Parameters
    ----------
    samples
        One array of per-query scores per split; only their lengths are read.

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
        value. A split of one query is the same in every resample (with only such splits, the
        interval is the mean itself).

    Examples
    --------
    >>> bootstrap_interval(samples=[np.full(10, 0.25)], resamples=200, confidence=0.95, seed=0)
    (0.25, 0.25)
    >>> low, high = bootstrap_interval(samples=[np.arange(10.0), np.full(4, 1.0)], resamples=500,
    ...                                confidence=0.95, seed=0)
    >>> low < (4.5 + 1.0) / 2 < high
    True
    >>> bootstrap_interval(samples=[np.array([0.5])], resamples=100, confidence=0.95, seed=0)
    (0.5, 0.5)
    >>> both = bootstrap_interval(samples=[np.arange(10.0), np.array([1.0])], resamples=500, confidence=0.95, seed=0)
    >>> alone = bootstrap_interval(samples=[np.arange(10.0)], resamples=500, confidence=0.95, seed=0)
    >>> np.allclose(both, [(alone[0] + 1.0) / 2, (alone[1] + 1.0) / 2])
    True
    """
    arrays = tuple(np.asarray(s, dtype=float) for s in samples)
    # A split of one query resamples to itself: it is a constant of every resample (scipy
    # refuses a one-observation sample), and with no split of two queries the interval is its value.
    if any(len(a) < 2 for a in arrays):
        return _interval_with_single_query_splits(arrays=arrays, resamples=resamples, confidence=confidence, seed=seed)
    return _scipy_interval(arrays=arrays, resamples=resamples, confidence=confidence, seed=seed)


def _interval_with_single_query_splits(
    *, arrays: tuple[np.ndarray, ...], resamples: int, confidence: float, seed: Sequence[int] | int
) -> tuple[float, float]:
    """:func:`bootstrap_interval` where some splits have one query: those are constants of the mean."""
    varying = tuple(a for a in arrays if len(a) >= 2)
    fixed = sum(float(a.mean()) for a in arrays if len(a) < 2)
    if not varying:
        value = fixed / len(arrays)
        return value, value
    low, high = _scipy_interval(arrays=varying, resamples=resamples, confidence=confidence, seed=seed)
    scale = len(varying) / len(arrays)
    return low * scale + fixed / len(arrays), high * scale + fixed / len(arrays)


def _scipy_interval(
    *, arrays: tuple[np.ndarray, ...], resamples: int, confidence: float, seed: Sequence[int] | int
) -> tuple[float, float]:
    """scipy's BCa interval of the mean of per-split means, the percentile interval where BCa is undefined."""
    from scipy import stats

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
    >>> paired_test(a=[np.array([0.5])], b=[np.array([0.25])], resamples=100, seed=0)
    {'delta': 0.25, 'p': 1.0}
    """
    x, y = _paired_arrays(a=a, b=b)
    w = weights(a)
    delta = float(_weighted_difference(x, y, w=w))
    if len(x) < 2:  # one query: its two relabellings are equally extreme, the exact p is 1 (scipy refuses n=1)
        return {"delta": delta, "p": 1.0}
    return {"delta": delta, "p": _permutation_p(x=x, y=y, w=w, resamples=resamples, seed=seed)}


def _paired_arrays(*, a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Both models' per-query scores, concatenated over splits; a ``ValueError`` unless they pair."""
    x, y = np.concatenate([np.asarray(s, float) for s in a]), np.concatenate([np.asarray(s, float) for s in b])
    if x.shape != y.shape or [len(s) for s in a] != [len(s) for s in b]:
        raise ValueError("paired samples differ in shape")
    return x, y


def _weighted_difference(u: np.ndarray, v: np.ndarray, *, w: np.ndarray, axis: int = -1) -> np.ndarray:
    """The test's statistic: the weighted sum of per-query differences (``w`` from :func:`weights`)."""
    return np.sum((u - v) * w, axis=axis)


def _permutation_p(*, x: np.ndarray, y: np.ndarray, w: np.ndarray, resamples: int, seed: Sequence[int] | int) -> float:
    """Two-sided p of scipy's paired permutation test of :func:`_weighted_difference` (capped at 1)."""
    from scipy import stats

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return _weighted_difference(u, v, w=w, axis=axis)

    result = stats.permutation_test(
        (x, y),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=resamples,
        alternative="two-sided",
        rng=np.random.default_rng(seed),
    )
    return float(min(1.0, result.pvalue))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1`` (i from 1), made
    non-decreasing along that order, and capped at 1; rejecting where the adjusted value is
    at most alpha controls the family-wise error rate at alpha.

    Parameters
    ----------
    pvalues
        The unadjusted p-values of one family of tests, in any order.

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


# --------------------------------------------------------------------------- the summary's statistics
Key = tuple[str, str, str]  # (protocol, model, split)
COLUMNS = ("protocol", "model", "split", "query_id", "ndcg_at_10")


def per_query_frame(results: dict[Key, dict[str, Any]]) -> pd.DataFrame:
    """The tidy per-query table of every result: one row per (protocol, model, split, query).

    Columns: ``protocol``, ``model``, ``split``, ``query_id`` (str), ``ndcg_at_10`` (float64,
    0-1, pytrec_eval's), sorted by the first four; read from each result's ``per_query``.

    Parameters
    ----------
    results
        (protocol, model, split) → evaluation result; each must have ``per_query`` (query id → nDCG@10).

    Examples
    --------
    >>> r = {"per_query": {"q2": 0.5, "q1": 1.0}}
    >>> per_query_frame({("card", "m", "pony"): r}).values.tolist()
    [['card', 'm', 'pony', 'q1', 1.0], ['card', 'm', 'pony', 'q2', 0.5]]
    """
    import pandas as pd

    missing = next(("/".join(key) for key, result in results.items() if not result.get("per_query")), None)
    if missing:
        raise UserError(f"{missing}: the result has no per_query scores (evaluate it again): no interval or test")
    rows = [(*key, str(q), float(v)) for key, result in results.items() for q, v in result["per_query"].items()]
    frame = pd.DataFrame(rows, columns=list(COLUMNS)).astype({"ndcg_at_10": "float64"})
    return frame.sort_values(list(COLUMNS[:4]), ignore_index=True)


def _cells(frame: pd.DataFrame, protocol: str) -> dict[tuple[str, str], pd.Series]:
    """(model, split) -> per-query scores indexed by query id, of one protocol."""
    part = frame[frame["protocol"] == protocol]
    return {
        key: group.set_index("query_id")["ndcg_at_10"] for key, group in part.groupby(["model", "split"], sort=False)
    }


def _paired(
    cells: dict[tuple[str, str], pd.Series], protocol: str, model: str, baseline: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    """The two models' scores on one split, query by query; the same queries or a UserError."""
    a, b = cells[(model, split)], cells[(baseline, split)]
    if set(a.index) != set(b.index):
        raise UserError(
            f"{protocol}/{split}: {model} and {baseline} were scored on different queries "
            f"({len(a)} vs {len(b)}, {len(set(a.index) ^ set(b.index))} differ): no paired test"
        )
    return a.to_numpy(), b.reindex(a.index).to_numpy()


def intervals(
    *,
    frame: pd.DataFrame,
    protocol: str,
    models: list[str],
    splits: list[str],
    resamples: int,
    confidence: float,
    seed: int,
) -> dict[str, dict[str, list[float]]]:
    """Bootstrap interval (x100, 2 decimals) per model and split of one protocol, and of the
    equally weighted mean of its splits (``mean``).

    Parameters
    ----------
    frame
        The per-query table (:func:`per_query_frame`).
    protocol
        The protocol whose rows of ``frame`` are used.
    models, splits
        The models and the protocol's splits; every (model, split) must have rows.
    resamples
        Bootstrap resamples per interval.
    confidence
        Confidence level, e.g. 0.95.
    seed
        The configured seed; each interval's own comes from :func:`seed_for`.

    Returns
    -------
    Model → split (and ``mean``) → [low, high].
    """
    cells = _cells(frame, protocol)
    out: dict[str, dict[str, list[float]]] = {}
    for model in models:
        per_split = {s: cells[(model, s)].to_numpy() for s in splits}
        out[model] = {
            s: _x100(
                bootstrap_interval(
                    samples=[per_split[s]],
                    resamples=resamples,
                    confidence=confidence,
                    seed=seed_for(seed, protocol, model, s),
                )
            )
            for s in splits
        }
        out[model]["mean"] = _x100(
            bootstrap_interval(
                samples=list(per_split.values()),
                resamples=resamples,
                confidence=confidence,
                seed=seed_for(seed, protocol, model, "mean"),
            )
        )
    return out


def _x100(interval: tuple[float, float]) -> list[float]:
    return [round(100 * interval[0], 2), round(100 * interval[1], 2)]


def pair_tests(
    *,
    frame: pd.DataFrame,
    protocol: str,
    pairs: list[tuple[str, str]],
    splits: list[str],
    resamples: int,
    alpha: float,
    seed: int,
) -> list[dict[str, Any]]:
    """Paired randomization tests of each (model, baseline) pair on every split, Holm-adjusted
    across the splits, and on the equally weighted mean of the splits (one test: not adjusted).

    Each row: ``model``, ``baseline``, ``split`` (or ``mean``), ``delta`` (nDCG@10 x 100, model
    minus baseline), ``p``, ``p_holm`` (the mean's: its own p), ``significant`` (``p_holm <= alpha``).

    Parameters
    ----------
    frame
        The per-query table (:func:`per_query_frame`).
    protocol
        The protocol whose rows of ``frame`` are used.
    pairs
        (model, baseline) pairs to test; both must be scored on the same queries of each split.
    splits
        The protocol's splits.
    resamples
        Random relabellings per test (:func:`paired_test`).
    alpha
        Significance level, compared with ``p_holm``.
    seed
        The configured seed; each test's own comes from :func:`seed_for`.
    """
    cells = _cells(frame, protocol)
    rows = []
    for model, baseline in pairs:
        vectors = {s: _paired(cells, protocol, model, baseline, s) for s in splits}
        tests = [
            paired_test(
                a=[vectors[s][0]],
                b=[vectors[s][1]],
                resamples=resamples,
                seed=seed_for(seed, protocol, model, baseline, s),
            )
            for s in splits
        ]
        adjusted = holm([t["p"] for t in tests])
        mean = paired_test(
            a=[v[0] for v in vectors.values()],
            b=[v[1] for v in vectors.values()],
            resamples=resamples,
            seed=seed_for(seed, protocol, model, baseline, "mean"),
        )
        for split, test, p_holm in [*zip(splits, tests, adjusted), ("mean", mean, mean["p"])]:
            rows.append(
                {
                    "model": model,
                    "baseline": baseline,
                    "split": split,
                    "delta": round(100 * test["delta"], 2),
                    "p": test["p"],
                    "p_holm": p_holm,
                    "significant": bool(p_holm <= alpha),
                }
            )
    return rows


def card_check(
    *,
    published: dict[str, float],
    ours: dict[str, float],
    interval: dict[str, list[float]],
    name: str,
    model: str,
    confidence: float,
) -> dict[str, Any]:
    """Does a published row of the model we retrain lie inside our intervals, and does the
    reproduction agree with it?

    It agrees when the published mean lies inside our interval of the mean and no more splits
    fall outside their intervals than chance allows: with ``n`` splits each missing with
    probability ``1 - confidence``, the 95th percentile of Binomial(n, 1 - confidence) (2 of 12 at
    95 %; splits treated as independent).

    Parameters
    ----------
    published
        The published row: nDCG@10 x 100 per split; its splits are the ones checked.
    ours
        Our model's nDCG@10 x 100 per split (at least the published row's splits).
    interval
        Our model's intervals (x100, :func:`intervals`): split → [low, high], and ``mean``.
    name
        The published row's name (``published_row``), as the sentence gives it.
    model
        Our model's name.
    confidence
        The intervals' confidence level, e.g. 0.95: it sets how many splits may fall outside by chance.

    Returns
    -------
    ``inside`` (split → bool), ``mean`` (published, ours, low, high, inside), ``outside``, ``allowed_outside``,
    ``agrees``, the inputs' ``published_row``, ``model`` and ``confidence``, and a ``sentence``
    (:func:`agreement_sentence`).

    Examples
    --------
    >>> check = card_check(published={"a": 10.0, "b": 30.0}, ours={"a": 11.0, "b": 20.0},
    ...                    interval={"a": [8.0, 12.0], "b": [15.0, 25.0], "mean": [13.0, 18.0]},
    ...                    name="card", model="stage2", confidence=0.95)
    >>> check["inside"], check["mean"], check["agrees"]
    ({'a': True, 'b': False}, {'published': 20.0, 'ours': 15.5, 'low': 13.0, 'high': 18.0, 'inside': False}, False)
    """
    from scipy import stats

    splits = list(published)
    mean_published = round(sum(published.values()) / len(splits), 2)
    mean_ours = round(sum(ours[s] for s in splits) / len(splits), 2)
    low, high = interval["mean"]
    inside = {s: bool(interval[s][0] <= published[s] <= interval[s][1]) for s in splits}
    allowed = int(stats.binom.ppf(0.95, len(splits), 1 - confidence))
    outside = sum(not v for v in inside.values())
    mean = {
        "published": mean_published,
        "ours": mean_ours,
        "low": low,
        "high": high,
        "inside": bool(low <= mean_published <= high),
    }
    check = {
        "published_row": name,
        "model": model,
        "confidence": confidence,
        "inside": inside,
        "mean": mean,
        "outside": outside,
        "allowed_outside": allowed,
        "agrees": mean["inside"] and outside <= allowed,
    }
    return check | {"sentence": agreement_sentence(check)}


def agreement_sentence(check: dict[str, Any]) -> str:
    """One sentence, from the numbers of :func:`card_check`, on whether we reproduce the row."""
    m, level = check["mean"], f"{100 * check['confidence']:g} %"
    n = len(check["inside"])
    verdict = "agrees with" if check["agrees"] else "does not agree with"
    where = "inside" if m["inside"] else "outside"
    return (
        f"The reproduction ({check['model']}) {verdict} {check['published_row']}: its mean {m['published']:.2f} "
        f"lies {where} our {level} interval [{m['low']:.2f}, {m['high']:.2f}] (ours {m['ours']:.2f}), and "
        f"{check['outside']} of its {n} per-split numbers lie outside our per-split intervals "
        f"(up to {check['allowed_outside']} would be chance). Query sampling only: corpus, annotation and "
        "training-seed noise are not in these intervals."
    )


def seed_rows(
    *, scores: dict[str, dict[str, float]], groups: list[dict[str, Any]], splits: list[str]
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof 1) across the seeds of each seed group, per split
    and of the mean column.

    Parameters
    ----------
    scores
        Model → split → nDCG@10 x 100 (a protocol's table); every model of ``groups`` must be in it.
    groups
        Seed groups (:meth:`workflow_scripts.lineage.Lineage.seed_groups`): ``experiment``, ``kind``, ``seeds`` and
        ``models`` (one per seed).
    splits
        The table's splits; ``mean`` is each seed's mean over them before the spread is taken.

    Returns
    -------
    Two rows per group, kind ``seed_mean`` then ``seed_std`` (0 for a single model), values rounded to 2 decimals.

    Examples
    --------
    >>> rows = seed_rows(scores={"a": {"x": 10.0}, "b": {"x": 12.0}}, splits=["x"],
    ...                  groups=[{"experiment": "s", "kind": "stage2", "seeds": [1, 2], "models": ["a", "b"]}])
    >>> [(r["model"], r["kind"], r["x"], r["mean"]) for r in rows]
    [('s stage2: mean of seeds 1, 2', 'seed_mean', 11.0, 11.0), ('s stage2: std of seeds 1, 2', 'seed_std', 1.41, 1.41)]
    """
    rows = []
    for group in groups:
        label = f"{group['experiment']} {group['kind']}: {{}} of seeds {', '.join(map(str, group['seeds']))}"
        values = np.array([[scores[m][s] for s in splits] for m in group["models"]])  # (seeds, splits)
        values = np.column_stack([values, values.mean(axis=1)])  # each seed's mean of splits, last
        spread = np.std(values, axis=0, ddof=1 if len(values) > 1 else 0)  # the sample std across seeds
        for kind, reduced in (("seed_mean", values.mean(axis=0)), ("seed_std", spread)):
            cells = [round(float(v), 2) for v in reduced]
            rows.append(
                {"model": label.format(kind.removeprefix("seed_")), "kind": kind, **dict(zip([*splits, "mean"], cells))}
            )
    return rows
