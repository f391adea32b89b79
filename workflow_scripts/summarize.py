"""Summary stage: per-split nDCG@10 (x100) of every evaluated model beside the card's numbers.

Writes ``summary.csv`` (one row per model, 12 splits + mean), ``summary.md`` (the same table
plus a delta row against the card and the protocol) and ``summary.json`` (all of it, for the
report).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

from .cli import run_commands
from .common import UserError, atomic_file, read_json, write_json

__all__ = ["PUBLISHED", "summarize", "summary_rows"]

logger = logging.getLogger(__name__)

# BRIGHT nDCG@10 x 100 as published (see README "Published numbers").
PUBLISHED: dict[str, dict[str, float]] = {
    "card: Reason-mxbai-colbert-v0-32m": {
        "biology": 32.71, "earth_science": 43.88, "economics": 18.70, "psychology": 22.62,
        "robotics": 18.43, "stackoverflow": 16.78, "sustainable_living": 20.77, "leetcode": 17.67,
        "pony": 20.73, "aops": 5.05, "theoremqa_questions": 8.38, "theoremqa_theorems": 2.25,
    },
    "published: Reason-mxbai-colbert-v0.1-32m": {
        "biology": 33.16, "earth_science": 44.28, "economics": 20.25, "psychology": 24.91,
        "robotics": 18.65, "stackoverflow": 16.66, "sustainable_living": 20.11, "leetcode": 17.40,
        "pony": 22.77, "aops": 4.89, "theoremqa_questions": 9.04, "theoremqa_theorems": 3.19,
    },
    "published: Reason-ModernColBERT (150M)": {
        "biology": 33.25, "earth_science": 41.02, "economics": 24.93, "psychology": 30.73,
        "robotics": 21.12, "stackoverflow": 20.62, "sustainable_living": 20.31, "leetcode": 31.07,
        "pony": 8.51, "aops": 9.17, "theoremqa_questions": 19.51, "theoremqa_theorems": 11.24,
    },
}  # fmt: skip
CARD = "card: Reason-mxbai-colbert-v0-32m"


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2)


def summary_rows(
    scores: dict[str, dict[str, float]], splits: list[str], reference: str | None = None
) -> list[dict[str, Any]]:
    """Table rows: our models, then the published ones, then ``delta`` (reference - card).

    ``reference`` is the model compared with the card (default: the last trained one).

    Examples
    --------
    >>> rows = summary_rows({"stage2": {"pony": 21.0}, "base": {"pony": 9.0}}, ["pony"])
    >>> [(r["model"], r["pony"], r["mean"]) for r in rows][-1]
    ('delta: stage2 - card', 0.27, 0.27)
    """
    rows = []
    for model, per_split in scores.items():
        rows.append({"model": model, "kind": "ours", **per_split, "mean": _mean([per_split[s] for s in splits])})
    for model, per_split in PUBLISHED.items():
        values = {s: per_split[s] for s in splits}
        rows.append({"model": model, "kind": "published", **values, "mean": _mean(list(values.values()))})
    trained = [m for m in ("stage2", "stage1", "widened") if m in scores]
    last = reference or (trained[0] if trained else next(iter(scores), None))
    if last is not None:
        delta = {s: round(scores[last][s] - PUBLISHED[CARD][s], 2) for s in splits}
        rows.append({"model": f"delta: {last} - card", "kind": "delta", **delta,
                     "mean": round(_mean([scores[last][s] for s in splits]) - _mean([PUBLISHED[CARD][s] for s in splits]), 2)})  # fmt: skip
    return rows


def read_results(results: list[str], models: list[str], splits: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The mteb-format result of every (model, split), keyed by what each file says it holds.

    Each file names its model (``protocol.model``) and split (``scores.standard[].hf_subset``),
    so a file is never attributed by where it lies; every pair must be there exactly once.
    """
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in results:
        result = read_json(path)
        try:
            key = (result["protocol"]["model"], result["scores"]["standard"][0]["hf_subset"])
        except (KeyError, IndexError, TypeError) as err:
            raise UserError(f"{path}: not an evaluation result (no protocol.model / scores.standard)") from err
        if key in found:
            raise UserError(f"{path}: a second result for model {key[0]!r}, split {key[1]!r}")
        found[key] = result
    missing = [f"{m}/{s}" for m in models for s in splits if (m, s) not in found]
    if missing:
        raise UserError(f"no evaluation result for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return found


def write_mteb_results(results: dict[tuple[str, str], dict[str, Any]], models: list[str], splits: list[str],
                       paths: list[str]) -> None:  # fmt: skip
    """One mteb ``BrightRetrieval.json`` per model with all its splits (``paths[i]`` for
    ``models[i]``), loadable by ``mteb.results.TaskResult.from_disk``."""
    for model, path in zip(models, paths, strict=True):
        per_split = [results[(model, split)] for split in splits]
        combined = {k: per_split[0][k] for k in ("dataset_revision", "task_name", "mteb_version", "kg_co2_emissions")}
        combined["evaluation_time"] = sum(r["evaluation_time"] for r in per_split)
        combined["scores"] = {"standard": [e for r in per_split for e in r["scores"]["standard"]]}
        write_json(path, combined)


def ndcg_table(
    results: dict[tuple[str, str], dict[str, Any]], models: list[str], splits: list[str]
) -> dict[str, dict[str, float]]:
    """nDCG@10 x 100 per model and split."""
    return {m: {s: round(100 * results[(m, s)]["scores"]["standard"][0]["ndcg_at_10"], 2) for s in splits}
            for m in models}  # fmt: skip


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "|".join("---" if c == "model" else "---:" for c in columns) + "|\n"
    return head + "".join(
        "| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + " |\n"
        for r in rows
    )


def summarize(
    *, results: list[str], models: list[str], splits: list[str], protocol: dict[str, Any], csv_path: str,
    md_path: str, json_path: str, mteb_paths: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    """Write the summary table (csv, md, json) and mteb's per-model result files."""
    found = read_results(results, models, splits)
    scores = ndcg_table(found, models, splits)
    write_mteb_results(found, models, splits, mteb_paths)
    rows = summary_rows(scores, splits)
    columns = ["model", *splits, "mean"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["model", "kind", *splits, "mean"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_file(csv_path) as handle:
        handle.write(buffer.getvalue())
    excluded = "removed (BRIGHT protocol)" if protocol["excluded_ids_removed"] else "kept (mteb BrightRetrieval)"
    notes = (
        f"\nBRIGHT nDCG@10 x 100, exact MaxSim. excluded_ids: {excluded}. "
        f"query_length {protocol['query_length']} (overrides: {json.dumps(protocol['overrides'])}), "
        f"document_length {protocol['document_length']}. BRIGHT revision "
        f"{protocol['bright_revision']}, base model revision {protocol['base_model_revision']}.\n"
    )
    with atomic_file(md_path) as handle:
        handle.write(to_markdown(rows, columns) + notes)
    write_json(json_path, {"rows": rows, "splits": splits, "models": models, "protocol": protocol})
    return rows


def main(argv: list[str] | None = None) -> None:
    run_commands({"table": summarize}, argv)


if __name__ == "__main__":
    main()
