# BRIGHT evaluation: one job per model x split (aops + theoremqa_questions: one job, their one
# corpus), each encoding its documents once and scoring every protocol on them; then the
# summary tables. Three rules, one per shape of output (protocols.evaluation_rules), one body:
#   evaluate                 a split every protocol covers
#   evaluate_documents_only  a split without long documents, when a protocol reads them
#   evaluate_shared_corpus   aops and theoremqa_questions together
EVALUATE = (
    "REASON_COLBERT_USAGE={params.usage:q} logged {log:q} python -m workflow_scripts evaluate job"
    " --model-name {wildcards.model} --model-path {input.model:q}"
    " --bright-manifest {input.bright:q} --out-json {output.json:q} --run-file {output.run:q} {params.settings}"
)


localrules:
    summarize,


# One rule body for the three shapes: each gets its outputs, split constraint, log and benchmark
# from its protocols.evaluation_rules entry (a shared-corpus job is named by its splits).
for _evaluation in EVAL_RULES.values():

    rule:
        name:
            _evaluation.name
        input:
            model=get_eval_model,
            bright=BRIGHT,
        output:
            json=get_eval_outputs(_evaluation.name, "json"),
            run=get_eval_outputs(_evaluation.name, "run"),
        log:
            get_eval_log(_evaluation.name, LOGS, "log"),
        benchmark:
            get_eval_log(_evaluation.name, BENCH, "tsv")
        wildcard_constraints:
            split=get_eval_splits(_evaluation.name),
        conda:
            "../envs/evaluate.yaml"
        resources:
            **get_partition("gpu"),
        params:
            settings=get_eval_flags,
            code=get_code("evaluate.job"),
            usage=usage_of(get_eval_log(_evaluation.name, BENCH, "tsv")),
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
    log:
        f"{LOGS}/summarize.log",
    conda:
        "../envs/evaluate.yaml"
    params:
        settings=get_summary_flags,
        code=get_code("summarize"),
    shell:
        "logged {log:q} python -m workflow_scripts summarize table --results {input.results:q}"
        " --run-files {input.runs:q} --bright-manifest {input.bright:q} --csv-path {output.csv:q} --md-path {output.md:q}"
        " --json-path {output.json:q} --per-query-path {output.per_query:q} --intervals-path {output.intervals:q}"
        " --tests-path {output.tests:q} --mteb-paths {output.mteb:q} {params.settings}"
