"""build_shards throughput and peak memory at 1x and 10x a synthetic input.

Prints triples/s and peak RSS of each size (each in a fresh process) and their ratios:
memory should stay flat while the input grows tenfold.

    python benchmarks/bench_build_shards.py [--rows 20000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_input(root: Path, rows: int, seed: int = 0) -> None:
    """A reasonir-like mirror: ``vl`` rows with 2 positives and 4 negatives of ~60 words."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workflow_scripts.synthetic.demo import REASONIR_SCHEMA

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    (root / "vl").mkdir(parents=True)
    batch = 5000
    writer = pq.ParquetWriter(root / "vl/train-00000-of-00001.parquet", REASONIR_SCHEMA)
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        text = lambda k: " ".join(rng.choices(words, k=k))  # noqa: E731
        data = [
            {
                "query": ["Given a post, retrieve relevant passages", text(20)],
                "pos": [["", text(60)] for _ in range(2)],
                "neg": [["", text(60)] for _ in range(4)],
            }
            for _ in range(n)
        ]
        writer.write_table(pa.Table.from_pylist(data, schema=REASONIR_SCHEMA))
    writer.close()


def child(root: str, out: str) -> None:
    """Run build_shards on one input and print JSON with the time and this process's peak RSS."""
    from workflow_scripts.shards.build import build_shards
    from workflow_scripts.sources.hub import fetch_source

    manifest = Path(out) / "reasonir.json"
    fetch_source(
        name="reasonir",
        repo="o/r",
        revision="a" * 40,
        repo_type="dataset",
        local=root,
        cache_dir=out,
        manifest=manifest,
    )
    start = time.perf_counter()
    stats = build_shards(
        stage="stage1",
        stage_sources=[{"source": "reasonir", "config": "vl"}],
        manifests={"reasonir": str(manifest)},
        out_dir=Path(out) / "shards",
        stats_path=Path(out) / "stats.json",
        splits=["biology"],
        positives_per_query=2,
        negatives_per_query=4,
        min_text_chars=10,
        max_unresolved_rate=0.05,
        rows_per_shard=100_000,
        shuffle_buckets=64,
        seed=42,
    )
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"triples": stats["rows"], "seconds": seconds, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="source rows at 1x (each gives 8 triples)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (1, 10):
            root, out = Path(tmp) / f"in{factor}", Path(tmp) / f"out{factor}"
            make_input(root, args.rows * factor)
            out.mkdir()
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(root), str(out)], capture_output=True, text=True, check=True
            )
            results[factor] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[factor]
            print(
                f"{factor:>3}x: {r['triples']:>9,} triples  {r['triples'] / r['seconds']:>9,.0f} triples/s  "
                f"peak RSS {r['peak_rss_mb']:,.0f} MB"
            )
    one, ten = results[1], results[10]
    print(
        f"10x/1x: input x{ten['triples'] / one['triples']:.1f}, throughput x"
        f"{(ten['triples'] / ten['seconds']) / (one['triples'] / one['seconds']):.2f}, "
        f"peak RSS x{ten['peak_rss_mb'] / one['peak_rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
