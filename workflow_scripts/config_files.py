"""Config files read strictly (one line naming the file and the problem) and checked against the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

__all__ = ["config_file_problems", "config_problem", "load_config_file"]


def _yaml_loader():
    """A safe YAML loader that refuses a key given twice in one mapping (a merge key ``<<`` aside)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    if isinstance(key, str | int | float | bool) and key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
                        )
                    seen.setdefault(key, key_node.start_mark.line)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A workflow config file (YAML, or JSON) as plain data, or one line naming the file and the problem.

    Stricter than Snakemake's reader: a key given twice in one mapping (YAML keeps the later one
    silently) and any YAML tag (``!!python/name:...``, ``!custom``: a config holds plain values,
    and a tag would ask the reader to construct an object) are refused.

    Parameters
    ----------
    path
        The config file (YAML; JSON is read as YAML).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "config.yaml"
    >>> _ = f.write_text("run_name: a\\nevaluate:\\n  top_k: 10\\n  top_k: 100\\n")
    >>> try:
    ...     load_config_file(f)
    ... except UserError as err:
    ...     print(str(err).replace(str(f), "FILE"))
    FILE:4: duplicate key 'top_k' (first on line 3): YAML would keep the later value silently
    >>> _ = f.write_text("run_name: !!python/object/apply:os.system [echo]\\n")
    >>> try:
    ...     load_config_file(f)
    ... except UserError as err:
    ...     print(str(err).replace(str(f), "FILE"))
    FILE:1: YAML tag !!python/object/apply:os.system: a config holds plain values only (tags are never constructed)
    """
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise UserError(f"{path}: file not found") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid UTF-8 (byte {err.start})") from err
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.TagToken):
                handle, suffix = token.value
                raise UserError(
                    f"{path}:{token.start_mark.line + 1}: YAML tag {handle or ''}{suffix}: a config holds plain "
                    "values only (tags are never constructed)"
                )
        data = yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        if problem.startswith("duplicate key"):
            raise UserError(f"{where}: {problem}: YAML would keep the later value silently") from err
        raise UserError(f"{where}: not valid YAML ({problem})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected keys at top level, got {type(data).__name__}")
    return data


def config_file_problems(paths: list[str | Path]) -> list[str]:
    """:func:`load_config_file`'s refusal of each file, one line each (none: every file is clean).

    Parameters
    ----------
    paths
        The config files in the order Snakemake reads them: ``config.yaml``, then each ``--configfile``.
    """
    problems = []
    for path in paths:
        try:
            load_config_file(path)
        except UserError as err:
            problems.append(str(err))
    return problems


def config_problem(
    config: dict[str, Any], schema_path: str | Path, enums: dict[str, list[str]] | None = None
) -> str | None:
    """The most relevant schema violation of ``config`` as one line naming the key, or None.

    ``enums`` fills ``definitions.<name>.enum`` of the schema first (BRIGHT's split names live
    in :mod:`workflow_scripts.bright.meta`, not in a second copy in the YAML).

    Parameters
    ----------
    config
        The merged config, as Snakemake holds it.
    schema_path
        The JSON schema (YAML) the config must follow.
    enums
        Definition name -> allowed values, filled into the schema before validating (None: none).

    Examples
    --------
    >>> import pathlib
    >>> schema = pathlib.Path(__file__).with_name("config.schema.yaml")
    >>> config_problem({"run_name": "x y"}, schema)
    "config: (top level): 'seed' is a required property"
    >>> import yaml
    >>> config = yaml.safe_load(schema.parents[1].joinpath("config.yaml").read_text())
    >>> config["data"]["rows_per_shard"] = "many"
    >>> config_problem(config, schema, {"split": config["evaluate"]["splits"]})
    "config: data/rows_per_shard: 'many' is not of type 'integer'"
    >>> config = yaml.safe_load(schema.parents[1].joinpath("config.yaml").read_text())
    >>> config["evaluate"]["splits"] = ["pony", "atlantis"]
    >>> config_problem(config, schema, {"split": ["pony"]})
    "config: evaluate/splits/1: 'atlantis' is not one of ['pony']"
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    for name, values in (enums or {}).items():
        schema["definitions"][name]["enum"] = list(values)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    message = error.message if len(error.message) < 300 else error.message[:300] + "..."
    return f"config: {where}: {message}"
