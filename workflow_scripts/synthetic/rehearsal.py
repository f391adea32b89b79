"""Rehearsal assets: the base model's real architecture at real size, and data of realistic lengths.

The demo (:mod:`workflow_scripts.synthetic.demo`) proves the DAG on toys: hidden 64, 128-token documents.
This module makes the stand-ins a preflight needs to meet the *real* shapes before any hub
download (issue #13), laid out exactly like the demo's (``base-model/``, ``reasonir-data/``,
``bge-reasoner-data/bge-reasoner-data-0904/``, ``BRIGHT/``) so the same ``sources.*.local``
config shape points at them:

- ``base-model/``: a random-weight PyLate ColBERT with exactly the architecture of
  ``mixedbread-ai/mxbai-edge-colbert-v0-32m`` (ModernBERT / Ettin-32m: hidden 384,
  intermediate 576, 10 layers, 6 heads, global attention every 3rd layer, 128-token local
  window, 7999 positions; vocabulary 50,370 with ``[Q] ``/``[D] `` at 50368/50369; Dense
  384->768->768->64 bias-free; query_length 48, document_length 512, no query expansion;
  32,817,792 parameters, 19,342,080 of them embeddings). Its byte-level BPE is trained on
  generated text in about a second and laid out with the real special-token ids.
- BRIGHT ``examples``/``documents`` for the 12 splits whose token lengths follow each real
  split's spread (:data:`workflow_scripts.bright.stats.BRIGHT_STATS`: min/mean/max characters from mteb's descriptive
  statistics), long tails beyond 2048 tokens included where the real split has them.
- reasonir ``vl``/``hq`` and bge-reasoner jsonl rows with queries up to about 256 tokens and
  documents up to about 2048 (a little beyond, so truncation is exercised).

Every text is built from units the tokenizer encodes as exactly one token (words and
symbols, each preceded by a space), so a text of ``n`` units is ``n`` tokens, give or take
its first word (which has no leading space). Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import string
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..bright.meta import DOMAINS, LONG_SPLITS, SPLITS
from ..bright.stats import BRIGHT_STATS
from ..errors import UserError
from ..files import atomic_dir
from .backbone import write_colbert
from .demo import REASONIR_SCHEMA, write_bright

__all__ = [
    "COLBERT_CONFIG",
    "ETTIN_32M",
    "HEAD",
    "VOCAB_SIZE",
    "split_tokens",
    "Units",
    "build_tokenizer",
    "lognormal_sigma",
    "make_assets",
    "make_lexicon",
    "parameter_count",
    "sample_lengths",
    "single_token_units",
    "write_base_model",
    "write_bge_reasoner",
    "write_data",
    "write_reasonir",
]

# ----------------------------------------------------------------------------- the base model
# ModernBERT config of jhu-clsp/ettin-encoder-32m as mxbai-edge-colbert-v0-32m ships it (its
# tokenizer is ModernBERT's: 50368 entries; PyLate then adds [Q] and [D]). pylate-notes.md
# gives hidden 384, 10 layers, 6 heads, 7999 positions, pad/mask 50284 for PyLate, [Q] 50368,
# [D] 50369 and 19,342,080 embedding parameters; intermediate 576 and the attention pattern are
# Ettin's. ASSUMED (not in the notes, no effect on shapes): both rope thetas 160000 (Ettin's
# long-context setting), ModernBERT's other defaults (gelu GLU, no biases, norm_eps 1e-5).
ETTIN_32M: dict[str, Any] = {
    "vocab_size": 50368,
    "hidden_size": 384,
    "intermediate_size": 576,
    "num_hidden_layers": 10,
    "num_attention_heads": 6,
    "max_position_embeddings": 7999,
    "global_attn_every_n_layers": 3,
    "local_attention": 128,
    "global_rope_theta": 160000.0,
    "local_rope_theta": 160000.0,
    "hidden_activation": "gelu",
    "norm_eps": 1e-5,
    "norm_bias": False,
    "attention_bias": False,
    "mlp_bias": False,
    "pad_token_id": 50283,
    "cls_token_id": 50281,
    "sep_token_id": 50282,
    "bos_token_id": 50281,
    "eos_token_id": 50282,
}
VOCAB_SIZE = 50370  # ModernBERT's 50368 + "[Q] " (50368) + "[D] " (50369), added by PyLate
HEAD = ((384, 768), (768, 768), (768, 64))  # 1_Dense, 2_Dense, 3_Dense: bias-free, identity
# config_sentence_transformers.json of the base (pylate-notes.md); skiplist = string.punctuation.
COLBERT_CONFIG: dict[str, Any] = {
    "query_prefix": "[Q] ",
    "document_prefix": "[D] ",
    "query_length": 48,
    "document_length": 512,
    "do_query_expansion": False,
    "attend_to_expansion_tokens": False,
    "skiplist_words": list(string.punctuation),
}
MAX_SEQ_LENGTH = 511  # sentence_bert_config.json: document_length - 1 (mteb: max_tokens 511)
MODEL_MAX_LENGTH = 8192  # ASSUMED: ModernBERT's tokenizer_config value (Ettin reuses it)

# ModernBERT's special-token layout (OLMo BPE + BERT specials + 83 unused). ASSUMED from
# ModernBERT's tokenizer.json: ids 0/1 and 50277..50367; the real one also has 23 whitespace-run
# tokens at 50254..50276, which here are ordinary BPE entries.
HEAD_SPECIALS = ["|||IP_ADDRESS|||", "<|padding|>"]  # ids 0, 1
TAIL_SPECIALS: list[tuple[str, bool]] = [  # (content, special) from id 50277 on
    ("|||EMAIL_ADDRESS|||", False),
    ("|||PHONE_NUMBER|||", False),
    ("<|endoftext|>", True),
    ("[UNK]", True),
    ("[CLS]", True),
    ("[SEP]", True),
    ("[PAD]", True),
    ("[MASK]", True),
] + [(f"[unused{i}]", False) for i in range(83)]
BPE_SIZE = ETTIN_32M["vocab_size"] - len(TAIL_SPECIALS)  # 50277 entries in the BPE model itself


def parameter_count(
    *,
    vocab_size: int = VOCAB_SIZE,
    hidden: int = ETTIN_32M["hidden_size"],
    intermediate: int = ETTIN_32M["intermediate_size"],
    layers: int = ETTIN_32M["num_hidden_layers"],
    head: tuple[tuple[int, int], ...] = HEAD,
) -> int:
    """Parameters of a bias-free ModernBERT + Dense head, from the architecture alone.

    Embeddings ``V*h`` + LayerNorm ``h``; per layer Wqkv ``3h*h``, Wo ``h*h``, GLU Wi
    ``2i*h``, Wo ``i*h``; an attention LayerNorm in every layer but the first, an MLP
    LayerNorm in each, a final LayerNorm (norms without bias); the Dense weights.

    Parameters
    ----------
    vocab_size
        Rows of the embedding matrix (default: ModernBERT's 50,368 + PyLate's ``[Q] ``/``[D] ``).
    hidden, intermediate, layers
        ModernBERT's hidden size, MLP width (of each GLU half) and layer count (defaults: :data:`ETTIN_32M`).
    head
        ``(in, out)`` of each bias-free Dense layer.

    Examples
    --------
    >>> parameter_count()
    32817792
    >>> parameter_count() - parameter_count(vocab_size=0)  # the embedding matrix, 50370 * 384
    19342080
    """
    embeddings = vocab_size * hidden + hidden
    per_layer = 3 * hidden * hidden + hidden * hidden + 2 * intermediate * hidden + intermediate * hidden
    norms = (2 * layers - 1) * hidden + hidden
    return embeddings + layers * per_layer + norms + sum(i * o for i, o in head)


# ----------------------------------------------------------------------------- text units
FILLER = (
    "the a of to and in is that for it with as on this how why what can does are be by from at or an "
    "not but if which when we you they there their has have was were will would should also more than "
    "into only other some such these then so one two may each between about"
).split()
CODE_SYMBOLS = "( ) = : [ ] { } ; , . + - * / < > == != return def if else for in while self int str None True".split()
MATH_SYMBOLS = "$ ( ) = + - ^ _ { } \\frac \\sqrt \\sum \\int x y z n k f 0 1 2 3 4 5 6 7 8 9 , .".split()
STYLE = {
    "stackoverflow": "code",
    "leetcode": "code",
    "pony": "code",
    "aops": "math",
    "theoremqa_questions": "math",
    "theoremqa_theorems": "math",
}  # others: prose
# ASSUMED characters per token of the real (ModernBERT) tokenizer, by kind of text.
CHARS_PER_TOKEN = {"prose": 4.0, "code": 3.5, "math": 3.0}


def make_lexicon(n_words: int, seed: int) -> list[str]:
    """``n_words`` distinct made-up lower-case words (2-4 syllables), sorted.

    Parameters
    ----------
    n_words
        How many words.
    seed
        Seed of the draw: the same seed gives the same words.

    Examples
    --------
    >>> words = make_lexicon(100, seed=0)
    >>> len(words), len(set(words)), words == make_lexicon(100, seed=0)
    (100, 100, True)
    """
    rng = random.Random(f"{seed}-lexicon")
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"] + list("aeiou")
    words: set[str] = set()
    while len(words) < n_words:
        stem = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        words.add(stem + rng.choice(["", "", "n", "r", "s", "t", "l", "x"]))
    return sorted(words)


def build_tokenizer(words: list[str]):
    """A byte-level BPE on ``words`` with ModernBERT's 50,368-entry layout, as a fast tokenizer.

    Lower-cases in its normalizer (the real one is cased and relies on the Transformer's
    ``do_lower_case``; here direct tokenizer use, e.g. shard length statistics, sees what the
    model sees). Special ids: ``[UNK]`` 50280, ``[CLS]`` 50281, ``[SEP]`` 50282, ``[PAD]``
    50283, ``[MASK]`` 50284; PyLate adds ``[Q] ``/``[D] `` at 50368/50369 when it loads it.

    Parameters
    ----------
    words
        The made-up words (:func:`make_lexicon`) the BPE is trained on, with the filler words, symbols,
        domains and instructions.

    Examples
    --------
    >>> tok = build_tokenizer(make_lexicon(2000, seed=0))
    >>> len(tok), tok.mask_token_id, tok.convert_ids_to_tokens([0, 1, 50279, 50281, 50367])
    (50368, 50284, ['|||IP_ADDRESS|||', '<|padding|>', '<|endoftext|>', '[CLS]', '[unused82]'])
    >>> tok("Why IS it so?")["input_ids"] == tok("why is it so?")["input_ids"]
    True
    """
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers import models as token_models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(token_models.BPE())
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE,
        special_tokens=HEAD_SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_tokenizer_corpus(words), trainer)  # deterministic (BPE, not WordPiece)
    tok = _pad_bpe(tok, BPE_SIZE)
    for content, special in TAIL_SPECIALS:  # appended in order: ids 50277..50367
        token = AddedToken(content, special=special, normalized=False)
        (tok.add_special_tokens if special else tok.add_tokens)([token])
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_max_length=MODEL_MAX_LENGTH,
    )
    expected = {"[UNK]": 50280, "[CLS]": 50281, "[SEP]": 50282, "[PAD]": 50283, "[MASK]": 50284, "[unused82]": 50367}
    assert {t: fast.convert_tokens_to_ids(t) for t in expected} == expected and len(fast) == 50368
    return fast


def _tokenizer_corpus(words: list[str]) -> list[str]:
    """Training lines: every word once, and the frequent units (function words, symbols) often."""
    frequent = " ".join(FILLER + CODE_SYMBOLS + MATH_SYMBOLS + [d.lower() for d in DOMAINS.values()])
    lines = [" ".join(words[i : i + 64]) for i in range(0, len(words), 64)]
    return lines + [_instruction(s) for s in SPLITS] + [frequent] * 200


def _pad_bpe(tok, size: int):
    """Pad the BPE model's vocabulary with unreachable filler entries up to ``size`` ids."""
    from tokenizers import Tokenizer

    if tok.get_vocab_size() >= size:
        return tok
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    for i in range(size - len(vocab)):
        vocab[f"<|filler{i}|>"] = len(vocab)
    return Tokenizer.from_str(json.dumps(data))


@dataclass(frozen=True)
class Units:
    """Single-token text units by kind: ``words`` (made-up), ``filler``, ``code``, ``math``."""

    words: tuple[str, ...]
    filler: tuple[str, ...]
    code: tuple[str, ...]
    math: tuple[str, ...]

    def pool(self, style: str) -> tuple[list[str], list[float]]:
        """(units, cumulative weights) for ``random.choices`` in one style of text."""
        return self._pools[style]

    @cached_property
    def _pools(self) -> dict[str, tuple[list[str], list[float]]]:
        mixes = {
            "prose": [(self.filler, 0.45), (self.words, 0.55)],
            "code": [(self.filler, 0.2), (self.code, 0.35), (self.words, 0.45)],
            "math": [(self.filler, 0.25), (self.math, 0.35), (self.words, 0.4)],
        }
        pools = {}
        for style, groups in mixes.items():
            units = [unit for group, _ in groups for unit in group]
            weights = [weight / len(group) for group, weight in groups for _ in group]
            pools[style] = (units, list(itertools.accumulate(weights)))
        return pools


def single_token_units(tokenizer, words: list[str]) -> Units:
    """The words (of at most 6 letters) and symbols that ``" " + unit`` encodes as one token.

    LaTeX commands (a backslash, then letters) take two and are left out.

    Parameters
    ----------
    tokenizer
        :func:`build_tokenizer`'s tokenizer.
    words
        Candidate words (:func:`make_lexicon`); those longer than 6 letters are left out.

    Returns
    -------
    A :class:`Units` of the kept ``words``, ``filler``, ``code`` and ``math`` units.

    Examples
    --------
    >>> words = make_lexicon(2000, seed=0)
    >>> tokenizer = build_tokenizer(words)
    >>> units = single_token_units(tokenizer, words)
    >>> len(units.words), "the" in units.filler, "(" in units.code, len(units.math) < len(MATH_SYMBOLS)
    (912, True, True, True)
    >>> text = " ".join(units.words[:50] + units.code)
    >>> len(tokenizer(" " + text, add_special_tokens=False)["input_ids"]) == 50 + len(units.code)
    True
    """

    def keep(candidates: list[str]) -> tuple[str, ...]:
        ids = tokenizer([" " + c for c in candidates], add_special_tokens=False)["input_ids"]
        return tuple(c for c, i in zip(candidates, ids) if len(i) == 1)

    short = [w for w in words if len(w) <= 6]  # running text near the real ~4 characters per token
    return Units(words=keep(short), filler=keep(FILLER), code=keep(CODE_SYMBOLS), math=keep(MATH_SYMBOLS))


def _compose(rng: random.Random, n: int, pool: tuple[list[str], list[float]], keywords: list[str], style: str) -> str:
    """A text of ``n`` single-token units: sentences ending in '.' (';' in code), keywords mixed in."""
    units = rng.choices(pool[0], cum_weights=pool[1], k=n)
    for _ in range(min(n, max(1, n // 25)) if keywords else 0):
        units[rng.randrange(n)] = rng.choice(keywords)
    end = ";" if style == "code" else "."
    sentences, i = [], 0
    while i < n:
        chunk = units[i : i + rng.randint(6, 24)]
        i += len(chunk)
        if style == "prose":
            chunk[0] = chunk[0].capitalize()
        # the closing mark replaces the last unit and attaches to the one before: still n tokens
        sentences.append(" ".join(chunk[:-1]) + end if len(chunk) > 1 else chunk[0])
    return " ".join(sentences)


# ----------------------------------------------------------------------------- length model
def split_tokens(chars: tuple[int, float, int], style: str) -> tuple[int, float, int]:
    """(min, mean, max) characters in tokens at the style's assumed characters per token.

    Parameters
    ----------
    chars
        (min, mean, max) characters of a split's texts (:data:`~workflow_scripts.bright.stats.BRIGHT_STATS`).
    style
        ``prose``, ``code`` or ``math`` (:data:`CHARS_PER_TOKEN`).

    Returns
    -------
    (min, mean, max) tokens: min and max rounded and at least 1, the mean not rounded.
    """
    cpt = CHARS_PER_TOKEN[style]
    return max(1, round(chars[0] / cpt)), chars[1] / cpt, max(1, round(chars[2] / cpt))


SHARED_CORPUS = {"theoremqa_questions": "aops"}
EXCLUDING_SPLITS = {"leetcode", "aops", "theoremqa_questions"}  # ASSUMED: where BRIGHT sets excluded_ids
LONG_DOCUMENT_SPLITS = LONG_SPLITS  # StackExchange 7 + pony have long_documents: gold_ids_long set
LONG = 2048  # the real document_length: the tail that must not be truncated to 512


def lognormal_sigma(*, mean: float, maximum: float, population: int) -> float:
    """Sigma of the lognormal with this mean whose expected maximum of ``population`` is ``maximum``.

    Solves ``log(maximum / mean) = sigma * z - sigma**2 / 2`` with ``z`` the ``1 - 1/population``
    normal quantile (the smaller root; ``z`` itself when the maximum is beyond reach).

    Parameters
    ----------
    mean
        The mean length.
    maximum
        The longest length, in ``mean``'s unit; at most ``mean`` gives a sigma of about 0.
    population
        Texts in the real split: the maximum is taken as the ``1 - 1/population`` quantile.

    Examples
    --------
    >>> round(lognormal_sigma(mean=82.3, maximum=7782, population=57359), 2)  # biology, tokens
    1.3
    """
    z = NormalDist().inv_cdf(1 - 1 / max(population, 2))
    ratio = math.log(max(maximum, mean * (1 + 1e-9)) / mean)
    return z - math.sqrt(max(z * z - 2 * ratio, 0.0))


def sample_lengths(
    *,
    n: int,
    minimum: int,
    mean: float,
    maximum: int,
    population: int,
    long_count: int = 0,
    cap: int | None = None,
    rng: random.Random | None = None,
) -> list[int]:
    """``n`` lengths spread like the real split: lognormal quantiles, clipped, with a forced tail.

    The body is the ``(i + 0.5) / n`` quantiles of :func:`lognormal_sigma`'s fit, clipped to
    ``[minimum, min(maximum, cap)]``. If that range reaches beyond :data:`LONG` (2048) tokens,
    at least ``long_count`` lengths lie there (the longest are replaced by quantiles of the
    distribution's own tail): a reduced sample of a split with a tail keeps its tail.
    Shuffled with ``rng`` when given.

    Parameters
    ----------
    n
        How many lengths.
    minimum, mean, maximum, population
        The real split's lengths (tokens) and its size: the lognormal fit and the clip.
    long_count
        Lengths forced beyond :data:`LONG` when the clip range reaches there.
    cap
        A clip below ``maximum``; None: ``maximum``.
    rng
        Shuffles the lengths; None leaves them in quantile order.

    Examples
    --------
    >>> lengths = sample_lengths(n=100, minimum=1, mean=82.3, maximum=7782, population=57359, long_count=2)
    >>> len(lengths), sum(x > 2048 for x in lengths), max(lengths) <= 7782, sorted(lengths)[50]
    (100, 2, True, 36)
    >>> # stackoverflow: its real chunks stop at 4000 characters (1143 tokens): no tail to force
    >>> max(sample_lengths(n=100, minimum=1, mean=490, maximum=1143, population=107081, long_count=2))
    809
    """
    sigma = lognormal_sigma(mean=mean, maximum=maximum, population=population)
    dist = NormalDist(math.log(mean) - sigma**2 / 2, max(sigma, 1e-6))
    top = maximum if cap is None else min(maximum, cap)

    def length(u: float, low: int) -> int:
        return min(max(round(math.exp(dist.inv_cdf(min(u, 1 - 1e-12)))), low), top)

    lengths = [length((i + 0.5) / n, minimum) for i in range(n)]
    need = min(long_count, n) - sum(x > LONG for x in lengths)
    if top > LONG and need > 0:
        p = dist.cdf(math.log(LONG + 1))
        tail = [length(p + (1 - p) * (j + 0.5) / need, LONG + 1) for j in range(need)]
        short = sorted(x for x in lengths if x <= LONG)  # the longest of these make room
        lengths = short[: len(short) - need] + [x for x in lengths if x > LONG] + tail
    if rng is not None:
        rng.shuffle(lengths)
    return lengths


# ----------------------------------------------------------------------------- BRIGHT
def _instruction(split: str) -> str:
    return f"Given a {DOMAINS[split]} post, retrieve relevant passages that help answer the post"


def _make_split(rng: random.Random, split: str, units: Units, sizes: dict[str, int]) -> dict[str, Any]:
    """Topics, documents (realistic lengths) and examples of one BRIGHT split."""
    stats, style = BRIGHT_STATS[split], STYLE.get(split, "prose")
    n_q, n_docs = sizes["queries_per_split"], sizes["documents_per_split"]
    pool = units.pool(style)
    topics = [rng.sample(units.words, 8) for _ in range(n_q)]
    budget = max(1, (n_docs // 2) // n_q)  # reduced size: gold counts capped so near misses remain
    gold_counts = [min(budget, max(1, round(stats.gold_per_query * rng.uniform(0.5, 1.5)))) for _ in range(n_q)]
    d_min, d_mean, d_max = split_tokens(stats.document_chars, style)
    lengths = sample_lengths(
        n=n_docs,
        minimum=d_min,
        mean=d_mean,
        maximum=d_max,
        population=stats.documents,
        long_count=sizes["long_documents_per_split"],
        cap=sizes["max_document_tokens"],
        rng=rng,
    )
    docs: dict[str, str] = {}
    gold: list[list[str]] = [[] for _ in range(n_q)]
    near: list[list[str]] = [[] for _ in range(n_q)]
    g = sum(gold_counts)
    for i, n_tokens in enumerate(lengths):
        t = _owner(i, gold_counts) if i < g else (i - g) % n_q
        keywords = topics[t] if i < g else topics[(t + 1) % n_q] + topics[t][:2]  # near miss: a sibling
        doc_id = f"{split}_topic{t}/page{i}_{i % 3}.txt"
        (gold if i < g else near)[t].append(doc_id)
        docs[doc_id] = _compose(rng, n_tokens, pool, keywords, style)
    examples = _examples(rng, split, topics, gold, near, pool, style)
    return {"topics": topics, "docs": docs, "gold": gold, "near": near, "examples": examples}


def _owner(i: int, counts: list[int]) -> int:
    """The topic whose gold block contains position ``i`` (blocks of ``counts`` in order)."""
    for t, count in enumerate(counts):
        if i < count:
            return t
        i -= count
    raise IndexError(i)


def _examples(
    rng: random.Random,
    split: str,
    topics: list[list[str]],
    gold: list[list[str]],
    near: list[list[str]],
    pool: tuple[list[str], list[float]],
    style: str,
) -> list[dict[str, Any]]:
    """BRIGHT ``examples`` rows; queries as long as the split's real ones."""
    stats = BRIGHT_STATS[split]
    q_min, q_mean, q_max = split_tokens(stats.query_chars, style)
    lengths = sample_lengths(
        n=len(topics), minimum=q_min, mean=q_mean, maximum=q_max, population=stats.queries, rng=rng
    )
    rows = []
    for t, n_tokens in enumerate(lengths):
        excluded = [near[t][0]] if split in EXCLUDING_SPLITS and t % 4 == 0 and near[t] else ["N/A"]
        long_ids = sorted({g.rsplit("_", 1)[0] + ".txt" for g in gold[t]}) if split in LONG_DOCUMENT_SPLITS else []
        rows.append(
            {
                "query": _compose(rng, n_tokens, pool, topics[t], style),
                "reasoning": f"The question is about {topics[t][0]} and {topics[t][1]}.",
                "id": str(t),
                "excluded_ids": excluded,
                "gold_ids_long": long_ids or ["N/A"],
                "gold_ids": gold[t],
            }
        )
    return rows


def _shared_split(rng: random.Random, split: str, base: dict[str, Any], units: Units) -> dict[str, Any]:
    """A split that reuses another's corpus (theoremqa_questions: aops's documents and ids)."""
    style = STYLE.get(split, "prose")
    examples = _examples(rng, split, base["topics"], base["gold"], base["near"], units.pool(style), style)
    return {**base, "examples": examples}


# ----------------------------------------------------------------------------- training data
TRAIN_QUERY_MEDIAN, TRAIN_QUERY_SIGMA = 96, 0.7  # ASSUMED: ~8% of queries beyond 256 tokens
TRAIN_DOC_MEDIAN, TRAIN_DOC_SIGMA = 300, 0.9  # ASSUMED: ~1.6% of documents beyond 2048 tokens


def _train_length(rng: random.Random, median: int, sigma: float, low: int, high: int) -> int:
    return min(max(round(rng.lognormvariate(math.log(median), sigma)), low), high)


def _train_text(rng: random.Random, kind: str, keywords: list[str], units: Units, sizes: dict[str, int]) -> str:
    """A training query or document of the assumed length distribution, in prose."""
    if kind == "query":
        n = _train_length(rng, TRAIN_QUERY_MEDIAN, TRAIN_QUERY_SIGMA, 8, sizes["max_train_query_tokens"])
    else:
        n = _train_length(rng, TRAIN_DOC_MEDIAN, TRAIN_DOC_SIGMA, 16, sizes["max_train_document_tokens"])
    return _compose(rng, n, units.pool("prose"), keywords, "prose")


def _dataset_card(root: Path, configs: dict[str, dict[str, str]], note: str) -> None:
    """Hub dataset card with ``configs`` metadata, as ``load_dataset`` (and ``sources.cards``) read it."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {p}" for s, p in splits.items()]
    (root / "README.md").write_text("\n".join(lines + ["---", note, ""]))


def write_reasonir(root: Path, splits: dict[str, dict], units: Units, sizes: dict[str, int], seed: int) -> None:
    """reasonir-data ``vl`` (text positives) and ``hq`` (BRIGHT-id positives), ``train_rows`` each.

    Rows ``{query: [instruction, text], pos: [["", text|id]], neg: [["", text]]}``
    (:data:`workflow_scripts.synthetic.demo.REASONIR_SCHEMA`); about 2% of hq ids are missing from BRIGHT.

    Parameters
    ----------
    root
        The ``reasonir-data`` folder (``vl/``, ``hq/`` and ``README.md`` are written in it).
    splits
        The BRIGHT splits made (:func:`write_data`): their ``topics`` and ``gold`` ids.
    units
        The single-token units texts are made of (:func:`single_token_units`).
    sizes
        :func:`make_assets`'s sizes: ``train_rows`` and the training texts' caps.
    seed
        Seed of the rows (one stream per config).
    """
    names = list(splits)
    for config in ("vl", "hq"):
        rng = random.Random(f"{seed}-reasonir-{config}")
        rows = []
        for i in range(sizes["train_rows"]):
            split = names[i % len(names)]
            data = splits[split]
            t = rng.randrange(len(data["topics"]))
            kw, sibling = data["topics"][t], data["topics"][(t + 1) % len(data["topics"])]
            if config == "hq":
                doc_id = rng.choice(data["gold"][t])
                pos = f"{split}_missing/{i}.txt" if i % 50 == 7 else doc_id
            else:
                pos = _train_text(rng, "document", kw, units, sizes)
            rows.append(
                {
                    "query": [_instruction(split), _train_text(rng, "query", kw, units, sizes)],
                    "pos": [["", pos]],
                    "neg": [["", _train_text(rng, "document", sibling + kw[:1], units, sizes)]],
                }
            )
        (root / config).mkdir(parents=True)
        table = pa.Table.from_pylist(rows, schema=REASONIR_SCHEMA)
        pq.write_table(table, root / f"{config}/train-00000-of-00001.parquet")
    _dataset_card(root, {c: {"train": f"{c}/train-*.parquet"} for c in ("vl", "hq")}, "Rehearsal mirror (synthetic).")


def write_bge_reasoner(root: Path, splits: dict[str, dict], units: Units, sizes: dict[str, int], seed: int) -> None:
    """``bge-reasoner-data-0904/<domain>.jsonl``: rows ``{prompt, query, pos: [text], neg: [text]}``.

    Positives (up to 2) and negatives (5) are BRIGHT document texts of that domain, as upstream.

    Parameters
    ----------
    root
        The ``bge-reasoner-data`` folder.
    splits
        The BRIGHT splits made (:func:`write_data`): their ``topics``, ``docs``, ``gold`` and ``near``.
    units
        The single-token units texts are made of (:func:`single_token_units`).
    sizes
        :func:`make_assets`'s sizes: ``train_rows`` (``// 12`` rows per domain, at least 1) and
        ``max_train_query_tokens``.
    seed
        Seed of the rows (one stream per domain).
    """
    folder = root / "bge-reasoner-data-0904"
    folder.mkdir(parents=True)
    for split, data in splits.items():
        rng = random.Random(f"{seed}-bge-{split}")
        n_topics = len(data["topics"])
        with open(folder / f"{split}.jsonl", "w") as handle:
            for _ in range(max(1, sizes["train_rows"] // len(splits))):
                t = rng.randrange(n_topics)
                others = [d for u in range(n_topics) if u != t for d in data["near"][u] + data["gold"][u]]
                row = {
                    "prompt": _instruction(split) + ".",
                    "query": _train_text(rng, "query", data["topics"][t], units, sizes),
                    "pos": [data["docs"][d] for d in data["gold"][t][:2]],
                    "neg": [data["docs"][d] for d in rng.sample(others, min(5, len(others)))],
                }
                handle.write(json.dumps(row) + "\n")
    (root / "README.md").write_text("Rehearsal mirror (synthetic) of bge-reasoner-data.\n")


def write_data(out: Path, *, units: Units, sizes: dict[str, int], seed: int) -> dict[str, dict]:
    """``BRIGHT/``, ``reasonir-data/`` and ``bge-reasoner-data/`` under ``out``; the splits made.

    ``sizes`` holds :func:`make_assets`'s size parameters.

    Parameters
    ----------
    out
        The folder to write into.
    units
        The single-token units texts are made of (:func:`single_token_units`).
    sizes
        :func:`make_assets`'s sizes (above); too small ones raise UserError.
    seed
        Seed of every split and row.

    Returns
    -------
    Per BRIGHT split, in :data:`~workflow_scripts.bright.meta.SPLITS`' order: ``topics``, ``docs`` (id -> text), ``gold``, ``near`` and
    ``examples``; theoremqa_questions shares aops's corpus.

    Examples
    --------
    >>> import tempfile
    >>> words = make_lexicon(3000, seed=0)
    >>> units = single_token_units(build_tokenizer(words), words)
    >>> sizes = dict(queries_per_split=2, documents_per_split=12, train_rows=24, long_documents_per_split=1,
    ...              max_document_tokens=2200, max_train_query_tokens=320, max_train_document_tokens=2560)
    >>> out = Path(tempfile.mkdtemp())
    >>> splits = write_data(out, units=units, sizes=sizes, seed=0)
    >>> sorted(p.name for p in out.iterdir())
    ['BRIGHT', 'bge-reasoner-data', 'reasonir-data']
    >>> [len(splits["biology"][k]) for k in ("docs", "examples")]
    [12, 2]
    >>> splits["theoremqa_questions"]["docs"] is splits["aops"]["docs"]  # one shared corpus
    True
    """
    _check_sizes(sizes)
    splits: dict[str, dict] = {}
    for split in SPLITS:
        rng = random.Random(f"{seed}-bright-{split}")
        if split in SHARED_CORPUS:
            continue
        splits[split] = _make_split(rng, split, units, sizes)
    for split, base in SHARED_CORPUS.items():
        splits[split] = _shared_split(random.Random(f"{seed}-bright-{split}"), split, splits[base], units)
    splits = {s: splits[s] for s in SPLITS}
    write_bright(out / "BRIGHT", splits)
    write_reasonir(out / "reasonir-data", splits, units, sizes, seed)
    write_bge_reasoner(out / "bge-reasoner-data", splits, units, sizes, seed)
    return splits


def _check_sizes(sizes: dict[str, int]) -> None:
    """Refuse sizes the generator cannot honour, naming the setting.

    Examples
    --------
    >>> _check_sizes({"queries_per_split": 20, "documents_per_split": 30, "train_rows": 1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    workflow_scripts.errors.UserError: rehearsal: documents_per_split=30 must be at least 2 * queries_per_split=40 ...
    """
    for key, value in sizes.items():
        if value < (0 if key == "long_documents_per_split" else 1):
            raise UserError(f"rehearsal: {key}={value} must be positive")
    if sizes["documents_per_split"] < 2 * sizes["queries_per_split"]:
        raise UserError(
            f"rehearsal: documents_per_split={sizes['documents_per_split']} must be at least "
            f"2 * queries_per_split={2 * sizes['queries_per_split']} (gold documents and near misses for every query)"
        )


# ----------------------------------------------------------------------------- the model
def write_base_model(root: Path, tokenizer, seed: int) -> None:
    """The random-weight ColBERT of :data:`ETTIN_32M` + :data:`HEAD` in PyLate's save layout.

    Built like the real one: a ModernBERT with ModernBERT's 50,368-entry tokenizer, wrapped by
    PyLate, which adds ``[Q] ``/``[D] `` (50368/50369) and resizes the embeddings to 50,370.
    The writer is the demo's (:func:`workflow_scripts.synthetic.backbone.write_colbert`): transformers
    writes ``config.json``.

    Parameters
    ----------
    root
        The model folder to write.
    tokenizer
        :func:`build_tokenizer`'s tokenizer (ModernBERT's layout).
    seed
        Seed of the random weights.
    """
    write_colbert(
        root,
        backbone=ETTIN_32M,
        tokenizer=tokenizer,
        head=HEAD,
        max_seq_length=MAX_SEQ_LENGTH,
        colbert=COLBERT_CONFIG,
        seed=seed,
    )


# ----------------------------------------------------------------------------- entry point
def make_assets(
    *,
    out: str | Path,
    queries_per_split: int = 20,
    documents_per_split: int = 250,
    train_rows: int = 480,
    long_documents_per_split: int = 2,
    max_document_tokens: int = 8192,
    max_train_query_tokens: int = 320,
    max_train_document_tokens: int = 2560,
    seed: int = 0,
) -> Path:
    """Create the rehearsal assets under ``out`` (atomically; same bytes for the same seed).

    Parameters
    ----------
    out
        Output folder: ``base-model/``, ``reasonir-data/``, ``bge-reasoner-data/``, ``BRIGHT/``.
    queries_per_split, documents_per_split
        BRIGHT examples and documents per split (aops and theoremqa_questions share theirs).
    train_rows
        Rows of reasonir ``vl`` and of ``hq``; bge-reasoner gets ``train_rows // 12`` per domain.
    long_documents_per_split
        At least this many documents beyond 2048 tokens in each split whose real maximum is
        beyond 2048 (not in stackoverflow, whose chunks stop at 4000 characters, nor in pony).
    max_document_tokens
        Cap on BRIGHT document and query lengths (the real tails reach ~58k tokens).
    max_train_query_tokens, max_train_document_tokens
        Caps on training texts: a little beyond 256 / 2048 so truncation is exercised.
    seed
        Seed of every random choice (tokenizer corpus, texts, lengths, weights).

    Notes
    -----
    ``make_assets(out="resources/rehearsal")`` takes ~15 s on 2 cores (tests/test_rehearsal.py
    runs it on small sizes); rule ``rehearsal_assets`` calls it with the config's sizes.
    """
    sizes = {
        "queries_per_split": queries_per_split,
        "documents_per_split": documents_per_split,
        "train_rows": train_rows,
        "long_documents_per_split": long_documents_per_split,
        "max_document_tokens": max_document_tokens,
        "max_train_query_tokens": max_train_query_tokens,
        "max_train_document_tokens": max_train_document_tokens,
    }
    words = make_lexicon(40000, seed)
    tokenizer = build_tokenizer(words)
    units = single_token_units(tokenizer, words)
    with atomic_dir(out) as tmp:
        write_data(tmp, units=units, sizes=sizes, seed=seed)
        write_base_model(tmp / "base-model", tokenizer, seed)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    from ..cli import run_commands

    run_commands({"make": make_assets}, argv)


if __name__ == "__main__":
    main()
