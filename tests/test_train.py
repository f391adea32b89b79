"""Training: real PyLate CachedContrastive steps on the demo shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import shard_kwargs, train_kwargs

from workflow_scripts.cli import to_argv
from workflow_scripts.errors import UserError
from workflow_scripts.shards.build import build_shards
from workflow_scripts.train.stage import fit
from workflow_scripts.train.trainer import per_device_batch_size


@pytest.fixture()
def stage1_shards(manifests, tmp_path):
    build_shards(**shard_kwargs(list(manifests.values()), tmp_path))
    return tmp_path / "shards"


def test_a_few_steps_lower_the_loss(demo_assets, stage1_shards, tmp_path):
    meta = fit(**train_kwargs(tmp_path, demo_assets / "base-model", stage1_shards))
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "m.jsonl")]
    assert len(losses) == meta["steps"] >= 10
    assert meta["candidates_per_query"] == 2 * 16  # one process: the (local = global) batch x 2
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert (tmp_path / "model/modules.json").exists()
    config = json.loads((tmp_path / "model/config_sentence_transformers.json").read_text())
    assert config["query_length"] == 32 and config["document_length"] == 48
    assert config["query_prefix"] == "[Q] " and config["document_prefix"] == "[D] "


def test_batch_arithmetic_is_refused_with_one_line(demo_assets, stage1_shards, tmp_path):
    with pytest.raises(UserError, match="not divisible"):
        per_device_batch_size(2048, 3, 1)
    args = train_kwargs(
        tmp_path, demo_assets / "base-model", stage1_shards, global_batch_size=10, gradient_accumulation_steps=4
    )
    proc = subprocess.run(
        [sys.executable, "-m", "workflow_scripts.train.stage", "fit", *to_argv(args)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: train.global_batch_size=10 is not divisible by world size 1 x gradient_accumulation_steps 4"
    ]
    assert not (tmp_path / "model").exists()


def test_resume_after_sigkill_gives_the_same_weights(demo_assets, stage1_shards, tmp_path):
    """Kill a training run with SIGKILL after a checkpoint, rerun it: same final weights."""
    import os
    import signal
    import time

    import torch
    from safetensors.torch import load_file

    init = demo_assets / "base-model"
    whole = train_kwargs(tmp_path / "whole", init, stage1_shards, save_steps=3)
    fit(**whole)
    killed = train_kwargs(tmp_path / "killed", init, stage1_shards, save_steps=3)
    cmd = [sys.executable, "-m", "workflow_scripts.train.stage", "fit", *to_argv(killed)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ckpt_root = tmp_path / "killed/ckpt"
    while time.time() < deadline and not list(ckpt_root.glob("*/checkpoint-6/trainer_state.json")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed/model").exists()  # nothing half-written is taken as done
    (tmp_path / "killed/m.jsonl").unlink(missing_ok=True)  # Snakemake removes a failed job's outputs
    meta = fit(**killed)  # the rerun
    assert meta["resumed_from"] and int(meta["resumed_from"].rsplit("-", 1)[1]) >= 6
    for part in ("model.safetensors", "3_Dense/model.safetensors"):
        a = load_file(tmp_path / "whole/model" / part)
        b = load_file(tmp_path / "killed/model" / part)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{part}:{key} differs after resume"
    rows = [json.loads(line) for line in open(tmp_path / "killed/m.jsonl")]
    assert [r["step"] for r in rows] == list(range(1, meta["steps"] + 1))  # the whole curve, each step once
    whole_meta = json.loads((tmp_path / "whole/meta.json").read_text())
    assert meta["mean_loss"] == pytest.approx(sum(r["loss"] for r in rows) / len(rows))  # the whole run's
    assert meta["mean_loss"] == pytest.approx(whole_meta["mean_loss"], rel=1e-4)
    assert meta["last_loss"] == rows[-1]["loss"]


def test_a_changed_recipe_does_not_resume_old_checkpoints(demo_assets, stage1_shards, tmp_path):
    from workflow_scripts.train.stage import run_fingerprint

    a = run_fingerprint({"learning_rate": 1e-5}, [demo_assets / "base-model", stage1_shards])
    b = run_fingerprint({"learning_rate": 5e-6}, [demo_assets / "base-model", stage1_shards])
    assert a != b
    (stage1_shards / "part-00000.parquet").touch()  # rebuilt shards
    assert run_fingerprint({"learning_rate": 1e-5}, [demo_assets / "base-model", stage1_shards]) != a


def test_a_rank_without_its_devices_refuses_to_train(demo_assets, stage1_shards, tmp_path):
    """A job given GPUs that this torch cannot use (here: a CPU build) stops in one line, before
    loading anything, instead of training on CPU with gloo for days."""
    args = train_kwargs(tmp_path, demo_assets / "base-model", stage1_shards)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1,2,3")
    proc = subprocess.run(
        [sys.executable, "-m", "workflow_scripts.train.stage", "fit", *to_argv(args)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: train: this job was given 4 GPU(s) (CUDA_VISIBLE_DEVICES=0,1,2,3)")
    assert "refusing to train on CPU" in line
    assert not (tmp_path / "model").exists() and not (tmp_path / "ckpt").exists()


@pytest.mark.parametrize(
    ("environ", "visible", "local_rank", "expected"),
    [
        ({}, 0, 0, "cpu"),  # nothing asked, nothing there: the CPU is what the job wants
        ({"CUDA_VISIBLE_DEVICES": ""}, 0, 0, "cpu"),
        ({"CUDA_VISIBLE_DEVICES": "NoDevFiles"}, 0, 0, "cpu"),  # Slurm without GPU gres
        ({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, 4, 3, "cuda:3"),  # each rank its own GPU, not GPU 0
        ({}, 2, 1, "cuda:1"),  # a workstation: CUDA usable although nothing was asked
        ({"SLURM_JOB_GPUS": "0,1"}, 0, 0, UserError),  # the CUDA build cannot reach the driver
        ({"CUDA_VISIBLE_DEVICES": "GPU-5f1c"}, 0, 0, UserError),
        ({"CUDA_VISIBLE_DEVICES": "0"}, 1, 1, UserError),  # two ranks on a node with one GPU
    ],
)
def test_each_rank_trains_on_its_own_device(monkeypatch, environ, visible, local_rank, expected):
    import torch

    from workflow_scripts.train.world import training_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: visible > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    if expected is UserError:
        with pytest.raises(UserError) as error:
            training_device(local_rank=local_rank, environ=environ)
        assert "\n" not in str(error.value) and "CUDA_VISIBLE_DEVICES=" in str(error.value)
    else:
        assert training_device(local_rank=local_rank, environ=environ) == expected


def test_torch_and_chunked_maxsim_train_the_same_model(demo_assets, stage1_shards, tmp_path):
    """The memory-bounded MaxSim changes memory, not what is learned: PyLate's einsum and the
    chunked backend give the same stage-1 weights (float tolerance: summation order differs)."""
    import torch
    from safetensors.torch import load_file

    weights, metas = {}, {}
    for backend in ("torch", "chunked"):
        kwargs = train_kwargs(
            tmp_path / backend, demo_assets / "base-model", stage1_shards, maxsim_backend=backend, epochs=1
        )
        metas[backend] = fit(**kwargs)
        weights[backend] = {
            name: tensor
            for path in sorted((tmp_path / backend / "model").rglob("model.safetensors"))
            for name, tensor in load_file(path).items()
        }
    assert metas["torch"]["maxsim_backend"] == "torch" and metas["chunked"]["maxsim_backend"] == "chunked"
    assert metas["torch"]["steps"] == metas["chunked"]["steps"] >= 2
    assert weights["torch"].keys() == weights["chunked"].keys()
    # Same loss at every step, to float tolerance (the summation order differs) ...
    curves = {b: [json.loads(line)["loss"] for line in open(tmp_path / b / "m.jsonl")] for b in weights}
    assert curves["chunked"] == pytest.approx(curves["torch"], rel=1e-5)
    # ... and the same weights: Adam divides each update by the root of its squared-gradient
    # average, so a 1e-7 gradient difference on a near-zero gradient is not bounded by a fixed
    # atol; the difference between the two runs is measured against how far training moved the
    # weights (a different batch order or lr moves it by ~1, float noise by < 1e-3).
    base = {
        name: t
        for path in sorted((demo_assets / "base-model").rglob("model.safetensors"))
        for name, t in load_file(path).items()
    }
    for name, tensor in weights["torch"].items():
        same_shape = name in base and base[name].shape == tensor.shape
        moved = (tensor.float() - base[name].float()).norm() if same_shape else None
        gap = (weights["chunked"][name].float() - tensor.float()).norm()
        if moved is not None and moved > 0:
            assert gap / moved < 1e-3, (name, float(gap), float(moved))
        else:
            torch.testing.assert_close(weights["chunked"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # the meta counts this rank's encoder tokens: trimming processes no more than padding would
    tokens = metas["chunked"]["tokens"]
    assert tokens["steps"] == metas["chunked"]["steps"]
    for group in ("queries", "documents"):
        per_step = tokens["per_step"][group]
        assert 0 < per_step["real"] <= per_step["processed"] <= per_step["padded"] <= per_step["collated"]
    rows = [json.loads(line) for line in (tmp_path / "chunked" / "m.jsonl").read_text().splitlines()]
    assert all(row["tokens"]["documents"]["real"] > 0 for row in rows)


def test_the_preflight_measures_the_trainer_the_stage_trains_with(demo_assets, stage1_shards, tmp_path):
    """Both build their trainer with make_trainer: for the same settings, the same trainer class,
    loss (class, chunking, temperature, gathering, MaxSim backend, the counters wrapped around
    it), collator and training arguments; the preflight differs only where it says so (a step
    cap, nothing saved, its scratch directory)."""
    from workflow_scripts.preflight.measure_train import _measured_training, measured_settings
    from workflow_scripts.train.negatives import FalseNegativeCounter
    from workflow_scripts.train.rows import shard_files
    from workflow_scripts.train.stage import stage_training
    from workflow_scripts.train.trainer import CandidateCounter, TrainSettings
    from workflow_scripts.train.world import world_info

    kwargs = train_kwargs(
        tmp_path,
        demo_assets / "base-model",
        stage1_shards,
        batch_sampler="no_duplicates",
        maxsim_backend="chunked",
        score_mini_batch_size=4,
        max_grad_norm=2.0,
        warmup_ratio=0.1,
        logging_steps=2,
    )
    settings = TrainSettings(**{k: v for k, v in kwargs.items() if k in TrainSettings.__dataclass_fields__})
    trained, _ = stage_training(
        stage="stage1",
        init_model=kwargs["init_model"],
        files=shard_files(stage1_shards),
        run_dir=tmp_path / "run",
        settings=settings,
        trust_remote_code=False,
        device="cpu",
        world_size=world_info()["world_size"],
    )
    dataset = trained.trainer.train_dataset
    measured, _ = _measured_training(
        model=trained.trainer.model,
        dataset=dataset,
        scratch=tmp_path / "scratch",
        stage="stage1",
        world_size=1,
        settings=measured_settings(settings, steps=2, device="cpu"),
        per_device=trained.per_device_batch_size,
    )
    assert type(measured.trainer) is type(trained.trainer)
    assert type(measured.trainer.data_collator) is type(trained.trainer.data_collator)
    for built in (trained, measured):
        assert isinstance(built.loss.forward, FalseNegativeCounter) and built.loss.forward is built.false_negatives
        assert isinstance(built.candidates, CandidateCounter) and built.loss.candidate_counter is built.candidates
    assert type(measured.loss) is type(trained.loss)
    for name in ("mini_batch_size", "score_mini_batch_size", "temperature", "gather_across_devices", "maxsim_backend"):
        assert getattr(measured.loss, name) == getattr(trained.loss, name), name
    assert trained.loss.score_mini_batch_size == 4 and trained.loss.maxsim_backend == "chunked"
    a, b = trained.trainer.args.to_dict(), measured.trainer.args.to_dict()
    differ = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differ <= {"output_dir", "logging_dir", "max_steps", "save_strategy"}, differ
    assert (a["max_steps"], b["max_steps"], b["save_strategy"]) == (-1, 2, "no")
    assert a["batch_sampler"] == "no_duplicates" and a["max_grad_norm"] == 2.0 and not a["ddp_find_unused_parameters"]
    # the sampler replay draws the asked number of contrastive batches; 0 turns it off
    from workflow_scripts.preflight.measure_train import replay_false_negatives

    replay = replay_false_negatives(measured.trainer, dataset, per_device=2, world=2, batches=1, seed=0)
    assert (replay["batches"], replay["rows_per_batch"]) == (1, 4)
    assert replay_false_negatives(measured.trainer, dataset, per_device=2, world=2, batches=0, seed=0) is None
