"""The DAG (dry runs of both configs) and the whole demo, end to end."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import REPO, job_counts, snakemake

SPLITS = ["biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
          "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems"]  # fmt: skip
STAGES = ["download", "build_shards", "widen", "train_stage1", "train_stage2", "evaluate", "summarize"]


@pytest.mark.parametrize(
    ("configfile", "downloads", "models"),
    [("config.yaml", 4, 4), ("demo/config.yaml", 4, 4)],
)
def test_dry_run_builds_the_full_dag(tmp_path, configfile, downloads, models):
    out = snakemake("-n", "--quiet", "rules", "--configfile", str(REPO / configfile), cwd=tmp_path).stdout
    counts = job_counts(out)
    for rule in STAGES:
        assert rule in counts, f"{rule} missing from the DAG: {counts}"
    assert counts["evaluate"] == 12 * models  # widened, stage1, stage2 + base from evaluate_models
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


@pytest.mark.e2e
def test_demo_summary_has_every_model_and_split(demo_run):
    rows = list(csv.DictReader(open(demo_run / "results/demo/summary.csv")))
    ours = {r["model"]: r for r in rows if r["kind"] == "ours"}
    assert list(ours) == ["widened", "stage1", "stage2", "base"]
    assert list(rows[0]) == ["model", "kind", *SPLITS, "mean"]
    assert {r["kind"] for r in rows} == {"ours", "published", "delta"}
    for row in ours.values():
        values = [float(row[s]) for s in SPLITS]
        assert abs(sum(values) / 12 - float(row["mean"])) < 0.01
    assert float(ours["stage2"]["mean"]) > float(ours["base"]["mean"])  # training bought something


@pytest.mark.e2e
def test_demo_outputs_are_real(demo_run):
    run = demo_run / "results/demo"
    meta = json.loads((run / "train/stage2.meta.json").read_text())
    assert meta["init_model"].endswith("models/stage1")  # stage 2 continues stage 1
    assert meta["steps"] > 0 and meta["world_size"] == 1
    verify = json.loads((run / "models/widened.verify.json").read_text())
    assert verify["new_dim"] == 128 and all(verify["checks"].values())
    result = json.loads((run / "eval/stage2/pony.json").read_text())
    assert result["task_name"] == "BrightRetrieval" and result["protocol"]["query_length"] == 24
    assert result["scores"]["standard"][0]["hf_subset"] == "pony"
    assert len(list((run / "shards/stage2").glob("part-*.parquet"))) > 1
    html = (demo_run / "report.html").read_text()
    assert "summary.html" in html and "training_curves.png" in html


@pytest.mark.e2e
def test_demo_rerun_schedules_nothing(demo_run):
    out = snakemake("-n", "--configfile", str(REPO / "demo/config.yaml"), cwd=demo_run).stdout
    assert "Nothing to be done" in out


@pytest.mark.e2e
def test_hub_token_never_reaches_logs_or_report(demo_run):
    from conftest import FAKE_TOKEN

    scanned = 0
    for path in [demo_run / "report.html", *demo_run.glob("results/**/*"), *demo_run.glob("resources/logs/**/*"),
                 *demo_run.glob(".snakemake/log/*")]:  # fmt: skip
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
            scanned += 1
    assert scanned > 100


@pytest.mark.e2e
def test_mteb_reads_our_results(demo_run):
    from mteb.results import TaskResult

    result = TaskResult.from_disk(demo_run / "results/demo/mteb/stage2/BrightRetrieval.json")
    assert result.task_name == "BrightRetrieval" and sorted(result.hf_subsets) == sorted(SPLITS)
    summary = {r["model"]: r for r in csv.DictReader(open(demo_run / "results/demo/summary.csv"))}
    assert abs(100 * result.get_score() - float(summary["stage2"]["mean"])) < 0.01


def test_a_failed_job_shows_its_own_error_line(tmp_path):
    """The stage's one-line error reaches the terminal, not only the job log."""
    overlay = tmp_path / "missing.yaml"
    overlay.write_text("sources:\n  bright: {local: /nonexistent/BRIGHT}\n")
    proc = snakemake("resources/sources/bright.manifest.json", "--cores", "1", "--configfile", str(overlay),
                     cwd=tmp_path, check=False)  # fmt: skip
    assert proc.returncode != 0
    expected = ("error: sources.bright.local: directory /nonexistent/BRIGHT does not exist"
                "  [log: resources/logs/download/bright.log]")  # fmt: skip
    assert expected in proc.stderr.splitlines(), proc.stderr[-3000:]


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
