"""Training stage (both curriculum stages): PyLate ColBERT + CachedContrastive, resumable.

One process per device. Under Slurm the rule starts one task per GPU with ``srun``
(``workflow_scripts/launch.sh`` maps ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` to
``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` and points ``MASTER_ADDR`` at the first node);
outside Slurm it is a single local process. The Hugging Face Trainer reads those variables
and sets up DDP; ``CachedContrastive(gather_across_devices=True)`` then gathers every rank's
documents, so each query sees the whole global batch as negatives.

Checkpoints go to a directory Snakemake does not own (``checkpoints/<stage>``): Snakemake
deletes a failed job's outputs, but a rerun must find the last checkpoint and resume. The
per-step metrics log lives there too (truncated to the resumed step on a rerun) and is copied
to the ``metrics_path`` output at the end, so the curve always covers the whole run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..cli import run_commands, spread_records
from ..errors import naming_write_errors
from ..files import atomic_dir, atomic_file, write_json
from ..model.load import load_colbert, model_dir
from ..progress import Progress
from .rows import load_triples, shard_files
from .trainer import Training, TrainSettings, make_trainer, per_device_batch_size
from .world import training_device, world_info

__all__ = [
    "PROGRESS_INTERVAL",
    "fit",
    "last_checkpoint",
    "loss_summary",
    "metrics_callback",
    "run_fingerprint",
    "run_identity",
    "stage_meta",
    "stage_training",
    "train_stage",
]

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL: float | None = None  # between two progress lines; None: $PROGRESS_INTERVAL_S or 30 s


def run_fingerprint(args: dict[str, Any], paths: list[str | Path]) -> str:
    """Names this exact run: training arguments plus identity (name, size, mtime) of inputs.

    Checkpoints live under it, so a rerun with another lr, another init model or rebuilt
    shards starts fresh instead of resuming a run that was about something else.

    Parameters
    ----------
    args
        What defines the run (:func:`run_identity`); a float with an integral value counts as the int.
    paths
        The input files or folders (the init model, the shards), each file identified by its name (relative to
        the folder), size and mtime; files under a ``.cache`` folder are left out.

    Returns
    -------
    The first 16 hex digits of the SHA-256 of both.

    Examples
    --------
    >>> run_fingerprint({"lr": 1e-5}, []) == run_fingerprint({"lr": 1e-5}, [])
    True
    >>> run_fingerprint({"lr": 1e-5}, []) == run_fingerprint({"lr": 5e-6}, [])
    False
    >>> run_fingerprint({"epochs": 2}, []) == run_fingerprint({"epochs": 2.0}, [])  # CLI: float("2")
    True
    >>> import tempfile
    >>> model = Path(tempfile.mkdtemp()) / ".cache" / "model"  # e.g. under ~/.cache: its files still count
    >>> model.mkdir(parents=True); _ = (model / "w.bin").write_bytes(b"1")
    >>> before = run_fingerprint({}, [model]); _ = (model / "w.bin").write_bytes(b"22")
    >>> before == run_fingerprint({}, [model])
    False
    """
    args = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in args.items()}
    files = []
    for path in paths:
        path = Path(path)
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            name = f.relative_to(path) if path.is_dir() else Path(f.name)
            if f.is_file() and ".cache" not in name.parts:  # the folder's own caches, not a ~/.cache above it
                stat = f.stat()
                files.append((str(name), stat.st_size, stat.st_mtime_ns))
    blob = json.dumps({"args": args, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def last_checkpoint(folder: Path, *, cleanup: bool) -> str | None:
    """The newest *complete* Trainer checkpoint (a kill can interrupt a save mid-way).

    A checkpoint is complete when its ``trainer_state.json`` (written last) parses and names
    its own step; incomplete ones are removed when ``cleanup`` (rank 0).

    Parameters
    ----------
    folder
        The run's directory, holding the Trainer's ``checkpoint-<step>`` folders.
    cleanup
        Remove the incomplete checkpoints passed over (those newer than the one returned).

    Returns
    -------
    The newest complete checkpoint's path; None when there is none.
    """

    def step(path: Path) -> int:
        return int(path.name.split("-")[-1])

    for ckpt in sorted(folder.glob("checkpoint-*[0-9]"), key=step, reverse=True):
        try:
            if json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step(ckpt):
                return str(ckpt)
        except (OSError, ValueError, KeyError):
            pass
        logger.warning("ignoring incomplete checkpoint %s", ckpt)
        if cleanup:
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def metrics_callback(
    path: Path,
    global_batch: int,
    rank: int,
    *,
    what: str = "train",
    interval: float | None = PROGRESS_INTERVAL,
    loss: Any | None = None,
):
    """Trainer callback: one JSON line per logging step (loss, lr, grad-norm, samples/s, and this
    rank's tokens of the step: real, processed, padded, for queries and documents) in ``path``,
    and on rank 0 a plain progress line in the job's log every ``interval`` seconds.

    Longer than ~50 lines because the callback class is defined here: ``transformers`` is
    imported when a run starts, not when the module is (the rules' parse imports none of it).

    The progress line (tqdm stays off: no carriage returns in a log read with ``tail -f``)::

        train: 40,960/409,600 samples (10.0%), 41.0 samples/s, ETA 2h30m; step 20/200;
        document tokens/step 62,380 real, 71,210 processed, 524,288 padded

    Rate and ETA cover this process's part of the run (a resumed run starts at its checkpoint).

    Parameters
    ----------
    path
        The metrics JSONL file.
    global_batch
        Samples per optimizer step, all ranks together.
    rank
        This process's rank; only rank 0 writes.
    what
        Start of each progress line.
    interval
        Seconds between two progress lines.
    loss
        The :class:`~workflow_scripts.train.gradcache.TrimmedCachedContrastive` being trained: told
        the step (a non-finite score names it), its token counts read at each step's end.
    """
    from transformers import TrainerCallback

    class MetricsLogger(TrainerCallback):
        def __init__(self) -> None:
            self.last = (time.time(), 0)
            self.progress: Progress | None = None
            self.step, self.max_steps = 0, 0
            self.tokens: dict[str, dict[str, int]] | None = None  # the last step's

        def on_step_begin(self, args, state, control, **kwargs):
            if loss is not None:
                loss.step = state.global_step + 1

        def _tokens_line(self) -> str:
            if not self.tokens:
                return ""
            d = self.tokens["documents"]
            return f"; document tokens/step {d['real']:,} real, {d['processed']:,} processed, {d['padded']:,} padded"

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = (time.time(), state.global_step)  # a resumed run starts at its checkpoint
            if rank == 0:
                self.step, self.max_steps = state.global_step, state.max_steps
                remaining = max(state.max_steps - state.global_step, 0) * global_batch
                self.progress = Progress(what, total=remaining, unit="samples", interval=interval, log=self._log)

        def _log(self, line: str) -> None:
            logger.info("%s; step %d/%d%s", line, self.step, self.max_steps, self._tokens_line())

        def on_step_end(self, args, state, control, **kwargs):
            if loss is not None:
                self.tokens = loss.tokens.end_step()
            if self.progress is not None:
                self.step = state.global_step
                self.progress.update(global_batch)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.close()
                self.progress = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if rank != 0 or not logs or "loss" not in logs:
                return
            now, step = time.time(), state.global_step
            rate = (step - self.last[1]) * global_batch / max(now - self.last[0], 1e-9)
            self.last = (now, step)
            row = {
                "step": step,
                "samples": step * global_batch,
                "epoch": logs.get("epoch"),
                "loss": logs.get("loss"),
                "lr": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "samples_per_s": rate,
                "time": now,
            }
            if self.tokens is not None:
                row["tokens"] = self.tokens
            with naming_write_errors(path), open(path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
                handle.flush()
                os.fsync(handle.fileno())  # the resume reads it after a kill or a lost node

    return MetricsLogger()


def train_stage(
    *,
    stage: str,
    init_model: str | Path,
    shards: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    meta_path: str | Path,
    settings: TrainSettings,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Train one curriculum stage from ``init_model`` on ``shards``; resume if checkpoints exist.

    The trainer is :func:`workflow_scripts.train.trainer.make_trainer`'s (the one the preflight
    measures). The in-batch false negatives of every contrastive batch are counted
    (:class:`~workflow_scripts.train.negatives.FalseNegativeCounter`) and summarised in the meta.
    The command line (``train fit``) takes the settings as flags (:data:`fit`).

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`~workflow_scripts.cli`):
    one flag per parameter; the body calls short helpers.

    Parameters
    ----------
    stage
        ``stage1`` or ``stage2``: names the progress lines and the meta.
    init_model
        The model the stage starts from (a model directory or a download manifest).
    shards
        The stage's ``part-*.parquet`` shards.
    out_dir, metrics_path, meta_path
        Outputs: the trained model, the per-step metrics (JSONL), the run's meta (JSON).
    checkpoint_dir
        Where checkpoints live, under the run's identity (:func:`run_identity`).
    settings
        The training settings.
    trust_remote_code
        Let the model's own code run when it loads.
    """
    world = world_info()
    per_device_batch_size(settings.global_batch_size, world["world_size"], settings.gradient_accumulation_steps)
    device = _claim_device(world)
    files = shard_files(shards)
    identity = run_identity(
        stage=stage,
        init_model=init_model,
        shards=shards,
        settings=settings,
        trust_remote_code=trust_remote_code,
        world_size=world["world_size"],
    )
    run_dir = Path(checkpoint_dir) / run_fingerprint(identity, [model_dir(init_model), shards])
    run_dir.mkdir(parents=True, exist_ok=True)
    training, dataset = stage_training(
        stage=stage,
        init_model=init_model,
        files=files,
        run_dir=run_dir,
        settings=settings,
        trust_remote_code=trust_remote_code,
        device=device,
        world_size=world["world_size"],
    )
    wall, resume, log_path = _fit(training=training, run_dir=run_dir, stage=stage, settings=settings, world=world)
    ranks = _gather_world(world)
    if world["rank"] != 0:
        return {}
    curve = _write_model_and_curve(
        model=training.trainer.model, out_dir=out_dir, log_path=log_path, metrics_path=metrics_path
    )
    meta = stage_meta(
        stage=stage,
        init_model=init_model,
        settings=settings,
        training=training,
        rows=len(dataset),
        world=world,
        ranks=ranks,
        device=device,
        resume=resume,
        run_dir=run_dir,
        wall=wall,
        curve=curve,
    )
    write_json(meta_path, meta)
    shutil.rmtree(run_dir, ignore_errors=True)  # done: the final model is the output
    return meta


def _claim_device(world: dict[str, Any]) -> str:
    """This rank's device, made current before anything touches CUDA (no rank opens a context on GPU 0)."""
    import torch

    device = training_device(local_rank=world["local_rank"])
    if device != "cpu":
        torch.cuda.set_device(device)
    logger.info(
        "rank %d: device %s, torch %s, CUDA build %s, CUDA_VISIBLE_DEVICES=%s",
        world["rank"],
        device,
        torch.__version__,
        torch.version.cuda,
        os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
    )
    return device


fit = spread_records(train_stage)  # the command line's `train fit`: one flag per TrainSettings field


def run_identity(
    *,
    stage: str,
    init_model: str | Path,
    shards: str | Path,
    settings: TrainSettings,
    trust_remote_code: bool,
    world_size: int,
) -> dict[str, Any]:
    """What defines a run (hashed by :func:`run_fingerprint`): the stage's inputs, settings and world.

    Outputs and the checkpoint directory are not part of it: the same run written elsewhere
    resumes from the same checkpoints.

    Parameters
    ----------
    stage
        ``stage1`` or ``stage2``.
    init_model
        The model the stage starts from (a model directory or a download manifest), as given.
    shards
        The stage's shard folder, as given.
    settings
        The training settings: each field becomes a key.
    trust_remote_code
        Whether the model's own code may run when it loads.
    world_size
        Number of training processes.

    Returns
    -------
    One flat dict: the inputs above, the settings' fields and ``world_size``.

    Examples
    --------
    >>> from workflow_scripts.train.trainer import TrainSettings
    >>> s = TrainSettings(learning_rate=1e-5, global_batch_size=64, gradient_accumulation_steps=1,
    ...                   mini_batch_size=8, query_length=32, document_length=64, temperature=1.0,
    ...                   gather_across_devices=True, max_grad_norm=1.0, warmup_ratio=0.0, epochs=1.0,
    ...                   bf16="auto", save_steps=10, save_total_limit=1, logging_steps=1,
    ...                   dataloader_num_workers=0, seed=0)
    >>> identity = run_identity(stage="stage1", init_model="m", shards="s", settings=s, trust_remote_code=False,
    ...                         world_size=8)
    >>> identity["learning_rate"], identity["world_size"], "out_dir" in identity
    (1e-05, 8, False)
    """
    inputs = {"stage": stage, "init_model": init_model, "shards": shards, "trust_remote_code": trust_remote_code}
    return inputs | settings.as_dict() | {"world_size": world_size}


def stage_training(
    *,
    stage: str,
    init_model: str | Path,
    files: list[str],
    run_dir: Path,
    settings: TrainSettings,
    trust_remote_code: bool,
    device: str,
    world_size: int,
) -> tuple[Training, Any]:
    """The stage's model, rows and trainer (:func:`workflow_scripts.train.trainer.make_trainer`), not yet run.

    Parameters
    ----------
    stage
        ``stage1`` or ``stage2``: names the trainer's messages (``train <stage>``).
    init_model
        The model the stage starts from (a model directory or a download manifest).
    files
        The stage's parquet shards (:func:`shard_files`).
    run_dir
        The run's checkpoint directory: the Trainer's output, and the datasets cache under it.
    settings
        The training settings.
    trust_remote_code
        Let the model's own code run when it loads.
    device
        ``cpu`` or ``cuda:<local rank>`` (:func:`training_device`).
    world_size
        Number of training processes.

    Returns
    -------
    The :class:`~workflow_scripts.train.trainer.Training` and the loaded rows (:func:`load_triples`).
    """
    model = load_colbert(
        init_model,
        query_length=settings.query_length,
        document_length=settings.document_length,
        trust_remote_code=trust_remote_code,
        device=device,
    )
    dataset = load_triples(files, run_dir / "datasets-cache")
    training = make_trainer(
        model=model,
        dataset=dataset,
        settings=settings,
        output_dir=run_dir,
        device=device,
        world_size=world_size,
        label=f"train {stage}",
    )
    return training, dataset


def _fit(
    *, training: Training, run_dir: Path, stage: str, settings: TrainSettings, world: dict[str, Any]
) -> tuple[float, str | None, Path]:
    """Run the trainer from the last complete checkpoint: (wall seconds, that checkpoint, the curve's path).

    The authoritative curve lives beside the checkpoints: Snakemake deletes a failed job's
    ``metrics_path``, the checkpoint directory survives. It is copied to ``metrics_path`` at the end.
    """
    resume = last_checkpoint(run_dir, cleanup=world["rank"] == 0)
    log_path = run_dir / "metrics.jsonl"
    if world["rank"] == 0:
        _truncate_metrics(log_path, resume)
    training.trainer.add_callback(
        metrics_callback(log_path, settings.global_batch_size, world["rank"], what=f"train {stage}", loss=training.loss)
    )
    logger.info(
        "stage %s: world %s, per-device batch %d, resume from %s", stage, world, training.per_device_batch_size, resume
    )
    started = time.time()
    with naming_write_errors(run_dir):  # a full disk at a checkpoint: torch names no file
        training.trainer.train(resume_from_checkpoint=resume)
    return time.time() - started, resume, log_path


def _write_model_and_curve(*, model: Any, out_dir: str | Path, log_path: Path, metrics_path: str | Path) -> str:
    """Save the trained model and copy the whole run's curve to ``metrics_path``; the curve's text."""
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp))
    curve = log_path.read_text() if log_path.exists() else ""
    with atomic_file(metrics_path) as handle:
        handle.write(curve)
    return curve


def stage_meta(
    *,
    stage: str,
    init_model: str | Path,
    settings: TrainSettings,
    training: Training,
    rows: int,
    world: dict[str, Any],
    ranks: list[dict[str, Any]],
    device: str,
    resume: str | None,
    run_dir: Path,
    wall: float,
    curve: str,
) -> dict[str, Any]:
    """The stage's meta JSON: what ran, where, how long, and what the loss saw.

    Longer than ~50 lines because it is a dict literal of ~30 keys, one line each: the meta is read
    by the report and tests by these names, and one table of them is easier to check than parts.

    Parameters
    ----------
    stage
        ``stage1`` or ``stage2``.
    init_model
        The model the stage started from, as given.
    settings
        The training settings.
    training
        The trainer after its run (:func:`stage_training`): its steps, loss and counters are read.
    rows
        Training rows loaded.
    world
        This rank's layout (:func:`world_info`).
    ranks
        Every rank's layout, gathered.
    device
        This rank's device; ``cpu`` counts no GPU.
    resume
        The checkpoint the run resumed from; None: a fresh start.
    run_dir
        The run's checkpoint directory.
    wall
        Wall seconds of this process's training.
    curve
        The whole run's metrics JSONL (:func:`loss_summary`).
    """
    steps, loss, batch = training.trainer.state.global_step, training.loss, settings.global_batch_size
    devices = world["world_size"] if device != "cpu" else 0
    return {
        "stage": stage,
        "init_model": str(init_model),
        "steps": steps,
        "samples": steps * batch,
        "train_rows": rows,
        "global_batch_size": batch,
        "per_device_batch_size": training.per_device_batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "world_size": world["world_size"],
        "ranks": ranks,
        # documents each query was scored against: global batch x (positive + negative)
        # when gathering works, local batch x 2 when it does not
        "candidates_per_query": training.candidates.max_candidates,
        # the same query (and positive) twice in one batch: one copy's positive is the other's negative
        "in_batch_false_negatives": training.false_negatives.summary(settings.batch_sampler),
        "resumed_from": resume,
        "checkpoint_dir": str(run_dir),
        "wall_clock_s": wall,
        "device": device.split(":")[0],
        "maxsim_backend": loss.maxsim_backend,
        "score_mini_batch_size": loss.score_mini_batch_size,
        # rank 0's encoder tokens over this process's part of the run (a resumed run: its part);
        # per step = total / steps. `padded` is what padding to the batch's longest would process
        "tokens": {"steps": loss.tokens.steps, "total": loss.tokens.total, "per_step": _per_step(loss.tokens)},
        "device_count": devices,
        "gpu_hours": devices * wall / 3600,
        "bf16": training.trainer.args.bf16,
        # over the whole run's curve: a resumed Trainer's training_loss covers only its part
        **loss_summary(curve),
        "learning_rate": settings.learning_rate,
        "epochs": settings.epochs,
        "steps_per_epoch": rows // batch,  # last partial batch dropped
    }


def _per_step(tokens: Any) -> dict[str, dict[str, float]]:
    """Mean tokens per optimizer step, queries and documents apart, from a TokenCounter."""
    steps = max(tokens.steps, 1)
    return {group: {k: v / steps for k, v in counts.items()} for group, counts in tokens.total.items()}


def _truncate_metrics(path: Path, resume: str | None) -> None:
    """A fresh start owns the curve; a resume keeps the steps up to its checkpoint, then appends."""
    if not path.exists():
        return
    if resume is None:
        path.unlink()
        return
    step = int(resume.rsplit("-", 1)[1])
    kept = [line for line in path.read_text().splitlines() if (row := _metric_row(line)) and row["step"] <= step]
    with atomic_file(path) as handle:
        handle.write("".join(line + "\n" for line in kept))


def _metric_row(line: str) -> dict[str, Any] | None:
    """One parsed metrics line; None for a blank line or one torn by a kill mid-write."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    return row if isinstance(row, dict) and "step" in row else None


def loss_summary(curve: str) -> dict[str, Any]:
    """Loss figures of a whole run from its metrics JSONL (every logged step, resumed or not).

    ``mean_loss`` is the mean of the logged losses (each the mean over its logging interval),
    ``last_loss`` the last one logged; ``logged_steps`` counts them.

    Parameters
    ----------
    curve
        The metrics JSONL text; blank and torn lines are skipped.

    Examples
    --------
    >>> loss_summary('{"step": 1, "loss": 3.0}\\n{"step": 2, "loss": 1.0}\\n{"step": 3, "lo')
    {'mean_loss': 2.0, 'last_loss': 1.0, 'logged_steps': 2}
    >>> loss_summary("")
    {'mean_loss': None, 'last_loss': None, 'logged_steps': 0}
    """
    rows = [row for line in curve.splitlines() if (row := _metric_row(line))]
    losses = [row["loss"] for row in rows if row.get("loss") is not None]
    return {
        "mean_loss": sum(losses) / len(losses) if losses else None,
        "last_loss": losses[-1] if losses else None,
        "logged_steps": len(losses),
    }


def _gather_world(world: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's (rank, hostname, Slurm node), collected on all ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [world]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, world)
    return gathered


def main(argv: list[str] | None = None) -> None:
    run_commands({"fit": fit}, argv)


if __name__ == "__main__":
    main()
