"""Inputs that must not give a silent wrong score: pinned mirrors, BRIGHT invariants, TREC files, bytes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import shard_kwargs

from workflow_scripts.errors import UserError
from workflow_scripts.evaluate.job import evaluate_split
from workflow_scripts.evaluate.trec import read_qrels, read_run, score_run
from workflow_scripts.shards.build import build_shards
from workflow_scripts.sources.cards import config_files
from workflow_scripts.sources.hub import fetch_source
from workflow_scripts.synthetic.demo import DOCUMENTS_SCHEMA, EXAMPLES_SCHEMA

TEMPLATE = "Given a {domain} post, retrieve relevant passages that help answer the post.\nQuery: {query}"
CHANGED = r"changed since its download manifest .* was written .*; rerun the download \(snakemake --forcerun download\)"


def mirror(demo_assets: Path, sub: str, dst: Path, name: str) -> tuple[Path, str]:
    """A private copy of a demo mirror (to damage) and the download manifest written for it."""
    root = dst / sub
    shutil.copytree(demo_assets / sub, root)
    manifest = dst / f"{name}.manifest.json"
    fetch_source(
        name=name,
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local=str(root),
        cache_dir=dst / "hub",
        manifest=manifest,
    )
    return root, str(manifest)


def stage2(manifest: str, out: Path) -> dict:
    return build_shards(
        **shard_kwargs(
            [manifest],
            out,
            stage="stage2",
            stage_sources=[{"source": "bge_reasoner", "config": None}],
            positives_per_query=2,
            negatives_per_query=4,
            rows_per_shard=100,
            seed=1,
            bge_subdir="bge-reasoner-data-0904",
        )
    )


def evaluate(demo_assets: Path, bright_manifest: str, out: Path, split: str = "biology") -> dict:
    return evaluate_split(
        model_path=str(demo_assets / "base-model"),
        model_name="base",
        bright_manifest=bright_manifest,
        split=split,
        out_json=str(out / "r.json"),
        run_file=str(out / "r.trec"),
        query_template=TEMPLATE,
        domain="Biology",
        query_length=32,
        document_length=48,
        exclude_ids=True,
        top_k=100,
        chunk_size=16,
        encode_batch_size=8,
    )


# --------------------------------------------------------------------------- manifests pin the data
def test_manifest_keeps_a_relative_local_path_and_records_mtimes(demo_assets, tmp_path, monkeypatch):
    shutil.copytree(demo_assets / "BRIGHT", tmp_path / "mirrors/BRIGHT")
    monkeypatch.chdir(tmp_path)
    data = fetch_source(
        name="bright",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local="mirrors/BRIGHT",
        cache_dir="resources/hub",
        manifest="m.json",
    )
    assert data["path"] == "mirrors/BRIGHT" == json.loads(Path("m.json").read_text())["path"]
    for entry in data["files"]:
        assert entry["mtime_ns"] == (tmp_path / "mirrors/BRIGHT" / entry["path"]).stat().st_mtime_ns


def test_a_hub_download_into_a_relative_cache_stays_relative(demo_assets, tmp_path, monkeypatch):
    from workflow_scripts.sources import hub
    from workflow_scripts.sources.manifest import source_root

    def snapshot(*, name, cache_dir, **_):  # snapshot_download returns the resolved local_dir
        shutil.copytree(demo_assets / "BRIGHT", cache_dir / name)
        return (cache_dir / name).resolve()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(hub, "_snapshot", snapshot)
    written = fetch_source(
        name="bright",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local=None,
        cache_dir="resources/hub",
        manifest="resources/sources/bright.manifest.json",
    )
    assert written["path"] == "resources/hub/bright" and written["mode"] == "hub"
    assert source_root("resources/sources/bright.manifest.json") == Path("resources/hub/bright")


def test_a_moved_checkout_reads_its_own_copy(demo_assets, tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(demo_assets / "bge-reasoner-data", old / "resources/mirror")
    monkeypatch.chdir(old)
    fetch_source(
        name="bge_reasoner",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local="resources/mirror",
        cache_dir="resources/hub",
        manifest="resources/sources/bge.json",
    )
    shutil.copytree(old, new, copy_function=shutil.copy)  # new mtimes, same bytes
    shutil.rmtree(old)
    monkeypatch.chdir(new)
    files = json.loads(Path("resources/sources/bge.json").read_text())["files"]
    assert all(Path("resources/mirror", f["path"]).stat().st_mtime_ns != f["mtime_ns"] for f in files)  # hashed again
    stats = stage2("resources/sources/bge.json", new / "out")
    assert stats["rows"] > 0


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: p.write_bytes(p.read_bytes().replace(b"a", b"e", 1)), "content"),  # same size
        (lambda p: p.write_bytes(p.read_bytes() + b"\n"), "size"),
        (lambda p: p.unlink(), "missing"),
        (lambda p: shutil.copy(p, p.with_name("atlantis.jsonl")), "not listed"),
    ],
    ids=["same-size-edit", "grown", "deleted", "extra-file"],
)
def test_a_changed_mirror_file_is_refused_in_one_line(demo_assets, tmp_path, damage, problem):
    root, manifest = mirror(demo_assets, "bge-reasoner-data", tmp_path, "bge_reasoner")
    pony = root / "bge-reasoner-data-0904/pony.jsonl"
    damage(pony)
    with pytest.raises(UserError, match=CHANGED) as err:
        stage2(manifest, tmp_path / "out")
    assert problem in str(err.value) and "\n" not in str(err.value)
    assert ("atlantis.jsonl" if problem == "not listed" else "pony.jsonl") in str(err.value)


def test_an_extra_bright_shard_is_refused_not_scored(demo_assets, tmp_path):
    root, manifest = mirror(demo_assets, "BRIGHT", tmp_path, "bright")
    shutil.copy(root / "documents/biology-00000-of-00001.parquet", root / "documents/biology-00001-of-00001.parquet")
    with pytest.raises(UserError, match="biology-00001-of-00001.parquet: " + CHANGED):
        evaluate(demo_assets, manifest, tmp_path)


def test_model_manifest_is_verified(demo_assets, tmp_path):
    from workflow_scripts.model.load import model_dir

    root, manifest = mirror(demo_assets, "base-model", tmp_path, "base_model")
    assert model_dir(manifest) == root
    config = root / "config.json"
    config.write_text(config.read_text().replace("64", "65", 1))
    with pytest.raises(UserError, match="config.json: " + CHANGED):
        model_dir(manifest)


# --------------------------------------------------------------------------- BRIGHT invariants
def rewrite(path: Path, schema: pa.Schema, edit) -> None:
    rows = pq.read_table(path).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _gold_excluded(rows):
    rows[1]["excluded_ids"] = [rows[1]["gold_ids"][0]]


def _duplicate_query(rows):
    rows[2]["id"] = rows[1]["id"]


def _null_excluded(rows):
    rows[0]["excluded_ids"] = [None]


def _null_query(rows):
    rows[3]["query"] = None


def _duplicate_document(rows):
    rows[5]["id"] = rows[4]["id"]


def _other_corpus(rows):
    for row in rows:
        row["id"] = "elsewhere/" + row["id"]


@pytest.mark.parametrize(
    "config, edit, message",
    [
        ("examples", _gold_excluded, r"row 1: excluded_ids and gold_ids share \['biology_topic1/gold_0.txt'\]"),
        ("examples", _duplicate_query, r"row 2: query id '1' appears twice"),
        ("examples", _null_excluded, r"row 0: excluded_ids must be a list of strings"),
        ("examples", _null_query, r"row 3: query must be a string"),
        ("documents", _duplicate_document, r"row 5: document id '.*' appears twice"),
        ("documents", _other_corpus, r"none of the \d+ gold ids of the split is one of its \d+ document ids"),
    ],
    ids=[
        "gold-excluded-overlap",
        "duplicate-query-id",
        "excluded-not-strings",
        "query-not-a-string",
        "duplicate-document-id",
        "gold-ids-of-another-corpus",
    ],
)
def test_a_mirror_breaking_brights_invariants_is_refused(demo_assets, tmp_path, config, edit, message):
    root = tmp_path / "BRIGHT"
    shutil.copytree(demo_assets / "BRIGHT", root)
    path = root / f"{config}/biology-00000-of-00001.parquet"
    rewrite(path, EXAMPLES_SCHEMA if config == "examples" else DOCUMENTS_SCHEMA, edit)
    manifest = tmp_path / "bright.json"
    fetch_source(
        name="bright",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local=str(root),
        cache_dir=tmp_path,
        manifest=manifest,
    )
    with pytest.raises(UserError, match=message) as err:
        evaluate(demo_assets, str(manifest), tmp_path / "out")
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
    assert not (tmp_path / "out/r.json").exists()


def test_legal_but_odd_bright_rows_are_counted_in_the_result(demo_assets, tmp_path):
    root = tmp_path / "BRIGHT"
    shutil.copytree(demo_assets / "BRIGHT", root)

    def odd_examples(rows):
        rows[0]["gold_ids"] = []  # no gold: pytrec_eval does not score it
        rows[1]["gold_ids"] = rows[1]["gold_ids"] + ["gone/0.txt"]  # one gold id not in the corpus
        rows[2]["excluded_ids"] = ["gone/1.txt", "gone/2.txt"]  # excluded ids not in the corpus
        rows[3]["gold_ids"] = ["gone/3.txt"]  # no gold id in the corpus: scores 0 whatever the model

    def odd_documents(rows):
        rows[-1]["content"] = "  "
        rows[-2]["content"] = ""

    rewrite(root / "examples/biology-00000-of-00001.parquet", EXAMPLES_SCHEMA, odd_examples)
    rewrite(root / "documents/biology-00000-of-00001.parquet", DOCUMENTS_SCHEMA, odd_documents)
    manifest = tmp_path / "bright.json"
    fetch_source(
        name="bright",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local=str(root),
        cache_dir=tmp_path,
        manifest=manifest,
    )
    result = evaluate(demo_assets, str(manifest), tmp_path)
    checks = json.loads((tmp_path / "r.json").read_text())["data_checks"]
    assert checks == result["data_checks"]
    assert checks["queries_without_gold_ids"] == 1
    assert checks["gold_ids_not_in_documents"] == 2
    assert checks["queries_without_gold_in_documents"] == 1
    assert checks["excluded_ids_not_in_documents"] == 2
    assert checks["empty_documents"] == 2
    assert result["protocol"]["queries"] == 6


def test_the_demo_split_is_clean(demo_assets, manifests, tmp_path):
    checks = evaluate(demo_assets, manifests["bright"], tmp_path, split="pony")["data_checks"]
    assert checks["queries"] == 6 and checks["documents"] > 24
    assert not {k: v for k, v in checks.items() if k not in ("queries", "documents", "excluded_ids") and v}


# --------------------------------------------------------------------------- TREC files
@pytest.mark.parametrize(
    "kind, text, message",
    [
        ("run", b"", r"run: empty file \(no 'qid Q0 docid rank score tag' lines\)"),
        ("qrels", b"\n  \n", r"qrels: empty file \(no 'qid iter docid rel' lines\)"),
        ("run", b"q1 Q0 a 1 1.0 t\nq1 Q0 b 2 nan t\n", r"run:2: score 'nan' is not a finite number"),
        ("run", b"q1 Q0 a 1 inf t\n", r"run:1: score 'inf' is not a finite number"),
        ("run", b"q1 Q0 a 1 -Infinity t\n", r"run:1: score '-Infinity' is not a finite number"),
        ("run", b"q1 Q0 a 1 2.0 t\nq2 Q0 a 1 2.0 t\nq1 Q0 a 2 1.0 t\n", r"run:3: repeated \(q1, a\), first on line 1"),
        ("qrels", b"q1 0 a 1\nq1 0 a 0\n", r"qrels:2: repeated \(q1, a\), first on line 1"),
        ("qrels", b"q1 0 a 1\nq1 0 \xff\xfe 1\n", r"qrels:2: not valid UTF-8"),
    ],
    ids=[
        "empty-run",
        "blank-qrels",
        "nan",
        "inf",
        "-Infinity",
        "repeated-run-line",
        "repeated-qrels-line",
        "undecodable",
    ],
)
def test_malformed_trec_files_are_refused(tmp_path, kind, text, message):
    path = tmp_path / kind
    path.write_bytes(text)
    with pytest.raises(UserError, match=message) as err:
        (read_run if kind == "run" else read_qrels)(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def test_score_run_cli_refuses_undecodable_bytes_in_one_line(tmp_path):
    (tmp_path / "qrels").write_text("q1 0 a 1\n")
    (tmp_path / "run").write_bytes(b"q1 Q0 a 1 1.0 t\nq1 Q0 \xc3( 2 0.5 t\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workflow_scripts.evaluate.job",
            "score-run",
            "--qrels",
            str(tmp_path / "qrels"),
            "--run",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'run'}:2: not valid UTF-8"]


def test_qrels_queries_missing_from_the_run_are_a_warning(caplog):
    qrels = {f"q{i}": {"a": 1} for i in range(8)}
    run = {"q0": {"a": 1.0}, "q3": {"b": 1.0}}
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.evaluate.job"):
        res = score_run(qrels, run)
    assert res["queries"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "6 of 8 qrels queries have no line in the run" in warnings[0] and "q1, q2, q4" in warnings[0]


def test_a_run_sharing_no_query_with_the_qrels_is_refused():
    with pytest.raises(UserError, match=r"nothing to score: none of the 1 judged qrels queries is in the run"):
        score_run({"q1": {"a": 1}}, {"q9": {"a": 1.0}})


# --------------------------------------------------------------------------- bytes and front matter
def test_undecodable_jsonl_line_is_one_line(demo_assets, tmp_path):
    root = tmp_path / "bge"
    shutil.copytree(demo_assets / "bge-reasoner-data", root)
    path = root / "bge-reasoner-data-0904/pony.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"prompt": "p\xe9", "query": "q", "pos": [], "neg": []}\n' + b"".join(lines[1:]))
    manifest = tmp_path / "bge.json"
    fetch_source(
        name="bge_reasoner",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local=str(root),
        cache_dir=tmp_path,
        manifest=manifest,
    )
    with pytest.raises(UserError, match=r"pony.jsonl:2: not valid UTF-8$"):
        stage2(str(manifest), tmp_path / "out")


def test_non_string_jsonl_texts_are_named(demo_assets, tmp_path):
    root = tmp_path / "bge"
    shutil.copytree(demo_assets / "bge-reasoner-data", root)
    (root / "bge-reasoner-data-0904/pony.jsonl").write_text('{"prompt": "p", "query": "q", "pos": [3], "neg": []}\n')
    manifest = tmp_path / "bge.json"
    fetch_source(
        name="bge_reasoner",
        repo="o/r",
        revision="c" * 40,
        repo_type="dataset",
        local=str(root),
        cache_dir=tmp_path,
        manifest=manifest,
    )
    with pytest.raises(UserError, match=r"pony.jsonl:1: column pos must be list of strings"):
        stage2(str(manifest), tmp_path / "out")


@pytest.mark.parametrize(
    "readme, message",
    [
        (b"---\nconfigs: [\n---\n", r"README.md:3: front matter is not valid YAML"),
        (b"---\n- a list\n---\n", r"README.md: front matter is not a mapping"),
        (b"---\nconfigs:\n- config_name: examples\n  data_files: 3\n---\n", r"README.md: configs\[0\].data_files"),
        (b"---\nconfigs: []\n---\n\xff\n", r"README.md: not valid UTF-8"),
    ],
    ids=["broken-yaml", "not-a-mapping", "bad-data-files", "undecodable"],
)
def test_a_broken_dataset_card_is_one_line(demo_assets, tmp_path, readme, message):
    root = tmp_path / "BRIGHT"
    shutil.copytree(demo_assets / "BRIGHT", root)
    (root / "README.md").write_bytes(readme)
    with pytest.raises(UserError, match=message):
        config_files(root, "examples", "biology")


def test_corrupt_parquet_pages_are_named(demo_assets, tmp_path):
    path = tmp_path / "documents/biology-00000-of-00001.parquet"
    path.parent.mkdir()
    table = pq.read_table(demo_assets / "BRIGHT/documents/biology-00000-of-00001.parquet")
    pq.write_table(table, path, compression="zstd")
    data = bytearray(path.read_bytes())
    data[8:200] = bytes(192)  # the first data pages; the footer stays readable
    path.write_bytes(bytes(data))
    from workflow_scripts.bright.load import load_bright_documents

    with pytest.raises(UserError, match=r"biology-00000-of-00001.parquet: not a readable parquet file"):
        list(load_bright_documents(tmp_path, "biology"))


# --------------------------------------------------------------------------- issue 25: security
def _link_file_out(root: Path, outside: Path) -> Path:
    target = root / "bge-reasoner-data-0904/pony.jsonl"
    shutil.move(target, outside / "pony.jsonl")
    target.symlink_to(outside / "pony.jsonl")
    return target


def _link_relative_up(root: Path, outside: Path) -> Path:
    link = root / "bge-reasoner-data-0904/extra.jsonl"
    (outside / "extra.jsonl").write_text("{}\n")
    link.symlink_to(Path("../..") / outside.name / "extra.jsonl")
    return link


def _link_folder_out(root: Path, outside: Path) -> Path:
    (outside / "more").mkdir()
    (outside / "more/a.jsonl").write_text("{}\n")
    (root / "more").symlink_to(outside / "more", target_is_directory=True)
    return root / "more"


def _link_chain_out(root: Path, outside: Path) -> Path:
    (outside / "secret.jsonl").write_text("{}\n")
    (root / "hop.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "bge-reasoner-data-0904/chain.jsonl").symlink_to(root / "hop.jsonl")  # inside, to a link out
    return root / "hop.jsonl"  # the first one found (both resolve outside)


@pytest.mark.parametrize("link", [_link_file_out, _link_relative_up, _link_folder_out, _link_chain_out])
def test_security_mirror_files_stay_inside(demo_assets, tmp_path, link):
    """A mirror's files resolve inside it: a link out is refused at download, in one line, and nothing is written;
    one made after the download is refused by every reader."""
    root = shutil.copytree(demo_assets / "bge-reasoner-data", tmp_path / "mirror")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    manifest = tmp_path / "m.json"
    fetch = dict(name="bge_reasoner", repo="o/r", revision="c" * 40, repo_type="dataset", local=str(root))
    fetch.update(cache_dir=tmp_path / "hub", manifest=manifest)
    fetch_source(**fetch)  # a clean mirror: written
    bad = link(root, outside)
    with pytest.raises(UserError, match=r"outside the mirror") as err:
        stage2(str(manifest), tmp_path / "out")  # the link appeared after the download
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    manifest.unlink()
    with pytest.raises(UserError, match=r"^sources\.bge_reasoner\.local: .* outside the mirror") as err:
        fetch_source(**fetch)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    assert not manifest.exists()
