"""The logic of the workflow, one module per stage (rules call their CLIs).

- ``data``: the data stage's commands; their logic is in ``sources`` (pinned downloads / local mirrors,
  manifests, readers) and ``shards`` (parquet triple shards, contamination audit)
- ``model``: widening of the last Dense projection, verified; safe model loading
- ``train``: both curriculum stages (PyLate CachedContrastive), resumable, multi-node
- ``evaluate``: exact streamed MaxSim on BRIGHT, pytrec_eval metrics, mteb JSON, TREC runs
- ``summarize``: the summary table beside the published numbers
- ``report``: figures and tables for ``snakemake --report``
- ``demo``: the deterministic demo assets (tiny model, mini datasets)
- ``rehearsal``: the real architecture at real size and realistic-length data, for the preflight
- ``preflight``: bounded measurements of every heavy stage and the cost forecast
- ``common``: one-line user errors, atomic outputs, config checks

Modules are imported on demand (``python -m workflow_scripts.<stage>``), so importing the
package loads nothing heavy.
"""

__all__ = ["common", "data", "demo", "evaluate", "model", "report", "summarize", "train"]
