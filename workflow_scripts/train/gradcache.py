"""GradCache that computes nothing on padding and lets no padding turn into NaN (issue #21, item 3).

PyLate's collator pads every document to ``document_length`` (2,048) and every query to
``query_length``; BRIGHT-like documents average ~65-430 tokens, so most of the encoder's work
in :class:`pylate.losses.CachedContrastive` is padding. :class:`TrimmedCachedContrastive` is that
loss with the same constructor (``score_metric``, ``mini_batch_size``, ``score_mini_batch_size``,
``gather_across_devices``, ``temperature``, ...) and the same result:

- inside GradCache, each column's rows (queries, positives, negatives) of this device's batch are
  sorted longest first and cut into mini-batches (:func:`minibatch_plan`: the ``n % m`` longest
  rows form the first, smaller one); each mini-batch is trimmed to its own longest row before
  the encoder. The backward re-embedding walks the same plan with the same saved RNG states.
- the token vectors are padded back with zeros to the collated width and put back in the
  original row order before the loss: the loss sees the same rows, the same contrastive batch
  (``gather_across_devices`` gathers tensors of the same width on every rank), the same masks,
  hence the same scores, loss and gradients (``tests/test_gradcache.py``). With dropout (0 in
  ModernBERT) the random masks would differ in shape, not in distribution.
- queries are trimmed only without query expansion (with it, the padding ``[MASK]`` tokens are
  scored and must be encoded).
- the vectors of positions the attention mask marks as padding are set to 0 (``masked_fill``,
  so a NaN there is replaced, never multiplied by 0), and every score is checked finite
  (:func:`workflow_scripts.train.loss_scores.check_finite`): a NaN or inf score stops training with
  one line naming the step.

No attention row of ModernBERT is ever fully masked: :func:`workflow_scripts.model.padding_guard.guard_padding`
(applied by ``load_colbert`` to every model, and again by this loss to the model it trains).

Token counts (the per-step log and ``train/<stage>.meta.json``)
---------------------------------------------------------------
``loss.tokens`` is a :class:`TokenCounter`. Each loss call adds, for ``"queries"`` (column 0)
and ``"documents"`` (the other columns), of this rank only:

- ``real``: attention-mask ones;
- ``processed``: tokens fed to the encoder after trimming (measured from the tensors; once per
  GradCache pass: the backward re-embedding processes the same again);
- ``padded``: rows x the column's longest row, what padding to the batch's longest processes;
- ``collated``: rows x the collated width (``query_length``/``document_length``: what PyLate's
  ``CachedContrastive`` processes, since its collator pads to the maximum length).

``loss.tokens.last_call`` holds the last call's counts, ``loss.tokens.step`` the sum since the
last ``loss.tokens.end_step()`` (which returns it and starts the next step: call it once per
optimizer step, e.g. in a ``TrainerCallback.on_step_end``), ``loss.tokens.total`` every call
so far, ``loss.tokens.steps`` the steps ended. Each is ``{"queries": {...}, "documents": {...}}``
of plain ints. :func:`trimmed_token_counts` forecasts ``real``/``processed``/``padded`` of one
column from its token lengths alone; the runtime counts equal it (tested).

Set ``loss.step`` (e.g. ``state.global_step + 1`` in ``on_step_begin``) so a non-finite score
names the optimizer step, otherwise it names the loss call (``loss.calls``); ``loss.label``
(default ``"train"``, e.g. ``"train stage2"``) comes first: ``train stage2 step 7: 3 of 512
scores are not finite (3 NaN, 0 inf): ...``.

Wiring::

    loss = TrimmedCachedContrastive(model=model, score_metric=metric, mini_batch_size=32,
                                    score_mini_batch_size=None, gather_across_devices=True, temperature=1.0)
    loss.label = "train stage2"
    # per optimizer step: loss.step = state.global_step + 1 (on_step_begin);
    #                     counts = loss.tokens.end_step() (on_step_end) -> log, meta.json
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pylate.losses import CachedContrastive
from pylate.losses.cached_contrastive import RandContext

from ..errors import UserError
from ..model.padding_guard import guard_padding
from .loss_scores import check_finite

__all__ = [
    "COUNT_KEYS",
    "GROUPS",
    "ColumnPlan",
    "FiniteScores",
    "TokenCounter",
    "TrimmedCachedContrastive",
    "guard_padding",
    "minibatch_plan",
    "plan_column",
    "trimmed_token_counts",
]

logger = logging.getLogger(__name__)

GROUPS = ("queries", "documents")  # column 0; columns 1.. (positives, negatives)
COUNT_KEYS = ("real", "processed", "padded", "collated")


# ----------------------------------------------------------------------------- the plan (pure)
def minibatch_plan(lengths: Sequence[int], *, mini_batch_size: int) -> list[list[int]]:
    """Row indices of one column's GradCache mini-batches: longest first, the remainder first.

    Rows are sorted by length, longest first (ties keep their order); the first mini-batch takes
    the ``n % mini_batch_size`` longest rows (if any), every other one ``mini_batch_size``: the
    longest rows sit in the smallest mini-batch, and the largest activations come first.

    Parameters
    ----------
    lengths
        Each row's token length (its attention-mask ones), in row order.
    mini_batch_size
        Rows per mini-batch (GradCache's ``mini_batch_size``), at least 1.

    Examples
    --------
    >>> minibatch_plan([5, 300, 40, 7, 120], mini_batch_size=2)
    [[1], [4, 2], [3, 0]]
    >>> minibatch_plan([3, 3, 3, 3], mini_batch_size=2)
    [[0, 1], [2, 3]]
    >>> minibatch_plan([], mini_batch_size=2)
    []
    """
    if mini_batch_size < 1:
        raise UserError(f"gradcache: mini_batch_size={mini_batch_size} must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    first = len(order) % mini_batch_size
    bounds = ([0, first] if first else [0]) + list(range(first + mini_batch_size, len(order) + 1, mini_batch_size))
    return [order[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _width(lengths: Iterable[int]) -> int:
    """Tokens a trimmed mini-batch is wide: its longest row, at least one token."""
    return max(max(lengths, default=0), 1)


def trimmed_token_counts(lengths: Sequence[int], *, mini_batch_size: int) -> dict[str, int]:
    """Tokens of one device's column of rows with these token lengths (attention-mask ones).

    ``real``: the sum of the lengths; ``processed``: each mini-batch of :func:`minibatch_plan`
    trimmed to its own longest row; ``padded``: every row padded to the longest of the column.

    Parameters
    ----------
    lengths
        Each row's token length (its attention-mask ones), in row order.
    mini_batch_size
        Rows per GradCache mini-batch, as for :func:`minibatch_plan`.

    Examples
    --------
    >>> trimmed_token_counts([5, 300, 40, 7, 120], mini_batch_size=2)  # 300 + 2 x 120 + 2 x 7
    {'real': 472, 'processed': 554, 'padded': 1500}
    >>> trimmed_token_counts([], mini_batch_size=32)
    {'real': 0, 'processed': 0, 'padded': 0}
    """
    plan = minibatch_plan(lengths, mini_batch_size=mini_batch_size)
    return {
        "real": int(sum(lengths)),
        "processed": sum(len(rows) * _width(lengths[i] for i in rows) for rows in plan),
        "padded": len(lengths) * _width(lengths) if len(lengths) else 0,
    }


# ----------------------------------------------------------------------------- token counts
def _zero_counts() -> dict[str, dict[str, int]]:
    return {group: dict.fromkeys(COUNT_KEYS, 0) for group in GROUPS}


def _add_counts(into: dict[str, dict[str, int]], counts: dict[str, dict[str, int]]) -> None:
    for group, values in counts.items():
        for key, value in values.items():
            into[group][key] += value


class TokenCounter:
    """Real/processed/padded/collated tokens of queries and documents (see the module docstring).

    Examples
    --------
    >>> counter = TokenCounter()
    >>> one = {"queries": {"real": 3, "processed": 4, "padded": 5, "collated": 8},
    ...        "documents": {"real": 10, "processed": 12, "padded": 20, "collated": 32}}
    >>> counter.add(one); counter.add(one)
    >>> counter.end_step()["documents"]
    {'real': 20, 'processed': 24, 'padded': 40, 'collated': 64}
    >>> counter.step["queries"]["real"], counter.total["queries"]["real"], counter.steps
    (0, 6, 1)
    """

    def __init__(self) -> None:
        self.last_call = _zero_counts()
        self.step = _zero_counts()
        self.total = _zero_counts()
        self.steps = 0

    def add(self, counts: dict[str, dict[str, int]]) -> None:
        """Record one loss call's counts."""
        self.last_call = {group: dict(values) for group, values in counts.items()}
        _add_counts(self.step, counts)
        _add_counts(self.total, counts)

    def end_step(self) -> dict[str, dict[str, int]]:
        """The counts since the previous call (one optimizer step), and start the next step."""
        step, self.step = self.step, _zero_counts()
        self.steps += 1
        return step


# ----------------------------------------------------------------------------- the loss
@dataclass(frozen=True)
class ColumnPlan:
    """How one column is embedded: mini-batches of rows, each trimmed to ``widths[i]`` tokens.

    ``order`` is the mini-batches' rows concatenated; ``inverse[j]`` is where original row ``j``
    sits in that order; ``width`` is the collated width the vectors are padded back to; ``trim``
    is False for a query column with query expansion (every position is scored: nothing is
    trimmed or zeroed).
    """

    batches: list[torch.Tensor]
    widths: list[int]
    order: torch.Tensor
    inverse: torch.Tensor
    lengths: list[int]
    width: int
    trim: bool


def plan_column(features: dict[str, torch.Tensor], *, mini_batch_size: int, trim: bool) -> ColumnPlan:
    """The :class:`ColumnPlan` of one tokenized column (``input_ids``, ``attention_mask``).

    A row's length is one past its last attention-mask one (right padding, as PyLate's
    tokenizer pads); a left-padded row is as long as the tensor, so it is never cut.

    Parameters
    ----------
    features
        One column's tokenized rows; only ``attention_mask`` (rows, collated width) is read.
    mini_batch_size
        Rows per GradCache mini-batch (:func:`minibatch_plan`).
    trim
        Cut each mini-batch to its longest row; False (a query column with query expansion): every
        row keeps the collated width.
    """
    mask = features["attention_mask"]
    rows, width = mask.shape
    if trim:
        positions = torch.arange(1, width + 1, device=mask.device)
        lengths = (mask.bool() * positions).amax(dim=1).tolist() if rows else []
    else:
        lengths = [width] * rows
    plan = minibatch_plan(lengths, mini_batch_size=mini_batch_size)
    order = [i for batch in plan for i in batch]
    inverse = torch.empty(rows, dtype=torch.long)
    inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(rows)
    return ColumnPlan(
        batches=[torch.tensor(batch, dtype=torch.long, device=mask.device) for batch in plan],
        widths=[_width(lengths[i] for i in batch) for batch in plan],
        order=torch.tensor(order, dtype=torch.long, device=mask.device),
        inverse=inverse.to(mask.device),
        lengths=lengths,
        width=width,
        trim=trim,
    )


def _take(value: Any, rows: torch.Tensor, width: int, full_width: int) -> Any:
    """Rows ``rows`` of a feature, cut to ``width`` tokens if it is a per-token tensor."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    taken = value.index_select(0, rows)
    return taken[:, :width] if value.dim() >= 2 and value.shape[1] == full_width else taken


class FiniteScores:
    """A score metric whose every output is checked finite before the loss sees it."""

    def __init__(self, metric: Callable[..., torch.Tensor], where: Callable[[], str]) -> None:
        self.metric, self.where = metric, where

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        scores = self.metric(*args, **kwargs)
        check_finite(scores, what=self.where())
        return scores


class TrimmedCachedContrastive(CachedContrastive):
    """PyLate's ``CachedContrastive`` computing no encoder work on padding (module docstring).

    Parameters
    ----------
    model
        The PyLate ColBERT being trained; :func:`~workflow_scripts.model.padding_guard.guard_padding` is applied to it unless
        ``guard`` is False.
    score_metric, mini_batch_size, score_mini_batch_size, size_average
        As in ``pylate.losses.CachedContrastive`` (``score_metric=None``: PyLate's
        ``ColBERTScores``). Whatever metric is set, now or later, its scores are checked finite.
    gather_across_devices, show_progress_bar, temperature
        As in ``pylate.losses.CachedContrastive``.
    guard
        Apply :func:`~workflow_scripts.model.padding_guard.guard_padding` to ``model``.
    """

    def __init__(
        self,
        model: Any,
        score_metric: Callable[..., torch.Tensor] | None = None,
        mini_batch_size: int = 32,
        score_mini_batch_size: int | None = None,
        size_average: bool = True,
        gather_across_devices: bool = False,
        show_progress_bar: bool = False,
        temperature: float = 1.0,
        *,
        guard: bool = True,
    ) -> None:
        if mini_batch_size < 1:
            raise UserError(f"gradcache: mini_batch_size={mini_batch_size} must be at least 1")
        super().__init__(
            model=model,
            score_metric=score_metric,
            mini_batch_size=mini_batch_size,
            score_mini_batch_size=score_mini_batch_size,
            size_average=size_average,
            gather_across_devices=gather_across_devices,
            show_progress_bar=show_progress_bar,
            temperature=temperature,
        )
        self.tokens = TokenCounter()
        self.calls = 0
        self.step: int | None = None
        self.label = "train"  # e.g. "train stage2": what a refused score names before the step
        self._plans: dict[int, ColumnPlan] = {}  # id(column features) -> plan, for the backward hook
        self._processed: dict[int, int] = {}
        if guard:
            guard_padding(model)

    def __setattr__(self, name: str, value: Any) -> None:
        # any metric set later (trainer.py wraps it in its CandidateCounter) is checked too; kept
        # out of nn.Module's submodules so a plain wrapper can replace a Module metric
        if name == "score_metric":
            object.__setattr__(self, name, FiniteScores(value, self._where))
            return
        super().__setattr__(name, value)

    def _where(self) -> str:
        return f"{self.label} step {self.step}" if self.step is not None else f"{self.label} loss call {self.calls}"

    def _colbert(self) -> Any:
        return self.model.module if hasattr(self.model, "module") else self.model

    def forward(self, sentence_features: Iterable[dict[str, torch.Tensor]], labels: torch.Tensor | None = None):
        """GradCache loss of one batch: plan every column, then PyLate's three steps."""
        features = list(sentence_features)
        self.calls += 1
        expansion = bool(getattr(self._colbert(), "do_query_expansion", False))
        plans = [
            plan_column(f, mini_batch_size=self.mini_batch_size, trim=column > 0 or not expansion)
            for column, f in enumerate(features)
        ]
        self._plans = {id(f): plan for f, plan in zip(features, plans)}
        self._processed = dict.fromkeys(self._plans, 0)
        loss = super().forward(features, labels)
        self.tokens.add(self._counts(features, plans))
        return loss

    def _counts(self, features: list[dict[str, torch.Tensor]], plans: list[ColumnPlan]) -> dict[str, dict[str, int]]:
        counts = _zero_counts()
        for column, (f, plan) in enumerate(zip(features, plans)):
            group = counts[GROUPS[min(column, 1)]]
            rows = len(plan.lengths)
            group["real"] += int(f["attention_mask"].sum())
            group["processed"] += self._processed[id(f)]
            group["padded"] += rows * _width(plan.lengths) if rows else 0
            group["collated"] += rows * plan.width
        return counts

    def embed_minibatch_iter(
        self,
        sentence_feature: dict[str, torch.Tensor],
        with_grad: bool,
        copy_random_state: bool,
        random_states: list[RandContext] | None = None,
    ) -> Iterator[tuple[torch.Tensor, RandContext | None]]:
        """Trimmed mini-batches of one column in the plan's order (both GradCache passes)."""
        key = id(sentence_feature)
        plan = self._plans.get(key)
        if plan is None:  # called outside forward: plan it the same way
            plan = plan_column(sentence_feature, mini_batch_size=self.mini_batch_size, trim=True)
        for i, (rows, width) in enumerate(zip(plan.batches, plan.widths)):
            reps, state = self._embed_rows(
                sentence_feature,
                rows=rows,
                width=width,
                plan=plan,
                with_grad=with_grad,
                copy_random_state=copy_random_state,
                random_state=None if random_states is None else random_states[i],
            )
            if not with_grad and key in self._processed:
                self._processed[key] += len(rows) * width
            yield reps, state

    def _embed_rows(
        self,
        features: dict[str, torch.Tensor],
        *,
        rows: torch.Tensor,
        width: int,
        plan: ColumnPlan,
        with_grad: bool,
        copy_random_state: bool,
        random_state: RandContext | None,
    ) -> tuple[torch.Tensor, RandContext | None]:
        """PyLate's ``embed_minibatch`` on rows ``rows`` cut to ``width`` tokens; padding vectors set to 0."""
        grad_context = nullcontext if with_grad else torch.no_grad
        random_state_context = nullcontext() if random_state is None else random_state
        minibatch = {k: _take(v, rows, width, plan.width) for k, v in features.items()}
        with random_state_context:
            with grad_context():
                random_state = RandContext(*minibatch.values()) if copy_random_state else None
                outputs = self.model(minibatch)
                embeddings = F.normalize(outputs["token_embeddings"], p=2, dim=-1)
                if plan.trim:  # replaced, not multiplied: a NaN at a padding position cannot survive
                    padding = ~minibatch["attention_mask"].bool().unsqueeze(-1)
                    embeddings = embeddings.masked_fill(padding, 0.0)
        return embeddings, random_state

    def calculate_loss(self, reps: list[list[torch.Tensor]], masks: list[torch.Tensor], with_backward: bool = False):
        """PyLate's loss on every column padded back to its width, in the original row order.

        Each column is restored into a new leaf tensor: PyLate backpropagates once per chunk of
        queries, which a graph shared by the chunks (the reordering) would not survive. With
        ``with_backward`` each mini-batch's gradient is then cut back out of its column's.
        """
        plans = list(self._plans.values())
        restored = []
        with torch.no_grad():
            for chunks, plan in zip(reps, plans):
                padded = [F.pad(chunk, (0, 0, 0, plan.width - chunk.shape[1])) for chunk in chunks]
                restored.append(torch.cat(padded).index_select(0, plan.inverse).requires_grad_(with_backward))
        loss = super().calculate_loss([[column] for column in restored], masks, with_backward=with_backward)
        if with_backward:
            for chunks, plan, column in zip(reps, plans, restored):
                grad = column.grad if column.grad is not None else torch.zeros_like(column)
                ordered = grad.index_select(0, plan.order)
                begin = 0
                for chunk in chunks:
                    rows, width = chunk.shape[:2]
                    chunk.grad = ordered[begin : begin + rows, :width].contiguous()
                    begin += rows
        return loss
