# BRIGHT evaluation: one job per model x split, then the summary table.


localrules:
    summarize,


rule evaluate:
    input:
        model=get_eval_model,
        bright=BRIGHT,
    output:
        json=EVAL,
        run=RUN_FILE,
    params:
        settings=get_eval_flags,
        code=get_code("evaluate"),
    resources:
        **get_partition("gpu"),
    conda:
        "../envs/evaluate.yaml"
    log:
        f"{LOGS}/evaluate/{{model}}/{{split}}.log",
    benchmark:
        f"{BENCH}/evaluate/{{model}}/{{split}}.tsv"
    shell:
        "logged {log:q} python -m workflow_scripts.evaluate split --model-name {wildcards.model} --split {wildcards.split}"
        " --model-path {input.model:q} --bright-manifest {input.bright:q}"
        " --out-json {output.json:q} --run-file {output.run:q} {params.settings}"


rule summarize:
    input:
        expand(EVAL, model=get_eval_models(), split=SPLITS),
    output:
        csv=f"{RUN}/summary.csv",
        md=f"{RUN}/summary.md",
        json=f"{RUN}/summary.json",
        mteb=expand(f"{RUN}/mteb/{{model}}/BrightRetrieval.json", model=get_eval_models()),
    params:
        settings=get_summary_flags,
        code=get_code("summarize"),
    conda:
        "../envs/evaluate.yaml"
    log:
        f"{LOGS}/summarize.log",
    shell:
        "logged {log:q} python -m workflow_scripts.summarize table --results {input:q} --csv-path {output.csv:q} --md-path {output.md:q}"
        " --json-path {output.json:q} --mteb-paths {output.mteb:q} {params.settings}"
