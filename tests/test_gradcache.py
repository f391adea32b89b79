"""Trimmed GradCache and the padding guard, on the real ModernBERT ColBERT architecture at small sizes.

The model is the rehearsal's (``workflow_scripts.synthetic.rehearsal.write_base_model``: mxbai-edge-colbert's
architecture, random weights, sliding-window layers of 128 tokens); only the batches are small.
"""

from __future__ import annotations

import pytest
import torch

from workflow_scripts.errors import UserError
from workflow_scripts.model.load import load_colbert
from workflow_scripts.model.padding_guard import guard_padding, unguard_padding
from workflow_scripts.synthetic.rehearsal import build_tokenizer, make_lexicon, single_token_units, write_base_model
from workflow_scripts.train.gradcache import TrimmedCachedContrastive, trimmed_token_counts

QUERY_LENGTH, DOCUMENT_LENGTH = 32, 160  # a document padded from 5 to 160 tokens ends > 64 tokens from a real one
MINI_BATCH = 3
COLUMNS = ("query", "positive", "negative")


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """(model folder, single-token words): the real architecture, written by the rehearsal's writer."""
    words = make_lexicon(2000, seed=0)
    tokenizer = build_tokenizer(words)
    root = tmp_path_factory.mktemp("gradcache") / "base-model"
    write_base_model(root, tokenizer, seed=0)
    return root, single_token_units(tokenizer, words).words


def load(rehearsal):
    model = load_colbert(rehearsal[0], query_length=QUERY_LENGTH, document_length=DOCUMENT_LENGTH)
    model.train()
    return model


def text(words, n: int, offset: int) -> str:
    """``n`` single-token words: about ``n`` tokens."""
    return " ".join(words[(offset + i) % len(words)] for i in range(n))


def rows(words) -> list[dict[str, str]]:
    """Seven rows of mixed lengths, from a few tokens up to (and beyond) the collated widths."""
    q = [QUERY_LENGTH // 6, QUERY_LENGTH // 2, 2, QUERY_LENGTH, 9, QUERY_LENGTH // 3, 4]
    d = DOCUMENT_LENGTH
    p = [d - 20, 10, d + 30, 3, d // 2, 30, d // 4]
    n = [7, d - 5, d // 3, d - 40, 2, d // 2 + 7, 12]
    return [
        {"query": text(words, a, i), "positive": text(words, b, 100 + 7 * i), "negative": text(words, c, 900 + 11 * i)}
        for i, (a, b, c) in enumerate(zip(q, p, n))
    ]


def features(model, batch_rows) -> list[dict[str, torch.Tensor]]:
    """The columns as PyLate's collator makes them (padded to query_length / document_length)."""
    from pylate import utils

    batch = utils.ColBERTCollator(model.tokenize)(batch_rows)
    return [{k[len(c) + 1 :]: v for k, v in batch.items() if k.startswith(c + "_")} for c in COLUMNS]


def lengths(column: dict[str, torch.Tensor]) -> list[int]:
    return column["attention_mask"].sum(dim=1).tolist()


def one_step(loss_class, model, columns):
    """Loss value and parameter gradients of one GradCache step."""
    loss = loss_class(model=model, mini_batch_size=MINI_BATCH)
    value = loss(columns)
    value.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss, value.detach(), grads


@pytest.fixture(scope="module")
def steps(rehearsal):
    """One step of PyLate's CachedContrastive and one of the trimmed loss, same batch, same weights.

    The trimmed run also records what its backbone is fed in the no-grad pass (shapes) and
    the 4-D masks its attention layers receive.
    """
    from pylate import losses

    reference_model = load(rehearsal)
    columns = features(reference_model, rows(rehearsal[1]))
    _, reference, reference_grads = one_step(losses.CachedContrastive, reference_model, columns)

    model = load(rehearsal)
    backbone = model[0].auto_model
    fed: list[int] = []
    backbone.register_forward_pre_hook(
        lambda m, args, kwargs: fed.append(kwargs["input_ids"].numel()) if not torch.is_grad_enabled() else None,
        with_kwargs=True,
    )
    loss, value, grads = one_step(TrimmedCachedContrastive, model, columns)
    return {"columns": columns, "reference": (reference, reference_grads), "trimmed": (loss, value, grads), "fed": fed}


def test_trimmed_gradcache_same_loss_and_gradients(steps):
    reference, reference_grads = steps["reference"]
    loss, value, grads = steps["trimmed"]
    documents = steps["columns"][1]
    assert len(set(lengths(documents))) > MINI_BATCH and len(lengths(documents)) > 2 * MINI_BATCH  # mixed, 3 batches
    assert loss.tokens.last_call["documents"]["processed"] < loss.tokens.last_call["documents"]["padded"]  # it trims
    torch.testing.assert_close(value, reference, rtol=1e-5, atol=1e-6)
    assert grads.keys() == reference_grads.keys() and len(grads) > 10
    for name, grad in reference_grads.items():
        scale = grad.abs().max().clamp_min(1e-12)
        assert (grads[name] - grad).abs().max() / scale < 1e-4, name


def test_token_counts_equal_the_batch_lengths(steps):
    loss = steps["trimmed"][0]
    columns = steps["columns"]
    widths = {"queries": QUERY_LENGTH, "documents": DOCUMENT_LENGTH}
    expected = {group: dict.fromkeys(("real", "processed", "padded", "collated"), 0) for group in widths}
    for i, column in enumerate(columns):
        group = "queries" if i == 0 else "documents"
        forecast = trimmed_token_counts(lengths(column), mini_batch_size=MINI_BATCH)
        n = len(lengths(column))
        assert forecast["real"] == sum(lengths(column))
        assert forecast["padded"] == n * max(lengths(column))
        for key in ("real", "processed", "padded"):
            expected[group][key] += forecast[key]
        expected[group]["collated"] += n * widths[group]
    assert loss.tokens.last_call == expected
    # processed = what the backbone was really fed in the first (no-grad) pass, each batch trimmed
    assert sum(steps["fed"]) == expected["queries"]["processed"] + expected["documents"]["processed"]
    assert len(steps["fed"]) == sum(-(-len(lengths(c)) // MINI_BATCH) for c in columns)
    assert loss.tokens.end_step() == expected and loss.tokens.total == expected and loss.tokens.steps == 1
    assert loss.tokens.step["documents"]["real"] == 0


def attention_masks(model) -> list[torch.Tensor]:
    """Records the 4-D mask every attention layer of the backbone is called with."""
    seen: list[torch.Tensor] = []
    for layer in model[0].auto_model.layers:
        layer.attn.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["attention_mask"]), with_kwargs=True)
    return seen


def fully_masked_rows(mask: torch.Tensor | None) -> int:
    if mask is None:
        return 0
    allowed = mask if mask.dtype == torch.bool else mask == 0
    return int((~allowed).all(dim=-1).sum())


def test_no_attention_row_fully_masked_and_real_tokens_unchanged(rehearsal):
    model = load(rehearsal).eval()
    assert len(model[0].auto_model._forward_pre_hooks) == 1  # load_colbert guards every model it loads
    unguard_padding(model)  # to see the masks ModernBERT builds by itself
    documents = features(model, rows(rehearsal[1]))[1]
    config = model[0].auto_model.config
    assert "sliding_attention" in config.layer_types and "full_attention" in config.layer_types
    seen = attention_masks(model)
    with torch.no_grad():
        before = model(dict(documents))["token_embeddings"]
    # without the guard: padding rows more than half a window past the last real token see no key
    expected = sum(max(0, DOCUMENT_LENGTH - n - config.sliding_window) for n in lengths(documents))
    local = [i for i, kind in enumerate(config.layer_types) if kind == "sliding_attention"]
    assert expected > 0 and [fully_masked_rows(seen[i]) for i in local] == [expected] * len(local)

    guard_padding(model)
    guard_padding(model)  # idempotent: one hook
    assert len(model[0].auto_model._forward_pre_hooks) == 1
    seen.clear()
    with torch.no_grad():
        after = model(dict(documents))["token_embeddings"]
    assert len(seen) == config.num_hidden_layers
    assert [fully_masked_rows(mask) for mask in seen] == [0] * config.num_hidden_layers
    real = documents["attention_mask"].bool()
    torch.testing.assert_close(after[real], before[real], rtol=1e-5, atol=1e-5)
    # and each real token is what the row encoded alone, without padding, gives
    for i, n in enumerate(lengths(documents)):
        alone = {k: v[i : i + 1, :n] for k, v in documents.items()}
        with torch.no_grad():
            torch.testing.assert_close(model(alone)["token_embeddings"][0], after[i, :n], rtol=1e-4, atol=1e-4)


def test_guard_padding_leaves_other_models_alone(caplog):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with caplog.at_level("DEBUG", logger="workflow_scripts.model.padding_guard"):
        guard_padding(model)
    assert "no ModernBERT backbone" in caplog.text
    assert not model[0]._forward_pre_hooks


def poison(model, where) -> None:
    """Writes NaN into the final token vectors where ``where(attention_mask)`` is True."""

    def hook(module, args, output):
        bad = where(output["attention_mask"].bool()).unsqueeze(-1)
        output["token_embeddings"] = output["token_embeddings"].masked_fill(bad, float("nan"))
        return output

    model[-1].register_forward_hook(hook)


def test_padding_outputs_never_reach_a_score(rehearsal):
    from pylate import losses

    model = load(rehearsal)
    columns = features(model, rows(rehearsal[1])[:4])
    with torch.no_grad():
        clean = TrimmedCachedContrastive(model=model, mini_batch_size=MINI_BATCH)(columns)
        poison(model, lambda real: ~real)  # NaN at every padding position
        assert torch.isnan(losses.CachedContrastive(model=model, mini_batch_size=MINI_BATCH)(columns))  # 0 x NaN
        trimmed = TrimmedCachedContrastive(model=model, mini_batch_size=MINI_BATCH)(columns)
    torch.testing.assert_close(trimmed, clean)


def test_a_nan_score_is_refused_naming_the_step(rehearsal):
    model = load(rehearsal)
    columns = features(model, rows(rehearsal[1])[:4])
    poison(model, lambda real: real & (real.cumsum(dim=1) == 2))  # one real token of every row
    loss = TrimmedCachedContrastive(model=model, mini_batch_size=MINI_BATCH)
    loss.label, loss.step = "train stage2", 7
    with pytest.raises(UserError) as err, torch.no_grad():
        loss(columns)
    message = str(err.value)
    assert message.startswith("train stage2 step 7: ") and "NaN" in message and "\n" not in message
