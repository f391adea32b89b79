"""Preflight (issue #13): every heavy stage of the recipe at the real shapes, bounded, and a cost forecast.

Before the 64 GPU-hours, run each heavy stage for a bounded amount of work where it will run
(``snakemake --profile slurm preflight``; locally ``--cores N preflight``), measure it, and
project the whole run from the measurements:

- ``train``: a few optimizer steps of one curriculum stage (``preflight.train_steps``) in a job
  shaped like the training job (one process per GPU through ``launch.sh``), with the real
  global batch split over the real world size, or the per-device batch
  ``preflight.per_device_batch_size`` where the real one does not fit or is too slow (a CPU).
  Rows are padded to query 256 / document 2048 tokens by PyLate's collator, so a step's work
  does not depend on the texts. Also replays the configured batch sampler (no model) over the
  stage's shards at the real global batch and counts in-batch false negatives.
- ``evaluate``: per BRIGHT split, a seeded random sample of documents (and queries) encoded and
  scored with the evaluation's own functions; token lengths counted on a larger sample; and the
  split set's longest document encoded alone, to show that ``document_length`` is honoured
  (a 2048-token document gives up to 2048 vectors, not 511).
- ``forecast``: reads those measurements, the ``build_shards`` jobs' Snakemake benchmark files
  and statistics, and the widening verification; writes ``preflight.json``, ``preflight.md``
  and the report page: a one-screen verdict, then every projection.

Every projection is a **measured rate x a count**, given for the data at hand (the mirror, the
shards) and for the published sizes. When the measured shape differs from the forecast's (a
smaller per-device batch, another world size), the rate is a measured FLOP rate and the count
the analytic FLOPs of the real shape (:func:`train_step_flops`): the in-batch scoring grows with
local x global batch and is most of a step at 256 / 2048. Memory at a shape that was not run
is an estimate from the measured peak plus the terms that grow (:func:`memory_estimate`).
"""

from __future__ import annotations

import html
import logging
import math
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .cli import run_commands
from .common import UserError, atomic_file, read_json, write_json

__all__ = [
    "CARD",
    "PEAK_TFLOPS",
    "PUBLISHED_TRIPLES",
    "encoder_flops",
    "forecast",
    "measure_evaluation",
    "measure_training",
    "memory_estimate",
    "project_split",
    "project_training",
    "rate_times_count",
    "score_memory_bytes",
    "train_step_flops",
]

logger = logging.getLogger(__name__)

# Published sizes of the training data (reference datasets.md, the card): stage 1 is reasonir
# `vl`, ~181k triples; stage 2 is bge-reasoner (~720k triples at <= 2 x 4 per row) + reasonir
# `hq` (~2M triples), ~2.7M in all.
PUBLISHED_TRIPLES = {"stage1": 181_000, "stage2": 2_700_000}
# The card: "Expected total wall-clock on 2 x 4 x H100: 6-8 hours".
CARD = {"hours": (6.0, 8.0), "nodes": 2, "gpus_per_node": 4, "gpu": "H100"}
# Dense bf16 peak (TFLOPS, no sparsity) of GPUs whose name contains the key (longest key wins).
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
BASE_DOCUMENT_VECTORS = 511  # what the base model's own config gives: 512 - 1 ([D] is inserted)
SPECIAL_TOKENS = 3  # [CLS] [D] ... [SEP] around a document's own tokens
ROW_OVERHEAD_BYTES = 1024  # ASSUMED Python objects of one shuffled row (a dict of 7 strings)
SCORE_TOKENS = 1 << 16  # document tokens the MaxSim rate is measured on (the sample, repeated)
GIB = 1024**3


# --------------------------------------------------------------------------- arithmetic
def rate_times_count(*, seconds: float, done: float, count: float) -> float:
    """Seconds that ``count`` units take at the measured rate ``done / seconds``.

    Examples
    --------
    >>> rate_times_count(seconds=10.0, done=5, count=100)
    200.0
    """
    if done <= 0:
        raise UserError(f"preflight: nothing was measured ({done} units in {seconds:.1f} s)")
    return count * seconds / done


def encoder_flops(tokens: int, *, matmul_parameters: int, layers: int, hidden: int) -> float:
    """Forward FLOPs of one sequence: 2 per weight per token, plus attention's two GEMMs.

    Attention is counted at full length in every layer (``4 * layers * tokens**2 * hidden``):
    that is what PyTorch's SDPA computes for ModernBERT's 128-token local layers too (a mask,
    not a narrower kernel).

    Examples
    --------
    >>> encoder_flops(2048, matmul_parameters=13_000_000, layers=10, hidden=384) / 1e9
    117.67250944
    """
    return 2.0 * matmul_parameters * tokens + 4.0 * layers * tokens * tokens * hidden


def train_step_flops(
    *, per_device: int, candidates: int, query_length: int, document_length: int, arch: dict[str, int]
) -> dict[str, float]:
    """FLOPs of one optimizer step on one device, every row padded to the lengths (PyLate's collator).

    ``candidates`` are the documents each query is scored against: 2 x global batch when
    CachedContrastive gathers across devices, 2 x per-device batch otherwise. ``executed``
    counts GradCache's extra no-grad pass (4 x the encoder's forward: no-grad pass, forward,
    backward) and the score's forward and backward (3x); ``model`` is forward + backward of each
    (3x), what MFU counts.

    Examples
    --------
    >>> arch = {"matmul_parameters": 13_000_000, "layers": 10, "hidden": 384, "dim": 128}
    >>> small = train_step_flops(per_device=2, candidates=4, query_length=256, document_length=2048, arch=arch)
    >>> real = train_step_flops(per_device=256, candidates=4096, query_length=256, document_length=2048, arch=arch)
    >>> round(small["score_forward"] / small["encoder_forward"], 4), round(real["score_forward"] / real["encoder_forward"], 2)
    (0.0022, 2.26)
    """
    shape = {k: arch[k] for k in ("matmul_parameters", "layers", "hidden")}
    encoder = per_device * (encoder_flops(query_length, **shape) + 2 * encoder_flops(document_length, **shape))
    score = 2.0 * per_device * candidates * query_length * document_length * arch["dim"]
    return {"encoder_forward": encoder, "score_forward": score, "executed": 4 * encoder + 3 * score,
            "model": 3 * encoder + 3 * score}  # fmt: skip


def score_memory_bytes(*, chunk: int, candidates: int, query_length: int, document_length: int, bytes_per_value: int) -> int:  # fmt: skip
    """Bytes of PyLate's MaxSim intermediate while one chunk of queries is scored (torch backend).

    ``colbert_scores`` builds the (queries, documents, query tokens, document tokens) einsum
    and multiplies it by the query mask, then the document mask: two such tensors live at once.
    ``candidates`` is the documents of one column (the global batch when gathering).

    Examples
    --------
    >>> score_memory_bytes(chunk=32, candidates=2048, query_length=256, document_length=2048, bytes_per_value=2) / 2**30
    128.0
    """
    return 2 * chunk * candidates * query_length * document_length * bytes_per_value


def memory_estimate(*, measured_peak: float, measured: dict[str, int], target: dict[str, int], lengths: dict[str, int], dim: int, bytes_measured: int, bytes_target: int) -> float:  # fmt: skip
    """Peak bytes at ``target``'s shape from the peak measured at ``measured``'s: the growing terms swapped.

    Each shape is ``{per_device, global_batch, chunk}``; the terms are the score intermediate
    (:func:`score_memory_bytes`) and the cached token vectors with their gradients (the local
    rows, and the gathered documents). Model, optimizer and one chunk's activations are in the
    measured peak and do not grow with the batch.

    Examples
    --------
    >>> lengths = {"query_length": 256, "document_length": 2048}
    >>> shape = {"per_device": 2, "global_batch": 2, "chunk": 2}
    >>> memory_estimate(measured_peak=4e9, measured=shape, target=shape, lengths=lengths, dim=128, bytes_measured=4, bytes_target=4)
    4000000000.0
    """

    def growing(shape: dict[str, int], size: int) -> float:
        q, d = lengths["query_length"], lengths["document_length"]
        score = score_memory_bytes(chunk=shape["chunk"], candidates=shape["global_batch"], query_length=q,
                                   document_length=d, bytes_per_value=size)  # fmt: skip
        cached = 2 * (shape["per_device"] * (q + 2 * d) + 2 * shape["global_batch"] * d) * dim * size
        return score + cached

    return measured_peak - growing(measured, bytes_measured) + growing(target, bytes_target)


def project_training(*, measured: dict[str, Any], rows: int, devices: int, per_device: int, global_batch: int,
                     epochs: float = 1.0, accumulation: int = 1) -> dict[str, Any]:  # fmt: skip
    """One stage's wall time and GPU-hours for ``rows`` triples on ``devices`` at the forecast's batch.

    ``measured`` is a ``train`` measurement (its ``step_seconds``, ``per_device_batch_size``,
    ``candidates`` and ``flops``). Same shape: measured step time x steps. Another shape: the
    measured FLOP rate x the FLOPs of the forecast's steps (:func:`train_step_flops`), with
    documents gathered across devices as the recipe does (``gather_across_devices``).

    Examples
    --------
    >>> arch = {"matmul_parameters": 13_000_000, "layers": 10, "hidden": 384, "dim": 128}
    >>> flops = train_step_flops(per_device=256, candidates=4096, query_length=256, document_length=2048, arch=arch)
    >>> m = {"step_seconds": 30.0, "per_device_batch_size": 256, "candidates": 4096, "arch": arch,
    ...      "query_length": 256, "document_length": 2048, "flops": flops}
    >>> p = project_training(measured=m, rows=204800, devices=8, per_device=256, global_batch=2048)
    >>> p["steps"], p["wall_hours"], p["gpu_hours"], p["how"]
    (100, 0.8333333333333334, 6.666666666666667, 'measured step time x 100 steps')
    """
    steps = int(rows * epochs) // global_batch  # the trainer drops the last partial batch
    micro = train_step_flops(per_device=per_device, candidates=2 * global_batch // accumulation if devices > 1
                             else 2 * per_device, query_length=measured["query_length"],
                             document_length=measured["document_length"], arch=measured["arch"])  # fmt: skip
    target = {k: accumulation * v for k, v in micro.items()}  # each micro-batch is its own contrastive batch
    same = per_device == measured["per_device_batch_size"] and target["executed"] == measured["flops"]["executed"]
    step = measured["step_seconds"] * target["executed"] / measured["flops"]["executed"]
    how = (f"measured step time x {steps} steps" if same else
           f"measured FLOP rate ({measured['flops']['executed'] / measured['step_seconds'] / 1e12:.3g} TFLOP/s) "
           f"x FLOPs of {steps} steps at per-device {per_device}, global {global_batch}")  # fmt: skip
    wall = steps * step
    return {"rows": rows, "steps": steps, "step_seconds": step, "wall_hours": wall / 3600,
            "gpu_hours": wall * devices / 3600, "how": how}  # fmt: skip


def project_split(*, measured: dict[str, Any], documents: int, queries: int) -> dict[str, Any]:
    """One split's evaluation time (one model) for ``documents`` and ``queries`` at the measured rates.

    Documents: measured tokens/s (computed tokens, padding included: :func:`padded_tokens`) x
    (documents x mean tokens), i.e. a whole split's length-sorted batches assumed to pad little;
    queries: measured seconds per query x queries; scoring: measured (query token x document
    token) pairs/s x the pairs.

    Examples
    --------
    >>> m = {"document_tokens_per_s": 1000.0, "mean_document_tokens": 100.0, "query_seconds": 0.5,
    ...      "mean_query_tokens": 50.0, "score_pairs_per_s": 1e6}
    >>> p = project_split(measured=m, documents=10000, queries=100)  # 1e6 tokens; 100 x 50 x 1e6 pairs
    >>> p["encode_seconds"], p["query_seconds"], p["score_seconds"], p["seconds"]
    (1000.0, 50.0, 5000.0, 6050.0)
    """
    doc_tokens = documents * measured["mean_document_tokens"]
    encode = doc_tokens / measured["document_tokens_per_s"]
    query = queries * measured["query_seconds"]
    score = queries * measured["mean_query_tokens"] * doc_tokens / measured["score_pairs_per_s"]
    return {"documents": documents, "queries": queries, "encode_seconds": encode, "query_seconds": query,
            "score_seconds": score, "seconds": encode + query + score,
            "how": "measured tokens/s x document tokens + s/query x queries + pairs/s x query-document token pairs"}  # fmt: skip


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU from its name; None for others (a CPU).

    Examples
    --------
    >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA H100 PCIe"), peak_tflops("cpu")
    (989.0, 756.0, None)
    """
    keys = [k for k in PEAK_TFLOPS if k in device_name]
    return PEAK_TFLOPS[max(keys, key=len)] if keys else None


# --------------------------------------------------------------------------- measurement helpers
def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def device_memory() -> dict[str, Any]:
    """Peak memory of this process so far and its device's capacity (CUDA allocator, or RSS and RAM on a CPU)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        peak, capacity = torch.cuda.max_memory_allocated(), props.total_memory
        kind, name = "cuda max_memory_allocated", props.name
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
        capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        kind, name = "process peak RSS", f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return {"device": name, "kind": kind, "peak_bytes": peak, "capacity_bytes": capacity,
            "headroom_bytes": capacity - peak}  # fmt: skip


def architecture(model: Any) -> dict[str, int]:
    """The sizes the FLOP count needs, read from a loaded PyLate ColBERT."""
    backbone = model[0].auto_model
    embeddings = backbone.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    config = backbone.config
    return {"parameters": total, "matmul_parameters": total - embeddings, "layers": config.num_hidden_layers,
            "hidden": config.hidden_size, "dim": int(model[-1].out_features)}  # fmt: skip


def _shards_for(files: list[str], rows: int) -> list[str]:
    """The first shards holding at least ``rows`` rows (all of them if fewer): shards are a uniform
    hash-shuffle of the stage, so a prefix is a random sample of it."""
    import pyarrow.parquet as pq

    chosen, total = [], 0
    for path in files:
        chosen.append(path)
        total += pq.read_metadata(path).num_rows
        if total >= rows:
            break
    return chosen


def _stage_rows(files: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in files)


# --------------------------------------------------------------------------- train
def replay_false_negatives(trainer: Any, dataset: Any, *, per_device: int, world: int, batches: int, seed: int) -> dict[str, Any]:  # fmt: skip
    """In-batch false negatives of the first ``batches`` contrastive batches the trainer's sampler would draw.

    The batch sampler is the trainer's own (``train.batch_sampler``) at ``per_device``;
    accelerate gives per-device batch ``k`` to rank ``k % world``, and CachedContrastive
    gathers the ranks' documents, so ``world`` consecutive per-device batches are one
    contrastive batch. Rows are compared by text (:func:`workflow_scripts.train.false_negatives`).
    """
    import torch

    from .train import false_negatives

    generator = torch.Generator()
    generator.manual_seed(seed)
    sampler = trainer.get_batch_sampler(dataset, batch_size=per_device, drop_last=True,
                                        valid_label_columns=trainer.data_collator.valid_label_columns,
                                        generator=generator)  # fmt: skip
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
        "false_negative_pairs_per_batch_mean": statistics.fmean(f["false_negative_pairs"] for f in found) if found else None,
        "duplicate_query_rows_per_batch_mean": statistics.fmean(f["duplicate_query_rows"] for f in found) if found else None,
    }  # fmt: skip


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall seconds of each optimizer step (device synchronised at both ends)."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.started = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            _sync()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            self.seconds.append(time.perf_counter() - self.started)
            logger.info("preflight: step %d took %.1f s", state.global_step, self.seconds[-1])

    return StepTimer()


def _run_steps(*, model: Any, dataset: Any, scratch: Path, per_device: int, settings: dict[str, Any]) -> tuple[Any, Any, Any]:  # fmt: skip
    """``settings["steps"]`` optimizer steps through the training stage's own trainer, loss and collator."""
    import torch
    from pylate import losses, utils
    from sentence_transformers import SentenceTransformerTrainingArguments

    from .train import FalseNegativeCounter, _trainer_class, _use_bf16

    world = int(os.environ.get("WORLD_SIZE", "1"))
    loss = losses.CachedContrastive(model=model, mini_batch_size=settings["mini_batch_size"],
                                    gather_across_devices=settings["gather_across_devices"] and world > 1,
                                    temperature=settings["temperature"])  # fmt: skip
    loss.forward = counter = FalseNegativeCounter(loss.forward, gather=loss.gather_across_devices)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(scratch / "trainer"), max_steps=settings["steps"], per_device_train_batch_size=per_device,
        gradient_accumulation_steps=settings["gradient_accumulation_steps"], learning_rate=settings["learning_rate"],
        warmup_ratio=0.0, max_grad_norm=settings["max_grad_norm"], bf16=_use_bf16(settings["bf16"]),
        save_strategy="no", logging_steps=1, seed=settings["seed"], data_seed=settings["seed"], report_to="none",
        dataloader_num_workers=settings["dataloader_num_workers"], disable_tqdm=True, dataloader_drop_last=True,
        batch_sampler=settings["batch_sampler"], use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None,
    )  # fmt: skip
    timer = _step_timer()
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, loss=loss,
                               data_collator=utils.ColBERTCollator(model.tokenize), callbacks=[timer])  # fmt: skip
    return trainer, timer, counter


def measure_training(
    *,
    stage: str,
    init_model: str,
    shards: str,
    out_json: str,
    global_batch_size: int,
    gradient_accumulation_steps: int,
    mini_batch_size: int,
    query_length: int,
    document_length: int,
    temperature: float,
    gather_across_devices: bool,
    max_grad_norm: float,
    bf16: bool | str,
    batch_sampler: str,
    learning_rate: float,
    dataloader_num_workers: int,
    seed: int,
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

    Runs in a job shaped like the training job (``launch.sh``: one process per GPU); the
    per-device batch is ``per_device_batch_size`` or the real one. The first step carries
    the warm-up; with more steps it is left out of the rate. The ``forecast_*`` shape is the
    one the batch sampler is replayed at. Writes ``out_json`` (rank 0).
    """
    import torch

    from .model import load_colbert
    from .train import load_triples, shard_files, world_info
    from .train import per_device_batch_size as real_per_device

    _set_threads(threads)
    world = world_info()
    accumulation = gradient_accumulation_steps
    forecast_devices = forecast_nodes * forecast_gpus_per_node
    per_device = per_device_batch_size or real_per_device(global_batch_size, world["world_size"], accumulation)
    forecast_per_device = real_per_device(forecast_global_batch_size, forecast_devices, accumulation)
    files = shard_files(shards)
    needed = max(per_device * world["world_size"] * accumulation * train_steps,
                 forecast_global_batch_size * false_negative_batches)  # fmt: skip
    model = load_colbert(init_model, query_length=query_length, document_length=document_length,
                         trust_remote_code=trust_remote_code, device=_device())  # fmt: skip
    settings = {k: v for k, v in locals().items() if k in _TRAIN_SETTINGS} | {"steps": train_steps}
    scratch = Path(tempfile.mkdtemp(dir=Path(out_json).parent, prefix=f".{Path(out_json).name}.tmp-"))
    try:
        dataset = load_triples(_shards_for(files, needed), scratch / "datasets-cache")
        trainer, timer, counter = _run_steps(model=model, dataset=dataset, scratch=scratch, per_device=per_device,
                                             settings=settings)  # fmt: skip
        replay = None
        if world["rank"] == 0:  # the sampler replay needs no model and no other rank
            replay = replay_false_negatives(trainer, dataset, per_device=forecast_per_device, world=forecast_devices,
                                            batches=false_negative_batches, seed=seed)  # fmt: skip
        _reset_peak()
        started = time.perf_counter()
        try:
            trainer.train()
        except torch.OutOfMemoryError as err:
            raise UserError(
                f"preflight {stage}: out of memory at per-device batch {per_device} on rank {world['rank']} "
                f"({' '.join(str(err).split())[:160]}); set preflight.per_device_batch_size lower to measure a rate"
            ) from err
        wall = time.perf_counter() - started
        memory = _max_over_ranks(device_memory())
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    if world["rank"] != 0:
        return {}
    result = _training_result(model=model, trainer=trainer, seconds=timer.seconds, world_size=world["world_size"],
                              per_device=per_device, settings=settings, memory=memory)  # fmt: skip
    result |= {"stage": stage, "init_model": init_model, "real_per_device_batch_size": forecast_per_device,
               "train_wall_s": wall, "rows_loaded": len(dataset), "stage_rows": _stage_rows(files),
               "query_length": query_length, "document_length": document_length,
               "in_batch_false_negatives": {"measured_steps": counter.summary(batch_sampler),
                                            "sampler_replay_at_real_batch": replay}}  # fmt: skip
    write_json(out_json, result)
    logger.info("preflight %s: %.1f s/step at per-device %d, %.2f samples/s, peak %.2f GiB", stage,
                result["step_seconds"], per_device, result["samples_per_s"], memory["peak_bytes"] / GIB)  # fmt: skip
    return result


def _training_result(*, model: Any, trainer: Any, seconds: list[float], world_size: int, per_device: int,
                     settings: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Step time (the first step, with the warm-up, left out when there are more), rates, FLOPs, MFU."""
    arch = architecture(model)
    accumulation = settings["gradient_accumulation_steps"]
    lengths = {"query_length": model.query_length, "document_length": model.document_length}
    step = statistics.median(seconds[1:] or seconds)
    gathers = settings["gather_across_devices"] and world_size > 1
    candidates = 2 * per_device * (world_size if gathers else 1)
    micro = train_step_flops(per_device=per_device, candidates=candidates, arch=arch, **lengths)
    flops = {k: accumulation * v for k, v in micro.items()}  # each micro-batch is its own contrastive batch
    samples = per_device * accumulation / step  # one device's rows per second
    tflops = flops["model"] / step / 1e12
    peak = peak_tflops(memory["device"])
    return {"world_size": world_size, "device": memory["device"], "per_device_batch_size": per_device,
            "gradient_accumulation_steps": accumulation, "mini_batch_size": settings["mini_batch_size"],
            "gradcache_chunk": min(settings["mini_batch_size"], per_device), "candidates": candidates,
            "steps": len(seconds), "step_times_s": seconds, "step_seconds": step, "samples_per_s_per_device": samples,
            "samples_per_s": samples * world_size,
            "tokens_per_s": samples * world_size * (lengths["query_length"] + 2 * lengths["document_length"]),
            "arch": arch, "flops": flops, "tflops_per_s_per_device": tflops, "mfu": tflops / peak if peak else None,
            "memory": memory, "batch_sampler": settings["batch_sampler"], "bf16": bool(trainer.args.bf16)}  # fmt: skip


_TRAIN_SETTINGS = ("mini_batch_size", "gather_across_devices", "temperature", "gradient_accumulation_steps",
                   "learning_rate", "max_grad_norm", "bf16", "seed", "dataloader_num_workers", "batch_sampler")  # fmt: skip


def _max_over_ranks(memory: dict[str, Any]) -> dict[str, Any]:
    """The rank with the highest peak (every rank takes part)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return memory
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, memory)
    return max(gathered, key=lambda m: m["peak_bytes"])


# --------------------------------------------------------------------------- evaluate
def _sample_split(root: Path, split: str, *, documents: int, lengths: int, seed: int) -> dict[str, Any]:
    """One pass over a split's documents: count, a seeded sample to encode, a larger one to count tokens, the longest."""
    from .bright import load_bright_documents

    rng = random.Random(f"{seed}-{split}")
    encode_sample: list[str] = []
    length_sample: list[str] = []
    count, longest = 0, ""
    for _, text in load_bright_documents(root, split):
        count += 1
        for sample, size in ((encode_sample, documents), (length_sample, lengths)):
            if len(sample) < size:
                sample.append(text)
            elif (j := rng.randrange(count)) < size:
                sample[j] = text
        longest = text if len(text) > len(longest) else longest
    return {"count": count, "encode": encode_sample, "lengths": length_sample, "longest": longest}


def _timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    _sync()
    started = time.perf_counter()
    out = function(*args, **kwargs)
    _sync()
    return out, time.perf_counter() - started


def _token_counts(model: Any, texts: list[str], *, is_query: bool) -> list[int]:
    """Tokens each text is encoded with (specials included, truncated at the model's length)."""
    counts: list[int] = []
    for start in range(0, len(texts), 256):
        masks = model.tokenize(texts[start : start + 256], is_query=is_query)["attention_mask"]
        counts += masks.sum(dim=1).tolist()
    return counts


def _measure_split(model: Any, *, root: Path, split: str, settings: dict[str, Any], device: str, dtype: Any) -> dict[str, Any]:  # fmt: skip
    from .bright import load_bright_examples
    from .bright_meta import DOMAINS
    from .evaluate import encode
    from .maxsim import maxsim_scores

    override = settings["overrides"].get(split, {})
    model.query_length = override.get("query_length", settings["query_length"])
    model.document_length = override.get("document_length", settings["document_length"])
    examples = load_bright_examples(root, split)
    queries = [settings["query_template"].format(domain=DOMAINS[split], query=e["query"]) for e in examples]
    if settings["queries_per_split"]:
        queries = random.Random(f"{settings['seed']}-{split}-q").sample(queries, min(len(queries), settings["queries_per_split"]))  # fmt: skip
    docs = _sample_split(root, split, documents=settings["documents_per_split"], lengths=settings["length_sample"],
                         seed=settings["seed"])  # fmt: skip
    batch = settings["encode_batch_size"]
    _reset_peak()
    q_vecs, q_s = _timed(encode, model, queries, is_query=True, batch_size=batch, device=device, dtype=dtype)
    d_vecs, d_s = _timed(encode, model, docs["encode"], is_query=False, batch_size=batch, device=device, dtype=dtype)
    # a few documents score in microseconds: repeat them to a size where the rate is the GEMMs'
    scored = d_vecs * max(1, math.ceil(SCORE_TOKENS / max(1, sum(len(v) for v in d_vecs))))
    _, score_s = _timed(maxsim_scores, q_vecs, scored)
    d_tokens = _token_counts(model, docs["encode"], is_query=False)
    q_tokens = sum(len(v) for v in q_vecs)
    pairs = q_tokens * sum(len(v) for v in scored)
    lengths = _token_counts(model, docs["lengths"], is_query=False)
    padded = padded_tokens([len(t) for t in docs["encode"]], d_tokens, batch_size=batch)
    return {
        "documents": docs["count"], "queries": len(examples), "sampled_documents": len(docs["encode"]),
        "sampled_queries": len(queries), "query_length": model.query_length, "document_length": model.document_length,
        "query_seconds": q_s / max(len(queries), 1), "document_encode_seconds": d_s,
        "document_tokens_per_s": padded / max(d_s, 1e-9), "documents_per_s": len(d_vecs) / max(d_s, 1e-9),
        "sample_tokens": sum(d_tokens), "sample_padded_tokens": padded,
        "score_seconds": score_s, "score_pairs_per_s": pairs / max(score_s, 1e-9),
        "mean_query_tokens": q_tokens / max(len(q_vecs), 1), "mean_document_tokens": statistics.fmean(lengths),
        "length_sample": len(lengths), "max_vectors_in_sample": max((len(v) for v in d_vecs), default=0),
        "memory": device_memory(), "longest_document": docs["longest"],
    }  # fmt: skip


def padded_tokens(chars: list[int], tokens: list[int], *, batch_size: int) -> int:
    """Tokens a sentence-transformers ``encode`` computes, padding included.

    It sorts the texts by length in characters (longest first) and pads each batch to its
    longest. A whole split is encoded in length-sorted chunks of thousands of documents,
    where padding is small; a small sample is not, so its rate is per computed token.

    Examples
    --------
    >>> padded_tokens([10, 500, 40], [3, 120, 12], batch_size=2)  # [120, 12] then [3]
    243
    """
    order = sorted(range(len(chars)), key=lambda i: -chars[i])
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(tokens[i] for i in batch) * len(batch) for batch in batches)


def check_long_document(model: Any, text: str, *, document_length: int) -> dict[str, Any]:
    """Encode one long document alone: its tokens, what the model keeps, and the vectors it gives.

    Passes when the document is cut at ``document_length`` (specials included) and not at the
    base model's 511, i.e. a document beyond 600 tokens gives more than 512 vectors.
    """
    model.document_length = document_length
    tokens = len(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    kept = _token_counts(model, [text], is_query=False)[0]
    import torch

    with torch.inference_mode():
        vectors = len(model.encode([text], is_query=False, show_progress_bar=False)[0])
    expected = min(tokens + SPECIAL_TOKENS, document_length)
    ok = kept == expected and vectors <= document_length and (vectors > BASE_DOCUMENT_VECTORS + 1 or expected <= 600)
    return {"document_tokens": tokens, "kept_tokens": kept, "vectors": vectors, "document_length": document_length,
            "max_seq_length": model[0].max_seq_length, "passed": ok}  # fmt: skip


def measure_evaluation(
    *,
    model_path: str,
    bright_manifest: str,
    out_json: str,
    splits: list[str],
    query_length: int,
    document_length: int,
    overrides: dict[str, Any],
    encode_batch_size: int,
    documents_per_split: int,
    length_sample: int,
    seed: int,
    dtype: str = "auto",
    queries_per_split: int | None = None,
    query_template: str | None = None,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Per split: encode and score a seeded sample with the evaluation's functions; the longest document alone.

    ``query_template`` formats the queries (None: the card's, ``protocols.CARD_TEMPLATE``);
    only their token lengths matter here, up to ``query_length``.
    """
    import torch

    from .data import source_root
    from .model import load_colbert
    from .protocols import CARD_TEMPLATE

    _set_threads(threads)
    root = source_root(bright_manifest)
    device = _device()
    torch_dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if dtype == "auto" else getattr(torch, dtype))
    model = load_colbert(model_path, query_length=query_length, document_length=document_length,
                         trust_remote_code=trust_remote_code, device=device)  # fmt: skip
    if device == "cuda":
        model.to(torch_dtype)
    settings = {"overrides": overrides, "query_length": query_length, "document_length": document_length,
                "query_template": query_template or CARD_TEMPLATE, "queries_per_split": queries_per_split, "seed": seed,
                "documents_per_split": documents_per_split, "length_sample": length_sample,
                "encode_batch_size": encode_batch_size}  # fmt: skip
    per_split = {}
    for split in splits:
        per_split[split] = _measure_split(
            model, root=root, split=split, settings=settings, device=device, dtype=torch_dtype
        )
        logger.info("preflight evaluate %s: %.0f document tokens/s", split, per_split[split]["document_tokens_per_s"])
    longest_split = max(per_split, key=lambda s: len(per_split[s]["longest_document"]))
    length = overrides.get(longest_split, {}).get("document_length", document_length)
    check = check_long_document(model, per_split[longest_split]["longest_document"], document_length=length)
    for measured in per_split.values():
        measured["longest_document_chars"] = len(measured.pop("longest_document"))
    result = {"model_path": model_path, "device": device, "dtype": str(torch_dtype).removeprefix("torch."),
              "splits": per_split, "long_document_check": check | {"split": longest_split},
              "arch": architecture(model)}  # fmt: skip
    write_json(out_json, result)
    return result


# --------------------------------------------------------------------------- forecast
def _benchmark(path: str) -> dict[str, float]:
    """Wall seconds and peak RSS (MB) of one Snakemake ``benchmark:`` file."""
    import csv

    with open(path) as handle:
        record = next(csv.DictReader(handle, delimiter="\t"), None)
    if record is None:
        raise UserError(f"{path}: empty benchmark file")
    rss = record.get("max_rss", "NA")
    return {"seconds": float(record["s"]), "peak_rss_mb": float(rss) if rss not in ("NA", "-", "") else None}


def _data_forecast(stats_files: list[str], benchmarks: list[str], shuffle_buckets: int) -> dict[str, Any]:
    """Per stage: build_shards triples/s (rows / the job's wall time) and peak RSS, projected."""
    out = {}
    bench_files = {Path(b).stem: b for b in benchmarks}  # benchmarks/build_shards/<stage>.tsv
    for stats_file in stats_files:
        stats = read_json(stats_file)
        stage = stats["stage"]
        if stage not in bench_files:
            raise UserError(f"preflight: no build_shards benchmark for {stage} among {benchmarks}")
        bench = _benchmark(bench_files[stage])
        rate = stats["rows"] / bench["seconds"]
        tokens = sum(stats["token_lengths"].get(c, {}).get("mean", 0.0) for c in ("query", "positive", "negative"))
        # ASSUMED ~4 bytes per token of text, and ~1 KB of Python objects per row (a dict of 7 strings)
        mean_bytes = 4.0 * tokens + ROW_OVERHEAD_BYTES
        bucket = {name: rows / shuffle_buckets * mean_bytes for name, rows in
                  (("data_at_hand", stats["rows"]), ("published", PUBLISHED_TRIPLES[stage]))}  # fmt: skip
        projected = {}
        for name, rows in (("data_at_hand", stats["rows"]), ("published", PUBLISHED_TRIPLES[stage])):
            rss = (
                None
                if bench["peak_rss_mb"] is None
                else bench["peak_rss_mb"] + (bucket[name] - bucket["data_at_hand"]) / 2**20
            )
            projected[name] = {"rows": rows, "wall_hours": rate_times_count(seconds=bench["seconds"], done=stats["rows"],
                                                                            count=rows) / 3600,
                               "peak_rss_mb": rss, "bucket_mb": bucket[name] / 2**20,
                               "how": "measured triples/s x triples (job wall time, fixed start-up included); peak RSS: "
                               "measured + one shuffle bucket more (estimate: the sort holds one bucket)"}  # fmt: skip
        out[stage] = {"rows": stats["rows"], "seconds": bench["seconds"], "triples_per_s": rate,
                      "peak_rss_mb": bench["peak_rss_mb"], "mean_row_bytes": mean_bytes, "projected": projected}  # fmt: skip
    return out


def _train_forecast(measured: dict[str, Any], stats_rows: int, shape: dict[str, Any]) -> dict[str, Any]:
    """Projections of one stage (data at hand and published) and its memory at the forecast's shape."""
    stage = measured["stage"]
    kwargs = {"devices": shape["devices"], "per_device": shape["per_device"], "global_batch": shape["global_batch"],
              "epochs": shape["epochs"], "accumulation": shape["accumulation"]}  # fmt: skip
    projected = {"data_at_hand": project_training(measured=measured, rows=stats_rows, **kwargs),
                 "published": project_training(measured=measured, rows=PUBLISHED_TRIPLES[stage], **kwargs)}  # fmt: skip
    lengths = {k: measured[k] for k in ("query_length", "document_length")}
    measured_shape = {"per_device": measured["per_device_batch_size"], "global_batch": measured["candidates"] // 2,
                      "chunk": measured["gradcache_chunk"]}  # fmt: skip
    gathered = shape["global_batch"] // shape["accumulation"] if shape["devices"] > 1 else shape["per_device"]
    target = {"per_device": shape["per_device"], "global_batch": gathered,  # one micro-batch's contrastive batch
              "chunk": min(shape["mini_batch_size"], shape["per_device"])}  # fmt: skip
    memory = measured["memory"]
    same = measured_shape == target and "cuda" in memory["kind"]  # else: estimated from the measured peak
    bytes_target = 2 if shape["bf16"] else 4
    bytes_measured = 2 if measured["bf16"] else 4
    estimate = memory["peak_bytes"] if same else memory_estimate(
        measured_peak=memory["peak_bytes"], measured=measured_shape, target=target, lengths=lengths,
        dim=measured["arch"]["dim"], bytes_measured=bytes_measured, bytes_target=bytes_target)  # fmt: skip
    score = score_memory_bytes(chunk=target["chunk"], candidates=target["global_batch"], bytes_per_value=bytes_target,
                               **lengths)  # fmt: skip
    capacity = shape["device_memory_bytes"]
    return {
        "measured": {k: measured[k] for k in ("device", "world_size", "per_device_batch_size", "gradcache_chunk",
                                              "step_seconds", "step_times_s", "samples_per_s", "samples_per_s_per_device",
                                              "tokens_per_s", "tflops_per_s_per_device", "mfu", "candidates")}
        | {"throughput": measured["samples_per_s"], "unit": "samples/s", "peak_memory_gib": memory["peak_bytes"] / GIB,
           "memory_kind": memory["kind"], "capacity_gib": memory["capacity_bytes"] / GIB,
           "headroom_gib": memory["headroom_bytes"] / GIB},
        "projected": projected,
        "memory_at_forecast": {"peak_gib": estimate / GIB, "capacity_gib": capacity / GIB,
                               "headroom_gib": (capacity - estimate) / GIB, "fits": estimate <= capacity,
                               "score_intermediate_gib": score / GIB,
                               "how": "measured" if same else "estimate: measured peak with the terms that grow with the "
                               "batch swapped (MaxSim intermediate 2 x chunk x global x 256 x 2048, cached vectors)"},
        "in_batch_false_negatives": measured["in_batch_false_negatives"],
    }  # fmt: skip


def _evaluation_forecast(measured: dict[str, Any], evaluated_models: int) -> dict[str, Any]:
    from .rehearsal import BRIGHT_STATS

    out = {}
    for split, m in measured["splits"].items():
        published = BRIGHT_STATS[split]
        out[split] = {
            "measured": {"throughput": m["document_tokens_per_s"], "unit": "document tokens/s",
                         "documents_per_s": m["documents_per_s"], "mean_document_tokens": m["mean_document_tokens"],
                         "score_pairs_per_s": m["score_pairs_per_s"], "query_seconds": m["query_seconds"],
                         "sampled_documents": m["sampled_documents"], "peak_memory_gib": m["memory"]["peak_bytes"] / GIB},
            "projected": {"data_at_hand": project_split(measured=m, documents=m["documents"], queries=m["queries"]),
                          "published": project_split(measured=m, documents=published.documents, queries=published.queries)},
        }  # fmt: skip
        for projection in out[split]["projected"].values():
            projection["wall_hours"] = projection["seconds"] / 3600
            projection["gpu_hours_all_models"] = projection["seconds"] * evaluated_models / 3600
    return out


def _verdict(result: dict[str, Any], budget: float) -> dict[str, Any]:
    """Fits / does not fit: memory per training stage, and total GPU-hours against the budget."""
    train = {s: result["stages"][s] for s in ("train_stage1", "train_stage2")}
    gpu_hours = {
        **{s: t["projected"]["published"]["gpu_hours"] for s, t in train.items()},
        "evaluate": sum(e["projected"]["published"]["gpu_hours_all_models"] for e in result["stages"]["evaluate"].values()),
    }  # fmt: skip
    total = sum(gpu_hours.values())
    problems = []
    for stage, t in train.items():
        memory = t["memory_at_forecast"]
        if not memory["fits"]:
            kind = memory["how"].split(":")[0]  # "measured" or "estimate"
            problems.append(f"{stage}: memory {memory['peak_gib']:.1f} GiB > {memory['capacity_gib']:.0f} GiB per GPU "
                            f"(over by {memory['peak_gib'] - memory['capacity_gib']:.1f} GiB, {kind})")  # fmt: skip
    if total > budget:
        worst = max(gpu_hours, key=gpu_hours.get)
        problems.append(f"time: {total:,.1f} GPU-hours > budget {budget:g} (x{total / budget:,.1f}; most in {worst}: "
                        f"{gpu_hours[worst]:,.1f})")  # fmt: skip
    failed = [name for name, check in result["checks"].items() if not check["passed"]]
    problems += [f"check failed: {name}" for name in failed]
    low, high = CARD["hours"]
    gpus = CARD["nodes"] * CARD["gpus_per_node"]
    card = f"{low:g}-{high:g} h on {CARD['nodes']} x {CARD['gpus_per_node']} {CARD['gpu']} = {low * gpus:g}-{high * gpus:g} GPU-hours"
    return {"fits": not problems, "problems": problems, "gpu_hours": gpu_hours, "total_gpu_hours": total,
            "budget_gpu_hours": budget, "card": card}  # fmt: skip


def _checks(train: dict[str, Any], evaluation: dict[str, Any], widen: list[str]) -> dict[str, Any]:
    """What the rehearsal must prove at the real shapes, each with its evidence."""
    long = evaluation["long_document_check"]
    checks = {
        "long document: document_length honoured": {
            "passed": long["passed"],
            "evidence": f"{long['split']}: a {long['document_tokens']}-token document kept {long['kept_tokens']} tokens "
            f"and gave {long['vectors']} vectors (document_length {long['document_length']}; max_seq_length "
            f"{long['max_seq_length']}; the base model's own config would give {BASE_DOCUMENT_VECTORS})",
        },
    }  # fmt: skip
    for path in widen:
        report = read_json(path)
        checks["widen on the real head"] = {
            "passed": all(report["checks"].values()),
            "evidence": f"last Dense {report['in_features']} -> {report['old_dim']} widened to {report['new_dim']}: "
            + ", ".join(report["checks"]),
        }  # fmt: skip
    for stage, m in train.items():
        checks[f"{stage}: training steps at q{m['query_length']}/d{m['document_length']}"] = {
            "passed": m["steps"] >= 1,
            "evidence": f"{m['steps']} step(s), mini_batch_size {m['mini_batch_size']} (GradCache chunk "
            f"{m['gradcache_chunk']} at per-device batch {m['per_device_batch_size']}), peak "
            f"{m['memory']['peak_bytes'] / GIB:.2f} GiB ({m['memory']['kind']}) of {m['memory']['capacity_bytes'] / GIB:.0f}",
        }  # fmt: skip
    return checks


def forecast(
    *,
    train: list[str],
    evaluate: str,
    shard_stats: list[str],
    shard_benchmarks: list[str],
    out_json: str,
    out_md: str,
    out_html: str,
    nodes: int,
    gpus_per_node: int,
    global_batch_size: int,
    gradient_accumulation_steps: int,
    mini_batch_size: int,
    epochs: float,
    bf16: bool | str,
    shuffle_buckets: int,
    device_memory_gib: float,
    gpu_hours_budget: float,
    widen: list[str],
    evaluated_models: int = 1,
) -> dict[str, Any]:
    """The cost forecast: measurements, projections (data at hand and published sizes) and the verdict.

    ``evaluated_models`` is how many models the run evaluates on every split (the DAG's count);
    ``widen`` the widening verification(s) of the measured model (none when nothing widens).
    """
    from .train import per_device_batch_size

    devices = nodes * gpus_per_node
    shape = {"devices": devices, "nodes": nodes, "gpus_per_node": gpus_per_node, "global_batch": global_batch_size,
             "per_device": per_device_batch_size(global_batch_size, devices, gradient_accumulation_steps),
             "mini_batch_size": mini_batch_size, "epochs": epochs, "bf16": bf16 in (True, "auto"),
             "accumulation": gradient_accumulation_steps,
             "device_memory_bytes": device_memory_gib * GIB}  # fmt: skip
    measured_train = {read_json(p)["stage"]: read_json(p) for p in train}
    stage_rows = {read_json(p)["stage"]: read_json(p)["rows"] for p in shard_stats}
    evaluation = read_json(evaluate)
    stages: dict[str, Any] = {"build_shards": _data_forecast(shard_stats, shard_benchmarks, shuffle_buckets)}
    for stage, m in sorted(measured_train.items()):
        stages[f"train_{stage}"] = _train_forecast(m, stage_rows[stage], shape)
    stages["evaluate"] = _evaluation_forecast(evaluation, evaluated_models)
    result = {"forecast_for": {k: v for k, v in shape.items() if k != "device_memory_bytes"}
              | {"gpu_memory_gib": device_memory_gib, "evaluated_models": evaluated_models},
              "measured_on": {"train": sorted({m["device"] for m in measured_train.values()}),
                              "evaluate": evaluation["device"]},
              "stages": stages, "checks": _checks(measured_train, evaluation, widen)}  # fmt: skip
    result["verdict"] = _verdict(result, gpu_hours_budget)
    write_json(out_json, result)
    text = render_markdown(result)
    with atomic_file(out_md) as handle:
        handle.write(text)
    with atomic_file(out_html) as handle:
        handle.write(render_html(result))
    print(text.split("\n## ", 1)[0])  # the verdict, in the job's log
    return result


# --------------------------------------------------------------------------- rendering
def _h(hours: float) -> str:
    """Hours as a short human duration.

    Examples
    --------
    >>> _h(0.0001), _h(0.5), _h(30.2), _h(900)
    ('0.4 s', '30.0 min', '30.2 h', '37.5 days')
    """
    if hours < 1 / 60:
        return f"{hours * 3600:.1f} s"
    if hours < 1:
        return f"{hours * 60:.1f} min"
    return f"{hours:,.1f} h" if hours < 48 else f"{hours / 24:,.1f} days"


def _wall(projection: dict[str, Any]) -> str:
    """A training projection's wall time, or why there is none (fewer rows than one batch)."""
    return _h(projection["wall_hours"]) if projection["steps"] else "< 1 batch"


def forecast_rows(result: dict[str, Any]) -> list[list[str]]:
    """The forecast table: one row per measured stage (build_shards per stage, training per stage, each split)."""
    stages, rows = result["stages"], []
    for stage, d in stages["build_shards"].items():
        p = d["projected"]
        rss = f"{d['peak_rss_mb'] or 0:,.0f} MB RSS; est. {p['published']['peak_rss_mb'] or 0:,.0f} MB at published"
        rows.append([f"build_shards {stage}", f"{d['triples_per_s']:,.0f} triples/s", rss,
                     f"{p['data_at_hand']['rows']:,} / {p['published']['rows']:,} triples",
                     f"{_h(p['data_at_hand']['wall_hours'])} / {_h(p['published']['wall_hours'])}", "CPU"])  # fmt: skip
    for name in ("train_stage1", "train_stage2"):
        t = stages[name]
        m, p, mem = t["measured"], t["projected"], t["memory_at_forecast"]
        rows.append([name, f"{m['samples_per_s']:.3g} samples/s ({m['tokens_per_s']:,.0f} tokens/s)",
                     f"{m['peak_memory_gib']:.2f} GiB measured; {mem['peak_gib']:.1f} of {mem['capacity_gib']:.0f} GiB at forecast",
                     f"{p['data_at_hand']['rows']:,} / {p['published']['rows']:,} triples",
                     f"{_wall(p['data_at_hand'])} / {_wall(p['published'])}", f"{p['published']['gpu_hours']:,.1f}"])  # fmt: skip
    for split, e in stages["evaluate"].items():
        m, p = e["measured"], e["projected"]
        rows.append([f"evaluate {split}", f"{m['throughput']:,.0f} doc tokens/s", f"{m['peak_memory_gib']:.2f} GiB",
                     f"{p['data_at_hand']['documents']:,} / {p['published']['documents']:,} docs",
                     f"{_h(p['data_at_hand']['wall_hours'])} / {_h(p['published']['wall_hours'])}",
                     f"{p['published']['gpu_hours_all_models']:,.2f}"])  # fmt: skip
    return rows


HEADER = ["stage", "measured throughput", "peak memory", "count (at hand / published)",
          "projected wall (at hand / published; evaluation: one model)", "GPU-hours (published; evaluation: all models)"]  # fmt: skip


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """The one-screen verdict."""
    v, f = result["verdict"], result["forecast_for"]
    head = "FITS" if v["fits"] else "DOES NOT FIT"
    lines = [f"**Preflight: {head}** the budget of {v['budget_gpu_hours']:g} GPU-hours on {f['nodes']} x "
             f"{f['gpus_per_node']} GPUs ({f['gpu_memory_gib']:g} GiB each), global batch {f['global_batch']} "
             f"(per device {f['per_device']})."]  # fmt: skip
    lines += [f"- {p}" for p in v["problems"]]
    parts = ", ".join(f"{k} {h:,.1f}" for k, h in v["gpu_hours"].items())
    lines.append(f"- projected GPU-hours at the published sizes: {v['total_gpu_hours']:,.1f} ({parts}); "
                 f"the card: {v['card']}.")  # fmt: skip
    on = result["measured_on"]
    lines.append(f"- measured on: training {', '.join(on['train'])}; evaluation {on['evaluate']}. Each projection is "
                 "a measured rate x a count (see the table).")  # fmt: skip
    for name, check in result["checks"].items():
        lines.append(f"- {'ok' if check['passed'] else 'FAILED'}: {name}: {check['evidence']}")
    for name in ("train_stage1", "train_stage2"):
        fn = result["stages"][name]["in_batch_false_negatives"]["sampler_replay_at_real_batch"] or {}
        if fn and not fn["batches"]:
            lines.append(f"- {name}: in-batch false negatives not counted: the data at hand holds less than one "
                         f"batch of {fn['rows_per_batch']} rows")  # fmt: skip
        elif fn:
            lines.append(f"- {name}: in-batch false negatives at {fn['rows_per_batch']} rows: "
                         f"{fn['rows_with_false_negative_rate_mean']:.2%} of rows per batch (max "
                         f"{fn['rows_with_false_negative_rate_max']:.2%}, {fn['batches']} batches replayed)")  # fmt: skip
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """preflight.md: the verdict, then the forecast table."""
    table = [f"| {' | '.join(HEADER)} |", f"|{'---|' * len(HEADER)}"]
    table += [f"| {' | '.join(row)} |" for row in forecast_rows(result)]
    how = [f"{s}: {result['stages'][s]['projected']['published']['how']}" for s in ("train_stage1", "train_stage2")]
    notes = ["Projections: measured rate x count. Training (published sizes): " + "; ".join(how) + ". Evaluation: "
             "tokens/s x document tokens + s/query x queries + pairs/s x token pairs (one model; GPU-hours for all "
             "evaluated models). build_shards: triples/s of the whole job x triples (CPU, not GPU-hours)."]  # fmt: skip
    return "\n".join(["# Preflight", "", *verdict_lines(result), "", "## Forecast", "", *table, "", *notes, ""])


def render_html(result: dict[str, Any]) -> str:
    """The report page: the same verdict and table as preflight.md."""
    css = ("<style>table{border-collapse:collapse;font:13px sans-serif}td,th{padding:3px 8px;border-bottom:1px solid "
           "#ddd;text-align:right}td:first-child,th:first-child{text-align:left}li{font:13px sans-serif}</style>")  # fmt: skip
    verdict = "".join(f"<li>{html.escape(line.removeprefix('- '))}</li>" for line in verdict_lines(result))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in forecast_rows(result)
    )
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cost forecast</title>{css}</head><body>"
            f"<h3>Cost forecast</h3><ul id='verdict'>{verdict.replace('**', '')}</ul>"
            f"<table id='forecast-table'><tr>{head}</tr>{body}</table></body></html>\n")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    run_commands({"train": measure_training, "evaluate": measure_evaluation, "forecast": forecast}, argv)


if __name__ == "__main__":
    main()
