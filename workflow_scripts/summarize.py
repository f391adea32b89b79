"""Summary stage: nDCG@10 (x100) of every evaluated model, one table per protocol, beside the
published numbers measured under that protocol.

A BRIGHT number means little without its protocol (:mod:`workflow_scripts.bright.protocols`): the
card's 19.00 was measured with mteb's legacy task, which scores the excluded ids. So every
published row carries the protocol it was measured under, sits in that protocol's table (a
configured protocol whose definition equals the preset), and deltas are taken only there,
against the published row of the model this workflow retrains. Published rows whose protocol
is not run (or not stated) are listed apart, never compared.

Writes ``summary.csv`` (``protocol, model, kind, <12 splits>, mean``; a protocol's splits only,
others empty), ``summary.md`` (a table per protocol with its definition), ``summary.json`` (all
of it, plus each protocol's effect per split on the reference model, for the report), and the
mteb-format result files of every protocol and model.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from typing import Any

from .bright.protocols import mteb_files
from .cli import run_commands
from .errors import UserError
from .files import atomic_file, read_json, write_json
from .result_checks import check_results_against_runs, result_flags_by_cell
from .stats import card_check, intervals, pair_tests, per_query_frame, seed_rows

__all__ = ["PUBLISHED", "Published", "protocol_effects", "summarize", "summary_rows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """A published BRIGHT result: nDCG@10 x 100 per split, and what it was measured under.

    ``protocol`` is a preset name of :data:`workflow_scripts.bright.protocols.PRESETS` (None: the
    source does not say); ``reproduced`` marks the model this workflow retrains (the deltas).
    """

    model: str
    protocol: str | None
    source: str
    scores: dict[str, float]
    reproduced: bool = False


# BRIGHT nDCG@10 x 100 as published (see README "Published numbers").
PUBLISHED = (
    Published(
        model="card: Reason-mxbai-colbert-v0-32m",
        protocol="card",
        reproduced=True,
        source="its model card: mteb BrightRetrieval via evaluation/evaluate_bright.py",
        scores={
            "biology": 32.71,
            "earth_science": 43.88,
            "economics": 18.70,
            "psychology": 22.62,
            "robotics": 18.43,
            "stackoverflow": 16.78,
            "sustainable_living": 20.77,
            "leetcode": 17.67,
            "pony": 20.73,
            "aops": 5.05,
            "theoremqa_questions": 8.38,
            "theoremqa_theorems": 2.25,
        },
    ),
    Published(
        model="published: Reason-mxbai-colbert-v0.1-32m",
        protocol="card",
        source="the authors' v0.1 card (mean 19.61), assumed measured as the v0 card",
        scores={
            "biology": 33.16,
            "earth_science": 44.28,
            "economics": 20.25,
            "psychology": 24.91,
            "robotics": 18.65,
            "stackoverflow": 16.66,
            "sustainable_living": 20.11,
            "leetcode": 17.40,
            "pony": 22.77,
            "aops": 4.89,
            "theoremqa_questions": 9.04,
            "theoremqa_theorems": 3.19,
        },
    ),
    Published(
        model="published: Reason-ModernColBERT (150M)",
        protocol=None,
        source="its model card, as the card cites it (mean 22.62); protocol not stated",
        scores={
            "biology": 33.25,
            "earth_science": 41.02,
            "economics": 24.93,
            "psychology": 30.73,
            "robotics": 21.12,
            "stackoverflow": 20.62,
            "sustainable_living": 20.31,
            "leetcode": 31.07,
            "pony": 8.51,
            "aops": 9.17,
            "theoremqa_questions": 19.51,
            "theoremqa_theorems": 11.24,
        },
    ),
    Published(
        model="mteb: Reason-ModernColBERT (150M)",
        protocol="mteb-v1.1",
        source="the official MTEB run (embeddings-benchmark/results, mteb 2.10.3, Bright*Retrieval main_score; mean 22.74)",
        scores={
            "biology": 33.87,
            "earth_science": 41.71,
            "economics": 24.55,
            "psychology": 31.04,
            "robotics": 21.81,
            "stackoverflow": 24.26,
            "sustainable_living": 20.22,
            "leetcode": 30.86,
            "pony": 8.74,
            "aops": 8.25,
            "theoremqa_questions": 18.33,
            "theoremqa_theorems": 9.29,
        },
    ),
)
REFERENCE_ORDER = ("stage2", "stage1", "widened")  # the model compared with the card: the last trained


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2)


def reference_model(models: list[str]) -> str:
    """The model whose deltas and protocol effects are shown: the last trained one, else the first.

    Examples
    --------
    >>> reference_model(["widened", "stage1", "base"]), reference_model(["base"])
    ('stage1', 'base')
    """
    return next((m for m in REFERENCE_ORDER if m in models), models[0])


def summary_rows(
    scores: dict[str, dict[str, float]], splits: list[str], published: list[Published], reference: str
) -> list[dict[str, Any]]:
    """One protocol's table: our models, the published rows measured under it, then a delta row
    (``reference`` - published) for each published row of the model we retrain.

    Parameters
    ----------
    scores
        Our models' nDCG@10 x 100, model → split → value, in row order.
    splits
        The protocol's splits: the value columns (``mean`` is over them).
    published
        The published rows measured under this protocol, in row order.
    reference
        The model the delta rows take (:func:`reference_model`); it must be in ``scores``.

    Returns
    -------
    Rows of ``model``, ``kind`` (``ours``, ``published``, ``delta``), one value per split and ``mean`` (2 decimals).

    Examples
    --------
    >>> card = [p for p in PUBLISHED if p.protocol == "card"]
    >>> rows = summary_rows({"stage2": {"pony": 21.0}, "base": {"pony": 9.0}}, ["pony"], card, "stage2")
    >>> [(r["model"], r["kind"], r["pony"], r["mean"]) for r in rows]  # doctest: +NORMALIZE_WHITESPACE
    [('stage2', 'ours', 21.0, 21.0), ('base', 'ours', 9.0, 9.0),
     ('card: Reason-mxbai-colbert-v0-32m', 'published', 20.73, 20.73),
     ('published: Reason-mxbai-colbert-v0.1-32m', 'published', 22.77, 22.77),
     ('delta: stage2 - card: Reason-mxbai-colbert-v0-32m', 'delta', 0.27, 0.27)]
    """
    rows = [{"model": m, "kind": "ours", **v, "mean": _mean([v[s] for s in splits])} for m, v in scores.items()]
    for row in published:
        values = {s: row.scores[s] for s in splits}
        rows.append({"model": row.model, "kind": "published", **values, "mean": _mean(list(values.values()))})
    for row in (p for p in published if p.reproduced):
        delta = {s: round(scores[reference][s] - row.scores[s], 2) for s in splits}
        mean = round(_mean([scores[reference][s] for s in splits]) - _mean([row.scores[s] for s in splits]), 2)
        rows.append({"model": f"delta: {reference} - {row.model}", "kind": "delta", **delta, "mean": mean})
    return rows


def protocol_effects(tables: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """How much each protocol moves each split for ``reference``: its nDCG@10 x 100 minus the
    baseline protocol's (the one equal to the ``card`` preset, else the first).

    Parameters
    ----------
    tables
        The per-protocol tables (:func:`build_tables`); their ``protocol``, ``splits`` and ``scores`` are read.
    reference
        The model compared (:func:`reference_model`); every table must score it.

    Returns
    -------
    ``baseline`` (its protocol name), ``model`` and ``delta``: protocol → split → difference (x100, 2 decimals);
    a split the baseline does not score is left out.

    Examples
    --------
    >>> tables = [{"protocol": {"name": "card", "preset": "card"}, "splits": ["pony"], "scores": {"m": {"pony": 20.0}}},
    ...           {"protocol": {"name": "bright", "preset": "bright"}, "splits": ["pony"], "scores": {"m": {"pony": 21.5}}}]
    >>> protocol_effects(tables, "m")
    {'baseline': 'card', 'model': 'm', 'delta': {'card': {'pony': 0.0}, 'bright': {'pony': 1.5}}}
    """
    base = next((t for t in tables if t["protocol"]["preset"] == "card"), tables[0])
    ref = base["scores"][reference]
    delta = {
        t["protocol"]["name"]: {s: round(t["scores"][reference][s] - ref[s], 2) for s in t["splits"] if s in ref}
        for t in tables
    }
    return {"baseline": base["protocol"]["name"], "model": reference, "delta": delta}


Key = tuple[str, str, str]  # (protocol, model, split)


def read_results(results: list[str], protocols: list[dict[str, Any]], models: list[str]) -> dict[Key, dict[str, Any]]:
    """The result of every (protocol, model, split), keyed by what each file says it holds.

    Each file names its protocol, model and split (``protocol.name``, ``.model``, ``.split``),
    so a file is never attributed by where it lies; every triple must be there exactly once.
    """
    found: dict[Key, dict[str, Any]] = {}
    for path in results:
        result = read_json(path)
        try:
            p = result["protocol"]
            key = (p["name"], p["model"], p["split"])
            _entry(result)
        except (KeyError, IndexError, TypeError, StopIteration) as err:
            raise UserError(f"{path}: not an evaluation result (no protocol.name/model/split or scores)") from err
        if key in found:
            raise UserError(f"{path}: a second result for protocol {key[0]!r}, model {key[1]!r}, split {key[2]!r}")
        found[key] = result
    missing = [
        f"{p['name']}/{m}/{s}" for p in protocols for m in models for s in p["splits"] if (p["name"], m, s) not in found
    ]
    if missing:
        raise UserError(f"no evaluation result for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return found


def _entry(result: dict[str, Any]) -> dict[str, Any]:
    """The one score entry of a per-split result (under its mteb evaluation split)."""
    return next(iter(result["scores"].values()))[0]


def write_mteb_results(
    results: dict[Key, dict[str, Any]], protocols: list[dict[str, Any]], models: list[str], paths: list[str]
) -> None:
    """mteb-format result files, one per (protocol, model, task) of
    :func:`workflow_scripts.bright.protocols.mteb_files` (``paths`` in that order): ``BrightRetrieval``
    with every split as a subset, or one file per per-domain task (mteb-v1.1); loadable by
    ``mteb.results.TaskResult.from_disk``."""
    files = mteb_files(protocols, models)
    if len(files) != len(paths):
        raise UserError(f"{len(files)} mteb result files to write, {len(paths)} --mteb-paths given")
    for (protocol, model, _, splits), path in zip(files, paths):
        per_split = [results[(protocol, model, split)] for split in splits]
        combined = {k: per_split[0][k] for k in ("dataset_revision", "task_name", "mteb_version", "kg_co2_emissions")}
        combined["evaluation_time"] = sum(r["evaluation_time"] for r in per_split)
        eval_split = next(iter(per_split[0]["scores"]))
        combined["scores"] = {eval_split: [_entry(r) for r in per_split]}
        write_json(path, combined)


def ndcg_table(
    results: dict[Key, dict[str, Any]], protocol: str, models: list[str], splits: list[str]
) -> dict[str, dict[str, float]]:
    """nDCG@10 x 100 per model and split under one protocol."""
    return {m: {s: round(100 * _entry(results[(protocol, m, s)])["ndcg_at_10"], 2) for s in splits} for m in models}


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "|".join("---" if c == "model" else "---:" for c in columns) + "|\n"
    return head + "".join(
        "| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r.get(c, "")) for c in columns) + " |\n"
        for r in rows
    )


def describe(protocol: dict[str, Any]) -> str:
    """One line: what a protocol scores (queries, format, excluded ids, corpus + qrels).

    Examples
    --------
    >>> describe({"queries": "examples", "templates": ["{query}"], "exclude_ids": True, "corpus": "documents",
    ...           "qrels": "gold_ids", "preset": "mteb-v1.1"})
    "queries: examples as '{query}'; excluded ids removed; documents judged by gold_ids; = preset mteb-v1.1"
    """
    formats = protocol["templates"]
    written = repr(formats[0]) if len(formats) == 1 else f"per-split instructions ({len(formats)} distinct)"
    return (
        f"queries: {protocol['queries']} as {written}; excluded ids {'removed' if protocol['exclude_ids'] else 'scored (kept)'}; "
        f"{protocol['corpus']} judged by {protocol['qrels']}; "
        + (f"= preset {protocol['preset']}" if protocol["preset"] else "a custom protocol (no published row compares)")
    )


def build_tables(
    found: dict[Key, dict[str, Any]], protocols: list[dict[str, Any]], models: list[str]
) -> list[dict[str, Any]]:
    """One table per protocol: ours, the published rows measured under it, deltas."""
    reference = reference_model(models)
    tables = []
    for protocol in protocols:
        splits = protocol["splits"]
        scores = ndcg_table(found, protocol["name"], models, splits)
        published = [p for p in PUBLISHED if p.protocol is not None and p.protocol == protocol["preset"]]
        rows = summary_rows(scores, splits, published, reference)
        tables.append(
            {
                "protocol": protocol,
                "splits": splits,
                "scores": scores,
                "rows": rows,
                "flags": result_flags_by_cell(found, protocol["name"], models, splits),
            }
        )
    return tables


def published_elsewhere(protocols: list[dict[str, Any]], splits: list[str]) -> list[dict[str, Any]]:
    """Published rows under a protocol that no table here has (or none stated): shown, never compared."""
    here = {p["preset"] for p in protocols}
    return [
        {
            "model": p.model,
            "kind": "published",
            "protocol": p.protocol or "not stated",
            "source": p.source,
            **{s: p.scores[s] for s in splits},
            "mean": _mean([p.scores[s] for s in splits]),
        }
        for p in PUBLISHED
        if p.protocol is None or p.protocol not in here
    ]


def summarize(
    *,
    results: list[str],
    models: list[str],
    splits: list[str],
    protocols: list[dict[str, Any]],
    settings: dict[str, Any],
    csv_path: str,
    md_path: str,
    json_path: str,
    mteb_paths: list[str],
    run_files: list[str] | None = None,
    bright_manifest: str | None = None,
    statistics: dict[str, Any] | None = None,
    pairs: list[list[str]] | None = None,
    seed_groups: list[dict[str, Any]] | None = None,
    per_query_path: str | None = None,
    intervals_path: str | None = None,
    tests_path: str | None = None,
) -> dict[str, Any]:
    """Write the summary (csv, md, json: a table per protocol) and the mteb-format result files.

    ``protocols`` are :meth:`workflow_scripts.bright.protocols.Protocol.summary` dicts; ``settings``
    the evaluation settings the notes state (lengths, overrides, revisions). Each result is
    first re-scored from its run file (``run_files``, same order) against the BRIGHT qrels of
    ``bright_manifest``; a disagreement is refused, naming both files (the workflow's rule always
    passes both; without them, as in unit tests of the tables, nothing is re-scored). ``statistics``
    (``confidence``, ``resamples``, ``alpha``, ``seed``), the ``[model, baseline]`` ``pairs`` and the
    ``seed_groups`` (:meth:`workflow_scripts.lineage.Lineage.seed_groups`) give each table its
    intervals, paired tests and seed rows (:func:`add_statistics`), also written as
    ``per_query_path`` (parquet), ``intervals_path`` and ``tests_path`` (csv); the rule passes
    them all, a unit test of the tables may pass none (no statistics then).

    Longer than ~50 lines because its keyword signature is the stage's CLI; the body calls short helpers.

    Parameters
    ----------
    results
        The per-split result files, one per (protocol, model, split) covered; each file says which it holds.
    models
        The evaluated models, in row order.
    splits
        The evaluated splits: the csv's value columns and those of the published rows shown apart.
    protocols
        :meth:`workflow_scripts.bright.protocols.Protocol.summary` dicts, one table each, in order.
    settings
        What the notes state: ``query_length``, ``overrides``, ``document_length``, ``bright_revision``,
        ``base_model_revision``.
    csv_path, md_path, json_path
        The summary files to write.
    mteb_paths
        The mteb-format result files, in :func:`workflow_scripts.bright.protocols.mteb_files` order.
    run_files, bright_manifest
        The run file beside each result (same order) and the BRIGHT manifest of the qrels; both or neither
        (None: nothing re-scored).
    statistics
        ``confidence``, ``resamples``, ``alpha`` and ``seed``; None: no intervals, tests or seed rows.
    pairs
        ``[model, baseline]`` pairs to test; None: none.
    seed_groups
        :meth:`workflow_scripts.lineage.Lineage.seed_groups`; None: no seed rows.
    per_query_path, intervals_path, tests_path
        The per-query parquet and the intervals and tests csv files; required with ``statistics``.

    Returns
    -------
    The summary written to ``json_path``.
    """
    _check_against_runs(results=results, run_files=run_files, bright_manifest=bright_manifest)
    found = read_results(results, protocols, models)
    write_mteb_results(found, protocols, models, mteb_paths)
    tables = build_tables(found, protocols, models)
    if statistics is not None:
        add_statistics(
            tables=tables,
            found=found,
            statistics=statistics,
            pairs=pairs or [],
            seed_groups=seed_groups or [],
            per_query_path=per_query_path,
        )
        _write_statistics_csv(intervals_path, tests_path, tables)
    return _write_summary(
        tables=tables,
        protocols=protocols,
        models=models,
        splits=splits,
        settings=settings,
        statistics=statistics,
        seed_groups=seed_groups or [],
        paths={"csv": csv_path, "md": md_path, "json": json_path},
    )


def _check_against_runs(*, results: list[str], run_files: list[str] | None, bright_manifest: str | None) -> None:
    """Re-score each result from its run file where both are given; one without the other is refused."""
    if (run_files is None) != (bright_manifest is None):
        raise UserError("summarize: --run-files and --bright-manifest go together (each result is re-scored)")
    if run_files is not None and bright_manifest is not None:
        check_results_against_runs(results=results, run_files=run_files, bright_manifest=bright_manifest)


def _write_summary(
    *,
    tables: list[dict[str, Any]],
    protocols: list[dict[str, Any]],
    models: list[str],
    splits: list[str],
    settings: dict[str, Any],
    statistics: dict[str, Any] | None,
    seed_groups: list[dict[str, Any]],
    paths: dict[str, str],
) -> dict[str, Any]:
    """Write the tables as ``paths["csv"]`` and ``paths["md"]``, and the summary as ``paths["json"]``; return it."""
    elsewhere = published_elsewhere(protocols, splits)
    _write_csv(paths["csv"], tables, elsewhere, splits)
    with atomic_file(paths["md"]) as handle:
        handle.write(_markdown(tables, elsewhere, splits, settings))
    summary = {
        "splits": splits,
        "models": models,
        "reference": reference_model(models),
        "settings": settings,
        "statistics": statistics,
        "seed_groups": seed_groups,
        "tables": [{k: v for k, v in t.items() if k != "scores"} for t in tables],
        "published_elsewhere": elsewhere,
        "effects": protocol_effects(tables, reference_model(models)),
    }
    write_json(paths["json"], summary)
    return summary


def _write_csv(path: str, tables: list[dict[str, Any]], elsewhere: list[dict[str, Any]], splits: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["protocol", "model", "kind", *splits, "mean"], lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for table in tables:
        writer.writerows({"protocol": table["protocol"]["name"], **row} for row in table["rows"])
    writer.writerows(elsewhere)
    with atomic_file(path) as handle:
        handle.write(buffer.getvalue())


def _markdown(
    tables: list[dict[str, Any]], elsewhere: list[dict[str, Any]], splits: list[str], settings: dict[str, Any]
) -> str:
    out = [
        f"BRIGHT nDCG@10 x 100, exact MaxSim; query_length {settings['query_length']} (overrides: "
        f"{settings['overrides']}), document_length {settings['document_length']}; BRIGHT revision "
        f"{settings['bright_revision']}, base model revision {settings['base_model_revision']}. Deltas only "
        "within a table: published rows sit with the protocol they were measured under.\n"
    ]
    for table in tables:
        p = table["protocol"]
        out.append(f"\n## {p['name']}\n\n{p['description']}. {describe(p)}.\n\n")
        out.append(to_markdown(table["rows"], ["model", *table["splits"], "mean"]))
        out.append(_statistics_markdown(table))
        out.append(_notes_markdown(p.get("notes") or [], table.get("flags") or {}))
    if elsewhere:
        out.append("\n## Published under protocols not run here\n\nShown for context; no delta is taken.\n\n")
        out.append(to_markdown(elsewhere, ["model", "protocol", *splits, "mean"]))
    return "".join(out)


def _notes_markdown(notes: list[str], flags: dict[str, dict[str, list[str]]]) -> str:
    """The protocol's notes and every flagged cell of its table (``flags``: model -> split -> lines).

    Examples
    --------
    >>> print(_notes_markdown(["Scored exactly"], {"base": {"pony": ["degenerate: all tied"]}}), end="")
    <BLANKLINE>
    Note: Scored exactly.
    <BLANKLINE>
    **Flagged results** (read before comparing):
    <BLANKLINE>
    - base / pony: degenerate: all tied
    """
    out = "".join(f"\nNote: {note}.\n" for note in notes)
    lines = [
        f"- {model} / {split}: {flag}\n" for model, cells in flags.items() for split, fl in cells.items() for flag in fl
    ]
    if lines:
        out += "\n**Flagged results** (read before comparing):\n\n" + "".join(lines)
    return out


def add_statistics(
    *,
    tables: list[dict[str, Any]],
    found: dict[Key, dict[str, Any]],
    statistics: dict[str, Any],
    pairs: list[list[str]],
    seed_groups: list[dict[str, Any]],
    per_query_path: str,
) -> None:
    """Write the per-query parquet and give each table its ``intervals``, paired ``tests``, seed
    rows (after ours) and, where a published row is of the model we retrain, its ``card_checks``."""
    frame = per_query_frame(found)
    with atomic_file(per_query_path, "wb") as handle:
        frame.to_parquet(handle, index=False)
    resampling = {k: statistics[k] for k in ("resamples", "seed")}
    for table in tables:
        name, splits, scores = table["protocol"]["name"], table["splits"], table["scores"]
        unknown = sorted({m for pair in pairs for m in pair} - set(scores))
        if unknown:
            raise UserError(f"statistics.pairs: {', '.join(unknown)} not among the evaluated models {list(scores)}")
        table["statistics"] = statistics
        table["intervals"] = intervals(
            frame=frame,
            protocol=name,
            models=list(scores),
            splits=splits,
            confidence=statistics["confidence"],
            **resampling,
        )
        table["tests"] = pair_tests(
            frame=frame,
            protocol=name,
            pairs=[tuple(p) for p in pairs],
            splits=splits,
            alpha=statistics["alpha"],
            **resampling,
        )
        ours = [r for r in table["rows"] if r["kind"] == "ours"]
        table["rows"] = ours + seed_rows(scores=scores, groups=seed_groups, splits=splits) + table["rows"][len(ours) :]
        reference = reference_model(list(scores))
        table["card_checks"] = [
            card_check(
                published={s: p.scores[s] for s in splits},
                ours=scores[reference],
                interval=table["intervals"][reference],
                name=p.model,
                model=reference,
                confidence=statistics["confidence"],
            )
            for p in PUBLISHED
            if p.reproduced and p.protocol == table["protocol"]["preset"]
        ]


def _write_statistics_csv(intervals_path: str, tests_path: str, tables: list[dict[str, Any]]) -> None:
    """``intervals_path``: protocol, model, split (or mean), ndcg_at_10, low, high (x100);
    ``tests_path``: protocol, model, baseline, split, delta, p, p_holm, significant."""
    rows = [
        {
            "protocol": t["protocol"]["name"],
            "model": m,
            "split": s,
            "low": lo,
            "high": hi,
            "ndcg_at_10": next(r for r in t["rows"] if r["model"] == m and r["kind"] == "ours")[s],
        }
        for t in tables
        for m, cells in t["intervals"].items()
        for s, (lo, hi) in cells.items()
    ]
    tests = [{"protocol": t["protocol"]["name"], **row} for t in tables for row in t["tests"]]
    columns = {
        intervals_path: (rows, ["protocol", "model", "split", "ndcg_at_10", "low", "high"]),
        tests_path: (tests, ["protocol", "model", "baseline", "split", "delta", "p", "p_holm", "significant"]),
    }
    for path, (records, names) in columns.items():
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        with atomic_file(path) as handle:
            handle.write(buffer.getvalue())


def _statistics_markdown(table: dict[str, Any]) -> str:
    """A table's intervals, paired tests and published-row checks, as markdown (none without statistics)."""
    if "intervals" not in table:
        return ""
    stats, splits = table["statistics"], [*table["splits"], "mean"]
    level = f"{100 * stats['confidence']:g} %"
    out = [
        f"\n{level} bootstrap intervals (queries resampled within each split, {stats['resamples']} resamples; "
        "the mean's weighs each split equally):\n\n"
    ]
    out.append(
        to_markdown(
            [
                {"model": m, **{s: f"{c[s][0]:.2f}-{c[s][1]:.2f}" for s in splits}}
                for m, c in table["intervals"].items()
            ],
            ["model", *splits],
        )
    )
    if table["tests"]:
        out.append(
            f"\nPaired randomization tests, model - baseline in nDCG@10 points (p Holm-adjusted across "
            f"splits; * p <= {stats['alpha']}):\n\n"
        )
        cells: dict[str, dict[str, str]] = {}
        for t in table["tests"]:
            mark = "*" if t["significant"] else ""
            cells.setdefault(f"{t['model']} - {t['baseline']}", {})[t["split"]] = (
                f"{t['delta']:+.2f} (p {t['p_holm']:.3f}){mark}"
            )
        out.append(to_markdown([{"model": k, **v} for k, v in cells.items()], ["model", *splits]))
    out += [f"\n{check['sentence']}\n" for check in table["card_checks"]]
    return "".join(out)


def main(argv: list[str] | None = None) -> None:
    run_commands({"table": summarize}, argv)


if __name__ == "__main__":
    main()
