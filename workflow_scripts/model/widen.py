"""Model stage: widen the last Dense projection of a saved PyLate checkpoint, and verify it.

``models.ColBERT(path, embedding_size=128)`` does NOT widen: it appends a fifth, random
Dense layer. Widening is done on the saved files instead, as the published
``widen_colbert_projection.py`` does: the last Dense in ``modules.json`` gets the weight
``[W_old ; randn * max(std_fraction * std(W_old), min_std)]`` (rows 0..old-1 bit-identical,
new rows small but non-zero so they receive gradient), a zero-padded bias if it has one, and
``out_features = to``. Everything else is copied unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..cli import run_commands
from ..errors import UserError
from ..files import atomic_dir, follow_umask, write_json
from .checkpoint import check_checkpoint, read_modules
from .load import load_colbert, model_dir

__all__ = ["PROBE_TEXTS", "dense_modules", "verify_widening", "widen", "widen_weight"]

PROBE_TEXTS = [
    "Why do insects fly towards artificial light at night?",
    "def two_sum(nums, target): return indices of the pair",
    "Let x^2 + y^2 = 1; find the maximum of x + y.",
]


def dense_modules(checkpoint: str | Path) -> list[dict[str, Any]]:
    """The Dense entries of ``modules.json``, in order (Transformer and others skipped).

    Parameters
    ----------
    checkpoint
        The checkpoint directory; an entry counts when its type ends in ``Dense`` and its folder exists
        (none is a UserError).
    """
    checkpoint = Path(checkpoint)
    modules = read_modules(checkpoint)
    dense = [m for m in modules if m.get("type", "").endswith("Dense") and (checkpoint / m["path"]).is_dir()]
    if not dense:
        raise UserError(f"{checkpoint}: modules.json has no Dense layer to widen")
    return dense


def widen_weight(weight: torch.Tensor, to: int, *, seed: int, std_fraction: float, min_std: float) -> torch.Tensor:
    """Append ``to - rows`` random rows with std ``max(std_fraction * std(weight), min_std)``.

    Parameters
    ----------
    weight
        The Dense's (rows, in_features) weight; its rows come first in the result, bit-identical.
    to
        Rows of the result (``widen.to``), more than ``weight`` has.
    seed
        Seed of the generator the new rows are drawn from (on the CPU).
    std_fraction, min_std
        The new rows' std: ``std_fraction`` times the std of ``weight``, at least ``min_std``.

    Returns
    -------
    The (to, in_features) weight, in the dtype of ``weight``.

    Examples
    --------
    >>> w = torch.randn(4, 6)
    >>> new = widen_weight(w, 8, seed=0, std_fraction=0.1, min_std=1e-3)
    >>> new.shape, bool(torch.equal(new[:4], w)), bool(new[4:].abs().min() > 0)
    (torch.Size([8, 6]), True, True)
    """
    rows, cols = weight.shape
    generator = torch.Generator().manual_seed(seed)
    std = max(std_fraction * weight.float().std().item(), min_std)
    extra = torch.randn(to - rows, cols, generator=generator) * std
    return torch.cat([weight, extra.to(weight.dtype)], dim=0)


def widen(
    *,
    source: str | Path,
    out_dir: str | Path,
    verify_path: str | Path,
    to: int,
    seed: int = 0,
    std_fraction: float = 0.1,
    min_std: float = 1e-3,
    use_residual_2_dense: bool | None = None,
) -> dict[str, Any]:
    """Widen the last Dense of ``source`` to ``to`` outputs into ``out_dir``; verify; report.

    Parameters
    ----------
    source
        The checkpoint to widen: a directory or its download manifest (:func:`~workflow_scripts.model.load.model_dir`).
    out_dir
        Where the widened checkpoint goes (written atomically): a copy of ``source`` without ``.cache``.
    verify_path
        Where the report is written, as JSON.
    to
        Outputs of the last Dense after widening (``widen.to``); more than it has now.
    seed, std_fraction, min_std
        How the new rows are drawn (:func:`widen_weight`).
    use_residual_2_dense
        Sets ``use_residual`` of the ``2_Dense`` layer (``true`` needs in == out); None keeps the checkpoint's.

    Returns
    -------
    The report of :func:`verify_widening`, plus ``source``, ``dense_layer`` (the widened module's folder) and
    ``in_features``.
    """
    src = model_dir(source)
    check_checkpoint(src)  # a truncated or missing file: one line naming it, not a traceback
    dense = dense_modules(src)
    last = src / dense[-1]["path"]
    config = json.loads((last / "config.json").read_text())
    weights_file = last / "model.safetensors"
    if not weights_file.exists():
        raise UserError(f"{last}: no model.safetensors (only safetensors weights are loaded)")
    state = load_file(weights_file)
    old = state["linear.weight"]
    if old.shape[0] >= to:
        raise UserError(f"{last}: last Dense already has {old.shape[0]} outputs, not fewer than widen.to={to}")
    with atomic_dir(out_dir) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".cache"))
        follow_umask(tmp)  # copytree copied the source's modes (a read-only mirror: read-only)
        new_state = dict(state)
        new_state["linear.weight"] = widen_weight(old, to, seed=seed, std_fraction=std_fraction, min_std=min_std)
        for key in ("linear.bias",):
            if key in state:  # zero-padded: new channels start as pure projections
                new_state[key] = torch.cat([state[key], state[key].new_zeros(to - old.shape[0])])
        if "residual.weight" in state:
            res = state["residual.weight"]
            new_state["residual.weight"] = torch.cat([res, res.new_zeros(to - res.shape[0], res.shape[1])])
        save_file({k: v.contiguous() for k, v in new_state.items()}, tmp / dense[-1]["path"] / "model.safetensors")
        _write_dense_config(tmp / dense[-1]["path"], out_features=to)
        _set_residual(tmp, use_residual_2_dense)
        report = verify_widening(
            old_path=src,
            new_path=tmp,
            old_rows=old.shape[0],
            seed=seed,
            std_fraction=std_fraction,
            min_std=min_std,
            use_residual_2_dense=use_residual_2_dense,
        )
        report.update({"source": str(src), "dense_layer": dense[-1]["path"], "in_features": config["in_features"]})
    write_json(verify_path, report)
    return report


def _write_dense_config(folder: Path, **updates: Any) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(updates)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _set_residual(checkpoint: Path, use_residual: bool | None) -> None:
    """Override ``use_residual`` of the ``2_Dense`` layer (identity residual: in == out)."""
    if use_residual is None:
        return
    folder = checkpoint / "2_Dense"
    if not folder.is_dir():
        raise UserError(f"{checkpoint}: widen.use_residual_2_dense is set but there is no 2_Dense layer")
    config = json.loads((folder / "config.json").read_text())
    if use_residual and config["in_features"] != config["out_features"]:
        raise UserError(f"{folder}: use_residual needs in_features == out_features for an identity residual")
    _write_dense_config(folder, use_residual=use_residual)


def verify_widening(
    *,
    old_path: Path,
    new_path: Path,
    old_rows: int,
    seed: int,
    std_fraction: float,
    min_std: float,
    use_residual_2_dense: bool | None,
) -> dict[str, Any]:
    """Check the widened checkpoint; raise on failure, return the figures for the report.

    Parameters
    ----------
    old_path, new_path
        The checkpoint before widening, and the widened one.
    old_rows
        ``out_features`` of the last Dense before widening: rows ``0..old_rows-1`` must be unchanged.
    seed, std_fraction, min_std
        As given to :func:`widen_weight`: they set the target std of the new rows; ``seed`` is recorded.
    use_residual_2_dense
        As given to :func:`widen`: set on the old model's ``2_Dense`` too, so that the probes compare like
        with like; None leaves both as loaded.

    Returns
    -------
    The figures (widths, stds, probe differences) and ``checks``: each check's name and whether it passed.
    """
    old_model = load_colbert(old_path)
    new_model = load_colbert(new_path)
    if use_residual_2_dense is not None:
        old_model[2].use_residual = use_residual_2_dense  # compare like with like
    w_old = old_model[-1].linear.weight.detach()
    w_new = new_model[-1].linear.weight.detach()
    target_std = max(std_fraction * w_old.float().std().item(), min_std)
    new_std = w_new[old_rows:].float().std().item()
    head_diff, tail_min_norm = _probe_figures(old_model=old_model, new_model=new_model, old_rows=old_rows)
    report = {
        "old_dim": int(w_old.shape[0]),
        "new_dim": int(w_new.shape[0]),
        "loaded_embedding_size": int(new_model[-1].out_features),
        "dense_layers": len(new_model) - 1,
        "rows_identical": bool(torch.equal(w_new[:old_rows], w_old)),
        "old_weight_std": w_old.float().std().item(),
        "target_new_row_std": target_std,
        "new_row_std": new_std,
        "new_row_std_rel_error": abs(new_std - target_std) / target_std,
        "probe_texts": len(PROBE_TEXTS),
        "probe_max_abs_diff_first_dims": head_diff,
        "probe_min_token_max_abs_new_dims": tail_min_norm,
        "seed": seed,
    }
    checks = _widening_checks(report=report, old_dense_layers=len(old_model) - 1)
    report["checks"] = checks
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise UserError(f"{new_path}: widening verification failed: {', '.join(failed)}")
    return report


def _probe_figures(*, old_model: Any, new_model: Any, old_rows: int) -> tuple[float, float]:
    """Encode :data:`PROBE_TEXTS` with both models: the largest difference on the old dims, and the
    smallest per-token largest magnitude on the new dims."""
    with torch.no_grad():
        old_vecs = old_model.encode(PROBE_TEXTS, is_query=False, normalize_embeddings=False, show_progress_bar=False)
        new_vecs = new_model.encode(PROBE_TEXTS, is_query=False, normalize_embeddings=False, show_progress_bar=False)
    head_diff = max(float(abs(n[:, :old_rows] - o).max()) for o, n in zip(old_vecs, new_vecs))
    tail_min_norm = min(float(abs(n[:, old_rows:]).max(axis=1).min()) for n in new_vecs)
    return head_diff, tail_min_norm


def _widening_checks(*, report: dict[str, Any], old_dense_layers: int) -> dict[str, bool]:
    """Each check of :func:`verify_widening` by name, on the figures of its report."""
    return {
        "rows 0..old-1 bit-identical": report["rows_identical"],
        "new rows' std within 5% of target": report["new_row_std_rel_error"] <= 0.05,
        "probe: first dims match the old model": report["probe_max_abs_diff_first_dims"] <= 1e-4,
        "probe: new dims non-zero for every token": report["probe_min_token_max_abs_new_dims"] > 0,
        "loads with the widened embedding size": report["loaded_embedding_size"] == report["new_dim"]
        and report["dense_layers"] == old_dense_layers,
    }


def main(argv: list[str] | None = None) -> None:
    run_commands({"widen": widen}, argv)


if __name__ == "__main__":
    main()
