"""``preflight forecast``: the measurements projected to the whole run, and the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import atomic_file, read_json, write_json
from .flops import (
    BASE_DOCUMENT_VECTORS,
    CARD,
    GIB,
    PEAK_TFLOPS,
    PUBLISHED_TRIPLES,
    ROW_OVERHEAD_BYTES,
    peak_tflops,
    project_split,
    project_split_from_flops,
    project_training,
    rate_times_count,
    train_step_flops,
)
from .memory import TERM_KEYS, calibrate_activations, memory_peak, memory_terms, simulate_steps, time_forecast
from .render import render_html, render_markdown

__all__ = ["SIMULATED_STEPS", "forecast", "forecast_memory"]


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

    Parameters
    ----------
    measured
        A ``train`` measurement: its ``query_length``, ``document_length`` and ``arch`` are read.
    shape
        The forecast's shape (``per_device``, ``devices``, ``global_batch``, ``accumulation``,
        ``mini_batch_size``, ``score_chunk``, ``bf16``, ``device_memory_bytes``) and ``processed_tokens``:
        the tokens one device processes per micro-batch after GradCache's trimming.
    backend
        The loss's MaxSim backend, resolved (not ``auto``): it sets the score's terms.
    calibration
        The activation fit (:func:`~workflow_scripts.preflight.memory.calibrate_activations`): its
        ``activation`` coefficients, ``shapes`` and ``max_abs_relative_error``.

    Returns
    -------
    ``peak_gib``, ``capacity_gib``, ``headroom_gib`` and ``fits``; the peak ``phase`` and each phase's GiB;
    ``terms`` (GiB and dtype each); the ``shape`` and ``maxsim_backend`` it was computed at; ``largest_term``
    and ``change`` (the config key that shrinks it, None when it fits); ``calibration``;
    ``if_activations_fp32_gib``; ``how``.
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

    Time on a known GPU: the measured step time or FLOP rate (:func:`~workflow_scripts.preflight.flops.project_training`). From a
    CPU: the FLOPs of the tokens GradCache processes after trimming, drawn from the data's own
    lengths (:func:`~workflow_scripts.preflight.memory.simulate_steps`), / (the forecast GPU's bf16 peak x the ASSUMED MFU); padded
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
    (:func:`~workflow_scripts.preflight.flops.project_split_from_flops`), with the CPU's own rates kept beside it (``at_cpu_rates``)."""
    from ..bright.stats import BRIGHT_STATS

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
    from ..train.trainer import per_device_batch_size

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

    Longer than ~50 lines because its keyword signature is the stage's CLI (:mod:`~workflow_scripts.cli`): one
    option per parameter; the work is in :func:`_forecast_shape`, :func:`_forecast_stages` and
    :func:`_write_forecast`.

    Parameters
    ----------
    train
        The ``train`` measurement JSON of each training stage (``preflight train``).
    evaluate
        The ``evaluate`` measurement JSON (``preflight evaluate``).
    shard_stats, shard_benchmarks
        Each stage's ``build_shards`` stats JSON, and the job's Snakemake benchmark TSV (``<stage>.tsv``).
    out_json, out_md, out_html
        Where the forecast goes: the result, ``preflight.md`` (verdict and tables), the report page.
    nodes, gpus_per_node
        The cluster the forecast is for.
    global_batch_size, gradient_accumulation_steps, mini_batch_size, epochs
        The training's settings on that cluster (``train.*``).
    bf16
        ``train.bf16``: true, false or ``auto`` (forecast as true).
    shuffle_buckets
        ``data.shuffle_buckets``: ``build_shards``' projected peak RSS grows with one bucket (rows / buckets).
    device_memory_gib
        Memory of one cluster GPU, the verdict's limit (``preflight.device_memory_gib``).
    gpu_hours_budget
        The GPU-hours the verdict compares the projected total with (``preflight.gpu_hours_budget``).
    widen
        The widening verification JSON(s) of the measured model; empty when nothing widens.
    evaluated_models
        Models the run evaluates on every split: the evaluation's GPU-hours are one model's x this.
    maxsim_backend
        ``train.maxsim_backend``; from a CPU measurement, ``auto`` is forecast as ``chunked``.
    score_mini_batch_size
        ``train.score_mini_batch_size``; None: ``mini_batch_size``.
    assumed_mfu
        The MFU a time forecast from a CPU assumes (``preflight.assumed_mfu``, 0-1).

    Returns
    -------
    The result written to ``out_json``: ``forecast_for``, ``measured_on``, ``stages``, ``checks`` and
    ``verdict``.
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
