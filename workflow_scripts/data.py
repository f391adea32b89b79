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

import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from .bright import bright_id2doc, load_bright_examples
from .bright_meta import SPLITS
from .cli import run_commands
from .common import (
    ZERO_REVISION,
    UserError,
    atomic_dir,
    atomic_file,
    load_config_file,
    one_line,
    read_json,
    sha256_file,
    write_json,
)
from .progress import Progress
from .sources.cards import config_files
from .sources.readers import iter_jsonl_rows, iter_parquet_rows

__all__ = [
    "SHARD_SCHEMA",
    "build_shards",
    "fetch_source",
    "format_query",
    "lock_revisions",
    "resolve_pin",
    "resolve_revision",
    "source_root",
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
REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")  # a commit, or a branch / tag name (main, v1.0)
BATCH_ROWS = 1024
PROGRESS_INTERVAL: float | None = None  # between two progress lines; None: $PROGRESS_INTERVAL_S or 30 s


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

    With ``local`` set the directory is used as is (a mirror); otherwise the revision is
    downloaded with ``huggingface_hub.snapshot_download`` into ``cache_dir``. A revision that
    is not pinned (a branch or tag name such as ``main``, or 40 zeros) is first resolved to
    the commit it points at (:func:`resolve_pin`, one warning line), and that commit is what
    is downloaded and recorded: the manifest's ``revision`` is always the commit the data
    came from when it is known (``configured_revision`` keeps what the config said), and
    ``python -m workflow_scripts.data lock`` writes it back into the config. A mirror made by
    ``huggingface-cli download --local-dir`` records its commit in ``.cache/huggingface``,
    which resolves an unpinned revision the same way.

    The manifest lists every file with size, mtime and sha256, and every reader checks the
    data against it (:func:`source_root`). Its ``path`` is the directory as given: a relative
    ``local`` or ``cache_dir`` stays relative to the working directory, so a moved checkout
    reads its own copy.
    """
    if not REF_RE.match(revision or ""):
        raise UserError(
            f"sources.{name}.revision: {revision!r} is neither a 40-hex commit sha nor a branch or tag name"
        )
    pinned = revision
    if local:
        root = Path(local).expanduser()
        if root.exists() and not root.is_dir():
            raise UserError(
                f"sources.{name}.local: {local} is a file, not a directory (a mirror is a folder laid out like "
                "the hub repository)"
            )
        if not root.is_dir():
            raise UserError(f"sources.{name}.local: directory {local} does not exist")
        if not is_pinned(revision) and (commit := mirror_commit(root)):
            logger.warning("sources.%s.revision %r is not pinned: the mirror %s holds commit %s; pin it with "
                           "`python -m workflow_scripts.data lock --config config.yaml`", name, revision, root, commit)  # fmt: skip
            pinned = commit
    else:
        pinned = revision if is_pinned(revision) else resolve_pin(name=name, repo=repo, repo_type=repo_type,
                                                                   revision=revision)  # fmt: skip
        _snapshot(name=name, repo=repo, revision=pinned, repo_type=repo_type,
                  cache_dir=Path(cache_dir), allow_patterns=allow_patterns)  # fmt: skip
        root = Path(cache_dir) / name  # where snapshot_download put it, not its resolved path
    files = _tree_files(root)
    if not files:
        raise UserError(f"sources.{name}: {root} holds no files")
    if escaped := _outside(root):
        raise UserError(f"sources.{name}.{'local' if local else 'repo'}: {escaped}")
    data = {
        "name": name,
        "repo": repo,
        "repo_type": repo_type,
        "revision": pinned,
        "configured_revision": revision,
        "path": str(root),
        "mode": "local" if local else "hub",
        "files": [_file_entry(root, p) for p in files],
    }
    write_json(manifest, data)
    return data


def _tree_files(root: Path) -> list[Path]:
    """Files under ``root`` in sorted order, without the hub's ``.cache`` bookkeeping."""
    return [p for p in sorted(root.rglob("*")) if p.is_file() and ".cache" not in p.relative_to(root).parts]


def _outside(root: Path) -> str | None:
    """The first entry under ``root`` that is a symlink resolving outside it, in words; None if none.

    A mirror's data is what lies inside it: a link to a system file would otherwise be hashed
    into the manifest and read as data. A folder link is not followed (its target must be
    inside anyway); the hub's ``.cache`` bookkeeping is never read, so not checked.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "m").mkdir(); (d / "m" / "a.jsonl").symlink_to("/etc/hostname")
    >>> print(_outside(d / "m").replace(str(d), "D"))
    D/m/a.jsonl is a symlink to /etc/hostname, outside the mirror D/m; copy the files in (cp -rL) or mirror again
    """
    real = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".cache" or Path(folder) != Path(root)]
        for entry in sorted(dirs + files):
            path = Path(folder, entry)
            target = os.path.realpath(path)
            if path.is_symlink() and target != real and not target.startswith(real.rstrip(os.sep) + os.sep):
                return (
                    f"{path} is a symlink to {target}, outside the mirror {root}; copy the files in (cp -rL) "
                    "or mirror again"
                )
    return None


def _file_entry(root: Path, path: Path) -> dict[str, Any]:
    """One manifest row: the path relative to ``root``, size, mtime (ns) and sha256."""
    stat = path.stat()
    return {"path": path.relative_to(root).as_posix(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256_file(path)}  # fmt: skip


def source_root(manifest: str | Path) -> Path:
    """The directory a download manifest describes, checked against the manifest.

    Every listed file must exist with its recorded size; a file whose mtime differs (a copied
    checkout) is hashed again and must keep its sha256; a file the manifest does not list, or
    a symlink resolving outside the directory, is a change too. A relative
    ``path`` resolves against the working directory. Any difference is one line naming the
    file and the fix: rerun the download.

    Parameters
    ----------
    manifest
        A ``resources/sources/<name>.manifest.json`` written by :func:`fetch_source`.

    Returns
    -------
    The directory, as the manifest gives it (relative or absolute).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "src").mkdir(); _ = (d / "src" / "a.jsonl").write_text("{}")
    >>> _ = fetch_source(name="x", repo="o/x", revision="a" * 40, repo_type="dataset",
    ...                  local=str(d / "src"), cache_dir=d, manifest=d / "x.json")
    >>> source_root(d / "x.json") == d / "src"
    True
    >>> _ = (d / "src" / "b.jsonl").write_text("{}")
    >>> source_root(d / "x.json")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workflow_scripts.common.UserError: .../src/b.jsonl: changed since its download manifest .../x.json was written (not listed in it); rerun the download (snakemake --forcerun download)
    """
    data = read_json(manifest)
    if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not isinstance(data.get("files"), list):
        raise UserError(f"{manifest}: not a download manifest (no path and files); rerun the download "
                        "(snakemake --forcerun download)")  # fmt: skip
    root = Path(data["path"])
    if not root.is_dir():
        raise UserError(_changed(root, manifest, "directory missing"))
    if escaped := _outside(root):
        raise UserError(_changed(root, manifest, escaped))
    for entry in data["files"]:
        problem = _file_problem(root / entry["path"], entry)
        if problem:
            raise UserError(_changed(root / entry["path"], manifest, problem))
    listed = {entry["path"] for entry in data["files"]}
    for path in _tree_files(root):  # any file: a reader or loader may pick up what it finds
        if path.relative_to(root).as_posix() not in listed:
            raise UserError(_changed(path, manifest, "not listed in it"))
    return root


def _file_problem(path: Path, entry: dict[str, Any]) -> str | None:
    """How ``path`` differs from its manifest row, or None; hashes only when the mtime moved."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if stat.st_size != entry["size"]:
        return f"size {stat.st_size}, was {entry['size']}"
    if stat.st_mtime_ns == entry.get("mtime_ns"):  # older manifests have no mtime: hash
        return None
    if sha256_file(path) != entry["sha256"]:
        return "same size, other content: sha256 differs"
    return None


def _changed(path: Path, manifest: str | Path, problem: str) -> str:
    return (f"{path}: changed since its download manifest {manifest} was written ({problem}); "
            "rerun the download (snakemake --forcerun download)")  # fmt: skip


def _snapshot(
    *, name: str, repo: str, revision: str, repo_type: str, cache_dir: Path,
    allow_patterns: list[str] | None,
) -> Path:  # fmt: skip
    """Download a pinned hub snapshot; offline or unreachable → one line naming the key."""
    if not is_pinned(revision):  # fetch_source resolves first: a branch here would be a moving target
        raise UserError(f"sources.{name}.revision {revision!r}: only a commit sha is downloaded (resolve it first)")
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


def is_pinned(revision: str) -> bool:
    """True for a 40-hex commit sha other than the "not pinned yet" 40 zeros.

    Examples
    --------
    >>> is_pinned("a75a0eb483f6a5233a6efc2d63d71540a4443dfb"), is_pinned("main"), is_pinned("0" * 40)
    (True, False, False)
    """
    return bool(REVISION_RE.match(revision)) and revision != ZERO_REVISION


def resolve_revision(repo: str, repo_type: str, revision: str | None = None) -> str:
    """The commit sha ``revision`` (a branch or tag; None: the default branch) of ``repo`` points at on the hub."""
    from huggingface_hub import HfApi

    return HfApi().repo_info(repo, repo_type=repo_type, revision=revision).sha


def resolve_pin(*, name: str, repo: str, repo_type: str, revision: str) -> str:
    """The commit an unpinned ``sources.<name>.revision`` points at now, with one warning line.

    40 zeros ("not pinned yet") mean the default branch. Offline or unknown: one line naming
    the keys that fix it.
    """
    ref = None if revision == ZERO_REVISION else revision
    try:
        sha = resolve_revision(repo, repo_type, ref)
    except Exception as err:  # offline mode, DNS, 404, a branch that does not exist
        raise UserError(
            f"sources.{name}.revision {revision!r} is not pinned and cannot be resolved on the hub "
            f"({type(err).__name__}); set sources.{name}.revision to a commit sha, or sources.{name}.local to a mirror"
        ) from err
    if not is_pinned(sha or ""):
        raise UserError(f"sources.{name}.revision {revision!r}: the hub answered {sha!r}, not a commit sha")
    logger.warning("sources.%s.revision %r is not pinned: resolved to %s on the hub; pin it with "
                   "`python -m workflow_scripts.data lock --config config.yaml`", name, revision, sha)  # fmt: skip
    return sha


def mirror_commit(root: Path) -> str | None:
    """The one commit a ``huggingface-cli download --local-dir`` mirror records for all its files, or None.

    The CLI keeps ``.cache/huggingface/download/<file>.metadata`` per file; its first line is
    the commit the file came from.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> mirror_commit(root) is None
    True
    >>> meta = root / ".cache/huggingface/download/vl"
    >>> meta.mkdir(parents=True)
    >>> _ = (meta / "train.parquet.metadata").write_text("c" * 40 + "\\netag\\n1.0\\n")
    >>> mirror_commit(root) == "c" * 40
    True
    """
    folder = root / ".cache" / "huggingface" / "download"
    commits = {path.read_text().split("\n", 1)[0].strip() for path in folder.rglob("*.metadata")}
    if len(commits) != 1:  # none recorded, or files from several commits: no single answer
        return None
    commit = commits.pop()
    return commit if is_pinned(commit) else None






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
            for key in ("pos", "neg"):
                if not all(isinstance(text, str) for text in row[key]):
                    raise UserError(f"{path}:{line_no}: column {key} must be list of strings")
            yield from builder.expand(query=format_query(row["prompt"], row["query"]),
                                      instruction=row["prompt"].strip(), pos=row["pos"],
                                      neg=row["neg"], source="bge_reasoner", domain=domain)  # fmt: skip


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
    label: str = "shuffle",
) -> tuple[int, int]:  # fmt: skip
    """Shuffle and deduplicate out of core: hash → bucket files → sort each bucket → shards.

    A triple's key is a seeded hash of its text, so identical triples share a bucket and sit
    side by side after the sort: de-duplication needs no global set, and peak memory is one
    bucket (about triples / buckets rows). The order is a pure function of the triples and
    the seed (same bytes on rerun). Returns (rows written, duplicates removed).

    Both passes log ``label: N rows, R rows/s`` lines every ``PROGRESS_INTERVAL`` seconds
    (the second with a total and an ETA), so a multi-hour build shows where it is.
    """
    scratch = out_dir / ".buckets"
    scratch.mkdir()
    writers: dict[int, pq.ParquetWriter] = {}
    pending: dict[int, list[dict[str, Any]]] = {}
    bucket_schema = SHARD_SCHEMA.append(pa.field("key", pa.binary()))
    # reading, expanding and hashing the sources is the long pass; its total is unknown
    reading = Progress(f"{label}: read + bucket", total=None, unit="rows", interval=PROGRESS_INTERVAL, log=logger.info)
    for triple in triples:
        reading.update()
        key = _key(seed, triple)
        b = int.from_bytes(key[:4], "big") % buckets
        pending.setdefault(b, []).append({**triple, "key": key})
        if len(pending[b]) >= BATCH_ROWS:
            _flush_bucket(writers, pending, b, scratch, bucket_schema)
    for b in list(pending):
        _flush_bucket(writers, pending, b, scratch, bucket_schema)
    for writer in writers.values():
        writer.close()
    reading.close()
    shards = ShardWriter(out_dir, rows_per_shard)
    writing = Progress(f"{label}: sort + write shards", total=reading.done, unit="rows", interval=PROGRESS_INTERVAL,
                       log=logger.info)  # fmt: skip
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
        writing.update(len(rows))  # rows read back, duplicates included: the total counts them too
    shards.flush()
    writing.close()
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


def _source_roots(manifests: list[str]) -> dict[str, Path]:
    """Source name -> its directory, from download manifests (each names its source), verified."""
    roots = {}
    for manifest in manifests:
        root = source_root(manifest)  # first: a malformed manifest is one line, not a KeyError
        roots[read_json(manifest)["name"]] = root
    return roots


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
    """
    pa.set_cpu_count(threads)
    # BRIGHT has 12 domains whatever subset is evaluated: hq ids resolve against all of them
    splits = splits or SPLITS
    contamination = None if contamination_ngram is None else {"ngram": contamination_ngram, "drop": contamination_drop}
    roots = _source_roots(manifests)
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
        rows, duplicates = shuffle_to_shards(observed(), out_dir=tmp, seed=seed, label=f"build_shards {stage}",
                                             buckets=shuffle_buckets, rows_per_shard=rows_per_shard)  # fmt: skip
        if rows == 0:
            raise UserError(f"stage {stage}: no triples survived (dropped: {dict(builder.dropped)})")
        unresolved = counts["hq unresolved ids"] / max(1, counts["hq positive ids"])
        if unresolved > max_unresolved_rate:
            raise UserError(
                f"stage {stage}: {unresolved:.1%} of hq positive ids are not BRIGHT document ids "
                f"(> data.max_unresolved_rate={max_unresolved_rate})"
            )
        tokenizer_dir = str(source_root(tokenizer_manifest)) if tokenizer_manifest else None
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


def print_revision(*, repo: str, repo_type: str = "dataset", revision: str | None = None) -> None:
    """Print the commit a branch or tag (default: the default branch) points at on the hub."""
    print(resolve_revision(repo, repo_type, revision))


# --------------------------------------------------------------------------- lock
def _locked_sources(config: dict[str, Any]) -> dict[tuple[str, ...], str]:
    """Config path of each source's revision -> the download manifest that records its commit.

    ``sources.<name>`` is downloaded as ``<name>``; ``evaluate_models.<name>`` as
    ``model_<name>``, or as ``base_model`` when it is the same source (one download, as the
    workflow does). Entries without a ``revision`` key (an overlay) are skipped.

    Examples
    --------
    >>> base = {"repo": "m/b", "revision": "main"}
    >>> _locked_sources({"sources": {"base_model": base}, "evaluate_models": {"base": dict(base), "x": {"repo": "m/x"}}})
    {('sources', 'base_model', 'revision'): 'base_model', ('evaluate_models', 'base', 'revision'): 'base_model'}
    """
    sources = config.get("sources") or {}
    out = {("sources", name, "revision"): name for name, src in sources.items() if "revision" in (src or {})}
    for name, src in (config.get("evaluate_models") or {}).items():
        if "revision" in (src or {}):
            same = src == sources.get("base_model")
            out[("evaluate_models", name, "revision")] = "base_model" if same else f"model_{name}"
    return out


def _scalar_spans(text: str, paths: list[tuple[str, ...]]) -> dict[tuple[str, ...], tuple[int, int]]:
    """Character span of the scalar at each mapping path of a YAML document (comments untouched).

    Examples
    --------
    >>> text = "sources:\\n  a:\\n    revision: main  # moving\\n"
    >>> start, end = _scalar_spans(text, [("sources", "a", "revision")])[("sources", "a", "revision")]
    >>> text[start:end]
    'main'
    """
    spans, root = {}, yaml.compose(text)
    for path in paths:
        node = root
        for key in path:
            children = node.value if isinstance(node, yaml.MappingNode) else []
            node = next((value for name, value in children if name.value == key), None)
        if isinstance(node, yaml.ScalarNode):
            spans[path] = (node.start_mark.index, node.end_mark.index)
    return spans


def lock_revisions(*, config: str, manifest_dir: str = "resources/sources") -> list[str]:
    """Pin every unpinned revision of ``config`` to the commit its download recorded, in place.

    A revision that is a branch or tag name (``main``) or 40 zeros is replaced by the commit
    in its download manifest (:func:`fetch_source` resolved it), when the manifest is of the
    same repository. Only those values change: comments, order and every other byte of the
    file stay; a pinned sha is never touched. Prints and returns one line per change (or why
    a revision stays unpinned).
    """
    path = Path(config)
    data = load_config_file(path)  # a duplicate key or a YAML tag: one line naming the file
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"{config}: cannot read the config ({one_line(err)})") from err
    wanted, lines = {}, []
    for keys, source in _locked_sources(data).items():
        entry, where = _get(data, keys[:-1]), ".".join(keys)
        if is_pinned(str(entry["revision"])):
            continue
        manifest = Path(manifest_dir) / f"{source}.manifest.json"
        recorded = read_json(manifest) if manifest.exists() else {}
        if recorded.get("repo") != entry.get("repo") or not is_pinned(str(recorded.get("revision", ""))):
            lines.append(f"{where}: {entry['revision']!r} stays: {manifest} records no commit of {entry.get('repo')} "
                         "(download it first)")  # fmt: skip
            continue
        wanted[keys] = recorded["revision"]
        lines.append(f"{where}: {entry['revision']!r} -> {recorded['revision']}")
    spans = _scalar_spans(text, list(wanted))
    for keys in sorted(wanted, key=lambda k: spans[k][0], reverse=True):  # from the end: earlier spans stay valid
        start, end = spans[keys]
        text = f'{text[:start]}"{wanted[keys]}"{text[end:]}'
    if wanted:
        with atomic_file(path) as handle:
            handle.write(text)
    for line in lines or [f"{config}: every revision is pinned already"]:
        print(line)
    return lines


def _get(data: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        data = data[key]
    return data


def main(argv: list[str] | None = None) -> None:
    run_commands({"fetch": fetch_source, "build-shards": build_shards, "resolve-revision": print_revision,
                  "lock": lock_revisions}, argv)  # fmt: skip


if __name__ == "__main__":
    main()
