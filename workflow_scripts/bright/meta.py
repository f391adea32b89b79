"""BRIGHT's facts, in one place: task name, pinned revision, splits, domain labels, the splits
with long documents, the reasoning query sets, the splits that share a corpus.

Declarative metadata, like mteb's ``TaskMetadata``: no code and no imports, so every module
(the demo generator, the config checks, the stages) can read it without depending on the
loaders in :mod:`workflow_scripts.bright.load`. ``tests/test_rules.py`` checks the values against
mteb's own task metadata (``mteb.get_task("BrightRetrieval")``: subsets, revision).
"""

from __future__ import annotations

__all__ = ["DOMAINS", "LONG_SPLITS", "REASONING_CONFIGS", "REPO", "REVISION", "SHARED_DOCUMENTS", "SPLITS", "TASK_NAME"]

# What the card's protocol takes from BRIGHT, as data (like mteb's TaskMetadata); the tests
# check them against mteb's own task metadata (`mteb.get_task("BrightRetrieval")`).
TASK_NAME = "BrightRetrieval"
REPO = "xlangai/BRIGHT"
# mteb's BrightRetrieval pins this revision: the card's numbers were measured on it.
REVISION = "a75a0eb483f6a5233a6efc2d63d71540a4443dfb"
# The 12 domains (BRIGHT's ``examples``/``documents`` splits), in the BRIGHT paper's order.
SPLITS = [
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "leetcode",
    "pony",
    "aops",
    "theoremqa_questions",
    "theoremqa_theorems",
]
# ``{domain}`` of the card's query template ("Given a {domain} post, ..."), per split.
DOMAINS = {
    "biology": "Biology",
    "earth_science": "Earth Science",
    "economics": "Economics",
    "psychology": "Psychology",
    "robotics": "Robotics",
    "stackoverflow": "Stackoverflow",
    "sustainable_living": "Sustainable Living",
    "leetcode": "Leetcode",
    "pony": "Pony",
    "aops": "AoPS",
    "theoremqa_questions": "TheoremQA",
    "theoremqa_theorems": "TheoremQA",
}
# The splits that have a ``long_documents`` corpus (and ``gold_ids_long``): the StackExchange
# seven and pony, as mteb's ``DOMAINS_LONG`` lists them.
LONG_SPLITS = [
    "biology",
    "earth_science",
    "economics",
    "psychology",
    "robotics",
    "stackoverflow",
    "sustainable_living",
    "pony",
]
# BRIGHT's LLM-reasoning query sets: configs with the ``examples`` schema whose ``query`` is a
# model's reasoning about the question (``run.py --reasoning X`` reads ``X_reason``).
REASONING_CONFIGS = ["Gemini-1.0_reason", "claude-3-opus_reason", "gpt4_reason", "grit_reason", "llama3-70b_reason"]
# Splits that rank one and the same ``documents`` corpus (same ids, same texts, 188,177
# documents each): an evaluation job that covers both encodes it once.
SHARED_DOCUMENTS = ("aops", "theoremqa_questions")
