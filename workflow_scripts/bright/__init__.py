"""BRIGHT: its facts (``meta``), its published size per split (``stats``), loading and checking a split
(``load``), the evaluation protocols (``protocols``).

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of one
of them (:mod:`workflow_scripts.fingerprint`). Import from the module that owns the name.
"""
