"""One training stage's shards: triples from its sources, audited, shuffled, written with ``stats.json``."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..bright.load import bright_id2doc, load_bright_examples
from ..bright.meta import SPLITS
from ..errors import UserError
from ..files import atomic_dir, write_json
from ..sources.manifest import source_root, source_roots
from .contamination import ContaminationAudit
from .lengths import length_stats, reservoir_add
from .schema import SHARD_SCHEMA
from .shuffle import shuffle_to_shards
from .triples import TripleBuilder, bge_reasoner_triples, reasonir_triples

__all__ = ["build_shards"]

logger = logging.getLogger(__name__)


def build_shards(
    *,
    stage: str,
    stage_sources: list[dict[str, str | None]],
    manifests: list[str],
    out_dir: str | Path,
    stats_path: str | Path,
    positives_per_query: int,
    negatives_per_query: int,
    min_text_chars: int,
    max_unresolved_rate: float,
    rows_per_shard: int,
    shuffle_buckets: int,
    seed: int,
    bge_subdir: str | None = None,
    tokenizer_manifest: str | None = None,
    contamination_ngram: int | None = None,
    contamination_drop: bool = False,
    threads: int = 1,
    splits: list[str] | None = None,
) -> dict[str, Any]:
    """Build one stage's parquet triple shards and its ``stats.json``.

    ``manifests`` are the download manifests of the sources the stage reads (each names its
    source: reasonir, bge_reasoner, bright). With ``contamination_ngram`` set, the triples are
    audited against BRIGHT's test queries (needs the bright manifest) and, with
    ``contamination_drop``, overlapping triples are left out. ``threads`` bounds Arrow's
    thread pool (parquet decoding and zstd compression).

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`~workflow_scripts.cli`):
    one flag per parameter; the body calls short helpers.

    Parameters
    ----------
    stage
        The curriculum stage (``stage1``, ``stage2``), for messages and ``stats.json``.
    stage_sources
        ``data.stages.<stage>`` of the config: ``{source, config}`` entries, each optionally
        with its own ``positives_per_query`` / ``negatives_per_query``.
    manifests
        Download manifests of the stage's sources (and ``bright``).
    out_dir
        The shard folder, written atomically.
    stats_path
        Where the statistics are written too (the rule's report output).
    positives_per_query, negatives_per_query
        Caps per upstream row: a row gives up to positives x negatives triples.
    min_text_chars
        Shorter positives and negatives are dropped.
    max_unresolved_rate
        The largest share of reasonir ``hq`` positive ids that may be missing from BRIGHT.
    rows_per_shard, shuffle_buckets, seed
        As :func:`~workflow_scripts.shards.shuffle.shuffle_to_shards` takes them.
    bge_subdir
        The folder of the bge-reasoner jsonl files inside their source (None: its root).
    tokenizer_manifest
        The base model's manifest, whose tokenizer counts the token lengths (None: words).
    contamination_ngram, contamination_drop
        The audit's n-gram size (None: no audit) and whether overlapping triples are dropped.
    threads
        Arrow's thread pool size.
    splits
        BRIGHT splits to resolve ids against and audit (None: all 12).

    Returns
    -------
    The statistics written to ``stats.json``.
    """
    pa.set_cpu_count(threads)
    # BRIGHT has 12 domains whatever subset is evaluated: hq ids resolve against all of them
    splits = splits or SPLITS
    roots = source_roots(manifests)
    builder = TripleBuilder(positives=positives_per_query, negatives=negatives_per_query, min_chars=min_text_chars)
    counts: Counter[str] = Counter()
    produced = _produce(
        stage=stage,
        stage_sources=stage_sources,
        roots=roots,
        builder=builder,
        counts=counts,
        bge_subdir=bge_subdir,
        splits=splits,
        positives_per_query=positives_per_query,
        negatives_per_query=negatives_per_query,
    )
    observed = _Observed(rng=random.Random(seed))
    audit = _audit(roots=roots, splits=splits, ngram=contamination_ngram)
    kept = _observe(produced, audit=audit, drop=contamination_drop, builder=builder, observed=observed)
    with atomic_dir(out_dir) as tmp:
        rows, duplicates = shuffle_to_shards(
            kept,
            out_dir=tmp,
            seed=seed,
            label=f"build_shards {stage}",
            buckets=shuffle_buckets,
            rows_per_shard=rows_per_shard,
        )
        if rows == 0:
            raise UserError(f"stage {stage}: no triples survived (dropped: {dict(builder.dropped)})")
        _check_unresolved(stage=stage, counts=counts, max_unresolved_rate=max_unresolved_rate)
        stats = _stats(
            stage=stage,
            rows=rows,
            shards=len(list(tmp.glob("part-*.parquet"))),
            duplicates=duplicates,
            observed=observed,
            builder=builder,
            counts=counts,
            tokenizer_manifest=tokenizer_manifest,
            audit=audit,
            contamination_ngram=contamination_ngram,
            contamination_drop=contamination_drop,
        )
        write_json(tmp / "stats.json", stats)
    write_json(stats_path, stats)
    logger.info("stage %s: %d triples in %d shards", stage, rows, stats["shards"])
    return stats


@dataclass
class _Observed:
    """What the build saw of the triples it kept: rows per source and domain, and a reservoir sample."""

    rng: random.Random
    kept: int = 0  # triples kept so far (the reservoir's denominator)
    per_source: Counter[str] = field(default_factory=Counter)
    sample: list[dict[str, str]] = field(default_factory=list)

    def add(self, triple: dict[str, str]) -> None:
        """Count a kept triple and offer it to the sample."""
        self.per_source[f"{triple['source']}\t{triple['domain']}"] += 1
        self.kept += 1
        reservoir_add(self.rng, self.sample, triple, self.kept, 2000)


def _produce(
    *,
    stage: str,
    stage_sources: list[dict[str, str | None]],
    roots: dict[str, Path],
    builder: TripleBuilder,
    counts: Counter[str],
    bge_subdir: str | None,
    splits: list[str],
    positives_per_query: int,
    negatives_per_query: int,
) -> Iterator[dict[str, str]]:
    """The stage's triples, source entry after source entry, each expanded with its own caps."""
    for entry in stage_sources:
        name, config = entry["source"], entry["config"]
        # a source entry may cap its own expansion (e.g. only stage 2's bge rows)
        builder.positives = entry.get("positives_per_query") or positives_per_query
        builder.negatives = entry.get("negatives_per_query") or negatives_per_query
        if name == "bge_reasoner":
            yield from bge_reasoner_triples(roots[name], bge_subdir, splits, builder)
        elif config in ("vl", "hq"):
            id2doc = bright_id2doc(roots["bright"], splits) if config == "hq" else None
            yield from reasonir_triples(roots[name], config, builder, id2doc, counts)
        else:
            raise UserError(f"data.stages.{stage}: unknown reasonir config {config!r} (vl, hq)")


def _audit(*, roots: dict[str, Path], splits: list[str], ngram: int | None) -> ContaminationAudit | None:
    """The contamination audit against BRIGHT's test queries of ``splits`` (None: no audit)."""
    if ngram is None:
        return None
    examples = {split: load_bright_examples(roots["bright"], split) for split in splits}
    return ContaminationAudit(examples, ngram)


def _observe(
    triples: Iterable[dict[str, str]],
    *,
    audit: ContaminationAudit | None,
    drop: bool,
    builder: TripleBuilder,
    observed: _Observed,
) -> Iterator[dict[str, str]]:
    """The triples audited (overlapping ones left out with ``drop``), each kept one added to ``observed``."""
    for triple in triples:
        if audit is not None and audit.check(triple) and drop:
            builder.dropped[f"{triple['source']}: overlaps a BRIGHT test query"] += 1
            continue
        observed.add(triple)
        yield triple


def _check_unresolved(*, stage: str, counts: Counter[str], max_unresolved_rate: float) -> None:
    """A one-line error when too many reasonir ``hq`` positive ids are not BRIGHT document ids."""
    unresolved = counts["hq unresolved ids"] / max(1, counts["hq positive ids"])
    if unresolved > max_unresolved_rate:
        raise UserError(
            f"stage {stage}: {unresolved:.1%} of hq positive ids are not BRIGHT document ids "
            f"(> data.max_unresolved_rate={max_unresolved_rate})"
        )


def _stats(
    *,
    stage: str,
    rows: int,
    shards: int,
    duplicates: int,
    observed: _Observed,
    builder: TripleBuilder,
    counts: Counter[str],
    tokenizer_manifest: str | None,
    audit: ContaminationAudit | None,
    contamination_ngram: int | None,
    contamination_drop: bool,
) -> dict[str, Any]:
    """The content of ``stats.json`` (token lengths measured on the sample here)."""
    tokenizer_dir = str(source_root(tokenizer_manifest)) if tokenizer_manifest else None
    return {
        "stage": stage,
        "rows": rows,
        "shards": shards,
        "duplicates_removed": duplicates,
        "rows_by_source_domain": [
            {"source": k.split("\t")[0], "domain": k.split("\t")[1], "rows": v}
            for k, v in sorted(observed.per_source.items())
        ],
        "dropped_rows": dict(sorted(builder.dropped.items())),
        "hq_positive_ids": counts["hq positive ids"],
        "hq_unresolved_ids": counts["hq unresolved ids"],
        "token_lengths": length_stats(observed.sample, tokenizer_dir),
        "schema": {f.name: str(f.type) for f in SHARD_SCHEMA},
        "contamination": None
        if audit is None
        else {"ngram": contamination_ngram, "drop": contamination_drop, "per_split": audit.table()},
    }
