"""Checks of finished evaluation results before anything reads them: a result is not taken on trust.

A per-split result (``eval/<protocol>/<model>/<split>.json``) states an nDCG@10; the TREC run
file beside it is what was ranked. The summary recomputes each result's nDCG@10 from its run
file and the BRIGHT qrels (pytrec_eval, as the evaluation did: the same numbers to the last
bit) and refuses a disagreement in one line naming both files: a result edited by hand, a run
file from another job, or qrels that changed under the result.

It also gathers what each result flags for its reader (``flags``: a degenerate ranking, a query
set that covers only part of its split, a length capped at the model's limit), so the summary
and the report can show them beside the numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .bright.load import gold_ids, load_bright_examples
from .errors import UserError
from .files import read_json
from .sources.manifest import source_root

__all__ = ["check_results_against_runs", "recorded_ndcg", "result_flags_by_cell"]

# Both numbers come from the same pytrec_eval call on the same run: any difference is an edit.
TOLERANCE = 1e-9


def recorded_ndcg(result: dict[str, Any], path: str | Path) -> float:
    """The nDCG@10 a result states (``ndcg_at_10`` and ``main_score`` of its one score entry, equal).

    Parameters
    ----------
    result
        A per-split evaluation result (mteb ``TaskResult`` layout), as read.
    path
        Its file, named in the error when the numbers are missing, not finite or differ.

    Examples
    --------
    >>> recorded_ndcg({"scores": {"standard": [{"ndcg_at_10": 0.5, "main_score": 0.5}]}}, "r.json")
    0.5
    >>> recorded_ndcg({"scores": {"standard": [{"ndcg_at_10": 0.5, "main_score": 0.7}]}}, "r.json")
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: r.json: main_score 0.7 differs from ndcg_at_10 0.5 (edited by hand?)
    """
    try:
        entry = next(iter(result["scores"].values()))[0]
        ndcg, main = entry["ndcg_at_10"], entry.get("main_score", entry["ndcg_at_10"])
    except (KeyError, IndexError, TypeError, StopIteration, AttributeError) as err:
        raise UserError(f"{path}: not an evaluation result (no scores.<split>[0].ndcg_at_10)") from err
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (ndcg, main)):
        raise UserError(f"{path}: ndcg_at_10 {ndcg!r} / main_score {main!r} is not a finite number")
    if abs(ndcg - main) > TOLERANCE:
        raise UserError(f"{path}: main_score {main} differs from ndcg_at_10 {ndcg} (edited by hand?)")
    return float(ndcg)


def check_results_against_runs(*, results: list[str], run_files: list[str], bright_manifest: str | Path) -> None:
    """Recompute each result's nDCG@10 from its run file and the BRIGHT qrels; refuse a disagreement.

    ``run_files[i]`` is the run beside ``results[i]``. The qrels are read from the mirror the
    BRIGHT manifest pins (the query set and qrels column each result names), once per split.

    Parameters
    ----------
    results, run_files
        The per-split result files and their TREC run files, pairwise in the same order.
    bright_manifest
        The BRIGHT download manifest; its mirror gives the qrels.
    """
    from .evaluate.trec import read_run, score_run  # here: only a summary reads run files back

    if len(results) != len(run_files):
        raise UserError(f"{len(results)} results but {len(run_files)} run files: each result needs the run beside it")
    root = source_root(bright_manifest)
    qrels_of: dict[tuple[str, str, str], dict[str, dict[str, int]]] = {}
    for json_path, run_path in zip(results, run_files):
        result = read_json(json_path)
        try:
            p = result["protocol"]
            key = (p["split"], p["query_source"], p["qrels"])
        except (KeyError, TypeError) as err:
            raise UserError(f"{json_path}: not an evaluation result (no protocol.split/query_source/qrels)") from err
        if key not in qrels_of:
            examples = load_bright_examples(root, key[0], key[1], key[2])
            qrels_of[key] = {e["id"]: dict.fromkeys(gold_ids(e, key[2]), 1) for e in examples}
        recorded = recorded_ndcg(result, json_path)
        recomputed = score_run(qrels_of[key], read_run(run_path))["mean"]["ndcg_at_10"]
        if abs(recorded - recomputed) > TOLERANCE:
            raise UserError(
                f"{json_path}: nDCG@10 {recorded:.6f} disagrees with {run_path} scored against the BRIGHT qrels "
                f"({recomputed:.6f}); delete both and rerun to re-evaluate"
            )


def result_flags_by_cell(
    found: dict[tuple[str, str, str], dict[str, Any]], protocol: str, models: list[str], splits: list[str]
) -> dict[str, dict[str, list[str]]]:
    """``{model: {split: flags}}`` of one protocol's table, only the cells that have flags.

    Parameters
    ----------
    found
        (protocol, model, split) → evaluation result; every cell of the table must be there.
    protocol
        The table's protocol name.
    models, splits
        The table's models and splits.

    Examples
    --------
    >>> found = {("card", "m", "pony"): {"flags": ["degenerate: ..."]}, ("card", "m", "aops"): {}}
    >>> result_flags_by_cell(found, "card", ["m"], ["pony", "aops"])
    {'m': {'pony': ['degenerate: ...']}}
    """
    out: dict[str, dict[str, list[str]]] = {}
    for model in models:
        for split in splits:
            flags = found[(protocol, model, split)].get("flags") or []
            if flags:
                out.setdefault(model, {})[split] = list(flags)
    return out
