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
GPU's peak x ``preflight.assumed_mfu``) (:func:`~workflow_scripts.preflight.flops.project_split_from_flops`). Training (issue #21):

- time measured on a known GPU: the measured step time, or the measured FLOP rate x the FLOPs
  of the real steps (:func:`~workflow_scripts.preflight.flops.train_step_flops`). From a CPU, CPU seconds say nothing about a
  GPU: the FLOPs of the tokens GradCache processes after trimming each mini-batch to its
  longest row, drawn from the data's own token lengths (:func:`~workflow_scripts.preflight.memory.simulate_steps`), / (the GPU's
  bf16 peak x ``preflight.assumed_mfu``, an assumption) (:func:`~workflow_scripts.preflight.memory.time_forecast`); the counts
  padded to the batch's longest and collated to ``document_length`` beside it.
- memory at the forecast's shape: a sum of named terms, each at its dtype
  (:func:`~workflow_scripts.preflight.memory.memory_terms`), the activation terms calibrated against the memory this machine
  measured at three scaled shapes (:func:`~workflow_scripts.preflight.memory.calibrate_activations`), with the model's error per
  shape; the verdict names the config key to change where it does not fit.


Modules: FLOPs and peaks (``flops``), the memory and time model (``memory``), device helpers (``devices``), measured training steps (``measure_train``), the memory calibration (``calibrate``), measured evaluation (``measure_evaluate``), the forecast (``forecast``), its pages (``render``), the command table (``commands``).

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of one
of them (:mod:`workflow_scripts.fingerprint`). Import from the module that owns the name.
"""
