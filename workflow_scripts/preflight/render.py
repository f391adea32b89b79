"""The forecast's pages: the one-screen verdict and every table, as Markdown and HTML."""

from __future__ import annotations

import html
from typing import Any

from .flops import CARD

__all__ = [
    "HEADER",
    "TABLES",
    "TRAIN_STAGES",
    "calibration_table",
    "forecast_rows",
    "memory_table",
    "render_html",
    "render_markdown",
    "token_table",
    "training_lines",
    "verdict_lines",
]


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
    """The forecast table: one row per measured stage (build_shards per stage, training per stage, each split).

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).

    Returns
    -------
    Rows of cells (text) in :data:`HEADER`'s order.
    """
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
    """Per training stage: memory at the forecast's shape (fits, margin), tokens per step, GPU-hours from FLOPs.

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).

    Returns
    -------
    Markdown list items, two per training stage (memory; tokens and GPU-hours).
    """
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
    """Memory terms per GPU at the forecast's shape, one column per training stage (its peak phase).

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).

    Returns
    -------
    The header and the rows (text): one per memory term, then their sum (the peak).
    """
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
    """The memory model against this machine's measurements: per stage and shape, measured, model, error.

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).

    Returns
    -------
    The header and the rows (text): one per stage, measured shape and phase (``inference``, ``loss``,
    ``encoder``).
    """
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
    """Tokens per optimizer step and the GPU-hours they imply (published sizes), per stage and count.

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).

    Returns
    -------
    The header and the rows (text): one per stage and token count (``real``, ``processed``, ``padded``,
    ``collated``); ``real`` has no time.
    """
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
    """The one-screen verdict.

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).

    Returns
    -------
    Markdown: the bold headline, then list items (problems, GPU-hours, where it was measured, the training
    lines, the checks, in-batch false negatives).
    """
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
    """preflight.md: the verdict, then the forecast table.

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).
    """
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
    """The report page: the same verdict and table as preflight.md.

    Parameters
    ----------
    result
        The forecast (:func:`~workflow_scripts.preflight.forecast.forecast`'s result).
    """
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
