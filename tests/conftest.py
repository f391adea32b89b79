"""Shared fixtures: offline HF, the demo assets, and one end-to-end demo run per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)
FAKE_TOKEN = "hf_FAKEtokenThatMustNeverBeLogged0123456789"

# Local loads stall on network retries without these; rules inherit them.
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
os.environ["PATH"] = VENV_BIN + os.pathsep + os.environ["PATH"]
os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")


def snakemake(*args: str, cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI in ``cwd`` (its own Snakefile if it is a repo copy; no profiles)."""
    snakefile = cwd / "Snakefile" if (cwd / "Snakefile").exists() else REPO / "Snakefile"
    cmd = [
        os.path.join(VENV_BIN, "snakemake"),
        "-s",
        str(snakefile),
        "--directory",
        str(cwd),
        "--profile",
        "none",
        "--workflow-profile",
        "none",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table that `snakemake -n --quiet rules` prints."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory) -> Path:
    """Small demo assets (the real generator, fewer rows), shared by the unit tests."""
    from workflow_scripts.synthetic.demo import make_assets

    return make_assets(
        tmp_path_factory.mktemp("assets") / "demo", queries_per_split=6, documents_per_split=24, train_rows=96
    )


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The whole demo workflow, run once in a fresh directory (local executor, 2 cores)."""
    workdir = copy_repo(tmp_path_factory.mktemp("demo_run") / "repo")  # tests may edit its code
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN}  # must never reach a log or the report
    snakemake("--configfile", str(workdir / "demo" / "config.yaml"), "--cores", "2", cwd=workdir, env=env)
    snakemake("--configfile", str(workdir / "demo" / "config.yaml"), "--report", "report.html", cwd=workdir, env=env)
    return workdir


@pytest.fixture()
def manifests(demo_assets, tmp_path) -> dict[str, str]:
    """Download manifests of the demo mirrors (local mode)."""
    from workflow_scripts.sources.hub import fetch_source

    out = {}
    for name, sub, kind in [
        ("reasonir", "reasonir-data", "dataset"),
        ("bge_reasoner", "bge-reasoner-data", "dataset"),
        ("bright", "BRIGHT", "dataset"),
        ("base_model", "base-model", "model"),
    ]:
        path = tmp_path / f"{name}.manifest.json"
        fetch_source(
            name=name,
            repo=f"org/{name}",
            revision="a" * 40,
            repo_type=kind,
            local=str(demo_assets / sub),
            cache_dir=tmp_path / "hub",
            manifest=path,
        )
        out[name] = str(path)
    return out


def copy_repo(dst: Path) -> Path:
    """The repository's tracked (and unignored) files, copied to ``dst``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dst / name)
    return dst


STAGE_SOURCES = {  # the recipe's sources per curriculum stage (config.yaml data.stages)
    "stage1": [{"source": "reasonir", "config": "vl"}],
    "stage2": [{"source": "bge_reasoner", "config": None}, {"source": "reasonir", "config": "hq"}],
}


def shard_kwargs(manifests: list[str], out: Path, stage: str = "stage1", **overrides) -> dict:
    """Keywords of a small real shard build (`shards.build.build_shards`) into ``out``; ``overrides`` win."""
    from workflow_scripts.bright.meta import SPLITS

    kwargs = dict(
        stage=stage,
        stage_sources=STAGE_SOURCES[stage],
        manifests=manifests,
        out_dir=out / "shards",
        stats_path=out / "stats.json",
        splits=SPLITS,
        positives_per_query=1,
        negatives_per_query=2,
        min_text_chars=10,
        max_unresolved_rate=0.1,
        rows_per_shard=64,
        shuffle_buckets=2,
        seed=0,
    )
    return kwargs | overrides


def train_kwargs(tmp_path, init, shards, **overrides):
    """Keywords of a small real training run (`train.stage.fit`) on the demo's tiny model; ``overrides`` win."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        stage="stage1",
        init_model=str(init),
        shards=str(shards),
        out_dir=str(tmp_path / "model"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        metrics_path=str(tmp_path / "m.jsonl"),
        meta_path=str(tmp_path / "meta.json"),
        learning_rate=2e-3,
        global_batch_size=16,
        gradient_accumulation_steps=1,
        mini_batch_size=8,
        query_length=32,
        document_length=48,
        temperature=1.0,
        gather_across_devices=True,
        max_grad_norm=100.0,
        warmup_ratio=0.0,
        epochs=2,
        bf16="auto",
        save_steps=4,
        save_total_limit=2,
        logging_steps=1,
        dataloader_num_workers=0,
        seed=0,
    )
    kwargs.update(overrides)
    return kwargs
