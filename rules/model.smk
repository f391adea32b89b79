# Model stage: widen the last projection (64 -> widen.to), verified before anything trains on it.
# {mid} is "widened" for the main experiment, "<experiment>-widened" for a variant of it.


rule widen:
    input:
        source=get_init_model,
    output:
        model=directory(f"{RUN}/models/{{mid}}"),
        verify=report(
            f"{RUN}/models/{{mid}}.verify.json",
            caption="../report/widen.rst",
            category="3. Model",
            labels={"model": "{mid}", "figure": "widening verification (JSON)"},
        ),
    log:
        f"{LOGS}/widen/{{mid}}.log",
    benchmark:
        f"{BENCH}/widen/{{mid}}.tsv"
    wildcard_constraints:
        mid=MADE_ID.format(kind="widened"),
    conda:
        "../envs/model.yaml"
    resources:
        **get_partition("cpu"),
    params:
        settings=get_widen_flags,
        code=get_code("model.widen"),
        usage=usage_of(f"{BENCH}/widen/{{mid}}.tsv"),
    shell:
        "REASON_COLBERT_USAGE={params.usage:q} logged {log:q} python -m workflow_scripts model widen"
        " --source {input.source:q} --out-dir {output.model:q}"
        " --verify-path {output.verify:q} {params.settings}"
