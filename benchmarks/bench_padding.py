"""Encoder tokens and GradCache step time, padded vs trimmed, on the rehearsal's stage-2 lengths.

The data are the rehearsal's (``workflow_scripts.synthetic.rehearsal.make_assets`` with the sizes of
``rehearsal/config.yaml``: BRIGHT documents whose token lengths follow each real split, training
queries and documents of the assumed spread), made into stage-2 triples by the real shard
builder (``shards.build.build_shards``: bge-reasoner, 2 positives x 4 negatives per row, and reasonir
``hq`` with BRIGHT positives, merged and shuffled), tokenized by the rehearsal's model at the
training shapes (query 256, document 2048).

1. Tokens per optimizer step at the card's per-device shape (256 rows, GradCache mini-batch 32),
   from the lengths alone (:func:`workflow_scripts.train.gradcache.trimmed_token_counts`), over every
   full batch of the shuffled stage: real, processed (trimmed), padded (to the batch's longest)
   and collated (to ``document_length``, what PyLate's collator hands the loss).
2. One GradCache step (forward, loss, backward) of the real architecture (mxbai-edge-colbert-v0-32m,
   random weights) on CPU at a scaled shape (``--rows`` rows of the stage's first batch, mini-batch
   ``--mini-batch``; 8 rows in 4 mini-batches by default, the card has 256 in 8): PyLate's
   ``CachedContrastive`` on the collator's columns (what training runs today: padded to
   ``document_length``), then :class:`~workflow_scripts.train.gradcache.TrimmedCachedContrastive`, same
   weights, same rows, the padding guard on for both; the time ratio, the encoder tokens of
   each (and padded to the batch's longest) and both losses (equal).

    flock /tmp/heavy.lock python benchmarks/bench_padding.py [--rows 8] [--mini-batch 2] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

COLUMNS = ("query", "positive", "negative")
CARD_ROWS, CARD_MINI_BATCH = 256, 32  # per device: 2048 / (2 nodes x 4 GPUs); the recipe's GradCache chunk


def merged_config() -> dict[str, Any]:
    """config.yaml overlaid with rehearsal/config.yaml, as ``--configfile`` merges them."""
    import yaml

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    return merge(
        yaml.safe_load((REPO / "config.yaml").read_text()), yaml.safe_load((REPO / "rehearsal/config.yaml").read_text())
    )


def stage2_rows(work: Path, config: dict[str, Any]) -> tuple[list[dict[str, str]], Path]:
    """The stage-2 triples the shard builder makes from the rehearsal's data; the base model folder."""
    import pyarrow.parquet as pq

    from workflow_scripts.shards.build import build_shards
    from workflow_scripts.sources.hub import fetch_source
    from workflow_scripts.synthetic.rehearsal import make_assets

    sizes = {k: v for k, v in config["rehearsal"].items() if k != "assets_dir"}
    assets = make_assets(out=work / "assets", **sizes)
    folders = {"reasonir": "reasonir-data", "bge_reasoner": "bge-reasoner-data", "bright": "BRIGHT"}
    manifests = []
    for name, folder in folders.items():
        manifests.append(str(work / f"{name}.manifest.json"))
        source = config["sources"][name]
        fetch_source(
            name=name,
            repo=source["repo"],
            revision="a" * 40,
            repo_type="dataset",
            local=str(assets / folder),
            cache_dir=work / "hub",
            manifest=manifests[-1],
        )
    data = config["data"]
    build_shards(
        stage="stage2",
        stage_sources=data["stages"]["stage2"],
        manifests=manifests,
        out_dir=work / "shards",
        stats_path=work / "stats.json",
        positives_per_query=data["positives_per_query"],
        negatives_per_query=data["negatives_per_query"],
        min_text_chars=data["min_text_chars"],
        max_unresolved_rate=data["max_unresolved_rate"],
        rows_per_shard=data["rows_per_shard"],
        shuffle_buckets=data["shuffle_buckets"],
        seed=config["seed"],
        bge_subdir=config["sources"]["bge_reasoner"].get("subdir"),
    )
    rows = []
    for shard in sorted((work / "shards").glob("*.parquet")):
        rows += pq.read_table(shard, columns=list(COLUMNS)).to_pylist()
    return rows, assets / "base-model"


def token_lengths(model, rows: list[dict[str, str]]) -> dict[str, list[int]]:
    """Tokens of every text per column, as the collator makes them (prefix, truncation)."""
    out = {}
    for column in COLUMNS:
        texts = [row[column] for row in rows]
        lengths: list[int] = []
        for i in range(0, len(texts), 512):
            mask = model.tokenize(texts[i : i + 512], is_query=column == "query", pad=True)["attention_mask"]
            lengths += mask.sum(dim=1).tolist()
        out[column] = lengths
    return out


def card_tokens(lengths: dict[str, list[int]], widths: dict[str, int]) -> tuple[int, dict[str, dict[str, float]]]:
    """Mean tokens per step (queries, documents) over the full per-device batches of the stage."""
    from workflow_scripts.train.gradcache import trimmed_token_counts

    n = len(lengths["query"]) // CARD_ROWS
    sums = {group: dict.fromkeys(("real", "processed", "padded", "collated"), 0) for group in ("queries", "documents")}
    for b in range(n):
        for column in COLUMNS:
            batch = lengths[column][b * CARD_ROWS : (b + 1) * CARD_ROWS]
            group = sums["queries" if column == "query" else "documents"]
            for key, value in trimmed_token_counts(batch, mini_batch_size=CARD_MINI_BATCH).items():
                group[key] += value
            group["collated"] += CARD_ROWS * widths[column]
    return n, {g: {k: v / max(n, 1) for k, v in values.items()} for g, values in sums.items()}


def columns_of(model, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    from pylate import utils

    batch = utils.ColBERTCollator(model.tokenize)(rows)
    return [{k[len(c) + 1 :]: v for k, v in batch.items() if k.startswith(c + "_")} for c in COLUMNS]


def step(loss, model, columns) -> tuple[float, float]:
    """Seconds of one GradCache step (forward, loss, backward) and its loss."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    value = loss(columns)
    value.backward()
    return time.perf_counter() - start, float(value.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="rows of the timed per-device batch")
    parser.add_argument("--mini-batch", type=int, default=2, help="GradCache mini-batch of the timed step")
    parser.add_argument("--repeats", type=int, default=1, help="timed steps of each kind (median)")
    args = parser.parse_args()

    import torch
    from pylate import losses

    from workflow_scripts.model.load import load_colbert
    from workflow_scripts.model.padding_guard import guard_padding
    from workflow_scripts.train.gradcache import TrimmedCachedContrastive

    config = merged_config()
    q_len, d_len = config["train"]["query_length"], config["train"]["document_length"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        rows, base = stage2_rows(Path(tmp), config)
        model = load_colbert(base, query_length=q_len, document_length=d_len)
        print(
            f"stage-2 rehearsal data: {len(rows)} triples (bge-reasoner + reasonir hq), made in "
            f"{time.perf_counter() - start:.0f} s; query {q_len} / document {d_len} tokens"
        )
        lengths = token_lengths(model, rows)
    docs = sorted(lengths["positive"] + lengths["negative"])
    queries = lengths["query"]
    print(
        f"  document tokens: mean {statistics.mean(docs):.0f}, median {docs[len(docs) // 2]}, "
        f"p90 {docs[int(len(docs) * 0.9)]}, at {d_len}: {sum(x >= d_len for x in docs) / len(docs):.1%}; "
        f"query tokens: mean {statistics.mean(queries):.0f}, max {max(queries)}"
    )

    n, per_step = card_tokens(lengths, {"query": q_len, "positive": d_len, "negative": d_len})
    print(
        f"tokens per optimizer step at the card's per-device shape ({CARD_ROWS} rows, mini-batch {CARD_MINI_BATCH}), "
        f"mean of {n} batches:"
    )
    for group, c in per_step.items():
        print(
            f"  {group:9s} real {c['real']:>9,.0f}  processed {c['processed']:>9,.0f}  padded {c['padded']:>9,.0f}"
            f"  collated {c['collated']:>9,.0f}  padded/processed x{c['padded'] / c['processed']:.2f}"
            f"  collated/processed x{c['collated'] / c['processed']:.2f}"
            f"  processed/real x{c['processed'] / c['real']:.3f}"
        )

    batch = rows[: args.rows]
    model.train()
    guard_padding(model)  # both ways: the comparison is trimming alone
    columns = columns_of(model, batch)
    trimmed = TrimmedCachedContrastive(model=model, mini_batch_size=args.mini_batch)
    pylate = losses.CachedContrastive(model=model, mini_batch_size=args.mini_batch)
    step(trimmed, model, columns_of(model, rows[args.rows : args.rows + 2]))  # warm-up (first-call costs)
    trimmed.tokens.end_step()
    times: dict[str, list[float]] = {"collated": [], "trimmed": []}
    values = {}
    for _ in range(args.repeats):
        for kind, loss in (("collated", pylate), ("trimmed", trimmed)):
            seconds, values[kind] = step(loss, model, columns)
            times[kind].append(seconds)
    counts = trimmed.tokens.end_step()
    tokens = {key: sum(counts[g][key] for g in counts) // args.repeats for key in ("collated", "padded", "processed")}
    print(
        f"one GradCache step (forward, loss, backward), real architecture, CPU {torch.get_num_threads()} threads, "
        f"scaled shape: {args.rows} rows x {len(COLUMNS)} columns, mini-batch {args.mini_batch}, "
        f"median of {args.repeats}; encoder tokens per pass: collated {tokens['collated']:,}, "
        f"padded to the batch's longest {tokens['padded']:,}, trimmed {tokens['processed']:,}"
    )
    base = statistics.median(times["collated"])
    trim = statistics.median(times["trimmed"])
    print(f"  PyLate CachedContrastive (collated) {base:7.1f} s  loss {values['collated']:.6f}")
    print(
        f"  TrimmedCachedContrastive            {trim:7.1f} s  loss {values['trimmed']:.6f}"
        f"  x{base / trim:.2f} faster; "
        f"tokens x{tokens['collated'] / tokens['processed']:.2f} fewer than collated, "
        f"x{tokens['padded'] / tokens['processed']:.2f} fewer than padded"
    )


if __name__ == "__main__":
    main()
