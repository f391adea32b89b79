"""Sources: the inputs as downloaded (or mirrored), recorded, pinned and read.

- ``hub``: one source resolved to a directory laid out like its hub repository (download or mirror)
- ``manifest``: the files a download recorded, and :func:`~workflow_scripts.sources.manifest.source_root`,
  the one way every stage reaches a source's directory (checked against its manifest)
- ``revisions``: a commit, branch or tag resolved to the commit it points at
- ``lock``: unpinned revisions in the config replaced by the commits their downloads recorded
- ``cards``: which files hold a dataset config and split (the dataset card's ``configs``)
- ``readers``: streamed parquet and jsonl readers

Nothing is re-exported here: importing any module of a package runs its ``__init__``, so a
re-export would put every module of the package into the code fingerprint of each user of
one of them (:mod:`workflow_scripts.fingerprint`): an edit to ``lock`` would rerun every
evaluation, which reads sources through ``manifest`` only. Import from the module that owns
the name.
"""
