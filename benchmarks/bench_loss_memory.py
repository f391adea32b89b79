"""Peak memory and time of one loss step: PyLate's torch MaxSim vs ``chunked``, at three document lengths.

One step is what ``CachedContrastive`` does per chunk of queries: scores of the queries against
every candidate (2 columns), cross-entropy, backward to the query and document vectors. Each
(backend, length) runs in a fresh Python process; its peak is ``ru_maxrss`` after the step minus
the resident set just before it (inputs made, imports done), so it counts what the step
allocates, as :func:`workflow_scripts.train.loss_scores.loss_working_set_bytes` models it. The table
prints both, the ratio torch / chunked, and the card's shape as the model forecasts it.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_loss_memory.py [--lengths 256 1024 2048]

Times are wall seconds of the step (best of two), on whatever the cores are doing: compare the
ratios within one run only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLUMNS = 2  # positive + negative, as the recipe's triples
CARD = dict(queries=32, candidates=4096, query_tokens=256, document_tokens=2048, dim=128, bytes_per_value=4)


def rss_bytes() -> int:
    """Resident set now (``/proc/self/statm``), in bytes."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def case(
    *, backend: str, queries: int, candidates: int, query_tokens: int, document_tokens: int, dim: int, chunk_size: int
) -> dict:
    """One loss step in this process: its peak bytes above the inputs, its time (best of two)."""
    import torch
    import torch.nn.functional as F
    from pylate.scores import ColBERTScores

    from workflow_scripts.train.loss_scores import chunked_colbert_scores

    g = torch.Generator().manual_seed(0)
    q = torch.randn(queries, query_tokens, dim, generator=g)
    q.div_(q.norm(dim=-1, keepdim=True)).requires_grad_()  # in place: no temporary above the baseline
    d = torch.randn(candidates // COLUMNS, COLUMNS, document_tokens, dim, generator=g)
    d.div_(d.norm(dim=-1, keepdim=True)).requires_grad_()
    lengths = torch.randint(document_tokens // 8, document_tokens + 1, d.shape[:2], generator=g)
    d_mask = (torch.arange(document_tokens) < lengths.unsqueeze(-1)) & (torch.rand(d.shape[:3], generator=g) > 0.1)
    q_mask = torch.ones(q.shape[:2], dtype=torch.bool)
    labels = torch.arange(queries) * COLUMNS

    def score(q, d, q_mask, d_mask):
        if backend == "torch":
            return ColBERTScores()(q, d, q_mask, d_mask, backend="torch")
        return chunked_colbert_scores(q, d, q_mask, d_mask, chunk_size=chunk_size)

    # a tiny step first: the autograd engine, thread pools and kernels start up outside the measurement
    tiny = [q[:2].detach().clone().requires_grad_(), d[:2, :, :4].detach().clone().requires_grad_()]
    F.cross_entropy(score(*tiny, q_mask[:2], d_mask[:2, :, :4]), labels[:2], reduction="sum").backward()
    times = []
    for _ in range(2):
        q.grad = d.grad = None
        gc.collect()
        before, before_max = rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        F.cross_entropy(score(q, d, q_mask, d_mask), labels, reduction="sum").backward()
        times.append(time.perf_counter() - start)
        if len(times) == 1:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            earlier = before_max - before  # a high-water mark from before the step would hide its peak
    return {"peak": peak, "earlier_high_water": earlier, "seconds": min(times)}


def run_case(**kwargs) -> dict:
    """:func:`case` in a fresh interpreter (a clean high-water mark)."""
    out = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(kwargs)], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 2048])
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--query-tokens", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(case(**json.loads(args.case))))
        return
    from workflow_scripts.train.loss_scores import loss_working_set_bytes

    shape = dict(queries=args.queries, candidates=args.candidates, query_tokens=args.query_tokens, dim=args.dim)
    print(
        f"one loss step, fp32: {args.queries} queries x {args.query_tokens} tokens against {args.candidates} "
        f"candidates ({COLUMNS} columns), dim {args.dim}, chunk {args.chunk_size} document tokens"
    )
    mib = 2**20
    for length in args.lengths:
        row = {}
        for backend in ("torch", "chunked"):
            got = run_case(backend=backend, document_tokens=length, chunk_size=args.chunk_size, **shape)
            model = loss_working_set_bytes(
                backend, document_tokens=length, chunk_size=args.chunk_size, bytes_per_value=4, columns=COLUMNS, **shape
            )
            row[backend] = got
            print(
                f"  {length:5d} tokens  {backend:8s} peak {got['peak'] / mib:8.1f} MiB  model {model / mib:8.1f} MiB "
                f"(model/measured {model / got['peak']:.3f})  {got['seconds']:6.2f} s"
                f"  [high-water before the step: {got['earlier_high_water'] / mib:.1f} MiB above it]"
            )
        t, c = row["torch"], row["chunked"]
        print(
            f"  {length:5d} tokens  torch / chunked: memory x{t['peak'] / c['peak']:.1f}, "
            f"time x{t['seconds'] / c['seconds']:.2f}"
        )
    gib = 2**30
    torch_card = loss_working_set_bytes("torch", chunk_size=CARD["document_tokens"], columns=COLUMNS, **CARD)
    chunked_card = loss_working_set_bytes("chunked", chunk_size=8, columns=COLUMNS, **CARD)
    print(
        f"card's shape (32 queries x 256 against 4,096 candidates x 2,048 tokens, fp32), modelled: "
        f"torch {torch_card / gib:.1f} GiB, chunked (chunk 8) {chunked_card / gib:.1f} GiB"
    )


if __name__ == "__main__":
    main()
