# Model stage: widen the last projection (64 -> widen.to), verified before anything trains on it.


if is_widened():

    rule widen:
        input:
            source=get_widen_source(),
            code=get_code("model"),
        output:
            model=directory(MODEL.format(model="widened")),
            verify=report(
                f"{RUN}/models/widened.verify.json",
                caption="../report/widen.rst",
                category="3. Model",
                labels={"what": "widening verification (JSON)"},
            ),
        params:
            args=get_widen_args(),
        conda:
            "../envs/model.yaml"
        log:
            f"{LOGS}/widen.log",
        benchmark:
            f"{BENCH}/widen.tsv"
        shell:
            "python -m workflow_scripts.model widen --source {input.source} --out {output.model}"
            " --verify {output.verify} --args {params.args:q} > {log} 2>&1"
