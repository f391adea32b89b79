"""The contamination audit: training triples that overlap BRIGHT test queries, counted per split."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

__all__ = ["ContaminationAudit", "normalise"]


def normalise(text: str) -> str:
    """Lower case, punctuation and runs of white space folded to one space.

    Parameters
    ----------
    text
        A query or document text.

    Examples
    --------
    >>> normalise("  Why do Insects -- fly?  ")
    'why do insects fly'
    """
    return " ".join(re.sub(r"[^\w\s]+", " ", text.lower()).split())


class ContaminationAudit:
    """Flags training triples that overlap BRIGHT test queries, per split.

    Two tests: the training query text equals a test query after :func:`normalise`; or the
    training query or positive shares a word ``ngram``-gram with a test query (test queries
    shorter than ``ngram`` words count as one gram).
    """

    def __init__(self, examples: dict[str, list[dict[str, Any]]], ngram: int) -> None:
        self.ngram = ngram
        self.exact: dict[str, set[tuple[str, str]]] = {}
        self.grams: dict[str, set[tuple[str, str]]] = {}
        self.queries = {split: len(rows) for split, rows in examples.items()}
        for split, rows in examples.items():
            for row in rows:
                key = (split, str(row["id"]))
                text = normalise(row["query"])
                self.exact.setdefault(text, set()).add(key)
                for gram in self._grams(text) or [text]:
                    self.grams.setdefault(gram, set()).add(key)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.hit: set[tuple[str, str]] = set()
        self._cache: dict[int, frozenset[tuple[str, str]]] = {}

    def _grams(self, text: str) -> list[str]:
        words = text.split()
        return [" ".join(words[i : i + self.ngram]) for i in range(len(words) - self.ngram + 1)]

    def _overlap(self, text: str) -> frozenset[tuple[str, str]]:
        key = hash(text)
        if key not in self._cache:
            if len(self._cache) > 200_000:  # bounded: positives repeat within a row, not beyond
                self._cache.clear()
            norm = normalise(text)
            found = set(self.exact.get(norm, ()))
            for gram in self._grams(norm):
                found |= self.grams.get(gram, set())
            self._cache[key] = frozenset(found)
        return self._cache[key]

    def check(self, triple: dict[str, str]) -> bool:
        """Count this triple's overlaps; True when it overlaps any test query."""
        text = triple["query"].split("\nQuery: ", 1)[-1] if triple["instruction"] else triple["query"]
        exact = self.exact.get(normalise(text), set())
        in_query = self._overlap(text)
        in_positive = self._overlap(triple["positive"])
        for kind, keys in (("exact_query", exact), ("query_ngram", in_query), ("positive_ngram", in_positive)):
            for split in {k[0] for k in keys}:
                self.counts[(split, kind)] += 1
        self.hit |= exact | in_query | in_positive
        return bool(exact or in_query or in_positive)

    def table(self) -> list[dict[str, Any]]:
        """One row per BRIGHT split: test queries, overlapping training triples, queries hit."""
        return [
            {
                "split": split,
                "test_queries": n,
                "triples_exact_query": self.counts[(split, "exact_query")],
                "triples_query_ngram": self.counts[(split, "query_ngram")],
                "triples_positive_ngram": self.counts[(split, "positive_ngram")],
                "test_queries_hit": sum(1 for k in self.hit if k[0] == split),
            }
            for split, n in self.queries.items()
        ]
