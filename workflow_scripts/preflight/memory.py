"""Tokens, time and memory of a training step: column counts, simulated steps, memory terms and their calibration fit."""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .flops import GIB

__all__ = [
    "CUDA_CONTEXT_BYTES",
    "FRAGMENTATION",
    "NCCL_BUFFER_BYTES",
    "TERM_KEYS",
    "calibrate_activations",
    "column_tokens",
    "grown",
    "memory_peak",
    "memory_terms",
    "simulate_steps",
    "time_forecast",
    "widest_minibatch",
]

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

    ``processed``/``padded``/``real`` come from :func:`workflow_scripts.train.gradcache.trimmed_token_counts`;
    its mini-batches group rows by length, an order squaring keeps, so the same function on the
    squared lengths gives the sum over mini-batches of rows x width**2. ``collated`` is every row
    at ``width`` (PyLate's collator pads to ``query_length``/``document_length``).

    Parameters
    ----------
    lengths
        Each row's token length (specials included, truncated), in row order.
    mini_batch_size
        Rows per GradCache mini-batch.
    width
        The column's collated width (``query_length`` or ``document_length``).

    Returns
    -------
    ``tokens`` and ``squares`` (the same counts on the squared lengths), each with ``real``, ``processed``,
    ``padded`` and ``collated``.

    Examples
    --------
    Mini-batches [300], [120, 40], [7, 5]; squares: 300**2 + 2 x 120**2 + 2 x 7**2.

    >>> column_tokens([5, 300, 40, 7, 120], mini_batch_size=2, width=512)["tokens"]
    {'real': 472, 'processed': 554, 'padded': 1500, 'collated': 2560}
    >>> column_tokens([5, 300, 40, 7, 120], mini_batch_size=2, width=512)["squares"]["processed"]
    118898
    """
    from ..train.gradcache import trimmed_token_counts

    tokens = trimmed_token_counts(lengths, mini_batch_size=mini_batch_size)
    squares = trimmed_token_counts(_squares(lengths), mini_batch_size=mini_batch_size)
    tokens["collated"], squares["collated"] = len(lengths) * width, len(lengths) * width * width
    return {"tokens": tokens, "squares": squares}


def widest_minibatch(lengths: list[int], *, mini_batch_size: int) -> dict[str, int]:
    """The GradCache mini-batch of one column that holds the most activations: its rows and width.

    Parameters
    ----------
    lengths
        Each row's token length, in row order.
    mini_batch_size
        Rows per GradCache mini-batch (:func:`~workflow_scripts.train.gradcache.minibatch_plan`).

    Examples
    --------
    >>> widest_minibatch([5, 300, 40, 7, 120], mini_batch_size=2)  # [300], [120, 40], [7, 5]
    {'rows': 1, 'width': 300}
    """
    from ..train.gradcache import minibatch_plan

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

    Parameters
    ----------
    lengths
        Per column, the token lengths of the same rows, as above.
    per_device
        Rows per device and micro-step.
    devices
        Devices of the cluster simulated.
    accumulation
        Micro-steps per optimizer step (``gradient_accumulation_steps``).
    mini_batch_size
        Rows per GradCache mini-batch.
    widths
        Each column's collated width (``query_length`` for ``query``, ``document_length`` for the others).
    arch
        The model's ``matmul_parameters``, ``layers`` and ``hidden``
        (:func:`~workflow_scripts.preflight.devices.architecture`).
    steps
        Optimizer steps simulated.
    seed
        Seeds the row draws.

    Returns
    -------
    ``tokens`` per kind (``queries`` and ``documents``), ``encoder_forward_flops_per_device`` per kind, the
    ``widest_minibatch`` drawn, ``steps_simulated`` and ``rows_sampled`` (the rows drawn from).

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
                widest = _count_rows(
                    {column: [values[i] for i in rows] for column, values in lengths.items()},
                    mini_batch_size=mini_batch_size,
                    widths=widths,
                    arch=arch,
                    into={"tokens": tokens, "device": device},
                    widest=widest,
                )
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


def _count_rows(
    columns: dict[str, list[int]],
    *,
    mini_batch_size: int,
    widths: dict[str, int],
    arch: dict[str, int],
    into: dict[str, Any],
    widest: dict[str, int],
) -> dict[str, int]:
    """Add one per-device batch's tokens (``into["tokens"]``) and encoder FLOPs (``into["device"]``); the widest mini-batch."""
    for column, col in columns.items():
        counted = column_tokens(col, mini_batch_size=mini_batch_size, width=widths[column])
        group = "queries" if column == "query" else "documents"
        for k in into["device"]:
            into["tokens"][k][group] += counted["tokens"][k]
            into["device"][k] += (
                2.0 * arch["matmul_parameters"] * counted["tokens"][k]
                + 4.0 * arch["layers"] * arch["hidden"] * counted["squares"][k]
            )
        w = widest_minibatch(col, mini_batch_size=mini_batch_size)
        if w["rows"] * w["width"] > widest["rows"] * widest["width"]:
            widest = w
    return widest


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

    Parameters
    ----------
    encoder_forward_flops
        One forward's encoder FLOPs per device and optimizer step.
    score_forward_flops
        One forward's MaxSim FLOPs per device and optimizer step.
    steps
        Optimizer steps of the run.
    devices
        GPUs the run holds (GPU-hours are wall hours x devices).
    peak_tflops
        One GPU's peak TFLOP/s (its bf16 peak in the forecast).
    mfu
        The ASSUMED model FLOPs utilisation, between 0 and 1.

    Returns
    -------
    ``executed_flops_per_step``, ``step_seconds``, ``wall_hours`` and ``gpu_hours``.

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
    from ..train.loss_scores import default_chunk_size, loss_working_set_bytes

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

    Parameters
    ----------
    arch
        The model's ``parameters``, ``largest_parameter``, ``dim`` and ``layers``
        (:func:`~workflow_scripts.preflight.devices.architecture`).
    shape
        The step's shape, keys as above.
    backend
        The loss's MaxSim backend, resolved (not ``auto``): it sets the loss's working set.
    activation
        The calibrated activation coefficients at fp32, keys as above.
    activation_bytes
        Bytes per activation value: 2 under bf16 autocast, 4 in fp32.
    world_size
        Devices; above 1 every rank's documents are gathered.
    allowance
        Add the ASSUMED CUDA context, NCCL buffers and allocator fragmentation to every phase.

    Returns
    -------
    Per phase (``embed``, ``loss``, ``encoder``), its terms by name, the resident ``weights`` and ``adamw_states``
    included.

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

    Parameters
    ----------
    phases
        Per phase, its named terms (:func:`memory_terms`).

    Returns
    -------
    The peak ``phase``, its sum (``peak_bytes``), every phase's sum (``phase_bytes``) and the peak phase's ``terms``.

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
    """Bytes a phase allocates (what a measurement from the phase's start sees).

    Parameters
    ----------
    terms
        One phase's named terms (:func:`memory_terms`).
    """
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

    Each point is a measured calibration step (:func:`~workflow_scripts.preflight.calibrate.measure_calibration`): its ``shape`` and
    the bytes allocated by the widest mini-batch's forward without gradients (``inference``),
    by the loss call (GradCache's steps 1-2: ``loss``) and by its backward (step 3:
    ``encoder``), at fp32 in one process. Fitted, each as ``c x rows x width + m x rows x
    width**2`` (per layer for the saved activations): the forward without gradients on
    ``inference``, and the activations saved for backward on the ``encoder`` bytes beyond their
    analytic terms, from the shapes where they exceed the gradient temporary. The loss call
    (the larger of the embed and loss phases) is not fitted. Errors are (model - measured) /
    measured, per shape and phase.

    Parameters
    ----------
    points
        The measured calibration steps, as above.
    arch
        The model's sizes (:func:`~workflow_scripts.preflight.devices.architecture`).
    backend
        The MaxSim backend the calibration's loss ran (the points' ``maxsim_backend``).

    Returns
    -------
    The fitted ``activation`` coefficients (:func:`memory_terms`'s), each shape's measured and modelled bytes and
    ``relative_error`` (``shapes``), the ``max_abs_relative_error``, ``fitted_on_encoder`` (how many shapes the saved
    activations were fitted on) and ``how``.
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
