"""Per-job start-up: the same stage commands started cold and forked warm, in one run.

Each command is exactly what a rule runs (``python -m workflow_scripts <stage> ...``) on the
demo's generated assets: an ``evaluate job`` of one split with every protocol, a ``model
widen`` and a ``report summary`` page. Each is run ``--repeats`` times cold (every run a fresh
Python process: the imports paid each time) and as many times through one warm server
(:mod:`workflow_scripts.warm`, started here as the Snakefile's ``onstart`` does); the median
wall times and their ratio are printed, with the server's one-off import time, and a check
that both ways wrote the same bytes.

    python benchmarks/bench_startup.py [--repeats 5]

Run it on an otherwise idle machine: nothing else may share the cores while it times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow_scripts import warm  # noqa: E402
from workflow_scripts.cli import to_argv  # noqa: E402


def assets(root: Path) -> dict[str, str]:
    """Demo assets and their manifests (the rules' ``demo_assets`` and ``download``)."""
    from workflow_scripts.sources.hub import fetch_source
    from workflow_scripts.synthetic.demo import make_assets

    made = make_assets(root / "demo")
    manifests = {}
    for name, sub, kind in [("bright", "BRIGHT", "dataset"), ("base_model", "base-model", "model")]:
        manifests[name] = str(root / f"{name}.manifest.json")
        fetch_source(
            name=name,
            repo=f"org/{name}",
            revision="a" * 40,
            repo_type=kind,
            local=str(made / sub),
            cache_dir=root / "hub",
            manifest=manifests[name],
        )
    manifests["model"] = str(made / "base-model")
    return manifests


def commands(inputs: dict[str, str], out: Path) -> dict[str, list[str]]:
    """name -> argv of one job of each kind, writing under ``out``."""
    from workflow_scripts.bright.protocols import PRESETS, job_pairs, resolve

    split = "biology"
    protocols = [p.for_job([split]) for p in resolve(dict.fromkeys(PRESETS)).values() if p.covers(split)]
    pairs = job_pairs([p["name"] for p in protocols], [split])
    evaluate = {
        "model_path": inputs["model"],
        "model_name": "base",
        "bright_manifest": inputs["bright"],
        "splits": [split],
        "protocols": protocols,
        "out_json": [str(out / f"{p}.json") for p, _ in pairs],
        "run_file": [str(out / f"{p}.run.trec") for p, _ in pairs],
        "query_length": 32,
        "document_length": 64,
        "overrides": {},
        "top_k": 100,
        "chunk_size": 25,
        "encode_batch_size": 32,
    }
    widen = {
        "source": inputs["base_model"],
        "out_dir": str(out / "widened"),
        "verify_path": str(out / "verify.json"),
        "to": 128,
        "seed": 0,
    }
    return {
        "evaluate job (biology, every protocol)": ["evaluate", "job", *to_argv(evaluate)],
        "model widen": ["model", "widen", *to_argv(widen)],
    }


def timed(argv: list[str], *, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "workflow_scripts", *argv],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def outputs(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the timing-bearing result JSONs, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (p.suffix == ".json" and p.name != "verify.json")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs = assets(root)
        cold_env = {k: v for k, v in os.environ.items() if k != warm.ENV_VAR}
        started = time.perf_counter()
        warm.start(log=root / "server.log")
        # the server is ready once its first job is answered: time that one apart
        first = timed(commands(inputs, root / "first")["model widen"], env=dict(os.environ))
        ready = time.perf_counter() - started
        print(f"warm server: first job answered after {ready:.1f} s (imports once per run; that job {first:.1f} s)")
        print(f"{'job':40s} {'cold (s)':>9s} {'warm (s)':>9s} {'cold/warm':>9s}  same bytes")
        for name in commands(inputs, root):
            cold, hot = [], []
            for i in range(args.repeats):  # interleaved, so drift hits both alike
                cold.append(timed(commands(inputs, root / f"cold{i}")[name], env=cold_env))
                hot.append(timed(commands(inputs, root / f"warm{i}")[name], env=dict(os.environ)))
            same = all(outputs(root / f"cold{i}") == outputs(root / f"warm{i}") for i in range(args.repeats))
            c, w = statistics.median(cold), statistics.median(hot)
            print(f"{name:40s} {c:9.2f} {w:9.2f} {c / w:9.1f}x  {same}")
        warm.stop()


if __name__ == "__main__":
    main()
