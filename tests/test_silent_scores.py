"""Class "silent wrong or unreproducible scores" (issue 25): a score that looks normal but is not.

Each test builds the bad input from the real demo checkpoint or mirror (a poked weight, a
tokenizer without its prefix tokens, a partial query set, a length past the model's limit) and
checks that it is refused in one line, or loudly flagged in the result, the summary and the
report. The instances are parametrized; expected counts come from the data, not literals.
"""

from __future__ import annotations

import html
import json
import logging
import shutil

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file, save_file

from workflow_scripts.common import UserError
from workflow_scripts.evaluate import evaluate_split
from workflow_scripts.model import load_colbert

TEMPLATE = "Given a {domain} post, retrieve relevant passages that help answer the post.\nQuery: {query}"


@pytest.fixture()
def checkpoint(demo_assets, tmp_path):
    """A private copy of the demo's base checkpoint, to break."""
    return shutil.copytree(demo_assets / "base-model", tmp_path / "ckpt")


def poke(file, change):
    """Rewrite one safetensors file with ``change(name, tensor) -> tensor`` applied to each tensor."""
    state = load_file(file)
    save_file({name: change(name, t).contiguous() for name, t in state.items()}, file)


def split_run(demo_assets, manifests, tmp_path, model, split="biology", **overrides):
    kwargs = dict(model_path=str(model), model_name="m", bright_manifest=manifests["bright"], split=split,
                  out_json=str(tmp_path / "r.json"), run_file=str(tmp_path / "r.trec"), query_template=TEMPLATE,
                  domain=split.title(), query_length=32, document_length=48, exclude_ids=True, top_k=100,
                  chunk_size=7, encode_batch_size=8)  # fmt: skip
    return evaluate_split(**(kwargs | overrides))


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------- non-finite weights
@pytest.mark.parametrize("module", ["", "1_Dense", "3_Dense"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_silent_wrong_scores_non_finite_weights_are_refused_when_a_checkpoint_loads(checkpoint, module, value):
    file = checkpoint / module / "model.safetensors"
    target = sorted(n for n, t in load_file(file).items() if t.is_floating_point())[-1]

    def change(name, tensor):
        if name == target:
            tensor = tensor.clone()
            tensor.view(-1)[tensor.numel() // 2] = value
        return tensor

    poke(file, change)
    with pytest.raises(UserError) as err:
        load_colbert(checkpoint)
    assert str(file) in one_line(err) and repr(target) in str(err.value)


# --------------------------------------------------------------------------- non-finite scores
@pytest.mark.parametrize(("modules", "factor"), [(["1_Dense", "2_Dense"], 1e30), (["2_Dense", "3_Dense"], -1e25)])
def test_silent_wrong_scores_non_finite_scores_are_refused_before_ranking(demo_assets, manifests, checkpoint,
                                                                          tmp_path, modules, factor):  # fmt: skip
    """Finite weights whose activations overflow to inf: NaN vectors, NaN scores. Refused naming the
    split, nothing written."""
    for module in modules:
        poke(checkpoint / module / "model.safetensors", lambda name, t: t * factor)
    with pytest.raises(UserError) as err:
        split_run(demo_assets, manifests, tmp_path, checkpoint, split="pony")
    assert "split pony" in one_line(err) and "NaN or infinite" in str(err.value)
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "r.trec").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_silent_wrong_scores_a_non_finite_score_of_a_real_document_is_refused(bad):
    from workflow_scripts.evaluate import check_finite_scores

    documents = [torch.ones(3, 4), torch.ones(2, 4), torch.empty(0, 4)]
    scores = torch.tensor([[1.0, 2.0, float("-inf")], [0.5, 0.5, float("-inf")]])  # -inf: the empty document
    check_finite_scores(scores, documents, ["a", "b", "c"], where="x")
    scores[1, 1] = bad
    with pytest.raises(UserError, match=r"^evaluate m: split s: 1 MaxSim scores .*first document 'b'"):
        check_finite_scores(scores, documents, ["a", "b", "c"], where="evaluate m: split s")


# --------------------------------------------------------------------------- degenerate results
@pytest.mark.parametrize("module", ["1_Dense", "3_Dense"])
def test_silent_wrong_scores_a_degenerate_result_is_flagged(demo_assets, manifests, checkpoint, tmp_path, module):
    """A Dense of zeros: every document gets one score; the result says so, loudly."""
    poke(checkpoint / module / "model.safetensors", lambda name, t: torch.zeros_like(t))
    result = split_run(demo_assets, manifests, tmp_path, checkpoint)
    checks = result["score_checks"]
    assert checks["split_all_scores_equal"] is True
    assert checks["queries_all_scores_equal"] == checks["queries_ranked"] == result["protocol"]["queries"]
    assert any(f.startswith("degenerate:") for f in result["flags"])
    assert json.loads((tmp_path / "r.json").read_text())["flags"] == result["flags"]
    healthy = split_run(demo_assets, manifests, tmp_path / "ok", demo_assets / "base-model",
                        out_json=str(tmp_path / "ok.json"), run_file=str(tmp_path / "ok.trec"))  # fmt: skip
    assert healthy["flags"] == [] and healthy["score_checks"]["queries_all_scores_equal"] == 0


@pytest.mark.parametrize("tied", [[0], [1, 2], [0, 1, 2]])
def test_silent_wrong_scores_each_query_whose_scores_all_tie_is_counted(tied):
    from workflow_scripts.evaluate import ScoreSpread

    scores = torch.rand(3, 10) + 1.0
    for q in tied:
        scores[q] = 0.25
    scores[:, 3] = float("-inf")  # an excluded document never counts as a score
    spread = ScoreSpread(3)
    for start in range(0, 10, 4):  # streamed in chunks, as a corpus is
        spread.update(scores[:, start : start + 4])
    summary = spread.summary(["q0", "q1", "q2"])
    assert summary["queries_all_scores_equal"] == len(tied)
    assert summary["queries_all_scores_equal_ids"] == [f"q{q}" for q in tied]
    assert summary["split_all_scores_equal"] == (len(tied) == 3)


# --------------------------------------------------------------------------- prefix tokens
@pytest.mark.parametrize(
    ("config_edit", "dropped"),
    [({}, "[Q] "), ({}, "[D] "), ({"query_prefix": "[QRY] "}, None), ({"document_prefix": None}, "[D] ")],
)
def test_silent_wrong_scores_a_tokenizer_without_its_prefix_tokens_is_refused(checkpoint, config_edit, dropped):
    """PyLate would add the missing token with a random embedding: two loads, two scores."""
    if config_edit:
        file = checkpoint / "config_sentence_transformers.json"
        file.write_text(json.dumps(json.loads(file.read_text()) | config_edit))
    if dropped:
        file = checkpoint / "tokenizer.json"
        tokenizer = json.loads(file.read_text())
        tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != dropped]
        file.write_text(json.dumps(tokenizer))
    with pytest.raises(UserError) as err:
        load_colbert(checkpoint)
    assert str(checkpoint / "tokenizer.json") in one_line(err)
    assert repr(dropped or config_edit["query_prefix"]) in str(err.value)


# --------------------------------------------------------------------------- effective lengths
@pytest.mark.parametrize("asked", [{"query_length": 100_000}, {"document_length": 9_999}, {"query_length": 600,
                                                                                           "document_length": 513}])
def test_silent_wrong_scores_lengths_past_the_model_are_recorded_as_applied(demo_assets, manifests, tmp_path,
                                                                            caplog, asked):  # fmt: skip
    limit = json.loads((demo_assets / "base-model/config.json").read_text())["max_position_embeddings"]
    with caplog.at_level(logging.WARNING):
        result = split_run(demo_assets, manifests, tmp_path, demo_assets / "base-model", **asked)
    p = result["protocol"]
    for key, value in {"query_length": 32, "document_length": 48, **asked}.items():
        assert p[key] == min(value, limit) and p["requested_lengths"][key] == value
    capped = [r.getMessage() for r in caplog.records if "requested" in r.getMessage() and "applied" in r.getMessage()]
    assert len(capped) == len(asked)
    for key, value in asked.items():
        assert any(f"evaluate/{key} of biology: {value} requested, {limit} applied" in line for line in capped)
        assert f"capped: {key} {value} requested, {limit} applied (the model's limit)" in result["flags"]


# --------------------------------------------------------------------------- partial query sets
@pytest.mark.parametrize(("split", "keep"), [("biology", 0.5), ("pony", 0.4)])
def test_silent_wrong_scores_a_partial_reasoning_set_is_counted_warned_and_marked(demo_assets, tmp_path, caplog, split,
                                                                                   keep):  # fmt: skip
    from test_evaluate import run_job
    from test_summarize import statistics_args

    from workflow_scripts.data import fetch_source
    from workflow_scripts.protocols import resolve
    from workflow_scripts.report import summary_html
    from workflow_scripts.summarize import summarize

    mirror = shutil.copytree(demo_assets / "BRIGHT", tmp_path / "BRIGHT")
    files = sorted((mirror / "gpt4_reason").glob(f"{split}-*"))
    total = sum(pq.read_metadata(f).num_rows for f in files)
    kept = max(1, int(total * keep))
    table = pq.read_table(files[0])
    pq.write_table(table.slice(0, kept), files[0])
    for extra in files[1:]:
        extra.unlink()
    manifest = tmp_path / "bright.manifest.json"
    fetch_source(name="bright", repo="org/bright", revision="a" * 40, repo_type="dataset", local=str(mirror),
                 cache_dir=tmp_path / "hub", manifest=manifest)  # fmt: skip
    out = tmp_path / "eval"
    with caplog.at_level(logging.WARNING):
        pairs, results = run_job(demo_assets, str(manifest), out, [split], ["card", "reasoning"])
    by_name = {r["protocol"]["name"]: r for r in results}
    assert by_name["card"]["coverage"]["missing"] == 0 and by_name["card"]["flags"] == []
    coverage = by_name["reasoning"]["coverage"]
    assert (coverage["queries"], coverage["split_queries"], coverage["missing"]) == (kept, total, total - kept)
    line = f"covers {kept} of the split's {total} queries"
    assert any(line in r.getMessage() for r in caplog.records)
    assert any(line in f for f in by_name["reasoning"]["flags"])
    protocols = [p.summary([split]) for p in resolve({"card": {}, "reasoning": {}}).values()]
    summarize(results=[str(out / p / f"{s}.json") for p, s in pairs], models=["base"], splits=[split],
              protocols=protocols, settings={"query_length": 32, "document_length": 48, "overrides": {},
                                             "bright_revision": "a" * 40, "base_model_revision": "b" * 40},
              csv_path=str(tmp_path / "s.csv"), md_path=str(tmp_path / "s.md"), json_path=str(tmp_path / "s.json"),
              mteb_paths=[str(tmp_path / f"m{i}.json") for i in range(2)],
              run_files=[str(out / p / f"{s}.run.trec") for p, s in pairs], bright_manifest=str(manifest),
              **statistics_args(tmp_path) | {"pairs": []})  # fmt: skip
    md = (tmp_path / "s.md").read_text()
    assert f"- base / {split}: partial: the query set {line}" in md
    summary_html(summary_json=tmp_path / "s.json", out=tmp_path / "s.html")
    page = (tmp_path / "s.html").read_text()
    assert "id='flags-reasoning'" in page and html.escape(line) in page and "class='flag'" in page
    assert "id='flags-card'" not in page
