"""Training: the stage (``stage``, the ``train fit`` command), ``TrainSettings`` and ``make_trainer`` (``trainer``), trimmed GradCache (``gradcache``), exact MaxSim for the loss (``loss_scores``), in-batch false negatives (``negatives``), the shards and their rows (``rows``), rank and device (``world``).

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of one
of them (:mod:`workflow_scripts.fingerprint`). Import from the module that owns the name.
"""
