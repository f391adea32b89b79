"""``preflight train``: a few optimizer steps of one stage through the stage's own trainer, measured."""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ..cli import spread_records
from ..errors import UserError
from ..files import write_json
from ..train.trainer import Training, TrainSettings
from .calibrate import LENGTH_SAMPLE_ROWS, measure_calibration
from .devices import (
    architecture,
    current_device,
    device_memory,
    reset_peak_memory,
    row_token_lengths,
    set_threads,
    shards_for,
    stage_rows,
    synchronize,
)
from .flops import GIB, peak_tflops, train_step_flops

__all__ = ["measure_training", "measured_settings", "replay_false_negatives"]

logger = logging.getLogger(__name__)


def replay_false_negatives(
    trainer: Any, dataset: Any, *, per_device: int, world: int, batches: int, seed: int
) -> dict[str, Any] | None:
    """In-batch false negatives of the first ``batches`` contrastive batches the trainer's sampler would draw.

    The batch sampler is the trainer's own (``train.batch_sampler``) at ``per_device``;
    accelerate gives per-device batch ``k`` to rank ``k % world``, and CachedContrastive
    gathers the ranks' documents, so ``world`` consecutive per-device batches are one
    contrastive batch. Rows are compared by text (:func:`workflow_scripts.train.negatives.false_negatives`).

    Parameters
    ----------
    trainer
        The stage's trainer (:func:`~workflow_scripts.train.trainer.make_trainer`): its sampler and collator are used.
    dataset
        The loaded triples the sampler draws from.
    per_device
        Rows of one per-device batch (the preflight passes the real one, at the forecast's shape).
    world
        Devices whose per-device batches make one contrastive batch.
    batches
        Contrastive batches replayed (fewer if the sampler runs out); 0: no replay (None).
    seed
        Seeds the sampler's generator.

    Returns
    -------
    ``batches`` replayed, ``rows_per_batch``, the mean and largest share of rows with a false negative, and the
    mean false-negative pairs and duplicate-query rows per batch (None where no batch was replayed);
    None when ``batches`` is 0.
    """
    if batches <= 0:  # preflight.false_negative_batches: 0 turns the replay off
        return None
    import torch

    from ..train.negatives import false_negatives

    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = trainer.get_batch_sampler(
        dataset,
        batch_size=per_device,
        drop_last=True,
        valid_label_columns=trainer.data_collator.valid_label_columns,
        generator=generator,
    )
    found, group = [], []
    for indices in sampler:
        group.extend(indices)
        if len(group) < per_device * world:
            continue
        rows = dataset[group]
        found.append(false_negatives(rows["query"], rows["positive"], rows["negative"]))
        group = []
        if len(found) == batches:
            break
    rates = [f["rows_with_false_negative"] / f["rows"] for f in found]
    return {
        "batches": len(found),
        "rows_per_batch": per_device * world,
        "rows_with_false_negative_rate_mean": statistics.fmean(rates) if rates else None,
        "rows_with_false_negative_rate_max": max(rates, default=None),
        "false_negative_pairs_per_batch_mean": statistics.fmean(f["false_negative_pairs"] for f in found)
        if found
        else None,
        "duplicate_query_rows_per_batch_mean": statistics.fmean(f["duplicate_query_rows"] for f in found)
        if found
        else None,
    }


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall seconds of each optimizer step (device synchronised at both ends)."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            self.seconds.append(time.perf_counter() - self.started)
            logger.info("preflight: step %d took %.1f s", state.global_step, self.seconds[-1])

    return StepTimer()


def _measured_training(
    *, model: Any, dataset: Any, scratch: Path, settings: TrainSettings, stage: str, world_size: int, per_device: int
) -> tuple[Training, Any]:
    """The training stage's own trainer (:func:`workflow_scripts.train.trainer.make_trainer`) with a step timer.

    The same settings as the stage's, capped at ``settings.max_steps``; nothing is saved.
    """
    from ..train.trainer import make_trainer

    training = make_trainer(
        model=model,
        dataset=dataset,
        settings=settings,
        output_dir=scratch / "trainer",
        device=current_device(),
        world_size=world_size,
        label=f"preflight {stage}",
        per_device=per_device,
        save_checkpoints=False,
    )
    timer = _step_timer()
    training.trainer.add_callback(timer)
    return training, timer


def measured_settings(settings: TrainSettings, *, steps: int, device: str) -> TrainSettings:
    """The stage's settings as the preflight runs them: ``steps`` optimizer steps, and on a CPU
    the exact chunked MaxSim where the stage's backend is a CUDA kernel.

    Parameters
    ----------
    settings
        The stage's training settings.
    steps
        Optimizer steps to run (``max_steps``).
    device
        This process's device, ``cpu`` or ``cuda``: on ``cpu`` the ``lik``/``flash`` backends become ``chunked``.

    Examples
    --------
    >>> s = TrainSettings(learning_rate=1e-5, global_batch_size=64, gradient_accumulation_steps=1,
    ...                   mini_batch_size=8, query_length=32, document_length=64, temperature=1.0,
    ...                   gather_across_devices=True, max_grad_norm=1.0, warmup_ratio=0.0, epochs=1.0,
    ...                   bf16="auto", save_steps=10, save_total_limit=1, logging_steps=1,
    ...                   dataloader_num_workers=0, seed=0, maxsim_backend="flash")
    >>> m = measured_settings(s, steps=2, device="cpu")
    >>> m.max_steps, m.maxsim_backend, measured_settings(s, steps=2, device="cuda").maxsim_backend
    (2, 'chunked', 'flash')
    """
    backend = settings.maxsim_backend
    if device == "cpu" and backend in ("lik", "flash"):  # CUDA kernels: the CPU measures the exact one
        logger.info("preflight: maxsim_backend %s needs CUDA; measuring with chunked", backend)
        backend = "chunked"
    return dataclasses.replace(settings, max_steps=steps, maxsim_backend=backend)


def measure_training(
    *,
    stage: str,
    init_model: str,
    shards: str,
    out_json: str,
    settings: TrainSettings,
    train_steps: int,
    false_negative_batches: int,
    forecast_nodes: int,
    forecast_gpus_per_node: int,
    forecast_global_batch_size: int,
    per_device_batch_size: int | None = None,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """A few optimizer steps of one stage at the real shapes: step time, throughput, peak memory, false negatives.

    Then, on rank 0, what the forecast needs beyond the steps: the token lengths of the loaded
    rows (:func:`~workflow_scripts.preflight.devices.row_token_lengths`) and the memory of one GradCache step at three scaled shapes
    (:func:`~workflow_scripts.preflight.calibrate.measure_calibration`).

    Runs in a job shaped like the training job (``launch.sh``: one process per GPU) with the
    training stage's settings and trainer; the per-device batch is ``per_device_batch_size`` or
    the real one. The first step carries the warm-up; with more steps it is left out of the
    rate. The ``forecast_*`` shape is the one the batch sampler is replayed at. Writes
    ``out_json`` (rank 0). The command line (``preflight train``) takes the settings as flags.

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`~workflow_scripts.cli`): one
    flag per parameter; the body calls short helpers.

    Parameters
    ----------
    stage
        ``stage1`` or ``stage2``: names the log lines and the result.
    init_model
        The model the stage starts from: a checkpoint directory or its download manifest.
    shards
        The stage's ``part-*.parquet`` folder; only the first shards holding the rows needed are loaded.
    out_json
        Where rank 0 writes the result; the scratch folder is made beside it.
    settings
        The stage's training settings; ``max_steps`` (and on a CPU a CUDA-only MaxSim backend) replaced.
    train_steps
        Optimizer steps measured.
    false_negative_batches
        Contrastive batches of the sampler replayed at the forecast's shape.
    forecast_nodes, forecast_gpus_per_node, forecast_global_batch_size
        The cluster and global batch the forecast projects to: the shape the sampler is replayed at.
    per_device_batch_size
        Rows per device and micro-step of the measured steps; None: the real one.
    trust_remote_code
        Allow a checkpoint that ships code.
    threads
        Torch's CPU threads; None or 0 leaves its default.

    Returns
    -------
    The result written to ``out_json`` on rank 0; ``{}`` on the other ranks.
    """
    from ..model.load import load_colbert
    from ..train.rows import shard_files
    from ..train.world import world_info

    set_threads(threads)
    world = world_info()
    shapes = _batch_shapes(
        settings=settings,
        world_size=world["world_size"],
        per_device_batch_size=per_device_batch_size,
        forecast_devices=forecast_nodes * forecast_gpus_per_node,
        forecast_global_batch_size=forecast_global_batch_size,
        train_steps=train_steps,
        false_negative_batches=false_negative_batches,
    )
    files = shard_files(shards)
    model = load_colbert(
        init_model,
        query_length=settings.query_length,
        document_length=settings.document_length,
        trust_remote_code=trust_remote_code,
        device=current_device(),
    )
    settings = measured_settings(settings, steps=train_steps, device=current_device())
    run = _run_steps(
        model=model, files=files, shapes=shapes, settings=settings, stage=stage, world=world, out_json=out_json
    )
    if world["rank"] != 0:
        return {}
    result = _result(
        model=model,
        files=files,
        shapes=shapes,
        settings=settings,
        world=world,
        run=run,
        stage=stage,
        init_model=init_model,
    )
    write_json(out_json, result)
    logger.info(
        "preflight %s: %.1f s/step at per-device %d, %.2f samples/s, peak %.2f GiB",
        stage,
        result["step_seconds"],
        shapes.per_device,
        result["samples_per_s"],
        run.memory["peak_bytes"] / GIB,
    )
    return result


train_command = spread_records(measure_training)  # `preflight train`: one flag per TrainSettings field


@dataclasses.dataclass(frozen=True)
class _BatchShapes:
    """The measured steps' per-device batch, the real one the sampler is replayed at, and the rows to load."""

    per_device: int
    forecast_per_device: int
    forecast_devices: int
    rows_needed: int
    false_negative_batches: int


def _batch_shapes(
    *,
    settings: TrainSettings,
    world_size: int,
    per_device_batch_size: int | None,
    forecast_devices: int,
    forecast_global_batch_size: int,
    train_steps: int,
    false_negative_batches: int,
) -> _BatchShapes:
    """Per-device batches of the measured steps (``per_device_batch_size`` or the real one) and of the replay."""
    from ..train.trainer import per_device_batch_size as real_per_device

    accumulation = settings.gradient_accumulation_steps
    per_device = per_device_batch_size or real_per_device(settings.global_batch_size, world_size, accumulation)
    return _BatchShapes(
        per_device=per_device,
        forecast_per_device=real_per_device(forecast_global_batch_size, forecast_devices, accumulation),
        forecast_devices=forecast_devices,
        rows_needed=max(
            per_device * world_size * accumulation * train_steps, forecast_global_batch_size * false_negative_batches
        ),
        false_negative_batches=false_negative_batches,
    )


@dataclasses.dataclass
class _Run:
    """What the measured steps left: the trainer, its step times, the replay, wall time, memory, rank 0's extras."""

    training: Training
    timer: Any
    replay: dict[str, Any] | None
    wall: float
    memory: dict[str, Any]
    extra: dict[str, Any]
    rows: int


def _run_steps(
    *,
    model: Any,
    files: list[str],
    shapes: _BatchShapes,
    settings: TrainSettings,
    stage: str,
    world: dict[str, Any],
    out_json: str,
) -> _Run:
    """Load the rows, replay the sampler (rank 0), run the steps, then rank 0's extras; the scratch folder goes."""
    import shutil

    from ..train.rows import load_triples

    scratch = Path(tempfile.mkdtemp(dir=Path(out_json).parent, prefix=f".{Path(out_json).name}.tmp-"))
    try:
        dataset = load_triples(shards_for(files, shapes.rows_needed), scratch / "datasets-cache")
        training, timer = _measured_training(
            model=model,
            dataset=dataset,
            scratch=scratch,
            settings=settings,
            stage=stage,
            world_size=world["world_size"],
            per_device=shapes.per_device,
        )
        replay = None
        if world["rank"] == 0:  # the sampler replay needs no model and no other rank
            replay = replay_false_negatives(
                training.trainer,
                dataset,
                per_device=shapes.forecast_per_device,
                world=shapes.forecast_devices,
                batches=shapes.false_negative_batches,
                seed=settings.seed,
            )
        wall = _timed_train(training=training, stage=stage, rank=world["rank"])
        memory = _max_over_ranks(device_memory())
        extra = _rank0_extras(model=model, dataset=dataset, settings=settings) if world["rank"] == 0 else {}
        return _Run(
            training=training, timer=timer, replay=replay, wall=wall, memory=memory, extra=extra, rows=len(dataset)
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _result(
    *,
    model: Any,
    files: list[str],
    shapes: _BatchShapes,
    settings: TrainSettings,
    world: dict[str, Any],
    run: _Run,
    stage: str,
    init_model: str,
) -> dict[str, Any]:
    """Rank 0's record of the steps: rates, FLOPs and memory, the shapes, false negatives, the extras."""
    result = _training_result(
        model=model,
        trainer=run.training.trainer,
        seconds=run.timer.seconds,
        world_size=world["world_size"],
        per_device=shapes.per_device,
        settings=settings,
        memory=run.memory,
    )
    result |= {
        "stage": stage,
        "init_model": init_model,
        "real_per_device_batch_size": shapes.forecast_per_device,
        "train_wall_s": run.wall,
        "rows_loaded": run.rows,
        "stage_rows": stage_rows(files),
        **_loss_facts(training=run.training, settings=settings, replay=run.replay),
        **run.extra,
    }
    return result


def _loss_facts(*, training: Training, settings: TrainSettings, replay: dict[str, Any] | None) -> dict[str, Any]:
    """Lengths and MaxSim the steps ran at, and the in-batch false negatives they and the replay saw."""
    return {
        "query_length": settings.query_length,
        "document_length": settings.document_length,
        "maxsim_backend": training.loss.maxsim_backend,
        "score_mini_batch_size": settings.score_mini_batch_size,
        "in_batch_false_negatives": {
            "measured_steps": training.false_negatives.summary(settings.batch_sampler),
            "sampler_replay_at_real_batch": replay,
        },
    }


def _timed_train(*, training: Training, stage: str, rank: int) -> float:
    """Wall seconds of the measured steps; running out of memory is one line naming the batch to lower."""
    import torch

    reset_peak_memory()
    started = time.perf_counter()
    try:
        training.trainer.train()
    except torch.OutOfMemoryError as err:
        raise UserError(
            f"preflight {stage}: out of memory at per-device batch {training.per_device_batch_size} on rank {rank} "
            f"({' '.join(str(err).split())[:160]}); set preflight.per_device_batch_size lower to measure a rate"
        ) from err
    return time.perf_counter() - started


def _rank0_extras(*, model: Any, dataset: Any, settings: TrainSettings) -> dict[str, Any]:
    """The loaded rows' token lengths and the memory calibration (rank 0, after the steps)."""
    lengths = row_token_lengths(model, dataset, rows=LENGTH_SAMPLE_ROWS)
    calibration = measure_calibration(
        model,
        query_length=settings.query_length,
        document_length=settings.document_length,
        maxsim_backend=settings.maxsim_backend,
        temperature=settings.temperature,
    )
    return {"token_lengths": lengths, "calibration": calibration}


def _training_result(
    *,
    model: Any,
    trainer: Any,
    seconds: list[float],
    world_size: int,
    per_device: int,
    settings: TrainSettings,
    memory: dict[str, Any],
) -> dict[str, Any]:
    """Step time (the first step, with the warm-up, left out when there are more), rates, FLOPs, MFU."""
    arch = architecture(model)
    accumulation = settings.gradient_accumulation_steps
    lengths = {"query_length": model.query_length, "document_length": model.document_length}
    step = statistics.median(seconds[1:] or seconds)
    gathers = settings.gather_across_devices and world_size > 1
    candidates = 2 * per_device * (world_size if gathers else 1)
    micro = train_step_flops(per_device=per_device, candidates=candidates, arch=arch, **lengths)
    flops = {k: accumulation * v for k, v in micro.items()}  # each micro-batch is its own contrastive batch
    samples = per_device * accumulation / step  # one device's rows per second
    tflops = flops["model"] / step / 1e12
    peak = peak_tflops(memory["device"])
    return {
        "world_size": world_size,
        "device": memory["device"],
        "per_device_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "mini_batch_size": settings.mini_batch_size,
        "gradcache_chunk": min(settings.mini_batch_size, per_device),
        "candidates": candidates,
        "steps": len(seconds),
        "step_times_s": seconds,
        "step_seconds": step,
        "samples_per_s_per_device": samples,
        "samples_per_s": samples * world_size,
        "tokens_per_s": samples * world_size * (lengths["query_length"] + 2 * lengths["document_length"]),
        "arch": arch,
        "flops": flops,
        "tflops_per_s_per_device": tflops,
        "mfu": tflops / peak if peak else None,
        "memory": memory,
        "batch_sampler": settings.batch_sampler,
        "bf16": bool(trainer.args.bf16),
    }


def _max_over_ranks(memory: dict[str, Any]) -> dict[str, Any]:
    """The rank with the highest peak (every rank takes part)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return memory
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, memory)
    return max(gathered, key=lambda m: m["peak_bytes"])
