"""Triples: upstream rows (reasonir-data, bge-reasoner-data) expanded to capped (query, positive, negative)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..sources.cards import config_files
from ..sources.readers import iter_jsonl_rows, iter_parquet_rows

__all__ = ["TripleBuilder", "bge_reasoner_triples", "format_query", "reasonir_triples"]

BGE_FIELDS = {"prompt": str, "query": str, "pos": list, "neg": list}


def format_query(instruction: str, text: str) -> str:
    """Query text as the model sees it at training and evaluation time.

    Parameters
    ----------
    instruction
        The task instruction (``""``: none); stripped.
    text
        The query itself; stripped.

    Returns
    -------
    ``instruction``, then a line ``Query: <text>``; or whichever of the two is not empty.

    Examples
    --------
    >>> format_query("Given a Biology post, retrieve relevant passages", "Why?")
    'Given a Biology post, retrieve relevant passages\\nQuery: Why?'
    >>> format_query("", "Why?")
    'Why?'
    """
    instruction, text = instruction.strip(), text.strip()
    if instruction and text:
        return f"{instruction}\nQuery: {text}"
    return instruction or text


class TripleBuilder:
    """Expands upstream rows into capped (query, positive, negative) triples and counts drops."""

    def __init__(self, *, positives: int, negatives: int, min_chars: int) -> None:
        self.positives, self.negatives, self.min_chars = positives, negatives, min_chars
        self.dropped: Counter[str] = Counter()

    def expand(
        self,
        *,
        query: str,
        instruction: str,
        pos: list[str],
        neg: list[str],
        source: str,
        domain: str,
    ) -> Iterator[dict[str, str]]:
        pos = [p for p in pos if len(p.strip()) >= self.min_chars][: self.positives]
        neg = [n for n in neg if len(n.strip()) >= self.min_chars][: self.negatives]
        if not query.strip() or not pos or not neg:
            reason = "no query" if not query.strip() else "no positive" if not pos else "no negative"
            self.dropped[f"{source}: {reason}"] += 1
            return
        for p in pos:
            for n in neg:
                yield {
                    "query": query,
                    "positive": p,
                    "negative": n,
                    "source": source,
                    "domain": domain,
                    "instruction": instruction,
                }


def _pair_text(path: Path, row_no: int, col: str, item: Any) -> tuple[str, str]:
    """A gritlm ``[instruction, text]`` pair (or a bare string) → (instruction, text)."""
    if isinstance(item, str):
        return "", item
    if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0].strip("\t\n :"), item[1]
    raise UserError(f"{path}: row {row_no}: column {col}: expected [instruction, text], got {item!r:.80}")


def reasonir_triples(
    root: Path,
    config: str,
    builder: TripleBuilder,
    id2doc: dict[str, tuple[str, str]] | None,
    counts: Counter[str],
) -> Iterator[dict[str, str]]:
    """Triples of reasonir-data ``vl`` (text positives) or ``hq`` (BRIGHT-id positives).

    Parameters
    ----------
    root
        The reasonir-data directory, laid out like its hub repository.
    config
        ``vl`` (positives are texts) or ``hq`` (positives are BRIGHT document ids); its ``train`` files are read.
    builder
        Expands each row into capped triples and counts the rows it drops.
    id2doc
        For ``hq``: BRIGHT document id -> (domain, text) (:func:`~workflow_scripts.bright.load.bright_id2doc`);
        None for ``vl``.
    counts
        Incremented in place: ``hq positive ids`` and ``hq unresolved ids`` (ids not in ``id2doc``, skipped).
    """
    source = f"reasonir/{config}"
    for path, row_no, row in iter_parquet_rows(config_files(root, config, "train"), ["query", "pos", "neg"]):
        q = row["query"]
        instruction, text = _pair_text(path, row_no, "query", q) if isinstance(q, list) else ("", q)
        if not isinstance(text, str):
            raise UserError(f"{path}: row {row_no}: column query must be a string or [instruction, text]")
        positives, domain = [], ""
        for item in row["pos"] or []:
            doc_instr, doc = _pair_text(path, row_no, "pos", item)
            if id2doc is not None:
                counts["hq positive ids"] += 1
                if doc not in id2doc:
                    counts["hq unresolved ids"] += 1
                    continue
                domain, doc = id2doc[doc]
            positives.append(f"{doc_instr} {doc}" if doc_instr else doc)
        negatives = [" ".join(x for x in _pair_text(path, row_no, "neg", n) if x) for n in row["neg"] or []]
        yield from builder.expand(
            query=format_query(instruction, text),
            instruction=instruction,
            pos=positives,
            neg=negatives,
            source=source,
            domain=domain,
        )


def bge_reasoner_triples(
    root: Path, subdir: str | None, splits: list[str], builder: TripleBuilder
) -> Iterator[dict[str, str]]:
    """Triples of the 12 per-domain bge-reasoner jsonl files (``<domain>[-formatted].jsonl``).

    Parameters
    ----------
    root
        The bge-reasoner-data directory.
    subdir
        The folder below ``root`` holding the jsonl files (``sources.bge_reasoner.subdir``); None: ``root``.
    splits
        The BRIGHT splits: each file's domain must be one of them.
    builder
        Expands each row into capped triples and counts the rows it drops.
    """
    folder = root / subdir if subdir else root
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise UserError(f"{folder}: no *.jsonl files (sources.bge_reasoner.subdir?)")
    for path in files:
        domain = path.stem.removesuffix("-formatted")
        if domain not in splits:
            raise UserError(f"{path}: unknown domain file {path.name!r}; expected one of {splits}")
        for _, line_no, row in iter_jsonl_rows(path):
            for key, kind in BGE_FIELDS.items():
                if not isinstance(row.get(key), kind):
                    raise UserError(f"{path}:{line_no}: column {key} must be {kind.__name__}")
            for key in ("pos", "neg"):
                if not all(isinstance(text, str) for text in row[key]):
                    raise UserError(f"{path}:{line_no}: column {key} must be list of strings")
            yield from builder.expand(
                query=format_query(row["prompt"], row["query"]),
                instruction=row["prompt"].strip(),
                pos=row["pos"],
                neg=row["neg"],
                source="bge_reasoner",
                domain=domain,
            )
