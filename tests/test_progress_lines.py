"""Progress lines of the long stages: plain logger lines (no carriage returns) with rate and ETA."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

from workflow_scripts import data
from workflow_scripts.data import build_shards
from workflow_scripts.demo import SPLITS
from workflow_scripts.train import metrics_callback, train_stage

SAMPLES_LINE = re.compile(r"^train: [\d,]+/[\d,]+ samples \([\d.]+%\), [\d,.]+ samples/s, ETA \S+; step \d+/\d+$")


def shards(manifests, tmp_path):
    return build_shards(stage="stage1", stage_sources=[{"source": "reasonir", "config": "vl"}],
                        manifests=list(manifests.values()), out_dir=tmp_path / "shards",
                        stats_path=tmp_path / "stats.json", splits=SPLITS, positives_per_query=1,
                        negatives_per_query=2, min_text_chars=10, max_unresolved_rate=0.1, rows_per_shard=64,
                        shuffle_buckets=2, seed=0)  # fmt: skip


def messages(caplog, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def test_build_shards_logs_rows_per_second_while_reading_and_writing(manifests, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(data, "PROGRESS_INTERVAL", 0.0)  # a line per row: the steady lines, not just the last
    with caplog.at_level(logging.INFO, logger="workflow_scripts.data"):
        stats = shards(manifests, tmp_path)
    lines = messages(caplog, "workflow_scripts.data")
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
    with caplog.at_level(logging.INFO, logger="workflow_scripts.data"):
        shards(manifests, tmp_path)
    lines = [m for m in messages(caplog, "workflow_scripts.data") if "rows/s" in m]
    assert [m.split(":")[1].strip() for m in lines] == ["read + bucket", "sort + write shards"]


def test_training_callback_logs_step_samples_per_second_and_eta(tmp_path, caplog):
    callback = metrics_callback(tmp_path / "m.jsonl", 16, 0, interval=0.0)
    state = SimpleNamespace(global_step=0, max_steps=4)
    with caplog.at_level(logging.INFO, logger="workflow_scripts.train"):
        callback.on_train_begin(None, state, None)
        for step in range(1, 5):
            state.global_step = step
            callback.on_step_end(None, state, None)
        callback.on_train_end(None, state, None)
    lines = messages(caplog, "workflow_scripts.train")
    assert len(lines) == 5 and all(SAMPLES_LINE.match(m) for m in lines), lines
    assert lines[0].startswith("train: 16/64 samples (25.0%)") and lines[0].endswith("; step 1/4")
    assert lines[-1].startswith("train: 64/64 samples (100.0%)") and lines[-1].endswith("; step 4/4")


def test_resumed_training_counts_from_its_checkpoint_and_other_ranks_stay_quiet(tmp_path, caplog):
    resumed = metrics_callback(tmp_path / "m.jsonl", 8, 0, interval=0.0)
    other = metrics_callback(tmp_path / "m1.jsonl", 8, 1, interval=0.0)
    with caplog.at_level(logging.INFO, logger="workflow_scripts.train"):
        for callback in (resumed, other):
            state = SimpleNamespace(global_step=6, max_steps=10)
            callback.on_train_begin(None, state, None)
            state.global_step = 7
            callback.on_step_end(None, state, None)
    [line] = messages(caplog, "workflow_scripts.train")  # rank 1 logged nothing
    assert line.startswith("train: 8/32 samples (25.0%)") and line.endswith("; step 7/10")  # 4 steps left of 10


def test_a_real_training_run_logs_progress_lines(demo_assets, manifests, tmp_path, caplog):
    shards(manifests, tmp_path)
    with caplog.at_level(logging.INFO, logger="workflow_scripts.train"):
        train_stage(stage="stage1", init_model=str(demo_assets / "base-model"), shards=str(tmp_path / "shards"),
                    out_dir=str(tmp_path / "model"), checkpoint_dir=str(tmp_path / "ckpt"),
                    metrics_path=str(tmp_path / "m.jsonl"), meta_path=str(tmp_path / "meta.json"),
                    learning_rate=1e-4, global_batch_size=8, gradient_accumulation_steps=1, mini_batch_size=8,
                    query_length=16, document_length=24, temperature=1.0, gather_across_devices=True,
                    max_grad_norm=100.0, warmup_ratio=0.0, epochs=1, bf16=False, save_steps=100,
                    save_total_limit=1, logging_steps=1, dataloader_num_workers=0, seed=0, max_steps=2)  # fmt: skip
    lines = [m for m in messages(caplog, "workflow_scripts.train") if SAMPLES_LINE.match(m)]
    assert lines and lines[-1].startswith("train: 16/16 samples (100.0%)") and lines[-1].endswith("; step 2/2")
