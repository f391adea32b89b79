"""BRIGHT's published size per split: counts and text lengths, as mteb's descriptive statistics give them.

Declarative data: the rehearsal draws its generated corpora from it, and the preflight projects
the evaluation of the real corpora with it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BRIGHT_STATS", "SplitStats"]


@dataclass(frozen=True)
class SplitStats:
    """One BRIGHT split as mteb describes it: counts and (min, mean, max) lengths in characters."""

    documents: int
    document_chars: tuple[int, float, int]
    queries: int
    query_chars: tuple[int, float, int]
    gold_per_query: float


# mteb/descriptive_stats/Retrieval/BrightRetrieval.json (embeddings-benchmark/mteb @7a86af37,
# BRIGHT rev a75a0eb4): documents/queries text length min/average/max in characters, average
# relevant documents per query; counts as datasets.md lists them. aops and theoremqa_questions
# share one corpus (identical statistics), and so they do here.
BRIGHT_STATS: dict[str, SplitStats] = {
    "biology": SplitStats(57359, (1, 329.2, 31130), 103, (89, 523.0, 2195), 3.63),
    "earth_science": SplitStats(121249, (1, 333.4, 233622), 116, (83, 476.8, 1565), 5.25),
    "economics": SplitStats(50220, (1, 394.4, 39672), 103, (164, 739.6, 2223), 7.99),
    "psychology": SplitStats(52835, (3, 384.3, 226941), 101, (166, 693.2, 2334), 7.35),
    "robotics": SplitStats(61961, (1, 289.7, 28637), 101, (165, 2179.6, 19341), 5.48),
    "stackoverflow": SplitStats(107081, (1, 1713.7, 4000), 117, (185, 1293.0, 12432), 7.0),
    "sustainable_living": SplitStats(60792, (1, 343.8, 158296), 108, (158, 682.8, 2843), 5.59),
    "leetcode": SplitStats(413932, (75, 1058.5, 103665), 142, (422, 1459.3, 3964), 1.85),
    "pony": SplitStats(7894, (5, 258.4, 2583), 112, (182, 389.0, 946), 22.49),
    "aops": SplitStats(188177, (58, 753.9, 7334), 111, (85, 319.7, 1167), 4.72),
    "theoremqa_questions": SplitStats(188177, (58, 753.9, 7334), 205, (12, 406.7, 1255), 2.29),
    "theoremqa_theorems": SplitStats(23839, (74, 872.4, 19104), 65, (13, 429.2, 1255), 1.94),
}
