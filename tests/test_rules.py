"""The workflow's own files: captions, lint, the demo overlay, BRIGHT facts."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import yaml
from conftest import REPO, VENV_BIN


def test_captions_name_only_their_rules_wildcards(tmp_path):
    from snakemake.api import SnakemakeApi
    from snakemake.settings import types as s

    checked = 0
    with SnakemakeApi(s.OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=s.ResourceSettings(cores=1),
            storage_settings=s.StorageSettings(),
            config_settings=s.ConfigSettings(configfiles=[REPO / "demo/config.yaml"]),
            snakefile=REPO / "Snakefile",
            workdir=tmp_path,
        )._workflow
        for rule in workflow.rules:
            for output in rule.output:
                report = getattr(output, "flags", {}).get("report")
                if report is None:
                    continue
                used = set(re.findall(r"snakemake\.wildcards\.(\w+)", Path(report.caption).read_text()))
                assert used <= set(rule.wildcard_names), f"{rule.name}: caption {report.caption} uses {used}"
                checked += 1
    assert checked >= 10


def test_lint_is_clean(tmp_path):
    proc = subprocess.run(
        [
            f"{VENV_BIN}/snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--lint",
            "--configfile",
            str(REPO / "demo/config.yaml"),
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr, proc.stdout


def _leaves(value, prefix=""):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, f"{prefix}/{key}")
    else:
        yield prefix, value


def test_demo_overlay_holds_only_what_differs():
    base = dict(_leaves(yaml.safe_load((REPO / "config.yaml").read_text())))
    demo = dict(_leaves(yaml.safe_load((REPO / "demo/config.yaml").read_text())))
    repeated = [key for key, value in demo.items() if key in base and base[key] == value]
    assert repeated == [], f"demo/config.yaml repeats config.yaml at {repeated}"


def test_bright_facts_agree_with_mteb():
    import mteb

    from workflow_scripts.bright import meta as bright_meta

    metadata = mteb.get_task(bright_meta.TASK_NAME).metadata
    assert sorted(metadata.hf_subsets) == sorted(bright_meta.SPLITS)
    assert metadata.dataset == {"path": bright_meta.REPO, "revision": bright_meta.REVISION}
    assert metadata.main_score == "ndcg_at_10"
    assert set(bright_meta.DOMAINS) == set(bright_meta.SPLITS)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["sources"]["bright"] == {
        "repo": bright_meta.REPO,
        "repo_type": "dataset",
        "revision": bright_meta.REVISION,
        "local": None,
    }
    assert config["evaluate"]["splits"] == bright_meta.SPLITS  # the card evaluates all 12


def test_every_forked_rule_names_its_usage_sidecar_beside_its_benchmark(tmp_path):
    """A rule whose job may be forked (warm.FORKED_STAGES) tells the client where the child's usage goes, and
    that is where the cost page looks: job_usage.sidecar of the rule's benchmark. The failure path of every
    rule (`logged`) shows the log's last line and knows no module's log prefix."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings import types as s

    from workflow_scripts.job_usage import ENV_VAR, sidecar
    from workflow_scripts.warm import FORKED_STAGES

    common = (REPO / "rules/common.smk").read_text()
    call = common[common.index("shell.prefix(") :].split("\n)\n", 1)[0] + "\n)"
    prefix = ast.literal_eval(call.removeprefix("shell.prefix"))  # the string itself, however it is quoted
    assert 'tail -n 1 "$log"' in prefix and "warm" not in prefix and "grep" not in prefix, prefix
    checked = 0
    with SnakemakeApi(s.OutputSettings()) as api:
        workflow = api.workflow(
            resource_settings=s.ResourceSettings(cores=1),
            storage_settings=s.StorageSettings(),
            config_settings=s.ConfigSettings(configfiles=[REPO / "demo/config.yaml"]),
            snakefile=REPO / "Snakefile",
            workdir=tmp_path,
        )._workflow
        for rule in workflow.rules:
            stage = re.search(r"python -m workflow_scripts (\w+)", rule.shellcmd or "")
            if not stage or stage.group(1) not in FORKED_STAGES or rule.benchmark is None:
                continue
            benchmark = re.sub(r"\{(\w+),[^{}]*\}", r"{\1}", str(rule.benchmark))  # the constraints aside
            assert str(rule.params.usage) == str(sidecar(benchmark)), rule.name
            assert rule.shellcmd.startswith(f"{ENV_VAR}={{params.usage:q}} logged "), rule.name
            checked += 1
    assert checked >= 6  # widen, two training stages, three evaluation shapes
