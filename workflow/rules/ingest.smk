rule ingest:
    input:
        lambda wildcards: produced(raw_path(wildcards)),
    output:
        directory("results/ingest/{configuration}/{fov}.zarr"),
    log:
        "logs/ingest/{configuration}/{fov}.log",
    conda:
        N2SR_ENV
    params:
        source=raw_path,
    shell:
        "n2sr ingest -- {params.source:q} {output:q} > {log:q} 2>&1"
