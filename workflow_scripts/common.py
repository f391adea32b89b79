"""Shared plumbing: one-line user errors, atomic outputs, hashing, JSON I/O.

Every stage module exposes plain typed functions plus a ``main()`` built with
:func:`run_cli`, so a bad input ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "UserError",
    "atomic_dir",
    "atomic_file",
    "config_file_problems",
    "config_problem",
    "follow_umask",
    "load_config_file",
    "naming_write_errors",
    "one_line",
    "process_umask",
    "read_json",
    "run_cli",
    "sha256_file",
    "write_json",
]

logger = logging.getLogger(__name__)

ZERO_REVISION = "0" * 40


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint): shown as one line."""


# torch's stream writer loses errno: a short or failed write (disk full, quota) reads like these
TORCH_WRITE_FAILED = ("basic_ios", "file write failed", "unexpected pos")
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none).

    Parameters
    ----------
    err
        The exception to describe.

    Examples
    --------
    >>> one_line(OSError("no such\\n  file")), one_line(ValueError())
    ('no such file', 'ValueError')
    """
    return " ".join(str(err).split()) or type(err).__name__


def write_error(err: BaseException, path: str | Path | None) -> OSError | None:
    """``err`` as an ``OSError`` naming ``path`` if it is a failed write (disk full), else None.

    A full disk reaches us as ``OSError(ENOSPC)`` without a file name (``write()``, ``close()``),
    as safetensors' ``SafetensorError("... No space left on device (os error 28)")`` or as
    torch's ``RuntimeError("basic_ios::clear: iostream error")``: none says which file.

    Examples
    --------
    >>> str(write_error(OSError(errno.ENOSPC, "No space left on device"), "out/eval.json"))
    "[Errno 28] No space left on device: 'out/eval.json'"
    >>> write_error(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), "m").strerror
    'No space left on device (torch: write failed)'
    >>> write_error(RuntimeError("shape mismatch"), "m") is None
    True
    """
    text = str(err)
    if isinstance(err, OSError):
        if err.errno not in FULL_ERRNOS or err.filename is not None:
            return None
        reason = err.strerror
    elif "No space left on device" in text or "os error 28" in text:
        reason = os.strerror(errno.ENOSPC)
    elif isinstance(err, RuntimeError) and any(s in text for s in TORCH_WRITE_FAILED):
        reason = f"{os.strerror(errno.ENOSPC)} (torch: write failed)"
    else:
        return None
    return OSError(getattr(err, "errno", None) or errno.ENOSPC, reason, None if path is None else str(path))


@contextlib.contextmanager
def naming_write_errors(path: str | Path) -> Iterator[None]:
    """Re-raise a failed write (disk full) inside the block as an ``OSError`` naming ``path``.

    Parameters
    ----------
    path
        The file or folder the block writes: the name the error gets.

    Examples
    --------
    >>> with naming_write_errors("results/eval.json"):
    ...     raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name
    Traceback (most recent call last):
    OSError: [Errno 28] No space left on device: 'results/eval.json'
    """
    try:
        yield
    except Exception as err:
        named = write_error(err, path)
        if named is None:
            raise
        raise named from err


def _umask_by_setting() -> int:
    mask = os.umask(0o077)  # os.umask can only be read by setting it: set and restore at once
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_by_setting()  # fallback where /proc/self/status has no Umask line


def process_umask() -> int:
    """The process umask, read from ``/proc/self/status`` (Linux) without changing it.

    Elsewhere the value read once at import (a set-and-restore there, before any threads).

    Examples
    --------
    >>> previous = os.umask(0o002)
    >>> oct(process_umask())
    '0o2'
    >>> _ = os.umask(previous)
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return _UMASK_AT_IMPORT


def follow_umask(root: str | Path) -> None:
    """Give a tree the modes freshly created files get: files 0o666, dirs 0o777, minus the umask.

    For copies (``shutil.copytree`` copies the source's modes: a read-only mirror would give a
    read-only output, an 0o600 cache a private one). An executable file stays executable.

    Parameters
    ----------
    root
        The folder whose modes are reset, itself and everything under it; symlinks are left alone.

    Examples
    --------
    >>> import tempfile, pathlib, stat
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "f").write_text("x"); (d / "f").chmod(0o400)
    >>> previous = os.umask(0o022); follow_umask(d); _ = os.umask(previous)
    >>> oct(stat.S_IMODE((d / "f").stat().st_mode)), oct(stat.S_IMODE(d.stat().st_mode))
    ('0o644', '0o755')
    """
    mask = process_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
        path.chmod((0o777 if executable else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` through a temporary sibling renamed into place on success.

    Parameters
    ----------
    path
        The file to write; missing parent folders are made.
    mode
        ``open()``'s mode: ``"w"`` for text, ``"wb"`` for bytes.

    Yields
    ------
    The temporary sibling, open in ``mode``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_file(d / "a.txt") as f:
    ...     _ = f.write("hi")
    >>> (d / "a.txt").read_text()
    'hi'
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp makes 0o600: give it open()'s mode
    os.close(fd)
    try:
        with naming_write_errors(path), open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only when the block succeeds.

    A killed job leaves a ``.<name>.tmp-*`` sibling, never a half-written ``path``. The
    finished tree gets the umask's modes (:func:`follow_umask`), whatever its writers chose.

    Parameters
    ----------
    path
        The folder to create or replace; missing parent folders are made.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_dir(d / "out") as tmp:
    ...     _ = (tmp / "x").write_text("1")
    >>> (d / "out" / "x").read_text()
    '1'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    tmp.chmod(0o777 & ~process_umask())  # mkdtemp makes 0o700: give it mkdir()'s mode
    try:
        with naming_write_errors(path):
            yield tmp
        follow_umask(tmp)  # writers that ignore the umask (safetensors' save_file makes 0o600)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented, key-sorted JSON (stable bytes across runs).

    Parameters
    ----------
    path
        The file to write.
    data
        JSON-serialisable data; any other value is written as its ``str()``.
    """
    with atomic_file(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")


class _DuplicateKey(ValueError):
    """A key given twice in one JSON object (readers keep the later value silently)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.load``'s ``object_pairs_hook``: the object, or :class:`_DuplicateKey` naming the key."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def read_json(path: str | Path) -> Any:
    """Read a JSON file, naming the file when it is missing or malformed, or repeats a key in an object.

    Parameters
    ----------
    path
        The JSON file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "config.json"
    >>> _ = f.write_text('{"a": {"b": 1, "b": 2}}')
    >>> try:
    ...     read_json(f)
    ... except UserError as err:
    ...     print(str(err).replace(str(f), "FILE"))
    FILE: duplicate key 'b' in one object (a reader would keep the later value silently)
    """
    try:
        with open(path) as handle:
            return json.load(handle, object_pairs_hook=_unique_keys)
    except FileNotFoundError as err:
        raise UserError(f"{path}: file not found") from err
    except _DuplicateKey as err:
        raise UserError(
            f"{path}: duplicate key {err.args[0]!r} in one object (a reader would keep the later value silently)"
        ) from err
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err


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


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks (constant memory).

    Parameters
    ----------
    path
        The file to hash.
    block
        Bytes read at a time.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


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


# Read at import by the libraries (tqdm, huggingface_hub, datasets); a warm-started job has
# them imported already, so their switches are flipped too (:func:`quiet_library_progress_bars`).
PROGRESS_BAR_SWITCHES = {
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def quiet_library_progress_bars() -> None:
    """No library progress bars when stderr is a log file: each redraw is a carriage return,
    and `tail -f` shows one unreadable line. The stages log their own (progress.py)."""
    if sys.stderr.isatty():
        return
    os.environ.update(PROGRESS_BAR_SWITCHES)
    for module, switch in (
        ("huggingface_hub.utils", "disable_progress_bars"),
        ("transformers.utils.logging", "disable_progress_bar"),
        ("datasets.utils.tqdm", "disable_progress_bars"),
    ):
        if module in sys.modules:
            getattr(sys.modules[module], switch)()


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
