"""Training stage (both curriculum stages): PyLate ColBERT + CachedContrastive, resumable.

One process per device. Under Slurm the rule starts one task per GPU with ``srun``
(``workflow_scripts/launch.sh`` maps ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NTASKS`` to
``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` and points ``MASTER_ADDR`` at the first node);
outside Slurm it is a single local process. The Hugging Face Trainer reads those variables
and sets up DDP; ``CachedContrastive(gather_across_devices=True)`` then gathers every rank's
documents, so each query sees the whole global batch as negatives.

Checkpoints go to a directory Snakemake does not own (``checkpoints/<stage>``): Snakemake
deletes a failed job's outputs, but a rerun must find the last checkpoint and resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .common import UserError, atomic_dir, run_cli, write_json
from .model import load_colbert

__all__ = ["per_device_batch_size", "shard_files", "train_stage", "world_info"]

logger = logging.getLogger(__name__)

COLUMNS = ["query", "positive", "negative"]  # collator order: anchor, positive, negative


def world_info() -> dict[str, Any]:
    """Rank layout of this process (torchrun/accelerate or srun via launch.sh, else single)."""
    return {
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
        "hostname": socket.gethostname(),
        "slurm_node": os.environ.get("SLURMD_NODENAME"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def per_device_batch_size(global_batch_size: int, world_size: int, accumulation: int) -> int:
    """The per-device batch that makes ``per_device * world * accumulation == global``.

    Examples
    --------
    >>> per_device_batch_size(2048, 8, 1)
    256
    >>> per_device_batch_size(2048, 3, 1)
    Traceback (most recent call last):
    ...
    workflow_scripts.common.UserError: train.global_batch_size=2048 is not divisible by world size 3 x gradient_accumulation_steps 1
    """
    denominator = world_size * accumulation
    if global_batch_size % denominator:
        raise UserError(
            f"train.global_batch_size={global_batch_size} is not divisible by world size "
            f"{world_size} x gradient_accumulation_steps {accumulation}"
        )
    return global_batch_size // denominator


def shard_files(shards: str | Path) -> list[str]:
    """The parquet shards of a stage, checked for the columns training needs."""
    files = sorted(str(p) for p in Path(shards).glob("part-*.parquet"))
    if not files:
        raise UserError(f"{shards}: no part-*.parquet shards")
    for path in files:
        names = pq.read_schema(path).names
        missing = [c for c in COLUMNS if c not in names]
        if missing:
            raise UserError(f"{path}: parquet shard is missing column(s) {missing}")
    return files


def load_triples(files: list[str], cache_dir: Path):
    """Memory-mapped Arrow dataset of (query, positive, negative): streamed in, never in RAM."""
    from datasets import load_dataset

    dataset = load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache_dir))
    return dataset.select_columns(COLUMNS)


def _use_bf16(setting: str | bool) -> bool:
    import torch

    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


class MetricsLogger:
    """Trainer callback: one JSON line per logging step (loss, lr, grad-norm, samples/s)."""

    def __new__(cls, path: Path, global_batch: int, rank: int):
        from transformers import TrainerCallback

        class _Callback(TrainerCallback):
            def __init__(self) -> None:
                self.last = (time.time(), 0)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if rank != 0 or not logs or "loss" not in logs:
                    return
                now, step = time.time(), state.global_step
                rate = (step - self.last[1]) * global_batch / max(now - self.last[0], 1e-9)
                self.last = (now, step)
                row = {"step": step, "samples": step * global_batch, "epoch": logs.get("epoch"),
                       "loss": logs.get("loss"), "lr": logs.get("learning_rate"),
                       "grad_norm": logs.get("grad_norm"), "samples_per_s": rate, "time": now}  # fmt: skip
                with open(path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")

        return _Callback()


def train_stage(
    *,
    stage: str,
    init_model: str | Path,
    shards: str | Path,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    metrics_path: str | Path,
    meta_path: str | Path,
    learning_rate: float,
    global_batch_size: int,
    gradient_accumulation_steps: int,
    mini_batch_size: int,
    query_length: int,
    document_length: int,
    temperature: float,
    gather_across_devices: bool,
    max_grad_norm: float,
    warmup_ratio: float,
    epochs: float,
    bf16: str | bool,
    save_steps: int,
    save_total_limit: int,
    logging_steps: int,
    dataloader_num_workers: int,
    seed: int,
    max_steps: int | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Train one curriculum stage from ``init_model`` on ``shards``; resume if checkpoints exist."""
    import torch
    from pylate import losses, utils
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    world = world_info()
    per_device = per_device_batch_size(global_batch_size, world["world_size"], gradient_accumulation_steps)
    files = shard_files(shards)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model = load_colbert(init_model, query_length=query_length, document_length=document_length,
                         trust_remote_code=trust_remote_code,
                         device="cuda" if torch.cuda.is_available() else "cpu")  # fmt: skip
    dataset = load_triples(files, checkpoint_dir / "datasets-cache")
    loss = losses.CachedContrastive(model=model, mini_batch_size=mini_batch_size,
                                    gather_across_devices=gather_across_devices and world["world_size"] > 1,
                                    temperature=temperature)  # fmt: skip
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=epochs, max_steps=max_steps or -1,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
        bf16=_use_bf16(bf16), save_strategy="steps", save_steps=save_steps,
        save_total_limit=save_total_limit, logging_steps=logging_steps, seed=seed, data_seed=seed,
        report_to="none", dataloader_num_workers=dataloader_num_workers, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world["world_size"] > 1 and not torch.cuda.is_available() else None,
    )  # fmt: skip
    resume = get_last_checkpoint(str(checkpoint_dir))
    metrics_path = Path(metrics_path)
    if resume is None and metrics_path.exists():
        metrics_path.unlink()  # a fresh start owns the curve; a resume appends to it
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=loss,
        data_collator=utils.ColBERTCollator(model.tokenize),
        callbacks=[MetricsLogger(metrics_path, global_batch_size, world["rank"])],
    )  # fmt: skip
    logger.info("stage %s: world %s, per-device batch %d, resume from %s", stage, world, per_device, resume)
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - started
    ranks = _gather_world(world)
    if world["rank"] != 0:
        return {}
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp))
    devices = world["world_size"] if torch.cuda.is_available() else 0
    meta = {
        "stage": stage,
        "init_model": str(init_model),
        "steps": trainer.state.global_step,
        "samples": trainer.state.global_step * global_batch_size,
        "train_rows": len(dataset),
        "global_batch_size": global_batch_size,
        "per_device_batch_size": per_device,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "world_size": world["world_size"],
        "ranks": ranks,
        "resumed_from": resume,
        "wall_clock_s": wall,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "device_count": devices,
        "gpu_hours": devices * wall / 3600,
        "bf16": args.bf16,
        "final_loss": result.training_loss,
        "learning_rate": learning_rate,
        "epochs": epochs,
        "steps_per_epoch": math.ceil(len(dataset) / global_batch_size),
    }
    write_json(meta_path, meta)
    return meta


def _gather_world(world: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's (rank, hostname, Slurm node), collected on all ranks."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [world]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, world)
    return gathered


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--args", required=True, help="JSON keyword arguments of train_stage()")
    args = parser.parse_args(argv)
    train_stage(**json.loads(args.args))


if __name__ == "__main__":
    run_cli(main)
