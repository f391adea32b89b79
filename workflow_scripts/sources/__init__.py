"""Sources: the inputs as downloaded (or mirrored), recorded and read.

- ``cards``: which files hold a dataset config and split (the dataset card's ``configs``)
- ``readers``: streamed parquet and jsonl readers

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of
one of them (:mod:`workflow_scripts.fingerprint`). Import from the module that owns the name.
"""
