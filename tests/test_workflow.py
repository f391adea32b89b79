"""The DAG (dry runs of both configs) and the whole demo, end to end."""

from __future__ import annotations

import csv
import json

import psutil
import pytest
import yaml
from conftest import REPO, job_counts, snakemake

from workflow_scripts.bright.meta import SPLITS  # checked against mteb's BrightRetrieval by test_rules
from workflow_scripts.bright.protocols import MTEB_V1_1_TASKS
from workflow_scripts.job_usage import read_usage

STAGES = ["download", "build_shards", "widen", "train_stage1", "train_stage2", "evaluate", "summarize"]
EVALUATE = ("evaluate", "evaluate_documents_only", "evaluate_shared_corpus")
LONG_SPLITS = SPLITS[:7] + ["pony"]


@pytest.mark.parametrize(
    ("configfile", "downloads", "models"),
    [("config.yaml", 4, 4), ("demo/config.yaml", 4, 6)],  # the demo: + seed 1's stage1 and stage2 (experiment seeds)
)
def test_dry_run_builds_the_full_dag(tmp_path, configfile, downloads, models):
    out = snakemake("-n", "--quiet", "rules", "--configfile", str(REPO / configfile), cwd=tmp_path).stdout
    counts = job_counts(out)
    for rule in STAGES:
        assert rule in counts, f"{rule} missing from the DAG: {counts}"
    # widened, stage1, stage2 + base from evaluate_models; 11 jobs each: aops and theoremqa_questions
    # share one corpus and one job
    assert sum(counts.get(rule, 0) for rule in EVALUATE) == 11 * models
    assert counts["evaluate_shared_corpus"] == models
    assert counts["download"] == downloads
    assert counts["build_shards"] == 2
    assert ("demo_assets" in counts) == (configfile != "config.yaml")


@pytest.mark.parametrize(
    ("overlay", "line"),
    [
        ("evaluate:\n  splits: [biology, atlantis]\n", "config: evaluate/splits/1: 'atlantis' is not one of"),
        ("data:\n  rows_per_shard: many\n", "config: data/rows_per_shard: 'many' is not of type 'integer'"),
        ("trainn:\n  lr: 1\n", "config: (top level): Additional properties are not allowed ('trainn' was unexpected)"),
        ("widen:\n  after: stage3\n", "config: widen/after: 'stage3' is not one of ['base', 'stage1']"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, overlay, line):
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay)
    proc = snakemake("-n", "--configfile", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("config: ")] == [
        next(x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith(line))
    ]
    assert not (tmp_path / "results").exists()


PROTOCOLS = ["card", "bright", "gpt4_reason", "long", "mteb-v1.1", "mteb-v1.1-prompt"]  # the demo runs every preset


@pytest.mark.e2e
def test_demo_summary_has_every_protocol_model_and_split(demo_run):
    rows = list(csv.DictReader(open(demo_run / "results/demo/summary.csv")))
    assert list(rows[0]) == ["protocol", "model", "kind", *SPLITS, "mean"]
    assert list(dict.fromkeys(r["protocol"] for r in rows if r["kind"] == "ours")) == PROTOCOLS
    for protocol in PROTOCOLS:
        ours = {r["model"]: r for r in rows if r["kind"] == "ours" and r["protocol"] == protocol}
        assert list(ours) == ["widened", "stage1", "stage2", "seeds.seed1-stage1", "seeds.seed1-stage2", "base"]
        splits = LONG_SPLITS if protocol == "long" else SPLITS
        for row in ours.values():
            assert [s for s in SPLITS if row[s] != ""] == splits
            assert abs(sum(float(row[s]) for s in splits) / len(splits) - float(row["mean"])) < 0.01
    card = {r["model"]: r for r in rows if r["protocol"] == "card" and r["kind"] == "ours"}
    assert float(card["stage2"]["mean"]) > float(card["base"]["mean"])  # training bought something


@pytest.mark.e2e
def test_every_protocol_model_and_split_recomputes_from_its_run_file(demo_run):
    """Acceptance: pytrec_eval on each run file and its protocol's qrels gives the reported
    nDCG@10; protocols that remove excluded ids rank none, and the card's runs do rank some."""
    import pytrec_eval

    from workflow_scripts.bright.load import gold_ids, load_bright_examples
    from workflow_scripts.evaluate.trec import read_run

    bright = demo_run / "resources/demo/BRIGHT"
    checked, kept_by_card = 0, 0
    for path in sorted((demo_run / "results/demo/eval").glob("*/*/*.json")):
        result = json.loads(path.read_text())
        p = result["protocol"]
        assert path.parts[-3:] == (p["name"], p["model"], f"{p['split']}.json")
        examples = load_bright_examples(bright, p["split"], p["query_source"], p["qrels"])
        qrels = {e["id"]: dict.fromkeys(gold_ids(e, p["qrels"]), 1) for e in examples}
        run = read_run(path.with_name(f"{p['split']}.run.trec"))
        per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
        expected = sum(v["ndcg_cut_10"] for v in per_query.values()) / len(per_query)
        assert next(iter(result["scores"].values()))[0]["ndcg_at_10"] == pytest.approx(expected, abs=1e-12), path
        excluded = {e["id"]: set(e["excluded_ids"]) - {"N/A"} for e in examples}
        kept = sum(len(excluded[q] & set(docs)) for q, docs in run.items())
        if p["excluded_ids_removed"]:
            assert kept == 0, path
        else:
            kept_by_card += kept
        checked += 1
    assert checked == 6 * (5 * 12 + 8)  # models x (documents protocols x splits + long x long splits)
    assert kept_by_card > 0


@pytest.mark.e2e
def test_each_corpus_is_encoded_once_per_model(demo_run):
    """Every result of a job was scored on one encoding of its corpus: documents encoded = the
    corpus, once, whatever the number of protocols; aops and theoremqa_questions share theirs."""
    encodings: dict[tuple[str, str, str], set[str]] = {}
    for path in (demo_run / "results/demo/eval").glob("*/*/*.json"):
        result = json.loads(path.read_text())
        p, e = result["protocol"], result["encoding"]
        assert e["documents_encoded"] == p["documents"]
        encodings.setdefault((p["model"], e["job"], p["corpus"]), set()).add(
            json.dumps(sorted(e["scored_on_this_encoding"]))
        )
    for (model, job, corpus), scored in encodings.items():
        assert len(scored) == 1, (model, job, corpus)  # one encoding served every result of the job
    shared = json.loads(next(iter(encodings[("stage2", "aops+theoremqa_questions", "documents")])))
    assert {s.split("/")[1] for s in shared} == {"aops", "theoremqa_questions"} and len(shared) == 10
    assert len(encodings) == 6 * (11 + 8)  # per model: 11 documents jobs + 8 long corpora


@pytest.mark.e2e
def test_the_card_table_compares_like_with_like(demo_run):
    summary = json.loads((demo_run / "results/demo/summary.json").read_text())
    tables = {t["protocol"]["name"]: t for t in summary["tables"]}
    card = {r["model"]: r for r in tables["card"]["rows"]}
    assert tables["card"]["protocol"]["preset"] == "card" and not tables["card"]["protocol"]["exclude_ids"]
    delta = card["delta: stage2 - card: Reason-mxbai-colbert-v0-32m"]
    for split in SPLITS:  # our model under the card's protocol, minus the card
        assert delta[split] == pytest.approx(
            card["stage2"][split] - card["card: Reason-mxbai-colbert-v0-32m"][split], abs=0.011
        )
    for name, table in tables.items():
        if name != "card":
            assert not [r for r in table["rows"] if r["kind"] == "delta"], name
            assert not [r for r in table["rows"] if r["model"].startswith("card:")], name
    mteb_rows = [r["model"] for r in tables["mteb-v1.1"]["rows"] if r["kind"] == "published"]
    assert mteb_rows == ["mteb: Reason-ModernColBERT (150M)"]  # the official MTEB run sits with its protocol


@pytest.mark.e2e
def test_demo_outputs_are_real(demo_run):
    run = demo_run / "results/demo"
    meta = json.loads((run / "train/stage2.meta.json").read_text())
    assert meta["init_model"].endswith("models/stage1")  # stage 2 continues stage 1
    assert meta["steps"] > 0 and meta["world_size"] == 1
    verify = json.loads((run / "models/widened.verify.json").read_text())
    assert verify["new_dim"] == 128 and all(verify["checks"].values())
    result = json.loads((run / "eval/card/stage2/pony.json").read_text())
    assert result["task_name"] == "BrightRetrieval" and result["protocol"]["query_length"] == 24
    assert result["scores"]["standard"][0]["hf_subset"] == "pony"
    assert len(list((run / "shards/stage2").glob("part-*.parquet"))) > 1
    html = (demo_run / "report.html").read_text()
    assert "summary.html" in html and "training_curves.png" in html


@pytest.mark.e2e
def test_local_jobs_are_forked_warm_and_the_server_is_gone(demo_run):
    """config warm_start (on in the demo): every forked stage's job ran in a child of the one warm
    server (its client wrote the child's usage sidecar beside the benchmark, nothing in the log), the
    stages that measure memory started cold, and nothing outlived the run."""
    from workflow_scripts.job_usage import usage_beside
    from workflow_scripts.warm import FORKED_STAGES

    bench = demo_run / "results/demo/benchmarks"
    evaluate = list((bench / "evaluate").rglob("*.tsv"))
    assert evaluate and all(usage_beside(path)["status"] == 0 for path in evaluate)
    assert all(usage_beside(path) for path in (bench / "train").glob("*.tsv"))
    assert "data" not in FORKED_STAGES and not any(
        usage_beside(path) for path in (bench / "build_shards").glob("*.tsv")
    )
    logs = list((demo_run / "results/demo/logs").rglob("*.log"))
    assert logs and not [log for log in logs if "warm: " in log.read_text()]  # the figures are in no log
    assert "(warm)" in (demo_run / "results/demo/report/cost.html").read_text()
    assert "warm: preloaded" in (demo_run / ".snakemake/warm.log").read_text()
    assert not [
        p
        for p in psutil.process_iter(["cmdline", "cwd"])
        if "workflow_scripts.warm" in (p.info["cmdline"] or []) and p.info["cwd"] == str(demo_run)
    ]


@pytest.mark.e2e
def test_logs_read_with_tail_f(demo_run):
    """No library progress bar redraws (carriage returns) in any job's log, warm or cold."""
    logs = [*(demo_run / "results/demo/logs").rglob("*.log"), *(demo_run / "resources/logs").rglob("*.log")]
    assert len(logs) > 40
    assert not [log.name for log in logs if "\r" in log.read_text(errors="replace")]


@pytest.mark.e2e
def test_warm_start_changes_nothing_that_reruns(demo_run):
    overlay = demo_run / "cold.yaml"
    overlay.write_text("warm_start: false\n")
    out = snakemake("-n", "--configfile", str(REPO / "demo/config.yaml"), str(overlay), cwd=demo_run).stdout
    assert "Nothing to be done" in out


@pytest.mark.e2e
def test_demo_rerun_schedules_nothing(demo_run):
    out = snakemake("-n", "--configfile", str(REPO / "demo/config.yaml"), cwd=demo_run).stdout
    assert "Nothing to be done" in out


@pytest.mark.e2e
def test_hub_token_never_reaches_logs_or_report(demo_run):
    from conftest import FAKE_TOKEN

    scanned = 0
    for path in [
        demo_run / "report.html",
        *demo_run.glob("results/**/*"),
        *demo_run.glob("resources/logs/**/*"),
        *demo_run.glob(".snakemake/log/*"),
    ]:
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
            scanned += 1
    assert scanned > 100


@pytest.mark.e2e
def test_mteb_reads_our_results(demo_run):
    from mteb.results import TaskResult

    mteb = demo_run / "results/demo/mteb"
    summary = {(r["protocol"], r["model"]): r for r in csv.DictReader(open(demo_run / "results/demo/summary.csv"))}
    for protocol, task, splits in [
        ("card", "BrightRetrieval", SPLITS),
        ("bright", "BrightRetrieval", SPLITS),
        ("long", "BrightLongRetrieval", LONG_SPLITS),
    ]:
        result = TaskResult.from_disk(mteb / protocol / "stage2" / f"{task}.json")
        assert result.task_name == task and sorted(result.hf_subsets) == sorted(splits)
        assert abs(100 * result.get_score() - float(summary[(protocol, "stage2")]["mean"])) < 0.01
    per_domain = [TaskResult.from_disk(mteb / "mteb-v1.1/stage2" / f"{t}.json") for t in MTEB_V1_1_TASKS.values()]
    assert [r.hf_subsets for r in per_domain] == [["default"]] * 12  # mteb's per-domain tasks: one subset each
    mean = sum(r.get_score() for r in per_domain) / 12
    assert abs(100 * mean - float(summary[("mteb-v1.1", "stage2")]["mean"])) < 0.01


def test_a_failed_job_shows_its_own_error_line(tmp_path):
    """The stage's one-line error reaches the terminal, not only the job log."""
    overlay = tmp_path / "missing.yaml"
    overlay.write_text("sources:\n  bright: {local: /nonexistent/BRIGHT}\n")
    proc = snakemake(
        "resources/sources/bright.manifest.json",
        "--cores",
        "1",
        "--configfile",
        str(overlay),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    expected = (
        "error: sources.bright.local: directory /nonexistent/BRIGHT does not exist"
        "  [log: resources/logs/download/bright.log]"
    )
    assert expected in proc.stderr.splitlines(), proc.stderr[-3000:]


def test_a_failed_forked_job_shows_its_own_error_line(tmp_path):
    """A forked job's log ends with the stage's own error line (its usage goes to a sidecar), and the
    terminal gets that line (a widen of a checkpoint whose modules.json is not JSON)."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "modules.json").write_text("{not json")
    (tmp_path / "broken.yaml").write_text(f"sources:\n  base_model: {{local: {broken}}}\n")
    proc = snakemake(
        "results/demo/models/widened",
        "--cores",
        "1",
        "--configfile",
        str(REPO / "demo/config.yaml"),
        str(tmp_path / "broken.yaml"),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    log = tmp_path / "results/demo/logs/widen/widened.log"
    assert read_usage(tmp_path / "results/demo/benchmarks/widen/widened.usage.json")["status"] != 0  # it was forked
    [line] = [
        line for line in proc.stderr.splitlines() if line.endswith("  [log: results/demo/logs/widen/widened.log]")
    ]
    assert line.startswith("error: ") and "modules.json" in line, proc.stderr[-3000:]
    assert line == f"{log.read_text().splitlines()[-1]}  [log: results/demo/logs/widen/widened.log]"


@pytest.mark.parametrize(
    "overlay",
    [
        "run_name: ..\n",
        "run_name: .\n",
        "evaluate_models:\n  ..: {repo: a/b, repo_type: model, revision: " + "a" * 40 + ", local: null}\n",
    ],
)
def test_path_like_names_are_refused(tmp_path, overlay):
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay)
    proc = snakemake("-n", "--configfile", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "does not match" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "payload", ["$(touch {marker})", "`touch {marker}`", "x; touch {marker}", "x' ; touch '{marker}"]
)
def test_config_text_never_reaches_a_shell_unquoted(tmp_path, payload):
    """Every config value a rule passes on is one shell word: nothing in it runs."""
    marker = tmp_path / "pwned"
    overlay = tmp_path / "evil.yaml"
    local = "/nonexistent/" + payload.format(marker=marker)
    overlay.write_text(yaml.safe_dump({"sources": {"bright": {"local": local}}}))
    proc = snakemake(
        "resources/sources/bright.manifest.json",
        "--cores",
        "1",
        "--configfile",
        str(overlay),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and f"sources.bright.local: directory {local} does not exist" in proc.stderr
    assert not marker.exists()


def test_an_output_path_from_config_is_one_shell_word(tmp_path):
    """demo.assets_dir becomes the output of demo_assets: `$(...)` in it names a folder, runs nothing."""
    marker = tmp_path / "pwned"
    assets = f"resources/demo$(touch {marker})"
    overlay = tmp_path / "evil.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {"demo": {"assets_dir": assets, "queries_per_split": 2, "documents_per_split": 6, "train_rows": 8}}
        )
    )
    snakemake(assets, "--cores", "1", "--configfile", str(REPO / "demo/config.yaml"), str(overlay), cwd=tmp_path)
    assert (tmp_path / assets / "BRIGHT").is_dir() and not marker.exists()
