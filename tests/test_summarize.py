"""The summary: a table per protocol, published rows with their own protocol, deltas like with like."""

from __future__ import annotations

import csv
import json

import pytest

from workflow_scripts.bright.meta import SPLITS
from workflow_scripts.bright.protocols import mteb_files, resolve
from workflow_scripts.summarize import PUBLISHED, summarize

MODELS = ["stage2", "base"]
STATISTICS = {"confidence": 0.95, "resamples": 500, "alpha": 0.05, "seed": 0}
PAIRS = [["stage2", "base"]]
OFFSETS = [-0.02, -0.01, 0.0, 0.01, 0.02]  # per-query scores around the split's nDCG@10, same mean
SETTINGS = {
    "query_length": 256,
    "document_length": 2048,
    "overrides": {"pony": {"query_length": 32}},
    "bright_revision": "a" * 40,
    "base_model_revision": "b" * 40,
}


def fake_results(tmp_path, protocols):
    """One per-split result per (protocol, model, split): nDCG@10 = a number that names its cell."""
    paths = []
    for i, p in enumerate(protocols):
        for j, model in enumerate(MODELS):
            for k, split in enumerate(p["splits"]):
                task, eval_split, subset = p["mteb"][split]
                ndcg = (10 * i + 5 * j + k) / 1000 + 0.1
                result = {
                    "dataset_revision": "a" * 40,
                    "task_name": task,
                    "mteb_version": None,
                    "kg_co2_emissions": None,
                    "evaluation_time": 1.0,
                    "scores": {eval_split: [{"hf_subset": subset, "main_score": ndcg, "ndcg_at_10": ndcg}]},
                    "per_query": {f"q{n}": ndcg + o for n, o in enumerate(OFFSETS)},
                    "protocol": {"name": p["name"], "model": model, "split": split},
                }
                path = tmp_path / f"{p['name']}-{model}-{split}.json"
                path.write_text(json.dumps(result))
                paths.append(str(path))
    return paths


@pytest.fixture()
def summary(tmp_path):
    protocols = [p.summary(SPLITS) for p in resolve({"card": {}, "bright": {}, "long": {}}).values()]
    results = fake_results(tmp_path, protocols)
    mteb = [str(tmp_path / f"mteb-{p}-{m}-{t}.json") for p, m, t, _ in mteb_files(protocols, MODELS)]
    out = summarize(
        results=results,
        models=MODELS,
        splits=SPLITS,
        protocols=protocols,
        settings=SETTINGS,
        csv_path=str(tmp_path / "s.csv"),
        md_path=str(tmp_path / "s.md"),
        json_path=str(tmp_path / "s.json"),
        mteb_paths=mteb,
        **statistics_args(tmp_path),
    )
    return out, tmp_path


def statistics_args(tmp_path):
    return {
        "statistics": STATISTICS,
        "pairs": PAIRS,
        "seed_groups": [],
        "per_query_path": str(tmp_path / "q.parquet"),
        "intervals_path": str(tmp_path / "i.csv"),
        "tests_path": str(tmp_path / "t.csv"),
    }


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
    assert elsewhere == {
        "published: Reason-ModernColBERT (150M)": "not stated",
        "mteb: Reason-ModernColBERT (150M)": "mteb-v1.1",
    }


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
    from workflow_scripts.errors import UserError

    protocols = [p.summary(["pony"]) for p in resolve({"card": {}}).values()]
    with pytest.raises(UserError, match=r"no evaluation result for card/stage2/pony, card/base/pony"):
        summarize(
            results=[],
            models=MODELS,
            splits=["pony"],
            protocols=protocols,
            settings=SETTINGS,
            csv_path=str(tmp_path / "s.csv"),
            md_path=str(tmp_path / "s.md"),
            json_path=str(tmp_path / "s.json"),
            mteb_paths=[],
            **statistics_args(tmp_path),
        )


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


@pytest.fixture()
def with_statistics(tmp_path):
    """Tables of three protocols with their statistics (add_statistics on the fake grid), two seeds."""
    from workflow_scripts.summarize import _write_statistics_csv, add_statistics, build_tables, read_results

    protocols = [p.summary(SPLITS) for p in resolve({"card": {}, "bright": {}, "long": {}}).values()]
    found = read_results(fake_results(tmp_path, protocols), protocols, MODELS)
    tables = build_tables(found, protocols, MODELS)
    groups = [{"experiment": "seeds", "kind": "stage2", "seeds": [1, 2], "models": MODELS}]
    args = statistics_args(tmp_path)
    add_statistics(
        tables=tables,
        found=found,
        statistics=STATISTICS,
        pairs=PAIRS,
        seed_groups=groups,
        per_query_path=args["per_query_path"],
    )
    _write_statistics_csv(args["intervals_path"], args["tests_path"], tables)
    return {t["protocol"]["name"]: t for t in tables}, protocols, tmp_path


def test_per_query_scores_are_one_tidy_parquet(with_statistics):
    import pandas as pd

    tables, protocols, tmp_path = with_statistics
    frame = pd.read_parquet(tmp_path / "q.parquet")
    assert list(frame.columns) == ["protocol", "model", "split", "query_id", "ndcg_at_10"]
    assert len(frame) == sum(len(p["splits"]) for p in protocols) * len(MODELS) * len(OFFSETS)
    means = frame.groupby(["protocol", "model", "split"])["ndcg_at_10"].mean()
    for name, table in tables.items():  # each cell's queries average to the table's number
        for model, cells in table["scores"].items():
            assert all(abs(100 * means[(name, model, s)] - cells[s]) < 0.01 for s in table["splits"])


def test_every_protocol_model_and_split_has_an_interval_around_its_score(with_statistics):
    tables, _, tmp_path = with_statistics
    for table in tables.values():
        ours = {r["model"]: r for r in table["rows"] if r["kind"] == "ours"}
        assert set(table["intervals"]) == set(MODELS)
        for model, cells in table["intervals"].items():
            assert list(cells) == [*table["splits"], "mean"]
            for column, (low, high) in cells.items():
                assert low < ours[model][column] < high, (model, column)
                assert high - low < 100 * 2 * max(OFFSETS)  # within the spread of the queries
    rows = list(csv.DictReader(open(tmp_path / "i.csv")))
    assert len(rows) == sum(len(MODELS) * (len(t["splits"]) + 1) for t in tables.values())


def test_paired_tests_cover_every_pair_split_and_the_mean(with_statistics):
    tables, _, tmp_path = with_statistics
    for table in tables.values():
        assert len(table["tests"]) == len(PAIRS) * (len(table["splits"]) + 1)
        for test in table["tests"]:
            split = test["split"]
            if split != "mean":
                expected = table["scores"]["stage2"][split] - table["scores"]["base"][split]
                assert test["delta"] == pytest.approx(expected, abs=0.011)
                # 5 queries: 32 relabellings (exact), the smallest two-sided p is 2/32 > alpha
                assert test["p"] == pytest.approx(2 / 2 ** len(OFFSETS)) and not test["significant"]
            assert test["p_holm"] >= test["p"] and test["significant"] == (test["p_holm"] <= STATISTICS["alpha"])
        mean = next(t for t in table["tests"] if t["split"] == "mean")
        deltas = [table["scores"]["stage2"][s] - table["scores"]["base"][s] for s in table["splits"]]
        assert mean["delta"] == pytest.approx(sum(deltas) / len(deltas), abs=0.011)
        assert mean["significant"]  # every query of every split lower: hardly any relabelling reaches it
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert len(rows) == sum(len(t["tests"]) for t in tables.values())


def test_the_card_row_is_checked_against_our_interval_only_under_its_protocol(with_statistics):
    tables, _, _ = with_statistics
    assert not tables["bright"]["card_checks"] and not tables["long"]["card_checks"]
    (check,) = tables["card"]["card_checks"]
    card = next(p for p in PUBLISHED if p.reproduced)
    interval = tables["card"]["intervals"]["stage2"]
    for split, inside in check["inside"].items():
        assert inside == (interval[split][0] <= card.scores[split] <= interval[split][1])
    assert check["agrees"] == (check["mean"]["inside"] and check["outside"] <= check["allowed_outside"])
    assert not check["agrees"] and "does not agree with" in check["sentence"]  # the fake grid is ~10, the card 19
    assert f"{check['mean']['published']:.2f}" in check["sentence"]


def test_seed_rows_give_mean_and_std_across_the_seeds(with_statistics):
    tables, _, _ = with_statistics
    for table in tables.values():
        rows = {r["kind"]: r for r in table["rows"] if r["kind"].startswith("seed_")}
        for split in table["splits"]:
            values = [table["scores"][m][split] for m in MODELS]
            assert rows["seed_mean"][split] == pytest.approx(sum(values) / 2, abs=0.006)
            assert rows["seed_std"][split] == pytest.approx(abs(values[0] - values[1]) / 2**0.5, abs=0.006)
        kinds = [r["kind"] for r in table["rows"]]
        assert kinds.index("seed_mean") == len(MODELS)  # right after our models


def test_a_result_without_per_query_scores_is_named(tmp_path):
    from workflow_scripts.errors import UserError
    from workflow_scripts.stats import per_query_frame

    with pytest.raises(UserError, match=r"^card/stage2/pony: the result has no per_query scores"):
        per_query_frame({("card", "stage2", "pony"): {"scores": {}}})


def test_the_report_draws_intervals_and_marks_significant_tests(with_statistics):
    import re

    from workflow_scripts.files import write_json
    from workflow_scripts.report import paired_tests_html, plot_intervals

    tables, _, tmp_path = with_statistics
    write_json(
        tmp_path / "s.json", {"tables": [{k: v for k, v in t.items() if k != "scores"} for t in tables.values()]}
    )
    for name, table in tables.items():
        fig = plot_intervals(summary_json=tmp_path / "s.json", protocol=name, out=tmp_path / f"{name}.png")
        ax = fig.axes[0]
        bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
        assert [b.get_label() for b in bars] == MODELS
        for bar, model in zip(bars, MODELS):  # the whiskers span the interval of each column
            segments = bar.lines[2][0].get_segments()
            spans = [(round(s[0][1], 2), round(s[1][1], 2)) for s in segments]
            assert spans == [tuple(table["intervals"][model][c]) for c in [*table["splits"], "mean"]]
        published = [c.get_label() for c in ax.collections if c.get_label() in {p.model for p in PUBLISHED}]
        assert published == [r["model"] for r in table["rows"] if r["kind"] == "published"]
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    paired_tests_html(summary_json=tmp_path / "s.json", out=tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    for name, table in tables.items():
        cells = re.search(f"<table class='r' id='tests-table-{re.escape(name)}'>(.*?)</table>", page).group(1)
        marked = cells.count("<td class='sig'>")
        assert marked == sum(t["significant"] for t in table["tests"]) and marked >= 1  # the mean, at least


@pytest.mark.e2e
def test_the_demo_summary_carries_intervals_and_tests_for_every_protocol(demo_run):
    import pandas as pd
    import yaml
    from snakemake.utils import update_config

    from workflow_scripts.lineage import Lineage

    config = yaml.safe_load((demo_run / "config.yaml").read_text())
    update_config(config, yaml.safe_load((demo_run / "demo/config.yaml").read_text()))
    lineage = Lineage(config)
    run = demo_run / "results/demo"
    summary = json.loads((run / "summary.json").read_text())
    frame = pd.read_parquet(run / "per_query.parquet")
    assert [t["protocol"]["name"] for t in summary["tables"]] == list(config["evaluate"]["protocols"])
    intervals, tests = (
        list(csv.DictReader(open(run / "intervals.csv"))),
        list(csv.DictReader(open(run / "paired_tests.csv"))),
    )
    for table in summary["tables"]:
        name, columns = table["protocol"]["name"], [*table["splits"], "mean"]
        assert set(table["intervals"]) == set(lineage.evaluated())
        for model, cells in table["intervals"].items():
            ours = next(r for r in table["rows"] if r["model"] == model and r["kind"] == "ours")
            assert set(cells) == set(columns) and all(lo <= ours[c] <= hi for c, (lo, hi) in cells.items()), (
                name,
                model,
            )
        assert [(t["model"], t["baseline"]) for t in table["tests"]] == [p for p in lineage.pairs() for _ in columns]
        assert sum(r["protocol"] == name for r in intervals) == len(lineage.evaluated()) * len(columns)
        assert sum(r["protocol"] == name for r in tests) == len(lineage.pairs()) * len(columns)
        for model in lineage.evaluated():  # the parquet holds each result's queries, averaging to its score
            for split in table["splits"]:
                result = json.loads((run / f"eval/{name}/{model}/{split}.json").read_text())
                cell = frame[(frame["protocol"] == name) & (frame["model"] == model) & (frame["split"] == split)]
                assert dict(zip(cell["query_id"], cell["ndcg_at_10"])) == result["per_query"]
                assert cell["ndcg_at_10"].mean() == pytest.approx(
                    next(iter(result["scores"].values()))[0]["ndcg_at_10"]
                )
    card = next(t for t in summary["tables"] if t["protocol"]["name"] == "card")
    assert len(card["card_checks"]) == 1 and card["card_checks"][0]["sentence"] in (run / "summary.md").read_text()


def test_the_command_line_takes_no_seed_groups_and_no_pairs(tmp_path):
    """A config without seeds (config.yaml) has no seed groups: the rule leaves the flag out, and
    the summary reads that as none (an empty list would be a flag without words)."""
    from workflow_scripts.cli import to_argv
    from workflow_scripts.summarize import main

    protocols = [p.summary(SPLITS) for p in resolve({"card": {}}).values()]
    results = fake_results(tmp_path, protocols)
    mteb = [str(tmp_path / f"mteb-{p}-{m}-{t}.json") for p, m, t, _ in mteb_files(protocols, MODELS)]
    paths = {k: v for k, v in statistics_args(tmp_path).items() if k.endswith("_path")}
    flags = {
        "models": MODELS,
        "splits": SPLITS,
        "protocols": protocols,
        "settings": SETTINGS,
        "statistics": STATISTICS,
        "results": results,
        "mteb_paths": mteb,
        "csv_path": str(tmp_path / "s.csv"),
        "md_path": str(tmp_path / "s.md"),
        "json_path": str(tmp_path / "s.json"),
        **paths,
    }
    with pytest.raises(SystemExit) as done:
        main(["table", *to_argv(flags)])
    assert done.value.code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["seed_groups"] == [] and summary["tables"][0]["tests"] == []
    assert set(summary["tables"][0]["intervals"]) == set(MODELS)
