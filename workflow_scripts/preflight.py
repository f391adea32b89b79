"""Preflight (issue #13): every heavy stage of the recipe at the real shapes, bounded, and a cost forecast.

Before the 64 GPU-hours, run each heavy stage for a bounded amount of work where it will run
(``snakemake --profile slurm preflight``; locally ``--cores N preflight``), measure it, and
project the whole run from the measurements:

- ``train``: a few optimizer steps of one curriculum stage (``preflight.train_steps``) in a job
  shaped like the training job (one process per GPU through ``launch.sh``), with the real
  global batch split over the real world size, or the per-device batch
  ``preflight.per_device_batch_size`` where the real one does not fit or is too slow (a CPU).
  Also replays the configured batch sampler (no model) over the stage's shards at the real
  global batch and counts in-batch false negatives, records the loaded rows' token lengths,
  and measures the memory of one GradCache step at three scaled shapes (the calibration).
- ``evaluate``: per BRIGHT split, a seeded random sample of documents (and queries) encoded and
  scored with the evaluation's own functions; token lengths counted on a larger sample; and the
  split set's longest document encoded alone, to show that ``document_length`` is honoured
  (a 2048-token document gives up to 2048 vectors, not 511).
- ``forecast``: reads those measurements, the ``build_shards`` jobs' Snakemake benchmark files
  and statistics, and the widening verification; writes ``preflight.json``, ``preflight.md``
  and the report page: a one-screen verdict, then every projection.

Projections are given for the data at hand (the mirror, the shards) and for the published
sizes. Data: a measured rate x a count. Evaluation: the same on a GPU; from a CPU, FLOPs / (the
GPU's peak x ``preflight.assumed_mfu``) (:func:`project_split_from_flops`). Training (issue #21):

- time measured on a known GPU: the measured step time, or the measured FLOP rate x the FLOPs
  of the real steps (:func:`train_step_flops`). From a CPU, CPU seconds say nothing about a
  GPU: the FLOPs of the tokens GradCache processes after trimming each mini-batch to its
  longest row, drawn from the data's own token lengths (:func:`simulate_steps`), / (the GPU's
  bf16 peak x ``preflight.assumed_mfu``, an assumption) (:func:`time_forecast`); the counts
  padded to the batch's longest and collated to ``document_length`` beside it.
- memory at the forecast's shape: a sum of named terms, each at its dtype
  (:func:`memory_terms`), the activation terms calibrated against the memory this machine
  measured at three scaled shapes (:func:`calibrate_activations`), with the model's error per
  shape; the verdict names the config key to change where it does not fit.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import os
import random
import resource
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from .cli import run_commands, spread_records
from .common import UserError, atomic_file, read_json, write_json
from .trainer import Training, TrainSettings

__all__ = [
    "CARD",
    "PEAK_TFLOPS",
    "PUBLISHED_TRIPLES",
    "calibrate_activations",
    "column_tokens",
    "encoder_flops",
    "forecast",
    "forecast_memory",
    "measure_calibration",
    "measure_evaluation",
    "measure_training",
    "memory_peak",
    "memory_terms",
    "peak_growth",
    "project_split",
    "project_split_from_flops",
    "project_training",
    "rate_times_count",
    "simulate_steps",
    "time_forecast",
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
    return {
        "encoder_forward": encoder,
        "score_forward": score,
        "executed": 4 * encoder + 3 * score,
        "model": 3 * encoder + 3 * score,
    }


def project_training(
    *,
    measured: dict[str, Any],
    rows: int,
    devices: int,
    per_device: int,
    global_batch: int,
    epochs: float = 1.0,
    accumulation: int = 1,
) -> dict[str, Any]:
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
    micro = train_step_flops(
        per_device=per_device,
        candidates=2 * global_batch // accumulation if devices > 1 else 2 * per_device,
        query_length=measured["query_length"],
        document_length=measured["document_length"],
        arch=measured["arch"],
    )
    target = {k: accumulation * v for k, v in micro.items()}  # each micro-batch is its own contrastive batch
    same = per_device == measured["per_device_batch_size"] and target["executed"] == measured["flops"]["executed"]
    step = measured["step_seconds"] * target["executed"] / measured["flops"]["executed"]
    how = (
        f"measured step time x {steps} steps"
        if same
        else f"measured FLOP rate ({measured['flops']['executed'] / measured['step_seconds'] / 1e12:.3g} TFLOP/s) "
        f"x FLOPs of {steps} steps at per-device {per_device}, global {global_batch}"
    )
    wall = steps * step
    return {
        "rows": rows,
        "steps": steps,
        "step_seconds": step,
        "wall_hours": wall / 3600,
        "gpu_hours": wall * devices / 3600,
        "how": how,
    }


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
    return {
        "documents": documents,
        "queries": queries,
        "encode_seconds": encode,
        "query_seconds": query,
        "score_seconds": score,
        "seconds": encode + query + score,
        "how": "measured tokens/s x document tokens + s/query x queries + pairs/s x query-document token pairs",
    }


# Dense fp32 peak (no tensor cores): the exact scorer's GEMMs run in float32 by default
# (evaluate.score_dtype), and PyTorch leaves TF32 off for matmuls.
PEAK_FP32_TFLOPS = {"H100 PCIe": 51.0, "H100": 67.0, "H200": 67.0, "A100": 19.5, "L40S": 91.6, "L4": 30.3}


def project_split_from_flops(
    *, measured: dict[str, Any], arch: dict[str, int], documents: int, queries: int, gpu: str, mfu: float
) -> dict[str, Any]:
    """One split's evaluation time (one model) on one ``gpu`` from FLOPs, for a measurement made on a CPU.

    Encoding every document and query once (:func:`encoder_flops` at the measured mean token
    counts, bf16) and exact MaxSim of every query token against every document token
    (2 x query tokens x document tokens x dim, float32), each / (the GPU's peak x ``mfu``, an
    ASSUMED utilisation). A CPU's own seconds say nothing about a GPU's.

    Examples
    --------
    >>> arch = {"matmul_parameters": 13_000_000, "layers": 10, "hidden": 384, "dim": 128}
    >>> m = {"mean_document_tokens": 200.0, "mean_query_tokens": 256.0}
    >>> p = project_split_from_flops(measured=m, arch=arch, documents=57_359, queries=103, gpu="H100", mfu=0.3)
    >>> round(p["encode_seconds"], 2), round(p["score_seconds"], 2), p["seconds"] < 10
    (1.13, 3.85, True)
    """
    shape = {k: arch[k] for k in ("matmul_parameters", "layers", "hidden")}
    doc_tokens, query_tokens = measured["mean_document_tokens"], measured["mean_query_tokens"]
    encode = documents * encoder_flops(round(doc_tokens), **shape) + queries * encoder_flops(
        round(query_tokens), **shape
    )
    score = 2.0 * queries * query_tokens * documents * doc_tokens * arch["dim"]
    encode_s = encode / (PEAK_TFLOPS[gpu] * 1e12 * mfu)
    score_s = score / (PEAK_FP32_TFLOPS[gpu] * 1e12 * mfu)
    how = (
        f"FLOPs / ({gpu} peak x ASSUMED MFU {mfu:g}): encoding at {PEAK_TFLOPS[gpu]:g} TFLOP/s bf16, "
        f"exact MaxSim at {PEAK_FP32_TFLOPS[gpu]:g} TFLOP/s fp32"
    )
    return {
        "documents": documents,
        "queries": queries,
        "encode_flops": encode,
        "score_flops": score,
        "encode_seconds": encode_s,
        "query_seconds": 0.0,
        "score_seconds": score_s,
        "seconds": encode_s + score_s,
        "how": how,
    }


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU from its name; None for others (a CPU).

    Examples
    --------
    >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA H100 PCIe"), peak_tflops("cpu")
    (989.0, 756.0, None)
    """
    keys = [k for k in PEAK_TFLOPS if k in device_name]
    return PEAK_TFLOPS[max(keys, key=len)] if keys else None


# --------------------------------------------------------------------------- tokens, time and memory (issue #21)
# The paper's allowance for what the CUDA allocator's tensors do not show, per GPU (ASSUMED,
# not measured here): the CUDA context with cuBLAS/cuDNN workspaces (~0.5-0.8 GiB on an H100
# with torch), NCCL's buffers for 8 ranks on 2 nodes (channels x peers x 4 MiB, ~1 GiB), and
# the caching allocator's reserved-but-unallocated memory (fragmentation, ~5-15 % of allocated).
CUDA_CONTEXT_BYTES = int(0.75 * GIB)
NCCL_BUFFER_BYTES = 1 * GIB
FRAGMENTATION = 0.10
# Which config key shrinks each term (what a verdict that does not fit tells the user to change).
TERM_KEYS = {
    "gradcache_chunk_activations": "train.mini_batch_size",
    "no_grad_forward_working_set": "train.mini_batch_size",
    "loss_working_set": "train.score_mini_batch_size (or train.maxsim_backend: chunked)",
    "gathered_documents": "train.gradient_accumulation_steps (smaller contrastive batch per micro-step)",
    "cached_embeddings": "train.gradient_accumulation_steps (fewer rows per device)",
    "cached_embedding_gradients": "train.gradient_accumulation_steps (fewer rows per device)",
}


def _squares(lengths: list[int]) -> list[int]:
    return [n * n for n in lengths]


def column_tokens(lengths: list[int], *, mini_batch_size: int, width: int) -> dict[str, dict[str, int]]:
    """Tokens (and tokens x width, what attention's L x L work grows with) of one device's column.

    ``processed``/``padded``/``real`` come from :func:`workflow_scripts.gradcache.trimmed_token_counts`;
    its mini-batches group rows by length, an order squaring keeps, so the same function on the
    squared lengths gives the sum over mini-batches of rows x width**2. ``collated`` is every row
    at ``width`` (PyLate's collator pads to ``query_length``/``document_length``).

    Examples
    --------
    Mini-batches [300], [120, 40], [7, 5]; squares: 300**2 + 2 x 120**2 + 2 x 7**2.

    >>> column_tokens([5, 300, 40, 7, 120], mini_batch_size=2, width=512)["tokens"]
    {'real': 472, 'processed': 554, 'padded': 1500, 'collated': 2560}
    >>> column_tokens([5, 300, 40, 7, 120], mini_batch_size=2, width=512)["squares"]["processed"]
    118898
    """
    from .gradcache import trimmed_token_counts

    tokens = trimmed_token_counts(lengths, mini_batch_size=mini_batch_size)
    squares = trimmed_token_counts(_squares(lengths), mini_batch_size=mini_batch_size)
    tokens["collated"], squares["collated"] = len(lengths) * width, len(lengths) * width * width
    return {"tokens": tokens, "squares": squares}


def widest_minibatch(lengths: list[int], *, mini_batch_size: int) -> dict[str, int]:
    """The GradCache mini-batch of one column that holds the most activations: its rows and width.

    Examples
    --------
    >>> widest_minibatch([5, 300, 40, 7, 120], mini_batch_size=2)  # [300], [120, 40], [7, 5]
    {'rows': 1, 'width': 300}
    """
    from .gradcache import minibatch_plan

    plans = minibatch_plan(lengths, mini_batch_size=mini_batch_size)
    shapes = [(len(rows), max(lengths[i] for i in rows)) for rows in plans] or [(0, 0)]
    rows, width = max(shapes, key=lambda s: (s[0] * s[1], s[1]))
    return {"rows": rows, "width": width}


def simulate_steps(
    lengths: dict[str, list[int]],
    *,
    per_device: int,
    devices: int,
    accumulation: int,
    mini_batch_size: int,
    widths: dict[str, int],
    arch: dict[str, int],
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """Tokens and encoder FLOPs of ``steps`` optimizer steps drawn from the data's own token lengths.

    ``lengths`` maps each column (``query``, ``positive``, ``negative``) to the token lengths of
    the same rows (specials included, truncated). Each step draws ``devices x accumulation``
    per-device batches of ``per_device`` rows (seeded; with replacement only where the data
    holds fewer rows than a step). Per optimizer step (mean over the steps, summed over devices):
    tokens ``real``/``processed`` (trimmed)/``padded`` (to the column's longest)/``collated``,
    queries and documents apart. Encoder FLOPs are per device: the slowest device of a step
    sets its time.

    Examples
    --------
    >>> arch = {"matmul_parameters": 1000, "layers": 2, "hidden": 8}
    >>> lengths = {"query": [4, 4, 4, 4], "positive": [10, 2, 2, 2], "negative": [2, 2, 2, 2]}
    >>> out = simulate_steps(lengths, per_device=4, devices=1, accumulation=1, mini_batch_size=2,
    ...                      widths={"query": 8, "positive": 16, "negative": 16}, arch=arch, steps=1, seed=0)
    >>> out["tokens"]["processed"], out["tokens"]["padded"]  # positives [10, 2] [2, 2]: 24, not 4 x 10
    ({'queries': 16.0, 'documents': 32.0}, {'queries': 16.0, 'documents': 48.0})
    """
    import random as _random

    rng = _random.Random(seed)
    n = min(len(v) for v in lengths.values())
    if n == 0:
        raise UserError("preflight: no token lengths to forecast the training steps from")
    kinds = ("real", "processed", "padded", "collated")
    tokens = {k: {"queries": 0, "documents": 0} for k in kinds}
    flops = {k: 0.0 for k in kinds}
    widest = {"rows": 0, "width": 0}
    for _ in range(steps):
        slowest = {k: 0.0 for k in kinds}
        for _device in range(devices):
            device = {k: 0.0 for k in kinds}
            for _micro in range(accumulation):
                rows = rng.sample(range(n), per_device) if n >= per_device else rng.choices(range(n), k=per_device)
                for column, values in lengths.items():
                    col = [values[i] for i in rows]
                    counted = column_tokens(col, mini_batch_size=mini_batch_size, width=widths[column])
                    group = "queries" if column == "query" else "documents"
                    for k in kinds:
                        tokens[k][group] += counted["tokens"][k]
                        device[k] += (
                            2.0 * arch["matmul_parameters"] * counted["tokens"][k]
                            + 4.0 * arch["layers"] * arch["hidden"] * counted["squares"][k]
                        )
                    w = widest_minibatch(col, mini_batch_size=mini_batch_size)
                    if w["rows"] * w["width"] > widest["rows"] * widest["width"]:
                        widest = w
            slowest = {k: max(slowest[k], device[k]) for k in kinds}
        flops = {k: flops[k] + slowest[k] for k in kinds}
    per_step = {k: {g: v / steps for g, v in tokens[k].items()} for k in kinds}
    return {
        "tokens": per_step,
        "encoder_forward_flops_per_device": {k: v / steps for k, v in flops.items()},
        "widest_minibatch": widest,
        "steps_simulated": steps,
        "rows_sampled": n,
    }


def time_forecast(
    *,
    encoder_forward_flops: float,
    score_forward_flops: float,
    steps: int,
    devices: int,
    peak_tflops: float,
    mfu: float,
) -> dict[str, float]:
    """Wall time and GPU-hours of ``steps`` steps from FLOPs: FLOPs / (the GPU's peak x MFU).

    Per device and step, GradCache executes 4 encoder forwards' worth (the no-grad pass, the
    forward again with gradients, a backward of 2) and 3 of the MaxSim (forward, backward).

    Examples
    --------
    >>> t = time_forecast(encoder_forward_flops=1e14, score_forward_flops=1e14, steps=100, devices=8,
    ...                   peak_tflops=1000.0, mfu=0.5)
    >>> t["executed_flops_per_step"], t["step_seconds"], t["gpu_hours"]
    (700000000000000.0, 1.4, 0.3111111111111111)
    """
    executed = 4.0 * encoder_forward_flops + 3.0 * score_forward_flops
    step = executed / (peak_tflops * 1e12 * mfu)
    wall = steps * step
    return {
        "executed_flops_per_step": executed,
        "step_seconds": step,
        "wall_hours": wall / 3600,
        "gpu_hours": wall * devices / 3600,
    }


def _term(value: float, *, dtype: str, grows: bool) -> dict[str, Any]:
    """One named memory term: whole bytes, their dtype, and whether the phase allocates them."""
    return {"bytes": int(value), "dtype": dtype, "grows": grows}


def _vector_bytes(*, arch: dict[str, int], shape: dict[str, int]) -> dict[str, int]:
    """Bytes of this device's token vectors at the loss (fp32, autocast's outputs): queries, documents, trimmed."""
    d, vec = arch["dim"], 4
    p = shape["per_device"]
    return {
        "local_q": p * shape["query_width"] * d * vec,
        "local_docs": shape["columns"] * p * shape["document_width"] * d * vec,
        "trimmed": shape["processed_tokens"] * d * vec,
    }


def _loss_working_set(*, arch: dict[str, int], shape: dict[str, int], backend: str) -> int:
    """Bytes the MaxSim loss holds while scoring one chunk of queries against all gathered documents."""
    from .loss_scores import default_chunk_size, loss_working_set_bytes

    candidates = shape["columns"] * shape["gathered_rows"]
    dims = {
        "queries": shape["score_chunk"],
        "candidates": candidates,
        "query_tokens": shape["query_width"],
        "document_tokens": shape["document_width"],
    }
    chunk = default_chunk_size(**dims, bytes_per_value=4)
    return loss_working_set_bytes(
        backend, **dims, dim=arch["dim"], chunk_size=chunk, bytes_per_value=4, columns=shape["columns"]
    )


def _saved_activation_bytes(
    *, arch: dict[str, int], shape: dict[str, int], activation: dict[str, float], scale: float
) -> float:
    """Activations the widest GradCache mini-batch saves for backward, masks included."""
    rows, width = shape["chunk_rows"], shape["chunk_width"]
    return (
        activation["bytes_per_token_layer"] * scale * arch["layers"] * rows * width
        + activation["mask_bytes_per_row_token2"] * rows * width * width
    )


def _embed_terms(
    *, shape: dict[str, int], activation: dict[str, float], scale: float, a_dtype: str, trimmed: int
) -> dict[str, dict[str, Any]]:
    """GradCache step 1's own terms: the cached vectors and the no-grad forward's working set."""
    rows, width = shape["chunk_rows"], shape["chunk_width"]
    return {
        "cached_embeddings": _term(trimmed, dtype="fp32", grows=True),
        "no_grad_forward_working_set": _term(
            activation["inference_bytes_per_token"] * scale * rows * width
            + activation["inference_mask_bytes_per_row_token2"] * rows * width * width,
            dtype=a_dtype + ", masks bool",
            grows=True,
        ),
    }


def _encoder_terms(*, arch: dict[str, int], saved: float, a_dtype: str, trimmed: int) -> dict[str, dict[str, Any]]:
    """GradCache step 3's own terms: gradients, one mini-batch's activations, the cached gradients."""
    n = arch["parameters"]
    return {
        "parameter_gradients": _term(4 * n, dtype="fp32", grows=True),
        "gradcache_chunk_activations": _term(saved, dtype=a_dtype + ", masks bool", grows=True),
        # each mini-batch's backward ends with a new gradient of the token embeddings (the largest
        # parameter) that is added to .grad; by then the activations are freed: only its excess counts
        "gradient_accumulation_temporary": _term(
            max(0.0, 4 * arch["largest_parameter"] - saved), dtype="fp32", grows=True
        ),
        "cached_embedding_gradients": _term(trimmed, dtype="fp32", grows=True),
    }


def _loss_terms(
    *, arch: dict[str, int], shape: dict[str, int], backend: str, world_size: int, vectors: dict[str, int]
) -> dict[str, dict[str, Any]]:
    """GradCache step 2's own terms: the local vectors' copies, gathered documents, the loss's working set."""
    gathering = world_size > 1
    candidates = shape["columns"] * shape["gathered_rows"]
    # GradCache's cache (trimmed vectors, their gradients), the columns restored to the collated
    # width with their gradients, PyLate's concatenated copy, and (unless gathered) the stacked documents
    local = 2 * vectors["trimmed"] + 3 * vectors["local_q"] + (3 if gathering else 4) * vectors["local_docs"]
    gathered = 2 * candidates * shape["document_width"] * arch["dim"] * 4 if gathering else 0
    return {
        "cached_embeddings": _term(local, dtype="fp32", grows=True),
        # all_gather_with_gradients' concatenation and the stacked columns of every rank's documents
        "gathered_documents": _term(gathered, dtype="fp32", grows=True),
        "loss_working_set": _term(
            _loss_working_set(arch=arch, shape=shape, backend=backend), dtype=f"fp32 ({backend})", grows=True
        ),
    }


def _add_allowance(phases: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Add the ASSUMED CUDA context, NCCL buffers and allocator fragmentation to every phase, in place."""
    for terms in phases.values():
        allocated = sum(t["bytes"] for t in terms.values())
        terms["cuda_context_and_nccl"] = _term(
            CUDA_CONTEXT_BYTES + NCCL_BUFFER_BYTES, dtype="ASSUMED allowance", grows=False
        )
        terms["allocator_fragmentation"] = _term(
            FRAGMENTATION * allocated, dtype=f"ASSUMED {FRAGMENTATION:.0%} of allocated", grows=False
        )


def memory_terms(
    *,
    arch: dict[str, int],
    shape: dict[str, int],
    backend: str,
    activation: dict[str, float],
    activation_bytes: int,
    world_size: int,
    allowance: bool = True,
) -> dict[str, dict[str, Any]]:
    """Memory of one GPU (or the CPU measurement) during the three phases of a GradCache step, as named terms.

    ``embed``: GradCache's step 1 (every mini-batch embedded without gradients, the vectors
    cached); ``loss``: step 2 (scores of every chunk of queries against all gathered documents,
    each chunk's backward); ``encoder``: step 3 (each mini-batch embedded again with gradients
    and backpropagated). Each term is ``{"bytes", "dtype", "grows"}``; ``grows`` marks what is
    allocated during the phase (what a measurement from the phase's start sees above what was
    resident). The step's peak is the largest phase's sum (:func:`memory_peak`).

    ``shape``: ``per_device`` rows, ``chunk_rows``/``chunk_width`` (the widest GradCache
    mini-batch), ``score_chunk`` (queries scored at once), ``gathered_rows`` (rows whose
    documents every query is scored against: the micro-step's global batch when gathering),
    ``query_width``/``document_width`` (collated), ``processed_tokens`` (this device's trimmed
    tokens, all columns), ``columns`` (document columns). ``activation``: the calibrated
    coefficients at fp32 (:func:`calibrate_activations`): ``bytes_per_token_layer`` (saved for
    backward) and ``mask_bytes_per_row_token2`` (attention masks, L x L per row) of the forward
    with gradients, ``inference_bytes_per_token`` and ``inference_mask_bytes_per_row_token2``
    of the one without. ``activation_bytes``: 2 under bf16 autocast, 4 in fp32.

    Longer than ~50 lines because of this docstring and its example: the body is a few calls of
    the per-phase helpers (:func:`_embed_terms`, :func:`_loss_terms`, :func:`_encoder_terms`).

    Examples
    --------
    >>> arch = {"parameters": 1000, "largest_parameter": 500, "dim": 4, "layers": 2}
    >>> shape = {"per_device": 2, "chunk_rows": 2, "chunk_width": 8, "score_chunk": 2, "gathered_rows": 2,
    ...          "query_width": 4, "document_width": 8, "processed_tokens": 40, "columns": 2}
    >>> zero = dict.fromkeys(("bytes_per_token_layer", "mask_bytes_per_row_token2", "inference_bytes_per_token",
    ...                       "inference_mask_bytes_per_row_token2"), 0.0)
    >>> phases = memory_terms(arch=arch, shape=shape, backend="chunked", activation=zero, activation_bytes=4,
    ...                       world_size=1, allowance=False)
    >>> encoder = {k: v["bytes"] for k, v in phases["encoder"].items()}
    >>> encoder["gradient_accumulation_temporary"], encoder["cached_embedding_gradients"]  # no activations: in full
    (2000, 640)
    """
    vectors = _vector_bytes(arch=arch, shape=shape)
    a_dtype = "bf16 (autocast)" if activation_bytes == 2 else "fp32"
    scale = activation_bytes / 4  # the coefficients are measured at fp32; the masks are bool at any dtype
    saved = _saved_activation_bytes(arch=arch, shape=shape, activation=activation, scale=scale)
    n = arch["parameters"]
    resident = {
        "weights": _term(4 * n, dtype="fp32", grows=False),
        "adamw_states": _term(8 * n, dtype="fp32 (exp_avg, exp_avg_sq)", grows=False),
    }
    embed = _embed_terms(shape=shape, activation=activation, scale=scale, a_dtype=a_dtype, trimmed=vectors["trimmed"])
    encoder = _encoder_terms(arch=arch, saved=saved, a_dtype=a_dtype, trimmed=vectors["trimmed"])
    loss = _loss_terms(arch=arch, shape=shape, backend=backend, world_size=world_size, vectors=vectors)
    phases = {"embed": resident | embed, "loss": resident | loss, "encoder": resident | encoder}
    if allowance:
        _add_allowance(phases)
    return phases


def memory_peak(phases: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The step's peak: the phase whose terms sum highest, its terms, and the sum.

    Examples
    --------
    >>> t = lambda b: {"bytes": b, "dtype": "fp32", "grows": True}
    >>> memory_peak({"loss": {"a": t(3), "b": t(4)}, "encoder": {"a": t(3), "c": t(2)}})["peak_bytes"]
    7
    """
    sums = {name: sum(t["bytes"] for t in terms.values()) for name, terms in phases.items()}
    phase = max(sums, key=sums.get)
    return {"phase": phase, "peak_bytes": sums[phase], "phase_bytes": sums, "terms": phases[phase]}


def grown(terms: dict[str, dict[str, Any]]) -> int:
    """Bytes a phase allocates (what a measurement from the phase's start sees)."""
    return sum(t["bytes"] for t in terms.values() if t["grows"])


def _fit(features: list[list[float]], target: list[float]) -> list[float]:
    """Non-negative least squares by hand for two coefficients (a negative one is dropped and the other refitted).

    Examples
    --------
    >>> [round(c, 6) for c in _fit([[1, 1], [2, 4], [3, 9]], [3, 10, 21])]  # y = x + 2 x**2
    [1.0, 2.0]
    >>> _fit([[1, 1]], [-5.0])
    [0.0, 0.0]
    """
    import numpy as np

    x, y = np.array(features, dtype=float), np.array(target, dtype=float)
    coefficients = np.linalg.lstsq(x, y, rcond=None)[0] if len(y) >= 2 else np.array([0.0, 0.0])
    if len(y) < 2 or (coefficients < 0).any():  # one coefficient alone, the better of the two
        single = [max(0.0, float(x[:, j] @ y / (x[:, j] @ x[:, j]))) for j in range(2)]
        errors = [float(((x[:, j] * single[j] - y) ** 2).sum()) for j in range(2)]
        best = int(np.argmin(errors))
        coefficients = np.array([single[0] if best == 0 else 0.0, single[1] if best == 1 else 0.0])
    return [float(c) for c in coefficients]


_ACTIVATION_KEYS = (
    "bytes_per_token_layer",
    "mask_bytes_per_row_token2",
    "inference_bytes_per_token",
    "inference_mask_bytes_per_row_token2",
)


def _fit_inference(points: list[dict[str, Any]]) -> list[float]:
    """Fit the forward without gradients: bytes per token and mask bytes per row x width**2."""
    features = [
        [
            p["shape"]["chunk_rows"] * p["shape"]["chunk_width"],
            p["shape"]["chunk_rows"] * p["shape"]["chunk_width"] ** 2,
        ]
        for p in points
    ]
    return _fit(features, [p["measured"]["inference"] for p in points])


def _fit_saved(
    points: list[dict[str, Any]], *, arch: dict[str, int], common: dict[str, Any]
) -> tuple[list[float], int]:
    """Fit the activations saved for backward on the shapes where they set the encoder phase's peak; how many did."""
    zero = dict.fromkeys(_ACTIVATION_KEYS, 0.0)
    saved_x, saved_y = [], []
    for point in points:
        s = point["shape"]
        encoder = memory_terms(shape=s, activation=zero, **common)["encoder"]
        beyond = point["measured"]["encoder"] - grown(encoder) + encoder["gradient_accumulation_temporary"]["bytes"]
        # the activations set this phase's peak (by a margin: the temporary's own peak is this phase's otherwise)
        if beyond > 1.25 * encoder["gradient_accumulation_temporary"]["bytes"]:
            saved_x.append(
                [arch["layers"] * s["chunk_rows"] * s["chunk_width"], s["chunk_rows"] * s["chunk_width"] ** 2]
            )
            saved_y.append(beyond)
    return (_fit(saved_x, saved_y) if saved_x else [0.0, 0.0]), len(saved_y)


def _calibration_shape(point: dict[str, Any], *, fitted: dict[str, float], common: dict[str, Any]) -> dict[str, Any]:
    """One measured shape beside the fitted model's bytes per phase, and the relative errors."""
    phases = memory_terms(shape=point["shape"], activation=fitted, **common)
    model = {
        "inference": phases["embed"]["no_grad_forward_working_set"]["bytes"],
        "loss": max(grown(phases["embed"]), grown(phases["loss"])),
        "encoder": grown(phases["encoder"]),
    }
    measured = {k: point["measured"][k] for k in model}
    return {
        "rows": point["shape"]["per_device"],
        "query_tokens": point["shape"]["query_width"],
        "document_tokens": point["shape"]["document_width"],
        "measured_bytes": measured,
        "model_bytes": model,
        "relative_error": {k: (model[k] - measured[k]) / measured[k] for k in model},
    }


def calibrate_activations(points: list[dict[str, Any]], *, arch: dict[str, int], backend: str) -> dict[str, Any]:
    """Fit the activation terms to the measured phases of a few scaled shapes; the model's error per shape.

    Each point is a measured calibration step (:func:`measure_calibration`): its ``shape`` and
    the bytes allocated by the widest mini-batch's forward without gradients (``inference``),
    by the loss call (GradCache's steps 1-2: ``loss``) and by its backward (step 3:
    ``encoder``), at fp32 in one process. Fitted, each as ``c x rows x width + m x rows x
    width**2`` (per layer for the saved activations): the forward without gradients on
    ``inference``, and the activations saved for backward on the ``encoder`` bytes beyond their
    analytic terms, from the shapes where they exceed the gradient temporary. The loss call
    (the larger of the embed and loss phases) is not fitted. Errors are (model - measured) /
    measured, per shape and phase.
    """
    common = {"arch": arch, "backend": backend, "activation_bytes": 4, "world_size": 1, "allowance": False}
    inference = _fit_inference(points)
    saved, fitted_on_encoder = _fit_saved(points, arch=arch, common=common)
    fitted = dict(zip(_ACTIVATION_KEYS, (saved[0], saved[1], inference[0], inference[1]), strict=True))
    shapes = [_calibration_shape(point, fitted=fitted, common=common) for point in points]
    worst = max(abs(e) for s in shapes for e in s["relative_error"].values())
    return {
        "activation": fitted,
        "shapes": shapes,
        "max_abs_relative_error": worst,
        "fitted_on_encoder": fitted_on_encoder,
        "how": f"{len(points)} shapes measured in one process at fp32 ({points[0]['kind']}); fitted: the forward "
        "without gradients, and the activations saved for backward (where they set the peak); the loss "
        "call not fitted",
    }


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
        # reserved, not allocated: what the caching allocator holds, fragmentation included
        peak, capacity = torch.cuda.max_memory_reserved(), props.total_memory
        kind, name = (
            f"cuda max_memory_reserved (allocated {torch.cuda.max_memory_allocated() / GIB:.2f} GiB)",
            props.name,
        )
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
        capacity = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        kind, name = "process peak RSS", f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return {
        "device": name,
        "kind": kind,
        "peak_bytes": peak,
        "capacity_bytes": capacity,
        "headroom_bytes": capacity - peak,
    }


def architecture(model: Any) -> dict[str, int]:
    """The sizes the FLOP count needs, read from a loaded PyLate ColBERT."""
    backbone = model[0].auto_model
    embeddings = backbone.get_input_embeddings().weight.numel()
    total = sum(p.numel() for p in model.parameters())
    config = backbone.config
    return {
        "parameters": total,
        "matmul_parameters": total - embeddings,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "dim": int(model[-1].out_features),
        "largest_parameter": max(p.numel() for p in model.parameters()),
    }


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
def replay_false_negatives(
    trainer: Any, dataset: Any, *, per_device: int, world: int, batches: int, seed: int
) -> dict[str, Any]:
    """In-batch false negatives of the first ``batches`` contrastive batches the trainer's sampler would draw.

    The batch sampler is the trainer's own (``train.batch_sampler``) at ``per_device``;
    accelerate gives per-device batch ``k`` to rank ``k % world``, and CachedContrastive
    gathers the ranks' documents, so ``world`` consecutive per-device batches are one
    contrastive batch. Rows are compared by text (:func:`workflow_scripts.negatives.false_negatives`).
    """
    import torch

    from .negatives import false_negatives

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
            _sync()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()
            self.seconds.append(time.perf_counter() - self.started)
            logger.info("preflight: step %d took %.1f s", state.global_step, self.seconds[-1])

    return StepTimer()


def _measured_training(
    *, model: Any, dataset: Any, scratch: Path, settings: TrainSettings, stage: str, world_size: int, per_device: int
) -> tuple[Training, Any]:
    """The training stage's own trainer (:func:`workflow_scripts.trainer.make_trainer`) with a step timer.

    The same settings as the stage's, capped at ``settings.max_steps``; nothing is saved.
    """
    from .trainer import make_trainer

    training = make_trainer(
        model=model,
        dataset=dataset,
        settings=settings,
        output_dir=scratch / "trainer",
        device=_device(),
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
    rows (:func:`row_token_lengths`) and the memory of one GradCache step at three scaled shapes
    (:func:`measure_calibration`).

    Runs in a job shaped like the training job (``launch.sh``: one process per GPU) with the
    training stage's settings and trainer; the per-device batch is ``per_device_batch_size`` or
    the real one. The first step carries the warm-up; with more steps it is left out of the
    rate. The ``forecast_*`` shape is the one the batch sampler is replayed at. Writes
    ``out_json`` (rank 0). The command line (``preflight train``) takes the settings as flags.
    """
    from .model import load_colbert
    from .train import load_triples, shard_files, world_info
    from .trainer import per_device_batch_size as real_per_device

    _set_threads(threads)
    world, accumulation = world_info(), settings.gradient_accumulation_steps
    forecast_devices = forecast_nodes * forecast_gpus_per_node
    per_device = per_device_batch_size or real_per_device(settings.global_batch_size, world["world_size"], accumulation)
    forecast_per_device = real_per_device(forecast_global_batch_size, forecast_devices, accumulation)
    files = shard_files(shards)
    needed = max(
        per_device * world["world_size"] * accumulation * train_steps,
        forecast_global_batch_size * false_negative_batches,
    )
    model = load_colbert(
        init_model,
        query_length=settings.query_length,
        document_length=settings.document_length,
        trust_remote_code=trust_remote_code,
        device=_device(),
    )
    settings = measured_settings(settings, steps=train_steps, device=_device())
    scratch = Path(tempfile.mkdtemp(dir=Path(out_json).parent, prefix=f".{Path(out_json).name}.tmp-"))
    try:
        dataset = load_triples(_shards_for(files, needed), scratch / "datasets-cache")
        training, timer = _measured_training(
            model=model,
            dataset=dataset,
            scratch=scratch,
            settings=settings,
            stage=stage,
            world_size=world["world_size"],
            per_device=per_device,
        )
        replay = None
        if world["rank"] == 0:  # the sampler replay needs no model and no other rank
            replay = replay_false_negatives(
                training.trainer,
                dataset,
                per_device=forecast_per_device,
                world=forecast_devices,
                batches=false_negative_batches,
                seed=settings.seed,
            )
        wall = _timed_train(training=training, stage=stage, rank=world["rank"])
        memory = _max_over_ranks(device_memory())
        if world["rank"] == 0:
            extra = _rank0_extras(model=model, dataset=dataset, settings=settings)
    finally:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    if world["rank"] != 0:
        return {}
    result = _training_result(
        model=model,
        trainer=training.trainer,
        seconds=timer.seconds,
        world_size=world["world_size"],
        per_device=per_device,
        settings=settings,
        memory=memory,
    )
    result |= {
        "stage": stage,
        "init_model": init_model,
        "real_per_device_batch_size": forecast_per_device,
        "train_wall_s": wall,
        "rows_loaded": len(dataset),
        "stage_rows": _stage_rows(files),
        **_loss_facts(training=training, settings=settings, replay=replay),
        **extra,
    }
    write_json(out_json, result)
    logger.info(
        "preflight %s: %.1f s/step at per-device %d, %.2f samples/s, peak %.2f GiB",
        stage,
        result["step_seconds"],
        per_device,
        result["samples_per_s"],
        memory["peak_bytes"] / GIB,
    )
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

    _reset_peak()
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


# --------------------------------------------------------------------------- calibration (issue #21)
# (rows, query_length divisor, document_length divisor) of the calibration steps: three shapes
# scaled from the real lengths, the last at them (q256/d2048: 1 row; 2 rows at a half and a
# quarter/eighth), so the L x L terms are seen at the real width.
CALIBRATION_SHAPES = ((2, 4, 8), (2, 2, 2), (1, 1, 1))
LENGTH_SAMPLE_ROWS = 4096  # rows whose token lengths the forecast's steps are drawn from


def peak_growth(function: Any) -> tuple[Any, int, str]:
    """Run ``function()``; the bytes of tensors it had allocated at its peak, above those live at its start.

    CUDA: the caching allocator's ``max_memory_allocated`` minus ``memory_allocated`` before.
    CPU: the torch profiler's allocation events (every tensor allocation and free, in order),
    summed to the highest point: the CPU's analogue of ``max_memory_allocated``, not the
    process's RSS (which also holds the libraries and whatever malloc kept).
    """
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = function()
        torch.cuda.synchronize()
        return out, torch.cuda.max_memory_allocated() - before, "cuda max_memory_allocated"
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = function()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return out, peak, "cpu tensor allocations (torch profiler)"


def measure_calibration(
    model: Any, *, query_length: int, document_length: int, maxsim_backend: str, temperature: float
) -> list[dict[str, Any]]:
    """One GradCache step at each of :data:`CALIBRATION_SHAPES`: the bytes each phase allocates.

    Rows are texts long enough to be truncated to exactly the shape's lengths (memory does not
    depend on the words), one mini-batch per column, no gathering; the loss is the stage's own
    (:func:`workflow_scripts.trainer.build_loss`). ``loss`` is GradCache's embedding and scoring
    (the loss call), ``encoder`` its backward (every mini-batch embedded again with gradients),
    ``inference`` the documents' forward without gradients alone.
    """
    from .trainer import build_loss

    saved = model.query_length, model.document_length
    points = []
    try:
        for rows, q_div, d_div in CALIBRATION_SHAPES:
            model.query_length, model.document_length = max(4, query_length // q_div), max(4, document_length // d_div)
            text = " ".join(["the"] * 2 * model.document_length)  # truncated to the length exactly
            features = [model.tokenize([text] * rows, is_query=True, pad=True)]
            features += [model.tokenize([text] * rows, is_query=False, pad=True) for _ in range(2)]
            loss = build_loss(
                model,
                mini_batch_size=rows,
                score_mini_batch_size=None,
                gather_across_devices=False,
                temperature=temperature,
                maxsim_backend=maxsim_backend,
                world_size=1,
            )
            model.zero_grad(set_to_none=True)
            _, inference_bytes, _ = peak_growth(partial(_no_grad_forward, model, features[1]))
            value, loss_bytes, kind = peak_growth(partial(loss, features, None))
            _, encoder_bytes, _ = peak_growth(value.backward)
            model.zero_grad(set_to_none=True)
            lengths = [int(f["attention_mask"].sum(dim=1).max()) for f in features]
            shape = {
                "per_device": rows,
                "chunk_rows": rows,
                "chunk_width": max(lengths),
                "score_chunk": rows,
                "gathered_rows": rows,
                "query_width": int(features[0]["attention_mask"].shape[1]),
                "document_width": int(features[1]["attention_mask"].shape[1]),
                "processed_tokens": rows * sum(lengths),
                "columns": 2,
            }
            measured = {"inference": inference_bytes, "loss": loss_bytes, "encoder": encoder_bytes}
            points.append(
                {
                    "shape": shape,
                    "measured": measured,
                    "kind": kind,
                    "maxsim_backend": getattr(loss, "maxsim_backend", maxsim_backend),
                }
            )
            logger.info(
                "preflight calibration: %d rows at q%d/d%d: loss %.0f MiB, encoder %.0f MiB",
                rows,
                shape["query_width"],
                shape["document_width"],
                loss_bytes / 2**20,
                encoder_bytes / 2**20,
            )
    finally:
        model.query_length, model.document_length = saved
    return points


def _no_grad_forward(model: Any, features: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        model(dict(features))


def row_token_lengths(model: Any, dataset: Any, *, rows: int) -> dict[str, list[int]]:
    """Token lengths (specials included, truncated at the model's lengths) of the first ``rows`` rows, per column."""
    sample = dataset.select(range(min(rows, len(dataset))))
    return {
        column: _token_counts(model, sample[column], is_query=column == "query")
        for column in ("query", "positive", "negative")
    }


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


def _measure_split(
    model: Any, *, root: Path, split: str, settings: dict[str, Any], device: str, dtype: Any
) -> dict[str, Any]:
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
        queries = random.Random(f"{settings['seed']}-{split}-q").sample(
            queries, min(len(queries), settings["queries_per_split"])
        )
    docs = _sample_split(
        root, split, documents=settings["documents_per_split"], lengths=settings["length_sample"], seed=settings["seed"]
    )
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
        "documents": docs["count"],
        "queries": len(examples),
        "sampled_documents": len(docs["encode"]),
        "sampled_queries": len(queries),
        "query_length": model.query_length,
        "document_length": model.document_length,
        "query_seconds": q_s / max(len(queries), 1),
        "document_encode_seconds": d_s,
        "document_tokens_per_s": padded / max(d_s, 1e-9),
        "documents_per_s": len(d_vecs) / max(d_s, 1e-9),
        "sample_tokens": sum(d_tokens),
        "sample_padded_tokens": padded,
        "score_seconds": score_s,
        "score_pairs_per_s": pairs / max(score_s, 1e-9),
        "mean_query_tokens": q_tokens / max(len(q_vecs), 1),
        "mean_document_tokens": statistics.fmean(lengths),
        "length_sample": len(lengths),
        "max_vectors_in_sample": max((len(v) for v in d_vecs), default=0),
        "memory": device_memory(),
        "longest_document": docs["longest"],
    }


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
    return {
        "document_tokens": tokens,
        "kept_tokens": kept,
        "vectors": vectors,
        "document_length": document_length,
        "max_seq_length": model[0].max_seq_length,
        "passed": ok,
    }


def _evaluation_model(
    *, model_path: str, query_length: int, document_length: int, dtype: str, trust_remote_code: bool
) -> tuple[Any, str, Any]:
    """The model loaded as the evaluation loads it, on this machine's device and dtype; the device and dtype."""
    import torch

    from .model import load_colbert

    device = _device()
    torch_dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if dtype == "auto" else getattr(torch, dtype))
    model = load_colbert(
        model_path,
        query_length=query_length,
        document_length=document_length,
        trust_remote_code=trust_remote_code,
        device=device,
    )
    if device == "cuda":
        model.to(torch_dtype)
    return model, device, torch_dtype


def _measure_splits(
    model: Any, *, root: Path, splits: list[str], settings: dict[str, Any], device: str, dtype: Any
) -> dict[str, dict[str, Any]]:
    """Each split's measurement (:func:`_measure_split`), logged as it completes."""
    per_split = {}
    for split in splits:
        per_split[split] = _measure_split(model, root=root, split=split, settings=settings, device=device, dtype=dtype)
        logger.info("preflight evaluate %s: %.0f document tokens/s", split, per_split[split]["document_tokens_per_s"])
    return per_split


def _longest_document_check(
    model: Any, *, per_split: dict[str, dict[str, Any]], overrides: dict[str, Any], document_length: int
) -> dict[str, Any]:
    """Check the longest sampled document of all splits at its split's length; each split keeps only its chars."""
    longest_split = max(per_split, key=lambda s: len(per_split[s]["longest_document"]))
    length = overrides.get(longest_split, {}).get("document_length", document_length)
    check = check_long_document(model, per_split[longest_split]["longest_document"], document_length=length)
    for measured in per_split.values():
        measured["longest_document_chars"] = len(measured.pop("longest_document"))
    return check | {"split": longest_split}


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

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`.cli`): one
    option per parameter; the work is in :func:`_evaluation_model`, :func:`_measure_splits` and
    :func:`_longest_document_check`.
    """
    from .protocols import CARD_TEMPLATE
    from .sources.manifest import source_root

    _set_threads(threads)
    root = source_root(bright_manifest)
    model, device, torch_dtype = _evaluation_model(
        model_path=model_path,
        query_length=query_length,
        document_length=document_length,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
    )
    settings = {
        "overrides": overrides,
        "query_length": query_length,
        "document_length": document_length,
        "query_template": query_template or CARD_TEMPLATE,
        "queries_per_split": queries_per_split,
        "seed": seed,
        "documents_per_split": documents_per_split,
        "length_sample": length_sample,
        "encode_batch_size": encode_batch_size,
    }
    per_split = _measure_splits(model, root=root, splits=splits, settings=settings, device=device, dtype=torch_dtype)
    check = _longest_document_check(model, per_split=per_split, overrides=overrides, document_length=document_length)
    result = {
        "model_path": model_path,
        "device": device,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "splits": per_split,
        "long_document_check": check,
        "arch": architecture(model),
    }
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
        bucket = {
            name: rows / shuffle_buckets * mean_bytes
            for name, rows in (("data_at_hand", stats["rows"]), ("published", PUBLISHED_TRIPLES[stage]))
        }
        projected = {}
        for name, rows in (("data_at_hand", stats["rows"]), ("published", PUBLISHED_TRIPLES[stage])):
            rss = (
                None
                if bench["peak_rss_mb"] is None
                else bench["peak_rss_mb"] + (bucket[name] - bucket["data_at_hand"]) / 2**20
            )
            projected[name] = {
                "rows": rows,
                "wall_hours": rate_times_count(seconds=bench["seconds"], done=stats["rows"], count=rows) / 3600,
                "peak_rss_mb": rss,
                "bucket_mb": bucket[name] / 2**20,
                "how": "measured triples/s x triples (job wall time, fixed start-up included); peak RSS: "
                "measured + one shuffle bucket more (estimate: the sort holds one bucket)",
            }
        out[stage] = {
            "rows": stats["rows"],
            "seconds": bench["seconds"],
            "triples_per_s": rate,
            "peak_rss_mb": bench["peak_rss_mb"],
            "mean_row_bytes": mean_bytes,
            "projected": projected,
        }
    return out


SIMULATED_STEPS = 8  # optimizer steps drawn from the data's lengths for the token and FLOP counts


def forecast_memory(
    measured: dict[str, Any], shape: dict[str, Any], *, backend: str, calibration: dict[str, Any]
) -> dict[str, Any]:
    """Memory of one GPU at the forecast's shape: named terms, the peak phase, fits or the key to change.

    The widest GradCache mini-batch is taken at its worst, ``min(mini_batch_size, per-device)``
    rows at ``document_length`` (one document at the cap puts the longest rows in one full
    mini-batch). Activations at bf16 under autocast (the calibration is at fp32, halved);
    ``if_activations_fp32_gib`` says what it would be if autocast kept them all in fp32.
    """
    lq, ld = measured["query_length"], measured["document_length"]
    per_device, devices = shape["per_device"], shape["devices"]
    memory_shape = {
        "per_device": per_device,
        "chunk_rows": min(shape["mini_batch_size"], per_device),
        "chunk_width": max(lq, ld),
        "score_chunk": min(shape["score_chunk"], per_device),
        "gathered_rows": shape["global_batch"] // shape["accumulation"] if devices > 1 else per_device,
        "query_width": lq,
        "document_width": ld,
        "processed_tokens": shape["processed_tokens"],
        "columns": 2,
    }
    kwargs = {
        "arch": measured["arch"],
        "shape": memory_shape,
        "backend": backend,
        "activation": calibration["activation"],
        "world_size": devices,
    }
    peak = memory_peak(memory_terms(activation_bytes=2 if shape["bf16"] else 4, **kwargs))
    fp32 = memory_peak(memory_terms(activation_bytes=4, **kwargs))
    capacity = shape["device_memory_bytes"]
    fits = peak["peak_bytes"] <= capacity
    growing = {k: t["bytes"] for k, t in peak["terms"].items() if k in TERM_KEYS}
    largest = max(growing, key=growing.get) if growing else None
    return {
        "peak_gib": peak["peak_bytes"] / GIB,
        "capacity_gib": capacity / GIB,
        "headroom_gib": (capacity - peak["peak_bytes"]) / GIB,
        "fits": fits,
        "phase": peak["phase"],
        "phase_gib": {k: v / GIB for k, v in peak["phase_bytes"].items()},
        "terms": {k: {"gib": t["bytes"] / GIB, "dtype": t["dtype"]} for k, t in peak["terms"].items()},
        "shape": memory_shape,
        "maxsim_backend": backend,
        "if_activations_fp32_gib": fp32["peak_bytes"] / GIB,
        "largest_term": largest,
        "change": None if fits else TERM_KEYS[largest],
        "calibration": calibration,
        "how": f"estimate: sum of named terms of the {peak['phase']} phase (each at its dtype), activations "
        f"calibrated on {len(calibration['shapes'])} measured shapes (worst error "
        f"{calibration['max_abs_relative_error']:.0%}), plus an ASSUMED allowance for CUDA context, NCCL and "
        "fragmentation",
    }


def _forecast_backend(measured: dict[str, Any], configured: str) -> str:
    """The MaxSim backend the cluster run uses: the measured one on a GPU; from a CPU, ``auto`` is ``chunked``."""
    if peak_tflops(measured["device"]) is not None:
        return measured["maxsim_backend"]
    return "chunked" if configured == "auto" else configured


def _simulate_stage(measured: dict[str, Any], *, shape: dict[str, Any]) -> dict[str, Any]:
    """GradCache's processed tokens and FLOPs at the forecast's shape, from the data's own lengths."""
    ld = measured["document_length"]
    return simulate_steps(
        measured["token_lengths"],
        per_device=shape["per_device"],
        devices=shape["devices"],
        accumulation=shape["accumulation"],
        mini_batch_size=shape["mini_batch_size"],
        widths={"query": measured["query_length"], "positive": ld, "negative": ld},
        arch=measured["arch"],
        steps=SIMULATED_STEPS,
        seed=0,
    )


def _score_forward_flops(measured: dict[str, Any], *, shape: dict[str, Any]) -> float:
    """MaxSim score FLOPs per device per optimizer step at the forecast's shape."""
    devices, accumulation, per_device = shape["devices"], shape["accumulation"], shape["per_device"]
    candidates = 2 * shape["global_batch"] // accumulation if devices > 1 else 2 * per_device
    flops = train_step_flops(
        per_device=per_device,
        candidates=candidates,
        query_length=measured["query_length"],
        document_length=measured["document_length"],
        arch=measured["arch"],
    )
    return accumulation * flops["score_forward"]


def _time_variants(
    *, sim: dict[str, Any], score: float, rows: dict[str, int], steps: dict[str, int], shape: dict[str, Any]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Time from FLOPs per token-count variant (padded, collated, processed) and per row count."""
    return {
        variant: {
            k: {"rows": rows[k], "steps": steps[k]}
            | time_forecast(
                encoder_forward_flops=flops,
                score_forward_flops=score,
                steps=steps[k],
                devices=shape["devices"],
                peak_tflops=PEAK_TFLOPS[CARD["gpu"]],
                mfu=shape["assumed_mfu"],
            )
            for k in rows
        }
        for variant, flops in sim["encoder_forward_flops_per_device"].items()
    }


def _projected_training(
    *,
    measured: dict[str, Any],
    shape: dict[str, Any],
    rows: dict[str, int],
    sim: dict[str, Any],
    time: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """Projected training per row count: measured rates on a known GPU; from a CPU, processed-token FLOPs."""
    if peak_tflops(measured["device"]) is not None:
        kwargs = {
            "devices": shape["devices"],
            "per_device": shape["per_device"],
            "global_batch": shape["global_batch"],
            "epochs": shape["epochs"],
            "accumulation": shape["accumulation"],
        }
        return {k: project_training(measured=measured, rows=v, **kwargs) for k, v in rows.items()}
    how = (
        f"FLOPs of the tokens processed after trimming (lengths of {sim['rows_sampled']} rows of the data) / "
        f"({PEAK_TFLOPS[CARD['gpu']]:g} TFLOP/s bf16 of an {CARD['gpu']} x ASSUMED MFU {shape['assumed_mfu']:g})"
    )
    return {k: v | {"how": how} for k, v in time["processed"].items()}


def _stage_memory_at_forecast(
    measured: dict[str, Any], *, shape: dict[str, Any], sim: dict[str, Any], backend: str
) -> dict[str, Any]:
    """Memory at the forecast's shape; a cluster GPU run at the same shape adds its measured peak as evidence."""
    arch = measured["arch"]
    calibration = calibrate_activations(
        measured["calibration"], arch=arch, backend=measured["calibration"][0]["maxsim_backend"]
    )
    processed_local = sum(sim["tokens"]["processed"].values()) / (shape["devices"] * shape["accumulation"])
    memory_shape = shape | {"processed_tokens": int(processed_local)}
    memory = measured["memory"]
    at_forecast = forecast_memory(measured, memory_shape, backend=backend, calibration=calibration)
    same = measured["per_device_batch_size"] == shape["per_device"] and measured["world_size"] == shape["devices"]
    if same and "cuda" in memory["kind"]:  # the real shape ran on the cluster's GPUs: its peak is evidence too
        at_forecast["measured_peak_gib"] = memory["peak_bytes"] / GIB
        at_forecast["fits"] = at_forecast["fits"] and memory["peak_bytes"] <= shape["device_memory_bytes"]
        at_forecast["how"] = f"measured {memory['kind']} and " + at_forecast["how"]
        if not at_forecast["fits"] and at_forecast["change"] is None:
            at_forecast["change"] = TERM_KEYS.get(at_forecast["largest_term"], "train.mini_batch_size")
    return at_forecast


_MEASURED_TRAINING_KEYS = (
    "device",
    "world_size",
    "per_device_batch_size",
    "gradcache_chunk",
    "step_seconds",
    "step_times_s",
    "samples_per_s",
    "samples_per_s_per_device",
    "tokens_per_s",
    "tflops_per_s_per_device",
    "mfu",
    "candidates",
)


def _measured_training_summary(measured: dict[str, Any]) -> dict[str, Any]:
    """The measured run's rates and memory, as the forecast reports them."""
    memory = measured["memory"]
    return {k: measured[k] for k in _MEASURED_TRAINING_KEYS} | {
        "throughput": measured["samples_per_s"],
        "unit": "samples/s",
        "peak_memory_gib": memory["peak_bytes"] / GIB,
        "memory_kind": memory["kind"],
        "capacity_gib": memory["capacity_bytes"] / GIB,
        "headroom_gib": memory["headroom_bytes"] / GIB,
    }


def _train_forecast(measured: dict[str, Any], stats_rows: int, shape: dict[str, Any]) -> dict[str, Any]:
    """Tokens, time and memory of one stage at the forecast's shape (data at hand and published sizes).

    Time on a known GPU: the measured step time or FLOP rate (:func:`project_training`). From a
    CPU: the FLOPs of the tokens GradCache processes after trimming, drawn from the data's own
    lengths (:func:`simulate_steps`), / (the forecast GPU's bf16 peak x the ASSUMED MFU); padded
    and collated counts beside it.
    """
    sim = _simulate_stage(measured, shape=shape)
    score = _score_forward_flops(measured, shape=shape)
    rows = {"data_at_hand": stats_rows, "published": PUBLISHED_TRIPLES[measured["stage"]]}
    steps = {k: int(v * shape["epochs"]) // shape["global_batch"] for k, v in rows.items()}
    time = _time_variants(sim=sim, score=score, rows=rows, steps=steps, shape=shape)
    backend = _forecast_backend(measured, shape["maxsim_backend"])
    return {
        "measured": _measured_training_summary(measured),
        "maxsim_backend": backend,
        "tokens": sim["tokens"]
        | {
            "per": "optimizer step, all devices",
            "steps_simulated": sim["steps_simulated"],
            "rows_sampled": sim["rows_sampled"],
        },
        "time_from_flops": {
            "gpu": CARD["gpu"],
            "peak_tflops": PEAK_TFLOPS[CARD["gpu"]],
            "assumed_mfu": shape["assumed_mfu"],
            "score_forward_flops_per_device": score,
            "variants": time,
        },
        "projected": _projected_training(measured=measured, shape=shape, rows=rows, sim=sim, time=time),
        "memory_at_forecast": _stage_memory_at_forecast(measured, shape=shape, sim=sim, backend=backend),
        "in_batch_false_negatives": measured["in_batch_false_negatives"],
    }


def _evaluation_forecast(measured: dict[str, Any], evaluated_models: int, mfu: float) -> dict[str, Any]:
    """Per split: time at the measured rates on a GPU; from a CPU, from FLOPs at the ASSUMED MFU
    (:func:`project_split_from_flops`), with the CPU's own rates kept beside it (``at_cpu_rates``)."""
    from .rehearsal import BRIGHT_STATS

    on_gpu = peak_tflops(measured["device"]) is not None
    out = {}
    for split, m in measured["splits"].items():
        published = BRIGHT_STATS[split]
        counts = {"data_at_hand": (m["documents"], m["queries"]), "published": (published.documents, published.queries)}
        at_rates = {k: project_split(measured=m, documents=d, queries=q) for k, (d, q) in counts.items()}
        out[split] = {
            "measured": {
                "throughput": m["document_tokens_per_s"],
                "unit": "document tokens/s",
                "documents_per_s": m["documents_per_s"],
                "mean_document_tokens": m["mean_document_tokens"],
                "score_pairs_per_s": m["score_pairs_per_s"],
                "query_seconds": m["query_seconds"],
                "sampled_documents": m["sampled_documents"],
                "peak_memory_gib": m["memory"]["peak_bytes"] / GIB,
            },
            "projected": at_rates
            if on_gpu
            else {
                k: project_split_from_flops(
                    measured=m, arch=measured["arch"], documents=d, queries=q, gpu=CARD["gpu"], mfu=mfu
                )
                for k, (d, q) in counts.items()
            },
        }
        if not on_gpu:
            out[split]["at_cpu_rates"] = at_rates
        for projection in out[split]["projected"].values():
            projection["wall_hours"] = projection["seconds"] / 3600
            projection["gpu_hours_all_models"] = projection["seconds"] * evaluated_models / 3600
    return out


def _verdict(result: dict[str, Any], budget: float) -> dict[str, Any]:
    """Fits / does not fit: memory per training stage, and total GPU-hours against the budget."""
    train = {s: result["stages"][s] for s in ("train_stage1", "train_stage2")}
    gpu_hours = {
        **{s: t["projected"]["published"]["gpu_hours"] for s, t in train.items()},
        "evaluate": sum(
            e["projected"]["published"]["gpu_hours_all_models"] for e in result["stages"]["evaluate"].values()
        ),
    }
    total = sum(gpu_hours.values())
    problems = []
    for stage, t in train.items():
        memory = t["memory_at_forecast"]
        if not memory["fits"]:
            kind = memory["how"].split(":")[0]  # "measured" or "estimate"
            problems.append(
                f"{stage}: memory {memory['peak_gib']:.1f} GiB > {memory['capacity_gib']:.0f} GiB per GPU "
                f"(over by {memory['peak_gib'] - memory['capacity_gib']:.1f} GiB, {kind}; largest term "
                f"{memory['largest_term']}: change {memory['change']})"
            )
    if total > budget:
        worst = max(gpu_hours, key=gpu_hours.get)
        problems.append(
            f"time: {total:,.1f} GPU-hours > budget {budget:g} (x{total / budget:,.1f}; most in {worst}: "
            f"{gpu_hours[worst]:,.1f})"
        )
    failed = [name for name, check in result["checks"].items() if not check["passed"]]
    problems += [f"check failed: {name}" for name in failed]
    low, high = CARD["hours"]
    gpus = CARD["nodes"] * CARD["gpus_per_node"]
    card = f"{low:g}-{high:g} h on {CARD['nodes']} x {CARD['gpus_per_node']} {CARD['gpu']} = {low * gpus:g}-{high * gpus:g} GPU-hours"
    return {
        "fits": not problems,
        "problems": problems,
        "gpu_hours": gpu_hours,
        "total_gpu_hours": total,
        "budget_gpu_hours": budget,
        "card": card,
    }


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
    }
    for path in widen:
        report = read_json(path)
        checks["widen on the real head"] = {
            "passed": all(report["checks"].values()),
            "evidence": f"last Dense {report['in_features']} -> {report['old_dim']} widened to {report['new_dim']}: "
            + ", ".join(report["checks"]),
        }
    for stage, m in train.items():
        checks[f"{stage}: training steps at q{m['query_length']}/d{m['document_length']}"] = {
            "passed": m["steps"] >= 1,
            "evidence": f"{m['steps']} step(s), mini_batch_size {m['mini_batch_size']} (GradCache chunk "
            f"{m['gradcache_chunk']} at per-device batch {m['per_device_batch_size']}), peak "
            f"{m['memory']['peak_bytes'] / GIB:.2f} GiB ({m['memory']['kind']}) of {m['memory']['capacity_bytes'] / GIB:.0f}",
        }
    return checks


def _forecast_shape(
    *,
    nodes: int,
    gpus_per_node: int,
    global_batch_size: int,
    gradient_accumulation_steps: int,
    mini_batch_size: int,
    epochs: float,
    bf16: bool | str,
    device_memory_gib: float,
    maxsim_backend: str,
    score_mini_batch_size: int | None,
    assumed_mfu: float,
) -> dict[str, Any]:
    """The cluster run's shape the forecast is for (devices, batch sizes, dtype, backend, memory)."""
    from .trainer import per_device_batch_size

    devices = nodes * gpus_per_node
    return {
        "devices": devices,
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "global_batch": global_batch_size,
        "per_device": per_device_batch_size(global_batch_size, devices, gradient_accumulation_steps),
        "mini_batch_size": mini_batch_size,
        "epochs": epochs,
        "bf16": bf16 in (True, "auto"),
        "accumulation": gradient_accumulation_steps,
        "maxsim_backend": maxsim_backend,
        "score_chunk": score_mini_batch_size or mini_batch_size,
        "assumed_mfu": assumed_mfu,
        "device_memory_bytes": device_memory_gib * GIB,
    }


def _forecast_stages(
    *,
    measured_train: dict[str, dict[str, Any]],
    evaluation: dict[str, Any],
    shard_stats: list[str],
    shard_benchmarks: list[str],
    shuffle_buckets: int,
    shape: dict[str, Any],
    evaluated_models: int,
) -> dict[str, Any]:
    """Every stage's forecast: building the shards, each training stage, the evaluation."""
    stage_rows = {read_json(p)["stage"]: read_json(p)["rows"] for p in shard_stats}
    stages: dict[str, Any] = {"build_shards": _data_forecast(shard_stats, shard_benchmarks, shuffle_buckets)}
    for stage, m in sorted(measured_train.items()):
        stages[f"train_{stage}"] = _train_forecast(m, stage_rows[stage], shape)
    stages["evaluate"] = _evaluation_forecast(evaluation, evaluated_models, shape["assumed_mfu"])
    return stages


def _write_forecast(result: dict[str, Any], *, out_json: str, out_md: str, out_html: str) -> None:
    """Write the forecast as JSON, markdown and HTML; print its verdict to the job's log."""
    write_json(out_json, result)
    text = render_markdown(result)
    with atomic_file(out_md) as handle:
        handle.write(text)
    with atomic_file(out_html) as handle:
        handle.write(render_html(result))
    print(text.split("\n## ", 1)[0])  # the verdict, in the job's log


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
    maxsim_backend: str = "auto",
    score_mini_batch_size: int | None = None,
    assumed_mfu: float = 0.3,
) -> dict[str, Any]:
    """The cost forecast: measurements, projections (data at hand and published sizes) and the verdict.

    ``evaluated_models`` is how many models the run evaluates on every split (the DAG's count);
    ``widen`` the widening verification(s) of the measured model (none when nothing widens);
    ``maxsim_backend``/``score_mini_batch_size`` the training's (``train.*``); ``assumed_mfu``
    the MFU a time forecast from a CPU assumes (``preflight.assumed_mfu``).

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`.cli`): one
    option per parameter; the work is in :func:`_forecast_shape`, :func:`_forecast_stages` and
    :func:`_write_forecast`.
    """
    shape = _forecast_shape(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        global_batch_size=global_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        mini_batch_size=mini_batch_size,
        epochs=epochs,
        bf16=bf16,
        device_memory_gib=device_memory_gib,
        maxsim_backend=maxsim_backend,
        score_mini_batch_size=score_mini_batch_size,
        assumed_mfu=assumed_mfu,
    )
    measured_train = {read_json(p)["stage"]: read_json(p) for p in train}
    evaluation = read_json(evaluate)
    stages = _forecast_stages(
        measured_train=measured_train,
        evaluation=evaluation,
        shard_stats=shard_stats,
        shard_benchmarks=shard_benchmarks,
        shuffle_buckets=shuffle_buckets,
        shape=shape,
        evaluated_models=evaluated_models,
    )
    result = {
        "forecast_for": {k: v for k, v in shape.items() if k != "device_memory_bytes"}
        | {"gpu_memory_gib": device_memory_gib, "evaluated_models": evaluated_models},
        "measured_on": {
            "train": sorted({m["device"] for m in measured_train.values()}),
            "evaluate": evaluation["device"],
        },
        "stages": stages,
        "checks": _checks(measured_train, evaluation, widen),
    }
    result["verdict"] = _verdict(result, gpu_hours_budget)
    _write_forecast(result, out_json=out_json, out_md=out_md, out_html=out_html)
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
        rows.append(
            [
                f"build_shards {stage}",
                f"{d['triples_per_s']:,.0f} triples/s",
                rss,
                f"{p['data_at_hand']['rows']:,} / {p['published']['rows']:,} triples",
                f"{_h(p['data_at_hand']['wall_hours'])} / {_h(p['published']['wall_hours'])}",
                "CPU",
            ]
        )
    for name in ("train_stage1", "train_stage2"):
        t = stages[name]
        m, p, mem = t["measured"], t["projected"], t["memory_at_forecast"]
        rows.append(
            [
                name,
                f"{m['samples_per_s']:.3g} samples/s ({m['tokens_per_s']:,.0f} tokens/s)",
                f"{m['peak_memory_gib']:.2f} GiB measured; {mem['peak_gib']:.1f} of {mem['capacity_gib']:.0f} GiB at forecast",
                f"{p['data_at_hand']['rows']:,} / {p['published']['rows']:,} triples",
                f"{_wall(p['data_at_hand'])} / {_wall(p['published'])}",
                f"{p['published']['gpu_hours']:,.1f}",
            ]
        )
    for split, e in stages["evaluate"].items():
        m, p = e["measured"], e["projected"]
        rows.append(
            [
                f"evaluate {split}",
                f"{m['throughput']:,.0f} doc tokens/s",
                f"{m['peak_memory_gib']:.2f} GiB",
                f"{p['data_at_hand']['documents']:,} / {p['published']['documents']:,} docs",
                f"{_h(p['data_at_hand']['wall_hours'])} / {_h(p['published']['wall_hours'])}",
                f"{p['published']['gpu_hours_all_models']:,.2f}",
            ]
        )
    return rows


HEADER = [
    "stage",
    "measured throughput",
    "peak memory",
    "count (at hand / published)",
    "projected wall (at hand / published; evaluation: one model)",
    "GPU-hours (published; evaluation: all models)",
]


TRAIN_STAGES = ("train_stage1", "train_stage2")


def training_lines(result: dict[str, Any]) -> list[str]:
    """Per training stage: memory at the forecast's shape (fits, margin), tokens per step, GPU-hours from FLOPs."""
    low, high = CARD["hours"]
    gpus = CARD["nodes"] * CARD["gpus_per_node"]
    lines = []
    for name in TRAIN_STAGES:
        t = result["stages"][name]
        m, tokens, time = t["memory_at_forecast"], t["tokens"], t["time_from_flops"]
        verdict = "FITS" if m["fits"] else f"DOES NOT FIT (change {m['change']})"
        lines.append(
            f"- {name}: memory {verdict} {m['capacity_gib']:.0f} GiB per GPU: {m['peak_gib']:.1f} GiB in the "
            f"{m['phase']} phase (margin {m['headroom_gib']:.1f} GiB; {m['if_activations_fp32_gib']:.1f} GiB if "
            f"every activation stayed fp32), MaxSim backend {t['maxsim_backend']}; model within "
            f"{m['calibration']['max_abs_relative_error']:.0%} of {len(m['calibration']['shapes'])} measured shapes"
        )
        docs = {k: tokens[k]["documents"] for k in ("real", "processed", "padded", "collated")}
        hours = {k: v["published"]["gpu_hours"] for k, v in time["variants"].items()}
        fewer = docs["padded"] / max(docs["processed"], 1)
        lines.append(
            f"- {name}: document tokens per step {docs['real']:,.0f} real, {docs['processed']:,.0f} processed "
            f"(trimmed), {docs['padded']:,.0f} padded to the batch's longest (x{fewer:.2f}), "
            f"{docs['collated']:,.0f} collated; GPU-hours from FLOPs at ASSUMED MFU {time['assumed_mfu']:g} of "
            f"{time['peak_tflops']:g} TFLOP/s: {hours['processed']:,.1f} trimmed, {hours['padded']:,.1f} padded, "
            f"{hours['collated']:,.1f} collated (the card: {low * gpus:g}-{high * gpus:g} for both stages)"
        )
    return lines


def memory_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Memory terms per GPU at the forecast's shape, one column per training stage (its peak phase)."""
    stages = {name: result["stages"][name]["memory_at_forecast"] for name in TRAIN_STAGES}
    names = list(dict.fromkeys(k for m in stages.values() for k in m["terms"]))
    header = ["term (peak phase)", *(f"{s} GiB ({m['phase']})" for s, m in stages.items()), "dtype"]
    rows = []
    for term in names:
        dtype = next(m["terms"][term]["dtype"] for m in stages.values() if term in m["terms"])
        rows.append(
            [term, *(f"{m['terms'][term]['gib']:.2f}" if term in m["terms"] else "-" for m in stages.values()), dtype]
        )
    rows.append(["sum = peak", *(f"{m['peak_gib']:.2f}" for m in stages.values()), ""])
    return header, rows


def calibration_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The memory model against this machine's measurements: per stage and shape, measured, model, error."""
    header = ["stage", "rows x q/d tokens", "phase", "measured MiB", "model MiB", "relative error"]
    rows = []
    for name in TRAIN_STAGES:
        for s in result["stages"][name]["memory_at_forecast"]["calibration"]["shapes"]:
            for phase in ("inference", "loss", "encoder"):
                rows.append(
                    [
                        name,
                        f"{s['rows']} x {s['query_tokens']}/{s['document_tokens']}",
                        phase,
                        f"{s['measured_bytes'][phase] / 2**20:,.1f}",
                        f"{s['model_bytes'][phase] / 2**20:,.1f}",
                        f"{s['relative_error'][phase]:+.1%}",
                    ]
                )
    return header, rows


def token_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Tokens per optimizer step and the GPU-hours they imply (published sizes), per stage and count."""
    header = ["stage", "count", "query tokens/step", "document tokens/step", "s/step", "GPU-hours (published)"]
    rows = []
    for name in TRAIN_STAGES:
        t = result["stages"][name]
        for kind in ("real", "processed", "padded", "collated"):
            time = t["time_from_flops"]["variants"].get(kind)
            rows.append(
                [
                    name,
                    kind,
                    f"{t['tokens'][kind]['queries']:,.0f}",
                    f"{t['tokens'][kind]['documents']:,.0f}",
                    f"{time['published']['step_seconds']:.2f}" if time and kind != "real" else "-",
                    f"{time['published']['gpu_hours']:,.1f}" if time and kind != "real" else "-",
                ]
            )
    return header, rows


TABLES = {
    "memory-table": ("Memory per GPU at the forecast's shape", memory_table),
    "calibration-table": ("Memory model against this machine's measurements", calibration_table),
    "token-table": ("Tokens per optimizer step and GPU-hours from FLOPs", token_table),
}


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(r)} |" for r in rows)]


def _html_table(table_id: str, header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table id='{table_id}'><tr>{head}</tr>{body}</table>"


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """The one-screen verdict."""
    v, f = result["verdict"], result["forecast_for"]
    head = "FITS" if v["fits"] else "DOES NOT FIT"
    lines = [
        f"**Preflight: {head}** the budget of {v['budget_gpu_hours']:g} GPU-hours on {f['nodes']} x "
        f"{f['gpus_per_node']} GPUs ({f['gpu_memory_gib']:g} GiB each), global batch {f['global_batch']} "
        f"(per device {f['per_device']})."
    ]
    lines += [f"- {p}" for p in v["problems"]]
    parts = ", ".join(f"{k} {h:,.1f}" for k, h in v["gpu_hours"].items())
    lines.append(
        f"- projected GPU-hours at the published sizes: {v['total_gpu_hours']:,.1f} ({parts}); the card: {v['card']}."
    )
    on = result["measured_on"]
    lines.append(
        f"- measured on: training {', '.join(on['train'])}; evaluation {on['evaluate']}. A projection is a "
        "measured rate x a count on a GPU; from a CPU, FLOPs / (the GPU's peak x the ASSUMED MFU "
        f"{f['assumed_mfu']:g}), the CPU's own rates beside it (see the table)."
    )
    lines += training_lines(result)
    for name, check in result["checks"].items():
        lines.append(f"- {'ok' if check['passed'] else 'FAILED'}: {name}: {check['evidence']}")
    for name in ("train_stage1", "train_stage2"):
        fn = result["stages"][name]["in_batch_false_negatives"]["sampler_replay_at_real_batch"] or {}
        if fn and not fn["batches"]:
            lines.append(
                f"- {name}: in-batch false negatives not counted: the data at hand holds less than one "
                f"batch of {fn['rows_per_batch']} rows"
            )
        elif fn:
            lines.append(
                f"- {name}: in-batch false negatives at {fn['rows_per_batch']} rows: "
                f"{fn['rows_with_false_negative_rate_mean']:.2%} of rows per batch (max "
                f"{fn['rows_with_false_negative_rate_max']:.2%}, {fn['batches']} batches replayed)"
            )
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """preflight.md: the verdict, then the forecast table."""
    table = [f"| {' | '.join(HEADER)} |", f"|{'---|' * len(HEADER)}"]
    table += [f"| {' | '.join(row)} |" for row in forecast_rows(result)]
    how = [f"{s}: {result['stages'][s]['projected']['published']['how']}" for s in ("train_stage1", "train_stage2")]
    notes = [
        "Projections: measured rate x count. Training (published sizes): " + "; ".join(how) + ". Evaluation: "
        "tokens/s x document tokens + s/query x queries + pairs/s x token pairs (one model; GPU-hours for all "
        "evaluated models). build_shards: triples/s of the whole job x triples (CPU, not GPU-hours)."
    ]
    sections = []
    for title, make in TABLES.values():
        sections += ["", f"## {title}", "", *_markdown_table(*make(result))]
    return "\n".join(
        ["# Preflight", "", *verdict_lines(result), "", "## Forecast", "", *table, "", *notes, *sections, ""]
    )


def render_html(result: dict[str, Any]) -> str:
    """The report page: the same verdict and table as preflight.md."""
    css = (
        "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{padding:3px 8px;border-bottom:1px solid "
        "#ddd;text-align:right}td:first-child,th:first-child{text-align:left}li{font:13px sans-serif}</style>"
    )
    verdict = "".join(f"<li>{html.escape(line.removeprefix('- '))}</li>" for line in verdict_lines(result))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in forecast_rows(result)
    )
    tables = "".join(
        f"<h3>{html.escape(title)}</h3>{_html_table(table_id, *make(result))}"
        for table_id, (title, make) in TABLES.items()
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Cost forecast</title>{css}</head><body>"
        f"<h3>Cost forecast</h3><ul id='verdict'>{verdict.replace('**', '')}</ul>"
        f"<table id='forecast-table'><tr>{head}</tr>{body}</table>{tables}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> None:
    commands = {"train": spread_records(measure_training), "evaluate": measure_evaluation, "forecast": forecast}
    run_commands(commands, argv)


if __name__ == "__main__":
    main()
