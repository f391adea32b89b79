"""Evaluation: exact MaxSim equals PyLate's rank.rerank, BRIGHT protocol, metrics by hand."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import pytrec_eval
import torch

from workflow_scripts.bright.load import load_bright_documents, load_bright_examples
from workflow_scripts.evaluate.job import evaluate_split
from workflow_scripts.evaluate.maxsim import maxsim_scores
from workflow_scripts.evaluate.scores import TopK
from workflow_scripts.evaluate.trec import read_run, score_run
from workflow_scripts.model.load import load_colbert

TEMPLATE = "Given a {domain} post, retrieve relevant passages that help answer the post.\nQuery: {query}"


def run_split(demo_assets, manifests, tmp_path, split="biology", **overrides):
    kwargs = dict(
        model_path=str(demo_assets / "base-model"),
        model_name="base",
        bright_manifest=manifests["bright"],
        split=split,
        out_json=str(tmp_path / "r.json"),
        run_file=str(tmp_path / "r.trec"),
        query_template=TEMPLATE,
        domain="Biology",
        query_length=32,
        document_length=48,
        exclude_ids=True,
        top_k=1000,
        chunk_size=7,
        encode_batch_size=8,
    )
    kwargs.update(overrides)
    return evaluate_split(**kwargs)


def test_ndcg_equals_pylate_rerank_plus_pytrec_eval(demo_assets, manifests, tmp_path):
    result = run_split(demo_assets, manifests, tmp_path, exclude_ids=False)
    root = demo_assets / "BRIGHT"
    examples = load_bright_examples(root, "biology")
    ids, texts = zip(*load_bright_documents(root, "biology"))
    from pylate import rank

    model = load_colbert(demo_assets / "base-model", query_length=32, document_length=48)
    queries = [TEMPLATE.format(domain="Biology", query=e["query"]) for e in examples]
    q = model.encode(queries, is_query=True)
    d = model.encode(list(texts), is_query=False)
    reranked = rank.rerank(documents_ids=[list(ids)] * len(q), queries_embeddings=q, documents_embeddings=[d] * len(q))
    run = {e["id"]: {r["id"]: r["score"] for r in res} for e, res in zip(examples, reranked)}
    qrels = {e["id"]: {g: 1 for g in e["gold_ids"]} for e in examples}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    expected = sum(v["ndcg_cut_10"] for v in per_query.values()) / len(per_query)
    assert abs(result["scores"]["standard"][0]["ndcg_at_10"] - expected) < 1e-6
    ours = read_run(tmp_path / "r.trec")
    for qid, docs in run.items():  # same scores, document by document
        for doc_id, score in docs.items():
            assert abs(ours[qid][doc_id] - score) < 1e-4


def test_excluded_ids_never_ranked(demo_assets, manifests, tmp_path):
    result = run_split(demo_assets, manifests, tmp_path)
    excluded = {
        e["id"]: set(e["excluded_ids"]) - {"N/A"} for e in load_bright_examples(demo_assets / "BRIGHT", "biology")
    }
    assert any(excluded.values())
    run = read_run(tmp_path / "r.trec")
    for qid, docs in run.items():
        assert not excluded[qid] & set(docs)
    assert result["protocol"]["excluded_ids_removed"] is True
    kept = run_split(
        demo_assets,
        manifests,
        tmp_path / "k",
        exclude_ids=False,
        out_json=str(tmp_path / "k.json"),
        run_file=str(tmp_path / "k.trec"),
    )
    assert any(excluded[q] & set(d) for q, d in read_run(tmp_path / "k.trec").items())
    assert kept["protocol"]["excluded_ids_removed"] is False


def test_mteb_result_layout(demo_assets, manifests, tmp_path):
    run_split(demo_assets, manifests, tmp_path, split="pony", domain="Pony", query_length=16)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["task_name"] == "BrightRetrieval" and result["dataset_revision"] == "a" * 40
    entry = result["scores"]["standard"][0]
    assert entry["hf_subset"] == "pony" and entry["main_score"] == entry["ndcg_at_10"]
    assert {"ndcg_at_100", "recall_at_100", "mrr_at_10"} <= set(entry)
    assert result["protocol"]["query_length"] == 16


def test_chunking_does_not_change_the_ranking(demo_assets, manifests, tmp_path):
    run_split(
        demo_assets,
        manifests,
        tmp_path / "a",
        chunk_size=5,
        out_json=str(tmp_path / "a.json"),
        run_file=str(tmp_path / "a.trec"),
    )
    run_split(
        demo_assets,
        manifests,
        tmp_path / "b",
        chunk_size=1000,
        out_json=str(tmp_path / "b.json"),
        run_file=str(tmp_path / "b.trec"),
    )
    a, b = read_run(tmp_path / "a.trec"), read_run(tmp_path / "b.trec")
    assert a.keys() == b.keys()
    for q in a:
        assert a[q] == pytest.approx(b[q], abs=1e-5)


def test_bf16_scoring_is_recorded_and_close_to_float32(demo_assets, manifests, tmp_path):
    """evaluate.score_dtype: float32 by default (exact); bfloat16 records itself and stays close."""
    from workflow_scripts.evaluate.maxsim import bf16_native

    exact = run_split(
        demo_assets, manifests, tmp_path / "f", out_json=str(tmp_path / "f.json"), run_file=str(tmp_path / "f.trec")
    )
    half = run_split(
        demo_assets,
        manifests,
        tmp_path / "h",
        out_json=str(tmp_path / "h.json"),
        run_file=str(tmp_path / "h.trec"),
        score_dtype="bfloat16",
    )
    assert exact["protocol"]["score_dtype"] == "float32"
    assert json.loads((tmp_path / "h.json").read_text())["protocol"]["score_dtype"] == (
        "bfloat16" if bf16_native("cpu") else "float32"  # the dtype used: float32 where bf16 is not native
    )
    ndcg = [r["scores"]["standard"][0]["ndcg_at_10"] for r in (exact, half)]
    assert abs(ndcg[0] - ndcg[1]) < 0.05, ndcg


def test_an_unknown_score_dtype_is_one_line_before_any_model_is_loaded(demo_assets, manifests, tmp_path):
    from workflow_scripts.errors import UserError

    with pytest.raises(UserError, match=r"score_dtype 'float16' is not one of float32, bfloat16"):
        run_split(demo_assets, manifests, tmp_path, model_path=str(tmp_path / "no-model"), score_dtype="float16")


def test_maxsim_by_hand_and_blocked():
    q = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.6, 0.8]])]
    d = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8], [-1.0, 0.0]]), torch.tensor([[0.0, -1.0]])]
    expected = torch.tensor([[1.0 + 0.0, 0.6 + 0.8, 0.0 + -1.0], [0.6, 1.0, -0.8]])
    assert torch.allclose(maxsim_scores(q, d), expected)
    assert torch.allclose(maxsim_scores(q, d, budget=1), expected)  # one document per block


def test_running_topk_matches_a_full_sort():
    scores = torch.randn(3, 50)
    top = TopK(3, 7)
    for start in range(0, 50, 9):
        top.update(scores[:, start : start + 9], offset=start)
    full = torch.topk(scores, 7, dim=1)
    assert torch.equal(top.index, full.indices) and torch.equal(top.scores, full.values)


def test_toy_metrics_by_hand():
    qrels = {"q1": {"a": 1, "c": 1}, "q2": {"z": 1}}
    run = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 1.0}}
    res = score_run(qrels, run)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert res["per_query"]["q1"]["ndcg_at_10"] == pytest.approx(dcg / idcg)
    assert res["per_query"]["q2"]["ndcg_at_10"] == 0.0
    assert res["per_query"]["q1"]["mrr_at_10"] == 1.0
    assert res["per_query"]["q1"]["recall_at_100"] == 1.0
    assert res["mean"]["ndcg_at_10"] == pytest.approx(dcg / idcg / 2)


def test_score_run_cli_breaks_ties_like_trec_eval(tmp_path):
    # equal scores: trec_eval ranks the higher document id first, so "b" is at rank 1
    (tmp_path / "qrels").write_text("q1 0 a 1\n")
    (tmp_path / "run").write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 1.0 t\n")
    out = subprocess.run(
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
        check=True,
    )
    res = json.loads(out.stdout)
    assert res["per_query"]["q1"]["ndcg_at_10"] == pytest.approx(1 / math.log2(3))
    assert res["mean"]["mrr_at_10"] == 0.5


def test_malformed_trec_line_is_named(tmp_path):
    from workflow_scripts.errors import UserError
    from workflow_scripts.evaluate.trec import read_qrels

    (tmp_path / "qrels").write_text("q1 0 a 1\nq2 0 b yes\n")
    with pytest.raises(UserError, match=r"qrels:2: rel 'yes' is not a number"):
        read_qrels(tmp_path / "qrels")
    (tmp_path / "run").write_text("q1 Q0 a 1 1.0\n")
    with pytest.raises(UserError, match=r"run:1: expected 'qid Q0 docid rank score tag'"):
        read_run(tmp_path / "run")


# --------------------------------------------------------------------------- protocols on one encoding
DOCUMENT_PRESETS = ["card", "bright", "reasoning", "mteb-v1.1", "mteb-v1.1-prompt"]


def run_job(demo_assets, bright_manifest, out, splits, names, **overrides):
    """One evaluation job as the workflow runs it: the named presets on ``splits``."""
    from workflow_scripts.bright.protocols import job_pairs, resolve
    from workflow_scripts.evaluate.job import evaluate_job

    protocols = [p.for_job(splits) for p in resolve(dict.fromkeys(names)).values() if all(map(p.covers, splits))]
    pairs = job_pairs([p["name"] for p in protocols], splits)
    kwargs = dict(
        model_path=str(demo_assets / "base-model"),
        model_name="base",
        bright_manifest=bright_manifest,
        splits=splits,
        protocols=protocols,
        out_json=[str(out / p / f"{s}.json") for p, s in pairs],
        run_file=[str(out / p / f"{s}.run.trec") for p, s in pairs],
        query_length=32,
        document_length=48,
        overrides={},
        top_k=100,
        chunk_size=7,
        encode_batch_size=8,
    )
    return pairs, evaluate_job(**(kwargs | overrides))


@pytest.fixture()
def counted(monkeypatch):
    """Every text handed to the encoder, as (is_query, text)."""
    import workflow_scripts.evaluate.job as evaluate

    seen: list[tuple[bool, str]] = []
    real = evaluate.encode

    def encode(model, texts, *, is_query, **kwargs):
        seen.extend((is_query, t) for t in texts)
        return real(model, texts, is_query=is_query, **kwargs)

    monkeypatch.setattr(evaluate, "encode", encode)
    return seen


def test_a_corpus_is_encoded_once_for_every_protocol_and_both_splits_that_share_it(
    demo_assets, manifests, tmp_path, counted
):
    root = demo_assets / "BRIGHT"
    texts = [c for _, c in load_bright_documents(root, "aops")]
    assert texts == [c for _, c in load_bright_documents(root, "theoremqa_questions")]  # one corpus, as in BRIGHT
    pairs, results = run_job(
        demo_assets, manifests["bright"], tmp_path, ["aops", "theoremqa_questions"], DOCUMENT_PRESETS
    )
    assert len(results) == len(pairs) == 10
    documents = [t for is_query, t in counted if not is_query]
    assert sorted(documents) == sorted(texts)  # every document once, for 5 protocols x 2 splits
    for result in results:
        assert result["encoding"]["documents_encoded"] == len(texts) == result["protocol"]["documents"]
        assert len(result["encoding"]["scored_on_this_encoding"]) == 10
        assert set(result["timing"]) >= {"document_encode_seconds", "query_encode_seconds", "score_seconds"}


def test_long_documents_are_a_second_corpus_encoded_once(demo_assets, manifests, tmp_path, counted):
    root = demo_assets / "BRIGHT"
    short = [c for _, c in load_bright_documents(root, "pony")]
    long = [c for _, c in load_bright_documents(root, "pony", "long_documents")]
    _, results = run_job(demo_assets, manifests["bright"], tmp_path, ["pony"], ["card", "bright", "long"])
    assert sorted(t for q, t in counted if not q) == sorted(short + long)
    by_name = {r["protocol"]["name"]: r for r in results}
    assert by_name["long"]["task_name"] == "BrightLongRetrieval" and list(by_name["long"]["scores"]) == ["long"]
    assert by_name["long"]["protocol"]["qrels"] == "gold_ids_long" and by_name["long"]["protocol"]["documents"] == len(
        long
    )
    long_ids = {i for i, _ in load_bright_documents(root, "pony", "long_documents")}
    assert set().union(*map(set, read_run(tmp_path / "long/pony.run.trec").values())) <= long_ids
    # card and bright encode the same query texts once
    assert by_name["bright"]["encoding"]["query_vectors_shared_with"] == "card/pony"


@pytest.mark.parametrize("split", ["aops", "pony"])
def test_every_protocol_recomputes_from_its_run_file_and_qrels(demo_assets, manifests, tmp_path, split):
    """The acceptance check, per protocol: pytrec_eval on the run file and the protocol's qrels
    (its query set, its gold column) gives the reported nDCG@10."""
    from workflow_scripts.bright.load import gold_ids

    names = DOCUMENT_PRESETS + ["long"]
    _, results = run_job(demo_assets, manifests["bright"], tmp_path, [split], names)
    assert {r["protocol"]["name"] for r in results} == set(names) - ({"long"} if split == "aops" else set())
    for result in results:
        p = result["protocol"]
        examples = load_bright_examples(demo_assets / "BRIGHT", split, p["query_source"], p["qrels"])
        qrels = {e["id"]: dict.fromkeys(gold_ids(e, p["qrels"]), 1) for e in examples}
        run = read_run(tmp_path / p["name"] / f"{split}.run.trec")
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        expected = sum(v["ndcg_cut_10"] for v in per_query.values()) / len(per_query)
        assert next(iter(result["scores"].values()))[0]["ndcg_at_10"] == pytest.approx(expected, abs=1e-12), p["name"]
        excluded = {e["id"]: set(e["excluded_ids"]) - {"N/A"} for e in examples}
        kept = sum(len(excluded[q] & set(docs)) for q, docs in run.items())
        assert (kept == 0) if p["excluded_ids_removed"] else kept > 0, p["name"]  # card scores them


def test_splits_whose_corpora_differ_are_encoded_apart(demo_assets, tmp_path, counted, caplog):
    """Sharing is decided by the data (digest of ids and texts), never assumed."""
    import logging
    import shutil

    import pyarrow.parquet as pq

    from workflow_scripts.sources.hub import fetch_source

    root = tmp_path / "BRIGHT"
    shutil.copytree(demo_assets / "BRIGHT", root)
    path = root / "documents/theoremqa_questions-00000-of-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # one document fewer
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
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.evaluate.job"):
        _, results = run_job(demo_assets, str(manifest), tmp_path / "out", ["aops", "theoremqa_questions"], ["card"])
    assert len([t for q, t in counted if not q]) == 2 * table.num_rows - 1
    assert [r["protocol"]["documents"] for r in results] == [table.num_rows, table.num_rows - 1]
    assert any("differ" in r.getMessage() for r in caplog.records)


def test_output_lists_must_match_the_protocols_and_splits(demo_assets, manifests, tmp_path):
    from workflow_scripts.errors import UserError

    with pytest.raises(UserError, match=r"4 \(protocol, split\) results to write, but 1 --out-json and 1 --run-file"):
        run_job(
            demo_assets,
            manifests["bright"],
            tmp_path,
            ["aops", "theoremqa_questions"],
            ["card", "bright"],
            out_json=[str(tmp_path / "a.json")],
            run_file=[str(tmp_path / "a.trec")],
        )
