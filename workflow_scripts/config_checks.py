"""Config checks beyond the JSON schema: what a job would otherwise find out hours later.

The schema (``config.schema.yaml``) checks types and ranges key by key; it cannot say that a
query template names a field nobody fills, that the global batch does not split over the
cluster, or that ``top_k: 1000.0`` -- an *integer* to JSON Schema Draft 2020-12, which counts
any float with a zero fraction as one -- reaches a stage whose command line reads ``int``
(``int("1000.0")`` fails). :func:`semantic_problems` finds those from the config alone, at
parse time, each as one line naming the key, in the format of
:func:`workflow_scripts.config_files.config_problem`; call it after the schema passed.

Integers: a float is refused wherever the schema says ``integer`` (decided here rather than
casting in every stage: ``2.0`` GPUs or ``1000.0`` documents are slips worth a line, and
the stages' typed command lines stay strict).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

__all__ = [
    "TEMPLATE_FIELDS",
    "batch_problems",
    "float_integer_problems",
    "instruction_problems",
    "local_problems",
    "name_length_problems",
    "model_name_problems",
    "overlay_problems",
    "same_model_problems",
    "preflight_problems",
    "protocol_problems",
    "ranking_problems",
    "semantic_problems",
    "semantic_warnings",
    "stage_source_problems",
    "step_problems",
    "template_problems",
]

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")
TEMPLATE_FIELDS = ("domain", "query")  # what an evaluation job fills in a protocol's query templates
REASONIR_CONFIGS = ("vl", "hq")  # what build_shards reads from reasonir-data
CLUSTER_SHAPE = ("nodes", "gpus_per_node")  # Slurm resources: the top-level train section only
METRIC_DEPTH = 100  # deepest cutoff of evaluate.trec.MEASURES (ndcg/map/recall/mrr @100)


def semantic_problems(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> list[str]:
    """Every problem of a schema-valid ``config`` that would make a job fail or mislead, one line each.

    Experiments are checked on their merged ``widen`` / ``train`` sections; a problem they
    inherit from the top level is reported once.

    Parameters
    ----------
    config
        The workflow config, already valid against the schema.
    schema_path
        The JSON schema (its ``integer`` leaves are re-checked strictly).

    Examples
    --------
    >>> import yaml
    >>> config = yaml.safe_load(SCHEMA_PATH.parents[1].joinpath("config.yaml").read_text())
    >>> semantic_problems(config)
    []
    >>> config["evaluate"]["top_k"] = 1000.0
    >>> config["evaluate"]["protocols"]["card"] = {"query_template": "{lang}: {query}"}
    >>> config["experiments"]["big"] = {"train": {"global_batch_size": 1020}}
    >>> for line in semantic_problems(config):
    ...     print(line)
    config: evaluate/top_k: 1000.0 is a float; the stage reads an integer here (write 1000)
    config: evaluate/protocols/card/query_template: field {lang} is never filled (only {domain} and {query} are)
    config: experiments/big: train/global_batch_size: 1020 is not divisible by nodes 2 x gpus_per_node 4 x gradient_accumulation_steps 1 = 8
    """
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    problems = float_integer_problems(config, schema)
    problems += protocol_problems(config["evaluate"])
    problems += ranking_problems(config["evaluate"])
    problems += stage_source_problems(config["data"]["stages"])
    problems += model_name_problems(config) + same_model_problems(config)
    problems += name_length_problems(config) + local_problems(config)
    problems += instruction_problems(config["evaluate"])
    problems += batch_problems(config["train"]) + step_problems(config["train"])
    problems += preflight_problems(config)
    problems += _lineage_problems(config)
    for experiment, train, own in _experiment_sections(config, schema):
        found = [p for p in own + batch_problems(train) + step_problems(train) if p not in problems]
        problems += [f"config: experiments/{experiment}: {p.removeprefix('config: ')}" for p in found]
    return _unique(problems)


def semantic_warnings(config: dict[str, Any]) -> list[str]:
    """Settings that are legal but have no effect, one line each (worth printing, not fatal).

    Parameters
    ----------
    config
        The workflow config, already valid against the schema.

    Examples
    --------
    >>> config = {"evaluate": {"splits": ["biology"], "overrides": {"pony": {"query_length": 32}}},
    ...           "evaluate_trained": ["widened"], "widen": {"to": None}}
    >>> for line in semantic_warnings(config):
    ...     print(line)
    config: evaluate/overrides: pony is not in evaluate/splits; its override is unused
    config: evaluate_trained: widened, but no experiment widens (widen/to is null)
    """
    e = config["evaluate"]
    out = [
        f"config: evaluate/overrides: {split} is not in evaluate/splits; its override is unused"
        for split in e.get("overrides", {})
        if split not in e["splits"]
    ]
    widens = [config["widen"]["to"]] + [
        ((spec or {}).get("widen") or {}).get("to", config["widen"]["to"])
        for spec in (config.get("experiments") or {}).values()
    ]
    if "widened" in config.get("evaluate_trained", []) and all(to is None for to in widens):
        out.append("config: evaluate_trained: widened, but no experiment widens (widen/to is null)")
    return out + _duplicate_protocols(e.get("protocols") or {})


def _duplicate_protocols(entries: dict[str, Any]) -> list[str]:
    """Two protocols that score exactly the same thing (same definition) cost twice for one result."""
    from .bright.protocols import resolve
    from .errors import UserError

    try:
        protocols = list(resolve(entries).values())
    except UserError:
        return []  # a semantic problem, reported there
    return [
        f"config: evaluate/protocols/{b.name}: scores exactly what {a.name} does (same definition)"
        for i, a in enumerate(protocols)
        for b in protocols[i + 1 :]
        if a.definition() == b.definition()
    ]


def float_integer_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Floats where the schema says ``integer`` (Draft 2020-12 accepts ``2.0`` there; we do not).

    Parameters
    ----------
    config
        The workflow config, or one with an experiment's sections merged in.
    schema
        The loaded JSON schema (``config.schema.yaml``).

    Examples
    --------
    >>> schema = {"type": "object", "properties": {"n": {"type": ["integer", "null"]}, "x": {"type": "number"}}}
    >>> float_integer_problems({"n": 2.0, "x": 2.0}, schema)
    ['config: n: 2.0 is a float; the stage reads an integer here (write 2)']
    >>> float_integer_problems({"n": None, "x": 2.5}, schema)
    []
    """
    import jsonschema

    base = jsonschema.Draft202012Validator
    strict = base.TYPE_CHECKER.redefine("integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool))
    validator = jsonschema.validators.extend(base, type_checker=strict)(schema)
    out = []
    for error in validator.iter_errors(config):
        if error.validator == "type" and isinstance(error.instance, float) and error.instance.is_integer():
            where = "/".join(str(p) for p in error.absolute_path)
            out.append(
                f"config: {where}: {error.instance!r} is a float; the stage reads an integer here "
                f"(write {int(error.instance)})"
            )
    return out


def template_problems(template: str, key: str = "evaluate/query_template") -> list[str]:
    """Problems of the evaluation query template: only ``{domain}`` and ``{query}`` are filled.

    Parameters
    ----------
    template
        A query template or a per-split instruction (``str.format`` syntax).
    key
        The config key the lines name (``evaluate/protocols/<name>/query_template``...).

    Examples
    --------
    >>> template_problems("Given a {domain} post.\\nQuery: {query}")
    []
    >>> template_problems("{0} {query}")
    ['config: evaluate/query_template: positional field {0}; name it {domain} or {query}']
    >>> template_problems("Query: {{query}}")
    ['config: evaluate/query_template: never inserts the query: no {query} field ({{query}} is a literal)']
    >>> template_problems("{query:d}")
    ["config: evaluate/query_template: '{query:d}' does not format: Unknown format code 'd' for object of type 'str'"]
    >>> template_problems("{query")
    ["config: evaluate/query_template: expected '}' before end of string (a literal brace is written {{ or }})"]
    """
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as err:
        return [f"config: {key}: {err} (a literal brace is written {{{{ or }}}})"]
    out = []
    for field in fields:
        if field == "" or field.isdigit():
            out.append(f"config: {key}: positional field {{{field}}}; name it {{domain}} or {{query}}")
        elif field not in TEMPLATE_FIELDS:
            out.append(f"config: {key}: field {{{field}}} is never filled (only {{domain}} and {{query}} are)")
    if "query" not in fields:
        out.append(f"config: {key}: never inserts the query: no {{query}} field ({{{{query}}}} is a literal)")
    if not out:
        try:
            template.format(domain="Biology", query="Why?")
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as err:
            out.append(f"config: {key}: {template!r} does not format: {err}")
    return out


def protocol_problems(evaluate: dict[str, Any]) -> list[str]:
    """Each protocol starts from a preset, formats its queries, and has a corpus some split has.

    Parameters
    ----------
    evaluate
        The config's ``evaluate`` section (``protocols``, ``splits``).

    Examples
    --------
    >>> protocol_problems({"splits": ["leetcode"], "protocols": {"long": {}, "x": {"preset": "card",
    ...                    "instructions": {"pony": "{q}"}}}})  # doctest: +NORMALIZE_WHITESPACE
    ['config: evaluate/protocols/x/instructions/pony: field {q} is never filled (only {domain} and {query} are)',
     'config: evaluate/protocols/x/instructions/pony: never inserts the query: no {query} field ({{query}} is a literal)',
     'config: evaluate/protocols/long: its corpus long_documents exists for none of evaluate/splits (only biology,
      earth_science, economics, psychology, robotics, stackoverflow, sustainable_living, pony have it)']
    """
    from .bright.meta import LONG_SPLITS
    from .bright.protocols import resolve
    from .errors import UserError

    out = []
    for name, entry in evaluate["protocols"].items():
        where = f"evaluate/protocols/{name}"
        if (entry or {}).get("query_template") is not None:
            out += template_problems(entry["query_template"], f"{where}/query_template")
        for split, template in ((entry or {}).get("instructions") or {}).items():
            out += template_problems(template, f"{where}/instructions/{split}")
    try:
        protocols = resolve(evaluate["protocols"])
    except UserError as err:
        return out + [str(err)]
    if not protocols:
        out.append("config: evaluate/protocols: every protocol is removed (false); keep at least one")
    for name, protocol in protocols.items():
        if not any(protocol.covers(s) for s in evaluate["splits"]):
            out.append(
                f"config: evaluate/protocols/{name}: its corpus {protocol.corpus} exists for none of "
                f"evaluate/splits (only {', '.join(LONG_SPLITS)} have it)"
            )
    return out


def ranking_problems(evaluate: dict[str, Any]) -> list[str]:
    """The run file must be deep enough for every metric computed from it.

    pytrec_eval scores the top ``top_k`` documents only: with fewer than ``METRIC_DEPTH`` the
    @100 metrics (and with fewer than 10 nDCG@10 itself) would be silently wrong.

    Parameters
    ----------
    evaluate
        The config's ``evaluate`` section (``top_k`` is read).

    Examples
    --------
    >>> ranking_problems({"top_k": 1000}), ranking_problems({"top_k": 100})
    ([], [])
    >>> ranking_problems({"top_k": 50})
    ['config: evaluate/top_k: 50 < 100: the @100 metrics (nDCG, MAP, recall, MRR) need the top 100 documents']
    """
    if evaluate["top_k"] < METRIC_DEPTH:
        return [
            f"config: evaluate/top_k: {evaluate['top_k']} < {METRIC_DEPTH}: the @{METRIC_DEPTH} metrics "
            f"(nDCG, MAP, recall, MRR) need the top {METRIC_DEPTH} documents"
        ]
    return []


def batch_problems(train: dict[str, Any]) -> list[str]:
    """The global batch must split evenly over devices and accumulation steps.

    Only this must hold: ``per_device = global / (nodes x gpus_per_node x accumulation)`` is
    a whole number (``train.trainer.per_device_batch_size``). ``mini_batch_size`` is GradCache's
    chunk: PyLate's CachedContrastive steps through the per-device batch in chunks of it, so
    it need not divide the batch and may exceed it (then one chunk).

    Parameters
    ----------
    train
        A ``train`` section (top level, an experiment's merged one, or the preflight forecast's shape):
        ``global_batch_size``, ``nodes``, ``gpus_per_node`` and ``gradient_accumulation_steps`` are read.

    Examples
    --------
    >>> t = {"global_batch_size": 2048, "nodes": 2, "gpus_per_node": 4, "gradient_accumulation_steps": 1}
    >>> batch_problems(t)
    []
    >>> batch_problems(t | {"gradient_accumulation_steps": 3})
    ['config: train/global_batch_size: 2048 is not divisible by nodes 2 x gpus_per_node 4 x gradient_accumulation_steps 3 = 24']
    """
    nodes, gpus, accumulation = train["nodes"], train["gpus_per_node"], train["gradient_accumulation_steps"]
    split = nodes * gpus * accumulation
    if train["global_batch_size"] % split:
        return [
            f"config: train/global_batch_size: {train['global_batch_size']} is not divisible by nodes {nodes} "
            f"x gpus_per_node {gpus} x gradient_accumulation_steps {accumulation} = {split}"
        ]
    return []


def preflight_problems(config: dict[str, Any]) -> list[str]:
    """The preflight forecast's global batch must split over its cluster, as the training's must.

    Parameters
    ----------
    config
        The workflow config: ``preflight.forecast`` (None: nothing to check) over ``train``.

    Examples
    --------
    >>> train = {"global_batch_size": 256, "nodes": 1, "gpus_per_node": 1, "gradient_accumulation_steps": 1}
    >>> preflight_problems({"train": train, "preflight": {"forecast": None}})
    []
    >>> preflight_problems({"train": train, "preflight": {"forecast": {"nodes": 3, "gpus_per_node": 4, "global_batch_size": 2048}}})
    ['config: preflight/forecast/global_batch_size: 2048 is not divisible by nodes 3 x gpus_per_node 4 x gradient_accumulation_steps 1 = 12']
    """
    forecast = (config.get("preflight") or {}).get("forecast")
    if not forecast:
        return []
    shape = {**config["train"], **forecast}
    return [p.replace("config: train/", "config: preflight/forecast/", 1) for p in batch_problems(shape)]


def step_problems(train: dict[str, Any]) -> list[str]:
    """``max_steps`` is null or a step count, and a capped run logs at least one loss.

    Parameters
    ----------
    train
        A ``train`` section: ``max_steps`` and ``logging_steps`` are read.

    Examples
    --------
    >>> step_problems({"max_steps": None, "logging_steps": 10})
    []
    >>> step_problems({"max_steps": 0, "logging_steps": 1})
    ['config: train/max_steps: 0 is not a step cap; write null (whole epochs) or a count >= 1']
    >>> step_problems({"max_steps": 5, "logging_steps": 10})
    ['config: train/logging_steps: 10 > train/max_steps 5: no loss would ever be logged']
    """
    cap = train.get("max_steps")
    if cap is None:
        return []
    if cap < 1:  # train_stage passes `max_steps or -1`: 0 and negatives mean whole epochs
        return [f"config: train/max_steps: {cap} is not a step cap; write null (whole epochs) or a count >= 1"]
    if train["logging_steps"] > cap:
        return [
            f"config: train/logging_steps: {train['logging_steps']} > train/max_steps {cap}: no loss would ever be logged"
        ]
    return []


def stage_source_problems(stages: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each training source entry names data that ``build_shards`` reads.

    Parameters
    ----------
    stages
        ``data.stages``: per training stage, its source entries (``source``, ``config``).

    Examples
    --------
    >>> stage_source_problems({"stage1": [{"source": "reasonir", "config": "vl"}],
    ...                        "stage2": [{"source": "reasonir", "config": None},
    ...                                   {"source": "bge_reasoner", "config": "hq"}]})  # doctest: +NORMALIZE_WHITESPACE
    ["config: data/stages/stage2/0/config: reasonir needs 'vl' or 'hq', not None",
     "config: data/stages/stage2/1/config: bge_reasoner reads all its domain files; write null, not 'hq'"]
    """
    out = []
    for stage, entries in stages.items():
        for i, entry in enumerate(entries):
            where = f"config: data/stages/{stage}/{i}/config"
            if entry["source"] == "reasonir" and entry["config"] not in REASONIR_CONFIGS:
                out.append(f"{where}: reasonir needs 'vl' or 'hq', not {entry['config']!r}")
            elif entry["source"] == "bge_reasoner" and entry["config"] is not None:
                out.append(f"{where}: bge_reasoner reads all its domain files; write null, not {entry['config']!r}")
    return out


def model_name_problems(config: dict[str, Any]) -> list[str]:
    """An ``evaluate_models`` name must not be a model the DAG makes (``lr2-stage2``...).

    Both would be ``results/<run>/eval/<name>/``; the download would be scored in its place.

    Parameters
    ----------
    config
        The workflow config: ``evaluate_models`` and the experiments (the models the DAG makes).

    Examples
    --------
    >>> import yaml
    >>> config = yaml.safe_load(SCHEMA_PATH.parents[1].joinpath("config.yaml").read_text())
    >>> config["experiments"]["lr2"] = {"train": {"stage2": {"learning_rate": 1e-5}}}
    >>> config["evaluate_models"]["lr2-stage2"] = config["evaluate_models"]["base"]
    >>> model_name_problems(config)
    ['config: evaluate_models/lr2-stage2: is also the name of a model the workflow trains (experiment lr2)']
    """
    from .lineage import Lineage

    made = Lineage(config).models
    return [
        f"config: evaluate_models/{name}: is also the name of a model the workflow trains (experiment {made[name][0]})"
        for name in config.get("evaluate_models") or {}
        if name in made
    ]


def _lineage_problems(config: dict[str, Any]) -> list[str]:
    """Experiments' seeds and the tested pairs (:meth:`workflow_scripts.lineage.Lineage.problems`)."""
    from .lineage import Lineage

    return Lineage(config).problems()


def _experiment_sections(config: dict[str, Any], schema: dict[str, Any]):
    """(experiment, merged train section, its own problems) for each experiment but main's defaults."""
    from .lineage import Lineage

    lineage = Lineage(config)
    for experiment in lineage.experiments:
        override = lineage.overrides[experiment]
        if not override:
            continue
        merged = config | {section: lineage.setting(section, experiment) for section in ("widen", "train")}
        own = float_integer_problems(merged, schema)
        own += [
            f"config: train/{key}: the cluster shape is the top-level train/{key} (Slurm resources); "
            "an experiment cannot change it"
            for key in CLUSTER_SHAPE
            if key in (override.get("train") or {})
        ]
        yield experiment, merged["train"], own


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def instruction_problems(evaluate: dict[str, Any]) -> list[str]:
    """An instruction for a split that is not evaluated would never be used: refused.

    Parameters
    ----------
    evaluate
        The config's ``evaluate`` section (``protocols``, ``splits``).

    Examples
    --------
    >>> instruction_problems({"splits": ["pony"], "protocols": {"card": None, "x": {"instructions": {"aops": "{query}"}}}})
    ['config: evaluate/protocols/x/instructions/aops: aops is not in evaluate/splits, so this instruction is never used (remove it, or add aops to evaluate/splits)']
    """
    return [
        f"config: evaluate/protocols/{name}/instructions/{split}: {split} is not in evaluate/splits, so this "
        f"instruction is never used (remove it, or add {split} to evaluate/splits)"
        for name, entry in evaluate["protocols"].items()
        for split in ((entry or {}).get("instructions") or {})
        if split not in evaluate["splits"]
    ]


def _model_identity(source: dict[str, Any]) -> tuple[str, ...]:
    """What makes two ``evaluate_models`` entries one model: the folder a local one resolves to
    (symlinks, ``./`` and trailing slashes included), else the hub repository and revision."""
    import os

    if source.get("local"):
        return ("local", os.path.realpath(source["local"]))
    return ("hub", source["repo"], source["revision"])


def same_model_problems(config: dict[str, Any]) -> list[str]:
    """One model evaluated under two ``evaluate_models`` names: two rows that are one model, refused.

    Parameters
    ----------
    config
        The workflow config: ``evaluate_models`` (``local``, else ``repo`` and ``revision``) is read.

    Examples
    --------
    >>> hub = {"repo": "org/m", "revision": "a" * 40, "local": None}
    >>> same_model_problems({"evaluate_models": {"a": hub, "b": dict(hub), "c": hub | {"revision": "b" * 40}}})
    ['config: evaluate_models/b: the same model as evaluate_models/a (org/m @ aaaaaaaaaaaa); evaluate it under one name']
    >>> same_model_problems({"evaluate_models": {"a": hub | {"local": "m/"}, "b": hub | {"local": "./m"}}})[0][:52]
    'config: evaluate_models/b: the same model as evaluat'
    """
    seen: dict[tuple[str, ...], str] = {}
    out = []
    for name in sorted(config.get("evaluate_models") or {}):
        source = config["evaluate_models"][name]
        key = _model_identity(source)
        if key in seen:
            what = f"local {source['local']}" if key[0] == "local" else f"{source['repo']} @ {source['revision'][:12]}"
            out.append(
                f"config: evaluate_models/{name}: the same model as evaluate_models/{seen[key]} ({what}); "
                "evaluate it under one name"
            )
        else:
            seen[key] = name
    return out


def overlay_problems(paths: list[str | Path]) -> list[str]:
    """An empty mapping in an overlay config (``--configfile``) where the files before it say more.

    Snakemake merges config files key by key, so ``protocols: {}`` in an overlay removes none of
    ``config.yaml``'s protocols: the user meant something that did not happen. Refused, saying
    how to remove an entry (a protocol: ``card: false``). A ``{}`` that adds what the files
    before it lack (``long: {}``: the protocol with its defaults) is what it says, and stays.

    Parameters
    ----------
    paths
        ``config.yaml``, then each overlay in the order Snakemake merges them.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.yaml").write_text("evaluate:\\n  protocols: {card: {}, bright: {}}\\n")
    >>> _ = (folder / "o.yaml").write_text("evaluate:\\n  protocols: {}\\n")
    >>> print(overlay_problems([folder / "config.yaml", folder / "o.yaml"])[0].replace(str(folder) + "/", ""))
    o.yaml: evaluate/protocols: {} removes nothing (config files merge key by key: card, bright stay); remove a protocol with `card: false`
    >>> _ = (folder / "o.yaml").write_text("evaluate:\\n  protocols: {long: {}}\\n")
    >>> overlay_problems([folder / "config.yaml", folder / "o.yaml"])
    []
    """
    from snakemake.utils import update_config

    from .config_files import load_config_file
    from .errors import UserError

    before: dict[str, Any] = {}
    out = []
    for index, path in enumerate(paths):
        try:
            overlay = load_config_file(path)  # the reader that already refused a bad file, in the Snakefile
        except UserError:
            return out
        for keys in _empty_mappings(overlay) if index else ():
            value: Any = before
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, dict) and value:
                where, kept = "/".join(keys), ", ".join(map(str, value))
                how = (
                    f"remove a protocol with `{next(iter(value))}: false`"
                    if keys[-1] == "protocols"
                    else ("edit config.yaml, or give each key its own value")
                )
                out.append(f"{path}: {where}: {{}} removes nothing (config files merge key by key: {kept} stay); {how}")
        update_config(before, overlay)
    return out


def _empty_mappings(node: Any, keys: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Key paths of every ``{}`` value in a loaded YAML document."""
    if not isinstance(node, dict):
        return []
    if not node and keys:
        return [keys]
    return [found for key, value in node.items() for found in _empty_mappings(value, (*keys, str(key)))]


# A name becomes a file or folder name (``resources/sources/model_<name>.manifest.json``, its
# temporary sibling ``.model_<name>.manifest.json.XXXXXXXX.tmp``, ``<experiment>-stage2``): 100
# characters keep each well under the 255 bytes a file name may have (names are ASCII).
NAME_MAX_CHARS = 100


def name_length_problems(config: dict[str, Any]) -> list[str]:
    """Every name that becomes a file name is at most :data:`NAME_MAX_CHARS` characters.

    A longer one would pass every other check and stop the first job that writes a file of
    that name (``File name too long``).

    Parameters
    ----------
    config
        The workflow config: ``run_name`` and the names in ``evaluate_models``, ``experiments`` and
        ``evaluate.protocols``.

    Examples
    --------
    >>> [line] = name_length_problems({"run_name": "demo", "evaluate_models": {"m" * 101: {}}, "evaluate": {}})
    >>> print(line.replace("m" * 40, "M40"))
    config: evaluate_models/M40...: a name of 101 characters; names become file names: at most 100
    """
    names = [("run_name", config.get("run_name"))]
    for section in ("evaluate_models", "experiments"):
        names += [(f"{section}/{_short(name)}", name) for name in config.get(section) or {}]
    protocols = (config.get("evaluate") or {}).get("protocols") or {}
    names += [(f"evaluate/protocols/{_short(name)}", name) for name in protocols]
    return [
        f"config: {where}: a name of {len(name)} characters; names become file names: at most {NAME_MAX_CHARS}"
        for where, name in names
        if isinstance(name, str) and len(name) > NAME_MAX_CHARS
    ]


def _short(name: str, keep: int = 40) -> str:
    """A long name's first ``keep`` characters and an ellipsis (the line stays readable)."""
    return name if len(name) <= keep else f"{name[:keep]}..."


def local_problems(config: dict[str, Any]) -> list[str]:
    """A source's ``local`` that exists but is not a folder, found at parse time.

    The download would find it only when it runs, after Snakemake removed the old manifest. A
    ``local`` that does not exist yet is left to the download (``demo_assets`` makes the
    demo's mirrors). A relative path is relative to the working directory, as the download
    reads it.

    Parameters
    ----------
    config
        The workflow config: the ``local`` of each ``sources`` and ``evaluate_models`` entry.

    Examples
    --------
    >>> import tempfile
    >>> f = tempfile.mkstemp()[1]
    >>> local_problems({"sources": {"bright": {"local": f}}, "evaluate_models": {"x": {"local": None}}}) == [
    ...     f"config: sources/bright/local: {f} is a file, not a directory (a mirror is a folder laid out like "
    ...     "the hub repository)"]
    True
    """
    out = []
    for section in ("sources", "evaluate_models"):
        for name, source in (config.get(section) or {}).items():
            local = source.get("local") if isinstance(source, dict) else None
            path = Path(local).expanduser() if isinstance(local, str) and local else None
            if path is not None and path.exists() and not path.is_dir():
                out.append(
                    f"config: {section}/{name}/local: {local} is a file, not a directory (a mirror is a folder laid "
                    "out like the hub repository)"
                )
    return out
