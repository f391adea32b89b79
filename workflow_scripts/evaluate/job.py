"""Evaluation stage: exact MaxSim over whole BRIGHT corpora, every protocol of a job on one encoding.

A job (:func:`evaluate_job`) takes one split, or the two splits that share one corpus
(aops and theoremqa_questions), and a list of protocols (:mod:`workflow_scripts.bright.protocols`:
query set, query format, excluded ids, corpus + qrels). Each corpus the job's protocols read
(``documents``, ``long_documents``) is streamed and encoded ONCE, ``chunk_size`` documents at
a time; every protocol's queries are scored against each chunk (exact MaxSim) and each
(protocol, split) keeps its own running top-k, with its own excluded ids removed or not.
Memory is bounded by the chunk, not by the corpus (leetcode has 414k documents). Protocols
whose query texts are identical (``card`` and ``bright``) share query vectors and MaxSim
scores; only the masking differs. Metrics come from pytrec_eval (trec_eval's code), as in
BRIGHT's ``calculate_retrieval_metrics`` and mteb; each (protocol, split) gets mteb's
``TaskResult`` JSON layout plus a TREC run file, with encode and score times.

Before any model is loaded, the mirror is checked against its download manifest and against
the invariants BRIGHT's own code relies on (:mod:`workflow_scripts.bright.load`), for every query set and corpus
the job reads; what is legal but odd is counted under ``data_checks`` in each result. Two
splits given together are encoded once only when their corpora are byte-identical (same ids
and texts in the same order, by digest); otherwise each is encoded, and the result says so.

Nothing that looks like a score but is not one is written as one: a NaN or infinite MaxSim
score stops the job before anything is ranked, in one line naming the split
(:func:`~workflow_scripts.evaluate.scores.check_finite_scores`); a ranking where every document of a query (or of the split)
got the same score, a query set that covers part of its split, and a length capped at what
the model takes are each a line in the result's ``flags`` (:func:`~workflow_scripts.evaluate.scores.result_flags`), which the
summary and the report show beside the number. The lengths recorded are the ones applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..bright.load import CorpusScan, gold_ids, load_bright_documents, load_bright_examples, scan_corpus, validate_split
from ..bright.meta import TASK_NAME
from ..bright.protocols import job_name, job_pairs
from ..cli import run_commands
from ..errors import UserError
from ..files import read_json, write_json
from ..model.load import effective_length, load_colbert
from ..progress import Progress
from ..sources.manifest import source_root
from .encoding import encode
from .maxsim import DTYPES, bf16_native, maxsim_scores
from .scores import ScoreSpread, TopK, check_finite_scores, result_flags
from .trec import score_run, score_run_files, write_run

__all__ = ["evaluate_job", "evaluate_split", "query_coverage"]

logger = logging.getLogger(__name__)


def _chunks(root: Path, split: str, corpus: str, size: int) -> Iterator[tuple[list[str], list[str]]]:
    ids, texts = [], []
    for doc_id, content in load_bright_documents(root, split, corpus):
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


def _score_dtype(setting: str, device: str) -> str:
    """The dtype a job's MaxSim runs in: ``setting``, except ``bfloat16`` where ``device`` has no
    native bf16 GEMM (then float32, warned once here rather than by every chunk's scoring).

    Examples
    --------
    >>> _score_dtype("float32", "cpu")
    'float32'
    >>> _score_dtype("fp16", "cpu")
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: score_dtype 'fp16' is not one of float32, bfloat16
    """
    if setting not in DTYPES:
        raise UserError(f"score_dtype {setting!r} is not one of {', '.join(DTYPES)}")
    if setting == "bfloat16" and not bf16_native(device):
        logger.warning("score_dtype bfloat16: %s has no native bf16 GEMM, scoring in float32 (recorded so)", device)
        return "float32"
    return setting


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
    score_dtype: str = "float32",
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """One split under one ad-hoc protocol (``query_template`` with ``domain``, ``exclude_ids``).

    :func:`evaluate_job` for a single (protocol, split) on ``examples`` + ``documents``; what
    the workflow runs is :func:`evaluate_job` with the configured protocols.

    Parameters
    ----------
    model_path
        A checkpoint directory, or the download manifest of one.
    model_name
        The model's name in the result (``protocol.model``) and the run file's tag.
    bright_manifest
        The BRIGHT download manifest (its data is checked against it first).
    split
        The split scored: its ``examples`` queries against its ``documents``, judged by ``gold_ids``.
    out_json, run_file
        Where the mteb-format result and the TREC run are written.
    query_template
        How a query is written for the model: ``{query}`` and optionally ``{domain}``.
    domain
        What ``{domain}`` becomes (the split's label, e.g. ``Earth Science``).
    query_length, document_length
        Token limits (capped at what the model takes; the applied ones are recorded).
    exclude_ids
        Remove each query's ``excluded_ids`` before ranking (BRIGHT) or score them (legacy mteb).
    top_k
        Documents kept per query in the run file.
    chunk_size
        Documents encoded and scored at a time (bounds memory, not the result).
    encode_batch_size
        The encoder's batch size.
    dtype
        ``auto``, ``float32``, ``float16`` or ``bfloat16`` (CPU always float32).
    score_dtype
        The MaxSim GEMMs' dtype: ``float32`` (exact) or ``bfloat16`` (approximate; float32 where not native).
    trust_remote_code
        Allow a checkpoint that ships code.

    Returns
    -------
    The result written to ``out_json``.
    """
    protocol = _custom_protocol(split=split, query_template=query_template, domain=domain, exclude_ids=exclude_ids)
    return evaluate_job(
        model_path=model_path,
        model_name=model_name,
        bright_manifest=bright_manifest,
        splits=[split],
        protocols=[protocol],
        out_json=[str(out_json)],
        run_file=[str(run_file)],
        query_length=query_length,
        document_length=document_length,
        overrides={},
        top_k=top_k,
        chunk_size=chunk_size,
        encode_batch_size=encode_batch_size,
        dtype=dtype,
        score_dtype=score_dtype,
        trust_remote_code=trust_remote_code,
    )[0]


def _custom_protocol(*, split: str, query_template: str, domain: str, exclude_ids: bool) -> dict[str, Any]:
    """The ad-hoc protocol of :func:`evaluate_split`: ``examples`` against ``documents`` on one split."""
    return {
        "name": "custom",
        "queries": "examples",
        "exclude_ids": exclude_ids,
        "corpus": "documents",
        "qrels": "gold_ids",
        "templates": {split: query_template},
        "domains": {split: domain},
        "mteb": {split: [TASK_NAME, "standard", split]},
    }


def evaluate_job(
    *,
    model_path: str | Path,
    model_name: str,
    bright_manifest: str | Path,
    splits: list[str],
    protocols: list[dict[str, Any]],
    out_json: list[str],
    run_file: list[str],
    query_length: int,
    document_length: int,
    overrides: dict[str, dict[str, int]],
    top_k: int,
    chunk_size: int,
    encode_batch_size: int,
    dtype: str = "auto",
    score_dtype: str = "float32",
    trust_remote_code: bool = False,
) -> list[dict[str, Any]]:
    """Score every protocol on every split of one job, each corpus encoded once.

    Parameters
    ----------
    model_path
        A checkpoint directory, or the download manifest of one.
    model_name
        The model's name in the results (``protocol.model``) and the run files' tag.
    bright_manifest
        The BRIGHT download manifest (its data is checked against it first).
    splits
        The job's splits: one, or several that may share one corpus (encoded once if they do).
    protocols
        :meth:`workflow_scripts.bright.protocols.Protocol.for_job` of each protocol, in output order.
    out_json, run_file
        The mteb JSON and the TREC run of each (protocol, split) of
        :func:`workflow_scripts.bright.protocols.job_pairs` (protocol-major), in that order.
    query_length, document_length, overrides
        Token limits, and per-split overrides of them (``{"pony": {"query_length": 32}}``).
    top_k
        Documents kept per query in the run file.
    chunk_size
        Documents encoded and scored at a time (bounds memory, not the result).
    encode_batch_size
        The encoder's batch size.
    dtype
        ``auto``, ``float32``, ``float16`` or ``bfloat16`` (CPU always float32).
    score_dtype
        The MaxSim GEMMs' dtype: ``float32`` (exact, the default) or ``bfloat16`` (approximate,
        faster where the device multiplies bf16 natively, else float32 with a warning); the
        dtype used is recorded as ``protocol.score_dtype``.
    trust_remote_code
        Allow a checkpoint that ships code.

    Returns
    -------
    The result written to each ``out_json``, in the same order.

    Longer than ~50 lines because its keyword signature is the stage's CLI (one flag per parameter); the body is a
    sequence of short helper calls.
    """
    started = time.time()
    root = source_root(bright_manifest)  # the data the manifest pinned, or one line
    revision = read_json(bright_manifest)["revision"]
    requested = _job_lengths(
        splits=splits, query_length=query_length, document_length=document_length, overrides=overrides
    )
    tasks = _plan(root, splits, protocols, out_json, run_file)
    corpora = _corpora(root, tasks, splits)  # every check before any model is loaded
    device, torch_dtype = _device_dtype(dtype)
    score_dtype = _score_dtype(score_dtype, device)
    model = _load_job_model(
        model_path=model_path,
        lengths=requested[splits[0]],
        device=device,
        torch_dtype=torch_dtype,
        trust_remote_code=trust_remote_code,
    )
    lengths = _applied_lengths(model, requested)
    settings = {"batch_size": encode_batch_size, "device": device, "dtype": torch_dtype}
    _encode_queries(model, tasks, lengths, settings)
    _score_corpora(
        model=model,
        root=root,
        corpora=corpora,
        lengths=lengths,
        top_k=top_k,
        chunk_size=chunk_size,
        what=f"evaluate {model_name}",
        settings=settings,
        score_dtype=score_dtype,
    )
    run_info = _run_info(
        model_name=model_name,
        model_path=model_path,
        top_k=top_k,
        device=device,
        torch_dtype=torch_dtype,
        score_dtype=score_dtype,
        job=job_name(splits),
        revision=revision,
        started=started,
    )
    return _finish_tasks(tasks=tasks, corpora=corpora, lengths=lengths, requested=requested, run_info=run_info)


def _job_lengths(
    *, splits: list[str], query_length: int, document_length: int, overrides: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    """Each split's requested token limits: the job's, updated by that split's overrides."""
    return {
        s: {"query_length": query_length, "document_length": document_length} | overrides.get(s, {}) for s in splits
    }


def _load_job_model(
    *, model_path: str | Path, lengths: dict[str, int], device: str, torch_dtype: torch.dtype, trust_remote_code: bool
) -> Any:
    """Load the checkpoint at the first split's lengths on ``device`` (cast to ``torch_dtype`` on CUDA)."""
    model = load_colbert(
        model_path,
        query_length=lengths["query_length"],
        document_length=lengths["document_length"],
        trust_remote_code=trust_remote_code,
        device=device,
    )
    if device == "cuda":
        model.to(torch_dtype)
    return model


def _score_corpora(
    *,
    model: Any,
    root: Path,
    corpora: list[_Corpus],
    lengths: dict[str, dict[str, int]],
    top_k: int,
    chunk_size: int,
    what: str,
    settings: dict[str, Any],
    score_dtype: str,
) -> None:
    """Encode each corpus once, at its split's document length, and score its tasks on it."""
    for corpus in corpora:
        model.document_length = lengths[corpus.split]["document_length"]  # equal for splits sharing a corpus
        _score_corpus(
            model,
            root,
            corpus,
            top_k=top_k,
            chunk_size=chunk_size,
            what=what,
            settings=settings,
            score_dtype=score_dtype,
        )


def _run_info(
    *,
    model_name: str,
    model_path: str | Path,
    top_k: int,
    device: str,
    torch_dtype: torch.dtype,
    score_dtype: str,
    job: str,
    revision: str,
    started: float,
) -> dict[str, Any]:
    """What every result of the job records alike: model, device, dtypes, job, data revision, start."""
    return {
        "model": model_name,
        "model_path": str(model_path),
        "top_k": top_k,
        "device": device,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "score_dtype": score_dtype,
        "job": job,
        "revision": revision,
        "started": started,
    }


def _finish_tasks(
    *,
    tasks: list[_Task],
    corpora: list[_Corpus],
    lengths: dict[str, dict[str, int]],
    requested: dict[str, dict[str, int]],
    run_info: dict[str, Any],
) -> list[dict[str, Any]]:
    """:func:`_finish` each task, in plan order, with the corpus it was scored on."""
    owner = {id(task): corpus for corpus in corpora for task in corpus.tasks}
    return [
        _finish(task, owner[id(task)], lengths[task.split] | {"requested_lengths": requested[task.split]}, run_info)
        for task in tasks
    ]


def _applied_lengths(model, lengths: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Each split's query and document lengths as the model applies them: capped at what it takes
    (:func:`workflow_scripts.model.load.effective_length`, one line when capped), so the result records
    the value used, not the one asked for."""
    return {
        split: {key: effective_length(model, value, what=f"evaluate/{key} of {split}") for key, value in asked.items()}
        for split, asked in lengths.items()
    }


@dataclass
class _Task:
    """One (protocol, split) of a job: its queries, qrels, excluded ids and running top-k."""

    protocol: dict[str, Any]
    split: str
    examples: list[dict[str, Any]]
    out_json: str
    run_file: str
    checks: dict[str, int] = field(default_factory=dict)
    vectors: list[torch.Tensor] = field(default_factory=list)  # shared by tasks with the same query texts
    shares_queries_with: str | None = None
    topk: TopK | None = None
    query_seconds: float = 0.0
    score_seconds: float = 0.0
    spread: ScoreSpread | None = None
    coverage: dict[str, int] = field(default_factory=dict)

    @cached_property
    def label(self) -> str:
        return f"{self.protocol['name']}/{self.split}"

    @cached_property
    def qids(self) -> list[str]:
        return [e["id"] for e in self.examples]

    @cached_property
    def texts(self) -> list[str]:
        """What the model encodes: each query through the protocol's template for this split."""
        template, domain = self.protocol["templates"][self.split], self.protocol["domains"][self.split]
        return [template.format(domain=domain, query=e["query"]) for e in self.examples]

    @cached_property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {e["id"]: dict.fromkeys(gold_ids(e, self.protocol["qrels"]), 1) for e in self.examples}

    @cached_property
    def excluded(self) -> dict[str, set[str]]:
        """Each query's excluded ids when the protocol removes them; nothing when it scores them."""
        if not self.protocol["exclude_ids"]:
            return {}
        return {e["id"]: set(e["excluded_ids"]) - {"N/A"} for e in self.examples}


@dataclass
class _Corpus:
    """One corpus a job encodes once (``split``'s files of config ``corpus``) and the tasks scored on it."""

    corpus: str
    split: str
    scan: CorpusScan
    tasks: list[_Task] = field(default_factory=list)
    doc_ids: list[str] = field(default_factory=list)
    encode_seconds: float = 0.0
    encoded: int = 0  # documents passed to the encoder: the corpus size, once


def _plan(
    root: Path, splits: list[str], protocols: list[dict[str, Any]], out_json: list[str], run_file: list[str]
) -> list[_Task]:
    """The job's tasks with their query sets loaded and checked row by row (each set read once)."""
    pairs = job_pairs([p["name"] for p in protocols], splits)
    if not (len(pairs) == len(out_json) == len(run_file)):
        raise UserError(
            f"{len(pairs)} (protocol, split) results to write, but {len(out_json)} --out-json and "
            f"{len(run_file)} --run-file paths"
        )
    by_name = {p["name"]: p for p in protocols}
    query_sets: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    tasks = []
    for (name, split), json_path, run_path in zip(pairs, out_json, run_file):
        protocol = by_name[name]
        key = (split, protocol["queries"], protocol["qrels"])
        if key not in query_sets:
            query_sets[key] = load_bright_examples(root, split, protocol["queries"], protocol["qrels"])
        if not query_sets[key]:
            raise UserError(f"{root}: BRIGHT {protocol['queries']} split {split!r} has no rows")
        if (split, "examples", "gold_ids") not in query_sets:  # the split's queries, which a query set may not cover
            query_sets[split, "examples", "gold_ids"] = load_bright_examples(root, split)
        coverage = query_coverage(query_sets[key], query_sets[split, "examples", "gold_ids"])
        if coverage["missing"]:
            logger.warning(
                "BRIGHT %s: the %s query set covers %d of the split's %d queries: protocol %s is scored "
                "on those only (flagged in its result and the summary)",
                split,
                protocol["queries"],
                coverage["queries"] - coverage["extra"],
                coverage["split_queries"],
                name,
            )
        tasks.append(
            _Task(
                protocol=protocol,
                split=split,
                examples=query_sets[key],
                out_json=json_path,
                run_file=run_path,
                coverage=coverage,
            )
        )
    return tasks


def query_coverage(queries: list[dict[str, Any]], split_queries: list[dict[str, Any]]) -> dict[str, int]:
    """How many of a split's queries (``examples``) a query set scores: a reasoning set may hold fewer.

    Parameters
    ----------
    queries
        The query set's rows (only ``id`` is read).
    split_queries
        The split's ``examples`` rows.

    Returns
    -------
    ``queries`` and ``split_queries`` (row counts), ``missing`` (split ids not in the set) and ``extra`` (the reverse).

    Examples
    --------
    >>> query_coverage([{"id": "1"}], [{"id": "1"}, {"id": "2"}])
    {'queries': 1, 'split_queries': 2, 'missing': 1, 'extra': 0}
    """
    ours, split = {q["id"] for q in queries}, {q["id"] for q in split_queries}
    return {
        "queries": len(queries),
        "split_queries": len(split_queries),
        "missing": len(split - ours),
        "extra": len(ours - split),
    }


def _corpora(root: Path, tasks: list[_Task], splits: list[str]) -> list[_Corpus]:
    """Group the tasks by the corpus they rank: identical corpora (by digest) are one, encoded once.

    Every (query set, corpus) pair is checked against BRIGHT's invariants here, before a
    model is loaded (:func:`workflow_scripts.bright.load.validate_split`).
    """
    scans: dict[tuple[str, str], CorpusScan] = {}
    checks: dict[tuple[str, str, str, str], dict[str, int]] = {}
    groups: dict[tuple[str, str], _Corpus] = {}
    for task in tasks:
        corpus, split = task.protocol["corpus"], task.split
        if (corpus, split) not in scans:
            scans[corpus, split] = scan_corpus(root, split, corpus)
        scan = scans[corpus, split]
        key = (split, task.protocol["queries"], task.protocol["qrels"], corpus)
        if key not in checks:
            checks[key] = validate_split(
                root,
                split,
                task.examples,
                scan=scan,
                gold_field=task.protocol["qrels"],
                label=f" ({task.protocol['queries']} on {corpus})",
            )
        task.checks = checks[key]
        groups.setdefault((corpus, scan.sha256), _Corpus(corpus=corpus, split=split, scan=scan)).tasks.append(task)
    for corpus in {c for c, _ in scans}:
        apart = [s for s in splits if (corpus, s) in scans]
        if len({scans[corpus, s].sha256 for s in apart}) > 1 and len(apart) > 1:
            logger.warning(
                "%s: the %s of %s differ (ids or texts): each is encoded, not one for all",
                root,
                corpus,
                " and ".join(apart),
            )
    return list(groups.values())


def _encode_queries(model, tasks: list[_Task], lengths: dict[str, dict[str, int]], settings: dict[str, Any]) -> None:
    """Encode each distinct query set once, at its split's query length."""
    done: dict[tuple[str, tuple[str, ...]], _Task] = {}
    for task in tasks:
        texts = task.texts
        key = (task.split, tuple(texts))
        if key in done:  # e.g. card and bright: same queries, same template
            task.vectors, task.shares_queries_with = done[key].vectors, done[key].label
            continue
        model.query_length = lengths[task.split]["query_length"]
        start = time.time()
        task.vectors = encode(model, texts, is_query=True, **settings)
        task.query_seconds = time.time() - start
        done[key] = task


def _score_corpus(
    model,
    root: Path,
    corpus: _Corpus,
    *,
    top_k: int,
    chunk_size: int,
    what: str,
    settings: dict[str, Any],
    score_dtype: str = "float32",
) -> None:
    """Stream one corpus: encode each chunk once, score it for every task, merge each task's top-k."""
    for task in corpus.tasks:
        task.topk = TopK(len(task.examples), top_k)
        task.spread = ScoreSpread(len(task.examples))
    progress = Progress(f"{what}: {corpus.corpus} of {corpus.split}", total=len(corpus.scan.ids), unit="documents")
    for ids, texts in _chunks(root, corpus.split, corpus.corpus, chunk_size):
        start = time.time()
        d_vecs = encode(model, texts, is_query=False, **settings)
        corpus.encode_seconds += time.time() - start
        corpus.encoded += len(texts)
        scores: dict[int, torch.Tensor] = {}  # MaxSim of each distinct query set against this chunk
        for task in corpus.tasks:
            start = time.time()
            key = id(task.vectors)
            if key not in scores:
                scores[key] = maxsim_scores(task.vectors, d_vecs, dtype=score_dtype)
                check_finite_scores(scores[key], d_vecs, ids, where=f"{what}: split {task.split} ({corpus.corpus})")
            chunk = scores[key]
            if task.excluded:
                chunk = chunk.clone()  # the raw scores may serve a protocol that keeps excluded ids
                _mask_excluded(chunk, task.qids, ids, task.excluded)
            task.spread.update(chunk)
            task.topk.update(chunk, offset=len(corpus.doc_ids))
            task.score_seconds += time.time() - start
        corpus.doc_ids.extend(ids)
        progress.update(len(ids))
    progress.close()


def _finish(task: _Task, corpus: _Corpus, lengths: dict[str, int], info: dict[str, Any]) -> dict[str, Any]:
    """Rank, score and write one (protocol, split): its TREC run and its mteb-format result."""
    protocol, split = task.protocol, task.split
    run = _ranked(task.topk, task.qids, corpus.doc_ids)
    metrics = score_run(task.qrels, {q: dict(docs) for q, docs in run.items()})
    write_run(task.run_file, run, tag=f"{info['model']}.{protocol['name']}")
    timing = {
        "document_encode_seconds": corpus.encode_seconds,
        "query_encode_seconds": task.query_seconds,
        "score_seconds": task.score_seconds,
        "job_seconds": time.time() - info["started"],
    }
    task_name, eval_split, subset = protocol["mteb"][split]
    result = _mteb_result(
        task=task_name,
        eval_split=eval_split,
        subset=subset,
        metrics=metrics["mean"],
        revision=info["revision"],
        seconds=sum(v for k, v in timing.items() if k != "job_seconds"),
    )
    result["protocol"] = _protocol_record(task=task, corpus=corpus, lengths=lengths, info=info)
    result["timing"] = timing
    result["encoding"] = _encoding_record(task=task, corpus=corpus, job=info["job"])
    result["data_checks"] = task.checks  # what BRIGHT allows but is odd (bright.load.check_split)
    result["coverage"] = task.coverage
    result["score_checks"] = task.spread.summary(task.qids)
    result["flags"] = result_flags(
        coverage=task.coverage,
        score_checks=result["score_checks"],
        requested=lengths["requested_lengths"],
        applied=lengths,
    )
    for flag in (f for f in result["flags"] if f.startswith("degenerate")):  # the others were said when found
        logger.warning("%s %s: %s", info["model"], task.label, flag)
    result["per_query"] = {q: v["ndcg_at_10"] for q, v in metrics["per_query"].items()}
    write_json(task.out_json, result)
    logger.info("%s %s: nDCG@10 = %.4f", info["model"], task.label, metrics["mean"]["ndcg_at_10"])
    return result


def _protocol_record(*, task: _Task, corpus: _Corpus, lengths: dict[str, int], info: dict[str, Any]) -> dict[str, Any]:
    """The result's ``protocol``: what was evaluated, on which data, with which model and settings."""
    protocol, split = task.protocol, task.split
    return {
        "name": protocol["name"],
        "query_source": protocol["queries"],
        "query_template": protocol["templates"][split],
        "domain": protocol["domains"][split],
        "excluded_ids_removed": protocol["exclude_ids"],
        "corpus": protocol["corpus"],
        "qrels": protocol["qrels"],
        "model": info["model"],
        "model_path": info["model_path"],
        "split": split,
        "exact_maxsim": True,
        **lengths,
        "documents": len(corpus.doc_ids),
        "queries": len(task.examples),
        "top_k": info["top_k"],
        "device": info["device"],
        "dtype": info["dtype"],
        "score_dtype": info["score_dtype"],
    }


def _encoding_record(*, task: _Task, corpus: _Corpus, job: str) -> dict[str, Any]:
    """The result's ``encoding``: the corpus encoding the task was scored on, and what shared it."""
    return {
        "job": job,
        "corpus_split": corpus.split,
        "corpus_sha256": corpus.scan.sha256,
        "documents_encoded": corpus.encoded,
        "scored_on_this_encoding": [t.label for t in corpus.tasks],
        "query_vectors_shared_with": task.shares_queries_with,
    }


def _mask_excluded(scores: torch.Tensor, qids: list[str], ids: list[str], excluded: dict[str, set[str]]) -> None:
    """BRIGHT removes each query's excluded ids before ranking: give them -inf, never rank them."""
    position = {doc_id: j for j, doc_id in enumerate(ids)}
    for i, qid in enumerate(qids):
        for doc_id in excluded[qid]:
            if doc_id in position:
                scores[i, position[doc_id]] = float("-inf")


def _ranked(topk: TopK, qids: list[str], doc_ids: list[str]) -> dict[str, list[tuple[str, float]]]:
    """Each query's top-k as (document id, score), scores as the run file writes them (6 decimals):
    the metrics are computed on exactly what anyone re-scoring the run file reads, ties included."""
    run = {}
    for i, qid in enumerate(qids):
        pairs = [(doc_ids[j], float(f"{s:.6f}")) for s, j in zip(topk.scores[i].tolist(), topk.index[i].tolist())]
        run[qid] = [(d, s) for d, s in pairs if s != float("-inf")]  # excluded never listed
    return run


def _mteb_result(
    *, task: str, eval_split: str, subset: str, metrics: dict[str, float], revision: str, seconds: float
) -> dict[str, Any]:
    """mteb ``TaskResult`` layout (``scores.<eval split>[]`` with ``hf_subset`` and ``main_score``)."""
    entry = {"hf_subset": subset, "languages": ["eng-Latn"], "main_score": metrics["ndcg_at_10"], **metrics}
    return {
        "dataset_revision": revision,
        "task_name": task,
        "mteb_version": _mteb_version(),
        "scores": {eval_split: [entry]},
        "evaluation_time": seconds,
        "kg_co2_emissions": None,
    }


def _mteb_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("mteb")
    except Exception:  # mteb is optional: the layout is what matters, version may be null
        return None


def main(argv: list[str] | None = None) -> None:
    run_commands({"job": evaluate_job, "split": evaluate_split, "score-run": score_run_files}, argv)


if __name__ == "__main__":
    main()
