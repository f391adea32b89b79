"""Config checks beyond the schema, and the schema walked against the stage code.

The goal: a config the schema and :func:`semantic_problems` accept never crashes a job on a
type. JSON Schema Draft 2020-12 counts ``2.0`` as an integer, so floats at integer leaves are
refused by ``semantic_problems`` (the stages' typed command lines read ``int``).
"""

from __future__ import annotations

import copy
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.utils import update_config

from workflow_scripts.cli import parser_for, spread_records, to_argv
from workflow_scripts.config_checks import (
    batch_problems,
    float_integer_problems,
    model_name_problems,
    ranking_problems,
    semantic_problems,
    semantic_warnings,
    stage_source_problems,
    step_problems,
    template_problems,
)
from workflow_scripts.config_files import config_problem
from workflow_scripts.errors import UserError
from workflow_scripts.evaluate.job import evaluate_job, evaluate_split
from workflow_scripts.evaluate.trec import MEASURES
from workflow_scripts.files import read_json
from workflow_scripts.model.widen import widen
from workflow_scripts.preflight.forecast import forecast
from workflow_scripts.preflight.measure_evaluate import measure_evaluation
from workflow_scripts.preflight.measure_train import measure_training
from workflow_scripts.shards.build import build_shards
from workflow_scripts.synthetic import demo, rehearsal
from workflow_scripts.train import stage as train
from workflow_scripts.train import trainer

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow_scripts/config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())


def load(*names: str) -> dict[str, Any]:
    """config.yaml, then each named overlay merged in (as `--configfile` does)."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for name in names:
        update_config(config, yaml.safe_load((REPO / name / "config.yaml").read_text()))
    return config


@pytest.fixture()
def config() -> dict[str, Any]:
    return load()


# --------------------------------------------------------------------------- (a) each check
@pytest.mark.parametrize("overlay", [(), ("demo",), ("rehearsal",)])
def test_the_shipped_configs_have_no_problem(overlay):
    config = load(*overlay)
    assert config_problem(config, SCHEMA_PATH) is None
    assert semantic_problems(config) == []


@pytest.mark.parametrize(
    "template, expected",
    [
        ("Given a {domain} post.\nQuery: {query}", []),
        ("{query}", []),
        ("{lang}: {query}", ["field {lang} is never filled"]),
        ("{} {query}", ["positional field {}"]),
        ("{0} {query}", ["positional field {0}"]),
        ("{query.upper} {query}", ["field {query.upper} is never filled"]),
        ("{query[0]}{query}", ["field {query[0]} is never filled"]),
        ("{domain}: {{query}}", ["never inserts the query"]),
        ("{query:d}", ["does not format: Unknown format code 'd'"]),
        ("{query:{width}}", ["does not format: 'width'"]),
        ("{query!x}", ["does not format: Unknown conversion specifier x"]),
        ("{query", ["expected '}' before end of string"]),
        ("{query}}", ["Single '}' encountered"]),
    ],
)
def test_query_template(template, expected):
    problems = template_problems(template)
    assert len(problems) == len(expected), problems
    for line, part in zip(problems, expected):
        assert line.startswith("config: evaluate/query_template: ") and part in line
        assert "\n" not in line


def test_query_template_problems_are_reported_by_semantic_problems(config):
    config["evaluate"]["protocols"]["card"] = {"query_template": "Given a {lang} post: {query}"}
    config["evaluate"]["protocols"]["mine"] = {"preset": "bright", "instructions": {"pony": "{0}: {query}"}}
    assert config_problem(config, SCHEMA_PATH) is None  # the schema only asks for "{query}"
    assert semantic_problems(config) == [
        "config: evaluate/protocols/card/query_template: field {lang} is never filled (only {domain} and {query} are)",
        "config: evaluate/protocols/mine/instructions/pony: positional field {0}; name it {domain} or {query}",
    ]


def test_a_protocol_names_its_preset_and_a_corpus_some_split_has(config):
    config["evaluate"]["protocols"]["nodrop"] = {"exclude_ids": False}
    config["evaluate"]["protocols"]["long"] = {}
    config["evaluate"]["splits"] = ["leetcode", "aops"]
    assert config_problem(config, SCHEMA_PATH) is None
    problems = semantic_problems(config)
    assert problems == [
        "config: evaluate/protocols/nodrop: not a preset name; say which preset it starts from (preset: one of "
        "card, bright, reasoning, long, mteb-v1.1, mteb-v1.1-prompt)"
    ]
    del config["evaluate"]["protocols"]["nodrop"]
    assert semantic_problems(config) == [
        "config: evaluate/protocols/long: its corpus long_documents exists for none of evaluate/splits (only "
        "biology, earth_science, economics, psychology, robotics, stackoverflow, sustainable_living, pony have it)"
    ]


def test_a_protocol_equal_to_another_is_a_warning(config):
    config["evaluate"]["protocols"]["nodrop"] = {"preset": "bright", "exclude_ids": False}
    assert semantic_problems(config) == []
    assert semantic_warnings(config) == [
        "config: evaluate/protocols/nodrop: scores exactly what card does (same definition)"
    ]


def test_templates_it_accepts_do_format(config):
    """What template_problems lets through is what evaluate_split can format."""
    for template in ("{domain}{query}", "{query!r} in {domain:>12}", "{{literal}} {query}"):
        assert template_problems(template) == []
        template.format(domain="Biology", query="Why?")


@pytest.mark.parametrize(
    "shape, ok",
    [
        ({"global_batch_size": 2048, "nodes": 2, "gpus_per_node": 4, "gradient_accumulation_steps": 1}, True),
        ({"global_batch_size": 2048, "nodes": 2, "gpus_per_node": 4, "gradient_accumulation_steps": 2}, True),
        ({"global_batch_size": 2048, "nodes": 3, "gpus_per_node": 1, "gradient_accumulation_steps": 1}, False),
        ({"global_batch_size": 32, "nodes": 1, "gpus_per_node": 1, "gradient_accumulation_steps": 3}, False),
        ({"global_batch_size": 8, "nodes": 2, "gpus_per_node": 4, "gradient_accumulation_steps": 2}, False),
    ],
)
def test_batch_arithmetic(shape, ok):
    problems = batch_problems(shape)
    assert (problems == []) is ok
    if not ok:
        assert problems[0].startswith("config: train/global_batch_size: ")
        # train_stage refuses the same shape, hours later on the cluster
        with pytest.raises(UserError):
            trainer.per_device_batch_size(
                shape["global_batch_size"],
                shape["nodes"] * shape["gpus_per_node"],
                shape["gradient_accumulation_steps"],
            )


def test_mini_batch_larger_than_the_per_device_batch_is_legal(config):
    """GradCache steps through the per-device batch in chunks: any chunk size works."""
    config["train"] |= {"global_batch_size": 64, "mini_batch_size": 48}  # 8 per device
    assert semantic_problems(config) == []


def test_batch_arithmetic_of_an_experiment(config):
    config["experiments"]["accum3"] = {"train": {"gradient_accumulation_steps": 3}}
    assert semantic_problems(config) == [
        "config: experiments/accum3: train/global_batch_size: 2048 is not divisible by nodes 2 x gpus_per_node 4 "
        "x gradient_accumulation_steps 3 = 24"
    ]


def test_an_experiment_cannot_change_the_cluster_shape(config):
    config["experiments"]["big"] = {"train": {"nodes": 4}}
    assert semantic_problems(config) == [
        "config: experiments/big: train/nodes: the cluster shape is the top-level train/nodes (Slurm resources); "
        "an experiment cannot change it"
    ]


@pytest.mark.parametrize(
    "cap, logging, ok", [(None, 5, True), (10, 5, True), (5, 5, True), (0, 1, False), (-1, 1, False), (3, 5, False)]
)
def test_step_cap(cap, logging, ok):
    problems = step_problems({"max_steps": cap, "logging_steps": logging})
    assert (problems == []) is ok
    assert all(p.startswith("config: train/") for p in problems)


def test_stage_sources(config):
    assert stage_source_problems(config["data"]["stages"]) == []
    config["data"]["stages"]["stage1"] = [{"source": "reasonir", "config": "vL"}]
    config["data"]["stages"]["stage2"][0]["config"] = "all"
    assert config_problem(config, SCHEMA_PATH) is None
    assert semantic_problems(config) == [
        "config: data/stages/stage1/0/config: reasonir needs 'vl' or 'hq', not 'vL'",
        "config: data/stages/stage2/0/config: bge_reasoner reads all its domain files; write null, not 'all'",
    ]


def test_an_evaluated_model_cannot_take_a_trained_models_name(config):
    config["experiments"]["lr2"] = {"train": {"stage2": {"learning_rate": 1e-5}}}
    assert model_name_problems(config) == []
    config["evaluate_models"]["lr2-stage2"] = config["evaluate_models"]["base"] | {"revision": "c" * 40}  # not base
    assert config_problem(config, SCHEMA_PATH) is None
    assert semantic_problems(config) == [
        "config: evaluate_models/lr2-stage2: is also the name of a model the workflow trains (experiment lr2)"
    ]


def test_floats_at_integer_leaves(config):
    config["evaluate"]["top_k"] = 1000.0
    config["train"]["max_steps"] = 20.0
    config["data"]["stages"]["stage2"][0]["negatives_per_query"] = 4.0
    assert config_problem(config, SCHEMA_PATH) is None  # Draft 2020-12: 1000.0 is an integer
    assert sorted(float_integer_problems(config, SCHEMA)) == [
        "config: data/stages/stage2/0/negatives_per_query: 4.0 is a float; the stage reads an integer here (write 4)",
        "config: evaluate/top_k: 1000.0 is a float; the stage reads an integer here (write 1000)",
        "config: train/max_steps: 20.0 is a float; the stage reads an integer here (write 20)",
    ]
    config["evaluate"]["top_k"] = 1000.5  # not an integer at all: the schema's own error
    assert config_problem(config, SCHEMA_PATH) == "config: evaluate/top_k: 1000.5 is not of type 'integer'"


def test_a_float_in_an_experiment_override(config):
    config["experiments"]["half"] = {"train": {"global_batch_size": 1024.0}}
    assert semantic_problems(config) == [
        "config: experiments/half: train/global_batch_size: 1024.0 is a float; the stage reads an integer here "
        "(write 1024)"
    ]


def test_score_dtype_is_float32_or_bfloat16(config):
    assert config["evaluate"]["score_dtype"] == "float32"  # exact by default
    config["evaluate"]["score_dtype"] = "float16"
    assert config_problem(config, SCHEMA_PATH) == (
        "config: evaluate/score_dtype: 'float16' is not one of ['float32', 'bfloat16']"
    )


def test_the_run_file_is_deep_enough_for_every_metric(config):
    from workflow_scripts.config_checks import METRIC_DEPTH

    cutoffs = [int(name.rsplit("_", 1)[1]) for name in MEASURES]
    assert METRIC_DEPTH == max(cutoffs)  # config_checks does not import torch at parse time
    assert ranking_problems({"top_k": METRIC_DEPTH}) == []
    config["evaluate"]["top_k"] = 10
    assert semantic_problems(config) == [
        "config: evaluate/top_k: 10 < 100: the @100 metrics (nDCG, MAP, recall, MRR) need the top 100 documents"
    ]


def test_warnings(config):
    assert semantic_warnings(config) == []
    config["evaluate"]["splits"] = ["biology"]
    config["widen"]["to"] = None
    assert semantic_warnings(config) == [
        "config: evaluate/overrides: pony is not in evaluate/splits; its override is unused",
        "config: evaluate_trained: widened, but no experiment widens (widen/to is null)",
    ]
    assert semantic_problems(config) == []  # legal


# --------------------------------------------------------------------------- (b) the schema walked
def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/definitions/")
        node = {**SCHEMA["definitions"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_leaves(node: dict[str, Any] = SCHEMA, path: tuple[str, ...] = ()) -> Iterator[tuple[str, dict]]:
    """(``a/b/c`` path, schema) of every leaf; ``*`` stands for a map key, ``0`` for a list item."""
    node = _resolve(node)
    items = _resolve(node["items"]) if isinstance(node.get("items"), dict) else {}
    if "properties" in node or isinstance(node.get("additionalProperties"), dict):
        for key, child in node.get("properties", {}).items():
            yield from schema_leaves(child, (*path, key))
        if isinstance(node.get("additionalProperties"), dict):
            yield from schema_leaves(node["additionalProperties"], (*path, "*"))
    elif "properties" in items:
        yield from schema_leaves(items, (*path, "0"))
    else:
        yield "/".join(path), node


def types_of(node: dict[str, Any]) -> set[str]:
    """JSON types a schema leaf accepts (from ``type``, else from its ``enum`` values)."""
    if "type" in node:
        return set([node["type"]] if isinstance(node["type"], str) else node["type"])
    names = {bool: "boolean", str: "string", int: "integer", float: "number", type(None): "null"}
    return {names[type(v)] for v in node["enum"]}


INTEGER_LEAVES = [path for path, node in schema_leaves() if "integer" in types_of(node)]
STAGES = {
    "train": train.fit,
    "evaluate": evaluate_job,
    "data": build_shards,
    "widen": widen,
    "demo": demo.make_assets,
    "rehearsal": rehearsal.make_assets,
}
# Who reads each config leaf the stage code needs typed: "stage:parameter", or another reader
# in words. Every integer leaf must be here (a new one forces the question).
READERS: dict[str, list[str]] = {
    "seed": ["train:seed", "data:seed"],
    "data/stages/stage1/0/positives_per_query": ["build_shards stage_sources[i]: a list slice bound"],
    "data/stages/stage1/0/negatives_per_query": ["build_shards stage_sources[i]: a list slice bound"],
    "data/stages/stage2/0/positives_per_query": ["build_shards stage_sources[i]: a list slice bound"],
    "data/stages/stage2/0/negatives_per_query": ["build_shards stage_sources[i]: a list slice bound"],
    "data/contamination/ngram": ["data:contamination_ngram"],
    "data/contamination/drop": ["data:contamination_drop"],
    "sources/bge_reasoner/subdir": ["data:bge_subdir"],
    "widen/after": ["the DAG's curriculum order (Lineage.kinds)"],
    "train/nodes": ["Slurm resources: --nodes (get_train_resources)"],
    "train/gpus_per_node": ["Slurm resources: --ntasks-per-node, --gres=gpu:N (get_train_resources)"],
    "train/stage1/learning_rate": ["train:learning_rate"],
    "train/stage2/learning_rate": ["train:learning_rate"],
    "evaluate/splits": ["the DAG: one evaluate job per split"],
    "evaluate/overrides/*/query_length": ["evaluate:query_length"],
    "evaluate/overrides/*/document_length": ["evaluate:document_length"],
    "trust_remote_code": ["train:trust_remote_code", "evaluate:trust_remote_code"],
    "demo/assets_dir": ["the demo_assets rule's output directory"],
    "rehearsal/assets_dir": ["the rehearsal_assets rule's output directory"],
    "statistics/resamples": ["summarize statistics: scipy's n_resamples (stats.bootstrap_interval, stats.paired_test)"],
    "statistics/seed": ["summarize statistics: numpy's generator seed (stats.seed_for)"],
}
for _section in STAGES:  # the plain case: key k of section s is parameter k of s's stage
    for _path, _ in schema_leaves():
        _head, _, _key = _path.partition("/")
        if _head == _section and "/" not in _key and _path not in READERS:
            READERS[_path] = [f"{_section}:{_key}"]
# The preflight's commands read the settings they measure at (train, evaluate), their own
# section and the forecast's shape (rules/common.smk get_preflight_*_flags): path -> parameter.
STAGES |= {
    "preflight_train": spread_records(measure_training),
    "preflight_evaluate": measure_evaluation,
    "preflight_forecast": forecast,
}
_TRAIN_KEYS = [k for k in trainer.TRAIN_KEYS if k not in ("learning_rate", "seed")]  # the section's shared keys
for _reader, _pairs in {
    "preflight_train": [(f"train/{k}", k) for k in _TRAIN_KEYS]
    + [
        ("train/stage1/learning_rate", "learning_rate"),
        ("train/stage2/learning_rate", "learning_rate"),
        ("seed", "seed"),
        ("trust_remote_code", "trust_remote_code"),
        ("train/nodes", "forecast_nodes"),
        ("train/gpus_per_node", "forecast_gpus_per_node"),
        ("preflight/forecast/nodes", "forecast_nodes"),
        ("preflight/forecast/gpus_per_node", "forecast_gpus_per_node"),
        ("preflight/forecast/global_batch_size", "forecast_global_batch_size"),
    ]
    + [(f"preflight/{k}", k) for k in ("train_steps", "per_device_batch_size", "false_negative_batches")],
    "preflight_evaluate": [
        (f"evaluate/{k}", k) for k in ("query_length", "document_length", "encode_batch_size", "dtype")
    ]
    + [(f"preflight/{k}", k) for k in ("documents_per_split", "queries_per_split", "length_sample")]
    + [("seed", "seed"), ("trust_remote_code", "trust_remote_code")],
    "preflight_forecast": [
        (f"train/{k}", k)
        for k in (
            "nodes",
            "gpus_per_node",
            "global_batch_size",
            "gradient_accumulation_steps",
            "mini_batch_size",
            "epochs",
            "bf16",
            "maxsim_backend",
            "score_mini_batch_size",
        )
    ]
    + [(f"preflight/forecast/{k}", k) for k in ("nodes", "gpus_per_node", "global_batch_size")]
    + [(f"preflight/{k}", k) for k in ("device_memory_gib", "gpu_hours_budget", "assumed_mfu")]
    + [("data/shuffle_buckets", "shuffle_buckets")],
}.items():
    for _path, _name in _pairs:
        READERS.setdefault(_path, []).append(f"{_reader}:{_name}")
# Stage parameters that do not come from the config (paths, wildcards, constants).
NOT_FROM_CONFIG = {
    "train": {"stage", "init_model", "shards", "out_dir", "checkpoint_dir", "metrics_path", "meta_path"},
    # splits: the job's (wildcards); protocols, overrides: resolved for the job (get_eval_flags)
    "evaluate": {
        "model_path",
        "model_name",
        "bright_manifest",
        "splits",
        "protocols",
        "overrides",
        "out_json",
        "run_file",
    },
    "data": {
        "stage",
        "stage_sources",
        "manifests",
        "out_dir",
        "stats_path",
        "splits",
        "tokenizer_manifest",
        "threads",
    },
    "widen": {"source", "out_dir", "verify_path"},
    "demo": {"out_dir", "seed"},
    "rehearsal": {"out", "seed"},
    "preflight_train": {"stage", "init_model", "shards", "out_json", "threads"},
    "preflight_evaluate": {
        "model_path",
        "bright_manifest",
        "out_json",
        "splits",
        "overrides",
        "query_template",
        "threads",
    },
    "preflight_forecast": {
        "train",
        "evaluate",
        "shard_stats",
        "shard_benchmarks",
        "out_json",
        "out_md",
        "out_html",
        "widen",
        "evaluated_models",
    },
}
NULL_MEANS_NO_JOB = {"widen/to"}  # null: the DAG makes no widen job, so widen() never sees it
ANNOTATION_TYPES = {
    int: {"integer"},
    float: {"number", "integer"},
    bool: {"boolean"},
    str: {"string"},
    Path: {"string"},
    type(None): {"null"},
}


def stage_parameter(reader: str) -> tuple[Callable[..., Any], str] | None:
    stage, sep, name = reader.partition(":")
    return (STAGES[stage], name) if sep and stage in STAGES else None


def annotation_types(function: Callable[..., Any], name: str) -> set[str]:
    """JSON types a parameter's annotation takes (what its command line converts)."""
    hint = typing.get_type_hints(function)[name]
    parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return set().union(*(ANNOTATION_TYPES.get(p, {"array/object"}) for p in parts))


def sample(path: str) -> str:
    """A concrete config path for a schema path: a real key for ``*``."""
    return path.replace("overrides/*", "overrides/pony").replace("evaluate_models/*", "evaluate_models/base")


def full_config() -> dict[str, Any]:
    """config.yaml with the demo and rehearsal sections added: every section present."""
    config = load()
    for name in ("demo", "rehearsal"):
        config[name] = yaml.safe_load((REPO / name / "config.yaml").read_text())[name]
    config["evaluate"]["overrides"]["pony"]["document_length"] = 512
    config["train"]["max_steps"] = 100
    config["train"]["score_mini_batch_size"] = 8
    config["preflight"] |= {
        "per_device_batch_size": 4,
        "queries_per_split": 8,
        "forecast": {"nodes": 2, "gpus_per_node": 4, "global_batch_size": 2048},
    }
    for entry in config["data"]["stages"]["stage1"] + config["data"]["stages"]["stage2"]:
        entry |= {"positives_per_query": 1, "negatives_per_query": 2}
    return config


def get_at(config: dict[str, Any], path: str) -> Any:
    for key in path.split("/"):
        config = config[int(key)] if isinstance(config, list) else config[key]
    return config


def set_at(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split("/")
    for key in parents:
        config = config[int(key)] if isinstance(config, list) else config[key]
    config[int(last) if isinstance(config, list) else last] = value


def test_the_walk_finds_the_integer_leaves():
    assert {
        "seed",
        "train/global_batch_size",
        "evaluate/top_k",
        "widen/to",
        "train/max_steps",
        "evaluate/overrides/*/query_length",
        "data/stages/stage2/0/negatives_per_query",
    } <= set(INTEGER_LEAVES)
    assert "train/epochs" not in INTEGER_LEAVES  # number: a float is fine there
    full = full_config()
    assert config_problem(full, SCHEMA_PATH) is None and semantic_problems(full) == []
    for path in INTEGER_LEAVES:
        assert isinstance(get_at(full, sample(path)), int), path


@pytest.mark.parametrize("path", INTEGER_LEAVES)
def test_a_float_at_an_integer_leaf_passes_the_schema_and_is_refused_here(path):
    config = full_config()
    value = get_at(config, sample(path))
    set_at(config, sample(path), float(value))
    assert config_problem(config, SCHEMA_PATH) is None  # jsonschema Draft 2020-12: 2.0 is an integer
    assert semantic_problems(config) == [
        f"config: {sample(path)}: {float(value)!r} is a float; the stage reads an integer here (write {value})"
    ]


@pytest.mark.parametrize("path", INTEGER_LEAVES)
def test_every_integer_leaf_feeds_code_that_needs_an_int(path):
    assert path in READERS, f"{path}: integer in the schema, but who reads it? add it to READERS"
    for reader in READERS[path]:
        if parameter := stage_parameter(reader):
            assert "integer" in annotation_types(*parameter), f"{path} -> {reader}: annotation is not int"
            assert "number" not in annotation_types(*parameter), f"{path} -> {reader}: int or float?"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_parameter_from_the_config_is_typed_by_the_schema(stage):
    """Each config-fed parameter has a schema leaf whose types the annotation converts."""
    function = STAGES[stage]
    leaves = dict(schema_leaves())
    fed = {
        name: [p for p, readers in READERS.items() if f"{stage}:{name}" in readers]
        for name in inspect.signature(function).parameters
        if name not in NOT_FROM_CONFIG[stage]
    }
    for name, paths in fed.items():
        assert paths, f"{stage}:{name} takes a config value that no schema leaf constrains"
        for path in paths:
            assert path in leaves, f"{path} (-> {stage}:{name}) is not in the schema"
            schema_types, takes = types_of(leaves[path]), annotation_types(function, name)
            if path in NULL_MEANS_NO_JOB:
                schema_types -= {"null"}
            assert schema_types <= takes, f"{path} allows {schema_types}, {stage}:{name} takes {takes}"


def _parse(function: Callable[..., Any], settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` through the stage's command line (to_argv, then its typed parser)."""
    import argparse

    required = {
        n: "[]" if annotation_types(function, n) == {"array/object"} else "x"
        for n, p in inspect.signature(function).parameters.items()
        if p.default is inspect.Parameter.empty and n not in settings
    }
    parser = parser_for(function, argparse.ArgumentParser(exit_on_error=False))
    parsed = vars(parser.parse_args(to_argv(settings | required)))
    return {k: parsed[k] for k in settings}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_config_values_survive_the_stage_command_line(stage):
    """Every config value the stage reads arrives with its value through the typed CLI."""
    config = full_config()
    function = STAGES[stage]
    settings = {}
    for path, readers in READERS.items():
        for reader in readers:
            parameter = stage_parameter(reader)
            if parameter and parameter[0] is function:
                settings[parameter[1]] = get_at(config, sample(path))
    assert settings
    parsed = _parse(function, settings)
    assert parsed == settings
    for name, value in settings.items():  # an int stays an int; only a float parameter widens it
        assert type(parsed[name]) is type(value) or (type(value), type(parsed[name])) == (int, float), name


def test_why_floats_are_refused_the_command_line_reads_int():
    import argparse

    with pytest.raises((SystemExit, argparse.ArgumentError)):
        _parse(evaluate_split, {"top_k": 1000.0})


def test_the_training_settings_record_is_the_schemas_train_section():
    """TrainSettings (what the rules pass, the stage and the preflight take) names every training
    key of the schema: the train section's, but the cluster shape and the per-stage sections,
    plus a stage's learning rate and the seed; and the rules pass every field of it."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    section = schema["properties"]["train"]["properties"]
    stage_keys = set(schema["definitions"]["stage_train"]["properties"])
    expected = (set(section) - {"nodes", "gpus_per_node", "stage1", "stage2"}) | stage_keys | {"seed"}
    assert set(trainer.TRAIN_KEYS) == expected
    config = full_config()
    settings = trainer.TrainSettings(
        **{k: config["train"][k] for k in _TRAIN_KEYS},
        learning_rate=config["train"]["stage1"]["learning_rate"],
        seed=config["seed"],
    )
    for stage in ("train", "preflight_train"):  # both commands take the whole record
        assert set(trainer.TRAIN_KEYS) <= set(inspect.signature(STAGES[stage]).parameters)
    assert trainer.TrainSettings(**_parse(train.fit, settings.as_dict())) == settings


def test_readers_name_real_schema_leaves_and_parameters():
    leaves = dict(schema_leaves())
    for path, readers in READERS.items():
        assert path in leaves, f"READERS names {path}, which the schema no longer has"
        for reader in readers:
            if parameter := stage_parameter(reader):
                function, name = parameter
                assert name in inspect.signature(function).parameters, f"{reader}: no such parameter"


def test_the_experiment_overrides_are_walked_too():
    config = copy.deepcopy(full_config())
    config["experiments"]["x"] = {"widen": {"to": 256.0}}
    assert semantic_problems(config) == [
        "config: experiments/x: widen/to: 256.0 is a float; the stage reads an integer here (write 256)"
    ]


# --------------------------------------------------------------------------- issue 25: config files
TAGGED = [
    "run_name: !!python/object/apply:os.system [echo]\n",
    "evaluate:\n  top_k: !!python/name:os.system\n",
    "evaluate:\n  splits: [biology, !custom pony]\n",
    "? !!python/tuple [a, b]\n: 1\n",
    "seed: !!int 3\n",
]
DUPLICATED = [
    "run_name: a\nseed: 1\nrun_name: b\n",
    "evaluate:\n  top_k: 100\n  splits: [pony]\n  top_k: 1000\n",
    "data:\n  stages:\n    stage1:\n      - {source: reasonir, config: vl, source: bge_reasoner}\n",
    '{"seed": 1, "evaluate": {"top_k": 100, "top_k": 10}}\n',
]


@pytest.mark.parametrize("text", TAGGED)
def test_security_yaml_tag_is_named(tmp_path, text):
    """Any YAML tag, at any depth, is refused in one line naming the file, the line and the tag."""
    from workflow_scripts.config_files import load_config_file

    file = tmp_path / "overlay.yaml"
    file.write_text(text)
    tag = next(word for word in text.replace("[", " ").split() if word.startswith("!"))
    with pytest.raises(UserError) as err:
        load_config_file(file)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if tag in row)
    assert str(err.value).startswith(f"{file}:{line}: YAML tag {tag}") and "\n" not in str(err.value)


@pytest.mark.parametrize("text", DUPLICATED)
def test_late_or_loud_duplicate_keys_are_refused(tmp_path, text):
    """A key given twice in one mapping (YAML or JSON, any depth) is refused, naming the file and both lines."""
    from workflow_scripts.config_files import load_config_file

    file = tmp_path / "overlay.yaml"
    file.write_text(text)
    with pytest.raises(UserError, match=r"duplicate key .* \(first on line \d+\): YAML would keep the later") as err:
        load_config_file(file)
    assert str(err.value).startswith(f"{file}:") and "\n" not in str(err.value)
    if text.startswith("{"):  # the same file read as JSON (checkpoint configs, manifests): refused too
        with pytest.raises(UserError, match=r"duplicate key 'top_k' in one object"):
            read_json(file)


@pytest.mark.parametrize(
    "where, text",
    [
        ("overlay", TAGGED[1]),
        ("overlay", DUPLICATED[1]),
        ("config.yaml", "run_name: !!python/object/apply:os.system [echo]\n"),
        ("config.yaml", "seed: 3\n"),
    ],
)
def test_late_or_loud_every_config_file_the_workflow_reads_is_strict(tmp_path, where, text):
    """The workflow reads config.yaml and each --configfile overlay strictly: one line naming the file."""
    from conftest import copy_repo, snakemake

    repo = copy_repo(tmp_path / "repo")
    args = ["-n", "--configfile", str(repo / "demo/config.yaml")]
    if where == "overlay":
        bad = tmp_path / "overlay.yaml"
        bad.write_text(text)
        args += [str(bad)]
    else:
        bad = repo / "config.yaml"
        bad.write_text(bad.read_text() + text)  # seed is a key of config.yaml already: given twice
    proc = snakemake(*args, cwd=repo, check=False)
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.startswith(f"{bad}:")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert ("!" in text) == ("YAML tag" in lines[0]) != ("duplicate key" in lines[0])
    assert not (repo / "results").exists()


# --------------------------------------------------------------------------- issue 25: late or loud names, local
def _named(config: dict[str, Any], where: str, name: str) -> None:
    """Give the config a name at ``where`` (a section whose keys are names, or run_name)."""
    if where == "run_name":
        config["run_name"] = name
    elif where == "evaluate/protocols":
        config["evaluate"]["protocols"][name] = {"preset": "card"}
    elif where == "experiments":
        config["experiments"][name] = {"train": {"stage2": {"learning_rate": 1e-6}}}
    else:
        config[where][name] = copy.deepcopy(config["sources"]["bright"]) | {"repo_type": "model", "repo": "o/m"}


@pytest.mark.parametrize("where", ["run_name", "evaluate_models", "experiments", "evaluate/protocols"])
def test_late_or_loud_long_names_are_refused_at_parse_time(config, tmp_path, where):
    """A name one character longer than allowed is refused at parse time, in one line naming the key; the
    longest allowed name makes files the download can write."""
    from workflow_scripts.config_checks import NAME_MAX_CHARS
    from workflow_scripts.sources.hub import fetch_source

    longest, too_long = "n" * NAME_MAX_CHARS, "n" * (NAME_MAX_CHARS + 1)
    ok = copy.deepcopy(config)
    _named(ok, where, longest)
    assert not [p for p in semantic_problems(ok) if "a name of" in p]
    _named(config, where, too_long)
    problems = [p for p in semantic_problems(config) if "a name of" in p]
    assert len(problems) == 1 and problems[0].startswith(f"config: {where}")
    assert f"a name of {NAME_MAX_CHARS + 1} characters" in problems[0]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.json").write_text("{}")
    name = f"model_{longest}"  # the longest file name a name makes (rules/common.smk MANIFEST)
    fetch_source(
        name=name,
        repo="o/m",
        revision="a" * 40,
        repo_type="model",
        local=str(mirror),
        cache_dir=tmp_path / "hub",
        manifest=tmp_path / f"resources/sources/{name}.manifest.json",
    )


@pytest.mark.parametrize("section", ["sources", "evaluate_models"])
def test_late_or_loud_local_that_is_a_file_is_refused_at_parse_time(config, tmp_path, section):
    """A `local` that is a file, not a folder: refused when the config is read, before any job removes a
    manifest; the download names it the same way."""
    from workflow_scripts.sources.hub import fetch_source

    file = tmp_path / "mirror.tar"
    file.write_text("not a folder")
    name = next(iter(config[section]))
    config[section][name]["local"] = str(file)
    assert semantic_problems(config) == [
        f"config: {section}/{name}/local: {file} is a file, not a directory (a mirror is a folder laid out like the "
        "hub repository)"
    ]
    config[section][name]["local"] = str(tmp_path / "not-made-yet")  # demo_assets makes it later: not refused
    assert semantic_problems(config) == []
    with pytest.raises(UserError, match=rf"^sources\.x\.local: {file} is a file, not a directory"):
        fetch_source(
            name="x",
            repo="o/r",
            revision="a" * 40,
            repo_type="dataset",
            local=str(file),
            cache_dir=tmp_path / "hub",
            manifest=tmp_path / "m.json",
        )
