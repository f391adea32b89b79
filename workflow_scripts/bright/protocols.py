"""BRIGHT evaluation protocols as data: what a published BRIGHT number was measured under.

Papers and model cards report BRIGHT nDCG@10 under different protocols, most of them without
saying which (PyLate issue #209: biology 29.5 "exact" against a card's 33.25). Four choices
move the numbers: where the queries come from (``examples`` or an LLM-reasoning set such as
``gpt4_reason``), how a query is written for the model (a template, or one instruction per
split), whether each query's ``excluded_ids`` are removed before ranking, and which corpus
and qrels are scored (``documents`` + ``gold_ids``, or ``long_documents`` +
``gold_ids_long``). A :class:`Protocol` fixes all four, as a frozen record (like mteb's
``TaskMetadata``); the presets below are the protocols researchers report:

- ``card``: mteb's legacy ``BrightRetrieval`` as the model card ran it: the card's template,
  excluded ids IGNORED (``bright_retrieval.py`` never reads them), ``documents`` + ``gold_ids``.
- ``bright``: BRIGHT's official ``run.py``: excluded ids removed (``get_scores`` pops them),
  top 1000 kept; BRIGHT lets each model bring its own query instruction, ours is the card's.
- ``reasoning``: ``run.py --reasoning gpt4``: the ``gpt4_reason`` query set (same rows as
  ``examples``, the query replaced by GPT-4's reasoning), otherwise as ``bright``.
- ``long``: ``run.py --long_context``: ``long_documents`` + ``gold_ids_long``, excluded ids
  removed; only the splits that have long documents (:data:`~workflow_scripts.bright.meta.LONG_SPLITS`).
- ``mteb-v1.1``: mteb's per-domain tasks (``BrightBiologyRetrieval`` ...,
  ``bright_v1_1_retrieval.py``, mteb 2.10-2.26): excluded ids removed through per-query
  candidate lists (``top_ranked``: all documents but the query's excluded ids). The query
  is the raw BRIGHT query: the tasks declare a prompt, but mteb applies task prompts only to
  instruction models; its PyLate wrapper (``MultiVectorModel``, ``use_instructions=False``)
  passes only the model's own prompts (``get_prompt(self.model_prompts, ...)``), so a PyLate
  ColBERT is scored on the bare query. mteb reads its copy ``mteb/BRIGHT@c26703e6``; we score
  the pinned ``xlangai/BRIGHT`` (same rows assumed, UNVERIFIED offline).
- ``mteb-v1.1-prompt``: the same tasks with the prompt they declare prepended ("Represent this
  biology post for searching relevant passages: "), as an instruction model would get it.

``config.yaml`` ``evaluate.protocols`` maps a name (a results folder) to a preset and optional
overrides of its fields: ``card: {}``, ``gpt4_reason: {preset: reasoning}``,
``mine: {preset: bright, exclude_ids: false}`` (:func:`resolve`). Two protocols compare like
with like when their :meth:`Protocol.definition` is equal; a configured protocol carries the
name of the preset it equals (``preset``), which is how published numbers find their table.

Evaluation jobs (:func:`evaluation_rules`): one per model and split, or per model and the two
splits that share one corpus (:data:`~workflow_scripts.bright.meta.SHARED_DOCUMENTS`); a job encodes each corpus
it needs once and scores every protocol on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import UserError
from .meta import DOMAINS, LONG_SPLITS, REASONING_CONFIGS, SHARED_DOCUMENTS, SPLITS

__all__ = [
    "CARD_TEMPLATE",
    "CORPORA",
    "PRESETS",
    "QUERY_SETS",
    "EvalRule",
    "Protocol",
    "evaluation_rules",
    "job_name",
    "job_pairs",
    "mteb_files",
    "resolve",
]

# The card's query format: {domain} is the split's label (bright/meta.py DOMAINS), {query} the query.
CARD_TEMPLATE = "Given a {domain} post, retrieve relevant passages that help answer the post.\nQuery: {query}"
# corpus config -> the examples column holding its qrels (run.py: `key = 'gold_ids_long'` with long_context)
CORPORA = {"documents": "gold_ids", "long_documents": "gold_ids_long"}
QUERY_SETS = ["examples", *REASONING_CONFIGS]
# mteb's BRIGHT(v1.1) per-domain tasks and the query prompt each declares (mteb 2.26.24,
# mteb/tasks/retrieval/eng/bright_v1_1_retrieval.py; tests/test_protocols.py checks them).
MTEB_V1_1_TASKS = {
    "biology": "BrightBiologyRetrieval",
    "earth_science": "BrightEarthScienceRetrieval",
    "economics": "BrightEconomicsRetrieval",
    "psychology": "BrightPsychologyRetrieval",
    "robotics": "BrightRoboticsRetrieval",
    "stackoverflow": "BrightStackoverflowRetrieval",
    "sustainable_living": "BrightSustainableLivingRetrieval",
    "leetcode": "BrightLeetcodeRetrieval",
    "pony": "BrightPonyRetrieval",
    "aops": "BrightAopsRetrieval",
    "theoremqa_questions": "BrightTheoremQAQuestionsRetrieval",
    "theoremqa_theorems": "BrightTheoremQATheoremsRetrieval",
}
MTEB_V1_1_PROMPTS = {
    **{s: f"Represent this {s} post for searching relevant passages: " for s in LONG_SPLITS if s != "pony"},
    "pony": "Represent this Pony question for searching relevant passages: ",
    "leetcode": "Represent this Coding problem for searching relevant examples: ",
    "aops": "Represent this Math problem for searching relevant examples: ",
    "theoremqa_questions": "Represent this Math problem for searching relevant examples: ",
    "theoremqa_theorems": "Represent this Math problem for searching relevant theorems: ",
}
# Why a mteb-v1.1 row of ours can differ from mteb's published one (mteb 2.26 pylate_models.py,
# tests/test_protocols.py checks the two paths against the installed mteb).
MTEB_SCORING_NOTE = (
    "How mteb scores it: mteb runs a PyLate model through a PLAID index (approximate search) on the splits "
    "without excluded ids, and the official Reason-ModernColBERT run (mean 22.74, mteb 2.10.3) filtered the "
    "others with FastPlaid's subset feature; this workflow scores every split exactly (exact MaxSim over the "
    "whole corpus, which agrees with mteb's own rerank path split by split), so our row can differ from the "
    "published one by PLAID's approximation"
)
# The fields a config entry may override (the rest is naming).
SETTABLE = ("description", "queries", "query_template", "instructions", "exclude_ids", "corpus")


@dataclass(frozen=True)
class Protocol:
    """One way of scoring BRIGHT: queries, their format, excluded ids, corpus and qrels.

    Attributes
    ----------
    name
        The protocol's name: its results folder (``eval/<name>/``) and table.
    description
        What it is and who reports it, one sentence.
    queries
        The BRIGHT config the queries (and their ids, qrels, excluded ids) come from:
        ``examples`` or a reasoning set (:data:`~workflow_scripts.bright.meta.REASONING_CONFIGS`).
    query_template
        How a query is written for the model: ``{query}`` and optionally ``{domain}``.
    instructions
        Per-split templates that replace ``query_template`` for their split.
    exclude_ids
        Remove each query's ``excluded_ids`` before ranking (BRIGHT) or score them (legacy mteb).
    corpus
        ``documents`` (qrels ``gold_ids``) or ``long_documents`` (qrels ``gold_ids_long``).
    mteb_task
        Task name of the mteb-format result; ``mteb_tasks`` names one task per split instead.
    mteb_split
        The mteb evaluation split the scores sit under (``standard``, ``long``).
    preset
        The preset this protocol equals (same :meth:`definition`), or None: set by :func:`resolve`.

    Examples
    --------
    >>> card = PRESETS["card"]
    >>> card.qrels, card.covers("leetcode"), PRESETS["long"].covers("leetcode")
    ('gold_ids', True, False)
    >>> card.query("pony", "How?")
    'Given a Pony post, retrieve relevant passages that help answer the post.\\nQuery: How?'
    >>> PRESETS["mteb-v1.1-prompt"].query("pony", "How?")
    'Represent this Pony question for searching relevant passages: How?'
    >>> PRESETS["mteb-v1.1"].mteb_result("aops")
    ('BrightAopsRetrieval', 'standard', 'default')
    """

    name: str
    description: str
    queries: str = "examples"
    query_template: str = CARD_TEMPLATE
    instructions: Mapping[str, str] = field(default_factory=dict)
    exclude_ids: bool = True
    corpus: str = "documents"
    mteb_task: str = "BrightRetrieval"
    mteb_tasks: Mapping[str, str] = field(default_factory=dict)
    mteb_split: str = "standard"
    preset: str | None = None

    @property
    def qrels(self) -> str:
        """The examples column that judges this protocol's corpus."""
        return CORPORA[self.corpus]

    def covers(self, split: str) -> bool:
        """Whether ``split`` has this protocol's corpus (long documents exist for 8 splits)."""
        return self.corpus == "documents" or split in LONG_SPLITS

    def template(self, split: str) -> str:
        """The query template of ``split``: its instruction if it has one, else ``query_template``."""
        return self.instructions.get(split, self.query_template)

    def query(self, split: str, query: str) -> str:
        """The text the model encodes for ``query`` of ``split``."""
        return self.template(split).format(domain=DOMAINS[split], query=query)

    def mteb_result(self, split: str) -> tuple[str, str, str]:
        """(task name, evaluation split, hf_subset) of ``split``'s scores in mteb's layout.

        One task per split (mteb-v1.1) has the single subset ``default``; the legacy tasks
        have one subset per domain.
        """
        if split in self.mteb_tasks:
            return self.mteb_tasks[split], self.mteb_split, "default"
        return self.mteb_task, self.mteb_split, split

    def definition(self) -> dict[str, Any]:
        """What decides a score: equal definitions compare like with like (names do not matter)."""
        return {
            "queries": self.queries,
            "templates": {s: self.template(s) for s in SPLITS},
            "exclude_ids": self.exclude_ids,
            "corpus": self.corpus,
        }

    def for_job(self, splits: list[str]) -> dict[str, Any]:
        """Everything an evaluation job of ``splits`` needs, as JSON (a job's settings).

        Only the job's own splits are named, so an instruction edited for one split reruns
        that split's jobs only (and not which preset it equals: the summary's business).
        """
        return {
            "name": self.name,
            "queries": self.queries,
            "exclude_ids": self.exclude_ids,
            "corpus": self.corpus,
            "qrels": self.qrels,
            "templates": {s: self.template(s) for s in splits},
            "domains": {s: DOMAINS[s] for s in splits},
            "mteb": {s: list(self.mteb_result(s)) for s in splits},
        }

    def summary(self, splits: list[str]) -> dict[str, Any]:
        """What the summary and the report say about this protocol over the evaluated ``splits``."""
        templates = sorted({self.template(s) for s in splits if self.covers(s)})
        return {
            "name": self.name,
            "preset": self.preset,
            "description": self.description,
            "queries": self.queries,
            "templates": templates,
            "exclude_ids": self.exclude_ids,
            "corpus": self.corpus,
            "qrels": self.qrels,
            "splits": [s for s in splits if self.covers(s)],
            "mteb": {s: list(self.mteb_result(s)) for s in splits if self.covers(s)},
            "notes": self.notes(),
        }

    def notes(self) -> list[str]:
        """What a reader must know to compare this protocol's rows with published ones.

        Examples
        --------
        >>> PRESETS["card"].notes(), "PLAID" in PRESETS["mteb-v1.1"].notes()[0]
        ([], True)
        """
        return [MTEB_SCORING_NOTE] if self.mteb_tasks else []


PRESETS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="card",
            description="mteb's legacy BrightRetrieval as the model card ran it: excluded ids scored, not removed",
            exclude_ids=False,
        ),
        Protocol(name="bright", description="BRIGHT's official run.py: excluded ids removed, top 1000"),
        Protocol(
            name="reasoning",
            description="BRIGHT run.py --reasoning gpt4: GPT-4's reasoning as the query, excluded ids removed",
            queries="gpt4_reason",
        ),
        Protocol(
            name="long",
            description="BRIGHT run.py --long_context: long_documents judged by gold_ids_long, excluded ids removed",
            corpus="long_documents",
            mteb_task="BrightLongRetrieval",
            mteb_split="long",
        ),
        Protocol(
            name="mteb-v1.1",
            description="mteb's per-domain BRIGHT(v1.1) tasks with the query a PyLate model gets (the bare "
            "query), excluded ids removed through candidate lists, scored exactly (mteb itself searches a PLAID "
            "index, approximate, where a split has no excluded ids; the official 22.74 run used FastPlaid's "
            "subset feature for the others)",
            query_template="{query}",
            mteb_tasks=MTEB_V1_1_TASKS,
        ),
        Protocol(
            name="mteb-v1.1-prompt",
            description="mteb's BRIGHT(v1.1) tasks with the prompt each declares (what an instruction model gets), "
            "scored exactly (mteb itself searches a PLAID index, approximate)",
            query_template="{query}",
            instructions={s: p + "{query}" for s, p in MTEB_V1_1_PROMPTS.items()},
            mteb_tasks=MTEB_V1_1_TASKS,
        ),
    )
}


def _match(protocol: Protocol) -> str | None:
    """The preset whose definition ``protocol`` has, if any (the first, in preset order)."""
    return next((name for name, p in PRESETS.items() if p.definition() == protocol.definition()), None)


def resolve(entries: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Protocol]:
    """The configured protocols (``evaluate.protocols``), in a canonical order.

    An entry is a preset and overrides of its fields (``instructions`` are merged split by split
    into the preset's); a name that is a preset needs no ``preset`` key. An entry ``false``
    removes the protocol: config files merge, so an overlay (``--configfile``) drops a protocol of
    ``config.yaml`` with ``card: false`` (``protocols: {}`` would merge nothing).
    The order is the presets' (card, bright, reasoning, long, mteb-v1.1, ...),
    then the name, never the config's key order (a reordered config reruns nothing).

    Parameters
    ----------
    entries
        ``evaluate.protocols``: name → preset and overrides (None or ``{}``: the preset of that name; False: removed).

    Returns
    -------
    Name → protocol, each with ``preset`` set to the preset whose definition it has (None if none).

    Examples
    --------
    >>> found = resolve({"mine": {"preset": "bright", "exclude_ids": False}, "bright": None, "card": {}})
    >>> [(p.name, p.preset) for p in found.values()]
    [('card', 'card'), ('mine', 'card'), ('bright', 'bright')]
    >>> list(resolve({"card": {}, "bright": False}))
    ['card']
    >>> resolve({"x": {}})
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: config: evaluate/protocols/x: not a preset name; say which preset it starts from (preset: one of card, bright, reasoning, long, mteb-v1.1, mteb-v1.1-prompt)
    """
    out = {}
    for name, entry in entries.items():
        if entry is False:  # removed (by an overlay config)
            continue
        entry = dict(entry or {})
        base = entry.pop("preset", name)
        if base not in PRESETS:
            raise UserError(
                f"config: evaluate/protocols/{name}: not a preset name; say which preset it starts "
                f"from (preset: one of {', '.join(PRESETS)})"
            )
        fields = {k: v for k, v in entry.items() if k in SETTABLE}
        if "instructions" in fields:  # per split: `instructions: {pony: ...}` changes pony's only
            fields["instructions"] = {**PRESETS[base].instructions, **fields["instructions"]}
        protocol = replace(PRESETS[base], name=name, **fields)
        out[name] = replace(protocol, preset=_match(protocol))
    order = list(PRESETS)
    return dict(sorted(out.items(), key=lambda kv: (order.index(kv[1].preset or _base(entries, kv[0])), kv[0])))


def _base(entries: Mapping[str, Mapping[str, Any] | None], name: str) -> str:
    return (entries[name] or {}).get("preset", name)


# --------------------------------------------------------------------------- evaluation jobs
@dataclass(frozen=True)
class EvalRule:
    """One evaluation rule of the DAG: the splits it takes and the protocols each job scores.

    ``shared`` rules take their splits together (one job, one corpus); the others take one
    split per job (the ``split`` wildcard, constrained to ``splits``).
    """

    name: str
    splits: tuple[str, ...]
    protocols: tuple[str, ...]
    shared: bool = False


def evaluation_rules(
    protocols: Mapping[str, Protocol], splits: list[str], document_lengths: Mapping[str, int]
) -> list[EvalRule]:
    """The evaluation rules a config needs: every (split, protocol) pair scored once.

    ``evaluate`` takes a split that every protocol covers; ``evaluate_documents_only`` a split
    without long documents when some protocol reads them; ``evaluate_shared_corpus`` the
    splits of :data:`~workflow_scripts.bright.meta.SHARED_DOCUMENTS` in one job, when both are evaluated with
    the same document length (one encoding of their one corpus). A rule with no split is left out.

    Parameters
    ----------
    protocols
        The configured protocols (:func:`resolve`), in their order.
    splits
        The evaluated splits, in config order.
    document_lengths
        Split → its evaluation ``document_length`` (tokens); the shared splits join only when theirs are equal.

    Examples
    --------
    >>> both = resolve({"card": {}, "long": {}})
    >>> lengths = {s: 64 for s in SPLITS}
    >>> for rule in evaluation_rules(both, ["pony", "leetcode", "aops", "theoremqa_questions"], lengths):
    ...     print(rule.name, rule.splits, rule.protocols)
    evaluate ('pony',) ('card', 'long')
    evaluate_documents_only ('leetcode',) ('card',)
    evaluate_shared_corpus ('aops', 'theoremqa_questions') ('card',)
    >>> [r.name for r in evaluation_rules(both, ["aops", "theoremqa_questions"], lengths | {"aops": 32})]
    ['evaluate_documents_only']
    """
    covering = {s: tuple(n for n, p in protocols.items() if p.covers(s)) for s in splits}
    shared = tuple(s for s in SHARED_DOCUMENTS if s in splits)
    if len(shared) < 2 or len({document_lengths[s] for s in shared}) > 1 or len({covering[s] for s in shared}) > 1:
        shared = ()
    rules = []
    for name, full in (("evaluate", True), ("evaluate_documents_only", False)):
        taken = tuple(
            s for s in splits if s not in shared and covering[s] and (covering[s] == tuple(protocols)) == full
        )
        if taken:
            rules.append(EvalRule(name, taken, covering[taken[0]]))
    if shared and covering[shared[0]]:
        rules.append(EvalRule("evaluate_shared_corpus", shared, covering[shared[0]], shared=True))
    return rules


def job_name(splits: list[str] | tuple[str, ...]) -> str:
    """A job's name in logs and benchmarks: its split, or its splits joined by ``+``.

    Parameters
    ----------
    splits
        The job's splits, in the rule's order.

    Examples
    --------
    >>> job_name(["aops", "theoremqa_questions"])
    'aops+theoremqa_questions'
    """
    return "+".join(splits)


def job_pairs(protocols: list[str] | tuple[str, ...], splits: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """The (protocol, split) results of a job, protocol-major: the order of its output lists.

    Parameters
    ----------
    protocols, splits
        The names of the protocols the job scores and of its splits, each in the rule's order.

    Examples
    --------
    >>> job_pairs(["card", "bright"], ["aops", "theoremqa_questions"])  # doctest: +NORMALIZE_WHITESPACE
    [('card', 'aops'), ('card', 'theoremqa_questions'), ('bright', 'aops'), ('bright', 'theoremqa_questions')]
    """
    return [(p, s) for p in protocols for s in splits]


def mteb_files(protocols: list[dict[str, Any]], models: list[str]) -> list[tuple[str, str, str, list[str]]]:
    """(protocol, model, task, splits) of every mteb-format result file, in output order.

    ``protocols`` are :meth:`Protocol.summary` dicts; a legacy task holds all the protocol's
    splits as subsets, a per-domain task (mteb-v1.1) one split each.

    Parameters
    ----------
    protocols
        :meth:`Protocol.summary` dicts (their ``name``, ``splits`` and ``mteb`` are read).
    models
        The evaluated models' names; every protocol has one file per model and task.

    Examples
    --------
    >>> card, v11 = PRESETS["card"].summary(["pony", "aops"]), PRESETS["mteb-v1.1"].summary(["pony", "aops"])
    >>> for row in mteb_files([card, v11], ["stage2"]):
    ...     print(row)
    ('card', 'stage2', 'BrightRetrieval', ['pony', 'aops'])
    ('mteb-v1.1', 'stage2', 'BrightPonyRetrieval', ['pony'])
    ('mteb-v1.1', 'stage2', 'BrightAopsRetrieval', ['aops'])
    """
    out = []
    for protocol in protocols:
        tasks: dict[str, list[str]] = {}
        for split in protocol["splits"]:
            tasks.setdefault(protocol["mteb"][split][0], []).append(split)
        out += [(protocol["name"], model, task, ss) for model in models for task, ss in tasks.items()]
    return out
