"""Generated inputs in the real formats: the demo (``demo``), the rehearsal (``rehearsal``), their one ModernBERT ColBERT writer (``backbone``).

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of one
of them (:mod:`workflow_scripts.fingerprint`). Import from the module that owns the name.
"""
