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
        log:
            "resources/logs/demo_assets.log",
        conda:
            "../envs/data.yaml"
        params:
            settings=get_generator_flags("demo"),
            code=get_code("synthetic.demo"),
        shell:
            "logged {log:q} python -m workflow_scripts demo make --out-dir {output:q} {params.settings}"


if "rehearsal" in config:

    localrules:
        rehearsal_assets,

    rule rehearsal_assets:
        output:
            directory(config["rehearsal"]["assets_dir"]),
        log:
            "resources/logs/rehearsal_assets.log",
        conda:
            "../envs/data.yaml"
        params:
            settings=get_generator_flags("rehearsal"),
            code=get_code("synthetic.rehearsal"),
        shell:
            "logged {log:q} python -m workflow_scripts rehearsal make --out {output:q} {params.settings}"


rule download:
    input:
        get_download_input,
    output:
        manifest=MANIFEST,
    log:
        "resources/logs/download/{source}.log",
    benchmark:
        "resources/benchmarks/download/{source}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        settings=get_source_flags,
        code=get_code("sources.hub"),  # the module `data fetch` runs: shard code is not a download's
    shell:
        "logged {log:q} python -m workflow_scripts data fetch --name {wildcards.source} --cache-dir resources/hub"
        " --manifest {output.manifest:q} {params.settings}"


rule build_shards:
    input:
        manifests=get_stage_manifests,
        tokenizer=BASE_MODEL,
    output:
        shards=directory(SHARDS),
        stats=report(
            f"{RUN}/shards/{{stage}}.stats.json",
            caption="../report/data_stats.rst",
            category="2. Data",
            labels={"stage": "{stage}", "what": "statistics (JSON)"},
        ),
    log:
        f"{LOGS}/build_shards/{{stage}}.log",
    benchmark:
        f"{BENCH}/build_shards/{{stage}}.tsv"
    conda:
        "../envs/data.yaml"
    threads: 2
    resources:
        **get_partition("cpu"),
    params:
        settings=get_shard_flags,
        code=get_code("shards.build"),  # the module `data build-shards` runs
    shell:
        "logged {log:q} python -m workflow_scripts data build-shards --stage {wildcards.stage} --manifests {input.manifests:q}"
        " --tokenizer-manifest {input.tokenizer:q} --out-dir {output.shards:q} --stats-path {output.stats:q}"
        " --threads {threads} {params.settings}"
