"""Class "outputs that are trusted when they should not be" (issue 25).

A result file is what a user reads and what the summary adds up: a per-split result deleted by
hand must come back with a plain rerun, and a result whose number its own run file contradicts
(edited by hand, or a run that is not its own) must never reach the summary.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, snakemake
from test_evaluate import run_job
from test_summarize import SETTINGS, statistics_args

from workflow_scripts.bright.protocols import mteb_files, resolve
from workflow_scripts.errors import UserError
from workflow_scripts.summarize import summarize

NAMES = ["card", "bright"]
SPLITS = ["pony", "biology"]


@pytest.fixture(scope="module")
def evaluated_once(demo_assets, tmp_path_factory):
    """Real results and run files of two protocols on two splits (evaluated once for the module)."""
    from workflow_scripts.sources.hub import fetch_source

    root = tmp_path_factory.mktemp("trusted")
    manifest = root / "bright.manifest.json"
    fetch_source(
        name="bright",
        repo="org/bright",
        revision="a" * 40,
        repo_type="dataset",
        local=str(demo_assets / "BRIGHT"),
        cache_dir=root / "hub",
        manifest=manifest,
    )
    pairs = []
    for split in SPLITS:
        pairs += run_job(demo_assets, str(manifest), root / "eval", [split], NAMES)[0]
    return root, manifest, pairs


@pytest.fixture()
def evaluated(evaluated_once, tmp_path):
    """The summary's arguments over a private copy of the results."""
    root, manifest, pairs = evaluated_once
    shutil.copytree(root / "eval", tmp_path / "eval")
    protocols = [p.summary(SPLITS) for p in resolve(dict.fromkeys(NAMES)).values()]
    return dict(
        results=[str(tmp_path / "eval" / p / f"{s}.json") for p, s in pairs],
        models=["base"],
        splits=SPLITS,
        protocols=protocols,
        settings=SETTINGS,
        csv_path=str(tmp_path / "s.csv"),
        md_path=str(tmp_path / "s.md"),
        json_path=str(tmp_path / "s.json"),
        mteb_paths=[str(tmp_path / f"m{i}.json") for i, _ in enumerate(mteb_files(protocols, ["base"]))],
        run_files=[str(tmp_path / "eval" / p / f"{s}.run.trec") for p, s in pairs],
        bright_manifest=str(manifest),
        **statistics_args(tmp_path) | {"pairs": []},
    )


def edit_json(path, change):
    result = json.loads(open(path).read())
    change(next(iter(result["scores"].values()))[0])
    open(path, "w").write(json.dumps(result))


def reverse_run(path):
    """The same documents, ranked in the opposite order (scores negated)."""
    lines = [line.split() for line in open(path) if line.strip()]
    open(path, "w").write("".join(f"{q} Q0 {d} {r} {-float(s):.6f} {t}\n" for q, _, d, r, s, t in lines))


EDITS = {
    "ndcg-raised": lambda res, run: edit_json(
        res, lambda e: e.update(ndcg_at_10=e["ndcg_at_10"] + 0.05, main_score=e["main_score"] + 0.05)
    ),
    "ndcg-lowered-a-little": lambda res, run: edit_json(
        res, lambda e: e.update(ndcg_at_10=e["ndcg_at_10"] - 1e-4, main_score=e["main_score"] - 1e-4)
    ),
    "main-score-only": lambda res, run: edit_json(res, lambda e: e.update(main_score=e["main_score"] + 0.01)),
    "run-reversed": lambda res, run: reverse_run(run),
    "run-of-another-split": lambda res, run: shutil.copy(run.replace("pony", "biology"), run),
}


@pytest.mark.parametrize("protocol", NAMES)
@pytest.mark.parametrize("edit", list(EDITS))
def test_trusted_outputs_the_summary_refuses_a_result_its_run_file_contradicts(evaluated, edit, protocol):
    result = next(r for r in evaluated["results"] if r.endswith(f"/{protocol}/pony.json"))
    run = evaluated["run_files"][evaluated["results"].index(result)]
    summarize(**evaluated)  # untouched: every result agrees with its run file
    EDITS[edit](result, run)
    with pytest.raises(UserError) as err:
        summarize(**evaluated)
    message = str(err.value)
    assert "\n" not in message and message.startswith(result)
    if edit != "main-score-only":
        assert run in message and "disagrees with" in message


def test_trusted_outputs_the_workflow_passes_every_run_file_to_the_summary(tmp_path):
    """The check only runs when the rule passes the run files and the BRIGHT manifest: it does."""
    out = snakemake("-n", "-p", "--configfile", str(REPO / "demo/config.yaml"), cwd=tmp_path).stdout
    command = next(line for line in out.splitlines() if "summarize table" in line)
    results = command.split("--results ")[1].split(" --")[0].split()
    runs = command.split("--run-files ")[1].split(" --")[0].split()
    assert len(results) == len(runs) > 0
    assert [r.removesuffix(".json") for r in results] == [r.removesuffix(".run.trec") for r in runs]
    assert "--bright-manifest resources/sources/bright.manifest.json" in command


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["result", "run file", "mteb file"])
def test_trusted_outputs_a_result_deleted_by_hand_is_rebuilt_by_a_plain_rerun(demo_run, tmp_path, kind):
    """Every result a user reads is a target of `rule all`: a deleted one is scheduled again."""
    run = demo_run / "results/demo"
    pattern = {
        "result": "eval/bright/*/pony.json",
        "run file": "eval/card/*/biology.run.trec",
        "mteb file": "mteb/card/*/BrightRetrieval.json",
    }[kind]
    victim = sorted(run.glob(pattern))[0]
    keep = shutil.copy2(victim, tmp_path / victim.name)
    victim.unlink()
    try:
        out = snakemake("-n", "--configfile", str(demo_run / "demo/config.yaml"), cwd=demo_run).stdout
    finally:
        shutil.copy2(keep, victim)  # the session's demo run stays whole for the other tests
    assert "Nothing to be done" not in out
    assert str(victim.relative_to(demo_run)) in out
