"""What the summary's statistics cost (#22): bootstrap intervals and paired tests at real sizes.

One run, one machine: the summary's tables without statistics (the baseline: reading results,
building the tables) and then with them (:func:`workflow_scripts.summarize.add_statistics`), on
synthetic per-query nDCG@10 at BRIGHT's query counts per split, for a recipe with 4 evaluated
models (widened, stage1, stage2, base), their 3 default pairs, and 3 protocols (config.yaml's).

    .venv/bin/python benchmarks/bench_statistics.py [--resamples 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow_scripts.bright.meta import SPLITS  # noqa: E402
from workflow_scripts.bright.protocols import resolve  # noqa: E402
from workflow_scripts.summarize import add_statistics, build_tables  # noqa: E402

# BRIGHT's test queries per split (the BRIGHT paper's table; the issue quotes pony 112, biology 103)
QUERIES = {
    "biology": 103,
    "earth_science": 116,
    "economics": 103,
    "psychology": 101,
    "robotics": 101,
    "stackoverflow": 117,
    "sustainable_living": 108,
    "leetcode": 142,
    "pony": 112,
    "aops": 111,
    "theoremqa_questions": 194,
    "theoremqa_theorems": 76,
}
MODELS = ["widened", "stage1", "stage2", "base"]
PAIRS = [["widened", "base"], ["stage1", "widened"], ["stage2", "stage1"]]


def results(protocols: list[dict], rng: np.random.Generator) -> dict:
    """Per-split results with per-query scores (mostly zeros, like BRIGHT's nDCG@10)."""
    found = {}
    for p in protocols:
        for m in MODELS:
            for s in p["splits"]:
                scores = rng.beta(0.4, 1.2, size=QUERIES[s]) * (rng.random(QUERIES[s]) < 0.6)
                task, eval_split, subset = p["mteb"][s]
                found[(p["name"], m, s)] = {
                    "per_query": {f"q{i}": float(v) for i, v in enumerate(scores)},
                    "scores": {eval_split: [{"ndcg_at_10": float(scores.mean())}]},
                }
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resamples", type=int, default=10000)
    args = parser.parse_args()
    protocols = [
        p.summary(SPLITS) for p in resolve({"card": {}, "bright": {}, "gpt4_reason": {"preset": "reasoning"}}).values()
    ]
    found = results(protocols, np.random.default_rng(0))
    timed = {}
    for resamples in (args.resamples // 10, args.resamples):  # the baseline: a tenth of the resamples
        tables = build_tables(found, protocols, MODELS)
        statistics = {"confidence": 0.95, "resamples": resamples, "alpha": 0.05, "seed": 0}
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            add_statistics(
                tables=tables,
                found=found,
                statistics=statistics,
                pairs=PAIRS,
                seed_groups=[],
                per_query_path=f"{tmp}/q.parquet",
            )
            timed[resamples] = time.perf_counter() - start
    intervals = sum(len(t["intervals"]) * (len(t["splits"]) + 1) for t in tables)
    tests = sum(len(t["tests"]) for t in tables)
    print(
        f"{len(protocols)} protocols x {len(MODELS)} models, {sum(QUERIES.values())} queries per model and "
        f"protocol: {intervals} intervals and {tests} paired tests"
    )
    low, high = timed
    print(
        f"{low} resamples: {timed[low]:.1f} s; {high} resamples: {timed[high]:.1f} s "
        f"(x{timed[high] / timed[low]:.1f} for x{high // low} resamples; {1000 * timed[high] / (intervals + tests):.0f} ms per cell)"
    )


if __name__ == "__main__":
    main()
