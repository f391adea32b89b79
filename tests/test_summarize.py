"""The summary: a table per protocol, published rows with their own protocol, deltas like with like."""

from __future__ import annotations

import csv
import json

import pytest

from workflow_scripts.bright_meta import SPLITS
from workflow_scripts.protocols import mteb_files, resolve
from workflow_scripts.summarize import PUBLISHED, summarize

MODELS = ["stage2", "base"]
SETTINGS = {"query_length": 256, "document_length": 2048, "overrides": {"pony": {"query_length": 32}},
            "bright_revision": "a" * 40, "base_model_revision": "b" * 40}  # fmt: skip


def fake_results(tmp_path, protocols):
    """One per-split result per (protocol, model, split): nDCG@10 = a number that names its cell."""
    paths = []
    for i, p in enumerate(protocols):
        for j, model in enumerate(MODELS):
            for k, split in enumerate(p["splits"]):
                task, eval_split, subset = p["mteb"][split]
                ndcg = (10 * i + 5 * j + k) / 1000 + 0.1
                result = {"dataset_revision": "a" * 40, "task_name": task, "mteb_version": None,
                          "kg_co2_emissions": None, "evaluation_time": 1.0,
                          "scores": {eval_split: [{"hf_subset": subset, "main_score": ndcg, "ndcg_at_10": ndcg}]},
                          "protocol": {"name": p["name"], "model": model, "split": split}}  # fmt: skip
                path = tmp_path / f"{p['name']}-{model}-{split}.json"
                path.write_text(json.dumps(result))
                paths.append(str(path))
    return paths


@pytest.fixture()
def summary(tmp_path):
    protocols = [p.summary(SPLITS) for p in resolve({"card": {}, "bright": {}, "long": {}}).values()]
    results = fake_results(tmp_path, protocols)
    mteb = [str(tmp_path / f"mteb-{p}-{m}-{t}.json") for p, m, t, _ in mteb_files(protocols, MODELS)]
    out = summarize(results=results, models=MODELS, splits=SPLITS, protocols=protocols, settings=SETTINGS,
                    csv_path=str(tmp_path / "s.csv"), md_path=str(tmp_path / "s.md"), json_path=str(tmp_path / "s.json"),
                    mteb_paths=mteb)  # fmt: skip
    return out, tmp_path


def test_a_table_per_protocol_and_the_card_delta_only_in_the_card_table(summary):
    out, _ = summary
    tables = {t["protocol"]["name"]: t for t in out["tables"]}
    assert list(tables) == ["card", "bright", "long"]
    card_rows = {r["model"]: r for r in tables["card"]["rows"]}
    published = next(p for p in PUBLISHED if p.reproduced)
    delta = card_rows[f"delta: stage2 - {published.model}"]
    for split in SPLITS:  # ours under the card's protocol minus the card
        assert delta[split] == pytest.approx(card_rows["stage2"][split] - published.scores[split], abs=0.011)
    for name in ("bright", "long"):
        kinds = {r["kind"] for r in tables[name]["rows"]}
        assert kinds == {"ours"}, name  # no published row was measured under these: nothing to compare
    assert tables["long"]["splits"] == [s for s in SPLITS if s in tables["long"]["protocol"]["splits"]]
    assert len(tables["long"]["splits"]) == 8
    elsewhere = {r["model"]: r["protocol"] for r in out["published_elsewhere"]}
    assert elsewhere == {"published: Reason-ModernColBERT (150M)": "not stated",
                         "mteb: Reason-ModernColBERT (150M)": "mteb-v1.1"}  # fmt: skip


def test_protocol_effects_are_against_the_card_protocol(summary):
    out, _ = summary
    effects = out["effects"]
    assert effects["baseline"] == "card" and effects["model"] == "stage2"
    assert effects["delta"]["bright"]["biology"] == pytest.approx(1.0)  # 10 points of the fake grid
    assert set(effects["delta"]["long"]) == set(out["tables"][2]["splits"])


def test_csv_and_mteb_files(summary):
    _, tmp_path = summary
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert list(rows[0]) == ["protocol", "model", "kind", *SPLITS, "mean"]
    long_rows = [r for r in rows if r["protocol"] == "long"]
    assert long_rows and all(r["leetcode"] == "" for r in long_rows)  # not a long split
    combined = json.loads((tmp_path / "mteb-long-stage2-BrightLongRetrieval.json").read_text())
    assert [e["hf_subset"] for e in combined["scores"]["long"]] == out_splits(rows)


def out_splits(rows):
    return [s for s in SPLITS if next(r for r in rows if r["protocol"] == "long")[s] != ""]


def test_a_missing_result_is_named(tmp_path):
    from workflow_scripts.common import UserError

    protocols = [p.summary(["pony"]) for p in resolve({"card": {}}).values()]
    with pytest.raises(UserError, match=r"no evaluation result for card/stage2/pony, card/base/pony"):
        summarize(results=[], models=MODELS, splits=["pony"], protocols=protocols, settings=SETTINGS,
                  csv_path=str(tmp_path / "s.csv"), md_path=str(tmp_path / "s.md"), json_path=str(tmp_path / "s.json"),
                  mteb_paths=[])  # fmt: skip


def test_the_report_shows_every_table_and_the_protocol_effects(summary):
    from workflow_scripts.report import plot_bright, summary_html

    out, tmp_path = summary
    summary_html(summary_json=tmp_path / "s.json", out=tmp_path / "s.html")
    page = (tmp_path / "s.html").read_text()
    for name in ("card", "bright", "long"):
        assert f"id='summary-table-{name}'" in page
    assert "id='summary-elsewhere'" in page and "class='delta'" in page
    fig = plot_bright(summary_json=tmp_path / "s.json", out=tmp_path / "b.png")
    bottom = fig.axes[1]
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == ["bright", "long"]
    assert (tmp_path / "b.png").stat().st_size > 10_000
