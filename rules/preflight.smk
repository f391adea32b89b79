# Preflight (issue #13): every heavy stage of the configured recipe, at the real shapes and on
# the configured hardware, for a bounded amount of work; then the cost forecast. Target:
#   snakemake --profile slurm preflight        (locally: snakemake --cores N preflight)
# It reuses the real download, build_shards and widen jobs (their benchmark files are the data
# measurement) and adds one measuring job per training stage, one for evaluation, one forecast.
# The measuring jobs take two cores each, so that locally they run one at a time and do not
# slow each other's measurement.


localrules:
    preflight_forecast,


rule preflight_train:
    input:
        init=get_preflight_init,
        shards=SHARDS,
    output:
        json=f"{PREFLIGHT}/train_{{stage}}.json",
    log:
        f"{LOGS}/preflight/train_{{stage}}.log",
    benchmark:
        f"{BENCH}/preflight/train_{{stage}}.tsv"
    conda:
        "../envs/train.yaml"
    threads: 2
    resources:
        **get_train_resources(),
    params:
        settings=get_preflight_train_flags,
        code=get_code("preflight.measure_train", "launch.sh"),
    shell:
        'logged {log:q} bash "$REASON_COLBERT_REPO/workflow_scripts/launch.sh" python -m workflow_scripts preflight train'
        " --stage {wildcards.stage} --init-model {input.init:q} --shards {input.shards:q} --out-json {output.json:q}"
        " --threads {threads} {params.settings}"


rule preflight_evaluate:
    input:
        model=get_preflight_model("evaluate"),
        bright=BRIGHT,
    output:
        json=f"{PREFLIGHT}/evaluate.json",
    log:
        f"{LOGS}/preflight/evaluate.log",
    benchmark:
        f"{BENCH}/preflight/evaluate.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 2
    resources:
        **get_partition("gpu"),
    params:
        settings=get_preflight_eval_flags,
        code=get_code("preflight.measure_evaluate"),
    shell:
        "logged {log:q} python -m workflow_scripts preflight evaluate --model-path {input.model:q}"
        " --bright-manifest {input.bright:q} --out-json {output.json:q} --threads {threads} {params.settings}"


rule preflight_forecast:
    input:
        train=expand(f"{PREFLIGHT}/train_{{stage}}.json", stage=["stage1", "stage2"]),
        evaluate=f"{PREFLIGHT}/evaluate.json",
        stats=expand(rules.build_shards.output.stats, stage=["stage1", "stage2"]),
        benchmarks=expand(f"{BENCH}/build_shards/{{stage}}.tsv", stage=["stage1", "stage2"]),
        widen=get_preflight_widen,
    output:
        json=f"{RUN}/preflight.json",
        md=f"{RUN}/preflight.md",
        html=report(
            f"{RUN}/report/preflight.html",
            caption="../report/preflight.rst",
            category="6. Cost forecast",
            labels={"figure": "cost forecast"},
        ),
    log:
        f"{LOGS}/preflight/forecast.log",
    conda:
        "../envs/report.yaml"
    params:
        settings=get_preflight_forecast_flags,
        code=get_code("preflight.forecast"),
    shell:
        "logged {log:q} python -m workflow_scripts preflight forecast --train {input.train:q} --evaluate {input.evaluate:q}"
        " --shard-stats {input.stats:q} --shard-benchmarks {input.benchmarks:q} --widen {input.widen:q}"
        " --out-json {output.json:q} --out-md {output.md:q} --out-html {output.html:q} {params.settings}"
