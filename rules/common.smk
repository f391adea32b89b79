# Everything that is not a rule: validation, paths, and the tiny get_* helpers of the rules.
# The logic behind them lives in workflow_scripts/ (lineage, fingerprint, config_checks).
import json
import os
import shlex
import sys
from functools import cache

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

# One line naming the bad key first (jsonschema's full report is pages long), then Snakemake's
# own validation with the same schema.
sys.path.insert(0, workflow.basedir)
from workflow_scripts.bright.meta import SPLITS as BRIGHT_SPLITS
from workflow_scripts.config_files import config_problem
from workflow_scripts.config_checks import overlay_problems, semantic_problems, semantic_warnings
from workflow_scripts.cli import to_argv
from workflow_scripts.fingerprint import code_fingerprint
from workflow_scripts.lineage import Lineage
from workflow_scripts.bright.protocols import PRESETS, QUERY_SETS, evaluation_rules, job_name, job_pairs, mteb_files
from workflow_scripts.bright.protocols import resolve as resolve_protocols
from workflow_scripts.train.trainer import TRAIN_KEYS
from workflow_scripts import warm
from workflow_scripts.job_usage import sidecar

SCHEMA = os.path.join(workflow.basedir, "workflow_scripts/config.schema.yaml")
# BRIGHT's split names (bright/meta.py), the protocol presets and query sets (bright/protocols.py): one place each.
ENUMS = {"split": BRIGHT_SPLITS, "protocol_preset": list(PRESETS), "query_set": QUERY_SETS}
if problem := config_problem(config, SCHEMA, ENUMS):
    raise WorkflowError(problem)
validate(config, schema="../workflow_scripts/config.schema.yaml")

# Rules run `python -m workflow_scripts <stage>` (__main__.py, warm.py) from any working directory (tests, Slurm), and
# the training launcher and conda post-deploy scripts find the repository through this.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p)
os.environ["REASON_COLBERT_REPO"] = workflow.basedir


# Set just above, asserted here so that Snakemake passes them on to remote (Slurm) jobs.
envvars:
    "PYTHONPATH",
    "REASON_COLBERT_REPO",


# `logged LOG CMD...` runs a stage with its output in LOG; when it fails, the log's last line (the stage's own
# one-line error: nothing writes after it) is printed where the user looks, not only in LOG.
shell.prefix(
    'set -euo pipefail; logged() {{ log=$1; shift; "$@" > "$log" 2>&1'
    ' || {{ s=$?; echo "$(tail -n 1 "$log")  [log: $log]" >&2; return $s; }}; }}; '
)


def usage_of(benchmark):
    """The usage sidecar (job_usage.sidecar) beside a rule's `benchmark:` pattern, for its params.usage.

    A rule whose job may be forked (warm.FORKED_STAGES) declares it and runs
    `REASON_COLBERT_USAGE={params.usage:q} logged ...`: the warm-start client writes the forked child's own
    peak RSS there, and the cost page reads it beside the benchmark. Declared by the rule, not derived from the
    log's path in `logged`, so that the one reader (report cost) finds it from the file it is given, the
    benchmark, by the one function that names it (job_usage.sidecar); no log is read for a figure.
    """
    return str(sidecar(benchmark))


RUN = f"results/{config['run_name']}"
LOGS = f"{RUN}/logs"
BENCH = f"{RUN}/benchmarks"
# A DAG-made model's id: its kind, optionally prefixed by the experiment that owns it.
MADE_ID = "(?:[A-Za-z0-9_.]+-)?{kind}"
SPLITS = config["evaluate"]["splits"]

MANIFEST = "resources/sources/{source}.manifest.json"
SHARDS = f"{RUN}/shards/{{stage}}"
MODEL = f"{RUN}/models/{{model}}"
EVAL = f"{RUN}/eval/{{protocol}}/{{model}}/{{split}}.json"
RUN_FILE = f"{RUN}/eval/{{protocol}}/{{model}}/{{split}}.run.trec"
BASE_MODEL = MANIFEST.format(source="base_model")
BRIGHT = MANIFEST.format(source="bright")

LINEAGE = Lineage(config)
for _exp in LINEAGE.experiments:  # a variant's merged sections obey the same schema
    _merged = config | {section: LINEAGE.setting(section, _exp) for section in ("widen", "train")}
    if problem := config_problem(_merged, SCHEMA, ENUMS):
        raise WorkflowError(f"experiments/{_exp}: {problem}")
# What the schema cannot say but a job would fail on hours later (a float where an int is
# needed, a template field nobody fills, batch arithmetic): refused now, one line each.
if problems := semantic_problems(config):
    raise WorkflowError("\n".join(problems))
for _warning in semantic_warnings(config):
    logger.warning(_warning)
# An overlay's `{}` merges nothing (`protocols: {}` keeps config.yaml's protocols): refused, saying how.
if problems := overlay_problems([os.path.join(workflow.basedir, "config.yaml"), *workflow.overwrite_configfiles]):
    raise WorkflowError("\n".join(problems))
# The protocols scored (bright/protocols.py), and the evaluation rules that cover every (split, protocol):
# a split's documents are encoded once per model, aops and theoremqa_questions' one corpus too.
PROTOCOLS = resolve_protocols(config["evaluate"]["protocols"])
_DOCUMENT_LENGTHS = {
    s: {**config["evaluate"], **config["evaluate"]["overrides"].get(s, {})}["document_length"] for s in SPLITS
}
EVAL_RULES = {r.name: r for r in evaluation_rules(PROTOCOLS, SPLITS, _DOCUMENT_LENGTHS)}


wildcard_constraints:
    stage="stage1|stage2",
    split="|".join(SPLITS),
    model="[A-Za-z0-9_.-]+",
    source="[A-Za-z0-9_.-]+",


# ---------------------------------------------------------------- params: settings, canonical
def as_flags(settings):
    """`--kebab-case value` per setting, keys sorted and values shell-quoted: a param whose
    repr (what Snakemake compares) depends neither on key order nor on where the checkout is."""
    return shlex.join(to_argv(settings))


@cache
def get_code(stage, *extra):
    """Fingerprint of a stage's module and every project module it imports (transitively), as
    a param: editing `model/load.py` reruns widen, training, evaluation and the preflight's measurements
    (every stage that loads a model), and nothing else."""
    return code_fingerprint(stage, *extra)


# ---------------------------------------------------------------- Slurm shape
def get_train_resources():
    """Slurm shape of a training job, from config.yaml `train` (which also fixes the batch).

    One task per GPU: `tasks_per_node` = GPUs per node with `mpi: srun`, so the rule's shell
    runs once on the first node and launch.sh starts the tasks (see the slurm plugin docs).
    """
    t = config["train"]
    nodes, per_node = t["nodes"], t["gpus_per_node"]
    gpu_type = os.environ.get("RC_SLURM_GPU_TYPE", "")
    res = {"nodes": nodes, "gres": f"gpu:{gpu_type}:{per_node}" if gpu_type else f"gpu:{per_node}"}
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


# ---------------------------------------------------------------- sources
def get_sources():
    """Every downloadable input: the datasets, the base model and extra evaluated models."""
    sources = dict(config["sources"])
    sources.update({f"model_{name}": src for name, src in config["evaluate_models"].items()})
    return sources


def get_source_flags(wildcards):
    src = get_sources()[wildcards.source]
    return as_flags({k: src[k] for k in ("repo", "repo_type", "revision", "local")})


def get_download_input(wildcards):
    """The demo and the rehearsal create their mirrors first; a real run downloads from the
    hub or a mirror."""
    return [config[k]["assets_dir"] for k in ("demo", "rehearsal") if k in config]


def get_generator_flags(kind):
    """Settings of the demo / rehearsal asset generator: its config section but the folder."""
    return as_flags({k: v for k, v in config[kind].items() if k != "assets_dir"})


def get_used_sources():
    """Sources the DAG reads: the datasets, the base model, and distinct extra models."""
    extra = {get_model_path(m) for m in config["evaluate_models"]}
    names = ["reasonir", "bge_reasoner", "bright", "base_model"]
    return names + sorted(n for n in get_sources() if MANIFEST.format(source=n) in extra and n not in names)


# ---------------------------------------------------------------- data
def get_stage_manifests(wildcards):
    # bright: hq positive ids resolve against it, and the contamination audit reads its queries
    names = {e["source"] for e in config["data"]["stages"][wildcards.stage]} | {"bright"}
    return [MANIFEST.format(source=name) for name in sorted(names)]


def get_shard_flags(wildcards):
    data = config["data"]
    settings = {k: v for k, v in data.items() if k not in ("stages", "contamination")}
    return as_flags(
        settings
        | {
            "stage_sources": data["stages"][wildcards.stage],
            "contamination_ngram": data["contamination"]["ngram"],
            "contamination_drop": data["contamination"]["drop"],
            "bge_subdir": config["sources"]["bge_reasoner"].get("subdir"),
            "seed": config["seed"],
        }
    )


# ---------------------------------------------------------------- models and lineage
def get_made(kind):
    """Ids of the DAG-made models of one kind, across experiments (main first)."""
    return LINEAGE.made(kind)


def get_eval_models():
    """Evaluated models: DAG-made ones (kinds in evaluate_trained), then evaluate_models by name."""
    return LINEAGE.evaluated()


def get_model_path(name):
    """A DAG-made model's directory, or the download manifest of an evaluate_models entry."""
    if name in config["evaluate_models"]:
        source = config["evaluate_models"][name]
        same_as_base = source == config["sources"]["base_model"]  # one download, not two
        return MANIFEST.format(source="base_model" if same_as_base else f"model_{name}")
    return MODEL.format(model=name)


def get_eval_model(wildcards):
    return get_model_path(wildcards.model)


def get_init_model(wildcards):
    """The model a widen/train job starts from: its parent in the curriculum, or the base."""
    parent = LINEAGE.parent_id(wildcards.mid)
    return BASE_MODEL if parent is None else MODEL.format(model=parent)


def get_widen_flags(wildcards):
    experiment, _ = LINEAGE.models[wildcards.mid]
    return as_flags(LINEAGE.own_settings(experiment, "widened"))


def get_train_settings(experiment, stage):
    """An experiment's training settings for one stage, by TrainSettings field: the train section's
    shared keys, the stage's own learning rate and the experiment's seed; not the cluster shape
    (Slurm resources) and not the other stage's settings. Training and the preflight read these."""
    t = LINEAGE.setting("train", experiment)
    merged = t | t[stage] | {"seed": LINEAGE.train_seed(experiment)}
    return {k: merged[k] for k in TRAIN_KEYS if k in merged}  # max_steps may be left out: whole epochs


def get_train_flags(wildcards):
    experiment, stage = LINEAGE.models[wildcards.mid]
    settings = get_train_settings(experiment, stage)
    return as_flags(settings | {"stage": stage, "trust_remote_code": config["trust_remote_code"]})


def get_training_metrics():
    """Per-step metrics of every training job, by model id (curriculum order per experiment)."""
    return {mid: f"{RUN}/train/{mid}.metrics.jsonl" for mid in get_made("stage1") + get_made("stage2")}


def get_widen_verifications():
    """Each widened model's verification, by model id (rule widen's output, called after it is defined)."""
    return {mid: expand(rules.widen.output.verify, mid=mid)[0] for mid in get_made("widened")}


# ---------------------------------------------------------------- evaluation
def get_eval_outputs(rule, kind):
    """An evaluation rule's result files (json or run) of every (protocol, split) its job scores,
    in protocols.job_pairs order (the order the job writes them in)."""
    r = EVAL_RULES[rule]
    pattern = EVAL if kind == "json" else RUN_FILE
    splits = r.splits if r.shared else ["{split}"]
    return [pattern.format(protocol=p, model="{model}", split=s) for p, s in job_pairs(r.protocols, splits)]


def get_eval_splits(rule):
    """The `split` wildcard constraint of a one-split evaluation rule."""
    return "|".join(EVAL_RULES[rule].splits)


def get_eval_job(rule):
    """The log / benchmark name of an evaluation job: `{split}`, or a shared corpus's splits joined by '+'."""
    r = EVAL_RULES[rule]
    return job_name(r.splits) if r.shared else "{split}"


def get_eval_log(rule, folder, suffix):
    """An evaluation job's log (LOGS) or benchmark (BENCH) file: <folder>/evaluate/<model>/<job>.<suffix>."""
    return f"{folder}/evaluate/{{model}}/{get_eval_job(rule)}.{suffix}"


def get_eval_flags(wildcards):
    """Settings of one evaluation job: its splits, the protocols it scores (each as its job needs
    it: only these splits' templates), the global lengths and only these splits' overrides."""
    e = config["evaluate"]
    shared = EVAL_RULES.get("evaluate_shared_corpus")
    splits = [wildcards.split] if "split" in wildcards.keys() else list(shared.splits)
    protocols = [p.for_job(splits) for p in PROTOCOLS.values() if all(p.covers(s) for s in splits)]
    settings = {
        k: e[k]
        for k in ("query_length", "document_length", "top_k", "chunk_size", "encode_batch_size", "dtype", "score_dtype")
    }
    settings |= {
        "splits": splits,
        "protocols": protocols,
        "overrides": {s: e["overrides"][s] for s in splits if s in e["overrides"]},
    }
    return as_flags(settings | {"trust_remote_code": config["trust_remote_code"]})


def get_protocol_summaries():
    """What the summary states about each protocol (its splits among the evaluated ones)."""
    return [p.summary(SPLITS) for p in PROTOCOLS.values()]


def get_eval_results():
    """Every per-split result the summary reads: each protocol x model x split it covers."""
    return [
        EVAL.format(protocol=p.name, model=m, split=s)
        for p in PROTOCOLS.values()
        for m in get_eval_models()
        for s in SPLITS
        if p.covers(s)
    ]


def get_eval_runs():
    """The TREC run beside each result of get_eval_results, in the same order (the summary re-scores it)."""
    return [
        RUN_FILE.format(protocol=p.name, model=m, split=s)
        for p in PROTOCOLS.values()
        for m in get_eval_models()
        for s in SPLITS
        if p.covers(s)
    ]


def get_mteb_outputs():
    """mteb-format results: mteb/<protocol>/<model>/<task>.json, in protocols.mteb_files order."""
    files = mteb_files(get_protocol_summaries(), get_eval_models())
    return [f"{RUN}/mteb/{protocol}/{model}/{task}.json" for protocol, model, task, _ in files]


def get_summary_flags(wildcards):
    e = config["evaluate"]
    settings = {k: e[k] for k in ("query_length", "document_length", "overrides")}
    settings |= {
        "bright_revision": config["sources"]["bright"]["revision"],
        "base_model_revision": config["sources"]["base_model"]["revision"],
    }
    # statistics, pairs and seed groups (lineage.py) change the summary and report, nothing upstream;
    # an empty list is left out (it would be a flag without words): the summary reads it as none
    stats = {k: v for k, v in config["statistics"].items() if k != "pairs"}
    lists = {"pairs": [list(p) for p in LINEAGE.pairs()], "seed_groups": LINEAGE.seed_groups()}
    return as_flags(
        {
            "models": get_eval_models(),
            "splits": SPLITS,
            "protocols": get_protocol_summaries(),
            "settings": settings,
            "statistics": stats,
        }
        | {k: v for k, v in lists.items() if v}
    )


# ---------------------------------------------------------------- report
def get_final_output():
    """Every file a user reads, per-split results and run files included: one deleted by hand is
    rebuilt by a plain rerun (as an intermediate file it would not be, the summary being newer)."""
    summary = [f"{RUN}/summary.csv", f"{RUN}/summary.md", f"{RUN}/summary.json"]
    summary += [f"{RUN}/per_query.parquet", f"{RUN}/intervals.csv", f"{RUN}/paired_tests.csv"]
    return summary + get_eval_results() + get_eval_runs() + get_mteb_outputs() + get_report_targets()


def get_benchmarks():
    """Benchmark files of every heavy job (they are outputs of those jobs)."""
    files = expand(f"{BENCH}/build_shards/{{stage}}.tsv", stage=["stage1", "stage2"])
    files += [f"{BENCH}/train/{mid}.tsv" for mid in get_made("stage1") + get_made("stage2")]
    files += [
        path
        for model in get_eval_models()
        for rule, r in EVAL_RULES.items()  # a one-split rule's {split} over its splits, a shared corpus's one job
        for path in expand(get_eval_log(rule, BENCH, "tsv"), model=model, split=[""] if r.shared else r.splits)
    ]
    return files + [f"{BENCH}/widen/{mid}.tsv" for mid in get_made("widened")]


def get_cost_flags(wildcards):
    """GPUs per job kind: a change of train.nodes / gpus_per_node reruns the cost page."""
    train = config["train"]
    return as_flags({"train_gpus": train["nodes"] * train["gpus_per_node"], "evaluate_gpus": 1})


def get_provenance_flags(wildcards):
    # warm_start says how jobs start, not what they compute: changing it reruns nothing.
    return as_flags({"config": {k: v for k, v in config.items() if k != "warm_start"}})


# ---------------------------------------------------------------- warm start (workflow_scripts/warm.py)
def start_warm_server():
    """Local runs only (cluster jobs run on other machines, in their own allocations), with
    enough jobs to fork (warm.worth_starting)."""
    commands = (job.rule.shellcmd for job in workflow.dag.needrun_jobs())
    if config.get("warm_start", False) and workflow.local_exec and warm.worth_starting(commands):
        warm.start(log=".snakemake/warm.log")
    else:  # not even a server inherited from an enclosing run
        os.environ.pop(warm.ENV_VAR, None)


def stop_warm_server():
    warm.stop()


def get_report_targets():
    names = [
        "summary.html",
        "bright_ndcg10.png",
        "training_curves.png",
        "data_stats.png",
        "data_tables.html",
        "provenance.html",
        "cost.html",
    ]
    names += ["paired_tests.html"] + [f"intervals/{p}.png" for p in PROTOCOLS]  # a figure per protocol
    return [f"{RUN}/report/{n}" for n in names] + ([f"{RUN}/report/widen.html"] if get_made("widened") else [])


# ---------------------------------------------------------------- preflight (rules/preflight.smk)
PREFLIGHT = f"{RUN}/preflight"


def get_preflight_shape():
    """The cluster and global batch the forecast is for: `preflight.forecast`, else `train`'s."""
    train, forecast = config["train"], config["preflight"]["forecast"] or {}
    return {k: forecast.get(k, train[k]) for k in ("nodes", "gpus_per_node", "global_batch_size")}


def get_preflight_model(kind):
    """The main experiment's model a preflight stage measures: the widened one when widening
    comes before `kind` (stage1, stage2; `evaluate`: the final architecture), else the base."""
    kinds = LINEAGE.kinds("main")
    before = kinds[: kinds.index(kind)] if kind in kinds else kinds
    return MODEL.format(model=LINEAGE.model_id("main", "widened")) if "widened" in before else BASE_MODEL


def get_preflight_init(wildcards):
    return get_preflight_model(wildcards.stage)


def get_preflight_train_flags(wildcards):
    """The main experiment's training settings of the stage (what its training job gets), the
    preflight's bounds and the forecast's shape."""
    p, shape = config["preflight"], get_preflight_shape()
    bounds = {k: p[k] for k in ("train_steps", "per_device_batch_size", "false_negative_batches")}
    forecast = {f"forecast_{k}": shape[k] for k in ("nodes", "gpus_per_node", "global_batch_size")}
    settings = get_train_settings("main", wildcards.stage)
    return as_flags(settings | bounds | forecast | {"trust_remote_code": config["trust_remote_code"]})


def get_preflight_eval_flags(wildcards):
    e, p = config["evaluate"], config["preflight"]
    settings = {k: e[k] for k in ("query_length", "document_length", "overrides", "encode_batch_size", "dtype")}
    settings |= {k: p[k] for k in ("documents_per_split", "queries_per_split", "length_sample")}
    return as_flags(
        settings | {"splits": SPLITS, "seed": config["seed"], "trust_remote_code": config["trust_remote_code"]}
    )


def get_preflight_widen(wildcards):
    """The widening verification of the model the preflight trains (none when nothing widens)."""
    model = get_preflight_model("evaluate")
    return [f"{model}.verify.json"] if model != BASE_MODEL else []


def get_preflight_forecast_flags(wildcards):
    t, p, shape = config["train"], config["preflight"], get_preflight_shape()
    return as_flags(
        shape
        | {
            k: t[k]
            for k in (
                "gradient_accumulation_steps",
                "mini_batch_size",
                "epochs",
                "bf16",
                "maxsim_backend",
                "score_mini_batch_size",
            )
        }
        | {k: p[k] for k in ("device_memory_gib", "gpu_hours_budget", "assumed_mfu")}
        | {"evaluated_models": len(get_eval_models()), "shuffle_buckets": config["data"]["shuffle_buckets"]}
    )


def get_preflight_output():
    return [f"{RUN}/preflight.json", f"{RUN}/preflight.md", f"{RUN}/report/preflight.html"]
