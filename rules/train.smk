# Training stages, one rule each (same module): the stage picks data, init model and lr.
# Under Slurm the job spans train.nodes x train.gpus_per_node GPUs (profile slurm/), and
# launch.sh starts one process per GPU with srun; locally it is one process.


rule train_stage1:
    input:
        init=get_init_model("stage1"),
        code=get_code("train"),
        shards=SHARDS.format(stage="stage1"),
    output:
        model=directory(MODEL.format(model="stage1")),
        metrics=report(
            f"{RUN}/train/stage1.metrics.jsonl",
            caption="../report/train_metrics.rst",
            category="4. Training",
            labels={"stage": "stage1", "what": "per-step metrics (JSONL)"},
        ),
        meta=f"{RUN}/train/stage1.meta.json",
    params:
        args=get_train_args,
        launcher=get_launcher(),
    resources:
        **get_train_resources(),
    conda:
        "../envs/train.yaml"
    log:
        f"{LOGS}/train/stage1.log",
    benchmark:
        f"{BENCH}/train/stage1.tsv"
    shell:
        "bash {params.launcher}"
        " python -m workflow_scripts.train --args {params.args:q} > {log} 2>&1"


use rule train_stage1 as train_stage2 with:
    input:
        init=get_init_model("stage2"),
        code=get_code("train"),
        shards=SHARDS.format(stage="stage2"),
    output:
        model=directory(MODEL.format(model="stage2")),
        metrics=report(
            f"{RUN}/train/stage2.metrics.jsonl",
            caption="../report/train_metrics.rst",
            category="4. Training",
            labels={"stage": "stage2", "what": "per-step metrics (JSONL)"},
        ),
        meta=f"{RUN}/train/stage2.meta.json",
    log:
        f"{LOGS}/train/stage2.log",
    benchmark:
        f"{BENCH}/train/stage2.tsv"
