"""Deterministic demo assets: a tiny ModernBERT ColBERT and mini datasets in upstream formats.

Everything the real run downloads has a small stand-in here, laid out exactly like the hub
repository it replaces (``datasets.md`` in the README's references), so the demo runs the
same loaders as the full reproduction:

- ``reasonir-data/{vl,hq}/train-00000-of-00001.parquet`` with ``query: list<str>[2]``,
  ``pos``/``neg``: ``list<list<str>[2]>``; hq positives are BRIGHT document ids.
- ``bge-reasoner-data/bge-reasoner-data-0904/<domain>.jsonl`` rows ``{prompt, query, pos, neg}``.
- ``BRIGHT/{examples,documents}/<split>-00000-of-00001.parquet`` for all 12 splits, with
  ``gold_ids``, ``gold_ids_long`` and ``excluded_ids`` (``["N/A"]`` when empty); every fourth
  query excludes a copy of itself in the corpus (as leetcode and aops queries do), which ranks
  first if kept (the ``card`` protocol keeps it, the BRIGHT protocols remove it). aops and theoremqa_questions
  share one corpus (the same ``documents`` file content), as in BRIGHT.
- ``BRIGHT/long_documents/<split>-...`` for the 8 splits BRIGHT has them for: each long
  document is the page its chunks come from (``topic/gold_0.txt`` and ``topic/gold_1.txt`` are
  chunks of ``topic/gold.txt``, as ``Phototaxis_3.txt`` is of ``Phototaxis.txt``), and
  ``gold_ids_long`` names the gold pages.
- ``BRIGHT/<model>_reason/<split>-...`` for each LLM-reasoning query set (``gpt4_reason`` ...):
  the ``examples`` rows with the query replaced by a "reasoning" text.
- ``base-model/``: a PyLate ColBERT (ModernBERT, hidden 64, 2 layers, one global and one local
  attention layer whose window covers every position; Dense 64->128->128->64, bias-free, like the
  base model's head) with a BPE vocabulary trained by ``tokenizers``; its ``config.json`` is
  transformers' own, written as for the rehearsal's (:mod:`workflow_scripts.synthetic.backbone`).

The data is learnable: each topic owns a handful of made-up keywords; a query uses some of
them, its gold documents use others plus shared domain words, and near-miss documents mix a
few of the topic's keywords into a sibling topic.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..bright.meta import DOMAINS, LONG_SPLITS, REASONING_CONFIGS, SHARED_DOCUMENTS, SPLITS
from ..cli import run_commands
from ..files import atomic_dir
from .backbone import write_colbert

__all__ = ["REASONIR_SCHEMA", "long_document_id", "make_assets", "write_bright"]

EXAMPLES_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("reasoning", pa.string()),
        ("id", pa.string()),
        ("excluded_ids", pa.list_(pa.string())),
        ("gold_ids_long", pa.list_(pa.string())),
        ("gold_ids", pa.list_(pa.string())),
    ]
)
DOCUMENTS_SCHEMA = pa.schema([("id", pa.string()), ("content", pa.string())])
PAIR_LIST = pa.list_(pa.list_(pa.string()))
REASONIR_SCHEMA = pa.schema([("query", pa.list_(pa.string())), ("pos", PAIR_LIST), ("neg", PAIR_LIST)])
# The demo's ModernBERT (the tokenizer gives the vocabulary and special ids). Positions 512 and a
# 1024 window: the sliding layer sees every position, as the full one does (write_base_model).
DEMO_BACKBONE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "max_position_embeddings": 512,
    "global_attn_every_n_layers": 2,
    "local_attention": 1024,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 160000.0,
}
DEMO_HEAD = ((64, 128), (128, 128), (128, 64))  # 1_Dense, 2_Dense, 3_Dense: bias-free, identity
FILLER = "the a of to and in is that for it with as on this how why what can does".split()


def _word(rng: random.Random) -> str:
    syllables = ["ka", "lo", "mi", "tu", "re", "sa", "vi", "no", "de", "pa", "zu", "fe", "gi"]
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))) + rng.choice("nrstlx")


def _sentence(rng: random.Random, words: list[str], n_filler: int) -> str:
    tokens = words + rng.sample(FILLER, k=min(n_filler, len(FILLER)))
    rng.shuffle(tokens)
    return " ".join(tokens)


def _make_split(rng: random.Random, split: str, n_queries: int, n_docs: int) -> dict:
    """Topics, documents and queries of one BRIGHT split (ids like BRIGHT's ``topic/doc_i.txt``)."""
    domain_words = [_word(rng) for _ in range(6)]
    topics = [[_word(rng) for _ in range(8)] for _ in range(n_queries)]
    docs: dict[str, str] = {}
    gold: list[list[str]] = []
    for t, kw in enumerate(topics):
        ids = []
        for j in range(2):
            doc_id = f"{split}_topic{t}/gold_{j}.txt"
            docs[doc_id] = _sentence(rng, rng.sample(kw, 5) + rng.sample(domain_words, 2), 6)
            ids.append(doc_id)
        gold.append(ids)
    while len(docs) < n_docs:  # near misses: a sibling topic plus two of this topic's words
        t = rng.randrange(n_queries)
        other = topics[(t + 1) % n_queries]
        text = rng.sample(other, 4) + rng.sample(topics[t], 2) + rng.sample(domain_words, 2)
        docs[f"{split}_topic{t}/near_{len(docs)}.txt"] = _sentence(rng, text, 6)
    data = {"topics": topics, "docs": docs, "gold": gold, "domain_words": domain_words}
    examples = _examples(rng, split, data, doc_split=split)
    for example in examples:  # the question itself in the corpus (as in leetcode/aops): BRIGHT excludes it
        for duplicate in set(example["excluded_ids"]) - {"N/A"}:
            docs[duplicate] = example["query"]
    return data | {"examples": examples}


def _examples(rng: random.Random, split: str, data: dict, doc_split: str) -> list[dict]:
    """BRIGHT ``examples`` rows of ``split`` over the topics of ``doc_split``'s corpus: every fourth
    excludes its topic's duplicate (a copy of ``doc_split``'s question, ranked first unless removed)."""
    examples = []
    for t, kw in enumerate(data["topics"]):
        duplicate = f"{doc_split}_topic{t}/duplicate.txt"
        examples.append(
            {
                "query": _sentence(rng, rng.sample(kw, 4) + rng.sample(data["domain_words"], 1), 5) + "?",
                "reasoning": f"The question is about {kw[0]} and {kw[1]}.",
                "id": str(t),
                "excluded_ids": [duplicate] if t % 4 == 0 else ["N/A"],
                "gold_ids_long": sorted({long_document_id(g) for g in data["gold"][t]})
                if split in LONG_SPLITS
                else ["N/A"],
                "gold_ids": data["gold"][t],
            }
        )
    return examples


def _shared_split(rng: random.Random, split: str, base: dict, base_split: str) -> dict:
    """A split that ranks another's corpus (theoremqa_questions: aops's documents and ids), own queries."""
    return base | {"examples": _examples(rng, split, base, doc_split=base_split)}


def long_document_id(doc_id: str) -> str:
    """The long document (the page) a BRIGHT chunk id comes from: ``topic/Page_3.txt`` -> ``topic/Page.txt``.

    Parameters
    ----------
    doc_id
        A BRIGHT document (chunk) id, ``<topic>/<name>.txt``; a name without ``_`` is its own page.

    Examples
    --------
    >>> long_document_id("insects/Phototaxis_3.txt"), long_document_id("pony_topic0/duplicate.txt")
    ('insects/Phototaxis.txt', 'pony_topic0/duplicate.txt')
    """
    folder, _, name = doc_id.rpartition("/")
    stem = name.removesuffix(".txt")
    page = stem.rsplit("_", 1)[0] if "_" in stem else stem
    return f"{folder}/{page}.txt" if folder else f"{page}.txt"


def long_documents(docs: dict[str, str]) -> dict[str, str]:
    """The pages of a split: each long document joins its chunks in id order."""
    pages: dict[str, list[str]] = {}
    for doc_id in sorted(docs):
        pages.setdefault(long_document_id(doc_id), []).append(docs[doc_id])
    return {page: "\n\n".join(chunks) for page, chunks in pages.items()}


def reasoning_examples(examples: list[dict], config: str) -> list[dict]:
    """A reasoning query set (``gpt4_reason`` ...): the examples rows, the query replaced by a reasoning text."""
    model = config.removesuffix("_reason")
    return [e | {"query": f"{model} reasons: {e['reasoning']} So the post asks: {e['query']}"} for e in examples]


def _instruction(split: str) -> str:
    return f"Given a {DOMAINS[split]} post, retrieve relevant passages that help answer the post"


def _train_query(rng: random.Random, split: str, data: dict, t: int) -> str:
    return _sentence(rng, rng.sample(data["topics"][t], 3) + rng.sample(data["domain_words"], 1), 4)


def _negative(rng: random.Random, data: dict, t: int) -> str:
    other = data["topics"][(t + rng.randint(1, 3)) % len(data["topics"])]
    return _sentence(rng, rng.sample(other, 4) + rng.sample(data["topics"][t], 1), 5)


def _gold_text(data: dict, t: int, rng: random.Random) -> tuple[str, str]:
    doc_id = rng.choice(data["gold"][t])
    return doc_id, data["docs"][doc_id]


def _write_readme(root: Path, configs: dict[str, dict[str, str]]) -> None:
    """Hub dataset card with ``configs`` metadata, as ``load_dataset`` reads it."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {p}" for s, p in splits.items()]
    (root / "README.md").write_text("\n".join(lines + ["---", "Demo mirror (synthetic).", ""]))


def write_bright(root: Path, splits: dict[str, dict]) -> None:
    """BRIGHT's configs, one parquet file per split: ``examples``, ``documents``, ``long_documents``
    (the splits that have them, built from the chunks' pages) and the reasoning query sets.

    Parameters
    ----------
    root
        The folder laid out like BRIGHT's hub repository (its README's ``configs`` included).
    splits
        Split -> ``{"docs": id -> text, "examples": rows}`` as the generator made them.
    """
    configs: dict[str, dict[str, str]] = {}
    for split, data in splits.items():
        corpora = {"documents": data["docs"]} | (
            {"long_documents": long_documents(data["docs"])} if split in LONG_SPLITS else {}
        )
        for config, docs in corpora.items():
            table = pa.table({"id": list(docs), "content": list(docs.values())}, schema=DOCUMENTS_SCHEMA)
            _write_config(root, configs, config, split, table)
        queries = {"examples": data["examples"]} | {
            c: reasoning_examples(data["examples"], c) for c in REASONING_CONFIGS
        }
        for config, rows in queries.items():
            _write_config(root, configs, config, split, pa.Table.from_pylist(rows, schema=EXAMPLES_SCHEMA))
    _write_readme(root, configs)


def _write_config(root: Path, configs: dict[str, dict[str, str]], config: str, split: str, table: pa.Table) -> None:
    (root / config).mkdir(parents=True, exist_ok=True)
    pq.write_table(table, root / f"{config}/{split}-00000-of-00001.parquet")
    configs.setdefault(config, {})[split] = f"{config}/{split}-*.parquet"


def write_reasonir(root: Path, splits: dict[str, dict], n_rows: int, rng: random.Random) -> None:
    """reasonir-data ``vl`` (text positives) and ``hq`` (BRIGHT-id positives) configs."""
    names = list(splits)
    for config in ("vl", "hq"):
        rows = []
        for i in range(n_rows):
            split = names[i % len(names)]
            data = splits[split]
            t = rng.randrange(len(data["topics"]))
            doc_id, text = _gold_text(data, t, rng)
            pos = [["", doc_id if config == "hq" else text]]
            if config == "hq" and i % 50 == 7:
                pos = [["", f"{split}_missing/{i}.txt"]]  # an id BRIGHT does not have
            rows.append(
                {
                    "query": [_instruction(split), _train_query(rng, split, data, t)],
                    "pos": pos,
                    "neg": [["", _negative(rng, data, t)] for _ in range(2)],
                }
            )
        (root / config).mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pylist(rows, schema=REASONIR_SCHEMA),
            root / f"{config}/train-00000-of-00001.parquet",
        )
    _write_readme(root, {c: {"train": f"{c}/train-*.parquet"} for c in ("vl", "hq")})


def write_bge_reasoner(root: Path, splits: dict[str, dict], n_rows: int, rng: random.Random) -> None:
    """One ``<domain>.jsonl`` per BRIGHT domain, rows ``{prompt, query, pos:[str], neg:[str]}``."""
    folder = root / "bge-reasoner-data-0904"
    folder.mkdir(parents=True)
    for split, data in splits.items():
        with open(folder / f"{split}.jsonl", "w") as handle:
            for _ in range(max(1, n_rows // len(splits))):
                t = rng.randrange(len(data["topics"]))
                row = {
                    "prompt": _instruction(split) + ".",
                    "query": _train_query(rng, split, data, t),
                    "pos": [_gold_text(data, t, rng)[1] for _ in range(2)],
                    "neg": [_negative(rng, data, t) for _ in range(5)],
                }
                handle.write(json.dumps(row) + "\n")
    (root / "README.md").write_text("Demo mirror (synthetic) of bge-reasoner-data.\n")


def write_base_model(root: Path, texts: list[str], seed: int) -> None:
    """A tiny ModernBERT ColBERT in PyLate format with the base model's head shape.

    Its ``config.json`` is transformers' own (:func:`workflow_scripts.synthetic.backbone.write_colbert`),
    so it loads wherever a real ModernBERT checkpoint does. Layer 0 is ``full_attention``,
    layer 1 ``sliding_attention`` (a real ModernBERT has both types; with only one,
    transformers 5.3 saves a ``rope_parameters`` that newer versions refuse), with a window
    of 1024 that covers every pair of the 512 positions and the same rope theta: layer 1
    computes exactly the full attention it would as ``full_attention``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import models as token_models
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    # BPE: its trainer is deterministic (WordPiece's breaks ties differently run to run).
    tok = Tokenizer(token_models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)  # the base is uncased too
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1500, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    ids = {"pad_token_id": fast.pad_token_id, "cls_token_id": cls, "sep_token_id": sep}
    backbone = DEMO_BACKBONE | ids | {"vocab_size": len(fast), "bos_token_id": cls, "eos_token_id": sep}
    colbert = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 32, "document_length": 128}
    write_colbert(
        root,
        backbone=backbone,
        tokenizer=fast,
        head=DEMO_HEAD,
        max_seq_length=511,
        colbert=colbert | {"do_query_expansion": False},
        seed=seed,
    )


def make_assets(
    out_dir: str | Path,
    queries_per_split: int = 16,
    documents_per_split: int = 60,
    train_rows: int = 240,
    seed: int = 0,
) -> Path:
    """Create all demo assets under ``out_dir`` (atomically; same bytes for the same seed).

    Parameters
    ----------
    out_dir
        Output folder: ``BRIGHT/``, ``reasonir-data/``, ``bge-reasoner-data/``, ``base-model/``.
    queries_per_split
        Queries (topics) per BRIGHT split, each with 2 gold documents (theoremqa_questions has aops's).
    documents_per_split
        Documents per split: the gold ones and near misses up to this, plus a copy of every fourth query
        (its excluded id).
    train_rows
        Rows of reasonir ``vl`` and of ``hq``; bge-reasoner gets ``train_rows // 12`` per domain (at least 1).
    seed
        Seed of every random choice and of the model's weights.

    Returns
    -------
    ``out_dir``, as a Path.
    """
    rng = random.Random(seed)
    splits: dict[str, dict] = {}
    base, shared = SHARED_DOCUMENTS
    for s in SPLITS:  # theoremqa_questions ranks aops's corpus, as in BRIGHT
        if s == shared:
            splits[s] = _shared_split(rng, s, splits[base], base)
        else:
            splits[s] = _make_split(rng, s, queries_per_split, documents_per_split)
    with atomic_dir(out_dir) as tmp:
        write_bright(tmp / "BRIGHT", splits)
        write_reasonir(tmp / "reasonir-data", splits, train_rows, rng)
        write_bge_reasoner(tmp / "bge-reasoner-data", splits, train_rows, rng)
        texts = [t for d in splits.values() for t in d["docs"].values()]
        texts += [e["query"] for d in splits.values() for e in d["examples"]]
        texts += [_instruction(s) for s in SPLITS] + [f"Given a {d} post" for d in DOMAINS.values()]
        write_base_model(tmp / "base-model", texts, seed)
    return Path(out_dir)


def main(argv: list[str] | None = None) -> None:
    run_commands({"make": make_assets}, argv)


if __name__ == "__main__":
    main()
