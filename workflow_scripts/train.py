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
import socket
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from .cli import run_commands
from .common import UserError, atomic_dir, atomic_file, naming_write_errors, write_json
from .model import load_colbert, model_dir
from .progress import Progress

__all__ = [
    "BATCH_SAMPLERS",
    "MAXSIM_BACKENDS",
    "FalseNegativeCounter",
    "build_loss",
    "false_negatives",
    "loss_summary",
    "per_device_batch_size",
    "requested_gpus",
    "shard_files",
    "train_stage",
    "training_device",
    "world_info",
]

logger = logging.getLogger(__name__)

COLUMNS = ["query", "positive", "negative"]  # collator order: anchor, positive, negative
OUTPUT_ARGS = ("out_dir", "checkpoint_dir", "metrics_path", "meta_path")
PROGRESS_INTERVAL: float | None = None  # between two progress lines; None: $PROGRESS_INTERVAL_S or 30 s
# sentence-transformers BatchSamplers values: "batch_sampler" draws rows at random (its default);
# "no_duplicates" defers a row any of whose texts (query, positive or negative) is already a text
# of the per-device batch, in any column (NoDuplicatesBatchSampler: exact string equality).
BATCH_SAMPLERS = ("batch_sampler", "no_duplicates")
# MaxSim in the loss (workflow_scripts/loss_scores.py): auto = a fused kernel where one is
# installed and exact for these masks, else chunked (exact, memory-bounded); torch = PyLate's
# einsum, which holds the whole (queries, documents, query tokens, document tokens) tensor.
MAXSIM_BACKENDS = ("auto", "chunked", "torch", "lik", "flash")
# Values of CUDA_VISIBLE_DEVICES that name no device (Slurm writes NoDevFiles without GPU gres).
_NO_DEVICES = {"", "-1", "none", "nodevfiles"}


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


def requested_gpus(environ: Mapping[str, str]) -> int:
    """How many GPUs this process's job was given, from what Slurm and CUDA set.

    ``CUDA_VISIBLE_DEVICES`` (set by Slurm's GPU gres, or by the user) wins; a Slurm step's own
    ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS`` count where it is absent. Zero when nothing asks.

    Parameters
    ----------
    environ
        The process environment.

    Examples
    --------
    >>> requested_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"})
    4
    >>> requested_gpus({"CUDA_VISIBLE_DEVICES": "NoDevFiles", "SLURM_JOB_GPUS": "0"})
    0
    >>> requested_gpus({"SLURM_STEP_GPUS": "2"})
    1
    >>> requested_gpus({})
    0
    """
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        if name in environ:
            value = environ[name].strip()
            return 0 if value.lower() in _NO_DEVICES else len([v for v in value.split(",") if v.strip()])
    return 0


def training_device(*, local_rank: int, environ: Mapping[str, str] | None = None) -> str:
    """The device this rank trains on, refusing to fall back to the CPU behind the user's back.

    ``cuda:<local rank>`` where torch can use CUDA; ``cpu`` where it cannot and the job was given
    no GPU. A job that was given GPUs torch cannot use (a CPU build of torch, a CUDA build newer
    than the node's driver, too few visible devices for the node's ranks) is refused in one line:
    without this, the Trainer silently trains on CPU with gloo for days.

    Parameters
    ----------
    local_rank
        This process's rank on its node (``LOCAL_RANK``).
    environ
        The process environment (default: ``os.environ``).
    """
    import torch

    environ = os.environ if environ is None else environ
    asked = requested_gpus(environ)
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    where = f"CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}"
    build = f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none: a CPU build'})"
    if asked and not visible:
        raise UserError(
            f"train: this job was given {asked} GPU(s) ({where}) but {build} cannot use any "
            "(CPU build, or a CUDA build the node's driver does not support); refusing to train on CPU"
        )
    if not visible:
        return "cpu"
    if local_rank >= visible:
        raise UserError(
            f"train: local rank {local_rank} has no GPU of its own: {visible} visible ({where}); "
            "give each node as many GPUs as tasks (train.gpus_per_node)"
        )
    return f"cuda:{local_rank}"


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
    on padding (:class:`workflow_scripts.gradcache.TrimmedCachedContrastive`: same rows, same
    contrastive batches, same loss as PyLate's ``CachedContrastive``) whose score is exact MaxSim
    through the selected backend (:func:`workflow_scripts.loss_scores.score_metric_for`).

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


def run_fingerprint(args: dict[str, Any], paths: list[str | Path]) -> str:
    """Names this exact run: training arguments plus identity (name, size, mtime) of inputs.

    Checkpoints live under it, so a rerun with another lr, another init model or rebuilt
    shards starts fresh instead of resuming a run that was about something else.

    Examples
    --------
    >>> run_fingerprint({"lr": 1e-5}, []) == run_fingerprint({"lr": 1e-5}, [])
    True
    >>> run_fingerprint({"lr": 1e-5}, []) == run_fingerprint({"lr": 5e-6}, [])
    False
    >>> run_fingerprint({"epochs": 2}, []) == run_fingerprint({"epochs": 2.0}, [])  # CLI: float("2")
    True
    """
    args = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in args.items()}
    files = []
    for path in paths:
        path = Path(path)
        for f in sorted(path.rglob("*") if path.is_dir() else [path]):
            if f.is_file() and ".cache" not in f.parts:
                stat = f.stat()
                files.append((str(f.relative_to(path)) if path.is_dir() else f.name, stat.st_size, stat.st_mtime_ns))
    blob = json.dumps({"args": args, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def last_checkpoint(folder: Path, *, cleanup: bool) -> str | None:
    """The newest *complete* Trainer checkpoint (a kill can interrupt a save mid-way).

    A checkpoint is complete when its ``trainer_state.json`` (written last) parses and names
    its own step; incomplete ones are removed when ``cleanup`` (rank 0).
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


def false_negatives(queries: list[Any], positives: list[Any], negatives: list[Any]) -> dict[str, int]:
    """In-batch false negatives of one contrastive batch, from an identity (text or hash) per row.

    CachedContrastive scores each row's query against every positive and negative of the
    batch (gathered across devices) and labels only the row's own positive slot as right. Any
    other slot holding a document that is a positive of that query -- its own positive again,
    or the positive of another row with the same query (bge-reasoner rows expand to up to
    2 x 4 triples sharing it), in a positive or a negative column -- is a *false negative*.

    Parameters
    ----------
    queries, positives, negatives
        Row ``i``'s query, positive and negative identities (equal values = equal texts).

    Returns
    -------
    ``rows``; ``rows_with_false_negative`` (rows with at least one); ``false_negative_pairs``
    ((query row, candidate) pairs); ``duplicate_query_rows`` (rows whose query occurs twice or more).

    Examples
    --------
    >>> false_negatives(["q", "q", "r"], ["p", "p", "s"], ["n1", "n2", "p"])  # rows 0, 1: same query and positive
    {'rows': 3, 'rows_with_false_negative': 2, 'false_negative_pairs': 4, 'duplicate_query_rows': 2}
    >>> false_negatives(["q", "r"], ["p", "s"], ["n", "t"])
    {'rows': 2, 'rows_with_false_negative': 0, 'false_negative_pairs': 0, 'duplicate_query_rows': 0}
    """
    relevant: dict[Any, set[Any]] = {}
    for query, positive in zip(queries, positives):
        relevant.setdefault(query, set()).add(positive)
    slots = Counter([*positives, *negatives])  # candidate documents, by identity
    per_row = [sum(slots[p] for p in relevant[q]) - 1 for q in queries]  # -1: the row's own positive
    repeated = Counter(queries)
    return {
        "rows": len(queries),
        "rows_with_false_negative": sum(1 for n in per_row if n > 0),
        "false_negative_pairs": sum(per_row),
        "duplicate_query_rows": sum(1 for q in queries if repeated[q] > 1),
    }


def row_identities(features: dict[str, Any]) -> Any:
    """One int64 per row of a tokenized column: a hash of its unpadded token ids (what the model sees)."""
    import torch

    ids, mask = features["input_ids"].cpu(), features["attention_mask"].cpu().bool()
    digests = [hashlib.blake2b(row[keep].numpy().tobytes(), digest_size=8).digest() for row, keep in zip(ids, mask)]
    hashes = [int.from_bytes(d, "big", signed=True) for d in digests]
    return torch.tensor(hashes, dtype=torch.int64, device=features["input_ids"].device)


class FalseNegativeCounter:
    """Wraps the loss's forward and counts :func:`false_negatives` of every contrastive batch.

    Rows are identified by their token ids after truncation; with ``gather`` the batch is the
    global one (each rank's rows gathered, as CachedContrastive gathers the documents), so every
    rank takes part in one small all-gather of int64 hashes per loss call.
    """

    def __init__(self, forward: Any, gather: bool) -> None:
        self.forward, self.gather = forward, gather
        self.batches: list[dict[str, int]] = []

    def __call__(self, sentence_features: list[dict[str, Any]], labels: Any = None) -> Any:
        import torch
        from pylate.utils import all_gather

        columns = [row_identities(f) for f in sentence_features[:3]]  # query, positive, negative
        if self.gather:
            columns = [torch.cat(list(all_gather(c))) for c in columns]
        self.batches.append(false_negatives(*(c.tolist() for c in columns)))
        return self.forward(sentence_features, labels)

    def summary(self, batch_sampler: str) -> dict[str, Any]:
        """Per-batch rates over the batches this process saw (a resumed run: its part only)."""
        rates = [b["rows_with_false_negative"] / max(b["rows"], 1) for b in self.batches]
        pairs = [b["false_negative_pairs"] for b in self.batches]
        return {
            "batch_sampler": batch_sampler,
            "batches": len(self.batches),
            "rows_per_batch": self.batches[0]["rows"] if self.batches else 0,
            "rows_with_false_negative_rate_mean": sum(rates) / len(rates) if rates else None,
            "rows_with_false_negative_rate_max": max(rates, default=None),
            "false_negative_pairs_per_batch_mean": sum(pairs) / len(pairs) if pairs else None,
            "duplicate_query_rows_per_batch_mean": (
                sum(b["duplicate_query_rows"] for b in self.batches) / len(self.batches) if self.batches else None
            ),
            "definition": "a candidate document scored as a negative of a query although it is a positive of that "
            "query (same token ids) in another row of the same contrastive batch",
        }


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
        The :class:`~workflow_scripts.gradcache.TrimmedCachedContrastive` being trained: told
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
            row = {"step": step, "samples": step * global_batch, "epoch": logs.get("epoch"),
                   "loss": logs.get("loss"), "lr": logs.get("learning_rate"),
                   "grad_norm": logs.get("grad_norm"), "samples_per_s": rate, "time": now}  # fmt: skip
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
    bf16: bool | str,
    save_steps: int,
    save_total_limit: int,
    logging_steps: int,
    dataloader_num_workers: int,
    seed: int,
    max_steps: int | None = None,
    trust_remote_code: bool = False,
    batch_sampler: str = "batch_sampler",
    maxsim_backend: str = "auto",
    score_mini_batch_size: int | None = None,
) -> dict[str, Any]:
    """Train one curriculum stage from ``init_model`` on ``shards``; resume if checkpoints exist.

    ``batch_sampler`` is one of :data:`BATCH_SAMPLERS`, ``maxsim_backend`` one of
    :data:`MAXSIM_BACKENDS` (see :func:`build_loss`). The in-batch false negatives of every
    contrastive batch are counted (:class:`FalseNegativeCounter`) and summarised in the meta.
    """
    recipe = {k: v for k, v in locals().items() if k not in OUTPUT_ARGS}  # what defines the run
    import torch
    from pylate import utils
    from sentence_transformers import SentenceTransformerTrainingArguments

    if batch_sampler not in BATCH_SAMPLERS:
        raise UserError(f"train.batch_sampler: {batch_sampler!r} is not one of {list(BATCH_SAMPLERS)}")
    world = world_info()
    per_device = per_device_batch_size(global_batch_size, world["world_size"], gradient_accumulation_steps)
    device = training_device(local_rank=world["local_rank"])
    if device != "cpu":  # before anything touches CUDA: no rank opens a context on GPU 0
        torch.cuda.set_device(device)
    logger.info(
        "rank %d: device %s, torch %s, CUDA build %s, CUDA_VISIBLE_DEVICES=%s",
        world["rank"], device, torch.__version__, torch.version.cuda,
        os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"),
    )
    files = shard_files(shards)
    recipe["world_size"] = world["world_size"]
    checkpoint_dir = Path(checkpoint_dir) / run_fingerprint(recipe, [model_dir(init_model), shards])
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    model = load_colbert(
        init_model,
        query_length=query_length,
        document_length=document_length,
        trust_remote_code=trust_remote_code,
        device=device,
    )
    dataset = load_triples(files, checkpoint_dir / "datasets-cache")
    loss = build_loss(
        model,
        mini_batch_size=mini_batch_size,
        score_mini_batch_size=score_mini_batch_size,
        gather_across_devices=gather_across_devices,
        temperature=temperature,
        maxsim_backend=maxsim_backend,
        world_size=world["world_size"],
    )
    counter, loss.label = loss.candidate_counter, f"train {stage}"
    loss.forward = duplicates = FalseNegativeCounter(loss.forward, gather=loss.gather_across_devices)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir), num_train_epochs=epochs, max_steps=max_steps or -1,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=learning_rate, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
        bf16=_use_bf16(bf16), save_strategy="steps", save_steps=save_steps,
        save_total_limit=save_total_limit, logging_steps=logging_steps, seed=seed, data_seed=seed,
        report_to="none", dataloader_num_workers=dataloader_num_workers, disable_tqdm=True,
        # a short last batch would give its queries few in-batch negatives and a noisy step
        dataloader_drop_last=True, batch_sampler=batch_sampler,
        use_cpu=device == "cpu",
        ddp_backend="gloo" if world["world_size"] > 1 and device == "cpu" else None,
        # ColBERT is not a PreTrainedModel, so transformers would default to True: a graph walk
        # on each of GradCache's forwards; every parameter is used in every step
        ddp_find_unused_parameters=False,
    )  # fmt: skip
    resume = last_checkpoint(checkpoint_dir, cleanup=world["rank"] == 0)
    # The authoritative curve lives beside the checkpoints: Snakemake deletes a failed job's
    # metrics_path, the checkpoint directory survives. It is copied to metrics_path at the end.
    log_path = checkpoint_dir / "metrics.jsonl"
    if world["rank"] == 0:
        _truncate_metrics(log_path, resume)
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=dataset, loss=loss,
        data_collator=utils.ColBERTCollator(model.tokenize),
        callbacks=[metrics_callback(log_path, global_batch_size, world["rank"], what=f"train {stage}", loss=loss)],
    )  # fmt: skip
    logger.info("stage %s: world %s, per-device batch %d, resume from %s", stage, world, per_device, resume)
    started = time.time()
    with naming_write_errors(checkpoint_dir):  # a full disk at a checkpoint: torch names no file
        trainer.train(resume_from_checkpoint=resume)
    wall = time.time() - started
    ranks = _gather_world(world)
    if world["rank"] != 0:
        return {}
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp))
    curve = log_path.read_text() if log_path.exists() else ""
    with atomic_file(metrics_path) as handle:
        handle.write(curve)
    devices = world["world_size"] if device != "cpu" else 0
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
        # documents each query was scored against: global batch x (positive + negative)
        # when gathering works, local batch x 2 when it does not
        "candidates_per_query": counter.max_candidates,
        # the same query (and positive) twice in one batch: one copy's positive is the other's negative
        "in_batch_false_negatives": duplicates.summary(batch_sampler),
        "resumed_from": resume,
        "checkpoint_dir": str(checkpoint_dir),
        "wall_clock_s": wall,
        "device": device.split(":")[0],
        "maxsim_backend": loss.maxsim_backend,
        "score_mini_batch_size": loss.score_mini_batch_size,
        # rank 0's encoder tokens over this process's part of the run (a resumed run: its part);
        # per step = total / steps. `padded` is what padding to the batch's longest would process
        "tokens": {"steps": loss.tokens.steps, "total": loss.tokens.total, "per_step": _per_step(loss.tokens)},
        "device_count": devices,
        "gpu_hours": devices * wall / 3600,
        "bf16": args.bf16,
        # over the whole run's curve: a resumed Trainer's training_loss covers only its part
        **loss_summary(curve),
        "learning_rate": learning_rate,
        "epochs": epochs,
        "steps_per_epoch": len(dataset) // global_batch_size,  # last partial batch dropped
    }
    write_json(meta_path, meta)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: the final model is the output
    return meta


def _per_step(tokens: Any) -> dict[str, dict[str, float]]:
    """Mean tokens per optimizer step, queries and documents apart, from a TokenCounter."""
    steps = max(tokens.steps, 1)
    return {group: {k: v / steps for k, v in counts.items()} for group, counts in tokens.total.items()}


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
    run_commands({"fit": train_stage}, argv)


if __name__ == "__main__":
    main()
