"""Exact ColBERT MaxSim for the training loss, in bounded memory; the backend choice; a finiteness check.

PyLate's torch ``colbert_scores`` makes the whole (queries, documents, query tokens, document
tokens) similarity tensor, and a masked copy, for every chunk of queries: at the card's shape
(32 queries x 2,048 documents of a column x 256 x 2,048 tokens) that is 128 GiB per copy in fp32.
:func:`chunked_colbert_scores` gives the same scores and the same gradients without it: a custom
autograd function walks the document tokens in chunks, keeps the running max of each (query,
document, query token) and where it was found (an int32 argmax), and its backward sends each
gradient through that argmax to the query vector and to the one document vector it chose.
Its memory is one chunk's similarities (queries x candidates x query tokens x ``chunk_size``),
the argmax and the documents' gradient it returns (as every backend does), whatever the document
length (:func:`loss_working_set_bytes`, ``benchmarks/bench_loss_memory.py``).

Semantics are PyLate's torch path exactly (``tests/test_loss_scores.py`` compares scores, loss
and gradients): similarities are *multiplied* by the document mask (attention AND skiplist, so a
mask may have holes) before the max, so a masked token counts as similarity 0, not as absent: a
query token whose every real similarity is negative scores 0 in a document that has any masked
token, and a document with no valid token scores 0 with zero gradient. The query mask multiplies
each query token's max (PyLate multiplies before the max; the same for 0/1 masks).

How the GradCache loss uses this module (one call per chunk of queries)::

    score, used = score_metric_for(backend, device="cuda:0", masks_have_holes=bool(skiplist))
    scores = score(queries, documents, queries_mask=q_mask, documents_mask=d_mask)
    #   queries (q, Qt, H), documents (D, N, Dt, H) stacked columns -> scores (q, D * N),
    #   query-major as PyLate's ColBERTScores (the positive of query i at column i * N);
    #   3-D documents (B, Dt, H) -> (q, B), as colbert_scores.
    check_finite(scores, what=f"train stage1 step {step}")  # one-line UserError on NaN/inf

Backends (``train.maxsim_backend``): ``chunked`` (this module), ``torch`` (PyLate's einsum,
forced with ``backend="torch"`` so ``PYLATE_SCORES_BACKEND`` cannot swap it), ``lik``
(late-interaction-kernels) and ``flash`` (flash-maxsim) through PyLate 1.6's own wrappers, and
``auto``. Both kernels drop a masked token from the max (-inf) where PyLate's torch path counts
it as 0: they differ from ``torch``/``chunked`` only for a query token whose every valid
similarity is negative, in a document with masked tokens.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial

import torch

from ..errors import UserError

__all__ = [
    "BACKENDS",
    "DEFAULT_BUDGET_BYTES",
    "backward_block",
    "check_finite",
    "chunked_colbert_scores",
    "default_chunk_size",
    "loss_working_set_bytes",
    "mask_has_holes",
    "score_metric_for",
]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "chunked", "torch", "lik", "flash")
# Bytes of one chunk's similarities when chunk_size is not given: large enough for GEMMs near
# peak on a GPU (32 queries x 256 tokens x 4,096 candidates x 8 tokens in fp32 = 1 GiB),
# small next to the 80 GiB the card's shape has to share with the model and its activations.
DEFAULT_BUDGET_BYTES = 1 << 30
Scorer = Callable[..., torch.Tensor]


def default_chunk_size(
    *,
    queries: int,
    candidates: int,
    query_tokens: int,
    document_tokens: int,
    bytes_per_value: int,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> int:
    """Document tokens per chunk so that one chunk's similarities fit ``budget_bytes``.

    Parameters
    ----------
    queries, candidates
        Queries scored at once, and the candidate documents each one is scored against.
    query_tokens, document_tokens
        Tokens of a query and of a document, padding included.
    bytes_per_value
        Bytes of one similarity: the documents' element size (4 in fp32, 2 in bf16).
    budget_bytes
        The most one chunk's (queries, candidates, query tokens, chunk) similarities may take.

    Returns
    -------
    Between 1 and ``document_tokens``.

    Examples
    --------
    >>> default_chunk_size(queries=32, candidates=4096, query_tokens=256, document_tokens=2048, bytes_per_value=4)
    8
    >>> default_chunk_size(queries=2, candidates=4, query_tokens=8, document_tokens=30, bytes_per_value=4)
    30
    """
    per_token = max(1, queries * candidates * query_tokens * bytes_per_value)
    return max(1, min(document_tokens, budget_bytes // per_token))


def mask_has_holes(mask: torch.Tensor | None) -> bool:
    """Whether some row of a 0/1 token mask is not a prefix (a masked token before a valid one).

    Parameters
    ----------
    mask
        A (..., tokens) mask, 0/1 or bool; None (no mask) has no holes.

    Examples
    --------
    >>> mask_has_holes(torch.tensor([[1, 1, 0], [1, 0, 0]]))
    False
    >>> mask_has_holes(torch.tensor([[1, 0, 1]]))
    True
    """
    if mask is None:
        return False
    valid = (mask != 0).to(torch.int8)
    return bool((valid[..., 1:] > valid[..., :-1]).any())


def chunked_colbert_scores(
    queries_embeddings: torch.Tensor,
    documents_embeddings: torch.Tensor,
    queries_mask: torch.Tensor | None = None,
    documents_mask: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """ColBERT scores as PyLate's torch path gives them, without the 4-D similarity tensor.

    Parameters
    ----------
    queries_embeddings
        Shape (queries, query tokens, dim).
    documents_embeddings
        Shape (documents, document tokens, dim) as for ``colbert_scores``, or (documents,
        columns, document tokens, dim) as ``CachedContrastive`` passes to its ``score_metric``.
    queries_mask
        0/1 or bool, shape (queries, query tokens); ``None``: every token counts.
    documents_mask
        0/1 or bool, shape (documents[, columns], document tokens): attention AND skiplist.
    chunk_size
        Document tokens per step; ``None``: :func:`default_chunk_size`. Memory grows with it;
        the result does not depend on it (each max and its argmax are exact, ties aside).

    Returns
    -------
    torch.Tensor
        (queries, documents), or (queries, documents * columns) query-major, in the inputs' dtype.

    Examples
    --------
    One query of two tokens, two documents of two tokens; the second document's last token is
    masked, so it counts as a 0 similarity (PyLate's semantics): the first query token gets 0 there, not -3.

    >>> q = torch.tensor([[[1.0], [-1.0]]])
    >>> d = torch.tensor([[[2.0], [0.5]], [[-3.0], [-1.0]]])
    >>> chunked_colbert_scores(q, d, documents_mask=torch.tensor([[1, 1], [1, 0]]), chunk_size=1)
    tensor([[1.5000, 3.0000]])
    """
    queries = torch.as_tensor(queries_embeddings)
    documents = torch.as_tensor(documents_embeddings)
    if documents.dim() == 4:  # (D, N, Dt, H) -> (D * N, Dt, H): row d * N + k is column k of document d
        documents = documents.reshape(-1, *documents.shape[2:])
        documents_mask = None if documents_mask is None else documents_mask.reshape(documents.shape[:2])
    _check_shapes(queries=queries, documents=documents, queries_mask=queries_mask, documents_mask=documents_mask)
    if chunk_size is None:
        chunk_size = default_chunk_size(
            queries=queries.shape[0],
            candidates=documents.shape[0],
            query_tokens=queries.shape[1],
            document_tokens=documents.shape[1],
            bytes_per_value=documents.element_size(),
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _ChunkedMaxSim.apply(queries, documents, queries_mask, documents_mask, int(chunk_size))


def _check_shapes(
    *,
    queries: torch.Tensor,
    documents: torch.Tensor,
    queries_mask: torch.Tensor | None,
    documents_mask: torch.Tensor | None,
) -> None:
    """One-line ``ValueError`` unless queries (q, Qt, H), documents (B, Dt, H) and masks agree."""
    if queries.dim() != 3 or documents.dim() != 3 or queries.shape[-1] != documents.shape[-1]:
        raise ValueError(f"MaxSim: queries {tuple(queries.shape)} and documents {tuple(documents.shape)} do not match")
    if documents.shape[1] == 0:
        raise ValueError("MaxSim: documents have 0 tokens (PyLate's max over no token fails too)")
    if queries.dtype != documents.dtype:
        raise ValueError(f"MaxSim: queries are {queries.dtype}, documents {documents.dtype}")
    for name, mask, want in (("queries", queries_mask, queries), ("documents", documents_mask, documents)):
        if mask is not None and tuple(mask.shape) != tuple(want.shape[:2]):
            raise ValueError(f"MaxSim: {name}_mask is {tuple(mask.shape)}, expected {tuple(want.shape[:2])}")


class _ChunkedMaxSim(torch.autograd.Function):
    """sum_s max_t <q_s, d_t> * mask_t, over document-token chunks; backward through the argmax."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        queries: torch.Tensor,  # (q, Qt, H)
        documents: torch.Tensor,  # (B, Dt, H)
        queries_mask: torch.Tensor | None,  # (q, Qt)
        documents_mask: torch.Tensor | None,  # (B, Dt)
        chunk_size: int,
    ) -> torch.Tensor:
        best, argmax = _running_max(
            queries=queries, documents=documents, documents_mask=documents_mask, chunk_size=chunk_size
        )  # (q, Qt, B) each
        if queries_mask is not None:
            best = best * queries_mask.to(best.dtype).unsqueeze(-1)
        ctx.save_for_backward(queries, documents, queries_mask, documents_mask, argmax)
        ctx.chunk_size = chunk_size
        return best.sum(dim=1)  # (q, B)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_scores: torch.Tensor) -> tuple:
        queries, documents, queries_mask, documents_mask, argmax = ctx.saved_tensors
        grad_q, grad_d = _grads_through_argmax(
            grad_scores=grad_scores,
            queries=queries,
            documents=documents,
            queries_mask=queries_mask,
            documents_mask=documents_mask,
            argmax=argmax,
            block=backward_block(candidates=documents.shape[0], chunk_size=ctx.chunk_size, dim=queries.shape[-1]),
            need_queries=ctx.needs_input_grad[0],
            need_documents=ctx.needs_input_grad[1],
        )
        return grad_q, grad_d, None, None, None


def backward_block(*, candidates: int, chunk_size: int, dim: int) -> int:
    """Candidates per backward step: their (q, Qt, block, dim) gather is as big as a forward chunk.

    Parameters
    ----------
    candidates
        Candidate documents scored (the B of (q, Qt, B)).
    chunk_size
        Document tokens per forward chunk.
    dim
        Dimension of a token vector.

    Returns
    -------
    ``ceil(candidates * chunk_size / dim)``, between 1 and ``candidates``.

    Examples
    --------
    >>> backward_block(candidates=4096, chunk_size=8, dim=128)
    256
    """
    return max(1, min(candidates, math.ceil(candidates * chunk_size / dim)))


def _running_max(
    *, queries: torch.Tensor, documents: torch.Tensor, documents_mask: torch.Tensor | None, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Max over document tokens of the masked similarities and its int32 argmax, both (q, Qt, B).

    The per-chunk max and the running state live in buffers updated in place, so a step holds
    one chunk's similarities plus a few (q, Qt, B) tensors (:func:`loss_working_set_bytes`).
    """
    n_q, q_tokens, dim = queries.shape
    n_docs, d_tokens, _ = documents.shape
    flat_queries = queries.reshape(n_q * q_tokens, dim)
    values = where = best = argmax = None
    for begin in range(0, d_tokens, chunk_size):
        end = min(d_tokens, begin + chunk_size)
        block = documents[:, begin:end].reshape(n_docs * (end - begin), dim)
        sims = (flat_queries @ block.T).view(n_q, q_tokens, n_docs, end - begin)
        if documents_mask is not None:  # multiply, as PyLate does: a masked token is a 0 similarity
            sims.mul_(documents_mask[:, begin:end].to(sims.dtype))
        if values is None:  # in the similarities' dtype: under autocast the GEMM may be 16-bit, as PyLate's einsum
            values = torch.empty(sims.shape[:-1], dtype=sims.dtype, device=sims.device)
            where = torch.empty(sims.shape[:-1], dtype=torch.int64, device=sims.device)
        torch.max(sims, dim=-1, out=(values, where))
        del sims, block
        if best is None:
            best, argmax = values.clone(), where.to(torch.int32)
            continue
        take = torch.gt(values, best).logical_or_(values.isnan())  # NaN wins, as in torch.max: check_finite sees it
        torch.where(take, values, best, out=best)
        torch.where(take, where.add_(begin).to(torch.int32), argmax, out=argmax)
    return best, argmax


def _grads_through_argmax(
    *,
    grad_scores: torch.Tensor,  # (q, B)
    queries: torch.Tensor,  # (q, Qt, H)
    documents: torch.Tensor,  # (B, Dt, H)
    queries_mask: torch.Tensor | None,
    documents_mask: torch.Tensor | None,
    argmax: torch.Tensor,  # (q, Qt, B) int32
    block: int,
    need_queries: bool,
    need_documents: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """d score[i, b] = sum_s m_q[i, s] m_d[b, t*] (<dq_s, d_t*> + <q_s, dd_t*>), t* = argmax[i, s, b].

    Walks ``block`` candidates at a time. Accumulates in fp32 for 16-bit inputs: one document
    token can be the argmax of thousands of (query, query token) pairs, and a bf16 running sum of
    thousands of terms loses digits (PyLate's GEMM backward accumulates in fp32 too).
    """
    n_q, q_tokens, dim = queries.shape
    n_docs, d_tokens, _ = documents.shape
    acc = torch.float32 if documents.element_size() < 4 else documents.dtype
    flat_docs = documents.reshape(n_docs * d_tokens, dim)
    flat_mask = None if documents_mask is None else documents_mask.reshape(-1)
    grad_q = torch.zeros(n_q * q_tokens, dim, dtype=acc, device=queries.device) if need_queries else None
    grad_d = torch.zeros(n_docs * d_tokens, dim, dtype=acc, device=documents.device) if need_documents else None
    queries_acc = queries.to(acc).unsqueeze(2) if need_documents else None  # (q, Qt, 1, H)
    for begin in range(0, n_docs, block):
        end = min(n_docs, begin + block)
        offsets = torch.arange(begin, end, device=argmax.device, dtype=torch.int64) * d_tokens
        rows = argmax[:, :, begin:end].to(torch.int64).add_(offsets)  # (q, Qt, b): rows of flat_docs
        w = grad_scores[:, begin:end].to(acc).unsqueeze(1)  # (q, 1, b)
        if queries_mask is not None:
            w = w * queries_mask.to(acc).unsqueeze(-1)
        if flat_mask is not None:
            w = w * flat_mask[rows].to(acc)
        w = w.expand(n_q, q_tokens, end - begin)
        if grad_q is not None:  # (q*Qt, 1, b) @ (q*Qt, b, H)
            picked = flat_docs[rows.reshape(-1)].view(n_q * q_tokens, end - begin, dim)
            grad_q += torch.bmm(w.reshape(n_q * q_tokens, 1, end - begin).to(picked.dtype), picked).squeeze(1)
            del picked
        if grad_d is not None:
            grad_d.index_add_(0, rows.reshape(-1), (w.unsqueeze(-1) * queries_acc).reshape(-1, dim))
    grad_q = None if grad_q is None else grad_q.view(n_q, q_tokens, dim).to(queries.dtype)
    grad_d = None if grad_d is None else grad_d.view(n_docs, d_tokens, dim).to(documents.dtype)
    return grad_q, grad_d


def check_finite(scores: torch.Tensor, *, what: str) -> None:
    """Raise a one-line :class:`~workflow_scripts.errors.UserError` naming ``what`` if any score is NaN or infinite.

    Parameters
    ----------
    scores
        Any score tensor (a loss chunk's (q, candidates) scores, an evaluation block).
    what
        What is being scored, for the message: ``"train stage1 step 12"``, ``"evaluate biology"``.

    Examples
    --------
    >>> check_finite(torch.tensor([1.0, 2.0]), what="train stage1 step 3")
    >>> check_finite(torch.tensor([1.0, float("nan"), float("inf")]), what="train stage1 step 3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    workflow_scripts.errors.UserError: train stage1 step 3: 2 of 3 scores are not finite (1 NaN, 1 inf): ...
    """
    finite = torch.isfinite(scores)
    if bool(finite.all()):
        return
    bad = scores[~finite]
    nan = int(bad.isnan().sum())
    raise UserError(
        f"{what}: {bad.numel()} of {scores.numel()} scores are not finite ({nan} NaN, {bad.numel() - nan} inf):"
        " the token vectors reaching MaxSim are not finite (e.g. an attention row with every key masked)"
    )


def score_metric_for(
    backend: str, *, device: str, masks_have_holes: bool, chunk_size: int | None = None
) -> tuple[Scorer, str]:
    """The ``score_metric`` for ``CachedContrastive`` that ``train.maxsim_backend`` names, and its name.

    Parameters
    ----------
    backend
        ``auto``: ``chunked`` (no fused kernel is exact for the loss's masks: :func:`_auto_backend`).
        ``chunked``: this module, any device. ``torch``: PyLate's einsum path. ``lik``, ``flash``: those kernels
        through PyLate's wrappers, refused (one line) where they cannot run or would be wrong.
    device
        The device training runs on (``"cuda:0"``, ``"cpu"``).
    masks_have_holes
        Whether document masks may have holes: true when the skiplist is non-empty.
    chunk_size
        For ``chunked`` only: document tokens per step (``None``: :func:`default_chunk_size`).

    Returns
    -------
    tuple
        A callable ``(queries, documents, queries_mask=, documents_mask=) -> scores`` taking
        (D, N, Dt, H) stacked columns like PyLate's ``ColBERTScores`` (or (B, Dt, H) like
        ``colbert_scores``), and the backend it uses.

    Examples
    --------
    >>> score, used = score_metric_for("auto", device="cpu", masks_have_holes=True)
    >>> used
    'chunked'
    >>> score_metric_for("flash", device="cuda", masks_have_holes=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    workflow_scripts.errors.UserError: train.maxsim_backend: flash turns document masks into prefix lengths ...
    """
    if backend not in BACKENDS:
        raise UserError(f"train.maxsim_backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    on_cuda = torch.device(device).type == "cuda"
    if backend == "auto":
        backend = _auto_backend(on_cuda=on_cuda, masks_have_holes=masks_have_holes)
        logger.info(
            "train.maxsim_backend auto -> %s (device %s, masks with holes: %s)", backend, device, masks_have_holes
        )
    if backend == "chunked":
        return partial(chunked_colbert_scores, chunk_size=chunk_size), "chunked"
    if backend == "torch":
        return partial(_pylate_scores, backend="torch"), "torch"
    _refuse_kernel(backend, on_cuda=on_cuda, device=device, masks_have_holes=masks_have_holes)
    if backend == "flash":
        return _prefix_masks_only, "flash"
    return partial(_pylate_scores, backend="lik"), "lik"


FLASH_HOLES = (
    "flash turns document masks into prefix lengths (mask.sum), which is wrong when the skiplist"
    " masks tokens inside a document: use chunked, lik or auto, or an empty skiplist"
)


def _auto_backend(*, on_cuda: bool, masks_have_holes: bool) -> str:
    """``chunked``: the one backend exact for the loss's masks on every device.

    A fused kernel would be picked where it is exact for these inputs, and neither is: both drop
    a masked token from the max (late-interaction-kernels sets it to -inf, flash-maxsim cuts at a
    prefix length) where PyLate's loss counts it as similarity 0, and every batch has masked
    tokens (padding, and the skiplist's holes). ``lik`` stays one explicit setting away.
    """
    del on_cuda, masks_have_holes  # the answer holds on every device and for every mask
    return "chunked"


def _kernel_installed(name: str) -> bool:
    """Whether PyLate 1.6 finds the kernel package ``name`` (``lik`` or ``flash``) and a CUDA device."""
    if name == "lik":
        from pylate.scores import _lik_backend as kernel
    else:
        from pylate.scores import _flash_backend as kernel
    return bool(kernel.is_available())


def _refuse_kernel(backend: str, *, on_cuda: bool, device: str, masks_have_holes: bool) -> None:
    """One-line :class:`~workflow_scripts.errors.UserError` where kernel ``backend`` was asked for but cannot run, or would be wrong."""
    package = {"lik": "late-interaction-kernels", "flash": "flash-maxsim"}[backend]
    if backend == "flash" and masks_have_holes:
        raise UserError(f"train.maxsim_backend: {FLASH_HOLES}")
    if not on_cuda:
        raise UserError(f"train.maxsim_backend: {backend} ({package}) needs a CUDA device; training runs on {device}")
    if not _kernel_installed(backend):
        raise UserError(f"train.maxsim_backend: {backend} needs {package}, which is not installed (or sees no GPU)")


def _pylate_scores(
    queries_embeddings: torch.Tensor,
    documents_embeddings: torch.Tensor,
    queries_mask: torch.Tensor | None = None,
    documents_mask: torch.Tensor | None = None,
    *,
    backend: str,
) -> torch.Tensor:
    """PyLate's own scorer with ``backend`` forced: ``ColBERTScores`` for 4-D documents, else ``colbert_scores``."""
    from pylate.scores import ColBERTScores, colbert_scores

    scorer = ColBERTScores() if documents_embeddings.dim() == 4 else colbert_scores
    return scorer(queries_embeddings, documents_embeddings, queries_mask, documents_mask, backend=backend)


def _prefix_masks_only(
    queries_embeddings: torch.Tensor,
    documents_embeddings: torch.Tensor,
    queries_mask: torch.Tensor | None = None,
    documents_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """PyLate's flash-maxsim path, after checking that every mask is a prefix (its lengths are exact)."""
    if mask_has_holes(documents_mask) or mask_has_holes(queries_mask):
        raise UserError(f"train.maxsim_backend: {FLASH_HOLES}")
    return _pylate_scores(queries_embeddings, documents_embeddings, queries_mask, documents_mask, backend="flash")


def loss_working_set_bytes(
    backend: str,
    *,
    queries: int,
    candidates: int,
    query_tokens: int,
    document_tokens: int,
    dim: int,
    chunk_size: int,
    bytes_per_value: int,
    columns: int = 2,
) -> int:
    """Peak bytes of one query chunk's scores and their backward, beyond the inputs.

    Counts what the score function allocates (similarities, running max and argmax, the
    gradients it returns for the queries and the candidates) on top of the embeddings and
    masks it is given; not the cross-entropy (a (queries, candidates) matrix) nor what
    autograd does with the returned gradients (accumulating them into the cached embeddings'
    ``.grad``, a term of its own).

    Parameters
    ----------
    backend
        ``chunked`` and ``torch`` are modelled op by op and checked against measurements
        (``benchmarks/bench_loss_memory.py``); ``lik``/``flash`` are an estimate from what the
        kernels keep (an argmax and the gradients), not measured (they need a GPU).
    queries, candidates, query_tokens, document_tokens, dim
        One chunk of queries (``score_mini_batch_size``) against all gathered candidates
        (columns x world size x per-device batch).
    chunk_size
        ``chunked``'s document tokens per step.
    bytes_per_value
        Of the token vectors reaching the loss: 4 under accelerate's bf16 autocast (fp32 outputs).
    columns
        Document columns (positive + negative: 2 here): PyLate's torch path scores one column's
        candidates at a time (:func:`_torch_working_set`).

    Examples
    --------
    The card's shape: 32 queries x 256 tokens against 2 columns x 8 GPUs x 256 documents x 2,048
    tokens, fp32 (GiB; the chunked figure is mostly the candidates' 4 GiB gradient):

    >>> shape = dict(queries=32, candidates=4096, query_tokens=256, document_tokens=2048, dim=128, bytes_per_value=4)
    >>> round(loss_working_set_bytes("torch", chunk_size=2048, **shape) / 2**30, 1)
    262.0
    >>> round(loss_working_set_bytes("chunked", chunk_size=8, **shape) / 2**30, 1)
    5.2
    """
    b = bytes_per_value
    if backend == "torch":
        return _torch_working_set(
            queries=queries,
            candidates=candidates,
            query_tokens=query_tokens,
            document_tokens=document_tokens,
            dim=dim,
            bytes_per_value=b,
            columns=columns,
        )
    n = queries * query_tokens * candidates  # one running max per (query, query token, candidate)
    grads = (candidates * document_tokens + queries * query_tokens) * dim * b  # the gradients returned
    if backend in ("lik", "flash"):
        return n * 4 + grads
    if backend != "chunked":
        raise ValueError(f"loss_working_set_bytes: unknown backend {backend!r} (resolve 'auto' first)")
    acc = max(b, 4)  # gradients accumulate in fp32 for 16-bit inputs
    chunk = min(chunk_size, document_tokens)
    forward = n * chunk * b + candidates * chunk * (dim + 1) * b + n * (2 * b + 18)
    m = queries * query_tokens * backward_block(candidates=candidates, chunk_size=chunk, dim=dim)
    accumulators = (candidates * document_tokens + 2 * queries * query_tokens) * dim * acc
    casts = grads if acc != b else 0  # the fp32 sums cast back to the inputs' dtype, after the last block
    backward = n * 4 + accumulators + max(m * (9 + 2 * acc) + m * dim * acc, casts)
    return max(forward, backward)


def _torch_working_set(
    *,
    queries: int,
    candidates: int,
    query_tokens: int,
    document_tokens: int,
    dim: int,
    bytes_per_value: int,
    columns: int,
) -> int:
    """PyLate's einsum path, column by column, as autograd runs it (matches the measured peak).

    Forward: einsum saves a copy of each column's documents (``docs``) and makes the similarity
    tensor (``sims``) and a masked copy. Backward, columns last first: max's zeros and scatter, the
    mask products and einsum's copy (two ``sims`` at a time), the column's gradient widened to all
    columns (``select_backward``), summed with the earlier columns' at the end.
    """
    per_column = math.ceil(candidates / columns)
    sims = queries * query_tokens * per_column * document_tokens * bytes_per_value
    column_docs = per_column * document_tokens * dim * bytes_per_value
    docs = columns * column_docs
    forward = docs + 2 * sims
    backward = max(
        (columns - i) * column_docs + (docs if i else 0) + max(2 * sims, sims + column_docs, docs + column_docs)
        for i in range(columns)
    )
    final_sum = 3 * docs if columns > 1 else 0
    return max(forward, backward, final_sum) + queries * query_tokens * dim * bytes_per_value
