# Report assets: figures and tables that `snakemake --report report.html` embeds.
# Each is a cheap job, so changing a caption (report/*.rst) reruns nothing at all.
REPORT = f"{RUN}/report"


localrules:
    report_summary,
    report_bright,
    report_training,
    report_data,
    report_data_tables,
    report_widen,
    report_provenance,
    report_cost,


rule report_summary:
    input:
        f"{RUN}/summary.json",
    output:
        report(f"{REPORT}/summary.html", caption="../report/summary.rst", category="1. Results", labels={"figure": "summary table"}),
    params:
        args=lambda wildcards, input, output: json.dumps({"summary_json": input[0], "out": output[0]}),
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/summary.log",
    shell:
        "python -m workflow_scripts.report summary --args {params.args:q} > {log} 2>&1"


rule report_bright:
    input:
        f"{RUN}/summary.json",
    output:
        report(f"{REPORT}/bright_ndcg10.png", caption="../report/bright.rst", category="1. Results", labels={"figure": "nDCG@10 per split"}),
    params:
        args=lambda wildcards, input, output: json.dumps({"summary_json": input[0], "out": output[0]}),
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/bright.log",
    shell:
        "python -m workflow_scripts.report bright --args {params.args:q} > {log} 2>&1"


rule report_training:
    input:
        get_training_metrics().values(),
    output:
        report(f"{REPORT}/training_curves.png", caption="../report/training.rst", category="4. Training", labels={"figure": "training curves"}),
    params:
        args=lambda wildcards, input, output: json.dumps({"metrics": get_training_metrics(), "out": output[0]}),
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/training.log",
    shell:
        "python -m workflow_scripts.report training --args {params.args:q} > {log} 2>&1"


rule report_data:
    input:
        expand(f"{RUN}/shards/{{stage}}.stats.json", stage=["stage1", "stage2"]),
    output:
        report(f"{REPORT}/data_stats.png", caption="../report/data.rst", category="2. Data", labels={"figure": "training data"}),
    params:
        args=lambda wildcards, input, output: json.dumps({"stats": dict(zip(["stage1", "stage2"], input)), "out": output[0]}),
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/data.log",
    shell:
        "python -m workflow_scripts.report data --args {params.args:q} > {log} 2>&1"


rule report_data_tables:
    input:
        expand(f"{RUN}/shards/{{stage}}.stats.json", stage=["stage1", "stage2"]),
    output:
        report(
            f"{REPORT}/data_tables.html",
            caption="../report/data_tables.rst",
            category="2. Data",
            labels={"figure": "rows, drops, contamination audit"},
        ),
    params:
        args=lambda wildcards, input, output: json.dumps(
            {"stats": dict(zip(["stage1", "stage2"], input)), "out": output[0]}
        ),
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/data_tables.log",
    shell:
        "python -m workflow_scripts.report data_tables --args {params.args:q} > {log} 2>&1"


rule report_widen:
    input:
        get_widen_verifications().values(),
    output:
        report(f"{REPORT}/widen.html", caption="../report/widen.rst", category="3. Model", labels={"figure": "widening verification"}),
    params:
        args=lambda wildcards, input, output: json.dumps({"verify": get_widen_verifications(), "out": output[0]}),
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/widen.log",
    shell:
        "python -m workflow_scripts.report widen --args {params.args:q} > {log} 2>&1"


rule report_provenance:
    input:
        manifests=expand(MANIFEST, source=get_used_sources()),
    output:
        report(f"{REPORT}/provenance.html", caption="../report/provenance.rst", category="5. Provenance", labels={"figure": "provenance"}),
    params:
        args=get_provenance_args,
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/provenance.log",
    shell:
        "python -m workflow_scripts.report provenance --args {params.args:q} > {log} 2>&1"


rule report_cost:
    input:
        get_benchmarks(),
    output:
        report(f"{REPORT}/cost.html", caption="../report/cost.rst", category="5. Provenance", labels={"figure": "cost per job"}),
    params:
        args=get_cost_args,
    conda:
        "../envs/report.yaml"
    log:
        f"{LOGS}/report/cost.log",
    shell:
        "python -m workflow_scripts.report cost --args {params.args:q} > {log} 2>&1"
