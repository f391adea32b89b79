"""ModernBERT backbones as transformers writes them: one writer, one strict check.

The demo's and the rehearsal's base models are both a ModernBERT wrapped by PyLate. Both go
through :func:`write_colbert`, which builds the backbone's configuration with transformers'
own ``ModernBertConfig(...)`` and lets ``save_pretrained`` write ``config.json``: no key is
written by hand, so the file has the library's format.

The library's format has one trap (transformers 5.3, the pinned version): ``rope_parameters``
is read *per layer type* only when its keys are layer types (``validate_rope``). A ModernBERT
whose layers are all ``full_attention`` still gets a ``sliding_attention`` entry, so the keys
are not all layer types; transformers then treats the whole dict as one global entry, adds a
top-level ``rope_theta: null`` and ``rope_type``, warns "Unrecognized keys in
`rope_parameters`" on every load, and later versions (5.24, as sentence-transformers 6 installs
it) refuse the file. :func:`config_problems` checks a saved ``config.json`` with
transformers' own validation, so every file the demo and the pipeline write can be held to it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import UserError

__all__ = ["check_config", "config_problems", "modernbert_config", "write_colbert"]


class _Records(logging.Handler):
    """Collects the messages of the records it is handed."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _transformers_warnings() -> Iterator[list[str]]:
    """The warnings transformers logs inside the block (its logger does not propagate to the root)."""
    from transformers.utils import logging as hf_logging

    handler = _Records()
    library_logger = hf_logging.get_logger("transformers")
    library_logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        library_logger.removeHandler(handler)


def _rope_shape_problems(config: dict[str, Any]) -> list[str]:
    """Problems of ``rope_parameters`` against ``layer_types`` in a config dict.

    transformers reads ``rope_parameters`` per layer type only when its keys are all layer
    types, and every layer type needs its own entry (``ModernBertRotaryEmbedding``).

    Examples
    --------
    >>> per_type = {"full_attention": {"rope_type": "default", "rope_theta": 160000.0}}
    >>> _rope_shape_problems({"layer_types": ["full_attention"], "rope_parameters": per_type})
    []
    >>> mixed = per_type | {"sliding_attention": {}, "rope_theta": None, "rope_type": "default"}
    >>> _rope_shape_problems({"layer_types": ["full_attention"], "rope_parameters": mixed})
    ["rope_parameters has keys that are not layer types: ['rope_theta', 'rope_type', 'sliding_attention']"]
    >>> _rope_shape_problems({"layer_types": ["full_attention", "sliding_attention"], "rope_parameters": per_type})
    ["rope_parameters has no entry for layer type 'sliding_attention'"]
    """
    rope, layer_types = config.get("rope_parameters"), config.get("layer_types")
    if rope is None or layer_types is None:
        return []
    if not isinstance(rope, dict) or not isinstance(layer_types, list):
        return ["rope_parameters must be an object and layer_types a list"]
    problems = []
    if stray := sorted(set(rope) - set(layer_types)):
        problems.append(f"rope_parameters has keys that are not layer types: {stray}")
    problems += [f"rope_parameters has no entry for layer type {t!r}" for t in sorted(set(layer_types) - set(rope))]
    return problems


def config_problems(folder: str | Path) -> list[str]:
    """What a strict loader would refuse in ``folder/config.json``: empty when the file is clean.

    The file is loaded with ``AutoConfig.from_pretrained`` (transformers' own validation, e.g.
    ``validate_rope``); every warning it logs is a problem, and so is a ``rope_parameters``
    that is not keyed by the config's ``layer_types`` (read raw, before transformers fills in
    defaults). The folder holds no code that is run: ``trust_remote_code`` stays off.

    Parameters
    ----------
    folder
        A saved model folder holding ``config.json``.
    """
    from transformers import AutoConfig

    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return [f"unreadable: {err}"]
    if not isinstance(raw, dict):
        return ["not a JSON object"]
    problems = _rope_shape_problems(raw)
    with _transformers_warnings() as warnings:
        try:
            AutoConfig.from_pretrained(str(path.parent), trust_remote_code=False)
        except (OSError, ValueError, TypeError, KeyError) as err:
            problems.append(f"transformers refuses it: {err}".splitlines()[0])
    return problems + [f"transformers warns: {w}".splitlines()[0] for w in warnings]


def check_config(folder: str | Path) -> None:
    """Raise a one-line :class:`~workflow_scripts.errors.UserError` naming ``folder/config.json`` if a strict loader would refuse it.

    Parameters
    ----------
    folder
        A saved model folder holding ``config.json``.
    """
    if problems := config_problems(folder):
        raise UserError(f"{Path(folder) / 'config.json'}: {'; '.join(problems)}")


def modernbert_config(**settings: Any):
    """``ModernBertConfig(**settings)``, refused (one line) if it would save in a shape loaders refuse.

    Parameters
    ----------
    **settings
        ``ModernBertConfig``'s keywords (layers, widths, attention pattern, RoPE).

    Returns
    -------
    The config, whose every RoPE parameter names a layer type the model has.

    Examples
    --------
    >>> modernbert_config(num_hidden_layers=2, global_attn_every_n_layers=2).layer_types
    ['full_attention', 'sliding_attention']
    >>> modernbert_config(num_hidden_layers=2, global_attn_every_n_layers=1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: ModernBertConfig(...): rope_parameters has keys that are not layer types: ...
    """
    from transformers import ModernBertConfig

    config = ModernBertConfig(**settings)
    if problems := _rope_shape_problems(config.to_dict()):
        raise UserError(f"ModernBertConfig(...): {'; '.join(problems)} (give every layer type a layer)")
    return config


def write_colbert(
    root: str | Path,
    *,
    backbone: dict[str, Any],
    tokenizer,
    head: tuple[tuple[int, int], ...],
    max_seq_length: int,
    colbert: dict[str, Any],
    seed: int,
) -> Path:
    """A random-weight PyLate ColBERT over a ModernBERT, in PyLate's save layout, under ``root``.

    Parameters
    ----------
    root
        Output folder (a sibling ``.<name>-backbone`` folder is used and removed).
    backbone
        ``ModernBertConfig`` arguments (:func:`modernbert_config`).
    tokenizer
        A transformers fast tokenizer; PyLate adds the query/document prefix tokens to it.
    head
        ``(in, out)`` of each bias-free, identity-activation Dense layer, in order.
    max_seq_length
        The sentence-transformers ``Transformer``'s ``max_seq_length`` (lower-casing is on).
    colbert
        ``pylate.models.ColBERT`` settings: prefixes, lengths, query expansion, skiplist.
    seed
        Seed of the weights (set once, before the backbone is built).
    """
    import torch
    from pylate import models
    from sentence_transformers.models import Transformer
    from transformers import ModernBertModel

    root = Path(root)
    config = modernbert_config(**backbone)
    torch.manual_seed(seed)
    backbone_dir = root.parent / f".{root.name}-backbone"
    ModernBertModel(config).save_pretrained(backbone_dir)
    tokenizer.save_pretrained(backbone_dir)
    identity = torch.nn.Identity()
    transformer = Transformer(str(backbone_dir), max_seq_length=max_seq_length, do_lower_case=True)
    dense = [models.Dense(i, o, bias=False, activation_function=identity) for i, o in head]
    model = models.ColBERT(modules=[transformer, *dense], device="cpu", **colbert)
    model.save(str(root))
    shutil.rmtree(backbone_dir)
    check_config(root)  # what PyLate saved (it resized the embeddings) is the file users load
    return root
