# Model stage: widen the last projection (64 -> widen.to), verified before anything trains on it.
# {mid} is "widened" for the first experiment, "<experiment>-widened" for a variant of it.


rule widen:
    input:
        source=get_init_model,
        code=get_code("model"),
    output:
        model=directory(f"{RUN}/models/{{mid}}"),
        verify=report(
            f"{RUN}/models/{{mid}}.verify.json",
            caption="../report/widen.rst",
            category="3. Model",
            labels={"model": "{mid}", "figure": "widening verification (JSON)"},
        ),
    wildcard_constraints:
        mid=MADE_ID.format(kind="widened"),
    params:
        args=get_widen_args,
    resources:
        **get_partition("cpu"),
    conda:
        "../envs/model.yaml"
    log:
        f"{LOGS}/widen/{{mid}}.log",
    benchmark:
        f"{BENCH}/widen/{{mid}}.tsv"
    shell:
        "python -m workflow_scripts.model widen --source {input.source} --out {output.model}"
        " --verify {output.verify} --args {params.args:q} > {log} 2>&1"
