"""Progress lines of the long stages: plain logger lines (no carriage returns) with rate and ETA."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

from conftest import shard_kwargs, train_kwargs

from workflow_scripts.shards import shuffle
from workflow_scripts.shards.build import build_shards
from workflow_scripts.train.stage import fit, metrics_callback

SAMPLES_LINE = re.compile(
    r"^train(?: \S+)?: [\d,]+/[\d,]+ samples \([\d.]+%\), [\d,.]+ samples/s, ETA \S+; step \d+/\d+"
    r"(?:; document tokens/step [\d,]+ real, [\d,]+ processed, [\d,]+ padded)?$"
)


def shards(manifests, tmp_path):
    return build_shards(**shard_kwargs(list(manifests.values()), tmp_path))


def messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_build_shards_logs_rows_per_second_while_reading_and_writing(manifests, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(shuffle, "PROGRESS_INTERVAL", 0.0)  # a line per row: the steady lines, not just the last
    with caplog.at_level(logging.INFO, logger="workflow_scripts.shards"):
        stats = shards(manifests, tmp_path)
    lines = messages(caplog, "workflow_scripts.shards.shuffle")
    reading = [m for m in lines if m.startswith("build_shards stage1: read + bucket: ")]
    writing = [m for m in lines if m.startswith("build_shards stage1: sort + write shards: ")]
    assert len(reading) > 1 and all(re.search(r"[\d,]+ rows, [\d,.]+ rows/s$", m) for m in reading)
    assert len(writing) > 1 and all(
        re.search(r"/[\d,]+ rows \([\d.]+%\), [\d,.]+ rows/s, ETA \S+$", m) for m in writing
    )
    total = stats["rows"] + stats["duplicates_removed"]
    assert reading[-1].split(": ")[-1].startswith(f"{total:,} rows")
    assert writing[-1].split(": ")[-1].startswith(f"{total:,}/{total:,} rows (100.0%)")
    assert not any("\r" in m for m in lines)


def test_build_shards_logs_only_the_final_lines_on_a_short_run(manifests, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="workflow_scripts.shards"):
        shards(manifests, tmp_path)
    lines = [m for m in messages(caplog, "workflow_scripts.shards.shuffle") if "rows/s" in m]
    assert [m.split(":")[1].strip() for m in lines] == ["read + bucket", "sort + write shards"]


def test_training_callback_logs_step_samples_per_second_and_eta(tmp_path, caplog):
    callback = metrics_callback(tmp_path / "m.jsonl", 16, 0, interval=0.0)
    state = SimpleNamespace(global_step=0, max_steps=4)
    with caplog.at_level(logging.INFO, logger="workflow_scripts.train.stage"):
        callback.on_train_begin(None, state, None)
        for step in range(1, 5):
            state.global_step = step
            callback.on_step_end(None, state, None)
        callback.on_train_end(None, state, None)
    lines = messages(caplog, "workflow_scripts.train.stage")
    assert len(lines) == 5 and all(SAMPLES_LINE.match(m) for m in lines), lines
    assert lines[0].startswith("train: 16/64 samples (25.0%)") and lines[0].endswith("; step 1/4")
    assert lines[-1].startswith("train: 64/64 samples (100.0%)") and lines[-1].endswith("; step 4/4")


def test_resumed_training_counts_from_its_checkpoint_and_other_ranks_stay_quiet(tmp_path, caplog):
    resumed = metrics_callback(tmp_path / "m.jsonl", 8, 0, interval=0.0)
    other = metrics_callback(tmp_path / "m1.jsonl", 8, 1, interval=0.0)
    with caplog.at_level(logging.INFO, logger="workflow_scripts.train.stage"):
        for callback in (resumed, other):
            state = SimpleNamespace(global_step=6, max_steps=10)
            callback.on_train_begin(None, state, None)
            state.global_step = 7
            callback.on_step_end(None, state, None)
    [line] = messages(caplog, "workflow_scripts.train.stage")  # rank 1 logged nothing
    assert line.startswith("train: 8/32 samples (25.0%)") and line.endswith("; step 7/10")  # 4 steps left of 10


def test_a_real_training_run_logs_progress_lines(demo_assets, manifests, tmp_path, caplog):
    shards(manifests, tmp_path)
    with caplog.at_level(logging.INFO, logger="workflow_scripts.train.stage"):
        fit(
            **train_kwargs(
                tmp_path,
                demo_assets / "base-model",
                tmp_path / "shards",
                learning_rate=1e-4,
                global_batch_size=8,
                query_length=16,
                document_length=24,
                epochs=1,
                bf16=False,
                save_steps=100,
                save_total_limit=1,
                max_steps=2,
            )
        )
    lines = [m for m in messages(caplog, "workflow_scripts.train.stage") if SAMPLES_LINE.match(m)]
    assert lines and lines[-1].startswith("train stage1: 16/16 samples (100.0%)")
    # a real run's loss counts its tokens, so each line ends with the step's document tokens
    assert "; step 2/2; document tokens/step " in lines[-1] and lines[-1].endswith(" padded")


DOCUMENTS_LINE = re.compile(
    r"evaluate base: documents of biology: ([\d,]+)/([\d,]+) documents \([\d.]+%\), [\d,.]+ documents/s, ETA \S+$"
)


def test_an_evaluate_log_of_a_multi_chunk_split_has_progress_lines(demo_assets, manifests, tmp_path):
    """The job as its rule runs it, output into a log file: a line per PROGRESS_INTERVAL_S (0
    here, so one per chunk), documents done / total, documents/s and ETA; no carriage return."""
    import math
    import os
    import subprocess
    import sys

    from workflow_scripts.bright.protocols import resolve
    from workflow_scripts.cli import to_argv

    chunk_size = 7
    card = resolve({"card": None})["card"].for_job(["biology"])
    argv = to_argv(
        {
            "model_path": str(demo_assets / "base-model"),
            "model_name": "base",
            "bright_manifest": manifests["bright"],
            "splits": ["biology"],
            "protocols": [card],
            "out_json": [str(tmp_path / "biology.json")],
            "run_file": [str(tmp_path / "biology.run.trec")],
            "query_length": 32,
            "document_length": 48,
            "overrides": {},
            "top_k": 100,
            "chunk_size": chunk_size,
            "encode_batch_size": 8,
        }
    )
    log = tmp_path / "biology.log"
    env = {k: v for k, v in os.environ.items() if k != "REASON_COLBERT_WARM"} | {"PROGRESS_INTERVAL_S": "0"}
    with open(log, "w") as out:
        subprocess.run(
            [sys.executable, "-m", "workflow_scripts", "evaluate", "job", *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
        )
    text = log.read_text()
    done = [
        tuple(int(n.replace(",", "")) for n in m.groups()) for m in map(DOCUMENTS_LINE.search, text.splitlines()) if m
    ]
    total = done[-1][1]
    assert total > 2 * chunk_size  # several chunks
    chunks = math.ceil(total / chunk_size)
    assert [d for d, _ in done] == [min(chunk_size * (i + 1), total) for i in range(chunks)] + [
        total
    ]  # + the last line
    assert "\r" not in text
