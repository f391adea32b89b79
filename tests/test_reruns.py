"""Rerun only what changed: dry-run job lists against the finished demo run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import job_counts, snakemake

pytestmark = pytest.mark.e2e

# Report pages that follow any change: the table, the charts (one with intervals per protocol),
# the paired tests, the cost table, and the provenance page (it records the config).
REPORT = {"report_summary", "report_bright", "report_intervals", "report_tests", "report_cost", "report_provenance"}
EVALUATE = ("evaluate", "evaluate_documents_only", "evaluate_shared_corpus")
JOBS_PER_MODEL = 11  # 12 splits, aops and theoremqa_questions in one job (one corpus)


def demo_config(demo_run, overlay: str = "") -> dict:
    """The demo's merged config (config.yaml, demo/config.yaml, then ``overlay``)."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    for text in ((demo_run / "demo/config.yaml").read_text(), overlay):
        update_config(config, yaml.safe_load(text) or {})
    return config


def lineage_of(demo_run, overlay: str = ""):
    """The demo's experiments and models (``overlay`` merged), as the workflow plans them."""
    from workflow_scripts.lineage import Lineage

    return Lineage(demo_config(demo_run, overlay))


def evaluated(demo_run, overlay: str = "") -> list[str]:
    return lineage_of(demo_run, overlay).evaluated()


def evaluations(jobs: dict[str, int]) -> int:
    """Pop the evaluation jobs (all three rules) from a job count and return how many there were."""
    return sum(jobs.pop(rule, 0) for rule in EVALUATE)


def planned(demo_run, overlay: str | None = None, *extra: str) -> dict[str, int]:
    args = ["-n", "--quiet", "rules", "--configfile", str(demo_run / "demo/config.yaml")]
    if overlay is not None:
        (demo_run / "overlay.yaml").write_text(overlay)
        args.append(str(demo_run / "overlay.yaml"))
    out = snakemake(*args, *extra, cwd=demo_run).stdout
    counts = job_counts(out) if "Job stats" in out else {}
    counts.pop("all", None)
    counts.pop("total", None)
    return counts


def test_pony_query_length_reruns_only_pony(demo_run):
    jobs = planned(demo_run, "evaluate:\n  overrides:\n    pony: {query_length: 20}\n")
    assert jobs.pop("evaluate") == len(evaluated(demo_run))  # pony, for each model
    assert set(jobs) <= {"summarize"} | REPORT and "summarize" in jobs


def test_a_protocol_added_reruns_every_evaluation_once(demo_run):
    """A new protocol is scored by every job on its one encoding: the documents are encoded
    again (embeddings are not kept), once per job, not once per protocol."""
    jobs = planned(
        demo_run, "evaluate:\n  protocols:\n    claude: {preset: reasoning, queries: claude-3-opus_reason}\n"
    )
    assert evaluations(jobs) == len(evaluated(demo_run)) * JOBS_PER_MODEL
    assert set(jobs) <= {"summarize"} | REPORT and "summarize" in jobs


def test_one_splits_instruction_reruns_that_split_only(demo_run):
    """Each job carries only its own splits' templates: editing pony's reruns pony's jobs."""
    jobs = planned(demo_run, "evaluate:\n  protocols:\n    mteb-v1.1-prompt: {instructions: {pony: 'Pony: {query}'}}\n")
    assert jobs.pop("evaluate") == len(evaluated(demo_run)) and evaluations(jobs) == 0
    assert set(jobs) <= {"summarize"} | REPORT and "summarize" in jobs


def test_stage2_learning_rate_reruns_stage2_and_downstream_only(demo_run):
    jobs = planned(demo_run, "train:\n  stage2: {learning_rate: 2.5e-4}\n")
    stage2 = lineage_of(demo_run).made("stage2")  # main's, and each seed's of the demo's seeds experiment
    assert jobs.pop("train_stage2") == len(stage2)
    assert evaluations(jobs) == JOBS_PER_MODEL * len(stage2)  # the stage-2 models' only
    assert set(jobs) <= {"summarize", "report_training"} | REPORT


def test_stage2_negatives_rebuild_stage2_shards_only(demo_run):
    overlay = (
        "data:\n  stages:\n    stage2:\n      - {source: bge_reasoner, config: null, negatives_per_query: 2}\n"
        "      - {source: reasonir, config: hq}\n"
    )
    jobs = planned(demo_run, overlay)
    stage2 = lineage_of(demo_run).made("stage2")  # every seed's stage 2 reads these shards
    assert jobs.pop("build_shards") == 1 and jobs.pop("train_stage2") == len(stage2) > 1
    assert evaluations(jobs) == JOBS_PER_MODEL * len(stage2)
    assert set(jobs) <= {"summarize", "report_training", "report_data", "report_data_tables"} | REPORT


def test_extra_model_adds_only_its_evaluations(demo_run):
    # a copy in its own folder: the same folder under two names is refused (config_checks)
    copy = demo_run / "resources/demo/base-model-copy"
    if not copy.exists():
        shutil.copytree(demo_run / "resources/demo/base-model", copy)
    overlay = (
        "evaluate_models:\n  base_copy:\n    repo: someone/else\n    repo_type: model\n"
        "    revision: " + "b" * 40 + "\n    local: resources/demo/base-model-copy\n"
    )
    jobs = planned(demo_run, overlay)
    assert evaluations(jobs) == JOBS_PER_MODEL and jobs.pop("download") == 1
    assert set(jobs) <= {"summarize", "report_provenance"} | REPORT


def edited(path, text: str):
    """Context: append ``text`` to a file, then restore content and mtime."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        original, stat = path.read_text(), path.stat()
        path.write_text(original + text)
        try:
            yield
        finally:
            path.write_text(original)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    return ctx()


def test_editing_the_evaluation_code_reruns_evaluations(demo_run):
    with edited(demo_run / "workflow_scripts/evaluate/job.py", "\n_EDITED = 1\n"):
        jobs = planned(demo_run)
    assert evaluations(jobs) == len(evaluated(demo_run)) * JOBS_PER_MODEL
    assert set(jobs) <= {"summarize"} | REPORT


def test_an_edit_inside_load_colbert_reruns_every_stage_that_imports_it(demo_run):
    """model/load.py is imported by widen, training and evaluation (base model included)."""
    model = demo_run / "workflow_scripts/model/load.py"
    text = model.read_text()
    assert text.count("    from pylate import models\n") == 1
    with edited(model, ""):
        model.write_text(text.replace("    from pylate import models\n", "    from pylate import models\n    _ = 0\n"))
        jobs = planned(demo_run)
    assert evaluations(jobs) == len(evaluated(demo_run)) * JOBS_PER_MODEL  # base's included: load_colbert too
    trained = {k: len(lineage_of(demo_run).made(k)) for k in ("widened", "stage1", "stage2")}
    assert (jobs.pop("widen"), jobs.pop("train_stage1"), jobs.pop("train_stage2")) == tuple(trained.values())
    assert set(jobs) <= {"summarize", "report_training", "report_widen"} | REPORT
    assert planned(demo_run) == {}  # restored


def test_an_edit_to_the_contamination_audit_reruns_the_shards_and_what_reads_them_only(demo_run):
    """shards/contamination.py is run by the shard builds only: widening, downloads and the evaluation of
    the base and widened models read sources through sources.manifest and never see it."""
    audit = demo_run / "workflow_scripts/shards/contamination.py"
    text = audit.read_text()
    assert text.count("        self.ngram = ngram\n") == 1
    with edited(audit, ""):
        audit.write_text(text.replace("        self.ngram = ngram\n", "        self.ngram = int(ngram)\n"))
        jobs = planned(demo_run)
    lineage = lineage_of(demo_run)
    trained = {stage: len(lineage.made(stage)) for stage in ("stage1", "stage2")}
    assert jobs.pop("build_shards") == len(demo_config(demo_run)["data"]["stages"])
    assert (jobs.pop("train_stage1"), jobs.pop("train_stage2")) == (trained["stage1"], trained["stage2"])
    assert evaluations(jobs) == JOBS_PER_MODEL * sum(trained.values()) < JOBS_PER_MODEL * len(evaluated(demo_run))
    assert not {"download", "widen", "report_widen"} & set(jobs)
    assert set(jobs) <= {"summarize", "report_training", "report_data", "report_data_tables"} | REPORT
    assert planned(demo_run) == {}  # restored


def test_an_edit_in_the_report_module_reruns_report_jobs_only(demo_run):
    with edited(demo_run / "workflow_scripts/report.py", "\n_EDITED = 1\n"):
        jobs = planned(demo_run)
    assert jobs and all(rule.startswith("report_") for rule in jobs), jobs


def test_comment_and_docstring_edits_rerun_nothing(demo_run):
    with edited(demo_run / "workflow_scripts/summarize.py", '\n"""More words."""\n# and a comment\n'):
        assert planned(demo_run) == {}
    with edited(demo_run / "workflow_scripts/model/load.py", "\n# a comment in a module every stage imports\n"):
        assert planned(demo_run) == {}


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (
            "progress",
            '    return float(os.environ.get(INTERVAL_ENV, "30"))\n',
            '    return float(os.environ.get(INTERVAL_ENV, "60"))\n',
        ),  # a real change: lines half as often
        ("warm", "MIN_FORKED_JOBS = ", "MIN_FORKED_JOBS = 1 + "),
    ],
    ids=["progress", "warm"],
)
def test_a_code_edit_to_progress_lines_or_warm_start_reruns_nothing(demo_run, module, old, new):
    """They shape log lines and how a job's process starts, never a number (fingerprint.NOT_RESULT_BEARING):
    evaluate, train and build_shards import progress, report imports warm's neighbour job_usage."""
    path = demo_run / f"workflow_scripts/{module}.py"
    text = path.read_text()
    assert text.count(old) == 1
    with edited(path, ""):
        path.write_text(text.replace(old, new))
        assert planned(demo_run) == {}
    with edited(demo_run / "workflow_scripts/job_usage.py", "\n_EDITED = 1\n"):  # what warm imports still counts
        jobs = planned(demo_run)
    assert "report_cost" in jobs and all(rule.startswith("report_") for rule in jobs), jobs  # report's code


def _reversed_keys(value):
    if isinstance(value, dict):
        return {k: _reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed_keys(v) for v in value]
    return value


def test_config_with_keys_reordered_plans_nothing(demo_run, tmp_path):
    """The whole config (both files merged, every dict's keys reversed) as one overlay."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    update_config(config, yaml.safe_load((demo_run / "demo/config.yaml").read_text()))
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(_reversed_keys(config), sort_keys=False))
    assert next(iter(yaml.safe_load(reordered.read_text())["data"]["stages"]["stage2"][0])) == "config"
    assert planned(demo_run, None, str(reordered)) == {}


def test_the_finished_run_moved_elsewhere_plans_nothing(demo_run, tmp_path):
    moved = shutil.copytree(demo_run, tmp_path / "another" / "place", symlinks=True)
    assert planned(moved) == {}
    for manifest in (moved / "resources/sources").glob("*.manifest.json"):
        path = json.loads(manifest.read_text())["path"]
        assert not Path(path).is_absolute(), f"{manifest}: {path}"  # the copy reads its own data


def test_build_shards_gets_its_threads(demo_run):
    out = snakemake(
        "-n",
        "-p",
        "--forcerun",
        "build_shards",
        "--cores",
        "2",
        "--configfile",
        str(demo_run / "demo/config.yaml"),
        cwd=demo_run,
    ).stdout
    commands = [line for line in out.splitlines() if "workflow_scripts data build-shards" in line]
    assert len(commands) == 2 and all("--threads 2 " in c for c in commands)


def test_cost_page_follows_the_cluster_shape(demo_run):
    jobs = planned(demo_run, "train:\n  nodes: 2\n")
    assert "report_cost" in jobs
    assert not {"train_stage1", "train_stage2", "evaluate"} & set(jobs)  # same recipe, same models


def test_commands_are_readable(demo_run):
    """`-n -p` prints named flags, no JSON blob of paths and settings."""
    out = snakemake(
        "-n", "-p", "--forcerun", *EVALUATE, "--configfile", str(demo_run / "demo/config.yaml"), cwd=demo_run
    ).stdout
    commands = [line for line in out.splitlines() if "python -m workflow_scripts " in line]
    assert len(commands) >= 4 * JOBS_PER_MODEL + 1  # the evaluations, the summary and the report pages after it
    command = next(line for line in commands if "workflow_scripts evaluate job" in line)
    assert "--args" not in command and "--model-path " in command and "--top-k 100" in command
    assert not [c for c in commands if str(demo_run) in c]  # no absolute path


def test_killed_runs_finish_with_an_identical_summary(demo_run, tmp_path):
    """SIGKILL the whole run while shards are written, then while evaluating; rerun each
    time. Nothing partial is taken as done, and the end is byte-identical to the clean run."""
    import signal
    import subprocess
    import time

    from conftest import VENV_BIN, copy_repo

    work = copy_repo(tmp_path / "repo")
    cmd = [
        os.path.join(VENV_BIN, "snakemake"),
        "--profile",
        "none",
        "--workflow-profile",
        "none",
        "--configfile",
        "demo/config.yaml",
        "--cores",
        "2",
    ]

    def run_until(pattern: str) -> None:
        proc = subprocess.Popen(
            cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.time() + 600
        while time.time() < deadline and not list(work.glob(pattern)) and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        subprocess.run([*cmd, "--unlock"], cwd=work, capture_output=True, check=True)

    run_until("results/demo/shards/.stage*.tmp-*/.buckets/*")  # mid-way through writing shards
    run_until("results/demo/eval/*/stage1/*.json")  # evaluations under way
    done = subprocess.run([*cmd, "--rerun-incomplete"], cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (work / "results/demo/summary.csv").read_bytes() == (demo_run / "results/demo/summary.csv").read_bytes()
    for stage in ("stage1", "stage2"):
        for part in sorted((demo_run / f"results/demo/shards/{stage}").glob("part-*.parquet")):
            assert part.read_bytes() == (work / f"results/demo/shards/{stage}" / part.name).read_bytes()
    assert not list(work.glob("results/demo/**/.*.tmp-*"))  # a killed job's temporaries are cleared


def test_variants_reuse_shared_upstream_outputs(demo_run):
    overlay = (
        "experiments:\n  main: {}\n  lr2: {train: {stage2: {learning_rate: 2.5e-4}}}\n  dim64: {widen: {to: null}}\n"
    )
    jobs = planned(demo_run, overlay)
    # lr2 shares widened + stage1 with main; dim64 (no widening) retrains both stages
    assert jobs.pop("train_stage2") == 2 and jobs.pop("train_stage1") == 1
    assert evaluations(jobs) == JOBS_PER_MODEL * 3  # lr2-stage2, dim64-stage1, dim64-stage2
    assert not {"download", "build_shards", "widen"} & set(jobs)
    assert set(jobs) <= {"summarize", "report_training", "report_provenance"} | REPORT
    out = snakemake(
        "-n", "--configfile", str(demo_run / "demo/config.yaml"), str(demo_run / "overlay.yaml"), cwd=demo_run
    ).stdout
    assert "results/demo/models/lr2-stage2" in out and "results/demo/models/dim64-stage1" in out
    assert "results/demo/models/lr2-stage1" not in out  # shared, not recomputed


def test_caption_edit_reruns_nothing(demo_run):
    with edited(demo_run / "report/summary.rst", "\nOne more sentence.\n"):
        assert planned(demo_run) == {}
        proc = snakemake("--configfile", str(demo_run / "demo/config.yaml"), "--report", "caption.html", cwd=demo_run)
        assert proc.returncode == 0
    assert "One more sentence." in (demo_run / "caption.html").read_text()


@pytest.mark.parametrize(
    "overlay",
    [
        "statistics: {resamples: 3000}\n",
        "statistics: {confidence: 0.9, alpha: 0.01, seed: 3}\n",
        "statistics: {pairs: [[stage2, base], [seeds.seed1-stage2, stage2]]}\n",
    ],
)
def test_statistics_settings_rerun_only_the_summary_and_report(demo_run, overlay):
    jobs = planned(demo_run, overlay)
    assert "summarize" in jobs and jobs.pop("summarize") == 1
    assert jobs.pop("report_intervals") == len(demo_config(demo_run)["evaluate"]["protocols"])  # a figure each
    assert set(jobs) <= REPORT, jobs


def test_adding_a_seed_trains_only_that_seed(demo_run):
    seeds = demo_config(demo_run)["experiments"]["seeds"]["seeds"]
    overlay = f"experiments:\n  seeds: {{seeds: {[*seeds, 9]}}}\n"
    new = [m for m in evaluated(demo_run, overlay) if m not in evaluated(demo_run)]
    assert new == ["seeds.seed9-stage1", "seeds.seed9-stage2"]
    jobs = planned(demo_run, overlay)
    assert (jobs.pop("train_stage1"), jobs.pop("train_stage2")) == (1, 1)  # that seed's, nothing else
    assert evaluations(jobs) == len(new) * JOBS_PER_MODEL
    assert not {"download", "build_shards", "widen"} & set(jobs)
    assert set(jobs) <= {"summarize", "report_training"} | REPORT


def test_the_demo_seeds_share_every_upstream_job(demo_run):
    """The demo's two-seed experiment: two stage-2 models, each trained once, from one widened
    model and one set of shards; the summary gives their mean and standard deviation."""
    import statistics

    run = demo_run / "results/demo"
    config = demo_config(demo_run)
    group = next(g for g in lineage_of(demo_run).seed_groups() if g["kind"] == "stage2")
    assert group["seeds"] == config["experiments"]["seeds"]["seeds"] and len(set(group["models"])) == 2
    metas = [json.loads((run / f"train/{m}.meta.json").read_text()) for m in group["models"]]
    stage1 = [json.loads((run / f"train/{Path(m['init_model']).name}.meta.json").read_text()) for m in metas]
    assert len({Path(m["init_model"]).name for m in stage1}) == 1  # one widened model for both seeds
    assert metas[0]["mean_loss"] != metas[1]["mean_loss"]  # the seeds trained differently
    out = snakemake(
        "-n",
        "-p",
        "--forcerun",
        "train_stage1",
        "train_stage2",
        "--configfile",
        str(demo_run / "demo/config.yaml"),
        cwd=demo_run,
    ).stdout
    commands = [line for line in out.splitlines() if "workflow_scripts train " in line]
    for model, seed in zip(group["models"], group["seeds"]):  # one set of shards, each model its own seed
        (command,) = [c for c in commands if f"--out-dir results/demo/models/{model} " in c]
        assert f"--seed {seed} " in command and "--shards results/demo/shards/stage2 " in command
    assert sorted(p.name for p in (run / "models").iterdir() if p.is_dir()) == sorted(lineage_of(demo_run).models)
    summary = json.loads((run / "summary.json").read_text())
    for table in summary["tables"]:
        rows = {r["model"]: r for r in table["rows"]}
        seed_mean = next(r for r in table["rows"] if r["kind"] == "seed_mean" and "stage2" in r["model"])
        seed_std = next(r for r in table["rows"] if r["kind"] == "seed_std" and "stage2" in r["model"])
        for split in [*table["splits"], "mean"]:
            values = [rows[m][split] for m in group["models"]]
            assert seed_mean[split] == pytest.approx(statistics.mean(values), abs=0.006)
            assert seed_std[split] == pytest.approx(statistics.stdev(values), abs=0.006)
