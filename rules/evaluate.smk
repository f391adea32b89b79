# BRIGHT evaluation: one job per model x split, then the summary table.


localrules:
    summarize,


rule evaluate:
    input:
        model=lambda wildcards: get_model_path(wildcards.model),
        code=get_code("evaluate"),
        bright=MANIFEST.format(source="bright"),
    output:
        json=EVAL,
        run=RUN_FILE,
    params:
        args=get_eval_args,
    resources:
        **get_partition("gpu"),
    conda:
        "../envs/evaluate.yaml"
    log:
        f"{LOGS}/evaluate/{{model}}/{{split}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{split}}.tsv"
    shell:
        "python -m workflow_scripts.evaluate split --args {params.args:q} > {log} 2>&1"


rule summarize:
    input:
        expand(EVAL, model=get_eval_models(), split=SPLITS),
        code=get_code("summarize"),
    output:
        csv=f"{RUN}/summary.csv",
        md=f"{RUN}/summary.md",
        json=f"{RUN}/summary.json",
        mteb=expand(f"{RUN}/mteb/{{model}}/BrightRetrieval.json", model=get_eval_models()),
    params:
        args=get_summary_args,
    conda:
        "../envs/evaluate.yaml"
    log:
        f"{LOGS}/summarize.log",
    shell:
        "python -m workflow_scripts.summarize --args {params.args:q} > {log} 2>&1"
