"""Experiments and model lineage: which models the DAG makes, and what each one is named.

An experiment (config ``experiments``) is a set of overrides of ``widen`` / ``train``. Its
models follow the curriculum (``kinds``: ``widened``, ``stage1``, ``stage2``, in the order
``widen.after`` / ``widen.to`` decide), and each model is named by its *lineage*: a hash of
its own settings and of everything upstream (its parent's lineage, down to the base model's
source). Two experiments whose models have the same lineage share that model, computed
once. The experiment ``main`` owns the plain names (``widened``, ``stage1``, ``stage2``);
another experiment's own models are ``<experiment>-<kind>``. Shared models belong to the
first owner in the canonical order (``main``, then the others by name), so neither the
order of the config's keys nor of the experiments changes any name.

An experiment may ask for several training seeds (``seeds: [0, 1, 2]``): it becomes one
experiment per seed, ``<experiment>.seed<N>``, whose training stages use that seed instead of
the top-level ``seed``. Downloads, shards and widening do not read the training seed (widening
has its own ``widen.seed``), so the seeds share them, and a seed equal to the top-level one is
the experiment's unseeded model itself (for ``main``'s recipe: ``main``'s own models).
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cached_property
from typing import Any

__all__ = ["MAIN", "SEED_NAME", "WIDEN_KEYS", "Lineage", "canonical"]

MAIN = "main"
SEED_NAME = "{experiment}.seed{seed}"  # one experiment per seed of an experiment's `seeds`
# widen settings that change the widened weights (``after`` only orders the curriculum)
WIDEN_KEYS = ("to", "seed", "std_fraction", "min_std", "use_residual_2_dense")
# train settings that do not change what is learned: the cluster shape (the global batch
# fixes the optimisation; world size only splits it) and bookkeeping
TRAIN_NON_RECIPE = (
    "nodes",
    "gpus_per_node",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "dataloader_num_workers",
)
STAGES = ("stage1", "stage2")


def canonical(value: Any) -> Any:
    """``value`` with every dict's keys sorted, recursively: its repr no longer depends on the
    order keys were written in (Snakemake compares params by repr).

    Parameters
    ----------
    value
        Config data: dicts, lists and tuples (both returned as lists), scalars (returned as they are).

    Examples
    --------
    >>> canonical({"b": 1, "a": [{"y": 2, "x": 1}]})
    {'a': [{'x': 1, 'y': 2}], 'b': 1}
    """
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


class Lineage:
    """The DAG-made models of a config's experiments.

    Parameters
    ----------
    config
        The validated workflow config (``widen``, ``train``, ``seed``, ``sources`` and the
        optional ``experiments``).

    Examples
    --------
    >>> config = {"seed": 1, "sources": {"base_model": {"repo": "m", "revision": "r"}},
    ...           "widen": {"to": 128, "after": "base", "seed": 0, "std_fraction": 0.1,
    ...                     "min_std": 0.001, "use_residual_2_dense": None},
    ...           "train": {"nodes": 1, "stage1": {"learning_rate": 1e-5}, "stage2": {"learning_rate": 5e-6}},
    ...           "experiments": {"lr2": {"train": {"stage2": {"learning_rate": 1e-5}}}, "main": {}}}
    >>> lineage = Lineage(config)
    >>> lineage.experiments
    ['main', 'lr2']
    >>> list(lineage.models)
    ['widened', 'stage1', 'stage2', 'lr2-stage2']
    >>> lineage.parent_id("lr2-stage2")
    'stage1'
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        given = config.get("experiments") or {MAIN: {}}
        self.overrides: dict[str, dict[str, Any]] = {}
        self.seeds: dict[str, int] = {}  # a seed's experiment -> its training seed
        self.seeded: dict[str, dict[int, str]] = {}  # declared experiment -> {seed: its experiment}
        for name in given:
            spec = dict(given[name] or {})
            seeds = spec.pop("seeds", None)
            if seeds is None or name == MAIN:  # main's seeds are refused by problems()
                self.overrides.setdefault(name, spec)
                continue
            self.seeded[name] = {}
            for seed in seeds:
                expanded = SEED_NAME.format(experiment=name, seed=seed)
                self.overrides.setdefault(expanded, spec)  # a clash with a declared name: problems()
                self.seeds[expanded] = seed
                self.seeded[name][seed] = expanded
        others = sorted(name for name in self.overrides if name != MAIN)
        self.experiments = ([MAIN] if MAIN in self.overrides else []) + others

    def setting(self, section: str, experiment: str) -> dict[str, Any]:
        """``config[section]`` (``widen`` or ``train``) with the experiment's overrides merged in."""
        from snakemake.utils import update_config

        merged = copy.deepcopy(self.config[section])
        update_config(merged, copy.deepcopy(self.overrides[experiment].get(section, {})))
        return merged

    def kinds(self, experiment: str) -> list[str]:
        """The experiment's models in curriculum order.

        Examples
        --------
        >>> w = {"to": 128, "after": "stage1"}
        >>> Lineage({"widen": w, "experiments": {"main": {}}}).kinds("main")
        ['stage1', 'widened', 'stage2']
        """
        widen = self.setting("widen", experiment)
        if widen["to"] is None:
            return list(STAGES)
        if widen["after"] == "base":
            return ["widened", *STAGES]
        return ["stage1", "widened", "stage2"]

    def parent(self, experiment: str, kind: str) -> str | None:
        """The kind a model starts from (None: the base model)."""
        kinds = self.kinds(experiment)
        position = kinds.index(kind)
        return kinds[position - 1] if position else None

    def own_settings(self, experiment: str, kind: str) -> dict[str, Any]:
        """What a model's own step depends on (not its parent's)."""
        if kind == "widened":
            widen = self.setting("widen", experiment)
            return {key: widen[key] for key in WIDEN_KEYS}
        train = self.setting("train", experiment)
        shared = {k: v for k, v in train.items() if k not in STAGES and k not in TRAIN_NON_RECIPE}
        return shared | train[kind] | {"seed": self.train_seed(experiment)}

    def train_seed(self, experiment: str) -> int:
        """The training seed of an experiment: its own of ``seeds``, else the top-level ``seed``."""
        return self.seeds.get(experiment, self.config["seed"])

    def lineage(self, experiment: str, kind: str) -> str:
        """sha256 of a model's own settings and, recursively, of its parent's lineage."""
        parent = self.parent(experiment, kind)
        upstream = self.lineage(experiment, parent) if parent else self.config["sources"]["base_model"]
        blob = json.dumps([kind, upstream, self.own_settings(experiment, kind)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def model_id(self, experiment: str, kind: str) -> str:
        """The name of an experiment's model: that of its first owner in canonical order."""
        target = self.lineage(experiment, kind)
        owner = next(e for e in self.experiments if kind in self.kinds(e) and self.lineage(e, kind) == target)
        return kind if owner == MAIN else f"{owner}-{kind}"

    @cached_property
    def models(self) -> dict[str, tuple[str, str]]:
        """model id -> (owning experiment, kind), in canonical order, each model once."""
        out: dict[str, tuple[str, str]] = {}
        for experiment in self.experiments:
            for kind in self.kinds(experiment):
                out.setdefault(self.model_id(experiment, kind), (experiment, kind))
        return out

    def made(self, kind: str) -> list[str]:
        """Ids of the models of one kind, across experiments."""
        return [mid for mid, (_, k) in self.models.items() if k == kind]

    def parent_id(self, model_id: str) -> str | None:
        """The id of the model ``model_id`` starts from (None: the base model)."""
        experiment, kind = self.models[model_id]
        parent = self.parent(experiment, kind)
        return None if parent is None else self.model_id(experiment, parent)

    def evaluated(self) -> list[str]:
        """Evaluated models: DAG-made ones (kinds in ``evaluate_trained``), then ``evaluate_models`` by name."""
        made = [mid for mid, (_, kind) in self.models.items() if kind in self.config["evaluate_trained"]]
        return made + sorted(self.config["evaluate_models"])

    def base_id(self) -> str | None:
        """The ``evaluate_models`` entry that is the base model (the same source), if any."""
        base = self.config["sources"]["base_model"]
        return next(
            (n for n in sorted(self.config["evaluate_models"]) if self.config["evaluate_models"][n] == base), None
        )

    def evaluated_ancestor(self, model_id: str) -> str | None:
        """The nearest evaluated model ``model_id`` was made from (the base model's entry last)."""
        evaluated = self.evaluated()
        parent = self.parent_id(model_id)
        while parent is not None and parent not in evaluated:
            parent = self.parent_id(parent)
        return parent if parent is not None else self.base_id() if self.base_id() in evaluated else None

    def default_pairs(self) -> list[tuple[str, str]]:
        """(model, baseline) pairs the paired tests compare by default: each evaluated model the DAG
        made against the nearest evaluated model it was made from, then each other experiment's
        final model against ``main``'s (when both are evaluated and differ).

        Examples
        --------
        >>> config = {"seed": 1, "sources": {"base_model": {"repo": "m"}}, "evaluate_models": {"base": {"repo": "m"}},
        ...           "widen": {"to": 128, "after": "base", "seed": 0, "std_fraction": 0.1, "min_std": 0.001,
        ...                     "use_residual_2_dense": None},
        ...           "train": {"stage1": {"learning_rate": 1e-5}, "stage2": {"learning_rate": 5e-6}},
        ...           "evaluate_trained": ["widened", "stage2"], "experiments": {"main": {}, "s": {"seeds": [1, 2]}}}
        >>> Lineage(config).default_pairs()  # doctest: +NORMALIZE_WHITESPACE
        [('widened', 'base'), ('stage2', 'widened'), ('s.seed2-stage2', 'widened'), ('s.seed2-stage2', 'stage2')]
        """
        evaluated = self.evaluated()
        pairs = [(m, a) for m in evaluated if m in self.models and (a := self.evaluated_ancestor(m)) is not None]
        final = {e: self.model_id(e, self.kinds(e)[-1]) for e in self.experiments}
        if MAIN in final:
            pairs += [
                (final[e], final[MAIN])
                for e in self.experiments[1:]
                if final[e] != final[MAIN] and {final[e], final[MAIN]} <= set(evaluated)
            ]
        return list(dict.fromkeys(pairs))

    def seed_groups(self) -> list[dict[str, Any]]:
        """Per experiment with ``seeds`` and per evaluated kind the seeds train: the seeds and their models.

        Examples
        --------
        >>> config = {"seed": 1, "sources": {"base_model": {"repo": "m"}}, "evaluate_models": {},
        ...           "widen": {"to": None}, "train": {"stage1": {"learning_rate": 1e-5}, "stage2": {"learning_rate": 5e-6}},
        ...           "evaluate_trained": ["stage2"], "experiments": {"main": {}, "s": {"seeds": [1, 2]}}}
        >>> Lineage(config).seed_groups()
        [{'experiment': 's', 'kind': 'stage2', 'seeds': [1, 2], 'models': ['stage2', 's.seed2-stage2']}]
        """
        groups = []
        for name, by_seed in self.seeded.items():
            first = next(iter(by_seed.values()))
            for kind in (k for k in self.kinds(first) if k in self.config["evaluate_trained"]):
                models = [self.model_id(e, kind) for e in by_seed.values()]
                if len(set(models)) < 2:  # a model the seeds share (widened): no spread to show
                    continue
                groups.append({"experiment": name, "kind": kind, "seeds": list(by_seed), "models": models})
        return groups

    def problems(self) -> list[str]:
        """What the schema cannot refuse about experiments' seeds and the tested pairs, one line each.

        Examples
        --------
        >>> config = {"seed": 1, "evaluate_trained": [], "evaluate_models": {"base": {}}, "sources": {"base_model": {}},
        ...           "widen": {"to": None}, "train": {"stage1": {}, "stage2": {}},
        ...           "experiments": {"main": {"seeds": [1]}, "a": {"seeds": [3]}, "a.seed3": {}},
        ...           "statistics": {"pairs": [["base", "nope"]]}}
        >>> for line in Lineage(config).problems():
        ...     print(line)
        config: experiments/main/seeds: main is the recipe's one run (the top-level seed); give seeds to another experiment, e.g. seeds: {seeds: [0, 1]}
        config: experiments/a/seeds: seed 3 would be experiment 'a.seed3', which is also declared
        config: statistics/pairs/0: 'nope' is not an evaluated model (evaluated: base)
        """
        given = self.config.get("experiments") or {}
        out = []
        if (given.get(MAIN) or {}).get("seeds") is not None:
            out.append(
                "config: experiments/main/seeds: main is the recipe's one run (the top-level seed); "
                "give seeds to another experiment, e.g. seeds: {seeds: [0, 1]}"
            )
        for name, by_seed in self.seeded.items():
            out += [
                f"config: experiments/{name}/seeds: seed {seed} would be experiment {e!r}, which is also declared"
                for seed, e in by_seed.items()
                if e in given
            ]
        return out + self.pair_problems()

    def pair_problems(self) -> list[str]:
        """``statistics.pairs`` entries that name a model not evaluated, or a model twice."""
        pairs = (self.config.get("statistics") or {}).get("pairs") or []
        evaluated = self.evaluated()
        out = []
        for i, pair in enumerate(pairs):
            unknown = [m for m in pair if m not in evaluated]
            if unknown:
                out.append(
                    f"config: statistics/pairs/{i}: {unknown[0]!r} is not an evaluated model "
                    f"(evaluated: {', '.join(evaluated)})"
                )
            elif pair[0] == pair[1]:
                out.append(f"config: statistics/pairs/{i}: a model against itself ({pair[0]!r})")
        return out

    def pairs(self) -> list[tuple[str, str]]:
        """The (model, baseline) pairs tested: ``statistics.pairs`` if given, else :meth:`default_pairs`."""
        given = (self.config.get("statistics") or {}).get("pairs")
        return [tuple(p) for p in given] if given is not None else self.default_pairs()
