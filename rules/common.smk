# Everything that is not a rule: validation, paths, and the input/param functions of the rules.
import hashlib
import json
import os
import sys

import yaml
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# One line naming the bad key first (jsonschema's full report is pages long), then Snakemake's
# own validation with the same schema.
sys.path.insert(0, workflow.basedir)
from workflow_scripts.common import config_problem

SCHEMA = os.path.join(workflow.basedir, "workflow_scripts/config.schema.yaml")
if problem := config_problem(config, SCHEMA):
    raise WorkflowError(problem)
validate(config, schema="../workflow_scripts/config.schema.yaml")

# Rules run `python -m workflow_scripts.<stage>` from any working directory (tests, Slurm).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
)

# The conda envs' post-deploy scripts install this repository's pinned requirements.
os.environ["REASON_COLBERT_REPO"] = workflow.basedir

RUN = f"results/{config['run_name']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"
# A DAG-made model's id: its kind, optionally prefixed by the experiment that owns it.
MADE_ID = "(?:[A-Za-z0-9_.]+-)?{kind}"
SPLITS = config["evaluate"]["splits"]

MANIFEST = "resources/sources/{source}.manifest.json"
SHARDS = f"{RUN}/shards/{{stage}}"
MODEL = f"{RUN}/models/{{model}}"
EVAL = f"{RUN}/eval/{{model}}/{{split}}.json"
RUN_FILE = f"{RUN}/eval/{{model}}/{{split}}.run.trec"
BASE_MODEL = MANIFEST.format(source="base_model")


wildcard_constraints:
    stage="stage1|stage2",
    split="|".join(SPLITS),
    model="[A-Za-z0-9_.-]+",
    source="[A-Za-z0-9_.-]+",


def get_code(stage):
    """A stage's module as an input: editing it reruns that stage's jobs, and only those."""
    return os.path.join(workflow.basedir, "workflow_scripts", f"{stage}.py")


def get_train_resources():
    """Slurm shape of a training job, from config.yaml `train` (which also fixes the batch).

    One task per GPU: `tasks_per_node` = GPUs per node with `mpi: srun`, so the rule's shell
    runs once on the first node and launch.sh starts the tasks (see the slurm plugin docs).
    """
    t = config["train"]
    nodes, per_node = t["nodes"], t["gpus_per_node"]
    gpu_type = os.environ.get("RC_SLURM_GPU_TYPE", "")
    res = {"nodes": nodes, "gres": f"gpu:{gpu_type + ':' if gpu_type else ''}{per_node}"}
    if nodes * per_node > 1:
        res["mpi"] = "srun"
        if per_node > 1:
            res["tasks_per_node"] = per_node
        else:  # the plugin wants tasks_per_node > 1 with mpi: count tasks instead
            res["tasks"] = nodes
    return res | get_partition("gpu")


def get_partition(kind):
    """{slurm_partition: $RC_SLURM_<KIND>_PARTITION}, or {} (the cluster's default / SBATCH_PARTITION)."""
    partition = os.environ.get(f"RC_SLURM_{kind.upper()}_PARTITION")
    return {"slurm_partition": partition} if partition else {}


def get_launcher():
    """One process locally; one per GPU under a multi-task Slurm allocation (see launch.sh)."""
    return os.path.join(workflow.basedir, "workflow_scripts", "launch.sh")


def get_sources():
    """Every downloadable input: the datasets, the base model and extra evaluated models."""
    sources = dict(config["sources"])
    sources.update({f"model_{name}": src for name, src in config["evaluate_models"].items()})
    return sources


# Experiments: variants of the recipe run side by side (config `experiments`). Each DAG-made
# model is named by its lineage: a model whose recipe (own settings + everything upstream)
# equals one of an earlier experiment is that model, computed once. The first experiment's
# models keep the plain names (widened, stage1, stage2); others are "<experiment>-<kind>".
EXPERIMENTS = {name: spec or {} for name, spec in (config.get("experiments") or {"main": {}}).items()}
FIRST = next(iter(EXPERIMENTS))
WIDEN_KEYS = ("to", "seed", "std_fraction", "min_std", "use_residual_2_dense")


def deep_merge(base, override):
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def get_setting(section, exp):
    """config[section] (widen or train) with the experiment's overrides merged in."""
    return deep_merge(config[section], EXPERIMENTS[exp].get(section, {}))


for _exp in EXPERIMENTS:  # a variant's merged sections obey the same schema
    _merged = config | {section: get_setting(section, _exp) for section in ("widen", "train")}
    if problem := config_problem(_merged, SCHEMA):
        raise WorkflowError(f"experiments/{_exp}: {problem}")


def get_kinds(exp):
    """DAG-made models of an experiment, in curriculum order (widen.after and widen.to decide)."""
    w = get_setting("widen", exp)
    if w["to"] is None:
        return ["stage1", "stage2"]
    return ["widened", "stage1", "stage2"] if w["after"] == "base" else ["stage1", "widened", "stage2"]


def get_parent(exp, kind):
    kinds = get_kinds(exp)
    i = kinds.index(kind)
    return kinds[i - 1] if i else None


def get_lineage(exp, kind):
    """Hash of everything a model depends on: its own settings, then its parent's lineage."""
    parent = get_parent(exp, kind)
    upstream = get_lineage(exp, parent) if parent else config["sources"]["base_model"]
    if kind == "widened":
        own = {k: get_setting("widen", exp)[k] for k in WIDEN_KEYS}
    else:
        t = get_setting("train", exp)
        own = {k: v for k, v in t.items() if k not in ("stage1", "stage2")} | t[kind] | {"seed": config["seed"]}
    blob = json.dumps([kind, upstream, own], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def get_model_id(exp, kind):
    owner = next(e for e in EXPERIMENTS if kind in get_kinds(e) and get_lineage(e, kind) == get_lineage(exp, kind))
    return kind if owner == FIRST else f"{owner}-{kind}"


# model id -> (experiment that owns it, kind)
SPECS = {get_model_id(e, k): (e, k) for e in EXPERIMENTS for k in get_kinds(e)}


def get_made(kind):
    """Ids of the DAG-made models of one kind, across experiments."""
    return [mid for mid, (_, k) in SPECS.items() if k == kind]


def get_eval_models():
    """Evaluated models: DAG-made ones (kinds in evaluate_trained, per experiment), then evaluate_models."""
    made = [mid for mid, (_, kind) in SPECS.items() if kind in config["evaluate_trained"]]
    return made + list(config["evaluate_models"])


def get_model_path(name):
    """A DAG-made model's directory, or the download manifest of an evaluate_models entry."""
    if name in config["evaluate_models"]:
        source = config["evaluate_models"][name]
        same_as_base = source == config["sources"]["base_model"]  # one download, not two
        return MANIFEST.format(source="base_model" if same_as_base else f"model_{name}")
    return MODEL.format(model=name)


def get_init_model(wildcards):
    """The model a widen/train job starts from: its parent in the curriculum, or the base."""
    exp, kind = SPECS[wildcards.mid]
    parent = get_parent(exp, kind)
    return BASE_MODEL if parent is None else MODEL.format(model=get_model_id(exp, parent))


def get_source_args(wildcards):
    src = get_sources()[wildcards.source]
    return json.dumps(
        {
            "name": wildcards.source,
            "manifest": MANIFEST.format(source=wildcards.source),
            "cache_dir": "resources/hub",
            "allow_patterns": None,
            **{k: src[k] for k in ("repo", "repo_type", "revision", "local")},
        },
        sort_keys=True,
    )


def get_download_input(wildcards):
    """The demo creates its mirrors first; a real run downloads from the hub or a mirror."""
    return [config["demo"]["assets_dir"]] if "demo" in config else []


def get_stage_manifests(wildcards):
    # bright: hq positive ids resolve against it, and the contamination audit reads its queries
    names = {e["source"] for e in config["data"]["stages"][wildcards.stage]} | {"bright"}
    return {name: MANIFEST.format(source=name) for name in sorted(names)}


# Param functions take only `wildcards`: Snakemake does not track params derived from
# input/output for reruns, so file paths are rebuilt here from the same templates.
def get_shard_args(wildcards):
    data = config["data"]
    return json.dumps(
        {
            "stage": wildcards.stage,
            "stage_sources": data["stages"][wildcards.stage],
            "manifests": get_stage_manifests(wildcards),
            "out_dir": SHARDS.format(stage=wildcards.stage),
            "stats_path": f"{RUN}/shards/{wildcards.stage}.stats.json",
            "splits": SPLITS_ALL,
            "bge_subdir": config["sources"]["bge_reasoner"].get("subdir"),
            "tokenizer_manifest": BASE_MODEL,
            "seed": config["seed"],
            **{k: data[k] for k in data if k != "stages"},
        }
    )


# BRIGHT has 12 domains whatever subset is evaluated: hq ids resolve against all of them.
# The list is the schema's (one place): its `split` enum.
SPLITS_ALL = yaml.safe_load(Path(SCHEMA).read_text())["definitions"]["split"]["enum"]


def get_training_metrics():
    """Per-step metrics of every training job, by model id (curriculum order per experiment)."""
    return {mid: f"{RUN}/train/{mid}.metrics.jsonl" for mid in get_made("stage1") + get_made("stage2")}


def get_widen_verifications():
    return {mid: f"{RUN}/models/{mid}.verify.json" for mid in get_made("widened")}


def get_widen_args(wildcards):
    w = get_setting("widen", SPECS[wildcards.mid][0])
    return json.dumps({k: w[k] for k in WIDEN_KEYS})


def get_train_args(wildcards):
    exp, stage = SPECS[wildcards.mid]
    t = get_setting("train", exp)
    lr = t.pop(stage)["learning_rate"]
    t.pop("stage2" if stage == "stage1" else "stage1")
    for key in ("nodes", "gpus_per_node"):
        t.pop(key)
    args = {
        **t,
        "stage": stage,
        "init_model": get_init_model(wildcards),
        "shards": SHARDS.format(stage=stage),
        "out_dir": MODEL.format(model=wildcards.mid),
        "checkpoint_dir": f"{RUN}/checkpoints/{wildcards.mid}",
        "metrics_path": f"{RUN}/train/{wildcards.mid}.metrics.jsonl",
        "meta_path": f"{RUN}/train/{wildcards.mid}.meta.json",
        "learning_rate": lr,
        "seed": config["seed"],
        "trust_remote_code": config["trust_remote_code"],
    }
    return json.dumps(args, sort_keys=True)


def get_eval_settings(split):
    """query/document length of a split: the global values, then per-split overrides."""
    e = config["evaluate"]
    over = e["overrides"].get(split, {})
    return {
        "query_length": over.get("query_length", e["query_length"]),
        "document_length": over.get("document_length", e["document_length"]),
    }


def get_eval_args(wildcards):
    e = config["evaluate"]
    args = {
        "model_path": get_model_path(wildcards.model),
        "model_name": wildcards.model,
        "bright_manifest": MANIFEST.format(source="bright"),
        "split": wildcards.split,
        "out_json": EVAL.format(model=wildcards.model, split=wildcards.split),
        "run_file": RUN_FILE.format(model=wildcards.model, split=wildcards.split),
        "query_template": e["query_template"],
        "domain": e["domains"].get(wildcards.split, wildcards.split),
        "trust_remote_code": config["trust_remote_code"],
        **get_eval_settings(wildcards.split),
        **{k: e[k] for k in ("exclude_ids", "top_k", "chunk_size", "encode_batch_size", "dtype")},
    }
    return json.dumps(args, sort_keys=True)


def get_summary_args(wildcards):
    e = config["evaluate"]
    return json.dumps(
        {
            "eval_dir": f"{RUN}/eval",
            "mteb_dir": f"{RUN}/mteb",
            "models": get_eval_models(),
            "splits": SPLITS,
            "out_prefix": f"{RUN}/summary",
            "protocol": {
                "excluded_ids_removed": e["exclude_ids"],
                "query_length": e["query_length"],
                "document_length": e["document_length"],
                "overrides": e["overrides"],
                "query_template": e["query_template"],
                "bright_revision": config["sources"]["bright"]["revision"],
                "base_model_revision": config["sources"]["base_model"]["revision"],
            },
        },
        sort_keys=True,
    )


def get_final_output():
    summary = [f"{RUN}/summary.csv", f"{RUN}/summary.md", f"{RUN}/summary.json"]
    mteb = [f"{RUN}/mteb/{model}/BrightRetrieval.json" for model in get_eval_models()]
    return summary + mteb + get_report_targets()


def get_used_sources():
    """Sources the DAG reads: the datasets, the base model, and distinct extra models."""
    extra = {get_model_path(m) for m in config["evaluate_models"]}
    names = ["reasonir", "bge_reasoner", "bright", "base_model"]
    return names + sorted(
        n for n in get_sources() if MANIFEST.format(source=n) in extra and n not in names
    )


def get_provenance_args(wildcards):
    manifests = [MANIFEST.format(source=name) for name in get_used_sources()]
    out = f"{RUN}/report/provenance.html"
    return json.dumps({"config": config, "manifests": manifests, "out": out, "repo": workflow.basedir})


def get_benchmarks():
    """Benchmark files of every heavy job (they are outputs of those jobs)."""
    files = expand(f"{BENCH}/build_shards/{{stage}}.tsv", stage=["stage1", "stage2"])
    files += [f"{BENCH}/train/{mid}.tsv" for mid in get_made("stage1") + get_made("stage2")]
    files += expand(f"{BENCH}/evaluate/{{model}}/{{split}}.tsv", model=get_eval_models(), split=SPLITS)
    return files + [f"{BENCH}/widen/{mid}.tsv" for mid in get_made("widened")]


def get_cost_args(wildcards, input, output):
    gpus = config["train"]["nodes"] * config["train"]["gpus_per_node"]
    return json.dumps({"benchmarks": list(input), "out": output[0], "gpus": {"train": gpus, "evaluate": 1}})


def get_report_targets():
    names = ["summary.html", "bright_ndcg10.png", "training_curves.png", "data_stats.png", "data_tables.html",
             "provenance.html", "cost.html"]
    return [f"{RUN}/report/{n}" for n in names] + ([f"{RUN}/report/widen.html"] if get_made("widened") else [])
