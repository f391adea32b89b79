"""`snakemake --profile slurm` on a real two-node Slurm cluster (tests/slurm/start-local-slurm.sh).

The demo runs through the repository's own profile plus an overlay only for what this test
cluster lacks (tests/slurm/profile: squeue status, 1 CPU / node, no GPUs) and its shape
(tests/slurm/cluster.yaml: 2 nodes x 1 process).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import VENV_BIN, copy_repo, job_counts

pytestmark = pytest.mark.slurm

PROFILE_ARGS = [
    "--profile",
    "slurm",
    "--profile",
    "tests/slurm/profile",
    "--configfile",
    "demo/config.yaml",
    "tests/slurm/cluster.yaml",
]


def sh(*cmd: str, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout


def run_profile(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [os.path.join(VENV_BIN, "snakemake"), *PROFILE_ARGS, *extra], cwd=workdir, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise AssertionError(f"snakemake --profile slurm failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-8000:]}")
    return proc


def slurm_jobs(workdir: Path, rule: str) -> set[str]:
    """Slurm job ids of a rule's jobs, from the plugin's kept per-job logs."""
    return {p.stem for p in (workdir / "results/slurm-logs" / f"rule_{rule}").rglob("*.log")}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> Path:
    """A copy of the repository (tracked files) in which the demo ran through Slurm."""
    try:
        sh("sinfo", "-h")
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.fail(f"no Slurm cluster: run `bash tests/slurm/start-local-slurm.sh` first ({err})")
    workdir = copy_repo(tmp_path_factory.mktemp("slurm") / "repo")
    planned = subprocess.run(
        [os.path.join(VENV_BIN, "snakemake"), *PROFILE_ARGS, "-n", "--quiet", "rules"],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (workdir / "planned.json").write_text(json.dumps(job_counts(planned)))
    run_profile(workdir)
    return workdir


def test_training_is_one_job_spanning_both_nodes(cluster_run):
    meta = json.loads((cluster_run / "results/demo/train/stage1.meta.json").read_text())
    assert meta["world_size"] == 2
    assert sorted(r["rank"] for r in meta["ranks"]) == [0, 1]
    assert sorted(r["slurm_node"] for r in meta["ranks"]) == ["n1", "n2"]
    assert len({r["slurm_job_id"] for r in meta["ranks"]}) == 1  # one Slurm job
    assert slurm_jobs(cluster_run, "train_stage1") == {meta["ranks"][0]["slurm_job_id"]}
    # gather_across_devices really gathers: each query saw the whole global batch's documents
    assert meta["candidates_per_query"] == 2 * meta["global_batch_size"]


def test_evaluate_jobs_are_separate_slurm_jobs(cluster_run):
    rules = ("evaluate", "evaluate_documents_only", "evaluate_shared_corpus")
    evaluate = set().union(*(slurm_jobs(cluster_run, rule) for rule in rules))
    training = slurm_jobs(cluster_run, "train_stage1") | slurm_jobs(cluster_run, "train_stage2")
    # one Slurm job per planned evaluation job (model x split, aops + theoremqa_questions as one),
    # each rule shape among them (tests/slurm/cluster.yaml picks a split of each)
    planned = json.loads((cluster_run / "planned.json").read_text())
    assert all(planned.get(rule) for rule in rules)
    assert len(evaluate) == sum(planned[rule] for rule in rules)
    assert not evaluate & training
    assert (cluster_run / "results/demo/summary.csv").exists()


def test_cluster_jobs_start_cold_in_their_allocation(cluster_run):
    """No warm server with an executor: every job ran its own process inside its Slurm job (no job's
    client wrote a forked child's usage sidecar beside its benchmark)."""
    from workflow_scripts.job_usage import usage_beside

    benchmarks = list((cluster_run / "results/demo/benchmarks").rglob("*.tsv"))
    assert benchmarks and not [bench for bench in benchmarks if usage_beside(bench)]
    assert not list((cluster_run / "results/demo/benchmarks").rglob("*.usage.json"))


def test_second_run_submits_nothing(cluster_run):
    """Judged by this run's own traces, not the cluster's queue: finished jobs age out of
    `squeue --states=all` (MinJobAge) and other users' jobs come and go."""
    logs = cluster_run / "results/slurm-logs"  # one <jobid>.log per started job, all kept
    before = set(logs.rglob("*.log"))
    proc = run_profile(cluster_run)
    output = proc.stdout + proc.stderr
    assert "Nothing to be done" in output
    # the plugin (2.8.0) logs every sbatch it makes: "Job N has been submitted with SLURM jobid ..."
    # or, for arrays, "Submitted array job with Snakemake IDs ..."
    assert "submitted with SLURM jobid" not in output and "Submitted array job" not in output
    assert set(logs.rglob("*.log")) == before


def test_scancel_of_training_resumes_from_a_checkpoint(cluster_run):
    """Cancel stage-2 training mid-way: Snakemake's retry resumes it from its checkpoint."""
    proc = subprocess.Popen(
        [os.path.join(VENV_BIN, "snakemake"), *PROFILE_ARGS, "--forcerun", "train_stage2"],
        cwd=cluster_run,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 600
    ckpts = cluster_run / "results/demo/checkpoints/stage2"
    while time.time() < deadline and not list(ckpts.glob("*/checkpoint-*/trainer_state.json")):
        time.sleep(0.5)
    jobs = [line.split()[0] for line in sh("squeue", "-h", "-o", "%i %k").splitlines() if "train_stage2" in line]
    assert jobs, "no running train_stage2 job to cancel"
    sh("scancel", *jobs)
    out, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, out[-5000:]
    meta = json.loads((cluster_run / "results/demo/train/stage2.meta.json").read_text())
    assert meta["resumed_from"], "the retried job started from scratch"
    assert meta["ranks"][0]["slurm_job_id"] not in jobs  # a new job finished it
    assert meta["world_size"] == 2
