"""The training step, built once: settings record, loss, arguments and trainer.

:class:`TrainSettings` is the one list of the training keys (``config.yaml`` ``train`` section,
the stage's learning rate and the seed); :func:`make_trainer` turns a loaded model, a dataset
and those settings into the trainer. The training stage (:func:`workflow_scripts.train.stage.train_stage`)
and the preflight's measured steps (:func:`workflow_scripts.preflight.measure_train.measure_training`) both
call it, so the preflight measures the step that training runs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from .negatives import FalseNegativeCounter

__all__ = [
    "BATCH_SAMPLERS",
    "MAXSIM_BACKENDS",
    "TRAIN_KEYS",
    "CandidateCounter",
    "TrainSettings",
    "Training",
    "build_loss",
    "make_trainer",
    "per_device_batch_size",
    "training_arguments",
]

# sentence-transformers BatchSamplers values: "batch_sampler" draws rows at random (its default);
# "no_duplicates" defers a row any of whose texts (query, positive or negative) is already a text
# of the per-device batch, in any column (NoDuplicatesBatchSampler: exact string equality).
BATCH_SAMPLERS = ("batch_sampler", "no_duplicates")
# MaxSim in the loss (workflow_scripts/train/loss_scores.py): auto = a fused kernel where one is
# installed and exact for these masks, else chunked (exact, memory-bounded); torch = PyLate's
# einsum, which holds the whole (queries, documents, query tokens, document tokens) tensor.
MAXSIM_BACKENDS = ("auto", "chunked", "torch", "lik", "flash")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that defines a training step and run, as ``config.yaml`` states it.

    The fields are the ``train`` section's keys but the cluster shape (``nodes``,
    ``gpus_per_node``: Slurm resources), plus the stage's own ``learning_rate`` and the
    experiment's ``seed``. The rules print them as flags (``rules/common.smk``
    ``get_train_settings``); the stage and the preflight take them as this record
    (:func:`workflow_scripts.cli.spread_records` turns the flags back into it).

    Attributes
    ----------
    learning_rate
        Peak learning rate of the stage (``train.<stage>.learning_rate``).
    global_batch_size
        Rows per optimizer step, all ranks and accumulation steps together.
    gradient_accumulation_steps
        Micro-steps per optimizer step; each micro-batch is its own contrastive batch.
    mini_batch_size
        GradCache chunk: rows embedded at once (bounds activation memory).
    query_length, document_length
        Token lengths the model is loaded with (truncation and query expansion).
    temperature
        Softmax temperature of the contrastive loss.
    gather_across_devices
        Score each query against every rank's documents.
    max_grad_norm, warmup_ratio, epochs
        Optimizer: gradient clipping, linear warm-up share, passes over the rows.
    bf16
        ``"auto"`` (where the GPU supports it), ``True`` or ``False``.
    save_steps, save_total_limit, logging_steps
        Checkpoint every ``save_steps`` (keeping ``save_total_limit``); a metrics row every
        ``logging_steps``.
    dataloader_num_workers
        Worker processes of the data loader.
    seed
        Seed of the model's initialisation draws and the data order.
    max_steps
        Cap on optimizer steps; ``None``: whole epochs.
    batch_sampler
        One of :data:`BATCH_SAMPLERS`.
    maxsim_backend
        One of :data:`MAXSIM_BACKENDS` (:func:`build_loss`).
    score_mini_batch_size
        Queries scored at once against all candidates; ``None``: ``mini_batch_size``.

    Examples
    --------
    >>> s = TrainSettings(learning_rate=1e-5, global_batch_size=64, gradient_accumulation_steps=1,
    ...                   mini_batch_size=8, query_length=32, document_length=64, temperature=1.0,
    ...                   gather_across_devices=True, max_grad_norm=1.0, warmup_ratio=0.0, epochs=1.0,
    ...                   bf16="auto", save_steps=10, save_total_limit=1, logging_steps=1,
    ...                   dataloader_num_workers=0, seed=0)
    >>> s.maxsim_backend, dataclasses.replace(s, max_steps=2).max_steps
    ('auto', 2)
    >>> dataclasses.replace(s, batch_sampler="random")
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: train.batch_sampler: 'random' is not one of ['batch_sampler', 'no_duplicates']
    """

    learning_rate: float
    global_batch_size: int
    gradient_accumulation_steps: int
    mini_batch_size: int
    query_length: int
    document_length: int
    temperature: float
    gather_across_devices: bool
    max_grad_norm: float
    warmup_ratio: float
    epochs: float
    bf16: bool | str
    save_steps: int
    save_total_limit: int
    logging_steps: int
    dataloader_num_workers: int
    seed: int
    max_steps: int | None = None
    batch_sampler: str = "batch_sampler"
    maxsim_backend: str = "auto"
    score_mini_batch_size: int | None = None

    def __post_init__(self) -> None:
        for key, allowed in (("batch_sampler", BATCH_SAMPLERS), ("maxsim_backend", MAXSIM_BACKENDS)):
            if getattr(self, key) not in allowed:
                raise UserError(f"train.{key}: {getattr(self, key)!r} is not one of {list(allowed)}")

    def as_dict(self) -> dict[str, Any]:
        """The settings by name (what the rules print as flags and a run's identity hashes)."""
        return dataclasses.asdict(self)


TRAIN_KEYS = tuple(field.name for field in dataclasses.fields(TrainSettings))  # what the rules pass as flags


def per_device_batch_size(global_batch_size: int, world_size: int, accumulation: int) -> int:
    """The per-device batch that makes ``per_device * world * accumulation == global``.

    Parameters
    ----------
    global_batch_size
        Rows per optimizer step, all ranks and accumulation steps together (``train.global_batch_size``).
    world_size
        Number of training processes.
    accumulation
        Gradient accumulation steps (``train.gradient_accumulation_steps``).

    Examples
    --------
    >>> per_device_batch_size(2048, 8, 1)
    256
    >>> per_device_batch_size(2048, 3, 1)
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: train.global_batch_size=2048 is not divisible by world size 3 x gradient_accumulation_steps 1
    """
    denominator = world_size * accumulation
    if global_batch_size % denominator:
        raise UserError(
            f"train.global_batch_size={global_batch_size} is not divisible by world size "
            f"{world_size} x gradient_accumulation_steps {accumulation}"
        )
    return global_batch_size // denominator


def build_loss(
    model: Any,
    *,
    mini_batch_size: int,
    score_mini_batch_size: int | None,
    gather_across_devices: bool,
    temperature: float,
    maxsim_backend: str,
    world_size: int,
) -> Any:
    """The loss a stage trains with, and the preflight measures: GradCache that computes nothing
    on padding (:class:`workflow_scripts.train.gradcache.TrimmedCachedContrastive`: same rows, same
    contrastive batches, same loss as PyLate's ``CachedContrastive``) whose score is exact MaxSim
    through the selected backend (:func:`workflow_scripts.train.loss_scores.score_metric_for`).

    The returned loss carries ``maxsim_backend`` (the backend actually used),
    ``candidate_counter`` (:class:`CandidateCounter`: documents each query was scored against)
    and ``tokens`` (real, processed and padded tokens, queries and documents apart).

    Parameters
    ----------
    model
        The PyLate ColBERT being trained (its device decides which kernels exist; a non-empty
        skiplist punches holes in the document masks, which rules out prefix-length kernels).
    mini_batch_size
        GradCache chunk: rows embedded at once (bounds activation memory).
    score_mini_batch_size
        Queries scored at once against all candidates (bounds the loss's working set);
        ``None``: ``mini_batch_size``.
    gather_across_devices
        Score each query against every rank's documents (only when ``world_size > 1``).
    temperature
        Softmax temperature of the contrastive loss.
    maxsim_backend
        One of :data:`MAXSIM_BACKENDS`.
    world_size
        Number of training processes.
    """
    from .gradcache import TrimmedCachedContrastive
    from .loss_scores import score_metric_for

    if maxsim_backend not in MAXSIM_BACKENDS:
        raise UserError(f"train.maxsim_backend: {maxsim_backend!r} is not one of {list(MAXSIM_BACKENDS)}")
    metric, used = score_metric_for(
        maxsim_backend, device=str(model.device), masks_have_holes=bool(getattr(model, "skiplist", None))
    )
    counter = CandidateCounter(metric)
    loss = TrimmedCachedContrastive(
        model=model,
        score_metric=counter,
        mini_batch_size=mini_batch_size,
        score_mini_batch_size=score_mini_batch_size,
        gather_across_devices=gather_across_devices and world_size > 1,
        temperature=temperature,
    )
    loss.candidate_counter = counter
    loss.maxsim_backend = used
    return loss


class CandidateCounter:
    """Wraps the loss's score function and records how many documents a query is scored
    against: the evidence that ``gather_across_devices`` gathers (global batch x columns)."""

    def __init__(self, score_metric: Any) -> None:
        self.score_metric = score_metric
        self.max_candidates = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        scores = self.score_metric(*args, **kwargs)  # (queries in chunk, candidate documents)
        self.max_candidates = max(self.max_candidates, int(scores.shape[-1]))
        return scores


def training_arguments(
    *,
    settings: TrainSettings,
    output_dir: Path,
    device: str,
    world_size: int,
    per_device: int,
    save_checkpoints: bool,
) -> Any:
    """The ``SentenceTransformerTrainingArguments`` of a step built from ``settings``.

    ``save_checkpoints=False`` (the preflight) saves nothing; everything else is the settings'.

    Parameters
    ----------
    settings
        The training settings (epochs, steps, learning rate, precision, saving, logging, seed, sampler).
    output_dir
        Where the Trainer writes checkpoints.
    device
        ``cpu`` or ``cuda:<local rank>``; ``cpu`` runs on the CPU (gloo DDP with several processes).
    world_size
        Number of training processes.
    per_device
        Rows per device and micro-step (:func:`per_device_batch_size`).
    save_checkpoints
        Save every ``settings.save_steps`` (the stage) or never (the preflight).
    """
    from sentence_transformers import SentenceTransformerTrainingArguments

    s = settings
    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=s.epochs,
        max_steps=s.max_steps or -1,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        learning_rate=s.learning_rate,
        warmup_ratio=s.warmup_ratio,
        max_grad_norm=s.max_grad_norm,
        bf16=_use_bf16(s.bf16),
        save_strategy="steps" if save_checkpoints else "no",
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        logging_steps=s.logging_steps,
        seed=s.seed,
        data_seed=s.seed,
        report_to="none",
        dataloader_num_workers=s.dataloader_num_workers,
        disable_tqdm=True,
        # a short last batch would give its queries few in-batch negatives and a noisy step
        dataloader_drop_last=True,
        batch_sampler=s.batch_sampler,
        use_cpu=device == "cpu",
        ddp_backend="gloo" if world_size > 1 and device == "cpu" else None,
        # ColBERT is not a PreTrainedModel, so transformers would default to True: a graph walk
        # on each of GradCache's forwards; every parameter is used in every step
        ddp_find_unused_parameters=False,
    )


@dataclass
class Training:
    """What :func:`make_trainer` built: the trainer and the parts read after its steps.

    Attributes
    ----------
    trainer
        The SentenceTransformerTrainer (add callbacks with ``trainer.add_callback``).
    loss
        The :func:`build_loss` loss, its forward wrapped by ``false_negatives``.
    candidates
        Documents each query was scored against (:class:`CandidateCounter`).
    false_negatives
        In-batch false negatives of every contrastive batch (:class:`~workflow_scripts.train.negatives.FalseNegativeCounter`).
    per_device_batch_size
        Rows per device and micro-step.
    """

    trainer: Any
    loss: Any
    candidates: CandidateCounter
    false_negatives: FalseNegativeCounter
    per_device_batch_size: int


def make_trainer(
    *,
    model: Any,
    dataset: Any,
    settings: TrainSettings,
    output_dir: Path,
    device: str,
    world_size: int,
    label: str = "train",
    per_device: int | None = None,
    save_checkpoints: bool = True,
) -> Training:
    """The trainer of one stage: loss (:func:`build_loss`), false-negative counting, arguments, collator.

    The training stage and the preflight call this with the same ``settings``; the preflight
    only caps the steps (``settings.max_steps``), may shrink ``per_device`` to measure what
    fits, and saves no checkpoint.

    Parameters
    ----------
    model
        The loaded PyLate ColBERT (on ``device``).
    dataset
        Rows of (query, positive, negative), in the collator's column order.
    settings
        The training settings.
    output_dir
        Where the Trainer writes checkpoints.
    device
        ``cpu`` or ``cuda:<local rank>`` (:func:`workflow_scripts.train.world.training_device`).
    world_size
        Number of training processes.
    label
        What a non-finite score names (``"train stage2"``).
    per_device
        Rows per device and micro-step; ``None``: ``global / (world x accumulation)``.
    save_checkpoints
        Save every ``settings.save_steps`` (the stage) or never (the preflight).
    """
    from pylate import utils

    s = settings
    per_device = per_device or per_device_batch_size(s.global_batch_size, world_size, s.gradient_accumulation_steps)
    loss = build_loss(
        model,
        mini_batch_size=s.mini_batch_size,
        score_mini_batch_size=s.score_mini_batch_size,
        gather_across_devices=s.gather_across_devices,
        temperature=s.temperature,
        maxsim_backend=s.maxsim_backend,
        world_size=world_size,
    )
    loss.label = label
    loss.forward = counter = FalseNegativeCounter(loss.forward, gather=loss.gather_across_devices)
    args = training_arguments(
        settings=s,
        output_dir=output_dir,
        device=device,
        world_size=world_size,
        per_device=per_device,
        save_checkpoints=save_checkpoints,
    )
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=dataset, loss=loss, data_collator=utils.ColBERTCollator(model.tokenize)
    )
    return Training(
        trainer=trainer,
        loss=loss,
        candidates=loss.candidate_counter,
        false_negatives=counter,
        per_device_batch_size=per_device,
    )


def _use_bf16(setting: str | bool) -> bool:
    """``bf16: auto`` is bf16 where the GPU supports it."""
    import torch

    if setting == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(setting)


@cache
def _trainer_class():
    """SentenceTransformerTrainer that can resume CPU DDP runs (gloo, the Slurm test).

    transformers maps the optimizer state to ``args.device`` when world size > 1; on CPU that
    is ``cpu:0``, which ``torch.load`` refuses. Load to plain ``cpu`` there instead.
    """
    import torch
    from sentence_transformers import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):
        def _load_optimizer_and_scheduler(self, checkpoint):
            optimizer = os.path.join(checkpoint or "", "optimizer.pt")
            if checkpoint is None or self.args.device.type != "cpu" or not os.path.isfile(optimizer):
                return super()._load_optimizer_and_scheduler(checkpoint)
            self.optimizer.load_state_dict(torch.load(optimizer, map_location="cpu", weights_only=True))
            scheduler = torch.load(os.path.join(checkpoint, "scheduler.pt"), map_location="cpu", weights_only=True)
            self.lr_scheduler.load_state_dict(scheduler)

    return Trainer
