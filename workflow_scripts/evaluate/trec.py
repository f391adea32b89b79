"""TREC files (qrels, runs) read strictly and written, and their metrics with pytrec_eval."""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..files import atomic_file

__all__ = ["MEASURES", "read_qrels", "read_run", "score_run", "score_run_files", "write_run"]

logger = logging.getLogger(__name__)

# mteb key -> (pytrec_eval measure, cutoff applied to the run first or None)
MEASURES = {
    "ndcg_at_1": ("ndcg_cut_1", None),
    "ndcg_at_5": ("ndcg_cut_5", None),
    "ndcg_at_10": ("ndcg_cut_10", None),
    "ndcg_at_100": ("ndcg_cut_100", None),
    "map_at_10": ("map_cut_10", None),
    "map_at_100": ("map_cut_100", None),
    "recall_at_10": ("recall_10", None),
    "recall_at_100": ("recall_100", None),
    "precision_at_10": ("P_10", None),
    "mrr_at_10": ("recip_rank", 10),
    "mrr_at_100": ("recip_rank", 100),
}


def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, Any]:
    """pytrec_eval metrics: mean over the queries pytrec_eval scores, plus per-query values.

    Parameters
    ----------
    qrels
        qid → {docid: relevance}; a query with no judged document is not scored.
    run
        qid → {docid: score}; the ``mrr_at_*`` measures cut it to its top 10 or 100 first.

    Returns
    -------
    ``mean`` (mteb key of :data:`MEASURES` → value), ``per_query`` (qid → the same keys) and ``queries`` (how many
    were scored).

    Examples
    --------
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    >>> run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d1": 2.0, "d3": 1.0}}
    >>> res = score_run(qrels, run)
    >>> round(res["mean"]["ndcg_at_10"], 6), res["per_query"]["q2"]["mrr_at_10"]
    (0.815465, 0.5)
    """
    import pytrec_eval

    _warn_unranked(qrels, run)
    per_query: dict[str, dict[str, float]] = {}
    for cutoff in sorted({c for _, c in MEASURES.values()}, key=lambda c: c or 0):
        names = {m for m, c in MEASURES.values() if c == cutoff}
        cut_run = run if cutoff is None else {q: _top(d, cutoff) for q, d in run.items()}
        evaluator = pytrec_eval.RelevanceEvaluator(qrels, _pytrec_measures(names))
        results = evaluator.evaluate(cut_run)
        for key, (measure, c) in MEASURES.items():
            if c == cutoff:
                for qid, values in results.items():
                    per_query.setdefault(qid, {})[key] = values[measure]
    if not per_query:  # a mean of nothing is not a score
        judged = sum(1 for docs in qrels.values() if docs)
        raise UserError(
            f"nothing to score: none of the {judged} judged qrels queries is in the run ({len(run)} queries)"
        )
    mean = {key: float(np.mean([v[key] for v in per_query.values()])) for key in MEASURES}
    return {"mean": mean, "per_query": per_query, "queries": len(per_query)}


def _warn_unranked(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> None:
    """One warning line when judged queries have no run line: trec_eval (without -c) skips them."""
    judged = [q for q, docs in qrels.items() if docs]
    missing = [q for q in judged if q not in run]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        logger.warning(
            "%d of %d qrels queries have no line in the run and are not scored (as trec_eval without -c): %s",
            len(missing),
            len(judged),
            shown,
        )


def _pytrec_measures(names: set[str]) -> set[str]:
    out = set()
    for name in names:
        base, _, cut = name.rpartition("_")
        out.add(f"{base}.{cut}" if cut.isdigit() else name)
    return out


def _top(docs: dict[str, float], k: int) -> dict[str, float]:
    # trec_eval's order: score descending, then document id descending
    return dict(sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k])


def _read_trec(path: str | Path, layout: str, value: int, cast: type) -> dict[str, dict[str, Any]]:
    """``{qid: {docid: cast(column value)}}`` of a whitespace-separated TREC file, streamed.

    Refuses, as one line naming ``file:line``, what trec_eval would not score: a line with
    another number of columns, bytes that are not UTF-8, a value that is not a finite number,
    a (qid, docid) pair given twice; and a file with no lines at all.
    """
    fields = layout.split()
    out: dict[str, dict[str, Any]] = {}
    first: dict[tuple[str, str], int] = {}  # (qid, docid) -> line it first appeared on
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                parts = raw.decode("utf-8").split()
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:{line_no}: not valid UTF-8") from err
            if not parts:
                continue
            if len(parts) != len(fields):
                raise UserError(f"{path}:{line_no}: expected '{layout}'")
            key = (parts[0], parts[2])
            if key in first:
                raise UserError(f"{path}:{line_no}: repeated ({key[0]}, {key[1]}), first on line {first[key]}")
            first[key] = line_no
            out.setdefault(key[0], {})[key[1]] = _trec_number(f"{path}:{line_no}", fields[value], parts[value], cast)
    if not first:
        raise UserError(f"{path}: empty file (no '{layout}' lines)")
    return out


def _trec_number(where: str, field: str, text: str, cast: type) -> Any:
    """A TREC column as ``cast`` (int or float), refused unless it is a finite number.

    Examples
    --------
    >>> _trec_number("run:1", "score", "1.5", float)
    1.5
    >>> _trec_number("run:1", "score", "nan", float)
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: run:1: score 'nan' is not a finite number
    """
    try:
        number = cast(text)
    except ValueError as err:
        raise UserError(f"{where}: {field} {text!r} is not a number") from err
    if not math.isfinite(number):
        raise UserError(f"{where}: {field} {text!r} is not a finite number")
    return number


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid iter docid rel``.

    Parameters
    ----------
    path
        The qrels file; refused (one line naming ``file:line``) where trec_eval would not score it.

    Returns
    -------
    qid → {docid: relevance}.
    """
    return _read_trec(path, "qid iter docid rel", 3, int)


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """TREC run ``qid Q0 docid rank score tag``.

    Parameters
    ----------
    path
        The run file; refused (one line naming ``file:line``) where trec_eval would not score it.

    Returns
    -------
    qid → {docid: score}; the rank and tag columns are not kept.
    """
    return _read_trec(path, "qid Q0 docid rank score tag", 4, float)


def write_run(path: str | Path, run: dict[str, list[tuple[str, float]]], tag: str) -> None:
    """TREC run file, ranks 1..k in score order.

    Parameters
    ----------
    path
        The file to write (atomically).
    run
        qid → (docid, score) pairs, best first: rank is the position; scores are written with 6 decimals.
    tag
        The last column of every line (the evaluation job writes ``<model>.<protocol>``).
    """
    with atomic_file(path) as handle:
        for qid, docs in run.items():
            for rank, (doc_id, score) in enumerate(docs, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def score_run_files(*, qrels: str, run: str) -> None:
    """Score a TREC run file against TREC qrels; print the metrics as JSON.

    Parameters
    ----------
    qrels, run
        The TREC qrels file and the TREC run file.
    """
    json.dump(score_run(read_qrels(qrels), read_run(run)), sys.stdout, indent=2, sort_keys=True)
    print()
