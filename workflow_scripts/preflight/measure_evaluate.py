"""``preflight evaluate``: per BRIGHT split, a seeded sample encoded and scored with the evaluation's own functions."""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

from ..files import write_json
from .devices import (
    architecture,
    current_device,
    device_memory,
    reset_peak_memory,
    set_threads,
    synchronize,
    token_counts,
)
from .flops import BASE_DOCUMENT_VECTORS, SCORE_TOKENS, SPECIAL_TOKENS

__all__ = ["check_long_document", "measure_evaluation", "padded_tokens"]

logger = logging.getLogger(__name__)


def _sample_split(root: Path, split: str, *, documents: int, lengths: int, seed: int) -> dict[str, Any]:
    """One pass over a split's documents: count, a seeded sample to encode, a larger one to count tokens, the longest."""
    from ..bright.load import load_bright_documents

    rng = random.Random(f"{seed}-{split}")
    encode_sample: list[str] = []
    length_sample: list[str] = []
    count, longest = 0, ""
    for _, text in load_bright_documents(root, split):
        count += 1
        for sample, size in ((encode_sample, documents), (length_sample, lengths)):
            if len(sample) < size:
                sample.append(text)
            elif (j := rng.randrange(count)) < size:
                sample[j] = text
        longest = text if len(text) > len(longest) else longest
    return {"count": count, "encode": encode_sample, "lengths": length_sample, "longest": longest}


def _timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    synchronize()
    started = time.perf_counter()
    out = function(*args, **kwargs)
    synchronize()
    return out, time.perf_counter() - started


def _measure_split(
    model: Any, *, root: Path, split: str, settings: dict[str, Any], device: str, dtype: Any
) -> dict[str, Any]:
    """Encode and score one split's samples as the evaluation does: rates, token counts and memory."""
    from ..evaluate.encoding import encode
    from ..evaluate.maxsim import maxsim_scores

    override = settings["overrides"].get(split, {})
    model.query_length = override.get("query_length", settings["query_length"])
    model.document_length = override.get("document_length", settings["document_length"])
    examples, queries = _sample_queries(root=root, split=split, settings=settings)
    docs = _sample_split(
        root, split, documents=settings["documents_per_split"], lengths=settings["length_sample"], seed=settings["seed"]
    )
    batch = settings["encode_batch_size"]
    reset_peak_memory()
    q_vecs, q_s = _timed(encode, model, queries, is_query=True, batch_size=batch, device=device, dtype=dtype)
    d_vecs, d_s = _timed(encode, model, docs["encode"], is_query=False, batch_size=batch, device=device, dtype=dtype)
    # a few documents score in microseconds: repeat them to a size where the rate is the GEMMs'
    scored = d_vecs * max(1, math.ceil(SCORE_TOKENS / max(1, sum(len(v) for v in d_vecs))))
    _, score_s = _timed(maxsim_scores, q_vecs, scored)
    d_tokens = token_counts(model, docs["encode"], is_query=False)
    q_tokens = sum(len(v) for v in q_vecs)
    pairs = q_tokens * sum(len(v) for v in scored)
    lengths = token_counts(model, docs["lengths"], is_query=False)
    padded = padded_tokens([len(t) for t in docs["encode"]], d_tokens, batch_size=batch)
    return {
        "documents": docs["count"],
        "queries": examples,
        "sampled_documents": len(docs["encode"]),
        "sampled_queries": len(queries),
        "query_length": model.query_length,
        "document_length": model.document_length,
        "query_seconds": q_s / max(len(queries), 1),
        "document_encode_seconds": d_s,
        "document_tokens_per_s": padded / max(d_s, 1e-9),
        "documents_per_s": len(d_vecs) / max(d_s, 1e-9),
        "sample_tokens": sum(d_tokens),
        "sample_padded_tokens": padded,
        "score_seconds": score_s,
        "score_pairs_per_s": pairs / max(score_s, 1e-9),
        "mean_query_tokens": q_tokens / max(len(q_vecs), 1),
        "mean_document_tokens": statistics.fmean(lengths),
        "length_sample": len(lengths),
        "max_vectors_in_sample": max((len(v) for v in d_vecs), default=0),
        "memory": device_memory(),
        "longest_document": docs["longest"],
    }


def _sample_queries(*, root: Path, split: str, settings: dict[str, Any]) -> tuple[int, list[str]]:
    """The split's query count, and a seeded sample of its queries in the evaluation's template."""
    from ..bright.load import load_bright_examples
    from ..bright.meta import DOMAINS

    examples = load_bright_examples(root, split)
    queries = [settings["query_template"].format(domain=DOMAINS[split], query=e["query"]) for e in examples]
    if settings["queries_per_split"]:
        queries = random.Random(f"{settings['seed']}-{split}-q").sample(
            queries, min(len(queries), settings["queries_per_split"])
        )
    return len(examples), queries


def padded_tokens(chars: list[int], tokens: list[int], *, batch_size: int) -> int:
    """Tokens a sentence-transformers ``encode`` computes, padding included.

    It sorts the texts by length in characters (longest first) and pads each batch to its
    longest. A whole split is encoded in length-sorted chunks of thousands of documents,
    where padding is small; a small sample is not, so its rate is per computed token.

    Parameters
    ----------
    chars
        Each text's length in characters (what ``encode`` sorts by).
    tokens
        Each text's token count (:func:`~workflow_scripts.preflight.devices.token_counts`), in the same order.
    batch_size
        The encoder's batch size.

    Examples
    --------
    >>> padded_tokens([10, 500, 40], [3, 120, 12], batch_size=2)  # [120, 12] then [3]
    243
    """
    order = sorted(range(len(chars)), key=lambda i: -chars[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(tokens[i] for i in batch) * len(batch) for batch in batches)


def check_long_document(model: Any, text: str, *, document_length: int) -> dict[str, Any]:
    """Encode one long document alone: its tokens, what the model keeps, and the vectors it gives.

    Passes when the document is cut at ``document_length`` (specials included) and not at the
    base model's 511, i.e. a document beyond 600 tokens gives more than 512 vectors.

    Parameters
    ----------
    model
        A loaded PyLate ColBERT; its ``document_length`` is set to ``document_length`` (and left so).
    text
        The document (the longest one sampled).
    document_length
        Its split's document token limit (specials included).

    Returns
    -------
    ``document_tokens`` (without specials), ``kept_tokens``, ``vectors``, ``document_length``, the model's
    ``max_seq_length`` and ``passed``.
    """
    model.document_length = document_length
    tokens = len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    kept = token_counts(model, [text], is_query=False)[0]
    import torch

    with torch.inference_mode():
        vectors = len(model.encode([text], is_query=False, show_progress_bar=False)[0])
    expected = min(tokens + SPECIAL_TOKENS, document_length)
    ok = kept == expected and vectors <= document_length and (vectors > BASE_DOCUMENT_VECTORS + 1 or expected <= 600)
    return {
        "document_tokens": tokens,
        "kept_tokens": kept,
        "vectors": vectors,
        "document_length": document_length,
        "max_seq_length": model[0].max_seq_length,
        "passed": ok,
    }


def _evaluation_model(
    *, model_path: str, query_length: int, document_length: int, dtype: str, trust_remote_code: bool
) -> tuple[Any, str, Any]:
    """The model loaded as the evaluation loads it, on this machine's device and dtype; the device and dtype."""
    import torch

    from ..model.load import load_colbert

    device = current_device()
    torch_dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if dtype == "auto" else getattr(torch, dtype))
    model = load_colbert(
        model_path,
        query_length=query_length,
        document_length=document_length,
        trust_remote_code=trust_remote_code,
        device=device,
    )
    if device == "cuda":
        model.to(torch_dtype)
    return model, device, torch_dtype


def _measure_splits(
    model: Any, *, root: Path, splits: list[str], settings: dict[str, Any], device: str, dtype: Any
) -> dict[str, dict[str, Any]]:
    """Each split's measurement (:func:`_measure_split`), logged as it completes."""
    per_split = {}
    for split in splits:
        per_split[split] = _measure_split(model, root=root, split=split, settings=settings, device=device, dtype=dtype)
        logger.info("preflight evaluate %s: %.0f document tokens/s", split, per_split[split]["document_tokens_per_s"])
    return per_split


def _longest_document_check(
    model: Any, *, per_split: dict[str, dict[str, Any]], overrides: dict[str, Any], document_length: int
) -> dict[str, Any]:
    """Check the longest sampled document of all splits at its split's length; each split keeps only its chars."""
    longest_split = max(per_split, key=lambda s: len(per_split[s]["longest_document"]))
    length = overrides.get(longest_split, {}).get("document_length", document_length)
    check = check_long_document(model, per_split[longest_split]["longest_document"], document_length=length)
    for measured in per_split.values():
        measured["longest_document_chars"] = len(measured.pop("longest_document"))
    return check | {"split": longest_split}


def measure_evaluation(
    *,
    model_path: str,
    bright_manifest: str,
    out_json: str,
    splits: list[str],
    query_length: int,
    document_length: int,
    overrides: dict[str, Any],
    encode_batch_size: int,
    documents_per_split: int,
    length_sample: int,
    seed: int,
    dtype: str = "auto",
    queries_per_split: int | None = None,
    query_template: str | None = None,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Per split: encode and score a seeded sample with the evaluation's functions; the longest document alone.

    ``query_template`` formats the queries (None: the card's, ``protocols.CARD_TEMPLATE``);
    only their token lengths matter here, up to ``query_length``.

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`~workflow_scripts.cli`): one
    option per parameter; the work is in :func:`_evaluation_model`, :func:`_measure_splits` and
    :func:`_longest_document_check`.

    Parameters
    ----------
    model_path
        The model measured: a checkpoint directory or its download manifest.
    bright_manifest
        The BRIGHT download manifest (its data is checked against it first).
    out_json
        Where the result is written.
    splits
        The BRIGHT splits measured, in order.
    query_length, document_length, overrides
        Token limits, and per-split overrides of them (``{"pony": {"query_length": 32}}``), as the evaluation's.
    encode_batch_size
        The encoder's batch size.
    documents_per_split
        Documents per split in the seeded sample that is encoded and scored.
    length_sample
        Documents per split in the (larger) seeded sample whose token lengths are counted.
    seed
        Seeds each split's samples (with the split's name).
    dtype
        ``auto`` (bfloat16), ``float32``, ``float16`` or ``bfloat16`` on CUDA; the CPU always runs float32.
    queries_per_split
        Queries per split in a seeded sample; None: all.
    query_template
        How a query is written (``{query}``, ``{domain}``); None: ``protocols.CARD_TEMPLATE``.
    trust_remote_code
        Allow a checkpoint that ships code.
    threads
        Torch's CPU threads; None or 0 leaves its default.

    Returns
    -------
    The result written to ``out_json``: ``model_path``, ``device``, ``dtype``, each split's measurement
    (``splits``), the ``long_document_check`` and the model's ``arch``.
    """
    from ..bright.protocols import CARD_TEMPLATE
    from ..sources.manifest import source_root

    set_threads(threads)
    root = source_root(bright_manifest)
    model, device, torch_dtype = _evaluation_model(
        model_path=model_path,
        query_length=query_length,
        document_length=document_length,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    settings = {
        "overrides": overrides,
        "query_length": query_length,
        "document_length": document_length,
        "query_template": query_template or CARD_TEMPLATE,
        "queries_per_split": queries_per_split,
        "seed": seed,
        "documents_per_split": documents_per_split,
        "length_sample": length_sample,
        "encode_batch_size": encode_batch_size,
    }
    per_split = _measure_splits(model, root=root, splits=splits, settings=settings, device=device, dtype=torch_dtype)
    check = _longest_document_check(model, per_split=per_split, overrides=overrides, document_length=document_length)
    result = {
        "model_path": model_path,
        "device": device,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "splits": per_split,
        "long_document_check": check,
        "arch": architecture(model),
    }
    write_json(out_json, result)
    return result
