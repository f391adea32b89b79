"""Exact ColBERT MaxSim scoring on CPU (and GPU): tiled GEMMs, each tile reduced while hot.

The score of a query against a document is ``sum over query tokens of max over document
tokens of <q, d>``. The similarities come from GEMMs, which run near the machine's peak; what
costs is everything around them. So:

- the work is cut into tiles of at most ``budget`` similarities (document tokens x at most
  ``QUERY_BLOCK`` query tokens), each made by one ``torch.mm`` into a buffer reused for
  every tile and reduced at once by ``torch.amax(out=...)`` while it is still in cache;
- one worker thread per core scores its share of the documents with single-threaded torch
  ops: no fork/join per op, and each core keeps its own tile;
- documents are sorted by length and packed once per block, each padded to the block's
  longest with copies of its own first token (a repeated token never changes a max): the
  block is a plain (tokens, dim) matrix, with no mask and no extra GEMM coordinate. A
  document longer than a tile is reduced slice by slice with a running max;
- the per-query sum over its tokens is one small GEMM against a 0/1 matrix.

The fp32 result equals a plain reference up to float rounding (the order of the sums).
``benchmarks/bench_evaluate.py`` measures the fraction of the fp32 GEMM peak reached and the
speed-up over the previous scorer, PyLate's ``rank.rerank`` and ``maxsim-cpu``.

``dtype="bfloat16"`` is an optional, approximate path for CPUs with native bf16 (AMX or
AVX512-BF16) and GPUs: the GEMM runs in bf16 (products accumulated in fp32, similarities
rounded to bf16), the sums in fp32. It is off by default; the benchmark prints its top-10
agreement and nDCG@10 against fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import torch

from ..errors import UserError

__all__ = ["DTYPES", "bf16_native", "maxsim_scores", "plan_blocks"]

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Similarities per tile (and at most per block's row of maxima). CPU: 2**21 (8 MiB fp32,
# 4096 document tokens x 512 query tokens) was the fastest of 2**17..2**22 on the development
# machine (2 MiB L2 per core, large L3), for 32- and 256-token queries alike, fp32 and bf16:
# 1 MiB tiles lost 10-20% to per-call overheads, 16 MiB ones to cache misses. GPU: large tiles,
# since there every call costs a kernel launch and memory is fast.
CPU_BUDGET = 1 << 21
GPU_BUDGET = 1 << 27
QUERY_BLOCK = 512  # query tokens per tile: wide enough for an efficient GEMM, short enough for tall tiles


def bf16_native(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bf16 natively (CPU: AMX or AVX512-BF16 via oneDNN).

    Parameters
    ----------
    device
        ``cpu``, ``cuda`` or a ``cuda:N`` device (CUDA: ``torch.cuda.is_bf16_supported()``).

    Examples
    --------
    >>> isinstance(bf16_native("cpu"), bool)
    True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # private helpers: a torch without them is treated as "not native"
        cpu = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    except AttributeError:
        return False
    return bool(cpu and torch.backends.mkldnn.is_available())


def maxsim_scores(
    queries: list[torch.Tensor],
    documents: list[torch.Tensor],
    *,
    dtype: str = "float32",
    budget: int | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """Exact ColBERT scores ``sum_q max_d <q, d>`` of every query against every document.

    Parameters
    ----------
    queries
        One tensor per query, shape (query tokens, dim); an empty query scores 0.
    documents
        One tensor per document, shape (document tokens, dim); an empty document scores -inf
        (a max over nothing), so it never ranks.
    dtype
        ``"float32"`` (exact, the default) or ``"bfloat16"`` (approximate, faster where the
        hardware has bf16 GEMMs; falls back to float32 with a warning where it has not).
    budget
        Most similarities (document tokens x query tokens) in one tile, per worker; None:
        the size measured fastest on CPU, large on GPU. Small values only cost speed.
    threads
        CPU workers, each scoring its share of the documents with single-threaded torch ops;
        None: ``torch.get_num_threads()``. The torch setting is restored on return.

    Returns
    -------
    Tensor of shape (queries, documents), float32, on the queries' device.

    Examples
    --------
    >>> q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    >>> d = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8], [-1.0, 0.0]])]
    >>> maxsim_scores(q, d)
    tensor([[1.0000, 1.4000]])
    >>> maxsim_scores(q, d, budget=1)  # one similarity per tile: same scores
    tensor([[1.0000, 1.4000]])
    >>> maxsim_scores(q, d, dtype="bfloat16").round(decimals=2)
    tensor([[1.0000, 1.4000]])
    """
    device = queries[0].device if queries else torch.device("cpu")
    compute = _compute_dtype(dtype, device)
    out = torch.full((len(queries), len(documents)), float("-inf"), dtype=torch.float32, device=device)
    if not queries or not documents:
        return out
    q_all = torch.cat(queries).to(device=device, dtype=compute)  # (Q tokens, dim)
    summer = _query_summer([len(q) for q in queries], device)  # (Q tokens, queries)
    budget = budget or (GPU_BUDGET if device.type == "cuda" else CPU_BUDGET)
    q_block = max(1, min(len(q_all), QUERY_BLOCK, budget))
    rows = max(1, budget // q_block)  # document tokens per tile
    # max_docs bounds each block's (docs, Q tokens) maxima too: 1-token documents would
    # otherwise fill a block by the thousands
    blocks = plan_blocks([len(d) for d in documents], rows=rows, max_docs=max(1, budget // max(1, len(q_all))))
    workers = min(threads or torch.get_num_threads(), len(blocks)) if device.type == "cpu" else 1
    parts = [blocks[w::workers] for w in range(workers)]  # sorted by length: interleaving balances the work
    score = partial(_score_blocks, documents, q_all, summer, out, q_block=q_block, rows=rows)
    if workers <= 1:
        score(blocks)
    else:
        with _one_thread_per_op(), ThreadPoolExecutor(workers) as pool:
            list(pool.map(score, parts))  # list(): re-raises a worker's exception here
    return out


def _score_blocks(
    documents: list[torch.Tensor],
    q_all: torch.Tensor,
    summer: torch.Tensor,
    out: torch.Tensor,
    blocks: list[tuple[list[int], int]],
    *,
    q_block: int,
    rows: int,
) -> None:
    """Score ``blocks`` into their columns of ``out`` (one worker's share), with its own buffers.

    The buffers are made once and reused by every block: fresh large allocations would cost
    page faults each time, and the tile must stay at one address to stay in cache.
    """
    if not blocks:
        return
    dim, dtype, device = q_all.shape[1], q_all.dtype, q_all.device
    tokens = max(len(i) * n for i, n in blocks)  # the largest block, padded
    pack = torch.empty(tokens * dim, dtype=dtype, device=device)
    tile = torch.empty(min(rows, tokens) * q_block, dtype=dtype, device=device)
    best = torch.empty(max(len(i) for i, _ in blocks) * len(q_all), dtype=dtype, device=device)
    for idx, longest in blocks:
        packed = _pack(documents, idx, longest, out=pack[: len(idx) * longest * dim])
        block_best = best[: len(idx) * len(q_all)].view(len(idx), len(q_all))  # (block docs, Q tokens)
        _block_max(packed, longest, q_all, q_block=q_block, rows=rows, tile=tile, out=block_best)
        out[:, idx] = (block_best.float() @ summer).T  # workers write disjoint columns


@contextmanager
def _one_thread_per_op() -> Iterator[None]:
    """torch ops single-threaded while one worker per core runs: each core keeps its own tile
    in its own L2 and no op pays a fork/join. The previous setting is restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The GEMM dtype for a ``dtype`` setting; bf16 without native support → float32, one warning.

    Examples
    --------
    >>> _compute_dtype("float32", torch.device("cpu"))
    torch.float32
    >>> _compute_dtype("fp8", torch.device("cpu"))
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: score dtype 'fp8' is not one of float32, bfloat16
    """
    if dtype not in DTYPES:
        raise UserError(f"score dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if DTYPES[dtype] == torch.bfloat16 and not bf16_native(device):
        logger.warning("bfloat16 scoring asked for, but %s has no native bf16 GEMM: scoring in float32", device)
        return torch.float32
    return DTYPES[dtype]


def _query_summer(lengths: list[int], device: torch.device) -> torch.Tensor:
    """0/1 matrix (Q tokens, queries): ``best @ summer`` sums each query's token maxima.

    Examples
    --------
    >>> _query_summer([2, 1], torch.device("cpu"))
    tensor([[1., 0.],
            [1., 0.],
            [0., 1.]])
    """
    owner = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    summer = torch.zeros(len(owner), len(lengths), dtype=torch.float32)
    summer[torch.arange(len(owner)), owner] = 1.0
    return summer.to(device)


def plan_blocks(lengths: list[int], *, rows: int, max_docs: int | None = None) -> list[tuple[list[int], int]]:
    """Group documents, shortest first, into blocks of at most ``rows`` padded tokens and
    ``max_docs`` documents.

    Each block is (document indices, longest length); every member is padded to the
    longest. A document longer than ``rows`` is a block of its own; empty ones are left out.

    Parameters
    ----------
    lengths
        Token count of each document, by document index.
    rows
        Most padded tokens per block (block documents x longest length).
    max_docs
        Most documents per block; None: no limit.

    Examples
    --------
    >>> plan_blocks([3, 0, 1, 5, 2], rows=6)
    [([2, 4], 2), ([0], 3), ([3], 5)]
    >>> plan_blocks([9, 1], rows=4)
    [([1], 1), ([0], 9)]
    >>> plan_blocks([1, 1, 1], rows=8, max_docs=2)
    [([0, 1], 1), ([2], 1)]
    """
    order = sorted((j for j, n in enumerate(lengths) if n), key=lengths.__getitem__)
    max_docs = max_docs or len(order)
    blocks, start = [], 0
    while start < len(order):
        # sorted ascending: the newest member is the longest, so grow while the padded block fits
        end = start + 1
        while end < len(order) and end - start < max_docs and (end - start + 1) * lengths[order[end]] <= rows:
            end += 1
        blocks.append((order[start:end], lengths[order[end - 1]]))
        start = end
    return blocks


def _pack(documents: list[torch.Tensor], idx: list[int], longest: int, *, out: torch.Tensor) -> torch.Tensor:
    """Documents ``idx`` as one (docs x longest, dim) matrix in ``out``, each padded with copies
    of its first token (a repeated token never changes a max): one copy, cast included.

    Examples
    --------
    >>> docs = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0], [5.0, 6.0]])]
    >>> _pack(docs, [0, 1], 2, out=torch.empty(8))
    tensor([[1., 2.],
            [1., 2.],
            [3., 4.],
            [5., 6.]])
    """
    parts = []
    for j in idx:
        doc = documents[j]
        parts.append(doc)
        if len(doc) < longest:
            parts.append(doc[:1].expand(longest - len(doc), -1))
    return torch.cat(parts, out=out.view(len(idx) * longest, -1))


def _block_max(
    packed: torch.Tensor,
    longest: int,
    q_all: torch.Tensor,
    *,
    q_block: int,
    rows: int,
    tile: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """Max over each document's tokens of its similarities to every query token, into ``out``.

    ``packed`` is (docs x longest, dim), ``out`` (docs, Q tokens). Tiles of at most ``rows``
    document tokens x ``q_block`` query tokens are made in ``tile`` and reduced at once; a
    document longer than ``rows`` (then alone in ``packed``) is reduced slice by slice with a
    running max.

    Examples
    --------
    >>> q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> doc = torch.tensor([[0.6, 0.8], [-1.0, 0.0], [0.0, 0.5]])
    >>> _block_max(doc, 3, q, q_block=1, rows=2, tile=torch.empty(2), out=torch.empty(1, 2))
    tensor([[0.6000, 0.8000]])
    """
    n_docs = len(packed) // longest
    slices = [(0, len(packed))] if longest <= rows else [(s, min(s + rows, longest)) for s in range(0, longest, rows)]
    for q0 in range(0, len(q_all), q_block):
        q, best = q_all[q0 : q0 + q_block], out[:, q0 : q0 + q_block]
        for k, (t0, t1) in enumerate(slices):
            sims = torch.mm(packed[t0:t1], q.T, out=tile[: (t1 - t0) * len(q)].view(t1 - t0, len(q)))
            if k == 0:  # (docs x tokens, q) -> (docs, q) while the tile is in cache
                torch.amax(sims.view(n_docs, -1, len(q)), dim=1, out=best)
            else:
                torch.maximum(best, sims.amax(dim=0, keepdim=True), out=best)
    return out
