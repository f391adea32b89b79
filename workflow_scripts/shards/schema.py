"""The columns of a training shard, the one table the data stage writes and training reads.

Shard schema (one parquet dataset per training stage, zstd, ``part-NNNNN.parquet``):

=============  ========  ==============================================================
column         type      meaning
=============  ========  ==============================================================
query          string    ``instruction + "\\nQuery: " + text`` (text alone without one)
positive       string    a relevant document's text (hq ids resolved against BRIGHT)
negative       string    a hard negative's text
source         string    ``reasonir/vl``, ``reasonir/hq`` or ``bge_reasoner``
domain         string    BRIGHT domain of the row ("" when unknown, e.g. reasonir vl)
instruction    string    the task instruction alone ("" when none)
=============  ========  ==============================================================
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["SHARD_SCHEMA"]

SHARD_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("positive", pa.string()),
        ("negative", pa.string()),
        ("source", pa.string()),
        ("domain", pa.string()),
        ("instruction", pa.string()),
    ]
)
