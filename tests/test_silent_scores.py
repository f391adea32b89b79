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

from workflow_scripts.errors import UserError
from workflow_scripts.evaluate.job import evaluate_split
from workflow_scripts.model.load import load_colbert

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
    kwargs = dict(
        model_path=str(model),
        model_name="m",
        bright_manifest=manifests["bright"],
        split=split,
        out_json=str(tmp_path / "r.json"),
        run_file=str(tmp_path / "r.trec"),
        query_template=TEMPLATE,
        domain=split.title(),
        query_length=32,
        document_length=48,
        exclude_ids=True,
        top_k=100,
        chunk_size=7,
        encode_batch_size=8,
    )
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
def test_silent_wrong_scores_non_finite_scores_are_refused_before_ranking(
    demo_assets, manifests, checkpoint, tmp_path, modules, factor
):
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
    from workflow_scripts.evaluate.scores import check_finite_scores

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
    healthy = split_run(
        demo_assets,
        manifests,
        tmp_path / "ok",
        demo_assets / "base-model",
        out_json=str(tmp_path / "ok.json"),
        run_file=str(tmp_path / "ok.trec"),
    )
    assert healthy["flags"] == [] and healthy["score_checks"]["queries_all_scores_equal"] == 0


@pytest.mark.parametrize("tied", [[0], [1, 2], [0, 1, 2]])
def test_silent_wrong_scores_each_query_whose_scores_all_tie_is_counted(tied):
    from workflow_scripts.evaluate.scores import ScoreSpread

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
@pytest.mark.parametrize(
    "asked", [{"query_length": 100_000}, {"document_length": 9_999}, {"query_length": 600, "document_length": 513}]
)
def test_silent_wrong_scores_lengths_past_the_model_are_recorded_as_applied(
    demo_assets, manifests, tmp_path, caplog, asked
):
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
def test_silent_wrong_scores_a_partial_reasoning_set_is_counted_warned_and_marked(
    demo_assets, tmp_path, caplog, split, keep
):
    from test_evaluate import run_job
    from test_summarize import statistics_args

    from workflow_scripts.bright.protocols import resolve
    from workflow_scripts.report import summary_html
    from workflow_scripts.sources.hub import fetch_source
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
    fetch_source(
        name="bright",
        repo="org/bright",
        revision="a" * 40,
        repo_type="dataset",
        local=str(mirror),
        cache_dir=tmp_path / "hub",
        manifest=manifest,
    )
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
    summarize(
        results=[str(out / p / f"{s}.json") for p, s in pairs],
        models=["base"],
        splits=[split],
        protocols=protocols,
        settings={
            "query_length": 32,
            "document_length": 48,
            "overrides": {},
            "bright_revision": "a" * 40,
            "base_model_revision": "b" * 40,
        },
        csv_path=str(tmp_path / "s.csv"),
        md_path=str(tmp_path / "s.md"),
        json_path=str(tmp_path / "s.json"),
        mteb_paths=[str(tmp_path / f"m{i}.json") for i in range(2)],
        run_files=[str(out / p / f"{s}.run.trec") for p, s in pairs],
        bright_manifest=str(manifest),
        **statistics_args(tmp_path) | {"pairs": []},
    )
    md = (tmp_path / "s.md").read_text()
    assert f"- base / {split}: partial: the query set {line}" in md
    summary_html(summary_json=tmp_path / "s.json", out=tmp_path / "s.html")
    page = (tmp_path / "s.html").read_text()
    assert "id='flags-reasoning'" in page and html.escape(line) in page and "class='flag'" in page
    assert "id='flags-card'" not in page


# --------------------------------------------------------------------------- config that scores something else
def shipped_config():
    import yaml
    from conftest import REPO

    return yaml.safe_load((REPO / "config.yaml").read_text())


def same_local(config, tmp_path, spelling):
    """Two evaluate_models names for one local folder, the second spelled differently."""
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    second = {"plain": str(folder), "slash": f"{folder}/", "dot": f"{tmp_path}/./m", "symlink": str(tmp_path / "link")}
    base = config["evaluate_models"]["base"]
    config["evaluate_models"] = {"a": base | {"local": str(folder)}, "b": base | {"local": second[spelling]}}
    return "config: evaluate_models/b: the same model as evaluate_models/a"


@pytest.mark.parametrize(
    "case",
    [
        "instruction-of-an-unevaluated-split",
        "same-hub-model-twice",
        "local-plain",
        "local-slash",
        "local-dot",
        "local-symlink",
        "every-protocol-removed",
    ],
)
def test_silent_wrong_scores_a_config_that_would_score_something_else_is_refused_at_parse_time(tmp_path, case):
    from workflow_scripts.config_checks import semantic_problems

    config = shipped_config()
    if case == "instruction-of-an-unevaluated-split":
        config["evaluate"]["splits"] = ["biology", "pony"]
        config["evaluate"]["protocols"]["mine"] = {"preset": "bright", "instructions": {"aops": "Math: {query}"}}
        expected = "config: evaluate/protocols/mine/instructions/aops: aops is not in evaluate/splits"
    elif case == "same-hub-model-twice":
        config["evaluate_models"]["again"] = dict(config["evaluate_models"]["base"])
        expected = "config: evaluate_models/base: the same model as evaluate_models/again"
    elif case == "every-protocol-removed":
        config["evaluate"]["protocols"] = dict.fromkeys(config["evaluate"]["protocols"], False)
        expected = "config: evaluate/protocols: every protocol is removed (false); keep at least one"
    else:
        expected = same_local(config, tmp_path, case.removeprefix("local-"))
    problems = semantic_problems(config)
    assert [p for p in problems if p.startswith(expected)] == [next(p for p in problems if p.startswith(expected))]


@pytest.mark.parametrize("removed", [["card"], ["bright", "gpt4_reason"]])
def test_silent_wrong_scores_an_overlay_drops_a_protocol_with_false_and_its_empty_mapping_is_refused(tmp_path, removed):
    """Config files merge key by key: `protocols: {}` removes nothing (refused, saying how);
    `<name>: false` removes that protocol from the DAG."""
    from conftest import REPO, snakemake

    config = shipped_config()
    empty = tmp_path / "empty.yaml"
    empty.write_text("evaluate:\n  protocols: {}\n")
    proc = snakemake("-n", "--configfile", str(REPO / "demo/config.yaml"), str(empty), cwd=tmp_path, check=False)
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith(str(empty))]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "evaluate/protocols: {} removes nothing" in lines[0] and ": false`" in lines[0]
    overlay = tmp_path / "drop.yaml"
    overlay.write_text("evaluate:\n  protocols:\n" + "".join(f"    {name}: false\n" for name in removed))
    out = snakemake("-n", "-p", "--configfile", str(REPO / "demo/config.yaml"), str(overlay), cwd=tmp_path).stdout
    kept = set(config["evaluate"]["protocols"]) - set(removed)
    for name in config["evaluate"]["protocols"]:
        assert (f"/eval/{name}/" in out) == (name in kept), name


# --------------------------------------------------------------------------- why mteb-v1.1 can differ
@pytest.mark.parametrize("preset", ["mteb-v1.1", "mteb-v1.1-prompt"])
def test_silent_wrong_scores_the_mteb_presets_say_mteb_searches_plaid_and_we_score_exactly(tmp_path, preset):
    """The reader of the mteb-v1.1 row learns, in the preset, the summary and the report, that
    mteb's own numbers come from a PLAID index (FastPlaid's subset feature for the 22.74 run)."""
    import inspect

    from mteb.models.model_implementations import pylate_models
    from test_summarize import MODELS, SETTINGS, fake_results, statistics_args

    from workflow_scripts.bright.meta import SPLITS
    from workflow_scripts.bright.protocols import PRESETS, mteb_files, resolve
    from workflow_scripts.report import summary_html
    from workflow_scripts.summarize import summarize

    source = inspect.getsource(pylate_models)  # the installed mteb: PLAID without candidates, rerank with them
    assert "indexes.PLAID(" in source and "rank.rerank(" in source and "if top_ranked is not None" in source
    description = PRESETS[preset].description
    assert "PLAID" in description and "exactly" in description
    note = PRESETS[preset].notes()[0]
    assert all(word in note for word in ("PLAID", "FastPlaid", "22.74", "exact", "rerank"))
    protocols = [p.summary(SPLITS) for p in resolve({"card": {}, preset: {}}).values()]
    summarize(
        results=fake_results(tmp_path, protocols),
        models=MODELS,
        splits=SPLITS,
        protocols=protocols,
        settings=SETTINGS,
        csv_path=str(tmp_path / "s.csv"),
        md_path=str(tmp_path / "s.md"),
        json_path=str(tmp_path / "s.json"),
        mteb_paths=[str(tmp_path / f"m{i}.json") for i, _ in enumerate(mteb_files(protocols, MODELS))],
        **statistics_args(tmp_path),
    )
    md = (tmp_path / "s.md").read_text()
    assert md.count(f"Note: {note}.") == 1 and md.index(f"## {preset}") < md.index("Note: ")
    summary_html(summary_json=tmp_path / "s.json", out=tmp_path / "s.html")
    assert (tmp_path / "s.html").read_text().count(html.escape(note)) == 1
