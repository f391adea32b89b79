"""Chunked MaxSim for the loss against PyLate's own torch path: scores, loss, gradients, memory, backend choice."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pylate import losses, models
from pylate.losses.contrastive import extract_skiplist_mask
from pylate.scores import ColBERTScores, _flash_backend, _lik_backend
from torch.distributed._tools.mem_tracker import MemTracker

from workflow_scripts.errors import UserError
from workflow_scripts.train import loss_scores
from workflow_scripts.train.loss_scores import (
    check_finite,
    chunked_colbert_scores,
    loss_working_set_bytes,
    mask_has_holes,
    score_metric_for,
)

# The gathered layout of CachedContrastive(gather_across_devices=True): each rank's queries
# against every rank's documents, 2 columns (positive, negative).
LOCAL_BATCH, WORLD_SIZE, COLUMNS = 3, 2, 2
QUERY_TOKENS, DOCUMENT_TOKENS, DIM = 9, 23, 16


def pylate_torch(queries, documents, queries_mask=None, documents_mask=None):
    """PyLate's einsum path, forced (PYLATE_SCORES_BACKEND cannot swap it)."""
    return ColBERTScores()(queries, documents, queries_mask, documents_mask, backend="torch")


def ragged_batch(*, seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Unit token vectors; queries and documents right-padded to ragged lengths, documents'
    masks with skiplist holes, one document with no valid token."""
    g = torch.Generator().manual_seed(seed)
    documents = LOCAL_BATCH * WORLD_SIZE
    q_lengths = torch.randint(1, QUERY_TOKENS + 1, (LOCAL_BATCH,), generator=g)
    d_lengths = torch.randint(1, DOCUMENT_TOKENS + 1, (documents, COLUMNS), generator=g)
    d_lengths[0, 0] = DOCUMENT_TOKENS  # one full-length document, no padding at all
    attention = torch.arange(DOCUMENT_TOKENS) < d_lengths.unsqueeze(-1)
    skiplist = torch.rand(documents, COLUMNS, DOCUMENT_TOKENS, generator=g) < 0.25  # punctuation
    documents_mask = attention & ~skiplist
    documents_mask[-1, 1] = False  # a document with no valid token
    return {
        "queries": F.normalize(torch.randn(LOCAL_BATCH, QUERY_TOKENS, DIM, generator=g), dim=-1).to(dtype),
        "documents": F.normalize(torch.randn(documents, COLUMNS, DOCUMENT_TOKENS, DIM, generator=g), dim=-1).to(dtype),
        "queries_mask": torch.arange(QUERY_TOKENS) < q_lengths.unsqueeze(-1),
        "documents_mask": documents_mask,
    }


def loss_and_grads(score, batch: dict[str, torch.Tensor], *, rank: int) -> tuple[torch.Tensor, ...]:
    """CachedContrastive's loss on one rank (labels offset by rank, x world size, / local batch)
    and its gradients w.r.t. the query and document vectors."""
    queries = batch["queries"].detach().clone().requires_grad_()
    documents = batch["documents"].detach().clone().requires_grad_()
    scores = score(queries, documents, queries_mask=batch["queries_mask"], documents_mask=batch["documents_mask"])
    labels = torch.arange(LOCAL_BATCH) * COLUMNS + rank * LOCAL_BATCH * COLUMNS
    loss = F.cross_entropy(scores.float(), labels, reduction="sum") * WORLD_SIZE / LOCAL_BATCH
    loss.backward()
    return scores, loss, queries.grad, documents.grad


def test_the_batch_exercises_every_semantic_corner():
    """Holes, padding, an empty document, and query tokens whose every valid similarity is
    negative in a document with masked tokens (PyLate scores those 0: a masked token is a 0)."""
    batch = ragged_batch(seed=0)
    mask = batch["documents_mask"].reshape(-1, DOCUMENT_TOKENS)
    assert mask_has_holes(mask) and not bool(mask[-1].any())
    sims = torch.einsum("qsh,bth->qsbt", batch["queries"], batch["documents"].reshape(-1, DOCUMENT_TOKENS, DIM))
    valid_max = sims.masked_fill(~mask, -math.inf).amax(dim=-1)  # (q, Qt, B)
    has_masked = ~mask.all(dim=-1)
    assert bool(((valid_max < 0) & has_masked & mask.any(dim=-1)).any())


@pytest.mark.parametrize("chunk_size", [1, 4, 7, DOCUMENT_TOKENS, 64, None])
@pytest.mark.parametrize("rank", range(WORLD_SIZE))
def test_scores_loss_and_gradients_equal_pylates_torch_path(chunk_size, rank):
    """Ragged lengths, masks with holes, gathered candidates; chunk sizes that do and do not divide
    the document length, 1, and larger than it. fp32: equal up to the order of float sums."""
    batch = ragged_batch(seed=0)
    expected = loss_and_grads(pylate_torch, batch, rank=rank)
    got = loss_and_grads(lambda *a, **k: chunked_colbert_scores(*a, **k, chunk_size=chunk_size), batch, rank=rank)
    assert got[0].shape == (LOCAL_BATCH, LOCAL_BATCH * WORLD_SIZE * COLUMNS)
    for name, g, e in zip(("scores", "loss", "query grads", "document grads"), got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6, msg=name)


def test_an_empty_document_scores_zero_with_zero_gradient_as_in_pylate():
    batch = ragged_batch(seed=1)
    scores, _, _, doc_grads = loss_and_grads(chunked_colbert_scores, batch, rank=0)
    empty = (LOCAL_BATCH * WORLD_SIZE - 1) * COLUMNS + 1  # document -1, column 1, query-major
    assert torch.equal(scores[:, empty], torch.zeros(LOCAL_BATCH))
    assert torch.equal(doc_grads[-1, 1], torch.zeros(DOCUMENT_TOKENS, DIM))
    torch.testing.assert_close(scores, loss_and_grads(pylate_torch, batch, rank=0)[0])


def test_three_d_documents_give_colbert_scores_layout():
    """(B, Dt, H) documents, as ``colbert_scores`` takes them, without masks."""
    batch = ragged_batch(seed=2)
    documents = batch["documents"].reshape(-1, DOCUMENT_TOKENS, DIM)
    got = chunked_colbert_scores(batch["queries"], documents, chunk_size=5)
    from pylate.scores import colbert_scores

    torch.testing.assert_close(got, colbert_scores(batch["queries"], documents, backend="torch"))


def test_bf16_is_as_close_to_the_exact_result_as_pylates_bf16():
    """bf16 keeps 8 bits of mantissa: each similarity is rounded to ~0.4 % and a near-tie can pick
    another argmax, so neither path equals the fp64 result. The chunked one must be as close to it
    as PyLate's own bf16 path (within 10 %), and close to PyLate's bf16 output itself."""
    batch = ragged_batch(seed=3)
    exact = loss_and_grads(pylate_torch, {**batch, **_as(batch, torch.float64)}, rank=1)
    bf16 = _as(batch, torch.bfloat16)
    pylate_bf16 = loss_and_grads(pylate_torch, {**batch, **bf16}, rank=1)
    chunked_bf16 = loss_and_grads(
        lambda *a, **k: chunked_colbert_scores(*a, **k, chunk_size=6), {**batch, **bf16}, rank=1
    )
    assert chunked_bf16[0].dtype == torch.bfloat16 and chunked_bf16[3].dtype == torch.bfloat16
    for name, c, p, e in zip(("scores", "loss", "query grads", "document grads"), chunked_bf16, pylate_bf16, exact):
        c, p, e = c.double(), p.double(), e.double()
        assert (c - e).norm() <= 1.1 * (p - e).norm() + 1e-6, name
        torch.testing.assert_close(c, p, rtol=2e-2, atol=2e-2, msg=name)


def test_under_bf16_autocast_it_follows_pylates_16_bit_gemm():
    """fp32 vectors under autocast: both GEMMs run in bf16, so the scores are the same bf16 numbers."""
    batch = ragged_batch(seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = loss_and_grads(pylate_torch, batch, rank=0)
        got = loss_and_grads(lambda *a, **k: chunked_colbert_scores(*a, **k, chunk_size=5), batch, rank=0)
    assert got[0].dtype == expected[0].dtype == torch.bfloat16
    torch.testing.assert_close(got[0], expected[0])
    for name, g, e in zip(("query grads", "document grads"), got[2:], expected[2:]):
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2, msg=name)


def _as(batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The batch's vectors (bf16-rounded first, so every dtype sees the same numbers) in ``dtype``."""
    return {k: batch[k].to(torch.bfloat16).to(dtype) for k in ("queries", "documents")}


def test_gradcheck_in_float64():
    g = torch.Generator().manual_seed(4)
    queries = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    documents = torch.randn(3, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    queries_mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    documents_mask = torch.tensor([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda q, d: chunked_colbert_scores(q, d, queries_mask, documents_mask, chunk_size=2), (queries, documents)
    )


def test_nan_spreads_to_the_score_and_is_refused_in_one_line():
    """A NaN vector (e.g. a fully masked attention row on CUDA) must reach the score, as in
    PyLate's max, even when it is not in the first chunk, so check_finite can name the step."""
    batch = ragged_batch(seed=0)
    batch["documents"][2, 0, DOCUMENT_TOKENS - 1] = math.nan
    scores = chunked_colbert_scores(batch["queries"], batch["documents"], chunk_size=4)
    expected = pylate_torch(batch["queries"], batch["documents"])
    assert torch.equal(scores.isnan(), expected.isnan()) and bool(scores.isnan().any())
    message = (
        f"^train stage1 step 12: {LOCAL_BATCH} of {scores.numel()} scores are not finite \\({LOCAL_BATCH} NaN, 0 inf\\)"
    )
    with pytest.raises(UserError, match=message):
        check_finite(scores, what="train stage1 step 12")
    check_finite(expected[~expected.isnan()], what="train stage1 step 12")


def test_cached_contrastive_with_chunked_gives_torchs_loss_and_parameter_gradients(demo_assets):
    """The real loss on the demo's real model: the punctuation skiplist punches holes in the
    document masks; GradCache's second forward and its parameter gradients match."""
    model = models.ColBERT(str(demo_assets / "base-model"), device="cpu")
    queries = ["what do bees eat?", "why is the sky blue, at noon?", "how do magnets work"]
    positives = ["Bees eat nectar, pollen; and honey.", "Rayleigh scattering: blue light scatters more.", "Spins."]
    negatives = ["The moon is made of rock.", "Cats sleep, a lot, every day!", "Water boils at 100 C, at sea level."]
    features = [
        model.tokenize(queries, is_query=True),
        model.tokenize(positives, is_query=False, pad=True),
        model.tokenize(negatives, is_query=False, pad=True),
    ]
    masks = extract_skiplist_mask(sentence_features=features, skiplist=model.skiplist)
    assert mask_has_holes(masks[1]) and mask_has_holes(masks[2])
    results = {}
    for backend in ("torch", "chunked"):
        score, used = score_metric_for(backend, device="cpu", masks_have_holes=True, chunk_size=3)
        loss_fn = losses.CachedContrastive(model=model, score_metric=score, mini_batch_size=2, score_mini_batch_size=2)
        model.zero_grad()
        torch.manual_seed(0)
        loss = loss_fn(features)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results[used] = (loss.detach(), grads)
    assert len(results["chunked"][1]) == len(results["torch"][1]) > 0
    torch.testing.assert_close(results["chunked"][0], results["torch"][0], rtol=1e-5, atol=1e-6)
    for got, expected in zip(results["chunked"][1], results["torch"][1]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


# --- memory -------------------------------------------------------------------------------

MEMORY_SHAPE = dict(queries=4, candidates=16, query_tokens=32, dim=32)
MEMORY_CHUNK = 8


def measured_peak(backend: str, *, document_tokens: int, dtype: torch.dtype = torch.float32) -> int:
    """Peak bytes (torch's MemTracker: every tensor storage alive) of one loss step, scores ->
    cross-entropy -> backward, beyond its inputs."""
    shape = MEMORY_SHAPE
    g = torch.Generator().manual_seed(0)
    queries = torch.randn(shape["queries"], shape["query_tokens"], shape["dim"], generator=g).to(dtype).requires_grad_()
    documents = torch.randn(shape["candidates"] // COLUMNS, COLUMNS, document_tokens, shape["dim"], generator=g)
    documents = documents.to(dtype).requires_grad_()
    queries_mask = torch.ones(queries.shape[:2], dtype=torch.bool)
    documents_mask = torch.rand(documents.shape[:3], generator=g) > 0.2
    labels = torch.arange(shape["queries"]) * COLUMNS
    inputs = (queries, documents, queries_mask, documents_mask, labels)
    tracker = MemTracker()
    tracker.track_external(*inputs)
    score = pylate_torch if backend == "torch" else partial_chunked
    with tracker:
        scores = score(queries, documents, queries_mask=queries_mask, documents_mask=documents_mask)
        F.cross_entropy(scores.float(), labels, reduction="sum").backward()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    return peak - sum(t.numel() * t.element_size() for t in inputs)


def partial_chunked(*args, **kwargs):
    return chunked_colbert_scores(*args, **kwargs, chunk_size=MEMORY_CHUNK)


def modelled(backend: str, *, document_tokens: int, bytes_per_value: int = 4) -> int:
    return loss_working_set_bytes(
        backend,
        document_tokens=document_tokens,
        chunk_size=MEMORY_CHUNK,
        bytes_per_value=bytes_per_value,
        columns=COLUMNS,
        **MEMORY_SHAPE,
    )


@pytest.fixture(scope="module")
def peaks() -> dict[tuple[str, int], int]:
    return {(b, n): measured_peak(b, document_tokens=n) for b in ("torch", "chunked") for n in (64, 256, 1024)}


def test_chunked_memory_does_not_grow_with_document_tokens_beyond_the_documents_gradient(peaks):
    """What grows with the document length must be the candidates' own gradient (any backend
    returns it); the rest is the chunk x candidates x query tokens working set. PyLate's path
    grows with the (queries, candidates, query tokens, document tokens) tensor."""
    shape = MEMORY_SHAPE
    lengths = sorted({n for _, n in peaks})
    beyond_gradient = [peaks["chunked", n] - shape["candidates"] * n * shape["dim"] * 4 for n in lengths]
    assert max(beyond_gradient) <= 1.05 * min(beyond_gradient)
    sims = [shape["queries"] * shape["candidates"] * shape["query_tokens"] * n * 4 for n in lengths]
    for n, s in zip(lengths, sims):
        assert peaks["torch", n] >= s  # at least the similarity tensor
    assert peaks["chunked", lengths[-1]] < sims[-1]  # never held it


def test_working_set_model_agrees_with_the_measurement(peaks):
    for (backend, n), peak in peaks.items():
        assert modelled(backend, document_tokens=n) == pytest.approx(peak, rel=0.05), (backend, n)


# --- backend choice -------------------------------------------------------------------------


@pytest.fixture()
def kernels(monkeypatch):
    """Pretend late-interaction-kernels / flash-maxsim are installed (the kernels cannot run here)."""
    installed = {"lik": False, "flash": False}
    monkeypatch.setattr(_lik_backend, "is_available", lambda: installed["lik"])
    monkeypatch.setattr(_flash_backend, "is_available", lambda: installed["flash"])
    return installed


@pytest.mark.parametrize(
    ("lik", "flash", "device", "holes"),
    [
        (False, False, "cuda:0", True),
        (True, True, "cuda:0", True),
        (True, False, "cuda", False),
        (False, True, "cuda:1", False),  # even prefix masks: padding is masked, flash drops it
        (True, True, "cpu", False),
    ],
)
def test_auto_never_picks_a_kernel_that_changes_the_loss(kernels, lik, flash, device, holes):
    """Both kernels drop masked tokens where PyLate's loss counts them as similarity 0 (the
    zero floor test_the_batch_exercises_every_semantic_corner checks): installed or not,
    ``auto`` trains with ``chunked``."""
    kernels.update(lik=lik, flash=flash)
    _, used = score_metric_for("auto", device=device, masks_have_holes=holes)
    assert used == "chunked"


def test_explicit_backends(kernels):
    assert score_metric_for("chunked", device="cpu", masks_have_holes=True)[1] == "chunked"
    assert score_metric_for("torch", device="cpu", masks_have_holes=True)[1] == "torch"
    kernels.update(lik=True, flash=True)
    assert score_metric_for("lik", device="cuda:0", masks_have_holes=True)[1] == "lik"
    assert score_metric_for("flash", device="cuda:0", masks_have_holes=False)[1] == "flash"


@pytest.mark.parametrize(
    ("backend", "installed", "device", "holes", "message"),
    [
        ("lik", False, "cuda:0", True, "lik needs late-interaction-kernels, which is not installed"),
        ("flash", False, "cuda:0", False, "flash needs flash-maxsim, which is not installed"),
        ("lik", True, "cpu", True, r"lik \(late-interaction-kernels\) needs a CUDA device; training runs on cpu"),
        ("flash", True, "cpu", False, "needs a CUDA device"),
        ("flash", True, "cuda:0", True, "flash turns document masks into prefix lengths"),
        ("maxsim", True, "cpu", False, "'maxsim' is not one of auto, chunked, torch, lik, flash"),
    ],
)
def test_impossible_backends_are_refused_in_one_line(kernels, backend, installed, device, holes, message):
    kernels.update(lik=installed, flash=installed)
    with pytest.raises(UserError, match=message) as refused:
        score_metric_for(backend, device=device, masks_have_holes=holes)
    assert str(refused.value).startswith("train.maxsim_backend: ") and "\n" not in str(refused.value)


def test_flash_refuses_masks_with_holes_at_call_time(kernels):
    """Even if the config said there would be none: the mask itself is checked before any kernel."""
    kernels.update(flash=True)
    score, _ = score_metric_for("flash", device="cuda:0", masks_have_holes=False)
    batch = ragged_batch(seed=0)
    with pytest.raises(UserError, match="prefix lengths"):
        score(batch["queries"], batch["documents"], batch["queries_mask"], batch["documents_mask"])


def test_torch_backend_ignores_pylates_environment_override(monkeypatch):
    monkeypatch.setenv("PYLATE_SCORES_BACKEND", "lik")  # would raise on CPU if it were read
    score, used = score_metric_for("torch", device="cpu", masks_have_holes=True)
    batch = ragged_batch(seed=0)
    torch.testing.assert_close(score(**_args(batch)), chunked_colbert_scores(**_args(batch)))
    assert used == "torch" and loss_scores.BACKENDS[0] == "auto"


def _args(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "queries_embeddings": batch["queries"],
        "documents_embeddings": batch["documents"],
        "queries_mask": batch["queries_mask"],
        "documents_mask": batch["documents_mask"],
    }


@pytest.mark.parametrize("backend", ["torch", "chunked"])
def test_working_set_model_agrees_in_bf16(backend):
    """16-bit vectors: the chunked backward sums in fp32 and casts back, a term of its own."""
    peak = measured_peak(backend, document_tokens=96, dtype=torch.bfloat16)
    assert modelled(backend, document_tokens=96, bytes_per_value=2) == pytest.approx(peak, rel=0.05)
