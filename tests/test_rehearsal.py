"""Rehearsal assets: the base model's exact architecture at real size, realistic lengths."""

from __future__ import annotations

import inspect
import json
import string
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tokenizers import Tokenizer

from workflow_scripts.bright.stats import BRIGHT_STATS
from workflow_scripts.model.load import load_colbert
from workflow_scripts.model.widen import widen
from workflow_scripts.synthetic.rehearsal import (
    LONG,
    STYLE,
    build_tokenizer,
    lognormal_sigma,
    make_assets,
    make_lexicon,
    parameter_count,
    single_token_units,
    split_tokens,
    write_data,
)

REPO = Path(__file__).resolve().parents[1]
SIZES = {
    "queries_per_split": 6,
    "documents_per_split": 40,
    "train_rows": 48,
    "long_documents_per_split": 2,
    "max_document_tokens": 4096,
    "max_train_query_tokens": 320,
    "max_train_document_tokens": 2560,
}
# mxbai-edge-colbert-v0-32m: ModernBERT (V=50370, h=384, i=576, 10 layers) + Dense 384->768->768->64.
# - embeddings 50370*384 = 19,342,080 (mteb's n_embedding_parameters for the real model);
# - bias-free LayerNorms: after the embeddings, before attention (not in layer 0) and the MLP of
#   each layer, at the end: 384 * (1 + 9 + 10 + 1) = 8,064;
# - per layer Wqkv 3*384*384 + Wo 384*384 + GLU Wi 384*2*576 + Wo 576*384 = 1,253,376 (x10);
# - head 384*768 + 768*768 + 768*64 = 294,912 + 589,824 + 49,152 = 933,888.
EXPECTED_PARAMETERS = 19_342_080 + 8_064 + 10 * 1_253_376 + 933_888  # 32,817,792


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """The generator at reduced data size (the model is always full size): ~20 s on 2 cores."""
    return make_assets(out=tmp_path_factory.mktemp("rehearsal") / "assets", **SIZES)


@pytest.fixture(scope="module")
def tokenizer(assets) -> Tokenizer:
    """The saved tokenizer, read with `tokenizers` alone (independent of PyLate)."""
    return Tokenizer.from_file(str(assets / "base-model" / "tokenizer.json"))


def token_counts(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    return np.array([len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False)])


def test_layout_is_the_demos(assets):
    assert sorted(p.name for p in assets.iterdir()) == ["BRIGHT", "base-model", "bge-reasoner-data", "reasonir-data"]
    assert len(list((assets / "bge-reasoner-data/bge-reasoner-data-0904").glob("*.jsonl"))) == 12
    base = assets / "base-model"
    for name in (
        "modules.json",
        "config.json",
        "config_sentence_transformers.json",
        "sentence_bert_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ):
        assert (base / name).is_file(), name
    for i in (1, 2, 3):
        assert (base / f"{i}_Dense/model.safetensors").is_file() and (base / f"{i}_Dense/config.json").is_file()


def test_base_model_has_the_exact_architecture(assets):
    assert parameter_count() == EXPECTED_PARAMETERS == 32_817_792
    model = load_colbert(assets / "base-model")
    backbone = model[0].auto_model
    config = backbone.config
    assert (
        config.model_type,
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.max_position_embeddings,
        config.local_attention,
        config.global_attn_every_n_layers,
        config.vocab_size,
    ) == ("modernbert", 384, 576, 10, 6, 7999, 128, 3, 50370)
    assert config.layer_types == ["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(10)]
    embeddings = backbone.get_input_embeddings().weight
    assert tuple(embeddings.shape) == (50370, 384) and embeddings.numel() == 19_342_080
    assert sum(p.numel() for p in backbone.parameters()) == EXPECTED_PARAMETERS - 933_888
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMETERS
    heads = [(m.linear.in_features, m.linear.out_features, m.linear.bias, m.use_residual) for m in list(model)[1:]]
    assert heads == [(384, 768, None, False), (768, 768, None, False), (768, 64, None, False)]
    assert all(isinstance(m.activation_function, torch.nn.Identity) for m in list(model)[1:])
    # PyLate's config of the base (pylate-notes.md) and ModernBERT's special-token ids
    assert (
        model.query_length,
        model.document_length,
        model.do_query_expansion,
        model.attend_to_expansion_tokens,
        model.query_prefix,
        model.document_prefix,
        model.query_prefix_id,
        model.document_prefix_id,
    ) == (48, 512, False, False, "[Q] ", "[D] ", 50368, 50369)
    tok = model.tokenizer
    assert len(tok) == 50370 and tok.mask_token_id == tok.pad_token_id == 50284
    assert (tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (50280, 50281, 50282)
    assert model[0].do_lower_case and model.skiplist_words == list(string.punctuation)
    upper, lower = model.tokenize(["Why DO Insects fly"], is_query=True), model.tokenize(["why do insects fly"])
    assert torch.equal(upper["input_ids"], lower["input_ids"])


def test_long_documents_are_not_truncated(assets, tokenizer):
    biology = pq.read_table(assets / "BRIGHT/documents/biology-00000-of-00001.parquet").to_pylist()
    longest = max((r["content"] for r in biology), key=len)
    words = longest.translate(str.maketrans("", "", string.punctuation)).split()  # nothing for the skiplist
    mid, long = " ".join(words[:700]), " ".join(words[:3000])
    n_mid, n_long = token_counts(tokenizer, [mid, long])
    assert 600 < n_mid < 2045 and n_long > 2048
    model = load_colbert(assets / "base-model", document_length=2048)
    vectors = model.encode([mid, long], is_query=False)
    assert [len(v) for v in vectors] == [n_mid + 3, 2048]  # [CLS] [D] ... [SEP], up to 2048 in all
    assert vectors[0].shape[1] == 64
    default = load_colbert(assets / "base-model")  # the base's own document_length
    assert len(default.encode([mid], is_query=False)[0]) == 512


def test_widen_on_the_real_head(assets, tmp_path):
    base = assets / "base-model"
    report = widen(source=base, out_dir=tmp_path / "w", verify_path=tmp_path / "v.json", to=128)
    assert all(report["checks"].values()) and (report["old_dim"], report["new_dim"]) == (64, 128)
    old = load_file(base / "3_Dense/model.safetensors")["linear.weight"]
    new = load_file(tmp_path / "w/3_Dense/model.safetensors")["linear.weight"]
    assert tuple(new.shape) == (128, 768) and torch.equal(new[:64], old)
    model = load_colbert(tmp_path / "w")
    assert len(model) == 4 and model[-1].out_features == 128
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMETERS + 64 * 768


def read_documents(assets: Path, split: str) -> dict[str, str]:
    table = pq.read_table(assets / f"BRIGHT/documents/{split}-00000-of-00001.parquet")
    return dict(zip(table.column("id").to_pylist(), table.column("content").to_pylist()))


def real_token_range(split: str) -> tuple[int, float, int]:
    stats = BRIGHT_STATS[split]
    return split_tokens(stats.document_chars, STYLE.get(split, "prose"))


@pytest.mark.parametrize("split", list(BRIGHT_STATS))
def test_bright_lengths_follow_the_real_split(assets, tokenizer, split):
    docs = pq.read_table(assets / f"BRIGHT/documents/{split}-00000-of-00001.parquet").to_pylist()
    examples = pq.read_table(assets / f"BRIGHT/examples/{split}-00000-of-00001.parquet").to_pylist()
    assert len(docs) == SIZES["documents_per_split"] and len(examples) == SIZES["queries_per_split"]
    lengths = token_counts(tokenizer, [d["content"] for d in docs])
    low, mean, high = real_token_range(split)
    long = int((lengths > LONG).sum())
    if min(high, SIZES["max_document_tokens"]) > LONG:  # the real split has a tail beyond 2048
        assert long >= SIZES["long_documents_per_split"], (split, long)
    else:  # stackoverflow (chunks of <= 4000 characters), pony
        assert long == 0, (split, long)
    assert lengths.max() <= SIZES["max_document_tokens"] + 2  # +2: a first word without its space
    sigma = lognormal_sigma(mean=mean, maximum=high, population=BRIGHT_STATS[split].documents)
    median = mean * np.exp(-(sigma**2) / 2)  # the lognormal fitted to the real split's statistics
    assert median / 2 <= np.median(lengths) <= median * 2 + 2, (split, np.median(lengths), median)
    ids = {d["id"] for d in docs}
    for e in examples:
        assert set(e["gold_ids"]) <= ids and e["gold_ids"]
        assert not set(e["excluded_ids"]) & set(e["gold_ids"])
        assert e["excluded_ids"] == ["N/A"] or set(e["excluded_ids"]) <= ids


def test_training_data_lengths_and_ids(assets, tokenizer):
    vl = pq.read_table(assets / "reasonir-data/vl/train-00000-of-00001.parquet").to_pylist()
    hq = pq.read_table(assets / "reasonir-data/hq/train-00000-of-00001.parquet").to_pylist()
    assert len(vl) == len(hq) == SIZES["train_rows"]
    queries = token_counts(tokenizer, [r["query"][1] for r in vl + hq])
    doc_lengths = token_counts(tokenizer, [r["pos"][0][1] for r in vl] + [r["neg"][0][1] for r in vl + hq])
    assert queries.max() <= SIZES["max_train_query_tokens"] + 2 and (queries > 256).any()
    assert doc_lengths.max() <= SIZES["max_train_document_tokens"] + 2 and np.median(doc_lengths) > 100
    documents_of = {split: read_documents(assets, split) for split in BRIGHT_STATS}  # split -> id -> content
    id2doc = {i: c for docs in documents_of.values() for i, c in docs.items()}
    unresolved = sum(r["pos"][0][1] not in id2doc for r in hq) / len(hq)
    assert 0 < unresolved <= 0.05  # a few missing ids, as upstream; the data stage tolerates 5%
    rows = [json.loads(line) for line in (assets / "bge-reasoner-data/bge-reasoner-data-0904/pony.jsonl").open()]
    texts = set(documents_of["pony"].values())
    assert rows and all(set(r["pos"]) <= texts and set(r["neg"]) <= texts for r in rows)  # BRIGHT texts


def test_bright_passes_the_workflows_checks(assets):
    bright = pytest.importorskip("workflow_scripts.bright.load")
    for split in BRIGHT_STATS:
        examples = bright.load_bright_examples(assets / "BRIGHT", split)
        counts = bright.validate_split(assets / "BRIGHT", split, examples)
        odd = {k: v for k, v in counts.items() if v and k not in ("queries", "documents", "excluded_ids")}
        assert not odd and counts["documents"] == SIZES["documents_per_split"], (split, counts)


def test_data_is_deterministic(tmp_path):
    words = make_lexicon(3000, seed=0)
    units = single_token_units(build_tokenizer(words), words)
    sizes = {**SIZES, "documents_per_split": 16, "train_rows": 24}
    for name in ("a", "b"):
        write_data(tmp_path / name, units=units, sizes=sizes, seed=1)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_config_overlay_matches_the_generator(tmp_path):
    from workflow_scripts.config_files import config_problem

    overlay = yaml.safe_load((REPO / "rehearsal/config.yaml").read_text())
    settings = {k for k in overlay["rehearsal"] if k != "assets_dir"}
    assert settings <= set(inspect.signature(make_assets).parameters)  # the rule passes them as flags
    assert (
        overlay["train"]["query_length"],
        overlay["train"]["document_length"],
        overlay["train"]["mini_batch_size"],
        overlay["evaluate"]["query_length"],
        overlay["evaluate"]["document_length"],
        overlay["evaluate"]["overrides"]["pony"]["query_length"],
    ) == (256, 2048, 32, 256, 2048, 32)
    assets = overlay["rehearsal"]["assets_dir"]
    assert {s["local"] for s in overlay["sources"].values()} == {
        f"{assets}/{d}" for d in ("reasonir-data", "bge-reasoner-data", "BRIGHT", "base-model")
    }

    def merge(base: dict, over: dict) -> dict:
        return {
            **base,
            **{
                k: merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
                for k, v in over.items()
            },
        }

    config = merge(yaml.safe_load((REPO / "config.yaml").read_text()), overlay)
    schema = yaml.safe_load((REPO / "workflow_scripts/config.schema.yaml").read_text())
    if "rehearsal" not in schema["properties"]:  # until the schema declares it: like `demo`, wider
        schema["properties"]["rehearsal"] = {
            "type": "object",
            "required": ["assets_dir"],
            "properties": {"assets_dir": {"type": "string"}},
        }
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema))
    assert config_problem(config, tmp_path / "schema.yaml") is None
