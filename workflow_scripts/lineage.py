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
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cached_property
from typing import Any

__all__ = ["MAIN", "WIDEN_KEYS", "Lineage", "canonical"]

MAIN = "main"
# widen settings that change the widened weights (``after`` only orders the curriculum)
WIDEN_KEYS = ("to", "seed", "std_fraction", "min_std", "use_residual_2_dense")
# train settings that do not change what is learned: the cluster shape (the global batch
# fixes the optimisation; world size only splits it) and bookkeeping
TRAIN_NON_RECIPE = ("nodes", "gpus_per_node", "save_steps", "save_total_limit", "logging_steps",
                    "dataloader_num_workers")  # fmt: skip
STAGES = ("stage1", "stage2")


def canonical(value: Any) -> Any:
    """``value`` with every dict's keys sorted, recursively: its repr no longer depends on the
    order keys were written in (Snakemake compares params by repr).

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
        self.overrides = {name: given[name] or {} for name in given}
        others = sorted(name for name in given if name != MAIN)
        self.experiments = ([MAIN] if MAIN in given else []) + others

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
        return shared | train[kind] | {"seed": self.config["seed"]}

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
