"""Evaluation: one job per model x split (``job``, the ``evaluate`` commands), token vectors (``encoding``), exact MaxSim (``maxsim``), score checks (``scores``), TREC files and pytrec_eval metrics (``trec``).

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of one
of them (:mod:`workflow_scripts.fingerprint`). Import from the module that owns the name.
"""
