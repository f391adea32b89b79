"""Checkpoint gate: refuse a broken checkpoint, or one that would run code, before loading it.

Every checkpoint (hub snapshot or local directory) is untrusted. sentence-transformers imports
whatever class ``modules.json`` names and, for a local directory, first looks for it in a
``.py`` file the checkpoint ships, even with ``trust_remote_code=False``; a Dense config names
its activation as a dotted path that is imported and called; ``auto_map`` points transformers
at shipped modeling code; ``model_args`` & co. in ``sentence_bert_config.json`` go straight to
``from_pretrained``. Unless ``trust_remote_code`` is set, all of these are refused.

A missing, malformed or truncated file otherwise ends in a long traceback that never names it
(a missing ``tokenizer.json`` even as a protobuf ImportError): each is one line here, found
from the files alone (safetensors headers, not tensors), before the expensive load.

Whatever the trust: every path a checkpoint names (a ``modules.json`` path, a symlink, a
config value naming a file) must resolve inside it, so that what is loaded is what the
checkpoint (and its download manifest) holds; and a Dense's weights must have the shapes its
config says, in a chain of widths that fit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import read_json

__all__ = [
    "ACTIVATIONS",
    "check_checkpoint",
    "check_contained",
    "check_safetensors",
    "check_untrusted_checkpoint",
    "read_modules",
]

TRANSFORMER = "sentence_transformers.models.Transformer"
DENSE = ("pylate.models.Dense.Dense", "sentence_transformers.models.Dense")
# the types sentence-transformers and PyLate write; not Router or WordEmbeddings, which
# import class names read from their own configs
KNOWN_TYPES = (TRANSFORMER, *DENSE, "sentence_transformers.models.Normalize", "sentence_transformers.models.Pooling")
CODE_SUFFIXES = (".py", ".pyc", ".so")
LOADER_ARGS = ("model_args", "tokenizer_args", "config_args")  # sentence_bert_config.json -> from_pretrained
ALLOW = "set trust_remote_code: true to allow it"
# Dense ``activation_function`` is imported and called by name (sentence-transformers'
# import_from_string): only these torch.nn classes, by the two names they are written under.
_ACTIVATION_CLASSES = (
    "Identity",
    "Tanh",
    "ReLU",
    "GELU",
    "Sigmoid",
    "SiLU",
    "LeakyReLU",
    "ELU",
    "SELU",
    "CELU",
    "Softplus",
    "Softsign",
    "Mish",
    "Hardtanh",
    "ReLU6",
    "Hardswish",
    "Hardsigmoid",
    "LogSigmoid",
    "Tanhshrink",
)
ACTIVATIONS = frozenset(
    name
    for cls in (getattr(torch.nn, n) for n in _ACTIVATION_CLASSES)
    for name in (f"{cls.__module__}.{cls.__qualname__}", f"torch.nn.{cls.__name__}")
)
# What a module's config may hold: every key is passed to the module's constructor, so an
# unknown one is a TypeError traceback at load (the loader arguments are gated by trust).
DENSE_KEYS = ("in_features", "out_features", "bias", "activation_function", "use_residual")
TRANSFORMER_KEYS = ("max_seq_length", "do_lower_case", "backend", *LOADER_ARGS)
# A config value under such a key names a file or folder the loaders open as given (an
# absolute path, or one relative to the working directory), not inside the checkpoint.
# ``_name_or_path`` and ``name_or_path`` are transformers' records of where a model came from,
# overwritten at load.
FILE_KEY = re.compile(r"(^|_)(file|files|dir|path)$")
RECORD_KEYS = ("_name_or_path", "name_or_path")


def read_modules(checkpoint: Path) -> list[dict[str, Any]]:
    """``modules.json``: a list of entries with a string ``type`` and ``path``, or a UserError.

    Parameters
    ----------
    checkpoint
        The checkpoint directory (``modules.json`` at its top).
    """
    file = checkpoint / "modules.json"
    if not file.exists():
        raise UserError(f"{file}: file not found (not a sentence-transformers/PyLate checkpoint)")
    modules = read_json(file)
    if not isinstance(modules, list) or not all(
        isinstance(m, dict) and isinstance(m.get("type"), str) and isinstance(m.get("path"), str) for m in modules
    ):
        raise UserError(f'{file}: expected a list of {{"type": ..., "path": ...}} entries')
    return modules


def check_safetensors(file: Path) -> None:
    """Refuse a truncated or corrupt safetensors file from its header alone (no tensor is read).

    The format is an 8-byte little-endian header length, a JSON header giving each tensor's
    ``data_offsets`` [begin, end) in the data block, then the data block: a whole file is
    exactly ``8 + header length + max(end)`` bytes.

    Parameters
    ----------
    file
        A ``*.safetensors`` file; only its size and its header are read.

    Examples
    --------
    >>> import tempfile
    >>> from safetensors.torch import save_file
    >>> f = Path(tempfile.mkdtemp()) / "model.safetensors"
    >>> save_file({"w": torch.zeros(4, 4)}, f)
    >>> check_safetensors(f)
    >>> _ = f.write_bytes(f.read_bytes()[:-10])
    >>> try:
    ...     check_safetensors(f)
    ... except UserError as err:
    ...     print(str(err).replace(str(f), "FILE").split(" (")[0])
    FILE: truncated or corrupt safetensors
    """
    size = file.stat().st_size
    with open(file, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if size < 8 or length > size - 8:
            raise UserError(f"{file}: truncated or corrupt safetensors ({size} bytes, header length {length})")
        try:
            header = json.loads(handle.read(length))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
            raise UserError(f"{file}: corrupt safetensors header ({err})") from err
    if size != 8 + length + end:
        raise UserError(f"{file}: truncated or corrupt safetensors ({size} bytes, its header says {8 + length + end})")


def _check_weights(folder: Path) -> None:
    """A module folder holds safetensors weights, never only a pickle (``torch.load`` runs it)."""
    index = folder / "model.safetensors.index.json"
    if index.exists():  # sharded: every shard it lists
        for shard in sorted(set(read_json(index).get("weight_map", {}).values())):
            if not (folder / shard).exists():
                raise UserError(f"{folder / shard}: file not found (listed in {index.name})")
    elif (folder / "pytorch_model.bin").exists() and not (folder / "model.safetensors").exists():
        raise UserError(f"{folder}: weights only as pytorch_model.bin; only safetensors are loaded")
    elif not (folder / "model.safetensors").exists():
        raise UserError(f"{folder / 'model.safetensors'}: file not found")


def check_checkpoint(checkpoint: Path) -> None:
    """Refuse a checkpoint with a missing, malformed or truncated file, in one line naming it.

    Each module of ``modules.json`` needs its ``config.json`` and weights (and the Transformer
    its ``tokenizer.json``); every ``*config*.json`` must parse; every safetensors file must be
    whole.

    Parameters
    ----------
    checkpoint
        The checkpoint directory (a sentence-transformers/PyLate save); a missing one is refused too.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> try:
    ...     check_checkpoint(d)
    ... except UserError as err:
    ...     print(str(err).replace(str(d), "DIR"))
    DIR/modules.json: file not found (not a sentence-transformers/PyLate checkpoint)
    """
    if not checkpoint.is_dir():
        raise UserError(f"{checkpoint}: checkpoint directory not found")
    check_contained(checkpoint)
    for module in read_modules(checkpoint):
        folder = checkpoint / module["path"]
        if module["type"] in (TRANSFORMER, *DENSE):
            for name in ("config.json", "tokenizer.json") if module["type"] == TRANSFORMER else ("config.json",):
                read_json(folder / name)
            _check_weights(folder)
        if module["type"] == TRANSFORMER:
            for file in sorted(folder.glob("sentence_*_config.json")):
                _check_keys(file, read_json(file), TRANSFORMER_KEYS)
    for file in sorted(checkpoint.rglob("*config*.json")):
        read_json(file)
    for file in sorted(checkpoint.rglob("*.safetensors")):
        check_safetensors(file)
    _check_dense_shapes(checkpoint)


def _inside(path: str | Path, root: str) -> bool:
    """Whether ``path``, with every symlink resolved, is ``root`` (a realpath) or lies below it."""
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def check_contained(checkpoint: Path) -> None:
    """Refuse a checkpoint that names or links anything outside itself, in one line naming the file.

    Checked: every symlink below it (file or folder; a folder link is not followed, its target
    must be inside anyway), every ``modules.json`` path (no absolute path, nothing that
    resolves outside), and every config value that names a file (a key ending in ``_file``,
    ``_files``, ``_dir`` or ``_path``, at any depth): the loaders open those as given, so a
    checkpoint may not set them. Reads no file through a link before its target is checked.

    Parameters
    ----------
    checkpoint
        The checkpoint directory; what it links or names must resolve inside its real path.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "ckpt").mkdir(); (d / "ckpt" / "1_Dense").symlink_to(d)
    >>> try:
    ...     check_contained(d / "ckpt")
    ... except UserError as err:
    ...     print(str(err).replace(str(d), "D"))
    D/ckpt/1_Dense: a symlink to D, outside the checkpoint D/ckpt; every file it uses must be inside it
    """
    root = os.path.realpath(checkpoint)
    for folder, dirs, files in os.walk(checkpoint):
        for name in sorted(dirs + files):
            path = Path(folder, name)
            if path.is_symlink() and not _inside(path, root):
                raise UserError(
                    f"{path}: a symlink to {os.path.realpath(path)}, outside the checkpoint {checkpoint}; "
                    "every file it uses must be inside it"
                )
    file = checkpoint / "modules.json"
    for module in read_modules(checkpoint) if file.exists() else []:
        where = os.path.realpath(checkpoint / module["path"])
        if os.path.isabs(module["path"]) or not _inside(where, root):
            raise UserError(
                f"{file}: module {module.get('name', module['path'])!r} has path {module['path']!r}, outside "
                f"the checkpoint (resolves to {where}); a module must be a folder inside it"
            )
    for config_file in sorted(checkpoint.rglob("*config*.json")):
        for keys, value in _items(read_json(config_file)):
            if FILE_KEY.search(keys[-1]) and keys[-1] not in RECORD_KEYS and _has_text(value):
                raise UserError(
                    f"{config_file}: {'/'.join(keys)} names a file ({value!r:.80}), which the loaders would open "
                    "as given, not inside the checkpoint; remove the key"
                )


def _items(node: Any, keys: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (key path, value) of a JSON document's objects, nested ones included.

    Examples
    --------
    >>> [("/".join(k), v) for k, v in _items({"a": 1, "b": [{"c": {"d": 2}}]})][:3]
    [('a', 1), ('b/c/d', 2), ('b/c', {'d': 2})]
    """
    if isinstance(node, list):
        for item in node:
            yield from _items(item, keys)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _items(value, (*keys, str(key)))
            yield (*keys, str(key)), value


def _has_text(value: Any) -> bool:
    """Whether a JSON value holds a non-empty string anywhere (a path, or paths)."""
    if isinstance(value, str):
        return bool(value)
    if isinstance(value, list | dict):
        return any(_has_text(v) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _check_keys(file: Path, config: Any, allowed: tuple[str, ...]) -> None:
    """A module config is an object of the keys its constructor takes; else one line naming them.

    ``auto_map`` is left to the trust gate (:func:`check_untrusted_checkpoint`), which names it.
    """
    if not isinstance(config, dict):
        raise UserError(f"{file}: expected a JSON object")
    if unknown := sorted(set(map(str, config)) - {*allowed, "auto_map"}):
        raise UserError(
            f"{file}: unknown key(s) {unknown} (the module takes {', '.join(allowed)}); its loader would fail on them"
        )


def safetensors_shapes(file: Path) -> dict[str, list[int]]:
    """Each tensor's shape from a (checked) safetensors file's header; no tensor is read."""
    with open(file, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    return {name: list(t.get("shape", [])) for name, t in header.items() if name != "__metadata__"}


def _dense_tensors(config: dict[str, Any]) -> dict[str, list[int]]:
    """The tensors (name: shape) a Dense with this config has: PyLate's, residual included.

    Examples
    --------
    >>> _dense_tensors({"in_features": 64, "out_features": 128, "bias": False, "use_residual": True})
    {'linear.weight': [128, 64], 'residual.weight': [128, 64]}
    """
    rows, cols = config["out_features"], config["in_features"]
    tensors = {"linear.weight": [rows, cols]}
    if config.get("bias", True):  # both Dense classes default to a bias
        tensors["linear.bias"] = [rows]
    if config.get("use_residual") and rows != cols:
        tensors["residual.weight"] = [rows, cols]
    return dict(sorted(tensors.items()))


def _check_dense_shapes(checkpoint: Path) -> None:
    """Each Dense's weights have the shapes its ``config.json`` says; each takes the width before it.

    Loading would otherwise stop in a ``size mismatch`` traceback (or, for the chain, the first
    encode in a matmul error) naming no file. The chain starts at the Transformer's
    ``hidden_size`` when its ``config.json`` states one.
    """
    width, source = None, None
    for module in read_modules(checkpoint):
        folder = checkpoint / module["path"]
        if module["type"] == TRANSFORMER:
            hidden = read_json(folder / "config.json").get("hidden_size")
            width, source = (hidden, folder / "config.json") if isinstance(hidden, int) else (None, None)
        if module["type"] not in DENSE:
            if module["type"] != TRANSFORMER:  # another module (Normalize...): its width is not known here
                width = None
            continue
        file = folder / "config.json"
        config = read_json(file)
        _check_keys(file, config, DENSE_KEYS)
        sizes = [config.get(k) for k in ("in_features", "out_features")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
            raise UserError(f"{file}: in_features and out_features must be positive integers, got {sizes}")
        if width is not None and config["in_features"] != width:
            raise UserError(
                f"{file}: in_features {config['in_features']}, but the module before it ({source}) gives {width}"
            )
        weights = folder / "model.safetensors"
        if weights.exists():
            expected, found = _dense_tensors(config), dict(sorted(safetensors_shapes(weights).items()))
            if found != expected:
                raise UserError(
                    f"{weights}: holds {_shapes(found)}, but {file} (in_features {config['in_features']}, "
                    f"out_features {config['out_features']}, bias {config.get('bias', True)}) needs {_shapes(expected)}"
                )
        width, source = config["out_features"], file


def _shapes(tensors: dict[str, list[int]]) -> str:
    """``{"linear.weight": [2, 3]}`` as ``linear.weight 2x3``."""
    return ", ".join(f"{name} {'x'.join(map(str, shape))}" for name, shape in tensors.items()) or "no tensor"


def _check_config(file: Path, config: Any, *, dense: bool) -> None:
    """Refuse what a config would make transformers or sentence-transformers import, at any depth."""
    for keys, value in _items(config):
        if keys[-1] == "auto_map" and value not in (None, {}):
            raise UserError(f"{file}: model needs remote code ({'/'.join(keys)} {value!r:.80}); {ALLOW}")
    if not isinstance(config, dict):
        return
    if args := [key for key in LOADER_ARGS if config.get(key)]:
        raise UserError(f"{file}: sets {', '.join(args)}, passed on to transformers' from_pretrained; {ALLOW}")
    activation = config.get("activation_function")
    if dense and activation is not None and activation not in ACTIVATIONS:
        raise UserError(
            f"{file}: activation_function {activation!r:.80} is not one of the torch.nn activations allowed "
            f"({', '.join(_ACTIVATION_CLASSES)}); {ALLOW}"
        )


def check_untrusted_checkpoint(checkpoint: Path, *, trust_remote_code: bool = False) -> None:
    """Refuse a checkpoint that would import or run code it ships or names, unless trusted.

    Refused: shipped code files (``.py``, ``.pyc``, ``.so``); a ``modules.json`` type outside
    :data:`KNOWN_TYPES`; ``auto_map`` (at any depth) or loader arguments in any
    ``*config*.json``; a Dense activation outside :data:`ACTIVATIONS`. Every name is checked
    against these allow-lists; nothing is imported to decide.

    Parameters
    ----------
    checkpoint
        The checkpoint directory.
    trust_remote_code
        The config's ``trust_remote_code``: True allows it all, and nothing is checked.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "modules.json").write_text('[{"type": "evil.Module", "path": ""}]')
    >>> check_untrusted_checkpoint(d, trust_remote_code=True)
    >>> try:
    ...     check_untrusted_checkpoint(d)
    ... except UserError as err:
    ...     print(str(err).split(": ", 1)[1][:58])
    module type 'evil.Module' is not a known sentence-transfor
    """
    if trust_remote_code:
        return
    for file in sorted(checkpoint.rglob("*")):
        if file.suffix in CODE_SUFFIXES:
            raise UserError(f"{file}: checkpoint ships code; {ALLOW}")
    modules = read_modules(checkpoint)
    for module in modules:
        if module["type"] not in KNOWN_TYPES:
            raise UserError(
                f"{checkpoint / 'modules.json'}: module type {module['type']!r} is not a known "
                f"sentence-transformers/PyLate class ({', '.join(KNOWN_TYPES)}); {ALLOW}"
            )
    dense = {os.path.realpath(checkpoint / m["path"] / "config.json") for m in modules if m["type"] in DENSE}
    for file in sorted(checkpoint.rglob("*config*.json")):
        _check_config(file, read_json(file), dense=os.path.realpath(file) in dense)
