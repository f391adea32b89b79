"""No attention row fully masked: padding can never turn into NaN (issue #21).

In transformers 5.3 a padding position's query row in ModernBERT's sliding-window (local)
layers has every key masked when it is more than half a window (64 tokens) past the last real
token; CPU's math SDPA returns 0 there, CUDA's memory-efficient SDPA has returned NaN
(pytorch#110213, ModernBERT#174), and a NaN value vector spreads to real tokens in the next
layer (probability 0 x NaN). :func:`guard_padding` lets each padding query attend to itself:
real tokens' rows are unchanged (they never see a padding key), so their outputs are too.

``or_mask_function`` cannot do this: ``sdpa_mask`` ANDs the padding mask in after it, so a
padding key stays masked whatever the OR adds. The guard therefore builds ModernBERT's own masks
with the same ``masking_utils`` calls (``create_bidirectional_mask``,
``create_bidirectional_sliding_window_mask``) in a forward pre-hook on the backbone, adds the
diagonal for padding rows, and passes them as the ``{layer type: mask}`` mapping that
``ModernBertModel.forward`` accepts in place of a 2-D mask. Nothing is saved with the model:
:func:`workflow_scripts.model.load.load_colbert` applies it to every model it loads (training,
evaluation, widening). Flash-attention (unpadded) and flex masks are left as built.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = ["guard_attention_mask", "guard_padding", "guarded_masks", "unguard_padding"]

logger = logging.getLogger(__name__)


def guard_attention_mask(mask: Any, attention_mask: torch.Tensor, *, inplace: bool = False) -> Any:
    """``mask`` (4-D, as ``masking_utils`` builds it) with each padding query allowed to see itself.

    Boolean masks (SDPA: True = attend) get the diagonal of padding rows set; additive float
    masks (eager: 0 = attend) get 0 there. Real tokens' rows are untouched. Anything else (None,
    a 2-D flash-attention mask, a flex ``BlockMask``) is returned as it is. Only the diagonal is
    written (no second (batch, 1, length, length) tensor); ``inplace`` writes it into ``mask``
    itself when ``mask`` owns its memory (not an expanded view).

    Parameters
    ----------
    mask
        One layer type's mask as ``masking_utils`` builds it: (batch, heads or 1, length, length), bool
        or additive float; anything else is returned unchanged.
    attention_mask
        The 2-D (batch, length) padding mask: 1 (True) for a real token, 0 for padding.
    inplace
        Write the diagonal into ``mask`` itself when it is contiguous; False: into a copy.

    Returns
    -------
    The guarded mask: ``mask`` itself when there is no padding, its last two dimensions are not
    (length, length), or ``inplace`` wrote into it.

    Examples
    --------
    >>> full = torch.tensor([[1, 1, 0]]).bool()
    >>> mask = full[:, None, None, :].expand(1, 1, 3, 3)  # key padding only
    >>> local = mask & torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 0]]).bool()  # row 2 sees nothing
    >>> guard_attention_mask(local, full)[0, 0].int().tolist()
    [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    >>> local[0, 0, 2].tolist()  # the input is left as it was
    [False, False, False]
    """
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        return mask
    padding = ~attention_mask.to(device=mask.device, dtype=torch.bool)
    length = padding.shape[-1]
    if mask.shape[-2:] != (length, length) or not bool(padding.any()):
        return mask
    guarded = mask if inplace and mask.is_contiguous() else mask.clone(memory_format=torch.contiguous_format)
    diagonal = torch.diagonal(guarded, dim1=-2, dim2=-1)  # (batch, heads, length), a view
    if guarded.dtype == torch.bool:
        diagonal |= padding[:, None, :]
    else:
        diagonal.masked_fill_(padding[:, None, :], 0.0)
    return guarded


def guarded_masks(backbone: Any, attention_mask: torch.Tensor, *, shape: tuple[int, int]) -> dict[str, Any] | None:
    """ModernBERT's ``{layer type: mask}`` for a 2-D ``attention_mask``, built as its forward does, guarded.

    None when the backbone has a layer type this guard does not know (left to build its own).

    Parameters
    ----------
    backbone
        A ``ModernBertModel``: its config gives the layer types (and window), its embeddings the dtype.
    attention_mask
        The 2-D (batch, length) padding mask the backbone is called with.
    shape
        (batch, length) of the inputs, from the forward's ``input_ids`` or ``inputs_embeds``.
    """
    from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

    builders = {
        "full_attention": create_bidirectional_mask,
        "sliding_attention": create_bidirectional_sliding_window_mask,
    }
    config = backbone.config
    if not set(config.layer_types) <= set(builders):
        return None
    weight = backbone.get_input_embeddings().weight
    # the builders read only the batch size, length, dtype and device of the embeddings
    proxy = torch.empty((*shape, 0), dtype=weight.dtype, device=attention_mask.device)
    return {
        kind: guard_attention_mask(
            build(config=config, inputs_embeds=proxy, attention_mask=attention_mask), attention_mask, inplace=True
        )
        for kind, build in builders.items()
    }


def _guard_hook(module: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]] | None:
    """Forward pre-hook of a ``ModernBertModel``: its 2-D mask becomes the guarded mapping."""
    positional = len(args) >= 2
    mask = args[1] if positional else kwargs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    reference = kwargs.get("inputs_embeds")
    if reference is None:
        reference = args[0] if args else kwargs.get("input_ids")
    if reference is None:
        return None
    mapping = guarded_masks(module, mask, shape=tuple(reference.shape[:2]))
    if mapping is None:
        return None
    if positional:
        return (args[0], mapping, *args[2:]), kwargs
    return args, {**kwargs, "attention_mask": mapping}


def guard_padding(model: Any) -> None:
    """Make sure no attention row of the model's ModernBERT backbone is fully masked (idempotent).

    Installs a forward pre-hook on every ``ModernBertModel`` inside ``model`` (a PyLate ColBERT,
    a DDP wrapper, a bare backbone) that lets each padding query attend to itself; real tokens'
    outputs are unchanged. A model without a ModernBERT backbone is left alone (debug log).
    Nothing is saved with the model: call it again after loading.

    Parameters
    ----------
    model
        Any ``torch.nn.Module``; every ``ModernBertModel`` among its modules is hooked once.
    """
    from transformers import ModernBertModel

    backbones = [m for m in model.modules() if isinstance(m, ModernBertModel)]
    if not backbones:
        logger.debug(
            "guard_padding: no ModernBERT backbone in %s; attention masks left as they are", type(model).__name__
        )
    for backbone in backbones:
        if getattr(backbone, "_padding_guard", None) is None:
            backbone._padding_guard = backbone.register_forward_pre_hook(_guard_hook, with_kwargs=True)


def unguard_padding(model: Any) -> None:
    """Remove :func:`guard_padding`'s hooks (to look at the masks ModernBERT builds by itself).

    Parameters
    ----------
    model
        A model :func:`guard_padding` was applied to; a module without its hook is left as it is.
    """
    for backbone in model.modules():
        hook = getattr(backbone, "_padding_guard", None)
        if hook is not None:
            hook.remove()
            backbone._padding_guard = None
