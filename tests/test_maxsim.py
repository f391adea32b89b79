"""The blocked MaxSim scorer against a naive float64 reference (exact), and its bf16 path (close)."""

from __future__ import annotations

import logging

import pytest
import torch

from workflow_scripts.errors import UserError
from workflow_scripts.evaluate import maxsim
from workflow_scripts.evaluate.maxsim import CPU_BUDGET, QUERY_BLOCK, maxsim_scores, plan_blocks


def unit(g: torch.Generator, n: int, dim: int = 128) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)


def naive(queries: list[torch.Tensor], documents: list[torch.Tensor]) -> torch.Tensor:
    """sum_q max_d <q, d>, one pair at a time, in float64; an empty document scores -inf."""
    out = torch.empty(len(queries), len(documents), dtype=torch.float64)
    for i, q in enumerate(queries):
        for j, d in enumerate(documents):
            out[i, j] = (q.double() @ d.double().T).amax(dim=1).sum() if len(d) else float("-inf")
    return out


@pytest.fixture(scope="module")
def ragged():
    """Queries of 1..256 tokens (two at 256); documents of 1, 2, a few hundred and, longer
    than one default tile (CPU_BUDGET // QUERY_BLOCK tokens), 4,500 tokens."""
    g = torch.Generator().manual_seed(0)
    q_lens = [256, 1, 32, 256, 17, 200]
    d_lens = [1, 2, 1, 300, 4500, 7, 64, 511, 512, 513, 1, 90, *torch.randint(1, 400, (28,), generator=g).tolist()]
    assert max(d_lens) > CPU_BUDGET // QUERY_BLOCK
    return [unit(g, n) for n in q_lens], [unit(g, n) for n in d_lens]


@pytest.mark.parametrize("budget", [None, 4096, 1 << 22])
def test_exact_against_a_naive_reference(ragged, budget):
    queries, documents = ragged
    expected = naive(queries, documents)
    scores = maxsim_scores(queries, documents, budget=budget)
    assert scores.dtype == torch.float32 and scores.shape == expected.shape
    # float rounding only: each score sums <= 256 fp32 dot products of unit vectors
    torch.testing.assert_close(scores.double(), expected, rtol=0, atol=1e-4)
    assert torch.equal(scores.topk(10, dim=1).indices, expected.topk(10, dim=1).indices)


@pytest.mark.parametrize("budget", [1, 5, 64])
def test_tiny_tiles_are_exact_too(budget):
    """Tiles smaller than a query or a document: every slicing path, on a small input."""
    g = torch.Generator().manual_seed(4)
    queries = [unit(g, n, dim=8) for n in (1, 9, 3)]
    documents = [unit(g, n, dim=8) for n in (1, 70, 2, 13, 1, 5)]
    torch.testing.assert_close(
        maxsim_scores(queries, documents, budget=budget).double(), naive(queries, documents), rtol=0, atol=1e-5
    )


def test_any_number_of_workers_gives_the_same_scores_and_restores_torch_threads(ragged):
    queries, documents = ragged
    before = torch.get_num_threads()
    one = maxsim_scores(queries, documents, threads=1)
    for threads in (2, 3, 64):
        torch.testing.assert_close(maxsim_scores(queries, documents, threads=threads), one, rtol=0, atol=1e-4)
        assert torch.get_num_threads() == before


def test_empty_document_scores_minus_inf_and_empty_inputs_give_empty_shapes():
    g = torch.Generator().manual_seed(1)
    queries, documents = [unit(g, 3), unit(g, 2)], [unit(g, 4), torch.empty(0, 128), unit(g, 1)]
    scores = maxsim_scores(queries, documents)
    assert torch.isinf(scores[:, 1]).all() and (scores[:, 1] < 0).all()
    torch.testing.assert_close(scores[:, [0, 2]].double(), naive(queries, documents)[:, [0, 2]], rtol=0, atol=1e-5)
    assert maxsim_scores(queries, []).shape == (2, 0)
    assert maxsim_scores([], documents).shape == (0, 3)
    assert torch.isinf(maxsim_scores(queries, [torch.empty(0, 128)])).all()
    empty_queries = maxsim_scores([torch.empty(0, 128), queries[0]], documents)
    assert empty_queries[0].tolist() == [0.0, float("-inf"), 0.0]  # a sum over no tokens
    assert maxsim_scores([torch.empty(0, 128)], documents).tolist() == [[0.0, float("-inf"), 0.0]]


def test_documents_in_any_order_and_layout():
    """Non-contiguous views and half-precision inputs are read as they are (cast exactly)."""
    g = torch.Generator().manual_seed(2)
    queries = [unit(g, 5)]
    base = [unit(g, n) for n in (9, 3, 6)]
    views = [torch.cat([d, d], dim=1)[:, :128] for d in base]  # strided views
    torch.testing.assert_close(maxsim_scores(queries, views), maxsim_scores(queries, base), rtol=0, atol=0)
    halves = [d.bfloat16() for d in base]
    torch.testing.assert_close(
        maxsim_scores(queries, halves).double(), naive(queries, [d.float() for d in halves]), rtol=0, atol=1e-5
    )


def test_blocks_cover_every_nonempty_document_once_within_the_budget():
    lengths = [5, 0, 1, 9, 3, 3, 12, 1]
    blocks = plan_blocks(lengths, rows=8)
    seen = [j for idx, _ in blocks for j in idx]
    assert sorted(seen) == [j for j, n in enumerate(lengths) if n]
    for idx, longest in blocks:
        assert longest == max(lengths[j] for j in idx)
        assert len(idx) * longest <= 8 or len(idx) == 1


def test_bf16_is_close_and_keeps_the_planted_best_document():
    """Each query has one planted document holding its tokens plus noise: bf16 ranks it first
    as fp32 does, and every score stays within bf16 rounding per query token."""
    g = torch.Generator().manual_seed(3)
    queries = [unit(g, n) for n in (32, 256, 100, 8)]
    noise = [unit(g, int(n)) for n in torch.randint(1, 500, (60,), generator=g)]
    planted = [
        torch.nn.functional.normalize(torch.cat([q + 0.3 * unit(g, len(q)), unit(g, 40)]), dim=-1) for q in queries
    ]
    documents = noise + planted
    fp32 = maxsim_scores(queries, documents)
    bf16 = maxsim_scores(queries, documents, dtype="bfloat16")
    assert bf16.dtype == torch.float32
    per_token = (bf16 - fp32).abs() / torch.tensor([[len(q)] for q in queries])
    assert per_token.max() < 1e-2, per_token.max()
    assert bf16.argmax(dim=1).tolist() == fp32.argmax(dim=1).tolist() == list(range(60, 64))


def test_bf16_without_native_support_falls_back_to_exact_float32(ragged, monkeypatch, caplog):
    monkeypatch.setattr(maxsim, "bf16_native", lambda device="cpu": False)
    queries, documents = ragged
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.evaluate.maxsim"):
        scores = maxsim_scores(queries, documents, dtype="bfloat16")
    assert torch.equal(scores, maxsim_scores(queries, documents))
    assert "no native bf16" in caplog.text


def test_unknown_dtype_is_one_line():
    with pytest.raises(UserError, match=r"^score dtype 'float16' is not one of float32, bfloat16$"):
        maxsim_scores([torch.ones(1, 2)], [torch.ones(1, 2)], dtype="float16")


def test_evaluate_uses_this_scorer():
    from workflow_scripts.evaluate import job

    assert job.maxsim_scores is maxsim_scores
