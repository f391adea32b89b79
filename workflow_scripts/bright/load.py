"""BRIGHT (``xlangai/BRIGHT``): streamed loading of one split, and the checks its own code relies on.

A mirror that breaks what BRIGHT's official evaluation (``xlang-ai/BRIGHT`` ``run.py`` and
``retrievers.py`` @d99e839) assumes is refused with one line naming the file, before any
model is loaded:

- ``excluded_ids`` and ``gold_ids`` of a query are disjoint (``run.py``:
  ``assert len(set(e['excluded_ids']).intersection(set(e['gold_ids'])))==0``, and again
  ``assert not did in ground_truth[e['id']]`` for every excluded id);
- ``excluded_ids`` is a list of strings (``retrievers.py`` ``get_scores``: ``assert
  len(excluded_ids[query_id])==0 or (isinstance(excluded_ids[query_id][0], str) and
  isinstance(excluded_ids[query_id], list))``); ``gold_ids`` too, and ``id``/``query`` are
  strings (``get_scores`` looks ids up as ``excluded_ids[str(query_id)]`` in a dict keyed by
  ``e['id']``, so only string ids work);
- query ids are unique in a split and document ids are unique in a split: upstream keys the
  qrels, the exclusions and the scores by id (``ground_truth[e['id']]``,
  ``cur_scores[str(did)]``), so a repeated id silently drops a query or a document;
- some query of the split has gold ids, and at least one gold id of the split is one of its
  document ids (otherwise nothing is scored, or examples and documents come from different
  splits or revisions and every query scores 0).

What is legal but odd is counted (:func:`check_split`) and written beside the scores:
queries without gold ids (pytrec_eval does not score them), gold ids that are not documents
of the split, excluded ids that are not documents of the split (upstream's
``cur_scores.pop(did)`` would raise ``KeyError`` on them; removing them changes nothing
here), and empty documents.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UserError
from ..sources.cards import config_files
from ..sources.readers import iter_parquet_batches, iter_parquet_rows

__all__ = [
    "CorpusScan",
    "bright_id2doc",
    "check_split",
    "gold_ids",
    "load_bright_documents",
    "load_bright_examples",
    "scan_corpus",
    "scan_documents",
    "validate_split",
]

logger = logging.getLogger(__name__)


EXAMPLE_COLUMNS = ["id", "query", "gold_ids", "excluded_ids"]
NOT_AVAILABLE = "N/A"  # BRIGHT's placeholder for "no excluded ids" (and "no long gold ids")


def load_bright_documents(root: str | Path, split: str, corpus: str = "documents") -> Iterator[tuple[str, str]]:
    """(id, content) of one BRIGHT corpus split (``documents`` or ``long_documents``), streamed.

    Parameters
    ----------
    root
        The BRIGHT dataset directory, laid out like its hub repository.
    split
        The domain (``biology``, ``pony``, ...).
    corpus
        The config to read: ``documents`` or ``long_documents``.
    """
    for path, row_no, row in iter_parquet_rows(config_files(root, corpus, split), ["id", "content"]):
        if not isinstance(row["id"], str) or not isinstance(row["content"], str):
            raise UserError(f"{path}: row {row_no}: id and content must be strings")
        yield row["id"], row["content"]


def load_bright_examples(
    root: str | Path, split: str, config: str = "examples", gold_field: str = "gold_ids"
) -> list[dict[str, Any]]:
    """Queries of one BRIGHT split (small: at most a few hundred rows), checked row by row.

    ``config`` is ``examples`` or a reasoning set with its schema (``gpt4_reason``, ...);
    ``gold_field`` the column of the qrels in use (``gold_ids``, or ``gold_ids_long`` for the
    long documents). Refuses a row whose types are not BRIGHT's, whose gold and excluded ids
    overlap, or whose id an earlier row of the split already has, and a split where no query
    has a gold id (see the module docstring for the upstream lines).

    Parameters
    ----------
    root
        The BRIGHT dataset directory, laid out like its hub repository.
    split
        The domain (``biology``, ``pony``, ...).
    config
        The query set: ``examples`` or a reasoning config (``gpt4_reason``, ...).
    gold_field
        The qrels column: ``gold_ids`` (``documents``) or ``gold_ids_long`` (``long_documents``).

    Returns
    -------
    The rows in file order, with the columns ``id``, ``query``, ``gold_ids``, ``excluded_ids`` and ``gold_field``.
    """
    rows: list[dict[str, Any]] = []
    first: dict[str, str] = {}
    columns = EXAMPLE_COLUMNS + [c for c in [gold_field] if c not in EXAMPLE_COLUMNS]
    for path, row_no, row in iter_parquet_rows(config_files(root, config, split), columns):
        problem = _example_problem(row, gold_field)
        if problem is None and row["id"] in first:
            problem = f"query id {row['id']!r} appears twice in split {split!r} (first at {first[row['id']]})"
        if problem is not None:
            raise UserError(f"{path}: row {row_no}: {problem}")
        first[row["id"]] = f"{path.name} row {row_no}"
        rows.append(row)
    if rows and not any(gold_ids(row, gold_field) for row in rows):
        raise UserError(f"{path}: no query of split {split!r} has a gold id in {gold_field}: nothing to score")
    return rows


def gold_ids(row: dict[str, Any], gold_field: str = "gold_ids") -> list[str]:
    """The judged documents of an examples row: ``gold_field`` without BRIGHT's ``"N/A"`` placeholder.

    Parameters
    ----------
    row
        One row of :func:`load_bright_examples`.
    gold_field
        The qrels column: ``gold_ids`` or ``gold_ids_long``.

    Examples
    --------
    >>> gold_ids({"gold_ids_long": ["N/A"]}, "gold_ids_long"), gold_ids({"gold_ids": ["a"]})
    ([], ['a'])
    """
    return [g for g in row[gold_field] if g != NOT_AVAILABLE]


def _example_problem(row: dict[str, Any], gold_field: str = "gold_ids") -> str | None:
    """What makes one examples row unusable for BRIGHT's protocol, or None.

    Examples
    --------
    >>> _example_problem({"id": "0", "query": "q", "gold_ids": ["a"], "excluded_ids": ["N/A"]}) is None
    True
    >>> _example_problem({"id": "0", "query": "q", "gold_ids": ["a"], "excluded_ids": ["a"]})
    "excluded_ids and gold_ids share ['a'] (BRIGHT's run.py asserts they are disjoint)"
    """
    for col in ("id", "query"):
        if not isinstance(row[col], str):
            return f"{col} must be a string, got {row[col]!r:.40}"
    for col in dict.fromkeys(("gold_ids", gold_field, "excluded_ids")):
        if not isinstance(row[col], list) or not all(isinstance(x, str) for x in row[col]):
            return f"{col} must be a list of strings"
    for col in dict.fromkeys(("gold_ids", gold_field)):
        shared = sorted(set(row[col]) & set(row["excluded_ids"]) - {NOT_AVAILABLE})
        if shared:
            return f"excluded_ids and {col} share {shared[:3]} (BRIGHT's run.py asserts they are disjoint)"
    return None


@dataclass(frozen=True)
class CorpusScan:
    """What one pass over a corpus split learns: its ids, blank documents, content digest, files."""

    ids: set[str]
    empty: int
    sha256: str  # of the (id, content) sequence: two splits with one corpus have one digest
    where: str


def scan_documents(root: str | Path, split: str) -> tuple[set[str], int]:
    """Document ids of one ``documents`` split (refused when one repeats) and how many are blank.

    Parameters
    ----------
    root
        The BRIGHT dataset directory, laid out like its hub repository.
    split
        The domain (``biology``, ``pony``, ...).
    """
    scan = scan_corpus(root, split)
    return scan.ids, scan.empty


def scan_corpus(root: str | Path, split: str, corpus: str = "documents") -> CorpusScan:
    """Ids, blank documents and digest of one corpus split; refused when an id repeats.

    Streams the ``id`` and ``content`` columns batch by batch; only the ids are kept.

    Parameters
    ----------
    root
        The BRIGHT dataset directory, laid out like its hub repository.
    split
        The domain (``biology``, ``pony``, ...).
    corpus
        The config to read: ``documents`` or ``long_documents``.

    Returns
    -------
    The scan; its ``sha256`` covers the (id, content) sequence, its ``where`` names the file (or the first and a count).
    """
    ids: set[str] = set()
    empty = 0
    digest = hashlib.sha256()
    offset: Counter[Path] = Counter()  # rows of each file seen so far
    files = config_files(root, corpus, split)
    for path, batch in iter_parquet_batches(files, ["id", "content"]):
        for name in ("id", "content"):
            _require_strings(path, name, batch.column(name), first_row=offset[path])
        for i, doc_id in enumerate(batch.column("id").to_pylist()):
            if doc_id in ids:
                raise UserError(
                    f"{path}: row {offset[path] + i}: document id {doc_id!r} appears twice in split {split!r}"
                )
            ids.add(doc_id)
        for doc_id, content in zip(batch.column("id").to_pylist(), batch.column("content").to_pylist()):
            digest.update(f"{len(doc_id)}:{doc_id}{len(content)}:{content}".encode())
        empty += pc.sum(pc.equal(pc.utf8_trim_whitespace(batch.column("content")), "")).as_py() or 0
        offset[path] += batch.num_rows
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more files of split {split!r})"
    return CorpusScan(ids=ids, empty=empty, sha256=digest.hexdigest(), where=where)


def _require_strings(path: Path, name: str, column: pa.Array, first_row: int) -> None:
    """Refuse a column of a batch (starting at row ``first_row`` of ``path``) that is not all strings."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise UserError(f"{path}: column {name} must hold strings, the file has {column.type}")
    if column.null_count:
        row = first_row + pc.index(pc.is_null(column), True).as_py()
        raise UserError(f"{path}: row {row}: {name} must be a string, not null")


def check_split(
    *,
    examples: list[dict[str, Any]],
    doc_ids: set[str],
    empty_documents: int,
    where: str,
    gold_field: str = "gold_ids",
) -> dict[str, int]:
    """Refuse examples that share no gold id with the documents; count what is legal but odd.

    Parameters
    ----------
    examples
        Rows of :func:`load_bright_examples` (already checked row by row).
    doc_ids
        Every document id of the same split (:func:`scan_documents`).
    empty_documents
        Documents whose content is blank.
    where
        The documents file(s), named in the error.
    gold_field
        The qrels column in use (``gold_ids``; ``gold_ids_long`` with the long documents).

    Returns
    -------
    Counts: ``queries``, ``documents``, ``empty_documents``, ``queries_without_gold_ids``
    (pytrec_eval leaves them out of the mean), ``gold_ids_not_in_documents``,
    ``queries_without_gold_in_documents`` (they score 0 whatever the model),
    ``excluded_ids`` (other than "N/A") and ``excluded_ids_not_in_documents``.

    Examples
    --------
    >>> ex = [{"gold_ids": ["a", "z"], "excluded_ids": ["N/A"]}, {"gold_ids": [], "excluded_ids": ["y"]}]
    >>> counts = check_split(examples=ex, doc_ids={"a", "b"}, empty_documents=0, where="f")
    >>> counts["gold_ids_not_in_documents"], counts["queries_without_gold_ids"], counts["excluded_ids_not_in_documents"]
    (1, 1, 1)
    >>> check_split(examples=ex, doc_ids={"b"}, empty_documents=0, where="f")
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: f: none of the 2 gold ids of the split is one of its 1 document ids: examples and documents do not belong together
    """
    golds = [set(gold_ids(e, gold_field)) for e in examples]
    excluded = [set(e["excluded_ids"]) - {NOT_AVAILABLE} for e in examples]
    all_gold = set().union(*golds)
    if all_gold and not all_gold & doc_ids:
        raise UserError(
            f"{where}: none of the {len(all_gold)} gold ids of the split is one of its {len(doc_ids)} "
            "document ids: examples and documents do not belong together"
        )
    return {
        "queries": len(examples),
        "documents": len(doc_ids),
        "empty_documents": empty_documents,
        "queries_without_gold_ids": sum(1 for g in golds if not g),
        "gold_ids_not_in_documents": sum(len(g - doc_ids) for g in golds),
        "queries_without_gold_in_documents": sum(1 for g in golds if g and not g & doc_ids),
        "excluded_ids": sum(len(x) for x in excluded),
        "excluded_ids_not_in_documents": sum(len(x - doc_ids) for x in excluded),
    }


def validate_split(
    root: str | Path,
    split: str,
    examples: list[dict[str, Any]],
    *,
    scan: CorpusScan | None = None,
    gold_field: str = "gold_ids",
    label: str = "",
) -> dict[str, int]:
    """:func:`check_split` over a corpus of ``split`` (``scan``, default: its ``documents``);
    logs one warning line when something is odd (``label`` names the query set in it).

    Parameters
    ----------
    root
        The BRIGHT dataset directory, laid out like its hub repository.
    split
        The domain (``biology``, ``pony``, ...).
    examples
        The split's query rows (:func:`load_bright_examples`).
    scan
        The corpus to check against (:func:`scan_corpus`); None scans the split's ``documents``.
    gold_field
        The qrels column: ``gold_ids`` or ``gold_ids_long`` (with ``long_documents``).
    label
        Appended to the split's name in the warning line, space first: ``" (gpt4_reason on documents)"``.

    Returns
    -------
    The counts of :func:`check_split`.
    """
    scan = scan or scan_corpus(root, split)
    counts = check_split(
        examples=examples, doc_ids=scan.ids, empty_documents=scan.empty, where=scan.where, gold_field=gold_field
    )
    odd = {k: v for k, v in counts.items() if v and k not in ("queries", "documents", "excluded_ids")}
    if odd:
        logger.warning("BRIGHT %s%s: legal but odd (counted in the result's data_checks): %s", split, label, odd)
    return counts


def bright_id2doc(root: Path, splits: list[str]) -> dict[str, tuple[str, str]]:
    """Merged id → (domain, text) over all BRIGHT documents splits (ids carry no domain).

    Parameters
    ----------
    root
        The BRIGHT dataset directory, laid out like its hub repository.
    splits
        The ``documents`` splits to read, in order: an id found in several keeps the first split's entry.
    """
    id2doc: dict[str, tuple[str, str]] = {}
    for split in splits:
        for doc_id, content in load_bright_documents(root, split):
            id2doc.setdefault(doc_id, (split, content))
    return id2doc
