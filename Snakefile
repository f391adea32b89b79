# Reason-mxbai-colbert-v0-32m, reproduced: data -> widen -> stage 1 -> stage 2 -> BRIGHT -> report.
# This file is the table of contents; helpers live in rules/common.smk, logic in workflow_scripts/.
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

min_version("9.0")

# Each config file read strictly first: a key given twice (Snakemake keeps the later one) or a YAML
# tag is one line naming the file (workflow_scripts/config_files.py load_config_file).
sys.path.insert(0, workflow.basedir)
from workflow_scripts.config_files import config_file_problems

if _problems := config_file_problems([os.path.join(workflow.basedir, "config.yaml"), *workflow.overwrite_configfiles]):
    raise WorkflowError("\n".join(_problems))


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


# warm_start: true (the demo): a local run forks its jobs from one process that imported torch/PyLate once (warm.py).
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
