"""FLOPs, GPU peaks and rate x count projections: the preflight's arithmetic."""

from __future__ import annotations

from typing import Any

from ..errors import UserError

__all__ = [
    "BASE_DOCUMENT_VECTORS",
    "CARD",
    "GIB",
    "PEAK_FP32_TFLOPS",
    "PEAK_TFLOPS",
    "PUBLISHED_TRIPLES",
    "ROW_OVERHEAD_BYTES",
    "SCORE_TOKENS",
    "SPECIAL_TOKENS",
    "encoder_flops",
    "peak_tflops",
    "project_split",
    "project_split_from_flops",
    "project_training",
    "rate_times_count",
    "train_step_flops",
]

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


def rate_times_count(*, seconds: float, done: float, count: float) -> float:
    """Seconds that ``count`` units take at the measured rate ``done / seconds``.

    Parameters
    ----------
    seconds, done
        The measurement: ``done`` units took ``seconds``; ``done <= 0`` (nothing measured) raises UserError.
    count
        The units to project, in the unit of ``done`` (rows, steps, triples).

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

    Parameters
    ----------
    tokens
        The sequence's length, padding included (all of it is computed).
    matmul_parameters
        Weights used in matrix products: the model's parameters less the token embeddings
        (:func:`~workflow_scripts.preflight.devices.architecture`).
    layers, hidden
        The encoder's layer count and hidden size.

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

    Parameters
    ----------
    per_device
        Rows (query, positive, negative) one device encodes per step.
    candidates
        Documents each query is scored against (above).
    query_length, document_length
        The tokens every query and every document is padded to.
    arch
        ``matmul_parameters``, ``layers``, ``hidden`` and the output ``dim``
        (:func:`~workflow_scripts.preflight.devices.architecture`).

    Returns
    -------
    FLOPs per device: ``encoder_forward`` (one forward of every query and document), ``score_forward``
    (MaxSim of every query against the candidates), ``executed`` and ``model`` (above).

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

    ``measured`` is a ``train`` measurement (its ``step_seconds``, ``per_device_batch_size``
    and ``flops``). Same shape: measured step time x steps. Another shape: the
    measured FLOP rate x the FLOPs of the forecast's steps (:func:`train_step_flops`), with
    documents gathered across devices as the recipe does (``gather_across_devices``).

    Parameters
    ----------
    measured
        The ``train`` measurement (above); its ``query_length``, ``document_length`` and ``arch`` give the
        step's shape.
    rows
        Training triples of the stage.
    devices
        GPUs of the run; more than one gathers the documents across them.
    per_device, global_batch
        Rows per device per micro-batch, and rows per optimizer step over all devices.
    epochs
        Passes over the rows (a fraction allowed).
    accumulation
        Gradient-accumulation steps per optimizer step (each micro-batch is its own contrastive batch).

    Returns
    -------
    ``rows``, ``steps`` (optimizer steps; the last partial batch dropped), ``step_seconds``, ``wall_hours``,
    ``gpu_hours`` (wall x devices) and ``how`` (which of the two ways, in words).

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

    Documents: measured tokens/s (computed tokens, padding included: :func:`~workflow_scripts.preflight.measure_evaluate.padded_tokens`) x
    (documents x mean tokens), i.e. a whole split's length-sorted batches assumed to pad little;
    queries: measured seconds per query x queries; scoring: measured (query token x document
    token) pairs/s x the pairs.

    Parameters
    ----------
    measured
        One split's evaluation measurement: ``document_tokens_per_s``, ``mean_document_tokens``,
        ``query_seconds``, ``mean_query_tokens`` and ``score_pairs_per_s``.
    documents, queries
        The corpus size and query count projected to.

    Returns
    -------
    ``encode_seconds``, ``query_seconds``, ``score_seconds``, their sum ``seconds``, the two counts and
    ``how``.

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

    Parameters
    ----------
    measured
        One split's evaluation measurement; only ``mean_document_tokens`` and ``mean_query_tokens`` are read.
    arch
        ``matmul_parameters``, ``layers``, ``hidden`` and ``dim`` of the model.
    documents, queries
        The corpus size and query count projected to.
    gpu
        A key of :data:`PEAK_TFLOPS` and :data:`PEAK_FP32_TFLOPS` (``"H100"``).
    mfu
        The ASSUMED fraction of the peak reached (0-1).

    Returns
    -------
    As :func:`project_split`'s, plus ``encode_flops`` and ``score_flops``; ``query_seconds`` is 0 (the
    queries' encoding is in ``encode_seconds``).

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

    Parameters
    ----------
    device_name
        The device as torch names it (``"NVIDIA H100 80GB HBM3"``), or a CPU's description.

    Examples
    --------
    >>> peak_tflops("NVIDIA H100 80GB HBM3"), peak_tflops("NVIDIA H100 PCIe"), peak_tflops("cpu")
    (989.0, 756.0, None)
    """
    keys = [k for k in PEAK_TFLOPS if k in device_name]
    return PEAK_TFLOPS[max(keys, key=len)] if keys else None
