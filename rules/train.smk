# Training stages, one rule each (same module): the stage picks data, init model and lr.
# {mid} is the stage's name for the main experiment, "<experiment>-<stage>" for a variant.
# Under Slurm the job spans train.nodes x train.gpus_per_node GPUs (profile slurm/), and
# launch.sh starts one process per GPU with srun; locally it is one process.


rule train_stage1:
    input:
        init=get_init_model,
        shards=SHARDS.format(stage="stage1"),
    output:
        model=directory(f"{RUN}/models/{{mid}}"),
        metrics=report(
            f"{RUN}/train/{{mid}}.metrics.jsonl",
            caption="../report/train_metrics.rst",
            category="4. Training",
            labels={"model": "{mid}", "figure": "per-step metrics (JSONL)"},
        ),
        meta=f"{RUN}/train/{{mid}}.meta.json",
    log:
        f"{LOGS}/train/{{mid}}.log",
    benchmark:
        f"{BENCH}/train/{{mid}}.tsv"
    wildcard_constraints:
        mid=MADE_ID.format(kind="stage1"),
    conda:
        "../envs/train.yaml"
    resources:
        **get_train_resources(),
    params:
        settings=get_train_flags,
        # checkpoints outlive a failed job (Snakemake deletes its outputs): resume from them
        checkpoints=f"{RUN}/checkpoints/{{mid}}",
        code=get_code("train.stage", "launch.sh"),
        usage=usage_of(f"{BENCH}/train/{{mid}}.tsv"),
    shell:
        'REASON_COLBERT_USAGE={params.usage:q} logged {log:q} bash "$REASON_COLBERT_REPO/workflow_scripts/launch.sh"'
        " python -m workflow_scripts train fit"
        " --init-model {input.init:q} --shards {input.shards:q} --out-dir {output.model:q}"
        " --metrics-path {output.metrics:q} --meta-path {output.meta:q} --checkpoint-dir {params.checkpoints:q}"
        " {params.settings}"


use rule train_stage1 as train_stage2 with:
    input:
        init=get_init_model,
        shards=SHARDS.format(stage="stage2"),
    wildcard_constraints:
        mid=MADE_ID.format(kind="stage2"),
