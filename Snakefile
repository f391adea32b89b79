# Reason-mxbai-colbert-v0-32m, reproduced: data -> widen -> stage 1 -> stage 2 -> BRIGHT -> report.
# This file is the table of contents; helpers live in rules/common.smk, logic in workflow_scripts/.
import os

from snakemake.utils import min_version

min_version("9.0")


# Defaults = the full reproduction; --configfile overlays (demo, tests) are merged over them.
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/preflight.smk"


# A local run forks every job from one process that imported torch/PyLate once (warm.py).
onstart:
    start_warm_server()


onsuccess:
    stop_warm_server()


onerror:
    stop_warm_server()


rule all:
    default_target: True
    input:
        get_final_output(),


# Before the real run: every heavy stage at the real shapes, bounded, and a cost forecast
# (results/<run>/preflight.{json,md}; README "Preflight").
rule preflight:
    input:
        get_preflight_output(),
