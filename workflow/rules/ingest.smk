# With denoise.part_size set, ingest is a checkpoint: how many jobs a stack's denoise and
# evaluation are scattered over (K) is read from the ingested Zarr's shape once it exists, and
# Snakemake completes the DAG then (common.smk: stack_parts). Otherwise a plain rule.
if PART_SIZE:

    checkpoint ingest:
        input:
            lambda wildcards: produced(raw_path(wildcards)),
        output:
            directory("results/ingest/{configuration}/{fov}.zarr"),
        log:
            "logs/ingest/{configuration}/{fov}.log",
        benchmark:
            bench("ingest", "{configuration}/{fov}")
        conda:
            N2SR_ENV
        params:
            source=raw_path,
        shell:
            "n2sr ingest -- {params.source:q} {output:q} > {log:q} 2>&1"

else:

    rule ingest:
        input:
            lambda wildcards: produced(raw_path(wildcards)),
        output:
            directory("results/ingest/{configuration}/{fov}.zarr"),
        log:
            "logs/ingest/{configuration}/{fov}.log",
        benchmark:
            bench("ingest", "{configuration}/{fov}")
        conda:
            N2SR_ENV
        params:
            source=raw_path,
        shell:
            "n2sr ingest -- {params.source:q} {output:q} > {log:q} 2>&1"
