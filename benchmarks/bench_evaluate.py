"""Exact-MaxSim scoring: our streamed pad-free scorer vs PyLate's ``rank.rerank``, same run.

Synthetic corpus (default 20k documents of ~300 tokens, 100 queries of 32 tokens, dim 128,
unit-normalised vectors, as ColBERT emits). Scoring is measured apart from encoding; encoding
is timed separately with the demo model on real text. Prints:

- wall time of each scorer and the speed-up, and whether both give the same top-10 (and
  nDCG@10 against random qrels);
- the scoring phase's GFLOP/s as a fraction of this machine's fp32 GEMM peak (measured here);
- peak RSS of our scorer at 1x and 4x the corpus, each in a fresh process (should be flat).

    python benchmarks/bench_evaluate.py [--docs 20000] [--queries 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow_scripts.evaluate import TopK, maxsim_scores, score_run  # noqa: E402

DIM = 128


def corpus_chunk(seed: int, n: int, mean_len: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(mean_len // 2, mean_len * 3 // 2, (n,), generator=g)
    return [torch.nn.functional.normalize(torch.randn(int(n_tok), DIM, generator=g), dim=-1) for n_tok in lens]


def queries(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(12345)
    return [torch.nn.functional.normalize(torch.randn(32, DIM, generator=g), dim=-1) for _ in range(n)]


def ours(q: list[torch.Tensor], docs: int, chunk: int, mean_len: int, k: int = 100) -> tuple[TopK, float, int]:
    """Streamed: generate (stand-in for encode) a chunk, score it, keep the running top-k."""
    top, seconds, flops = TopK(len(q), k), 0.0, 0
    q_tokens = sum(len(x) for x in q)
    for i, start in enumerate(range(0, docs, chunk)):
        d = corpus_chunk(i, min(chunk, docs - start), mean_len)
        t0 = time.perf_counter()
        top.update(maxsim_scores(q, d), offset=start)
        seconds += time.perf_counter() - t0
        flops += 2 * q_tokens * sum(len(x) for x in d) * DIM
    return top, seconds, flops


def gemm_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e9


def child(docs: int, chunk: int, mean_len: int, n_queries: int) -> None:
    ours(queries(n_queries), docs, chunk, mean_len)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def encode_rate(n_docs: int = 512) -> float:
    """Documents/s of the demo model on demo text (CPU), i.e. the encoding phase alone."""
    import tempfile

    from workflow_scripts.demo import make_assets
    from workflow_scripts.evaluate import encode
    from workflow_scripts.model import load_colbert

    with tempfile.TemporaryDirectory() as tmp:
        root = make_assets(Path(tmp) / "demo", queries_per_split=16, documents_per_split=60, train_rows=12)
        import pyarrow.parquet as pq

        texts = pq.read_table(root / "BRIGHT/documents/biology-00000-of-00001.parquet")["content"].to_pylist()
        texts = (texts * (n_docs // len(texts) + 1))[:n_docs]
        model = load_colbert(root / "base-model", document_length=300)
        t0 = time.perf_counter()
        encode(model, texts, is_query=False, batch_size=32, device="cpu", dtype=torch.float32)
        return n_docs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--mean-len", type=int, default=300)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from pylate import rank

    q = queries(args.queries)
    top, ours_s, flops = ours(q, args.docs, args.chunk, args.mean_len)
    docs = [x for i, s in enumerate(range(0, args.docs, args.chunk))
            for x in corpus_chunk(i, min(args.chunk, args.docs - s), args.mean_len)]  # fmt: skip
    ids = list(range(args.docs))
    t0 = time.perf_counter()
    reranked = rank.rerank(documents_ids=[ids] * len(q), queries_embeddings=q, documents_embeddings=[docs] * len(q))
    rerank_s = time.perf_counter() - t0
    del docs
    same_top10 = all([r["id"] for r in res[:10]] == top.index[i, :10].tolist() for i, res in enumerate(reranked))
    qrels = {str(i): {str(j): 1 for j in range(i, args.docs, 997)} for i in range(len(q))}
    ndcg_ours = score_run(qrels, {str(i): {str(j): s for j, s in zip(top.index[i].tolist(), top.scores[i].tolist())}
                                  for i in range(len(q))})["mean"]["ndcg_at_10"]  # fmt: skip
    ndcg_rerank = score_run(qrels, {str(i): {str(r["id"]): r["score"] for r in res[:100]}
                                    for i, res in enumerate(reranked)})["mean"]["ndcg_at_10"]  # fmt: skip
    peak = gemm_peak()
    print(f"machine: {torch.get_num_threads()} threads, fp32 GEMM peak {peak:.1f} GFLOP/s (2048^3 matmul)")
    print(f"corpus: {args.docs:,} docs x ~{args.mean_len} tokens, {args.queries} queries x 32 tokens, dim {DIM}")
    print(f"scoring  ours {ours_s:7.2f} s   rank.rerank {rerank_s:7.2f} s   speed-up x{rerank_s / ours_s:.1f}")
    print(f"same top-10 for every query: {same_top10};  nDCG@10 ours {ndcg_ours:.6f}  rerank {ndcg_rerank:.6f}")
    gflops = flops / ours_s / 1e9
    print(f"scoring throughput: {gflops:.1f} GFLOP/s = {gflops / peak:.0%} of GEMM peak")
    rss = {}
    for factor in (1, 4):
        proc = subprocess.run([sys.executable, __file__, "--child", str(args.docs * factor), str(args.chunk),
                               str(args.mean_len), str(args.queries)], capture_output=True, text=True, check=True)  # fmt: skip
        rss[factor] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    print(f"peak RSS of our scorer: 1x {rss[1]:,.0f} MB, 4x {rss[4]:,.0f} MB (ratio x{rss[4] / rss[1]:.2f})")
    print(f"encoding (demo model, CPU, 300-token cap): {encode_rate():.0f} documents/s")


if __name__ == "__main__":
    main()
