# Report assets: figures and tables that `snakemake --report report.html` embeds.
# Each is a cheap job, so changing a caption (report/*.rst) reruns nothing at all.
REPORT = f"{RUN}/report"


localrules:
    report_summary,
    report_bright,
    report_intervals,
    report_tests,
    report_training,
    report_data,
    report_data_tables,
    report_widen,
    report_provenance,
    report_cost,


rule report_summary:
    input:
        summary=f"{RUN}/summary.json",
    output:
        report(
            f"{REPORT}/summary.html",
            caption="../report/summary.rst",
            category="1. Results",
            labels={"figure": "summary tables per protocol"},
        ),
    log:
        f"{LOGS}/report/summary.log",
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report summary --summary-json {input.summary:q} --out {output:q}"


rule report_bright:
    input:
        summary=f"{RUN}/summary.json",
    output:
        report(
            f"{REPORT}/bright_ndcg10.png",
            caption="../report/bright.rst",
            category="1. Results",
            labels={"figure": "nDCG@10 per split and protocol"},
        ),
    log:
        f"{LOGS}/report/bright.log",
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report bright --summary-json {input.summary:q} --out {output:q}"


rule report_intervals:
    input:
        summary=f"{RUN}/summary.json",
    output:
        report(
            f"{REPORT}/intervals/{{protocol}}.png",
            caption="../report/intervals.rst",
            category="1. Results",
            labels={"figure": "nDCG@10 with intervals: {protocol}"},
        ),
    log:
        f"{LOGS}/report/intervals/{{protocol}}.log",
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report intervals --summary-json {input.summary:q}"
        " --protocol {wildcards.protocol:q} --out {output:q}"


rule report_tests:
    input:
        summary=f"{RUN}/summary.json",
    output:
        report(
            f"{REPORT}/paired_tests.html",
            caption="../report/paired_tests.rst",
            category="1. Results",
            labels={"figure": "paired tests between models"},
        ),
    log:
        f"{LOGS}/report/paired_tests.log",
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report tests --summary-json {input.summary:q} --out {output:q}"


rule report_training:
    input:
        metrics=get_training_metrics().values(),
    output:
        report(
            f"{REPORT}/training_curves.png",
            caption="../report/training.rst",
            category="4. Training",
            labels={"figure": "training curves"},
        ),
    log:
        f"{LOGS}/report/training.log",
    conda:
        "../envs/report.yaml"
    params:
        labels=list(get_training_metrics()),
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report training --labels {params.labels:q} --metrics {input.metrics:q}"
        " --out {output:q}"


rule report_data:
    input:
        stats=expand(rules.build_shards.output.stats, stage=["stage1", "stage2"]),
    output:
        report(
            f"{REPORT}/data_stats.png",
            caption="../report/data.rst",
            category="2. Data",
            labels={"figure": "training data"},
        ),
    log:
        f"{LOGS}/report/data.log",
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report data --stats {input.stats:q} --out {output:q}"


rule report_data_tables:
    input:
        stats=expand(rules.build_shards.output.stats, stage=["stage1", "stage2"]),
    output:
        report(
            f"{REPORT}/data_tables.html",
            caption="../report/data_tables.rst",
            category="2. Data",
            labels={"figure": "rows, drops, contamination audit"},
        ),
    log:
        f"{LOGS}/report/data_tables.log",
    conda:
        "../envs/report.yaml"
    params:
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report data_tables --stats {input.stats:q} --out {output:q}"


rule report_widen:
    input:
        verify=get_widen_verifications().values(),
    output:
        report(
            f"{REPORT}/widen.html",
            caption="../report/widen.rst",
            category="3. Model",
            labels={"figure": "widening verification"},
        ),
    log:
        f"{LOGS}/report/widen.log",
    conda:
        "../envs/report.yaml"
    params:
        labels=list(get_widen_verifications()),
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report widen --labels {params.labels:q} --verify {input.verify:q}"
        " --out {output:q}"


rule report_provenance:
    input:
        manifests=expand(MANIFEST, source=get_used_sources()),
    output:
        report(
            f"{REPORT}/provenance.html",
            caption="../report/provenance.rst",
            category="5. Provenance",
            labels={"figure": "provenance"},
        ),
    log:
        f"{LOGS}/report/provenance.log",
    conda:
        "../envs/report.yaml"
    params:
        settings=get_provenance_flags,
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report provenance --manifests {input.manifests:q} --out {output:q}"
        " {params.settings}"


rule report_cost:
    input:
        benchmarks=get_benchmarks(),
    output:
        report(
            f"{REPORT}/cost.html",
            caption="../report/cost.rst",
            category="5. Provenance",
            labels={"figure": "cost per job"},
        ),
    log:
        f"{LOGS}/report/cost.log",
    conda:
        "../envs/report.yaml"
    params:
        settings=get_cost_flags,
        code=get_code("report"),
    shell:
        "logged {log:q} python -m workflow_scripts report cost --benchmarks {input.benchmarks:q} --out {output:q}"
        " {params.settings}"
