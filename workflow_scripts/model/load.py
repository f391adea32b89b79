"""Loading a ColBERT checkpoint safely: the checkpoint gate, finite weights, prefix tokens, the attention guard, token limits."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..files import read_json
from ..sources.manifest import source_root
from .checkpoint import check_checkpoint, check_untrusted_checkpoint, read_modules
from .padding_guard import guard_padding

__all__ = [
    "DEFAULT_PREFIXES",
    "check_finite_weights",
    "check_prefix_tokens",
    "effective_length",
    "load_colbert",
    "max_tokens",
    "model_dir",
]

logger = logging.getLogger(__name__)


def model_dir(path: str | Path) -> Path:
    """A checkpoint directory, or the directory a download manifest points to (verified against it).

    Parameters
    ----------
    path
        A checkpoint directory, returned as it is, or a download manifest (``*.json``), checked by
        :func:`~workflow_scripts.sources.manifest.source_root`.
    """
    path = Path(path)
    if path.suffix == ".json":
        return source_root(path)
    return path


def load_colbert(path: str | Path, *, trust_remote_code: bool = False, **kwargs: Any):
    """``pylate.models.ColBERT`` from a local checkpoint, safetensors only, no code it ships or names.

    The files are checked first (:mod:`workflow_scripts.model.checkpoint`): a broken or code-carrying
    checkpoint is refused in one line naming the file, before anything is imported or loaded;
    so is one whose weights are not all finite (:func:`check_finite_weights`) or whose tokenizer
    lacks the ``[Q]``/``[D]`` prefix tokens its config names (:func:`check_prefix_tokens`).

    Parameters
    ----------
    path
        A checkpoint directory or its download manifest (:func:`model_dir`).
    trust_remote_code
        Allow a checkpoint that ships or names code (no
        :func:`~workflow_scripts.model.checkpoint.check_untrusted_checkpoint`); passed on to PyLate too.
    **kwargs
        Passed on to ``pylate.models.ColBERT`` (``query_length``, ``document_length``; ``device``, default ``cpu``).
    """
    from pylate import models

    path = model_dir(path)
    check_checkpoint(path)
    check_untrusted_checkpoint(path, trust_remote_code=trust_remote_code)
    check_finite_weights(path)
    check_prefix_tokens(path)
    model = models.ColBERT(
        str(path),
        device=kwargs.pop("device", "cpu"),
        trust_remote_code=trust_remote_code,
        model_kwargs={"use_safetensors": True},
        **kwargs,
    )
    guard_padding(model)  # no fully masked attention row: no NaN from padding on CUDA
    return model


# PyLate's prefixes when config_sentence_transformers.json names none (ColBERT.__init__)
DEFAULT_PREFIXES = {"query_prefix": "[Q] ", "document_prefix": "[D] "}


def check_finite_weights(checkpoint: str | Path) -> None:
    """Refuse a checkpoint with a NaN or infinite weight, in one line naming the file and tensor.

    A non-finite weight gives every score NaN (or every document the same score), and an
    nDCG@10 that looks normal: it is caught here, before the model is built. Every
    ``*.safetensors`` file under the checkpoint is read, one tensor at a time.

    Parameters
    ----------
    checkpoint
        The checkpoint directory; files under a ``.cache`` folder (download bookkeeping) are skipped.

    Examples
    --------
    >>> import tempfile
    >>> from safetensors.torch import save_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_file({"w": torch.tensor([1.0, float("nan"), float("inf")])}, folder / "model.safetensors")
    >>> try:
    ...     check_finite_weights(folder)
    ... except UserError as err:
    ...     print(str(err).replace(str(folder), "CKPT"))
    CKPT/model.safetensors: tensor 'w' has 2 non-finite values (NaN or inf) of 3; refusing to load these weights
    """
    from safetensors import safe_open

    for file in sorted(Path(checkpoint).rglob("*.safetensors")):
        if ".cache" in file.relative_to(checkpoint).parts:
            continue  # huggingface-cli's download bookkeeping, never loaded
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point() or tensor.is_complex():
                    bad = int((~torch.isfinite(tensor)).sum())
                    if bad:
                        raise UserError(
                            f"{file}: tensor {name!r} has {bad} non-finite values (NaN or inf) of "
                            f"{tensor.numel()}; refusing to load these weights"
                        )


def _prefixes(checkpoint: Path) -> dict[str, str]:
    """The prefixes PyLate will insert: ``config_sentence_transformers.json``'s, else PyLate's defaults."""
    file = checkpoint / "config_sentence_transformers.json"
    config = read_json(file) if file.exists() else {}
    if not isinstance(config, dict):
        raise UserError(f"{file}: expected a JSON object")
    out = {}
    for key, default in DEFAULT_PREFIXES.items():
        value = config.get(key)
        value = default if value is None else value
        if not isinstance(value, str):
            raise UserError(f"{file}: {key} must be a string, got {value!r:.40}")
        if value:  # "" means no prefix token at all
            out[key] = value
    return out


def check_prefix_tokens(checkpoint: str | Path) -> None:
    """Refuse a checkpoint whose tokenizer lacks a ``[Q]``/``[D]`` prefix token its config names.

    PyLate adds a missing prefix to the tokenizer with a freshly drawn random embedding row,
    so two loads of the same checkpoint score differently (0.49276 vs 0.49393 on the demo);
    a prefix whose id lies past the embedding matrix is refused too. The tokenizer is the
    ``tokenizer.json`` of the checkpoint's Transformer module.

    Parameters
    ----------
    checkpoint
        The checkpoint directory: the prefixes its ``config_sentence_transformers.json`` names, else
        :data:`DEFAULT_PREFIXES`; an empty prefix is no token, so nothing to check.
    """
    checkpoint = Path(checkpoint)
    prefixes = _prefixes(checkpoint)
    if not prefixes:
        return
    from tokenizers import Tokenizer

    folder = checkpoint / _transformer_path(checkpoint)
    file = folder / "tokenizer.json"
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises a bare Exception on a malformed file
        raise UserError(f"{file}: not a readable tokenizer ({str(err).splitlines()[0][:120]})") from err
    rows = _embedding_rows(folder)
    for key, prefix in prefixes.items():
        token_id = tokenizer.token_to_id(prefix)
        if token_id is None:
            raise UserError(
                f"{file}: has no token {prefix!r}, the {key} its config_sentence_transformers.json names "
                "(PyLate would add it with a random embedding: scores would not be reproducible)"
            )
        if rows is not None and token_id >= rows:
            raise UserError(
                f"{file}: token {prefix!r} ({key}) has id {token_id}, past the {rows} rows of the "
                "embedding matrix (PyLate would resize it with random rows)"
            )


def _transformer_path(checkpoint: Path) -> str:
    """The folder of the checkpoint's Transformer module (``""``: the checkpoint itself)."""
    modules = read_modules(checkpoint)
    return next((m["path"] for m in modules if m["type"].endswith("Transformer")), "")


def _embedding_rows(folder: Path) -> int | None:
    """Rows of the word-embedding matrix, from ``config.json``'s ``vocab_size`` (None if unstated)."""
    file = folder / "config.json"
    config = read_json(file) if file.exists() else {}
    rows = config.get("vocab_size") if isinstance(config, dict) else None
    return rows if isinstance(rows, int) else None


def max_tokens(model) -> int | None:
    """The most tokens one text can have in ``model`` (its encoder's ``max_position_embeddings``).

    PyLate truncates a text to ``query_length``/``document_length`` tokens, prefix included,
    whatever the encoder can take: a longer limit is not applied, only recorded, unless capped.

    Parameters
    ----------
    model
        A loaded PyLate ColBERT (its first module the Transformer).

    Returns
    -------
    The limit in tokens; None when the encoder's config states no positive one.
    """
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else None


def effective_length(model, requested: int, *, what: str) -> int:
    """``requested`` capped at :func:`max_tokens`; a capped value is logged in one line.

    ``what`` names the setting in that line (``evaluate/query_length of pony``).

    Parameters
    ----------
    model
        A loaded PyLate ColBERT.
    requested
        The configured length in tokens (``query_length`` or ``document_length``), prefix included.
    what
        The setting's name, for the log line.
    """
    limit = max_tokens(model)
    if limit is None or requested <= limit:
        return requested
    logger.warning(
        "%s: %d requested, %d applied (the model takes at most %d tokens: max_position_embeddings)",
        what,
        requested,
        limit,
        limit,
    )
    return limit
