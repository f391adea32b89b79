"""Preflight (issue #13): the forecast's arithmetic, the preflight module end to end on tiny sizes,
the DAG of the `preflight` target, and a first real run that starts (unpinned revisions resolved
through the hub client, replaced at its boundary since no hub is reachable; then `lock`)."""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import yaml
from conftest import REPO, STAGE_SOURCES, job_counts, shard_kwargs, snakemake, train_kwargs

from workflow_scripts import data
from workflow_scripts.cli import to_argv
from workflow_scripts.config_checks import semantic_problems
from workflow_scripts.config_files import config_problem
from workflow_scripts.errors import UserError
from workflow_scripts.preflight.calibrate import CALIBRATION_SHAPES, measure_calibration
from workflow_scripts.preflight.devices import architecture
from workflow_scripts.preflight.flops import (
    GIB,
    PEAK_TFLOPS,
    PUBLISHED_TRIPLES,
    project_split,
    project_split_from_flops,
    project_training,
    rate_times_count,
    train_step_flops,
)
from workflow_scripts.preflight.forecast import _forecast_backend, forecast, forecast_memory
from workflow_scripts.preflight.measure_evaluate import measure_evaluation, padded_tokens
from workflow_scripts.preflight.measure_train import measure_training
from workflow_scripts.preflight.memory import (
    calibrate_activations,
    column_tokens,
    memory_peak,
    memory_terms,
    simulate_steps,
    time_forecast,
    widest_minibatch,
)
from workflow_scripts.preflight.render import TABLES
from workflow_scripts.shards.build import build_shards
from workflow_scripts.sources.hub import fetch_source
from workflow_scripts.train.negatives import false_negatives
from workflow_scripts.train.trainer import TrainSettings

ARCH = {"matmul_parameters": 13_524_864, "layers": 10, "hidden": 384, "dim": 128}  # the rehearsal's widened model
REAL = {"query_length": 256, "document_length": 2048}
SHA = "1234567890abcdef1234567890abcdef12345678"


# --------------------------------------------------------------------------- arithmetic
def measured(per_device: int, step_seconds: float, candidates: int | None = None) -> dict:
    candidates = candidates or 2 * per_device
    flops = train_step_flops(per_device=per_device, candidates=candidates, arch=ARCH, **REAL)
    return {
        "step_seconds": step_seconds,
        "per_device_batch_size": per_device,
        "candidates": candidates,
        "arch": ARCH,
        "flops": flops,
        **REAL,
    }


def test_rate_times_count_and_nothing_measured():
    assert rate_times_count(seconds=30.0, done=3, count=300) == 3000.0
    with pytest.raises(UserError, match="nothing was measured"):
        rate_times_count(seconds=1.0, done=0, count=10)


def test_training_at_the_measured_shape_is_step_time_times_steps():
    m = measured(256, 20.0, candidates=4096)
    p = project_training(measured=m, rows=181_000, devices=8, per_device=256, global_batch=2048)
    assert p["steps"] == 181_000 // 2048 == 88  # the last partial batch is dropped, as in training
    assert p["wall_hours"] == pytest.approx(88 * 20.0 / 3600)
    assert p["gpu_hours"] == pytest.approx(8 * p["wall_hours"])
    assert p["how"].startswith("measured step time")


def test_training_at_another_shape_scales_by_flops_and_the_score_term_grows_with_local_x_global():
    small = measured(4, 24.0)
    p = project_training(measured=small, rows=2_700_000, devices=8, per_device=256, global_batch=2048)
    real = train_step_flops(per_device=256, candidates=4096, arch=ARCH, **REAL)
    assert p["step_seconds"] == pytest.approx(24.0 * real["executed"] / small["flops"]["executed"])
    assert p["how"].startswith("measured FLOP rate")
    # per row, the encoder costs the same at any batch; MaxSim against 4096 candidates is most of the step
    per_row = {b: train_step_flops(per_device=b, candidates=c, arch=ARCH, **REAL) for b, c in ((4, 8), (256, 4096))}
    assert per_row[4]["encoder_forward"] / 4 == pytest.approx(per_row[256]["encoder_forward"] / 256)
    assert per_row[256]["score_forward"] > 2 * per_row[256]["encoder_forward"] > 1000 * per_row[4]["score_forward"]
    # GradCache encodes twice (4 passes) where the model FLOPs of MFU count 3
    assert real["executed"] - real["model"] == pytest.approx(real["encoder_forward"])


def test_evaluation_projection_and_padding():
    m = {
        "document_tokens_per_s": 2000.0,
        "mean_document_tokens": 300.0,
        "query_seconds": 0.1,
        "mean_query_tokens": 120.0,
        "score_pairs_per_s": 1e9,
    }
    p = project_split(measured=m, documents=57_359, queries=103)
    assert p["encode_seconds"] == pytest.approx(57_359 * 300 / 2000)
    assert p["score_seconds"] == pytest.approx(103 * 120 * 57_359 * 300 / 1e9)
    assert p["seconds"] == pytest.approx(p["encode_seconds"] + p["query_seconds"] + p["score_seconds"])
    # sentence-transformers sorts by characters, longest first, and pads each batch to its longest
    assert padded_tokens([5, 900, 40, 300], [2, 2048, 10, 80], batch_size=2) == 2 * 2048 + 2 * 10


def test_false_negatives_of_one_expanded_bge_row():
    """One bge-reasoner row, 2 positives x 4 negatives: 8 triples; in one batch each copy's query
    is scored against the other 7 copies' positives (the same 2 documents) as negatives."""
    rows = [("q", p, n) for p in ("p1", "p2") for n in ("n1", "n2", "n3", "n4")]
    other = [("r", "p3", "n5")]
    found = false_negatives(*map(list, zip(*rows + other)))
    assert found == {"rows": 9, "rows_with_false_negative": 8, "false_negative_pairs": 8 * 7, "duplicate_query_rows": 8}


# --------------------------------------------------------------------------- the module, tiny sizes
def benchmark_file(path: Path, seconds: float) -> str:
    """A Snakemake benchmark file (its header and first columns) for a job measured here."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path.write_text(f"s\th:m:s\tmax_rss\tmax_vms\n{seconds:.2f}\t0:00:00\t{rss:.2f}\t0\n")
    return str(path)


def test_preflight_on_tiny_sizes(demo_assets, manifests, tmp_path):
    """Every command of the module on the demo's tiny model and data (< 2 minutes on 2 cores)."""
    from workflow_scripts.model.widen import widen

    stats, benches = [], []
    for stage in STAGE_SOURCES:
        started = time.perf_counter()
        build_shards(
            **shard_kwargs(
                list(manifests.values()),
                tmp_path,
                stage=stage,
                out_dir=tmp_path / "shards" / stage,
                stats_path=tmp_path / f"{stage}.stats.json",
                positives_per_query=2,
                negatives_per_query=4,
                rows_per_shard=100,
                bge_subdir="bge-reasoner-data-0904",
                tokenizer_manifest=manifests["base_model"],
            )
        )
        stats.append(str(tmp_path / f"{stage}.stats.json"))
        benches.append(benchmark_file(tmp_path / f"{stage}.tsv", time.perf_counter() - started))
    widen(
        source=manifests["base_model"],
        out_dir=tmp_path / "widened",
        verify_path=tmp_path / "widened.verify.json",
        to=96,
    )
    train = []
    for stage in STAGE_SOURCES:
        out = tmp_path / "preflight" / f"train_{stage}.json"
        out.parent.mkdir(exist_ok=True)
        settings = TrainSettings(
            global_batch_size=32,
            gradient_accumulation_steps=1,
            mini_batch_size=4,
            query_length=32,
            document_length=64,
            temperature=1.0,
            gather_across_devices=True,
            max_grad_norm=100.0,
            bf16="auto",
            batch_sampler="no_duplicates",
            learning_rate=1e-3,
            dataloader_num_workers=0,
            seed=0,
            warmup_ratio=0.0,
            epochs=1.0,
            save_steps=100,
            save_total_limit=1,
            logging_steps=1,
        )
        measure_training(
            stage=stage,
            init_model=str(tmp_path / "widened"),
            shards=str(tmp_path / "shards" / stage),
            out_json=str(out),
            settings=settings,
            train_steps=2,
            false_negative_batches=2,
            forecast_nodes=2,
            forecast_gpus_per_node=4,
            forecast_global_batch_size=64,
            per_device_batch_size=8,
        )
        train.append(str(out))
    splits = ["biology", "pony", "leetcode"]
    measure_evaluation(
        model_path=str(tmp_path / "widened"),
        bright_manifest=manifests["bright"],
        out_json=str(tmp_path / "evaluate.json"),
        splits=splits,
        query_length=32,
        document_length=64,
        overrides={"pony": {"query_length": 24}},
        encode_batch_size=8,
        documents_per_split=8,
        length_sample=100,
        seed=0,
        queries_per_split=3,
    )
    out = {k: str(tmp_path / f"preflight.{k}") for k in ("json", "md", "html")}
    result = forecast(
        train=train,
        evaluate=str(tmp_path / "evaluate.json"),
        shard_stats=stats,
        shard_benchmarks=benches,
        widen=[str(tmp_path / "widened.verify.json")],
        out_json=out["json"],
        out_md=out["md"],
        out_html=out["html"],
        nodes=2,
        gpus_per_node=4,
        global_batch_size=64,
        gradient_accumulation_steps=1,
        mini_batch_size=4,
        epochs=1.0,
        bf16="auto",
        evaluated_models=4,
        shuffle_buckets=2,
        device_memory_gib=80.0,
        gpu_hours_budget=64.0,
    )
    written = json.loads(Path(out["json"]).read_text())
    assert written["verdict"] == result["verdict"]
    stages_out = written["stages"]
    for stage in ("stage1", "stage2"):  # build_shards: triples/s, peak RSS, projected to the published rows
        b = stages_out["build_shards"][stage]
        assert b["triples_per_s"] > 0 and b["peak_rss_mb"] > 0
        assert b["projected"]["published"]["rows"] == PUBLISHED_TRIPLES[stage]
        assert b["projected"]["published"]["wall_hours"] > b["projected"]["data_at_hand"]["wall_hours"] > 0
    for name in ("train_stage1", "train_stage2"):
        t = stages_out[name]
        assert t["measured"]["throughput"] > 0 and t["measured"]["unit"] == "samples/s"
        assert t["measured"]["per_device_batch_size"] == 8 and t["measured"]["peak_memory_gib"] > 0
        assert t["projected"]["published"]["wall_hours"] > 0 and t["projected"]["published"]["gpu_hours"] > 0
        assert t["projected"]["published"]["how"].startswith("FLOPs of the tokens processed")  # from a CPU
        assert t["memory_at_forecast"]["how"].startswith("estimate")
        memory = t["memory_at_forecast"]
        assert memory["fits"] == (memory["peak_gib"] <= memory["capacity_gib"])
        assert memory["peak_gib"] == pytest.approx(sum(term["gib"] for term in memory["terms"].values()))
        assert len(memory["calibration"]["shapes"]) == len(CALIBRATION_SHAPES)
        for kind in ("real", "processed", "padded"):  # per optimizer step, queries and documents apart
            assert t["tokens"][kind]["queries"] > 0 and t["tokens"][kind]["documents"] > 0
        assert (
            t["tokens"]["real"]["documents"]
            <= t["tokens"]["processed"]["documents"]
            <= t["tokens"]["padded"]["documents"]
        )
        assert t["maxsim_backend"] == "chunked"  # auto, forecast from a CPU
        replay = t["in_batch_false_negatives"]["sampler_replay_at_real_batch"]
        assert replay["rows_per_batch"] == 64 and replay["batches"] >= 1
        assert t["in_batch_false_negatives"]["measured_steps"]["batches"] == 2
    assert set(stages_out["evaluate"]) == set(splits)
    for split, e in stages_out["evaluate"].items():
        assert e["measured"]["throughput"] > 0
        assert e["projected"]["published"]["documents"] == preflight_stats(split).documents
        assert e["projected"]["published"]["wall_hours"] > 0 and e["projected"]["data_at_hand"]["wall_hours"] > 0
        # measured on a CPU: the GPU's time from FLOPs (at the assumed MFU), the CPU's own rates beside it
        published = e["projected"]["published"]
        assert published["how"].startswith("FLOPs / (H100 peak x ASSUMED MFU 0.3)")
        evaluation = json.loads((tmp_path / "evaluate.json").read_text())
        expected = project_split_from_flops(
            measured=evaluation["splits"][split],
            arch=evaluation["arch"],
            documents=published["documents"],
            queries=published["queries"],
            gpu="H100",
            mfu=0.3,
        )
        assert published["seconds"] == expected["seconds"] > 0
        assert e["at_cpu_rates"]["published"]["seconds"] > published["seconds"]  # 2 CPU cores vs an H100
    assert all(check["passed"] for check in written["checks"].values()), written["checks"]
    assert "widen on the real head" in written["checks"]
    text = Path(out["md"]).read_text()
    assert (
        text.startswith("# Preflight\n\n**Preflight: ") and "| train_stage2 |" in text and "| evaluate pony |" in text
    )
    page = Path(out["html"]).read_text()
    assert "id='forecast-table'" in page and "build_shards stage1" in page
    assert all(f"id='{table}'" in page for table in TABLES)  # memory terms, calibration, tokens


@pytest.mark.parametrize("sampler", ["batch_sampler", "no_duplicates"])
def test_training_meta_reports_in_batch_false_negatives(demo_assets, manifests, tmp_path, sampler):
    """stage 2's bge rows expand to 2 x 4 triples: at random, copies of one query share batches;
    NO_DUPLICATES (no text twice in a batch, any column) keeps them apart."""
    from workflow_scripts.train.stage import fit

    build_shards(
        **shard_kwargs(
            list(manifests.values()),
            tmp_path,
            stage="stage2",
            stage_sources=[{"source": "bge_reasoner", "config": None}],
            stats_path=tmp_path / "s.json",
            positives_per_query=2,
            negatives_per_query=4,
            rows_per_shard=1000,
            bge_subdir="bge-reasoner-data-0904",
        )
    )
    meta = fit(
        **train_kwargs(
            tmp_path,
            manifests["base_model"],
            tmp_path / "shards",
            stage="stage2",
            learning_rate=1e-4,
            global_batch_size=32,
            mini_batch_size=16,
            epochs=1,
            save_steps=100,
            save_total_limit=1,
            max_steps=3,
            batch_sampler=sampler,
        )
    )
    found = meta["in_batch_false_negatives"]
    assert found["batch_sampler"] == sampler and found["batches"] == 3 and found["rows_per_batch"] == 32
    if sampler == "batch_sampler":  # 2 x 4 copies of each query among 32 random rows of a small stage
        assert found["rows_with_false_negative_rate_mean"] > 0 and found["duplicate_query_rows_per_batch_mean"] > 0
    else:
        assert found["duplicate_query_rows_per_batch_mean"] == 0 and found["rows_with_false_negative_rate_max"] == 0


def preflight_stats(split: str):
    from workflow_scripts.bright.stats import BRIGHT_STATS

    return BRIGHT_STATS[split]


@pytest.mark.parametrize(("overlay", "trains"), [("rehearsal/config.yaml", 2), (None, 2)])
def test_the_preflight_target_builds_its_dag(tmp_path, overlay, trains):
    # the target first: --quiet and --configfile take several words
    args = ["preflight", "-n", "--quiet", "rules"] + (["--configfile", str(REPO / overlay)] if overlay else [])
    counts = job_counts(snakemake(*args, cwd=tmp_path).stdout)
    assert counts["preflight_train"] == trains and counts["preflight_evaluate"] == 1
    assert counts["preflight_forecast"] == 1 and counts["build_shards"] == 2 and counts["widen"] == 1
    assert "train_stage1" not in counts and "evaluate" not in counts  # nothing of the real run's GPU work


def test_the_preflight_job_gets_the_training_jobs_settings(tmp_path):
    """The rules give preflight_train and the main experiment's training job one TrainSettings
    each (rules/common.smk get_train_settings): the same flags, stage by stage, every field."""
    import shlex

    from workflow_scripts.train.trainer import TRAIN_KEYS

    def settings(command: str) -> dict[str, str]:
        words = shlex.split(command.split(" python -m workflow_scripts ", 1)[1])
        flags = dict(zip(words[2::2], words[3::2]))  # after `<stage> <command>`: --flag value pairs
        return {k: v for k, v in flags.items() if k[2:].replace("-", "_") in TRAIN_KEYS}

    found: dict[str, dict[str, dict[str, str]]] = {"preflight": {}, "train": {}}
    for target in ("preflight", "all"):
        out = snakemake(target, "-n", "-p", cwd=tmp_path).stdout
        for line in out.splitlines():
            for kind, marker in (("preflight", "preflight train --stage "), ("train", " train fit ")):
                if marker in line:
                    stage = "stage1" if "/shards/stage1" in line else "stage2"
                    found[kind][stage] = settings(line)
    assert set(found["train"]) == set(found["preflight"]) == {"stage1", "stage2"}
    for stage in ("stage1", "stage2"):
        assert len(found["train"][stage]) >= len(TRAIN_KEYS) - 1  # all but max_steps (config.yaml leaves it out)
        assert found["preflight"][stage] == found["train"][stage], stage
    assert found["train"]["stage1"]["--learning-rate"] != found["train"]["stage2"]["--learning-rate"]


# --------------------------------------------------------------------------- a first real run that starts
@pytest.fixture()
def hub(monkeypatch):
    """huggingface_hub's API replaced at its boundary: repo_info answers SHA, snapshot_download writes a file."""
    calls = {"repo_info": [], "snapshot": []}

    def repo_info(self, repo_id, *, repo_type=None, revision=None, **_):
        calls["repo_info"].append((repo_id, repo_type, revision))
        return SimpleNamespace(sha=SHA)

    def snapshot_download(*, repo_id, repo_type, revision, local_dir, **_):
        calls["snapshot"].append((repo_id, revision))
        Path(local_dir, "vl").mkdir(parents=True, exist_ok=True)
        Path(local_dir, "vl", "train-00000-of-00001.parquet").write_bytes(b"PAR1")
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", repo_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def shipped_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def fetch_from_config(name: str, tmp_path: Path) -> dict:
    """The download rule's command line (its --flags from the config), run in this process."""
    src = shipped_config()["sources"][name]
    args = {k: src[k] for k in ("repo", "repo_type", "revision", "local")}
    argv = [
        "fetch",
        "--name",
        name,
        "--cache-dir",
        str(tmp_path / "hub"),
        "--manifest",
        str(tmp_path / "sources" / f"{name}.manifest.json"),
        *to_argv(args),
    ]
    with pytest.raises(SystemExit) as done:
        data.main(argv)
    assert done.value.code == 0
    return json.loads((tmp_path / "sources" / f"{name}.manifest.json").read_text())


def test_the_configs_branch_name_revision_resolves_through_the_replaced_client(hub, tmp_path, caplog):
    src = shipped_config()["sources"]["reasonir"]
    assert src["revision"] == "main" and src["local"] is None  # what a connected user's first run meets
    with caplog.at_level(logging.WARNING):
        manifest = fetch_from_config("reasonir", tmp_path)
    assert hub["repo_info"] == [("reasonir/reasonir-data", "dataset", "main")]
    assert hub["snapshot"] == [("reasonir/reasonir-data", SHA)]  # the commit is downloaded, not the moving branch
    assert manifest["revision"] == SHA and manifest["configured_revision"] == "main" and manifest["mode"] == "hub"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"sources.reasonir.revision 'main' is not pinned: resolved to {SHA} on the hub; pin it with "
        "`python -m workflow_scripts.data lock --config config.yaml`"
    ]


def test_a_pinned_sha_stays_and_zeros_mean_the_default_branch(hub, tmp_path):
    manifest = fetch_from_config("bright", tmp_path)
    pinned = shipped_config()["sources"]["bright"]["revision"]
    assert hub["repo_info"] == [] and hub["snapshot"] == [("xlangai/BRIGHT", pinned)] and manifest["revision"] == pinned
    fetch_source(
        name="x",
        repo="o/x",
        revision="0" * 40,
        repo_type="dataset",
        local=None,
        cache_dir=tmp_path / "hub",
        manifest=tmp_path / "x.json",
    )
    assert hub["repo_info"][-1] == ("o/x", "dataset", None)


def test_an_unresolvable_branch_is_one_line_naming_the_keys(monkeypatch, tmp_path):
    def offline(self, *args, **kwargs):
        raise huggingface_hub.errors.OfflineModeIsEnabled("offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", offline)
    with pytest.raises(UserError) as err:
        fetch_source(
            name="bge_reasoner",
            repo="hanhainebula/bge-reasoner-data",
            revision="main",
            repo_type="dataset",
            local=None,
            cache_dir=tmp_path,
            manifest=tmp_path / "m.json",
        )
    assert str(err.value) == (
        "sources.bge_reasoner.revision 'main' is not pinned and cannot be resolved on the hub (OfflineModeIsEnabled); "
        "set sources.bge_reasoner.revision to a commit sha, or sources.bge_reasoner.local to a mirror"
    )


def test_a_cli_mirror_records_its_commit(tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / ".cache/huggingface/download/vl").mkdir(parents=True)
    (mirror / "vl").mkdir()
    (mirror / "vl/train.parquet").write_bytes(b"PAR1")
    (mirror / ".cache/huggingface/download/vl/train.parquet.metadata").write_text(f"{SHA}\netag\n1.0\n")
    manifest = fetch_source(
        name="reasonir",
        repo="o/r",
        revision="main",
        repo_type="dataset",
        local=str(mirror),
        cache_dir=tmp_path,
        manifest=tmp_path / "m.json",
    )
    assert manifest["revision"] == SHA and manifest["mode"] == "local"


def test_the_schema_takes_a_branch_name_and_refuses_garbage():
    schema = REPO / "workflow_scripts/config.schema.yaml"
    config = shipped_config()
    assert config_problem(config, schema) is None and semantic_problems(config) == []
    config["sources"]["reasonir"]["revision"] = "main branch"
    assert "sources/reasonir/revision" in config_problem(config, schema)


def test_lock_writes_the_resolved_commits_into_the_config_in_place(hub, tmp_path):
    fetch_from_config("reasonir", tmp_path)
    (tmp_path / "sources/bge_reasoner.manifest.json").write_text(json.dumps({"repo": "other/repo", "revision": SHA}))
    config = tmp_path / "config.yaml"
    original = (REPO / "config.yaml").read_text()
    config.write_text(original)
    lock = [
        sys.executable,
        "-m",
        "workflow_scripts.data",
        "lock",
        "--config",
        str(config),
        "--manifest-dir",
        str(tmp_path / "sources"),
    ]
    proc = subprocess.run(lock, capture_output=True, text=True, check=True)
    assert proc.stdout.splitlines() == [
        f"sources.reasonir.revision: 'main' -> {SHA}",
        f"sources.bge_reasoner.revision: 'main' stays: {tmp_path}/sources/bge_reasoner.manifest.json records no "
        "commit of hanhainebula/bge-reasoner-data (download it first)",
    ]
    locked = config.read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), locked.splitlines()) if a != b]
    assert len(original.splitlines()) == len(locked.splitlines())  # every comment and line kept
    assert changed == [("    revision: main", f'    revision: "{SHA}"')]
    loaded = yaml.safe_load(locked)
    assert loaded["sources"]["reasonir"]["revision"] == SHA and loaded["sources"]["bge_reasoner"]["revision"] == "main"
    assert loaded["sources"]["bright"] == shipped_config()["sources"]["bright"]  # a pinned sha stays as it is
    subprocess.run(lock, capture_output=True, text=True, check=True)
    assert config.read_text() == locked  # locking twice changes nothing


# --------------------------------------------------------------------------- tokens, time and memory (issue #21)
def test_token_counts_come_from_the_lengths_through_the_trimmed_plan():
    from workflow_scripts.train.gradcache import minibatch_plan, trimmed_token_counts

    lengths = {
        "query": [12, 30, 7, 30, 9, 16],
        "positive": [300, 40, 2048, 65, 120, 90],
        "negative": [50, 700, 33, 410, 64, 128],
    }
    widths = {"query": 32, "positive": 2048, "negative": 2048}
    rows, mini = len(lengths["query"]), 4
    out = simulate_steps(
        lengths,
        per_device=rows,
        devices=1,
        accumulation=1,
        mini_batch_size=mini,
        widths=widths,
        arch=ARCH,
        steps=1,
        seed=0,
    )
    expected = {k: trimmed_token_counts(v, mini_batch_size=mini) for k, v in lengths.items()}  # one batch: every row
    for kind in ("real", "processed", "padded"):
        assert out["tokens"][kind]["queries"] == expected["query"][kind]
        assert out["tokens"][kind]["documents"] == expected["positive"][kind] + expected["negative"][kind]
    assert out["tokens"]["collated"] == {"queries": rows * widths["query"], "documents": 2 * rows * widths["positive"]}
    assert out["tokens"]["real"]["documents"] == sum(lengths["positive"]) + sum(lengths["negative"])
    # attention's L x L work: the same plan on squared lengths is the sum over mini-batches of rows x width**2
    squares = column_tokens(lengths["negative"], mini_batch_size=mini, width=2048)["squares"]["processed"]
    plan = minibatch_plan(lengths["negative"], mini_batch_size=mini)
    assert squares == sum(len(b) * max(lengths["negative"][i] for i in b) ** 2 for b in plan)
    assert widest_minibatch(lengths["positive"], mini_batch_size=mini) == {"rows": 2, "width": 2048}
    # more devices and steps: counts per optimizer step add up over devices
    two = simulate_steps(
        lengths,
        per_device=rows,
        devices=2,
        accumulation=1,
        mini_batch_size=mini,
        widths=widths,
        arch=ARCH,
        steps=3,
        seed=1,
    )
    assert two["tokens"]["processed"] == {k: 2 * v for k, v in out["tokens"]["processed"].items()}


def test_the_time_forecast_is_flops_over_peak_times_mfu():
    encoder, score, steps, devices, peak, mfu = 3e14, 1e14, 88, 8, PEAK_TFLOPS["H100"], 0.3
    t = time_forecast(
        encoder_forward_flops=encoder,
        score_forward_flops=score,
        steps=steps,
        devices=devices,
        peak_tflops=peak,
        mfu=mfu,
    )
    flops = 4 * encoder + 3 * score  # GradCache: no-grad pass + forward + backward (2); MaxSim forward + backward
    assert t["executed_flops_per_step"] == flops
    assert t["step_seconds"] == pytest.approx(flops / (peak * 1e12 * mfu))
    assert t["gpu_hours"] == pytest.approx(steps * t["step_seconds"] * devices / 3600)
    half = time_forecast(
        encoder_forward_flops=encoder,
        score_forward_flops=score,
        steps=steps,
        devices=devices,
        peak_tflops=peak,
        mfu=mfu / 2,
    )
    assert half["gpu_hours"] == pytest.approx(2 * t["gpu_hours"])


def card_arch() -> dict:
    from workflow_scripts.synthetic.rehearsal import ETTIN_32M, VOCAB_SIZE, parameter_count

    hidden = ETTIN_32M["hidden_size"]
    return ARCH | {
        "parameters": parameter_count(),
        "largest_parameter": VOCAB_SIZE * hidden,
        "hidden": hidden,
        "layers": ETTIN_32M["num_hidden_layers"],
    }


def card_memory_shape(config: dict) -> tuple[dict, int]:
    """The shipped config's shape for memory_terms, every row at the full lengths (nothing trimmed)."""
    t = config["train"]
    devices = t["nodes"] * t["gpus_per_node"]
    per_device = t["global_batch_size"] // (devices * t["gradient_accumulation_steps"])
    shape = {
        "per_device": per_device,
        "chunk_rows": min(t["mini_batch_size"], per_device),
        "chunk_width": t["document_length"],
        "score_chunk": t["score_mini_batch_size"] or t["mini_batch_size"],
        "gathered_rows": t["global_batch_size"] // t["gradient_accumulation_steps"],
        "query_width": t["query_length"],
        "document_width": t["document_length"],
        "processed_tokens": per_device * (t["query_length"] + 2 * t["document_length"]),
        "columns": 2,
    }
    return shape, devices


def test_memory_terms_sum_to_the_peak_each_at_its_dtype():
    shape, devices = card_memory_shape(shipped_config())
    arch = card_arch()
    activation = {
        "bytes_per_token_layer": 30_000.0,
        "mask_bytes_per_row_token2": 2.0,
        "inference_bytes_per_token": 15_000.0,
        "inference_mask_bytes_per_row_token2": 2.0,
    }
    phases = memory_terms(
        arch=arch, shape=shape, backend="chunked", activation=activation, activation_bytes=2, world_size=devices
    )
    peak = memory_peak(phases)
    assert peak["peak_bytes"] == sum(t["bytes"] for t in peak["terms"].values()) == max(peak["phase_bytes"].values())
    for terms in phases.values():
        assert terms["weights"]["bytes"] == 4 * arch["parameters"] and terms["weights"]["dtype"] == "fp32"
        assert terms["adamw_states"]["bytes"] == 8 * arch["parameters"] and terms["adamw_states"]["dtype"].startswith(
            "fp32"
        )
        assert "ASSUMED" in terms["cuda_context_and_nccl"]["dtype"]
    loss, encoder = phases["loss"], phases["encoder"]
    assert encoder["gradcache_chunk_activations"]["dtype"].startswith("bf16")
    assert (
        encoder["parameter_gradients"]["dtype"] == "fp32" and encoder["cached_embedding_gradients"]["dtype"] == "fp32"
    )
    # the token vectors reach the loss in fp32: every rank's documents, gathered (concatenated and stacked)
    gathered = 2 * 2 * shape["gathered_rows"] * shape["document_width"] * arch["dim"] * 4
    assert loss["gathered_documents"] == {"bytes": gathered, "dtype": "fp32", "grows": True}
    assert loss["loss_working_set"]["dtype"] == "fp32 (chunked)"
    fp32 = memory_terms(
        arch=arch, shape=shape, backend="chunked", activation=activation, activation_bytes=4, world_size=devices
    )["encoder"]
    masks = activation["mask_bytes_per_row_token2"] * shape["chunk_rows"] * shape["chunk_width"] ** 2
    bf16_values = encoder["gradcache_chunk_activations"]["bytes"] - masks
    assert fp32["gradcache_chunk_activations"]["bytes"] - masks == pytest.approx(2 * bf16_values, abs=2)
    alone = memory_terms(
        arch=arch, shape=shape, backend="chunked", activation=activation, activation_bytes=2, world_size=1
    )["loss"]
    assert alone["gathered_documents"]["bytes"] == 0  # one process gathers nothing


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    """The real encoder (the rehearsal's architecture, random weights) measured at 3 small shapes."""
    from workflow_scripts.model.load import load_colbert
    from workflow_scripts.synthetic.rehearsal import build_tokenizer, make_lexicon, write_base_model

    root = tmp_path_factory.mktemp("real-architecture") / "model"
    write_base_model(root, build_tokenizer(make_lexicon(2000, 0)), seed=0)  # a small lexicon: the real vocabulary size
    # long enough that a mini-batch's activations, not the gradient temporary, set the encoder's peak
    model = load_colbert(str(root), query_length=128, document_length=1024, device="cpu")
    points = measure_calibration(model, query_length=128, document_length=1024, maxsim_backend="auto", temperature=1.0)
    arch = architecture(model)
    return {
        "points": points,
        "arch": arch,
        "fit": calibrate_activations(points, arch=arch, backend=points[0]["maxsim_backend"]),
    }


def test_the_memory_model_is_calibrated_on_measured_shapes(calibration):
    points, fit = calibration["points"], calibration["fit"]
    assert len(points) == len(CALIBRATION_SHAPES) == len(fit["shapes"])
    widths = [p["shape"]["document_width"] for p in points]
    assert widths == sorted(widths) and widths[-1] == 1024  # scaled shapes, the last at the configured length
    assert all(v > 0 for p in points for v in p["measured"].values())
    assert fit["activation"]["bytes_per_token_layer"] > 0 and fit["fitted_on_encoder"] >= 2
    for s in fit["shapes"]:  # the error is what the model says against what was measured
        for phase, error in s["relative_error"].items():
            assert error == pytest.approx(
                (s["model_bytes"][phase] - s["measured_bytes"][phase]) / s["measured_bytes"][phase]
            )
    assert fit["max_abs_relative_error"] < 0.25


def forecast_shape(config: dict, **train: object) -> tuple[dict, dict]:
    from workflow_scripts.train.trainer import per_device_batch_size

    t = config["train"] | train
    devices = t["nodes"] * t["gpus_per_node"]
    per_device = per_device_batch_size(t["global_batch_size"], devices, t["gradient_accumulation_steps"])
    shape = {
        "devices": devices,
        "per_device": per_device,
        "global_batch": t["global_batch_size"],
        "accumulation": t["gradient_accumulation_steps"],
        "mini_batch_size": t["mini_batch_size"],
        "score_chunk": t["score_mini_batch_size"] or t["mini_batch_size"],
        "bf16": t["bf16"] in (True, "auto"),
        "device_memory_bytes": config["preflight"]["device_memory_gib"] * GIB,
        "processed_tokens": per_device * (t["query_length"] + 2 * t["document_length"]),
    }
    return shape, t


def test_the_shipped_shape_fits_and_an_impossible_one_names_the_key(calibration):
    config = shipped_config()
    arch = calibration["arch"] | {k: v for k, v in card_arch().items() if k in ("parameters", "largest_parameter")}

    def at(**train):
        shape, t = forecast_shape(config, **train)
        measured = {"arch": arch, "query_length": t["query_length"], "document_length": t["document_length"]}
        backend = _forecast_backend({"device": "cpu"}, t["maxsim_backend"])
        return forecast_memory(measured, shape, backend=backend, calibration=calibration["fit"])

    shipped = at()
    assert shipped["fits"] and shipped["change"] is None
    assert (
        shipped["headroom_gib"] == pytest.approx(shipped["capacity_gib"] - shipped["peak_gib"])
        and shipped["headroom_gib"] > 0
    )
    assert shipped["peak_gib"] == pytest.approx(sum(t["gib"] for t in shipped["terms"].values()))
    # one GPU embedding the whole global batch in one GradCache chunk
    whole_batch = at(nodes=1, gpus_per_node=1, mini_batch_size=config["train"]["global_batch_size"])
    assert not whole_batch["fits"] and whole_batch["largest_term"] == "gradcache_chunk_activations"
    assert whole_batch["change"] == "train.mini_batch_size"
    einsum = at(maxsim_backend="torch")  # PyLate's einsum holds the whole similarity tensor
    assert not einsum["fits"] and einsum["change"].startswith("train.score_mini_batch_size")
