"""The logic of the workflow: one sub-package per concept, one module per stage command.

Every rule runs ``python -m workflow_scripts <stage> <command> --flag value ...``; the stage
registry (:mod:`workflow_scripts.stages`) names the module whose ``main`` holds each stage's
commands.

- ``sources``: the inputs as downloaded (or mirrored), recorded, pinned and read (``data fetch``, ``data lock``)
- ``shards``: the parquet triple shards and the contamination audit (``data build-shards``); ``data`` is the
  data stage's command table
- ``bright``: BRIGHT's facts, published sizes, loading and checks, the evaluation protocols
- ``model``: safe model loading, the attention guard for padded rows, widening (``model widen``)
- ``train``: the curriculum stages (``train fit``), the one trainer builder, trimmed GradCache, the loss's MaxSim
- ``evaluate``: one job per model x splits (``evaluate job``), exact MaxSim, score checks, TREC files and metrics
- ``summarize``, ``stats``, ``result_checks``: the summary beside the published numbers, intervals and tests
- ``report``, ``job_usage``: the report's pages, a job's usage sidecar
- ``preflight``: bounded measurements of every heavy stage and the cost forecast
- ``synthetic``: the demo's and the rehearsal's generated inputs, in the real formats
- ``errors``, ``files``, ``cli``, ``config_files``, ``config_checks``, ``lineage``, ``fingerprint``, ``progress``,
  ``warm``: one-line errors, atomic outputs and strict JSON, flags from signatures and the CLI runner, strict
  config files and the schema, config checks, experiments, code fingerprints, progress lines, the opt-in fork server

Nothing is imported here: importing the package loads nothing heavy, and a module's code
fingerprint holds only what it imports.
"""
