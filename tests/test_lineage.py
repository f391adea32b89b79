"""Experiments and lineage: same lineage -> same model, curriculum orders, naming."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO

from workflow_scripts.lineage import Lineage, canonical


@pytest.fixture()
def config():
    return yaml.safe_load((REPO / "config.yaml").read_text())


def with_experiments(config, experiments):
    return copy.deepcopy(config) | {"experiments": experiments}


def test_main_alone_gives_the_three_plain_names(config):
    assert list(Lineage(config).models) == ["widened", "stage1", "stage2"]


def test_same_lineage_is_the_same_model(config):
    # lr2 changes stage 2 only: it shares widened and stage1 with main
    lineage = Lineage(with_experiments(config, {"main": {}, "lr2": {"train": {"stage2": {"learning_rate": 1e-5}}}}))
    assert list(lineage.models) == ["widened", "stage1", "stage2", "lr2-stage2"]
    assert lineage.model_id("lr2", "stage1") == "stage1"
    assert lineage.parent_id("lr2-stage2") == "stage1"
    # a variant whose overrides equal the defaults is main itself
    same = Lineage(with_experiments(config, {"main": {}, "copy": {"train": {"stage2": {"learning_rate": 5e-6}}}}))
    assert list(same.models) == ["widened", "stage1", "stage2"]


def test_an_upstream_change_renames_everything_downstream(config):
    lineage = Lineage(with_experiments(config, {"main": {}, "seed1": {"widen": {"seed": 1}}}))
    assert list(lineage.models)[3:] == ["seed1-widened", "seed1-stage1", "seed1-stage2"]
    assert lineage.parent_id("seed1-stage1") == "seed1-widened"


def test_widen_after_and_to_order_the_curriculum(config):
    lineage = Lineage(with_experiments(config, {"main": {}, "late": {"widen": {"after": "stage1"}},
                                                "dim64": {"widen": {"to": None}}}))  # fmt: skip
    assert lineage.kinds("main") == ["widened", "stage1", "stage2"]
    assert lineage.kinds("late") == ["stage1", "widened", "stage2"]
    assert lineage.kinds("dim64") == ["stage1", "stage2"]
    # widening after stage 1: stage 1 trains the unwidened base, exactly what dim64's does
    assert lineage.model_id("late", "stage1") == lineage.model_id("dim64", "stage1") == "dim64-stage1"
    assert lineage.parent_id("late-widened") == "dim64-stage1"
    assert lineage.parent_id("dim64-stage1") is None  # from the base model


def test_names_do_not_depend_on_key_order(config):
    experiments = {"main": {}, "b": {"widen": {"seed": 2}}, "a": {"widen": {"seed": 2}}}
    reordered = dict(reversed(list(experiments.items())))
    assert Lineage(with_experiments(config, experiments)).models == Lineage(with_experiments(config, reordered)).models
    # a and b share a lineage: the first by name owns it
    assert "a-widened" in Lineage(with_experiments(config, experiments)).models


def test_cluster_shape_and_bookkeeping_are_not_the_recipe(config):
    lineage = Lineage(with_experiments(config, {"main": {}, "big": {"train": {"nodes": 4, "save_steps": 10}}}))
    assert list(lineage.models) == ["widened", "stage1", "stage2"]


def test_canonical_sorts_nested_keys():
    assert repr(canonical({"b": [{"z": 1, "a": 2}], "a": None})) == "{'a': None, 'b': [{'a': 2, 'z': 1}]}"
