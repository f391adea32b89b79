"""Report stage: the figures and HTML tables that ``snakemake --report`` embeds.

One consistent matplotlib style (labelled axes with units, one colour per model family),
and small self-contained HTML fragments for tables (summary, widening, provenance, cost).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import platform
import subprocess
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

from .cli import run_commands
from .errors import UserError
from .files import atomic_file, read_json
from .job_usage import UsageError, usage_beside

__all__ = [
    "cost_html",
    "plot_bright",
    "plot_data",
    "plot_intervals",
    "plot_training",
    "provenance_html",
    "summary_html",
    "paired_tests_html",
]

logger = logging.getLogger(__name__)

OURS, PUBLISHED, DELTA = "#1f77b4", "#bbbbbb", "#2ca02c"
STYLE = {
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 9,
}
CSS = (
    "<style>table.r{border-collapse:collapse;font:13px sans-serif}table.r td,table.r th{padding:3px 8px;"
    "border-bottom:1px solid #ddd;text-align:right}table.r td:first-child,table.r th:first-child{text-align:left}"
    "tr.published td{color:#666}td.pos{background:#e6f4e6}td.neg{background:#fbe3e3}td.flag{background:#fff3cd}"
    "table.r th{white-space:normal;max-width:7em;font-size:12px}td.sig{font-weight:bold;background:#e8eefc}"
    "p.agreement{font:13px sans-serif;max-width:60em}</style>"
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def _save(fig, out: str | Path) -> None:
    with atomic_file(out, "wb") as handle:
        fig.savefig(handle, format="png", bbox_inches="tight")


def _html_page(title: str, body: str) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{CSS}</head><body><h3>{html.escape(title)}</h3>{body}</body></html>\n"


def summary_html(*, summary_json: str | Path, out: str | Path) -> None:
    """One table per protocol (ours, the published rows measured under it, deltas coloured green
    (better) or red (worse)), then the published rows of protocols not run here.

    Parameters
    ----------
    summary_json
        The summary (:func:`~workflow_scripts.summarize.summarize`'s ``summary.json``).
    out
        The HTML page to write.
    """
    summary = read_json(summary_json)
    body = ""
    for table in summary["tables"]:
        p = table["protocol"]
        body += (
            f"<h4>{html.escape(p['name'])}</h4><p>{html.escape(p['description'])}. {html.escape(_definition(p))}</p>"
        )
        body += _score_table(table["rows"], table["splits"], f"summary-table-{p['name']}", flags=table.get("flags"))
        body += _notes_html(p.get("notes") or [], table.get("flags") or {}, p["name"])
        body += "".join(
            f"<p class='agreement' id='agreement-{html.escape(p['name'])}'>{html.escape(c['sentence'])}</p>"
            for c in table.get("card_checks", [])
        )
    if summary["published_elsewhere"]:
        body += "<h4>Published under protocols not run here</h4><p>For context only: no delta is taken.</p>"
        body += _score_table(summary["published_elsewhere"], summary["splits"], "summary-elsewhere", protocol=True)
    s = summary["settings"]
    body += (
        f"<p>BRIGHT nDCG@10 &times; 100, exact MaxSim; query length {s['query_length']} (overrides "
        f"{html.escape(json.dumps(s['overrides']))}), document length {s['document_length']}; BRIGHT revision "
        f"<code>{html.escape(s['bright_revision'])}</code>. Deltas only within a table: a published row sits with "
        "the protocol it was measured under.</p>"
    )
    with atomic_file(out) as handle:
        handle.write(_html_page("BRIGHT nDCG@10 per protocol: ours vs published", body))


def _definition(p: dict[str, Any]) -> str:
    formats = p["templates"]
    written = repr(formats[0]) if len(formats) == 1 else f"per-split instructions ({len(formats)} distinct)"
    same = f"= preset {p['preset']}" if p["preset"] else "custom (no published row compares)"
    return (
        f"Queries {p['queries']} as {written}; excluded ids {'removed' if p['exclude_ids'] else 'scored'}; "
        f"{p['corpus']} judged by {p['qrels']}; {same}."
    )


def _notes_html(notes: list[str], flags: dict[str, dict[str, list[str]]], name: str) -> str:
    """A protocol's notes, and each flagged result of its table (model / split: what to know)."""
    out = "".join(f"<p class='note'><b>Note:</b> {html.escape(note)}.</p>" for note in notes)
    items = "".join(
        f"<li>{html.escape(model)} / {html.escape(split)}: {html.escape(flag)}</li>"
        for model, cells in flags.items()
        for split, lines in cells.items()
        for flag in lines
    )
    if items:
        out += (
            f"<p><b>Flagged results</b> (marked &#9888; above; read before comparing):</p>"
            f"<ul class='flags' id='flags-{html.escape(name)}'>{items}</ul>"
        )
    return out


def _score_table(
    rows: list[dict[str, Any]],
    splits: list[str],
    table_id: str,
    protocol: bool = False,
    flags: dict[str, dict[str, list[str]]] | None = None,
) -> str:
    columns = [*splits, "mean"]
    head = "<tr><th>model</th>" + ("<th>protocol</th>" if protocol else "")
    head += "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns) + "</tr>"
    body = ""
    for row in rows:
        cells = f"<td>{html.escape(row['protocol'])}</td>" if protocol else ""
        for c in columns:
            cls = ""
            if row["kind"] == "delta":
                cls = " class='pos'" if row[c] > 0 else " class='neg'" if row[c] < 0 else ""
            flagged = (flags or {}).get(row["model"], {}).get(c) if row["kind"] == "ours" else None
            if flagged:  # a degenerate, partial or capped result: marked where the number is read
                cells += f"<td class='flag' title='{html.escape('; '.join(flagged))}'>{row[c]:.2f} &#9888;</td>"
                continue
            cells += f"<td{cls}>{row[c]:.2f}</td>"
        body += f"<tr class='{row['kind']}'><td>{html.escape(row['model'])}</td>{cells}</tr>"
    return f"<table class='r' id='{html.escape(table_id)}'>{head}{body}</table>"


def plot_bright(*, summary_json: str | Path, out: str | Path):
    """Two panels: nDCG@10 per split of every model under the baseline protocol (``card``) beside
    its published rows; and how much each other protocol moves each split for the reference
    model (its nDCG@10 minus the baseline's), the question PyLate #209 asked. Returns the figure.

    Parameters
    ----------
    summary_json
        The summary (:func:`~workflow_scripts.summarize.summarize`'s ``summary.json``), with its protocol
        ``effects``.
    out
        The PNG to write.
    """
    import numpy as np

    plt = _pyplot()
    summary = read_json(summary_json)
    effects = summary["effects"]
    base = next(t for t in summary["tables"] if t["protocol"]["name"] == effects["baseline"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(summary["splits"]) * 0.95), 7.5))
    _bars(top, [r for r in base["rows"] if r["kind"] in ("ours", "published")], base["splits"] + ["mean"], plt)
    top.set_ylabel("nDCG@10 (x100)")
    top.set_title(f"BRIGHT nDCG@10 per split, protocol {base['protocol']['name']}")
    moved = {name: d for name, d in effects["delta"].items() if name != effects["baseline"]}
    splits = summary["splits"]
    x = np.arange(len(splits))
    width = 0.8 / max(1, len(moved))
    colors = plt.get_cmap("tab10")
    for i, (name, delta) in enumerate(moved.items()):
        values = [delta.get(s, np.nan) for s in splits]  # nan: a split the protocol does not cover
        bottom.bar(x + (i - len(moved) / 2 + 0.5) * width, values, width, label=name, color=colors(i % 10))
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_xticks(x, [s.replace("_", "\n") for s in splits], fontsize=8)
    bottom.set_ylabel(f"nDCG@10 minus {effects['baseline']} (points)")
    bottom.set_title(f"How much each protocol moves each split ({effects['model']})")
    bottom.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    _save(fig, out)
    return fig


def plot_intervals(*, summary_json: str | Path, protocol: str, out: str | Path):
    """One protocol: each model's nDCG@10 per split and mean with its bootstrap interval, and the
    published rows measured under that protocol as points. Returns the figure.

    Parameters
    ----------
    summary_json
        The summary (:func:`~workflow_scripts.summarize.summarize`'s ``summary.json``).
    protocol
        The protocol's name; UserError when the summary has no table of it.
    out
        The PNG to write.
    """
    import numpy as np

    plt = _pyplot()
    table = next((t for t in read_json(summary_json)["tables"] if t["protocol"]["name"] == protocol), None)
    if table is None:
        raise UserError(f"{summary_json}: no table of protocol {protocol!r}")
    columns = [*table["splits"], "mean"]
    ours = [r for r in table["rows"] if r["kind"] == "ours"]
    x = np.arange(len(columns))
    fig, ax = plt.subplots(figsize=(max(8, len(columns) * 0.95), 4.2))
    colors = plt.get_cmap("tab10" if len(ours) <= 10 else "tab20")
    width = 0.8 / max(1, len(ours))
    for i, row in enumerate(ours):
        cells = table["intervals"][row["model"]]
        values = np.array([row[c] for c in columns])
        low, high = np.array([cells[c][0] for c in columns]), np.array([cells[c][1] for c in columns])
        ax.errorbar(
            x + (i - len(ours) / 2 + 0.5) * width,
            values,
            yerr=[values - low, high - values],
            fmt="o",
            ms=3.5,
            capsize=2.5,
            lw=1,
            color=colors(i % colors.N),
            label=row["model"],
        )
    for j, row in enumerate(r for r in table["rows"] if r["kind"] == "published"):
        ax.scatter(
            x,
            [row[c] for c in columns],
            marker="x" if j == 0 else "+",
            s=40,
            color="black" if j == 0 else "#e07020",
            zorder=3,
            label=row["model"],
        )
    level = f"{100 * table['statistics']['confidence']:g} %"
    ax.set_xticks(x, [c.replace("_", "\n") for c in columns], fontsize=8)
    ax.set_ylabel("nDCG@10 (x100)")
    ax.set_title(f"Protocol {protocol}: nDCG@10 with {level} bootstrap intervals over queries")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    _save(fig, out)
    return fig


def paired_tests_html(*, summary_json: str | Path, out: str | Path) -> None:
    """Per protocol, the paired tests: a row per (model, baseline), a cell per split and the mean
    (the difference in nDCG@10 points, Holm-adjusted p), significant cells marked.

    Parameters
    ----------
    summary_json
        The summary (:func:`~workflow_scripts.summarize.summarize`'s ``summary.json``).
    out
        The HTML page to write.
    """
    summary = read_json(summary_json)
    body = ""
    for table in summary["tables"]:
        name, columns = table["protocol"]["name"], [*table["splits"], "mean"]
        stats = table["statistics"]
        body += f"<h4>{html.escape(name)}</h4>"
        body += _tests_table(table["tests"], columns, f"tests-table-{name}") if table["tests"] else "<p>no pairs</p>"
    body += (
        f"<p>Paired randomization test per split ({stats['resamples']} relabellings, exact where fewer exist) of "
        f"model minus baseline, p-values Holm-adjusted across each protocol's splits; the mean's test (the "
        f"splits weighted equally) is one test. <b>Bold, *</b>: significant at alpha {stats['alpha']}. Query "
        "sampling only: not corpus, annotation or training-seed noise.</p>"
    )
    with atomic_file(out) as handle:
        handle.write(_html_page("Paired tests between models (nDCG@10 points, p after Holm)", body))


def _tests_table(tests: list[dict[str, Any]], columns: list[str], table_id: str) -> str:
    by_pair: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for t in tests:
        by_pair.setdefault((t["model"], t["baseline"]), {})[t["split"]] = t
    head = "<tr><th>model - baseline</th>" + "".join(f"<th>{html.escape(c.replace('_', ' '))}</th>" for c in columns)
    body = ""
    for (model, baseline), cells in by_pair.items():
        row = ""
        for c in columns:
            t = cells[c]
            sig = " class='sig'" if t["significant"] else ""
            row += f"<td{sig}>{t['delta']:+.2f}<br><small>p {t['p_holm']:.3f}{'*' if t['significant'] else ''}</small></td>"
        body += f"<tr><td>{html.escape(model)} - {html.escape(baseline)}</td>{row}</tr>"
    return f"<table class='r' id='{html.escape(table_id)}'>{head}</tr>{body}</table>"


def _bars(ax, rows: list[dict[str, Any]], columns: list[str], plt) -> None:
    """Grouped bars, one per row: ours in blue shades (lighter = earlier), published in grey/orange."""
    import numpy as np

    x = np.arange(len(columns))
    width = 0.8 / max(1, len(rows))
    cmap = plt.get_cmap("Blues")
    ours = [r for r in rows if r["kind"] == "ours"]
    others = ["#999999", "#e0a060", "#c7c7c7"]
    for i, row in enumerate(rows):
        if row["kind"] == "ours":
            color = cmap(0.35 + 0.6 * ours.index(row) / max(1, len(ours) - 1))
        else:
            color = others[(i - len(ours)) % len(others)]
        ax.bar(x + (i - len(rows) / 2 + 0.5) * width, [row[c] for c in columns], width, label=row["model"], color=color)
    ax.set_xticks(x, [c.replace("_", "\n") for c in columns], fontsize=8)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    text = Path(path).read_text() if Path(path).exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plot_training(*, labels: list[str], metrics: list[str], out: str | Path):
    """Loss, learning rate and gradient norm against optimizer step, one colour per model.

    ``labels[i]`` names the model whose per-step metrics are ``metrics[i]``; every model gets
    a curve (colours cycle through a qualitative map, never a fixed short list). Returns the
    figure.

    Parameters
    ----------
    labels, metrics
        Model ids and their per-step metrics (``train/<id>.metrics.jsonl``), pairwise; a missing file gives an
        empty curve.
    out
        The PNG to write.
    """
    plt = _pyplot()
    if len(labels) != len(metrics):
        raise UserError(f"{len(labels)} labels for {len(metrics)} metrics files")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    colors = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    for i, (label, path) in enumerate(zip(labels, metrics)):
        rows = _read_jsonl(path)
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes, ("loss", "lr", "grad_norm")):
            ax.plot(steps, [r.get(key) for r in rows], color=colors(i % colors.N), label=label, lw=1.2)
    for ax, (title, unit) in zip(
        axes,
        [
            ("training loss", "CachedContrastive loss"),
            ("learning rate", "lr"),
            ("gradient norm (before clipping)", "L2 norm"),
        ],
    ):
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    _save(fig, out)
    return fig


def _stage_stats(stats: list[str]) -> dict[str, dict[str, Any]]:
    """The ``stats.json`` files of the training stages, by the stage each one names."""
    loaded = [read_json(path) for path in stats]
    return {s["stage"]: s for s in loaded}


def plot_data(*, stats: list[str], out: str | Path) -> None:
    """Triples per source/domain for each stage, and token-length percentiles.

    Parameters
    ----------
    stats
        The ``build_shards`` stats JSON of each training stage.
    out
        The PNG to write.
    """
    plt = _pyplot()
    loaded = _stage_stats(stats)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    labels: list[str] = sorted(
        {f"{r['source']} {r['domain']}".strip() for s in loaded.values() for r in s["rows_by_source_domain"]}
    )
    import numpy as np

    y = np.arange(len(labels))
    for i, (stage, s) in enumerate(loaded.items()):
        counts = {f"{r['source']} {r['domain']}".strip(): r["rows"] for r in s["rows_by_source_domain"]}
        axes[0].barh(y + i * 0.4, [counts.get(lbl, 0) for lbl in labels], 0.4, label=stage)
    axes[0].set_yticks(y + 0.2, labels, fontsize=6)
    axes[0].set_xlabel("triples")
    axes[0].set_title("training triples per source / domain")
    axes[0].legend(fontsize=7)
    for i, (stage, s) in enumerate(loaded.items()):
        color = plt.get_cmap("tab10")(i)  # the same colour as the stage's bars
        for j, col in enumerate(("query", "positive", "negative")):
            pct = s["token_lengths"].get(col, {})
            if pct:
                axes[1].errorbar(
                    j + 0.2 * i,
                    pct["p50"],
                    yerr=[[pct["p50"] - pct["p5"]], [pct["p95"] - pct["p50"]]],
                    fmt="o",
                    capsize=4,
                    color=color,
                    label=stage if j == 0 else None,
                )
    axes[1].set_xticks(range(3), ["query", "positive", "negative"])
    axes[1].set_ylabel("tokens (base tokenizer): median, 5-95 %")
    axes[1].set_title("text lengths")
    axes[1].legend(fontsize=7)
    _save(fig, out)


def _table(rows: list[dict[str, Any]], table_id: str) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table class='r' id='{table_id}'><tr>{head}</tr>{body}</table>"


def data_html(*, stats: list[str], out: str | Path) -> None:
    """Per stage: triples per source/domain, dropped rows and why, and the contamination audit."""
    body = ""
    for stage, s in _stage_stats(stats).items():
        dropped = [{"reason": k, "rows": v} for k, v in s["dropped_rows"].items()]
        dropped.append({"reason": "exact duplicate triple", "rows": s["duplicates_removed"]})
        dropped.append({"reason": "hq positive id not in BRIGHT (ids, not rows)", "rows": s["hq_unresolved_ids"]})
        body += f"<h4>{html.escape(stage)}: {s['rows']:,} triples in {s['shards']} shards</h4>"
        body += (
            _table(s["rows_by_source_domain"], f"rows-{stage}")
            + "<h5>dropped</h5>"
            + _table(dropped, f"dropped-{stage}")
        )
        audit = s.get("contamination")
        if audit:
            body += (
                f"<h5>contamination audit vs BRIGHT test queries ({audit['ngram']}-gram, "
                f"{'overlapping triples dropped' if audit['drop'] else 'kept'})</h5>"
            )
            body += _table(audit["per_split"], f"contamination-{stage}")
    with atomic_file(out) as handle:
        handle.write(_html_page("Training data", body))


def widen_html(*, labels: list[str], verify: list[str], out: str | Path) -> None:
    """The widening verification of each widened model (``labels[i]``: ``verify[i]``) as a table."""
    body = ""
    for name, path in zip(labels, verify, strict=True):
        report = read_json(path)
        checks = report.pop("checks", {})
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in sorted(report.items())
        )
        rows += "".join(
            f"<tr><td>check: {html.escape(k)}</td><td>{'pass' if v else 'FAIL'}</td></tr>" for k, v in checks.items()
        )
        body += f"<h4>{html.escape(name)}</h4><table class='r' id='widen-table-{html.escape(name)}'>{rows}</table>"
    with atomic_file(out) as handle:
        handle.write(_html_page("Widening verification", body))


def provenance_html(*, config: dict[str, Any], manifests: list[str], out: str | Path) -> None:
    """Config (with pinned revisions), data manifests, package versions, git commit, machine.

    The commit is read from the workflow's repository (``REASON_COLBERT_REPO``, set by the
    Snakefile), not from a path passed in: the page must not depend on where the checkout is.

    Parameters
    ----------
    config
        The workflow config as run, shown in full (the rule leaves ``warm_start`` out).
    manifests
        The manifest JSON of each source the run uses (``resources/sources/<source>.manifest.json``).
    out
        The HTML page to write.
    """
    repo = os.environ.get("REASON_COLBERT_REPO", ".")

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    import torch

    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in distributions())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    sources = "".join(
        f"<tr><td>{html.escape(m['name'])}</td><td>{html.escape(m['repo'])}</td><td><code>{m['revision']}</code></td>"
        f"<td>{m['mode']}</td><td>{len(m['files'])}</td></tr>"
        for m in (read_json(p) for p in manifests)
    )
    body = (
        f"<p>git commit <code>{git('rev-parse', 'HEAD')}</code>{' (uncommitted changes)' if git('status', '--porcelain') else ''}; "
        f"python {platform.python_version()} on {html.escape(platform.platform())}; GPU: {html.escape(gpu)}</p>"
        f"<h4>Sources</h4><table class='r' id='sources-table'><tr><th>source</th><th>repo</th><th>revision</th><th>mode</th><th>files</th></tr>{sources}</table>"
        f"<h4>Configuration</h4><pre>{html.escape(json.dumps(config, indent=2, sort_keys=True))}</pre>"
        f"<h4>Packages</h4><pre>{html.escape(chr(10).join(packages))}</pre>"
    )
    with atomic_file(out) as handle:
        handle.write(_html_page("Provenance", body))


def cost_html(*, benchmarks: list[str], out: str | Path, train_gpus: int, evaluate_gpus: int) -> None:
    """Wall time, peak memory and GPU-hours per job, from Snakemake ``benchmark:`` files.

    Parameters
    ----------
    benchmarks
        Snakemake ``benchmark:`` TSVs, ``.../benchmarks/<job kind>/...``; a warm-started job's usage sidecar
        beside one gives its peak RSS.
    out
        The HTML page to write.
    train_gpus, evaluate_gpus
        GPUs a ``train`` / an ``evaluate`` job holds (GPU-hours: GPUs x wall); other jobs count none.
    """
    gpus = {"train": train_gpus, "evaluate": evaluate_gpus}
    rows, total = "", 0.0
    for path in sorted(benchmarks):
        with open(path) as handle:
            record = next(csv.DictReader(handle, delimiter="\t"))
        job = str(Path(path).with_suffix("")).split("benchmarks/", 1)[-1]
        seconds = float(record["s"])
        gpu_hours = gpus.get(job.split("/")[0], 0) * seconds / 3600
        total += gpu_hours
        # A warm-started job's benchmark sampled the client; its sidecar holds the child's own peak.
        try:
            warm = usage_beside(path)
        except UsageError as err:
            raise UserError(str(err)) from None
        rss = f"{warm['max_rss']:.1f} (warm)" if warm else record.get("max_rss", "NA")
        rows += f"<tr><td>{html.escape(job)}</td><td>{seconds:.1f}</td><td>{rss}</td><td>{gpu_hours:.3f}</td></tr>"
    table = f"<table class='r' id='cost-table'><tr><th>job</th><th>wall (s)</th><th>max RSS (MB)</th><th>GPU-hours</th></tr>{rows}</table>"
    note = (
        "<p>(warm): the job was forked from the warm-start server (config <code>warm_start</code>); its peak RSS "
        "is the forked child's, as the kernel counts it, which is not comparable with a cold start of the same "
        "job (the child counts the preloaded libraries' pages it touches, not those it only shares): measure "
        "memory with <code>warm_start: false</code> or on the cluster.</p>"
    )
    with atomic_file(out) as handle:
        handle.write(_html_page("Cost per job", f"{table}<p>total GPU-hours: {total:.3f}</p>{note}"))


def main(argv: list[str] | None = None) -> None:
    run_commands(
        {
            "summary": summary_html,
            "bright": plot_bright,
            "intervals": plot_intervals,
            "tests": paired_tests_html,
            "training": plot_training,
            "data": plot_data,
            "data_tables": data_html,
            "widen": widen_html,
            "provenance": provenance_html,
            "cost": cost_html,
        },
        argv,
    )


if __name__ == "__main__":
    main()
