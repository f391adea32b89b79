"""Data stage: manifests, triple shards, determinism, and one clear line for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import shard_kwargs

from workflow_scripts.bright.meta import SPLITS
from workflow_scripts.cli import to_argv
from workflow_scripts.errors import UserError
from workflow_scripts.shards.build import build_shards
from workflow_scripts.shards.schema import SHARD_SCHEMA
from workflow_scripts.sources.hub import fetch_source


def shards(manifests, out, stage="stage2", **overrides):
    kwargs = dict(
        positives_per_query=2,
        negatives_per_query=4,
        rows_per_shard=100,
        shuffle_buckets=3,
        seed=42,
        bge_subdir="bge-reasoner-data-0904",
        tokenizer_manifest=manifests["base_model"],
    )
    return build_shards(**shard_kwargs(list(manifests.values()), out, stage=stage, **kwargs | overrides))


def test_manifest_lists_every_file_with_hash(manifests, demo_assets):
    data = json.load(open(manifests["bright"]))
    assert data["mode"] == "local" and data["revision"] == "a" * 40
    paths = {f["path"] for f in data["files"]}
    assert {f"examples/{s}-00000-of-00001.parquet" for s in SPLITS} <= paths
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in data["files"])


def test_stage2_shards_have_the_documented_schema(manifests, tmp_path):
    stats = shards(manifests, tmp_path)
    files = sorted((tmp_path / "shards").glob("part-*.parquet"))
    assert len(files) == stats["shards"] > 1
    table = pq.read_table(files[0])
    assert table.schema.equals(SHARD_SCHEMA)
    assert sum(pq.read_metadata(f).num_rows for f in files) == stats["rows"]
    sources = {r["source"] for r in stats["rows_by_source_domain"]}
    assert sources == {"bge_reasoner", "reasonir/hq"}
    # hq positives are BRIGHT ids, resolved to text; the demo plants unresolvable ids
    assert stats["hq_unresolved_ids"] > 0 and stats["dropped_rows"]
    hq = [r for r in table.to_pylist() if r["source"] == "reasonir/hq"]
    assert hq and all("/" not in r["positive"] or " " in r["positive"] for r in hq)
    assert all(r["query"].startswith(r["instruction"] + "\nQuery: ") for r in table.to_pylist() if r["instruction"])
    assert stats["duplicates_removed"] > 0
    assert stats["token_lengths"]["query"]["p50"] > 0


def test_shards_are_byte_identical_on_rerun(manifests, tmp_path):
    shards(manifests, tmp_path / "a")
    shards(manifests, tmp_path / "b")
    for a in sorted((tmp_path / "a/shards").iterdir()):
        assert a.read_bytes() == (tmp_path / "b/shards" / a.name).read_bytes(), a.name


def test_triples_are_capped_per_query(manifests, tmp_path):
    root = Path(json.load(open(manifests["reasonir"]))["path"])
    source_rows = pq.read_metadata(root / "vl/train-00000-of-00001.parquet").num_rows
    one = shards(manifests, tmp_path / "a", stage="stage1", positives_per_query=1, negatives_per_query=1)["rows"]
    two = shards(manifests, tmp_path / "b", stage="stage1", positives_per_query=1, negatives_per_query=2)["rows"]
    assert one <= source_rows < two <= 2 * source_rows


def test_unresolved_rate_above_the_limit_fails(manifests, tmp_path):
    with pytest.raises(UserError, match="not BRIGHT document ids"):
        shards(manifests, tmp_path, max_unresolved_rate=0.0)
    assert not (tmp_path / "shards").exists()  # nothing half-written


def _mirror(manifests, name, tmp_path):
    src = json.load(open(manifests[name]))["path"]
    dst = tmp_path / name
    shutil.copytree(src, dst)
    manifests = dict(manifests)
    manifests[name] = str(tmp_path / f"{name}.m.json")
    fetch_source(
        name=name,
        repo="o/r",
        revision="b" * 40,
        repo_type="dataset",
        local=str(dst),
        cache_dir=tmp_path,
        manifest=manifests[name],
    )
    return dst, manifests


def _pin(manifests, name):
    """Rewrite a copied mirror's manifest after a test damaged it on purpose (readers check it)."""
    data = json.load(open(manifests[name]))
    fetch_source(
        name=name,
        repo=data["repo"],
        revision=data["revision"],
        repo_type=data["repo_type"],
        local=data["path"],
        cache_dir=Path(manifests[name]).parent,
        manifest=manifests[name],
    )


def test_truncated_jsonl_line_is_named(manifests, tmp_path):
    root, m = _mirror(manifests, "bge_reasoner", tmp_path)
    path = root / "bge-reasoner-data-0904/pony.jsonl"
    path.write_text(path.read_text() + '{"prompt": "x", "query": "trunc\n')
    _pin(m, "bge_reasoner")
    with pytest.raises(UserError, match=r"pony.jsonl:\d+: malformed JSON line"):
        shards(m, tmp_path / "out")
    assert not (tmp_path / "out/shards").exists()


def test_unknown_domain_file_is_rejected(manifests, tmp_path):
    root, m = _mirror(manifests, "bge_reasoner", tmp_path)
    shutil.copy(root / "bge-reasoner-data-0904/pony.jsonl", root / "bge-reasoner-data-0904/atlantis.jsonl")
    _pin(m, "bge_reasoner")
    with pytest.raises(UserError, match="unknown domain file 'atlantis.jsonl'"):
        shards(m, tmp_path / "out")


def test_wrong_type_is_named(manifests, tmp_path):
    root, m = _mirror(manifests, "bge_reasoner", tmp_path)
    (root / "bge-reasoner-data-0904/pony.jsonl").write_text(
        '{"prompt": "p", "query": "q", "pos": "not a list", "neg": []}\n'
    )
    _pin(m, "bge_reasoner")
    with pytest.raises(UserError, match=r"pony.jsonl:1: column pos must be list"):
        shards(m, tmp_path / "out")


def test_parquet_missing_column_is_named(manifests, tmp_path):
    root, m = _mirror(manifests, "reasonir", tmp_path)
    path = root / "vl/train-00000-of-00001.parquet"
    pq.write_table(pq.read_table(path).drop(["neg"]), path)
    _pin(m, "reasonir")
    with pytest.raises(UserError, match=r"train-00000-of-00001.parquet: missing column\(s\) \['neg'\]"):
        shards(m, tmp_path / "out", stage="stage1")


def test_revision_must_be_a_sha_or_a_ref_name(tmp_path):
    with pytest.raises(UserError, match="neither a 40-hex commit sha nor a branch or tag name"):
        fetch_source(
            name="bright",
            repo="xlangai/BRIGHT",
            revision="-main",
            repo_type="dataset",
            local=None,
            cache_dir=tmp_path,
            manifest=tmp_path / "m.json",
        )
    # a branch name is resolved on the hub first (tests/test_preflight.py); offline that is one line
    with pytest.raises(UserError, match="sources.bright.revision 'main' is not pinned and cannot be resolved"):
        fetch_source(
            name="bright",
            repo="xlangai/BRIGHT",
            revision="main",
            repo_type="dataset",
            local=None,
            cache_dir=tmp_path,
            manifest=tmp_path / "m.json",
        )


def test_offline_without_mirror_names_the_local_key(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workflow_scripts.data",
            "fetch",
            *to_argv(
                {
                    "name": "bright",
                    "repo": "xlangai/BRIGHT",
                    "revision": "a75a0eb483f6a5233a6efc2d63d71540a4443dfb",
                    "repo_type": "dataset",
                    "local": None,
                    "cache_dir": str(tmp_path),
                    "manifest": str(tmp_path / "m.json"),
                }
            ),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sources.bright.local" in lines[0], proc.stderr
    assert not (tmp_path / "m.json").exists()


def test_missing_local_mirror_is_one_line(tmp_path):
    with pytest.raises(UserError, match="sources.bright.local: directory /nope does not exist"):
        fetch_source(
            name="bright",
            repo="xlangai/BRIGHT",
            revision="a" * 40,
            repo_type="dataset",
            local="/nope",
            cache_dir=tmp_path,
            manifest=tmp_path / "m.json",
        )


def test_contamination_audit_finds_and_drops_test_queries(manifests, tmp_path):
    import pyarrow as pa

    root, m = _mirror(manifests, "reasonir", tmp_path)
    bright = Path(json.load(open(manifests["bright"]))["path"])
    test_query = pq.read_table(bright / "examples/pony-00000-of-00001.parquet")["query"][0].as_py()
    path = root / "vl/train-00000-of-00001.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[0]["query"] = ["Given a Pony post", "  " + test_query.upper() + " "]  # same after normalisation
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    _pin(m, "reasonir")
    kept = shards(m, tmp_path / "keep", stage="stage1", contamination_ngram=8, contamination_drop=False)
    table = {r["split"]: r for r in kept["contamination"]["per_split"]}
    assert table["pony"]["triples_exact_query"] == 2 and table["pony"]["test_queries_hit"] >= 1
    assert table["pony"]["test_queries"] == 6 and table["biology"]["triples_exact_query"] == 0
    dropped = shards(m, tmp_path / "drop", stage="stage1", contamination_ngram=8, contamination_drop=True)
    assert dropped["rows"] == kept["rows"] - 2
    assert dropped["dropped_rows"]["reasonir/vl: overlaps a BRIGHT test query"] == 2


def test_unwritable_output_is_one_line(manifests, tmp_path):
    args = {
        "name": "bright",
        "repo": "o/r",
        "revision": "a" * 40,
        "repo_type": "dataset",
        "local": json.load(open(manifests["bright"]))["path"],
        "cache_dir": str(tmp_path),
        "manifest": "/proc/no-such-dir/bright.manifest.json",
    }  # read-only even for root
    proc = subprocess.run(
        [sys.executable, "-m", "workflow_scripts.data", "fetch", *to_argv(args)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: /proc/no-such-dir"), proc.stderr


def test_empty_file_is_named(manifests, tmp_path):
    root, m = _mirror(manifests, "bge_reasoner", tmp_path)
    (root / "bge-reasoner-data-0904/aops.jsonl").write_text("")
    _pin(m, "bge_reasoner")
    with pytest.raises(UserError, match=r"aops.jsonl: empty file"):
        shards(m, tmp_path / "out")
