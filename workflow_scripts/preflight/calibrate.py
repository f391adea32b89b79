"""The memory calibration: one GradCache step at three scaled shapes, each phase's bytes."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

__all__ = [
    "CALIBRATION_SHAPES",
    "LENGTH_SAMPLE_ROWS",
    "measure_calibration",
    "peak_growth",
]

logger = logging.getLogger(__name__)

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

    Parameters
    ----------
    function
        A callable taking no arguments (a ``functools.partial``), run once.

    Returns
    -------
    What ``function`` returned, the peak growth in bytes, and the measurement that gave it
    (``cuda max_memory_allocated`` or the torch profiler's CPU allocations).
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
    (:func:`workflow_scripts.train.trainer.build_loss`). ``loss`` is GradCache's embedding and scoring
    (the loss call), ``encoder`` its backward (every mini-batch embedded again with gradients),
    ``inference`` the documents' forward without gradients alone.

    Parameters
    ----------
    model
        A loaded PyLate ColBERT; its ``query_length``/``document_length`` are set per shape, then restored.
    query_length, document_length
        The stage's real token lengths, divided per shape (at least 4 each).
    maxsim_backend, temperature
        The stage's loss settings (``train.maxsim_backend``, ``train.temperature``).

    Returns
    -------
    Per shape: its ``shape`` (:func:`~workflow_scripts.preflight.memory.memory_terms`'s keys), the ``measured``
    bytes of ``inference``, ``loss`` and ``encoder``, the measurement's ``kind`` (:func:`peak_growth`) and the
    ``maxsim_backend`` the loss ran.
    """
    saved = model.query_length, model.document_length
    points = []
    try:
        for rows, q_div, d_div in CALIBRATION_SHAPES:
            model.query_length, model.document_length = max(4, query_length // q_div), max(4, document_length // d_div)
            points.append(_calibration_point(model, rows=rows, maxsim_backend=maxsim_backend, temperature=temperature))
    finally:
        model.query_length, model.document_length = saved
    return points


def _calibration_point(model: Any, *, rows: int, maxsim_backend: str, temperature: float) -> dict[str, Any]:
    """One GradCache step of ``rows`` rows at the model's current lengths: its shape and each phase's bytes."""
    from ..train.trainer import build_loss

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
    logger.info(
        "preflight calibration: %d rows at q%d/d%d: loss %.0f MiB, encoder %.0f MiB",
        rows,
        shape["query_width"],
        shape["document_width"],
        loss_bytes / 2**20,
        encoder_bytes / 2**20,
    )
    return {
        "shape": shape,
        "measured": {"inference": inference_bytes, "loss": loss_bytes, "encoder": encoder_bytes},
        "kind": kind,
        "maxsim_backend": getattr(loss, "maxsim_backend", maxsim_backend),
    }


def _no_grad_forward(model: Any, features: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        model(dict(features))
