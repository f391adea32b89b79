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
    lineage = Lineage(
        with_experiments(config, {"main": {}, "late": {"widen": {"after": "stage1"}}, "dim64": {"widen": {"to": None}}})
    )
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


def test_seeds_share_everything_the_training_seed_does_not_touch(config):
    seeds = [config["seed"], 1, 2]  # the top-level seed, then two others
    lineage = Lineage(with_experiments(config, {"main": {}, "s": {"seeds": seeds}}))
    stage2 = [lineage.model_id(f"s.seed{n}", "stage2") for n in seeds]
    assert stage2 == ["stage2", "s.seed1-stage2", "s.seed2-stage2"]  # the top-level seed's is main's own
    assert {lineage.model_id(f"s.seed{n}", "widened") for n in seeds} == {"widened"}  # widen.seed is its own
    assert [lineage.train_seed(f"s.seed{n}") for n in seeds] == seeds
    new = [m for m in lineage.models if m not in Lineage(config).models]
    assert new == [f"s.seed{n}-{k}" for n in seeds[1:] for k in ("stage1", "stage2")]
    groups = lineage.seed_groups()
    assert [(g["kind"], g["models"]) for g in groups] == [
        ("stage1", ["stage1", "s.seed1-stage1", "s.seed2-stage1"]),
        ("stage2", stage2),
    ]


def test_adding_a_seed_adds_only_that_seeds_models(config):
    two = Lineage(with_experiments(config, {"main": {}, "s": {"seeds": [1, 2]}})).models
    three = Lineage(with_experiments(config, {"main": {}, "s": {"seeds": [1, 2, 3]}})).models
    assert {m: two[m] for m in two} == {m: three[m] for m in two}
    assert [m for m in three if m not in two] == ["s.seed3-stage1", "s.seed3-stage2"]


def test_seeds_compose_with_other_overrides(config):
    lineage = Lineage(
        with_experiments(
            config, {"main": {}, "lr": {"train": {"stage2": {"learning_rate": 1e-5}}, "seeds": [config["seed"], 7]}}
        )
    )
    # the top-level seed shares main's stage 1 (same lr there) but not its stage 2 (another lr)
    assert lineage.model_id(f"lr.seed{config['seed']}", "stage1") == "stage1"
    assert lineage.model_id(f"lr.seed{config['seed']}", "stage2") == f"lr.seed{config['seed']}-stage2"
    assert lineage.parent_id("lr.seed7-stage2") == "lr.seed7-stage1"


def test_default_pairs_and_their_problems(config):
    lineage = Lineage(with_experiments(config, {"main": {}, "s": {"seeds": [1]}}))
    assert lineage.default_pairs() == [
        ("widened", "base"),
        ("stage1", "widened"),
        ("stage2", "stage1"),
        ("s.seed1-stage1", "widened"),
        ("s.seed1-stage2", "s.seed1-stage1"),
        ("s.seed1-stage2", "stage2"),
    ]
    assert lineage.problems() == []
    bad = copy.deepcopy(config) | {
        "statistics": config["statistics"] | {"pairs": [["stage2", "stage2"], ["x", "base"]]}
    }
    assert Lineage(bad).problems() == [
        "config: statistics/pairs/0: a model against itself ('stage2')",
        "config: statistics/pairs/1: 'x' is not an evaluated model (evaluated: widened, stage1, stage2, base)",
    ]
    assert Lineage(bad).pairs() == [("stage2", "stage2"), ("x", "base")]  # as given (refused at parse time)


@pytest.mark.parametrize(
    ("overlay", "line"),
    [
        ("experiments:\n  main: {seeds: [1, 2]}\n", "config: experiments/main/seeds: main is the recipe's one run"),
        (
            "statistics:\n  pairs: [[stage2, nobody]]\n",
            "config: statistics/pairs/0: 'nobody' is not an evaluated model",
        ),
        ("experiments:\n  s: {seeds: [1, 1]}\n", "config: experiments/s/seeds: [1, 1] has non-unique elements"),
    ],
)
def test_bad_seeds_and_pairs_stop_the_parse_in_one_line(tmp_path, overlay, line):
    from conftest import snakemake

    (tmp_path / "bad.yaml").write_text(overlay)
    proc = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith("config: ")]
    assert len(lines) == 1 and lines[0].startswith(line), lines
