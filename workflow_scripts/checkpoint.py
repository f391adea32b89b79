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
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from .common import UserError, read_json

__all__ = ["check_checkpoint", "check_safetensors", "check_untrusted_checkpoint", "read_modules"]

TRANSFORMER = "sentence_transformers.models.Transformer"
DENSE = ("pylate.models.Dense.Dense", "sentence_transformers.models.Dense")
# the types sentence-transformers and PyLate write; not Router or WordEmbeddings, which
# import class names read from their own configs
KNOWN_TYPES = (TRANSFORMER, *DENSE, "sentence_transformers.models.Normalize", "sentence_transformers.models.Pooling")
CODE_SUFFIXES = (".py", ".pyc", ".so")
LOADER_ARGS = ("model_args", "tokenizer_args", "config_args")  # sentence_bert_config.json -> from_pretrained
ALLOW = "set trust_remote_code: true to allow it"


def read_modules(checkpoint: Path) -> list[dict[str, Any]]:
    """``modules.json``: a list of entries with a string ``type`` and ``path``, or a UserError."""
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
    for module in read_modules(checkpoint):
        folder = checkpoint / module["path"]
        if module["type"] in (TRANSFORMER, *DENSE):
            for name in ("config.json", "tokenizer.json") if module["type"] == TRANSFORMER else ("config.json",):
                read_json(folder / name)
            _check_weights(folder)
    for file in sorted(checkpoint.rglob("*config*.json")):
        read_json(file)
    for file in sorted(checkpoint.rglob("*.safetensors")):
        check_safetensors(file)


def _is_torch_module(name: Any) -> bool:
    """Whether ``name`` is a ``torch.nn`` module class torch has already imported (imports nothing).

    Examples
    --------
    >>> _is_torch_module("torch.nn.modules.linear.Identity"), _is_torch_module("torch.nn.Tanh")
    (True, True)
    >>> _is_torch_module("os.system"), _is_torch_module("torch.nn.modules.module.os")
    (False, False)
    """
    module, _, attr = str(name).rpartition(".")
    found = getattr(sys.modules.get(module), attr, None) if module.startswith("torch.nn") else None
    return isinstance(found, type) and issubclass(found, torch.nn.Module)


def _check_config(file: Path, config: Any) -> None:
    """Refuse what a config would make transformers or sentence-transformers import."""
    if not isinstance(config, dict):
        return
    if config.get("auto_map"):
        raise UserError(f"{file}: model needs remote code (auto_map {sorted(map(str, config['auto_map']))}); {ALLOW}")
    if args := [key for key in LOADER_ARGS if config.get(key)]:
        raise UserError(f"{file}: sets {', '.join(args)}, passed on to transformers' from_pretrained; {ALLOW}")
    activation = config.get("activation_function")
    if activation is not None and not _is_torch_module(activation):
        raise UserError(f"{file}: activation_function {activation!r} is not a torch.nn module class; {ALLOW}")


def check_untrusted_checkpoint(checkpoint: Path, *, trust_remote_code: bool = False) -> None:
    """Refuse a checkpoint that would import or run code it ships or names, unless trusted.

    Refused: shipped code files (``.py``, ``.pyc``, ``.so``); a ``modules.json`` type outside
    :data:`KNOWN_TYPES`; ``auto_map`` or loader arguments in any ``*config*.json``; a Dense
    activation that is not a ``torch.nn`` class. Nothing is imported to decide.

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
    for module in read_modules(checkpoint):
        if module["type"] not in KNOWN_TYPES:
            raise UserError(
                f"{checkpoint / 'modules.json'}: module type {module['type']!r} is not a known "
                f"sentence-transformers/PyLate class ({', '.join(KNOWN_TYPES)}); {ALLOW}"
            )
    for file in sorted(checkpoint.rglob("*config*.json")):
        _check_config(file, read_json(file))
