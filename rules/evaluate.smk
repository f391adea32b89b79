# BRIGHT evaluation: one job per model x split (aops + theoremqa_questions: one job, their one
# corpus), each encoding its documents once and scoring every protocol on them; then the
# summary tables. Three rules, one per shape of output (protocols.evaluation_rules):
#   evaluate                 a split every protocol covers
#   evaluate_documents_only  a split without long documents, when a protocol reads them
#   evaluate_shared_corpus   aops and theoremqa_questions together
EVALUATE = (
    "logged {log:q} python -m workflow_scripts evaluate job --model-name {wildcards.model} --model-path {input.model:q}"
    " --bright-manifest {input.bright:q} --out-json {output.json:q} --run-file {output.run:q} {params.settings}"
)


localrules:
    summarize,


if "evaluate" in EVAL_RULES:

    rule evaluate:
        input:
            model=get_eval_model,
            bright=BRIGHT,
        output:
            json=get_eval_outputs("evaluate", "json"),
            run=get_eval_outputs("evaluate", "run"),
        wildcard_constraints:
            split=get_eval_splits("evaluate"),
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
            EVALUATE


if "evaluate_documents_only" in EVAL_RULES:

    rule evaluate_documents_only:
        input:
            model=get_eval_model,
            bright=BRIGHT,
        output:
            json=get_eval_outputs("evaluate_documents_only", "json"),
            run=get_eval_outputs("evaluate_documents_only", "run"),
        wildcard_constraints:
            split=get_eval_splits("evaluate_documents_only"),
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
            EVALUATE


if "evaluate_shared_corpus" in EVAL_RULES:

    rule evaluate_shared_corpus:
        input:
            model=get_eval_model,
            bright=BRIGHT,
        output:
            json=get_eval_outputs("evaluate_shared_corpus", "json"),
            run=get_eval_outputs("evaluate_shared_corpus", "run"),
        params:
            settings=get_eval_flags,
            code=get_code("evaluate"),
        resources:
            **get_partition("gpu"),
        conda:
            "../envs/evaluate.yaml"
        log:
            f"{LOGS}/evaluate/{{model}}/{get_eval_job('evaluate_shared_corpus')}.log",
        benchmark:
            f"{BENCH}/evaluate/{{model}}/{get_eval_job('evaluate_shared_corpus')}.tsv"
        shell:
            EVALUATE


rule summarize:
    input:
        results=get_eval_results(),
        runs=get_eval_runs(),
        bright=BRIGHT,
    output:
        csv=f"{RUN}/summary.csv",
        md=f"{RUN}/summary.md",
        json=f"{RUN}/summary.json",
        per_query=f"{RUN}/per_query.parquet",
        intervals=f"{RUN}/intervals.csv",
        tests=f"{RUN}/paired_tests.csv",
        mteb=get_mteb_outputs(),
    params:
        settings=get_summary_flags,
        code=get_code("summarize"),
    conda:
        "../envs/evaluate.yaml"
    log:
        f"{LOGS}/summarize.log",
    shell:
        "logged {log:q} python -m workflow_scripts summarize table --results {input.results:q}"
        " --run-files {input.runs:q} --bright-manifest {input.bright:q} --csv-path {output.csv:q} --md-path {output.md:q}"
        " --json-path {output.json:q} --per-query-path {output.per_query:q} --intervals-path {output.intervals:q}"
        " --tests-path {output.tests:q} --mteb-paths {output.mteb:q} {params.settings}"
