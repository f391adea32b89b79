"""Trained checkpoints load in sentence-transformers 6 and give PyLate's token vectors (issue #26).

A user takes the model this pipeline trains and loads it elsewhere: with PyLate (the model
card's way) or with sentence-transformers 6's ``MultiVectorEncoder``, which reads PyLate
checkpoints itself. This script checks that both give the same token vectors:

1. it creates a separate virtual environment (``--venv``, default ``/tmp/st6-venv``) with the
   newest sentence-transformers 6.x from the package index and the project's torch version
   (the same kernels on both sides: only the model libraries differ), unless it is there;
2. it takes the demo's trained stage-2 model (``--demo-model``; ``make demo`` writes it) and
   the rehearsal's widened checkpoint (``--rehearsal-model``, or made here: the rehearsal's
   base model, :func:`workflow_scripts.synthetic.rehearsal.write_base_model`, widened 64 -> 128 by
   :func:`workflow_scripts.model.widen.widen`, as the pipeline does);
3. it encodes a few queries and documents with ``MultiVectorEncoder.encode_query`` /
   ``encode_document`` in that environment (a child process) and with PyLate's
   ``ColBERT.encode`` here, each with the checkpoint's own settings (prefixes, lengths,
   skiplist), and compares token counts and vectors.

    python benchmarks/st6_compat.py [--demo-model results/demo/models/stage2] [--venv /tmp/st6-venv]

It prints one line per model, text set and kind, writes the figures as JSON with ``--out``
and exits non-zero if a token count differs or a vector differs by more than ``--tolerance``
(1e-6, float32 rounding: both sides run the same torch ops). One difference is known and
counted apart: a skiplist word the tokenizer lacks (the demo's toy tokenizer has no
punctuation but ``,`` and ``?``) makes PyLate drop every [UNK] of a document, while
sentence-transformers 6 keeps them (:func:`unknown_kept`); those rows are set aside before the
vectors are compared. The first run installs sentence-transformers 6 and its dependencies
(a few minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow_scripts.errors import UserError  # noqa: E402
from workflow_scripts.files import write_json  # noqa: E402

ST_SPEC = "sentence-transformers>=6,<7"
# "plain": letters (no j), commas and question marks: characters every tokenizer here knows, the
# demo's toy BPE included. "punctuated": digits and punctuation, which the demo's tokenizer never
# saw (they become [UNK]); a real ModernBERT tokenizer, like the rehearsal's, has each as a token.
TEXTS: dict[str, dict[str, list[str]]] = {
    "plain": {
        "query": [
            "Why do insects fly towards artificial light at night?",
            "how can i merge two sorted linked lists in place, without extra memory?",
            "given a positive number, find the largest sum of two of its squares? " * 8,  # beyond the query length
        ],
        "document": [
            "Phototaxis, many insects steer by keeping a light source at a fixed angle to their eyes",
            "take the smaller head of a or b until one is empty, then append the rest, in place",
            "by cauchy schwarz the sum is at most the root of two times the norm, with equality when they match, "
            * 30,  # beyond the document length
        ],
    },
    "punctuated": {
        "query": ["Let x^2 + y^2 = 1; find the maximum of x + y.", "def two_sum(nums, target): -> list[int]"],
        "document": [
            "By Cauchy-Schwarz, x + y <= sqrt(2) * sqrt(x^2 + y^2) = sqrt(2); equality at x = y = 1/sqrt(2).",
            "Phototaxis (from Greek): insects keep a light source at a fixed angle -- 90 degrees, say.",
        ],
    },
}
# Run in the sentence-transformers 6 environment: no project import, the checkpoint only.
WORKER = r"""
import json, logging, sys
import numpy as np
import sentence_transformers, torch, transformers
from sentence_transformers import MultiVectorEncoder

path, texts_file, out = sys.argv[1:4]
texts = json.loads(open(texts_file).read())
messages = []
handler = logging.Handler(level=logging.WARNING)
handler.emit = lambda record: messages.append(record.getMessage())
for name in ("transformers", "sentence_transformers"):
    logging.getLogger(name).addHandler(handler)
model = MultiVectorEncoder(path, device="cpu", local_files_only=True)
arrays = {}
for name, kinds in texts.items():
    for kind, batch in kinds.items():
        encode = model.encode_query if kind == "query" else model.encode_document
        for i, vectors in enumerate(encode(batch, convert_to_numpy=True)):
            arrays[f"{name}/{kind}/{i}"] = vectors
np.savez(out, **arrays)
backbone = model[0]
info = {
    "versions": {"sentence_transformers": sentence_transformers.__version__,
                 "transformers": transformers.__version__, "torch": torch.__version__},
    "modules": [type(m).__name__ for m in model],
    "prompts": model.prompts,
    "query_length": backbone.query_length,
    "document_length": backbone.document_length,
    "warnings": messages,
}
print(json.dumps(info))
"""

Vectors = dict[str, dict[str, list[np.ndarray]]]  # text set -> "query"/"document" -> one array per text


def ensure_venv(venv: Path, *, st_spec: str, torch_version: str) -> None:
    """Create ``venv`` with ``st_spec`` and ``torch==torch_version`` unless it already has sentence-transformers 6."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import sentence_transformers as s; assert s.__version__.startswith('6.')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return
    print(f"creating {venv} with {st_spec} and torch=={torch_version} (a few minutes) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(python), "-m", "pip", "install", "--quiet", st_spec, f"torch=={torch_version}"]
    subprocess.run(install, check=True)


def rehearsal_widened(root: Path) -> Path:
    """The rehearsal's base model (its 40,000-word tokenizer, seed 0), widened 64 -> 128 as the pipeline does."""
    from workflow_scripts.model.widen import widen
    from workflow_scripts.synthetic import rehearsal

    base = root / "base-model"
    rehearsal.write_base_model(base, rehearsal.build_tokenizer(rehearsal.make_lexicon(40000, 0)), seed=0)
    widen(source=base, out_dir=root / "widened", verify_path=root / "widened.verify.json", to=128)
    return root / "widened"


def st6_vectors(venv: Path, model: Path, work: Path) -> tuple[Vectors, dict[str, Any]]:
    """Token vectors of :data:`TEXTS` from ``MultiVectorEncoder.encode_query``/``encode_document`` in ``venv``."""
    texts = work / "texts.json"
    texts.write_text(json.dumps(TEXTS))
    out = work / f"{model.name}-st6.npz"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # nothing of this project on the other side
    command = [str(venv / "bin" / "python"), "-c", WORKER, str(model), str(texts), str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)  # the whole traceback above, its last line in the error
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"{model}: MultiVectorEncoder failed to load or encode it: {last}")
    arrays = np.load(out)
    vectors = {
        name: {kind: [arrays[f"{name}/{kind}/{i}"] for i in range(len(batch))] for kind, batch in kinds.items()}
        for name, kinds in TEXTS.items()
    }
    return vectors, json.loads(proc.stdout.strip().splitlines()[-1])


def pylate_vectors(colbert) -> Vectors:
    """Token vectors of :data:`TEXTS` from PyLate's ``ColBERT.encode`` (its defaults: normalized)."""
    return {
        name: {
            kind: [np.asarray(v) for v in colbert.encode(batch, is_query=kind == "query", show_progress_bar=False)]
            for kind, batch in kinds.items()
        }
        for name, kinds in TEXTS.items()
    }


def unknown_kept(colbert, document: str) -> np.ndarray | None:
    """Which of sentence-transformers 6's kept tokens of ``document`` PyLate drops as [UNK], or None if none.

    PyLate turns each skiplist word into an id with ``convert_tokens_to_ids``, so a word the
    tokenizer lacks becomes [UNK]'s id and every [UNK] of a document is dropped;
    sentence-transformers 6 leaves such words out of the skiplist and keeps the [UNK] tokens.
    """
    tokenizer = colbert.tokenizer
    unk = tokenizer.unk_token_id
    if unk is None or unk not in colbert.skiplist:
        return None
    features = colbert.tokenize([document], is_query=False)
    ids = features["input_ids"][0][features["attention_mask"][0].bool()].numpy()
    kept = ids[~np.isin(ids, [i for i in colbert.skiplist if i != unk])]
    return kept == unk if (kept == unk).any() else None


def compare(ours: list[np.ndarray], theirs: list[np.ndarray], dropped: list[np.ndarray | None]) -> dict[str, Any]:
    """Token counts of both sides and the largest absolute difference (None where the counts differ).

    ``dropped[i]``: rows of ``theirs[i]`` that PyLate drops as [UNK] (:func:`unknown_kept`),
    removed before comparing and counted in ``unk_tokens_kept_by_st6``.

    Examples
    --------
    >>> a = [np.zeros((3, 2), np.float32)]
    >>> compare(a, [a[0] + 0.5], [None])["max_abs_diff"], compare(a, [np.zeros((2, 2))], [None])["same_tokens"]
    (0.5, False)
    >>> compare(a, [np.ones((4, 2))], [np.array([False, True, False, False])])["unk_tokens_kept_by_st6"]
    [1]
    """
    aligned = [t if d is None or len(d) != len(t) else t[~d] for t, d in zip(theirs, dropped)]
    same = [o.shape == t.shape for o, t in zip(ours, aligned)] + [len(ours) == len(theirs)]
    diffs = [float(np.abs(o - t).max()) for o, t in zip(ours, aligned) if o.shape == t.shape]
    return {
        "tokens_pylate": [len(o) for o in ours],
        "tokens_st6": [len(t) for t in theirs],
        "unk_tokens_kept_by_st6": [0 if d is None else int(d.sum()) for d in dropped],
        "same_tokens": all(same),
        "max_abs_diff": max(diffs) if all(same) else None,
        "identical": all(same) and all(np.array_equal(o, t) for o, t in zip(ours, aligned)),
    }


def check_model(name: str, model: Path, *, venv: Path, work: Path, tolerance: float) -> dict[str, Any]:
    """Both loaders on one checkpoint: figures per text set and kind, and whether they agree."""
    import pylate
    import sentence_transformers
    import torch
    import transformers

    from workflow_scripts.model.load import load_colbert

    if not (model / "modules.json").is_file():
        raise UserError(f"{model}: not a PyLate checkpoint (no modules.json); run `make demo` first for the demo's")
    colbert = load_colbert(model)
    ours = pylate_vectors(colbert)
    theirs, st6_info = st6_vectors(venv, model, work)
    figures = {}
    for text_set, kinds in TEXTS.items():
        for kind, batch in kinds.items():
            dropped = [unknown_kept(colbert, t) if kind == "document" else None for t in batch]
            figures[f"{text_set}/{kind}"] = compare(ours[text_set][kind], theirs[text_set][kind], dropped)
    pylate_info = {
        "versions": {
            "pylate": pylate.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "query_length": colbert.query_length,
        "document_length": colbert.document_length,
    }
    ok = all(f["same_tokens"] and f["max_abs_diff"] <= tolerance for f in figures.values())
    return {"model": name, "path": str(model), "pylate": pylate_info, "st6": st6_info, "figures": figures, "ok": ok}


def report_line(result: dict[str, Any], key: str) -> str:
    f = result["figures"][key]
    diff = "token counts differ" if f["max_abs_diff"] is None else f"max |diff| {f['max_abs_diff']:.2e}"
    same = " (bit-identical)" if f["identical"] else ""
    unk = f"; [UNK] kept by ST6 only: {f['unk_tokens_kept_by_st6']}" if any(f["unk_tokens_kept_by_st6"]) else ""
    return f"  {key:<20} tokens PyLate {f['tokens_pylate']} ST6 {f['tokens_st6']}{unk}  {diff}{same}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-model", type=Path, default=REPO / "results/demo/models/stage2")
    parser.add_argument("--rehearsal-model", type=Path, help="a widened rehearsal checkpoint (default: made here)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/st6-venv"))
    parser.add_argument("--sentence-transformers", default=ST_SPEC, help="pip requirement (default: newest 6.x)")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    import torch

    ensure_venv(args.venv, st_spec=args.sentence_transformers, torch_version=torch.__version__.split("+")[0])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rehearsal_model = args.rehearsal_model or rehearsal_widened(work / "rehearsal")
        results = [
            check_model("demo stage2", args.demo_model, venv=args.venv, work=work, tolerance=args.tolerance),
            check_model("rehearsal widened", rehearsal_model, venv=args.venv, work=work, tolerance=args.tolerance),
        ]
    first = results[0]
    print(f"PyLate side: {first['pylate']['versions']}")
    print(f"sentence-transformers 6 side: {first['st6']['versions']}, modules {first['st6']['modules']}")
    for result in results:
        print(f"{result['model']}: {result['path']}")
        print(
            f"  lengths: PyLate query {result['pylate']['query_length']} / document "
            f"{result['pylate']['document_length']}; MultiVectorEncoder query {result['st6']['query_length']} / "
            f"document {result['st6']['document_length']}; prompts {result['st6']['prompts']}"
        )
        print(f"  MultiVectorEncoder warnings: {result['st6']['warnings'] or 'none'}")
        for key in result["figures"]:
            print(report_line(result, key))
    if args.out:
        write_json(args.out, {"tolerance": args.tolerance, "results": results})
    failed = [r["model"] for r in results if not r["ok"]]
    print(f"MISMATCH: {failed}" if failed else f"all match within {args.tolerance} (apart from the [UNK] rows listed)")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as err:
        sys.exit(f"error: {err}")
