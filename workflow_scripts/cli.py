"""Command lines built from typed functions: one ``--flag`` per keyword argument.

Every stage is a plain typed function (``evaluate_split(*, model_path, split, ...)``); its
command line is derived from the signature, so a rule names each file and setting once,
by name, and ``snakemake -n -p`` prints a command a person can read and rerun by hand::

    python -m workflow_scripts.evaluate.job split --model-path results/demo/models/stage1 \\
        --split pony --query-length 24 ...

Values are converted from their annotations: ``int``, ``float``, ``str``/``Path``, ``bool``
(``true``/``false``, any case, as Snakemake prints Python's ``True``), ``X | None``
(``None``/``null``), ``list[str]``/``list[int]`` as several words, and anything else
(``dict``, ``list[dict]``) as JSON. A parameter typed by a dataclass (a settings record) is
spread into one flag per field by :func:`spread_records`, so the rule's command stays flat.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import logging
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import UserError, write_error
from .progress import quiet_library_progress_bars

__all__ = ["parser_for", "run_cli", "run_commands", "spread_records", "to_argv"]

NONE_WORDS = {"none", "null"}


def _convert(hint: Any) -> tuple[Callable[[str], Any], bool]:
    """(string -> value converter, takes several words) for one annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if len(args) == 2 and type(None) in args and typing.get_origin(args[0]) is list:
            return _convert(args[0])  # `list[str] | None`: several words; None when the flag is not given
        inner = [_convert(a)[0] for a in args if a is not type(None)]
        optional = type(None) in args

        def union(text: str) -> Any:
            if optional and text.lower() in NONE_WORDS:
                return None
            for convert in inner:  # declared order: bool before str in ``bool | str``
                try:
                    return convert(text)
                except (ValueError, json.JSONDecodeError):
                    continue
            raise ValueError(f"not one of {hint}: {text!r}")

        return union, False
    if origin is list and args and args[0] in (str, int, float, Path):
        return args[0], True
    if hint is bool:
        return _bool, False
    if hint in (int, float, str):
        return hint, False
    if hint is Path:
        return str, False
    return json.loads, False


def _bool(text: str) -> bool:
    """``true``/``false`` in any case.

    Examples
    --------
    >>> _bool("True"), _bool("false")
    (True, False)
    """
    if text.lower() not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return text.lower() == "true"


def to_argv(settings: dict[str, Any]) -> list[str]:
    """The command-line words of ``settings``, keys sorted: the inverse of :func:`parser_for`.

    Sorted keys and sorted JSON make the words (and Snakemake's record of them) independent
    of the order the config was written in.

    Parameters
    ----------
    settings
        Keyword arguments by name (``top_k``, not ``--top-k``): a list of numbers or strings becomes
        several words, a dict or any other list one JSON word, anything else ``str(value)``.

    Examples
    --------
    >>> to_argv({"top_k": 10, "splits": ["a", "b"], "sources": [{"y": 1, "x": None}], "drop": False})
    ['--drop', 'False', '--sources', '[{"x": null, "y": 1}]', '--splits', 'a', 'b', '--top-k', '10']
    """
    words: list[str] = []
    for key in sorted(settings):
        value = settings[key]
        words.append(f"--{key.replace('_', '-')}")
        if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
            words.extend(str(v) for v in value)
        elif isinstance(value, dict | list):
            words.append(json.dumps(value, sort_keys=True))
        else:
            words.append(str(value))
    return words


def parser_for(function: Callable[..., Any], parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one ``--kebab-case`` option per keyword argument of ``function`` to ``parser``.

    Parameters
    ----------
    function
        The function whose parameters become the options: typed by their annotations, required unless
        they have a default.
    parser
        The parser (or sub-command parser) to add them to; it is returned.

    Examples
    --------
    >>> def f(*, path: str, top_k: int = 10, exclude: bool = True, tags: list[str] | None = None) -> None: ...
    >>> p = parser_for(f, argparse.ArgumentParser())
    >>> vars(p.parse_args(["--path", "x", "--top-k", "5", "--exclude", "False"]))
    {'path': 'x', 'top_k': 5, 'exclude': False, 'tags': None}
    >>> p.parse_args(["--path", "x", "--tags", "a", "b"]).tags
    ['a', 'b']
    """
    hints = typing.get_type_hints(function)
    for name, param in inspect.signature(function).parameters.items():
        convert, several = _convert(hints.get(name, str))
        required = param.default is inspect.Parameter.empty
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=convert,
            nargs="*" if several else None,
            required=required,
            default=None if required else param.default,
        )
    return parser


def spread_records(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` taking one keyword per field of each of its dataclass-typed parameters.

    The returned function's signature (what :func:`parser_for` reads) is ``function``'s with each
    record parameter replaced by the record's fields; it builds the records and calls
    ``function`` by keyword. The record stays the one list of its keys.

    Parameters
    ----------
    function
        A function called by keyword; each parameter annotated with a dataclass is spread into its fields.

    Examples
    --------
    >>> @dataclasses.dataclass(frozen=True)
    ... class Shape:
    ...     rows: int
    ...     width: int = 2
    >>> def area(*, shape: Shape, unit: str) -> str:
    ...     return f"{shape.rows * shape.width} {unit}"
    >>> flat = spread_records(area)
    >>> list(inspect.signature(flat).parameters)
    ['rows', 'width', 'unit']
    >>> flat(rows=3, unit="cells"), flat(rows=3, width=5, unit="cells")
    ('6 cells', '15 cells')
    >>> vars(parser_for(flat, argparse.ArgumentParser()).parse_args(["--rows", "4", "--unit", "m"]))
    {'rows': 4, 'width': 2, 'unit': 'm'}
    """
    hints = typing.get_type_hints(function)
    records = {n: h for n, h in hints.items() if isinstance(h, type) and dataclasses.is_dataclass(h)}
    parameters: list[inspect.Parameter] = []
    for name, param in inspect.signature(function).parameters.items():
        if name not in records:
            parameters.append(param.replace(annotation=hints.get(name, Any)))
            continue
        field_hints = typing.get_type_hints(records[name])
        for field in dataclasses.fields(records[name]):
            default = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
            parameters.append(
                inspect.Parameter(
                    field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=field_hints[field.name]
                )
            )

    @functools.wraps(function)
    def flat(**kwargs: Any) -> Any:
        for name, record in records.items():
            names = {field.name for field in dataclasses.fields(record)}
            kwargs[name] = record(**{key: kwargs.pop(key) for key in list(kwargs) if key in names})
        return function(**kwargs)

    returns = hints.get("return", Any)
    flat.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    flat.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    return flat


def run_commands(commands: dict[str, Callable[..., Any]], argv: list[str] | None = None) -> None:
    """Parse ``argv`` as ``COMMAND --flag value ...`` and call that function by keyword.

    User errors end as one line and exit 2 (:func:`workflow_scripts.cli.run_cli`).

    Parameters
    ----------
    commands
        Command name -> the function it calls: its parameters are the flags (:func:`parser_for`), the
        first line of its docstring the help.
    argv
        The words after the program name; None: ``sys.argv[1:]``.
    """

    def main(args: list[str] | None) -> None:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers(dest="command", required=True)
        for name, function in commands.items():
            summary = (inspect.getdoc(function) or "").split("\n")[0]
            parser_for(function, sub.add_parser(name, help=summary, description=summary))
        kwargs = vars(parser.parse_args(args))
        commands[kwargs.pop("command")](**kwargs)

    run_cli(main, argv)


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a CLI entry point: user errors and OS errors become one line and exit code 2.

    Parameters
    ----------
    main
        The entry point; its return value is the exit code (None: 0).
    argv
        Handed to ``main`` as is; None lets its parser read ``sys.argv``.
    """
    logging.basicConfig(
        level=os.environ.get("LOGLEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_library_progress_bars()
    try:
        code = main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # disk full, permission denied: the path and the reason
        failure = write_error(err, None) or err  # a full disk outside any atomic output: no path
        if not isinstance(failure, OSError):
            raise
        where = f"{failure.filename}: " if failure.filename else ""
        print(f"error: {where}{failure.strerror or failure}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
