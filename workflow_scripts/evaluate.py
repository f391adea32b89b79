"""Evaluation stage: exact MaxSim over a whole BRIGHT split, streamed, scored with pytrec_eval.

Documents are encoded ``chunk_size`` at a time; every query is scored against each chunk
with pad-free GEMMs (all token vectors of the chunk side by side, then a segment max per
document), and a running top-k per query is kept. Memory is bounded by the chunk, not by
the corpus (leetcode has 414k documents). Metrics come from pytrec_eval (trec_eval's code),
as in BRIGHT's ``calculate_retrieval_metrics`` and mteb; results are written in mteb's
``TaskResult`` JSON layout plus a TREC run file.

BRIGHT protocol (``run.py``): each query's ``excluded_ids`` are removed before ranking
(``exclude_ids: true``); mteb's ``BrightRetrieval`` ignores them (``exclude_ids: false``).
Before any model is loaded, the mirror is checked against its download manifest and against
the invariants BRIGHT's own code relies on (``bright.py``); what is legal but odd is counted
under ``data_checks`` in the result.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bright import load_bright_documents, load_bright_examples, validate_split
from .cli import run_commands
from .common import UserError, atomic_file, read_json, write_json
from .data import source_root
from .model import load_colbert

__all__ = [
    "MEASURES",
    "TopK",
    "evaluate_split",
    "maxsim_scores",
    "read_qrels",
    "read_run",
    "score_run",
]

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
TASK_NAME = "BrightRetrieval"
SCORE_BUDGET = 1 << 25  # query-token x document-token scores held at once (128 MiB fp32)


# --------------------------------------------------------------------------- scoring
def maxsim_scores(
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
    >>> maxsim_scores(q, d)
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


# --------------------------------------------------------------------------- metrics
def score_run(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, Any]:
    """pytrec_eval metrics: mean over the queries pytrec_eval scores, plus per-query values.

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
        logger.warning("%d of %d qrels queries have no line in the run and are not scored (as trec_eval "
                       "without -c): %s", len(missing), len(judged), shown)  # fmt: skip


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
    workflow_scripts.common.UserError: run:1: score 'nan' is not a finite number
    """
    try:
        number = cast(text)
    except ValueError as err:
        raise UserError(f"{where}: {field} {text!r} is not a number") from err
    if not math.isfinite(number):
        raise UserError(f"{where}: {field} {text!r} is not a finite number")
    return number


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels ``qid iter docid rel``."""
    return _read_trec(path, "qid iter docid rel", 3, int)


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """TREC run ``qid Q0 docid rank score tag``."""
    return _read_trec(path, "qid Q0 docid rank score tag", 4, float)


def write_run(path: str | Path, run: dict[str, list[tuple[str, float]]], tag: str) -> None:
    """TREC run file, ranks 1..k in score order."""
    with atomic_file(path) as handle:
        for qid, docs in run.items():
            for rank, (doc_id, score) in enumerate(docs, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


# --------------------------------------------------------------------------- a split
def _chunks(root: Path, split: str, size: int) -> Iterator[tuple[list[str], list[str]]]:
    ids, texts = [], []
    for doc_id, content in load_bright_documents(root, split):
        ids.append(doc_id)
        texts.append(content)
        if len(ids) == size:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


def _device_dtype(dtype: str) -> tuple[str, torch.dtype]:
    if not torch.cuda.is_available():
        return "cpu", torch.float32
    if dtype == "auto":
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cuda", getattr(torch, dtype)


def encode(
    model, texts: list[str], *, is_query: bool, batch_size: int, device: str, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Normalised token vectors, one (tokens, dim) tensor per text (padding/skiplist removed)."""
    with torch.inference_mode():
        vecs = model.encode(texts, is_query=is_query, batch_size=batch_size, convert_to_numpy=False,
                            convert_to_tensor=False, show_progress_bar=False)  # fmt: skip
    return [v.to(device=device, dtype=dtype) for v in vecs]


def evaluate_split(
    *,
    model_path: str | Path,
    model_name: str,
    bright_manifest: str | Path,
    split: str,
    out_json: str | Path,
    run_file: str | Path,
    query_template: str,
    domain: str,
    query_length: int,
    document_length: int,
    exclude_ids: bool,
    top_k: int,
    chunk_size: int,
    encode_batch_size: int,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Rank every document of one BRIGHT split for every query; write mteb JSON + run file."""
    started = time.time()
    root = source_root(bright_manifest)  # the data the manifest pinned, or one line
    revision = read_json(bright_manifest)["revision"]
    examples = load_bright_examples(root, split)
    if not examples:
        raise UserError(f"{root}: BRIGHT split {split!r} has no examples")
    data_checks = validate_split(root, split, examples)  # before any model is loaded
    device, torch_dtype = _device_dtype(dtype)
    model = load_colbert(model_path, query_length=query_length, document_length=document_length,
                         trust_remote_code=trust_remote_code, device=device)  # fmt: skip
    if device == "cuda":
        model.to(torch_dtype)
    qids = [str(e["id"]) for e in examples]
    queries = [query_template.format(domain=domain, query=e["query"]) for e in examples]
    qrels = {str(e["id"]): {g: 1 for g in e["gold_ids"]} for e in examples}
    excluded = {str(e["id"]): {x for x in e["excluded_ids"] if x != "N/A"} for e in examples}
    q_vecs = encode(model, queries, is_query=True, batch_size=encode_batch_size, device=device, dtype=torch_dtype)
    topk = TopK(len(queries), top_k)
    doc_ids: list[str] = []
    encode_s = score_s = 0.0
    for ids, texts in _chunks(root, split, chunk_size):
        t0 = time.time()
        d_vecs = encode(model, texts, is_query=False, batch_size=encode_batch_size, device=device, dtype=torch_dtype)
        t1 = time.time()
        scores = maxsim_scores(q_vecs, d_vecs)
        if exclude_ids:
            _mask_excluded(scores, qids, ids, excluded)
        topk.update(scores, offset=len(doc_ids))
        score_s += time.time() - t1
        encode_s += t1 - t0
        doc_ids.extend(ids)
    run = _ranked(topk, qids, doc_ids)
    metrics = score_run(qrels, {q: dict(docs) for q, docs in run.items()})
    write_run(run_file, run, tag=f"{model_name}")
    result = _mteb_result(split=split, metrics=metrics["mean"], revision=revision,
                          seconds=time.time() - started)  # fmt: skip
    result["protocol"] = {
        "model": model_name, "model_path": str(model_path), "exact_maxsim": True,
        "excluded_ids_removed": exclude_ids, "query_length": query_length,
        "document_length": document_length, "query_template": query_template, "domain": domain,
        "documents": len(doc_ids), "queries": len(qids), "top_k": top_k, "device": device,
        "dtype": str(torch_dtype).removeprefix("torch."), "encode_seconds": encode_s,
        "score_seconds": score_s,
    }  # fmt: skip
    result["data_checks"] = data_checks  # what BRIGHT allows but is odd (bright.check_split)
    result["per_query"] = {q: v["ndcg_at_10"] for q, v in metrics["per_query"].items()}
    write_json(out_json, result)
    logger.info("%s %s: nDCG@10 = %.4f", model_name, split, metrics["mean"]["ndcg_at_10"])
    return result


def _mask_excluded(scores: torch.Tensor, qids: list[str], ids: list[str], excluded: dict[str, set[str]]) -> None:
    """BRIGHT removes each query's excluded ids before ranking: give them -inf, never rank them."""
    position = {doc_id: j for j, doc_id in enumerate(ids)}
    for i, qid in enumerate(qids):
        for doc_id in excluded[qid]:
            if doc_id in position:
                scores[i, position[doc_id]] = float("-inf")


def _ranked(topk: TopK, qids: list[str], doc_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    run = {}
    for i, qid in enumerate(qids):
        pairs = [(doc_ids[j], float(s)) for s, j in zip(topk.scores[i].tolist(), topk.index[i].tolist())]
        run[qid] = [(d, s) for d, s in pairs if s != float("-inf")]  # excluded never listed
    return run


def _mteb_result(*, split: str, metrics: dict[str, float], revision: str, seconds: float) -> dict[str, Any]:
    """mteb ``TaskResult`` layout (``scores.standard[]`` with ``hf_subset`` and ``main_score``)."""
    entry = {"hf_subset": split, "languages": ["eng-Latn"], "main_score": metrics["ndcg_at_10"], **metrics}
    return {
        "dataset_revision": revision,
        "task_name": TASK_NAME,
        "mteb_version": _mteb_version(),
        "scores": {"standard": [entry]},
        "evaluation_time": seconds,
        "kg_co2_emissions": None,
    }


def _mteb_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("mteb")
    except Exception:  # mteb is optional: the layout is what matters, version may be null
        return None


def score_run_files(*, qrels: str, run: str) -> None:
    """Score a TREC run file against TREC qrels; print the metrics as JSON."""
    json.dump(score_run(read_qrels(qrels), read_run(run)), sys.stdout, indent=2, sort_keys=True)
    print()


def main(argv: list[str] | None = None) -> None:
    run_commands({"split": evaluate_split, "score-run": score_run_files}, argv)


if __name__ == "__main__":
    main()
