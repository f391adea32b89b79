# Data stage: sources (hub downloads or local mirrors) -> parquet triple shards per stage.


# Downloads run where the hub is reachable (the submit host), not on offline compute nodes.
localrules:
    download,


if "demo" in config:

    localrules:
        demo_assets,

    rule demo_assets:
        output:
            directory(config["demo"]["assets_dir"]),
        params:
            args=json.dumps({k: v for k, v in config["demo"].items() if k != "assets_dir"}),
        conda:
            "../envs/data.yaml"
        log:
            "resources/logs/demo_assets.log",
        shell:
            "python -m workflow_scripts.demo {output} --args {params.args:q} > {log} 2>&1"


rule download:
    input:
        get_download_input,
    output:
        manifest=MANIFEST,
    params:
        source=get_source_args,
    conda:
        "../envs/data.yaml"
    log:
        "resources/logs/download/{source}.log",
    benchmark:
        "resources/benchmarks/download/{source}.tsv"
    shell:
        "python -m workflow_scripts.data fetch --args {params.source:q} > {log} 2>&1"


rule build_shards:
    input:
        unpack(get_stage_manifests),
        code=get_code("data"),
        tokenizer=BASE_MODEL,
    output:
        shards=directory(SHARDS),
        stats=report(
            f"{RUN}/shards/{{stage}}.stats.json",
            caption="../report/data_stats.rst",
            category="2. Data",
            labels={"stage": "{stage}", "what": "statistics (JSON)"},
        ),
    params:
        args=get_shard_args,
    resources:
        **get_partition("cpu"),
    threads: 2
    conda:
        "../envs/data.yaml"
    log:
        f"{LOGS}/build_shards/{{stage}}.log",
    benchmark:
        f"{BENCH}/build_shards/{{stage}}.tsv"
    shell:
        "python -m workflow_scripts.data build-shards --args {params.args:q} > {log} 2>&1"
