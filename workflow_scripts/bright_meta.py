"""BRIGHT's facts, in one place: task name, pinned revision, splits, domain labels.

Declarative metadata, like mteb's ``TaskMetadata``: no code and no imports, so every module
(the demo generator, the config checks, the stages) can read it without depending on the
loaders in :mod:`workflow_scripts.bright`. ``tests/test_rules.py`` checks the values against
mteb's own task metadata (``mteb.get_task("BrightRetrieval")``: subsets, revision).
"""

from __future__ import annotations

__all__ = ["DOMAINS", "REPO", "REVISION", "SPLITS", "TASK_NAME"]

# What the card's protocol takes from BRIGHT, as data (like mteb's TaskMetadata); the tests
# check them against mteb's own task metadata (`mteb.get_task("BrightRetrieval")`).
TASK_NAME = "BrightRetrieval"
REPO = "xlangai/BRIGHT"
# mteb's BrightRetrieval pins this revision: the card's numbers were measured on it.
REVISION = "a75a0eb483f6a5233a6efc2d63d71540a4443dfb"
# The 12 domains (BRIGHT's ``examples``/``documents`` splits), in the BRIGHT paper's order.
SPLITS = [
    "biology", "earth_science", "economics", "psychology", "robotics", "stackoverflow",
    "sustainable_living", "leetcode", "pony", "aops", "theoremqa_questions", "theoremqa_theorems",
]  # fmt: skip
# ``{domain}`` of the card's query template ("Given a {domain} post, ..."), per split.
DOMAINS = {
    "biology": "Biology", "earth_science": "Earth Science", "economics": "Economics",
    "psychology": "Psychology", "robotics": "Robotics", "stackoverflow": "Stackoverflow",
    "sustainable_living": "Sustainable Living", "leetcode": "Leetcode", "pony": "Pony", "aops": "AoPS",
    "theoremqa_questions": "TheoremQA", "theoremqa_theorems": "TheoremQA",
}  # fmt: skip
