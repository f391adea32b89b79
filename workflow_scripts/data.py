"""Data stage: pinned downloads (or local mirrors) and streamed parquet triple shards.

Shard schema (one parquet dataset per training stage, zstd, ``part-NNNNN.parquet``):

=============  ========  ==============================================================
column         type      meaning
=============  ========  ==============================================================
query          string    ``instruction + "\\nQuery: " + text`` (text alone without one)
positive       string    a relevant document's text (hq ids resolved against BRIGHT)
negative       string    a hard negative's text
source         string    ``reasonir/vl``, ``reasonir/hq`` or ``bge_reasoner``
domain         string    BRIGHT domain of the row ("" when unknown, e.g. reasonir vl)
instruction    string    the task instruction alone ("" when none)
=============  ========  ==============================================================

Reading is streamed (pyarrow record batches, jsonl line by line) and the stage is shuffled
out of core through hash buckets, so memory does not grow with the number of rows.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .common import ZERO_REVISION, UserError, atomic_dir, read_json, run_cli, sha256_file, write_json

__all__ = [
    "SHARD_SCHEMA",
    "build_shards",
    "config_files",
    "fetch_source",
    "format_query",
    "load_bright_documents",
    "load_bright_examples",
]

logger = logging.getLogger(__name__)

SHARD_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("positive", pa.string()),
        ("negative", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("instruction", pa.string()),
    ]
)
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
BATCH_ROWS = 1024


# --------------------------------------------------------------------------- download
def fetch_source(
    *,
    name: str,
    repo: str,
    revision: str,
    repo_type: str,
    local: str | None,
    cache_dir: str | Path,
    manifest: str | Path,
    allow_patterns: list[str] | None = None,
) -> dict[str, Any]:
    """Resolve one source to a directory laid out like its hub repository; write a manifest.

    With ``local`` set the directory is used as is (a mirror); otherwise the pinned revision
    is downloaded with ``huggingface_hub.snapshot_download`` into ``cache_dir``. The manifest
    lists every file with size and sha256, so a changed mirror reruns what depends on it.
    """
    if not REVISION_RE.match(revision or ""):
        raise UserError(f"sources.{name}.revision: {revision!r} is not a 40-hex commit sha")
    if local:
        root = Path(local).expanduser().resolve()
        if not root.is_dir():
            raise UserError(f"sources.{name}.local: directory {local} does not exist")
    else:
        root = _snapshot(name=name, repo=repo, revision=revision, repo_type=repo_type,
                         cache_dir=Path(cache_dir), allow_patterns=allow_patterns)  # fmt: skip
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.parts]
    if not files:
        raise UserError(f"sources.{name}: {root} holds no files")
    data = {
        "name": name,
        "repo": repo,
        "repo_type": repo_type,
        "revision": revision,
        "path": str(root),
        "mode": "local" if local else "hub",
        "files": [
            {"path": str(p.relative_to(root)), "size": p.stat().st_size, "sha256": sha256_file(p)} for p in files
        ],
    }
    write_json(manifest, data)
    return data


def _snapshot(
    *, name: str, repo: str, revision: str, repo_type: str, cache_dir: Path,
    allow_patterns: list[str] | None,
) -> Path:  # fmt: skip
    """Download a pinned hub snapshot; offline or unreachable → one line naming the key."""
    if revision == ZERO_REVISION:
        raise UserError(
            f"sources.{name}.revision is not pinned yet (all zeros): run "
            f"`python -m workflow_scripts.data resolve-revision --repo {repo} --repo-type "
            f"{repo_type}` where the hub is reachable, or set sources.{name}.local to a mirror"
        )
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(
            repo_id=repo, repo_type=repo_type, revision=revision,
            local_dir=cache_dir / name, allow_patterns=allow_patterns,
        )  # fmt: skip
    except Exception as err:  # offline mode, DNS, 404: all mean "use a mirror"
        raise UserError(
            f"cannot download {repo}@{revision[:12]} ({type(err).__name__}); set "
            f"sources.{name}.local to a directory mirrored with `huggingface-cli download "
            f"--repo-type {repo_type} {repo} --revision {revision} --local-dir DIR`"
        ) from err
    return Path(path)


def resolve_revision(repo: str, repo_type: str) -> str:
    """The current commit sha of ``repo`` on the hub (to pin it in config.yaml)."""
    from huggingface_hub import HfApi

    return HfApi().repo_info(repo, repo_type=repo_type).sha


# --------------------------------------------------------------------------- hub layouts
def config_files(root: str | Path, config: str, split: str | None = None) -> list[Path]:
    """Data files of one dataset config (and split), as the hub's README metadata declares.

    Falls back to ``<config>/**`` when the README has no ``configs`` block.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "vl").mkdir(); _ = (root / "vl" / "train-0.parquet").write_bytes(b"")
    >>> [p.name for p in config_files(root, "vl", "train")]
    ['train-0.parquet']
    """
    root = Path(root)
    patterns = _readme_patterns(root, config, split)
    if patterns is None:
        prefix = f"{split}-" if split else ""
        patterns = [f"{config}/**/{prefix}*", f"{config}/{prefix}*"]
    files = sorted(
        {p for p in root.rglob("*") if p.is_file() and p.suffix in (".parquet", ".jsonl", ".json")
         and any(fnmatch.fnmatch(str(p.relative_to(root)), pat) for pat in patterns)}
    )  # fmt: skip
    if not files:
        where = f"{config}/{split}" if split else config
        raise UserError(f"{root}: no data files for {where} (patterns {patterns})")
    return files


def _readme_patterns(root: Path, config: str, split: str | None) -> list[str] | None:
    readme = root / "README.md"
    if not readme.exists():
        return None
    text = readme.read_text()
    if not text.startswith("---"):
        return None
    meta = yaml.safe_load(text.split("---")[1]) or {}
    for entry in meta.get("configs") or []:
        if entry.get("config_name") != config:
            continue
        data_files = entry.get("data_files") or []
        if isinstance(data_files, str):
            return [data_files]
        out = []
        for item in data_files:
            if split is None or item.get("split") == split:
                paths = item.get("path")
                out += [paths] if isinstance(paths, str) else list(paths)
        return out
    return None


def iter_parquet_rows(files: Iterable[Path], columns: list[str]) -> Iterator[tuple[Path, int, dict]]:
    """Stream rows as dicts (file, row number, row), naming the file when a column is missing."""
    for path in files:
        try:
            handle = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise UserError(f"{path}: not a readable parquet file ({err})") from err
        missing = [c for c in columns if c not in handle.schema_arrow.names]
        if missing:
            raise UserError(f"{path}: missing column(s) {missing}; has {handle.schema_arrow.names}")
        if handle.metadata.num_rows == 0:
            raise UserError(f"{path}: empty file (no rows)")
        row = 0
        for batch in handle.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            for record in batch.to_pylist():
                yield path, row, record
                row += 1


def iter_jsonl_rows(path: Path) -> Iterator[tuple[Path, int, dict]]:
    """Stream a jsonl file; a truncated or malformed line is an error naming file and line."""
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    with open(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_no}: malformed JSON line ({err.msg})") from err
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object")
            yield path, line_no, row


def load_bright_documents(root: str | Path, split: str) -> Iterator[tuple[str, str]]:
    """(id, content) of one BRIGHT ``documents`` split, streamed."""
    for path, row_no, row in iter_parquet_rows(config_files(root, "documents", split), ["id", "content"]):
        if not isinstance(row["id"], str) or not isinstance(row["content"], str):
            raise UserError(f"{path}: row {row_no}: id and content must be strings")
        yield row["id"], row["content"]


def load_bright_examples(root: str | Path, split: str) -> list[dict[str, Any]]:
    """Queries of one BRIGHT ``examples`` split (small: at most a few hundred rows)."""
    cols = ["id", "query", "gold_ids", "excluded_ids"]
    rows = []
    for path, row_no, row in iter_parquet_rows(config_files(root, "examples", split), cols):
        for col in ("gold_ids", "excluded_ids"):
            if not isinstance(row[col], list):
                raise UserError(f"{path}: row {row_no}: column {col} must be a list of strings")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- triples
def format_query(instruction: str, text: str) -> str:
    """Query text as the model sees it at training and evaluation time.

    Examples
    --------
    >>> format_query("Given a Biology post, retrieve relevant passages", "Why?")
    'Given a Biology post, retrieve relevant passages\\nQuery: Why?'
    >>> format_query("", "Why?")
    'Why?'
    """
    instruction, text = instruction.strip(), text.strip()
    if instruction and text:
        return f"{instruction}\nQuery: {text}"
    return instruction or text


class TripleBuilder:
    """Expands upstream rows into capped (query, positive, negative) triples and counts drops."""

    def __init__(self, *, positives: int, negatives: int, min_chars: int) -> None:
        self.positives, self.negatives, self.min_chars = positives, negatives, min_chars
        self.dropped: Counter[str] = Counter()

    def expand(
        self, *, query: str, instruction: str, pos: list[str], neg: list[str], source: str,
        domain: str,
    ) -> Iterator[dict[str, str]]:  # fmt: skip
        pos = [p for p in pos if len(p.strip()) >= self.min_chars][: self.positives]
        neg = [n for n in neg if len(n.strip()) >= self.min_chars][: self.negatives]
        if not query.strip() or not pos or not neg:
            reason = "no query" if not query.strip() else "no positive" if not pos else "no negative"
            self.dropped[f"{source}: {reason}"] += 1
            return
        for p in pos:
            for n in neg:
                yield {"query": query, "positive": p, "negative": n, "source": source,
                       "domain": domain, "instruction": instruction}  # fmt: skip


def _pair_text(path: Path, row_no: int, col: str, item: Any) -> tuple[str, str]:
    """A gritlm ``[instruction, text]`` pair (or a bare string) → (instruction, text)."""
    if isinstance(item, str):
        return "", item
    if isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0].strip("\t\n :"), item[1]
    raise UserError(f"{path}: row {row_no}: column {col}: expected [instruction, text], got {item!r:.80}")


def reasonir_triples(
    root: Path, config: str, builder: TripleBuilder, id2doc: dict[str, tuple[str, str]] | None,
    counts: Counter[str],
) -> Iterator[dict[str, str]]:  # fmt: skip
    """Triples of reasonir-data ``vl`` (text positives) or ``hq`` (BRIGHT-id positives)."""
    source = f"reasonir/{config}"
    for path, row_no, row in iter_parquet_rows(config_files(root, config, "train"), ["query", "pos", "neg"]):
        q = row["query"]
        instruction, text = _pair_text(path, row_no, "query", q) if isinstance(q, list) else ("", q)
        if not isinstance(text, str):
            raise UserError(f"{path}: row {row_no}: column query must be a string or [instruction, text]")
        positives, domain = [], ""
        for item in row["pos"] or []:
            doc_instr, doc = _pair_text(path, row_no, "pos", item)
            if id2doc is not None:
                counts["hq positive ids"] += 1
                if doc not in id2doc:
                    counts["hq unresolved ids"] += 1
                    continue
                domain, doc = id2doc[doc]
            positives.append(f"{doc_instr} {doc}" if doc_instr else doc)
        negatives = [" ".join(x for x in _pair_text(path, row_no, "neg", n) if x) for n in row["neg"] or []]
        yield from builder.expand(query=format_query(instruction, text), instruction=instruction,
                                  pos=positives, neg=negatives, source=source, domain=domain)  # fmt: skip


BGE_FIELDS = {"prompt": str, "query": str, "pos": list, "neg": list}


def bge_reasoner_triples(
    root: Path, subdir: str | None, splits: list[str], builder: TripleBuilder
) -> Iterator[dict[str, str]]:
    """Triples of the 12 per-domain bge-reasoner jsonl files (``<domain>[-formatted].jsonl``)."""
    folder = root / subdir if subdir else root
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise UserError(f"{folder}: no *.jsonl files (sources.bge_reasoner.subdir?)")
    for path in files:
        domain = path.stem.removesuffix("-formatted")
        if domain not in splits:
            raise UserError(f"{path}: unknown domain file {path.name!r}; expected one of {splits}")
        for _, line_no, row in iter_jsonl_rows(path):
            for key, kind in BGE_FIELDS.items():
                if not isinstance(row.get(key), kind):
                    raise UserError(f"{path}:{line_no}: column {key} must be {kind.__name__}")
            yield from builder.expand(query=format_query(row["prompt"], row["query"]),
                                      instruction=row["prompt"].strip(), pos=row["pos"],
                                      neg=row["neg"], source="bge_reasoner", domain=domain)  # fmt: skip


def bright_id2doc(root: Path, splits: list[str]) -> dict[str, tuple[str, str]]:
    """Merged id → (domain, text) over all BRIGHT documents splits (ids carry no domain)."""
    id2doc: dict[str, tuple[str, str]] = {}
    for split in splits:
        for doc_id, content in load_bright_documents(root, split):
            id2doc.setdefault(doc_id, (split, content))
    return id2doc


# --------------------------------------------------------------------------- contamination
def normalise(text: str) -> str:
    """Lower case, punctuation and runs of white space folded to one space.

    Examples
    --------
    >>> normalise("  Why do Insects -- fly?  ")
    'why do insects fly'
    """
    return " ".join(re.sub(r"[^\w\s]+", " ", text.lower()).split())


class ContaminationAudit:
    """Flags training triples that overlap BRIGHT test queries, per split.

    Two tests: the training query text equals a test query after :func:`normalise`; or the
    training query or positive shares a word ``ngram``-gram with a test query (test queries
    shorter than ``ngram`` words count as one gram).
    """

    def __init__(self, examples: dict[str, list[dict[str, Any]]], ngram: int) -> None:
        self.ngram = ngram
        self.exact: dict[str, set[tuple[str, str]]] = {}
        self.grams: dict[str, set[tuple[str, str]]] = {}
        self.queries = {split: len(rows) for split, rows in examples.items()}
        for split, rows in examples.items():
            for row in rows:
                key = (split, str(row["id"]))
                text = normalise(row["query"])
                self.exact.setdefault(text, set()).add(key)
                for gram in self._grams(text) or [text]:
                    self.grams.setdefault(gram, set()).add(key)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.hit: set[tuple[str, str]] = set()
        self._cache: dict[int, frozenset[tuple[str, str]]] = {}

    def _grams(self, text: str) -> list[str]:
        words = text.split()
        return [" ".join(words[i : i + self.ngram]) for i in range(len(words) - self.ngram + 1)]

    def _overlap(self, text: str) -> frozenset[tuple[str, str]]:
        key = hash(text)
        if key not in self._cache:
            if len(self._cache) > 200_000:  # bounded: positives repeat within a row, not beyond
                self._cache.clear()
            norm = normalise(text)
            found = set(self.exact.get(norm, ()))
            for gram in self._grams(norm):
                found |= self.grams.get(gram, set())
            self._cache[key] = frozenset(found)
        return self._cache[key]

    def check(self, triple: dict[str, str]) -> bool:
        """Count this triple's overlaps; True when it overlaps any test query."""
        text = triple["query"].split("\nQuery: ", 1)[-1] if triple["instruction"] else triple["query"]
        exact = self.exact.get(normalise(text), set())
        in_query = self._overlap(text)
        in_positive = self._overlap(triple["positive"])
        for kind, keys in (("exact_query", exact), ("query_ngram", in_query), ("positive_ngram", in_positive)):
            for split in {k[0] for k in keys}:
                self.counts[(split, kind)] += 1
        self.hit |= exact | in_query | in_positive
        return bool(exact or in_query or in_positive)

    def table(self) -> list[dict[str, Any]]:
        """One row per BRIGHT split: test queries, overlapping training triples, queries hit."""
        return [
            {"split": split, "test_queries": n,
             "triples_exact_query": self.counts[(split, "exact_query")],
             "triples_query_ngram": self.counts[(split, "query_ngram")],
             "triples_positive_ngram": self.counts[(split, "positive_ngram")],
             "test_queries_hit": sum(1 for k in self.hit if k[0] == split)}
            for split, n in self.queries.items()
        ]  # fmt: skip


# --------------------------------------------------------------------------- shards
def _key(seed: int, triple: dict[str, str]) -> bytes:
    text = "\x1f".join(triple[c] for c in ("query", "positive", "negative"))
    return hashlib.blake2b(f"{seed}\x1e{text}".encode(), digest_size=8).digest()


class ShardWriter:
    """Writes fixed-size zstd parquet shards ``part-NNNNN.parquet`` as rows arrive."""

    def __init__(self, out_dir: Path, rows_per_shard: int) -> None:
        self.out_dir, self.rows_per_shard = out_dir, rows_per_shard
        self.buffer: list[dict[str, str]] = []
        self.shards = 0
        self.rows = 0

    def add(self, rows: Iterable[dict[str, str]]) -> None:
        for row in rows:
            self.buffer.append(row)
            if len(self.buffer) == self.rows_per_shard:
                self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        table = pa.Table.from_pylist(self.buffer, schema=SHARD_SCHEMA)
        pq.write_table(table, self.out_dir / f"part-{self.shards:05d}.parquet", compression="zstd")
        self.rows += len(self.buffer)
        self.shards += 1
        self.buffer = []


def shuffle_to_shards(
    triples: Iterable[dict[str, str]], *, out_dir: Path, seed: int, buckets: int, rows_per_shard: int,
) -> tuple[int, int]:  # fmt: skip
    """Shuffle and deduplicate out of core: hash → bucket files → sort each bucket → shards.

    A triple's key is a seeded hash of its text, so identical triples share a bucket and sit
    side by side after the sort: de-duplication needs no global set, and peak memory is one
    bucket (about triples / buckets rows). The order is a pure function of the triples and
    the seed (same bytes on rerun). Returns (rows written, duplicates removed).
    """
    scratch = out_dir / ".buckets"
    scratch.mkdir()
    writers: dict[int, pq.ParquetWriter] = {}
    pending: dict[int, list[dict[str, Any]]] = {}
    bucket_schema = SHARD_SCHEMA.append(pa.field("key", pa.binary()))
    for triple in triples:
        key = _key(seed, triple)
        b = int.from_bytes(key[:4], "big") % buckets
        pending.setdefault(b, []).append({**triple, "key": key})
        if len(pending[b]) >= BATCH_ROWS:
            _flush_bucket(writers, pending, b, scratch, bucket_schema)
    for b in list(pending):
        _flush_bucket(writers, pending, b, scratch, bucket_schema)
    for writer in writers.values():
        writer.close()
    shards = ShardWriter(out_dir, rows_per_shard)
    duplicates = 0
    text = lambda r: (r["query"], r["positive"], r["negative"])  # noqa: E731
    for b in range(buckets):
        path = scratch / f"{b:05d}.parquet"
        if not path.exists():
            continue
        rows = pq.read_table(path).to_pylist()
        rows.sort(key=lambda r: (r["key"], text(r)))
        unique = [r for i, r in enumerate(rows) if i == 0 or text(r) != text(rows[i - 1])]
        duplicates += len(rows) - len(unique)
        shards.add({k: v for k, v in r.items() if k != "key"} for r in unique)
        path.unlink()
    shards.flush()
    scratch.rmdir()
    return shards.rows, duplicates


def _flush_bucket(writers, pending, b, scratch, schema) -> None:
    if not pending.get(b):
        return
    if b not in writers:
        writers[b] = pq.ParquetWriter(scratch / f"{b:05d}.parquet", schema, compression="zstd")
    writers[b].write_table(pa.Table.from_pylist(pending.pop(b), schema=schema))


def _reservoir(rng: random.Random, sample: list, item: Any, seen: int, size: int) -> None:
    if len(sample) < size:
        sample.append(item)
    elif (j := rng.randrange(seen)) < size:
        sample[j] = item


def length_stats(sample: list[dict[str, str]], tokenizer_dir: str | None) -> dict[str, dict[str, float]]:
    """Token-length percentiles of query/positive/negative on a sample (base tokenizer)."""
    import numpy as np

    if not sample:
        return {}
    if tokenizer_dir:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
        count = lambda texts: [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    else:
        count = lambda texts: [len(t.split()) for t in texts]  # noqa: E731
    out = {}
    for col in ("query", "positive", "negative"):
        lengths = np.array(count([r[col] for r in sample]))
        out[col] = {f"p{q}": float(np.percentile(lengths, q)) for q in (5, 25, 50, 75, 95, 99)}
        out[col]["mean"] = float(lengths.mean())
    return out


def build_shards(
    *,
    stage: str,
    stage_sources: list[dict[str, str | None]],
    manifests: dict[str, str],
    out_dir: str | Path,
    stats_path: str | Path,
    splits: list[str],
    positives_per_query: int,
    negatives_per_query: int,
    min_text_chars: int,
    max_unresolved_rate: float,
    rows_per_shard: int,
    shuffle_buckets: int,
    seed: int,
    bge_subdir: str | None = None,
    tokenizer_manifest: str | None = None,
    contamination: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build one stage's parquet triple shards and its ``stats.json``.

    ``manifests`` maps a source name (reasonir, bge_reasoner, bright) to its download manifest.
    ``contamination`` (``{ngram, drop}``) audits the triples against BRIGHT's test queries
    (needs the bright manifest) and, with ``drop``, leaves overlapping triples out.
    """
    roots = {name: Path(read_json(m)["path"]) for name, m in manifests.items()}
    builder = TripleBuilder(positives=positives_per_query, negatives=negatives_per_query,
                            min_chars=min_text_chars)  # fmt: skip
    counts: Counter[str] = Counter()

    def produce() -> Iterator[dict[str, str]]:
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

    rng = random.Random(seed)
    sample: list[dict[str, str]] = []
    per_source: Counter[str] = Counter()

    audit = None
    if contamination is not None:
        examples = {split: load_bright_examples(roots["bright"], split) for split in splits}
        audit = ContaminationAudit(examples, contamination["ngram"])

    kept = [0]  # triples yielded so far (the reservoir's denominator)

    def observed() -> Iterator[dict[str, str]]:
        for triple in produce():
            if audit is not None and audit.check(triple) and contamination["drop"]:
                builder.dropped[f"{triple['source']}: overlaps a BRIGHT test query"] += 1
                continue
            per_source[f"{triple['source']}\t{triple['domain']}"] += 1
            kept[0] += 1
            _reservoir(rng, sample, triple, kept[0], 2000)
            yield triple

    with atomic_dir(out_dir) as tmp:
        rows, duplicates = shuffle_to_shards(observed(), out_dir=tmp, seed=seed,
                                             buckets=shuffle_buckets, rows_per_shard=rows_per_shard)  # fmt: skip
        if rows == 0:
            raise UserError(f"stage {stage}: no triples survived (dropped: {dict(builder.dropped)})")
        unresolved = counts["hq unresolved ids"] / max(1, counts["hq positive ids"])
        if unresolved > max_unresolved_rate:
            raise UserError(
                f"stage {stage}: {unresolved:.1%} of hq positive ids are not BRIGHT document ids "
                f"(> data.max_unresolved_rate={max_unresolved_rate})"
            )
        tokenizer_dir = read_json(tokenizer_manifest)["path"] if tokenizer_manifest else None
        stats = {
            "stage": stage,
            "rows": rows,
            "shards": len(list(tmp.glob("part-*.parquet"))),
            "duplicates_removed": duplicates,
            "rows_by_source_domain": [
                {"source": k.split("\t")[0], "domain": k.split("\t")[1], "rows": v}
                for k, v in sorted(per_source.items())
            ],
            "dropped_rows": dict(sorted(builder.dropped.items())),
            "hq_positive_ids": counts["hq positive ids"],
            "hq_unresolved_ids": counts["hq unresolved ids"],
            "token_lengths": length_stats(sample, tokenizer_dir),
            "schema": {f.name: str(f.type) for f in SHARD_SCHEMA},
            "contamination": None if audit is None else {**contamination, "per_split": audit.table()},
        }
        write_json(tmp / "stats.json", stats)
    write_json(stats_path, stats)
    logger.info("stage %s: %d triples in %d shards", stage, rows, stats["shards"])
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="data stage")
    sub = parser.add_subparsers(dest="cmd", required=True)
    res = sub.add_parser("resolve-revision", help="print the hub's current commit of a repo")
    res.add_argument("--repo", required=True)
    res.add_argument("--repo-type", default="dataset")
    for name, help_ in (("fetch", "fetch_source()"), ("build-shards", "build_shards()")):
        cmd = sub.add_parser(name, help=f"run {help_}")
        cmd.add_argument("--args", required=True, help=f"JSON keyword arguments of {help_}")
    args = parser.parse_args(argv)
    if args.cmd == "resolve-revision":
        print(resolve_revision(args.repo, args.repo_type))
    elif args.cmd == "fetch":
        fetch_source(**json.loads(args.args))
    else:
        build_shards(**json.loads(args.args))


if __name__ == "__main__":
    run_cli(main)
