"""Shards: the training triples of one curriculum stage, built from its sources.

- ``schema``: the shard's columns (:data:`~workflow_scripts.shards.schema.SHARD_SCHEMA`)
- ``triples``: reasonir-data and bge-reasoner-data rows expanded to capped triples
- ``contamination``: the audit of triples against BRIGHT's test queries
- ``shuffle``: the out-of-core shuffle and de-duplication into ``part-NNNNN.parquet`` shards
- ``lengths``: token-length percentiles on a sample of the triples
- ``build``: :func:`~workflow_scripts.shards.build.build_shards`, one stage's shards and ``stats.json``

Nothing is re-exported here, for the reason :mod:`workflow_scripts.sources` gives.
"""
