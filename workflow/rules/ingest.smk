# With denoise.part_size set, ingest is a checkpoint: how many jobs a stack's denoise and
# evaluation are scattered over (K) is read from the ingested Zarr's shape once it exists, and
# Snakemake completes the DAG then (common.smk: stack_parts). Otherwise a plain rule.
# With ingest.part_size set, a raw TIFF stack of more pixels is converted by K jobs (common.smk:
# ingest_parts, from the TIFF's header): ingest_prepare creates the empty output under a hidden
# name, each ingest_part writes a run of whole planes into it, and the ingest rule itself
# (--part gather/K) hashes the source and publishes the output once every part's marker is there
# (n2sr/io/parts.py). Markers are temp(): a killed part is redone alone. Ingest hashes in one
# thread and copies on one per CPU it is given (n2sr/io/stream.py): resources.ingest.threads each.
# The codec and level are prepare's (it creates the array); the parts read them from the Zarr.
INGEST_THREADS = config["resources"]["ingest"]["threads"]
if PART_SIZE:

    checkpoint ingest:
        input:
            raw=lambda wildcards: produced(raw_path(wildcards)),
            parts=ingest_part_inputs,
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
            part=ingest_gather_option,
            options=INGEST_OPTIONS,
        threads: INGEST_THREADS
        shell:
            "n2sr ingest {params.part} {params.options} -- {params.source:q} {output:q} > {log:q} 2>&1"

else:

    rule ingest:
        input:
            raw=lambda wildcards: produced(raw_path(wildcards)),
            parts=ingest_part_inputs,
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
            part=ingest_gather_option,
            options=INGEST_OPTIONS,
        threads: INGEST_THREADS
        shell:
            "n2sr ingest {params.part} {params.options} -- {params.source:q} {output:q} > {log:q} 2>&1"


rule ingest_prepare:
    input:
        raw_path,
    output:
        temp(scatter.marker("results/ingest/{configuration}/{fov}.zarr", "prepare", "{K}")),
    log:
        "logs/ingest_prepare/{configuration}/{fov}.of-{K}.log",
    benchmark:
        bench("ingest_prepare", "{configuration}/{fov}.of-{K}")
    wildcard_constraints:
        K=r"\d+",
    conda:
        N2SR_ENV
    params:
        out=lambda wildcards: ingested(wildcards.configuration, wildcards.fov),
        options=INGEST_OPTIONS,
    shell:
        "n2sr ingest --part prepare/{wildcards.K} {params.options} -- {input:q} {params.out:q} > {log:q} 2>&1"


rule ingest_part:
    input:
        raw=raw_path,
        prepared=scatter.marker("results/ingest/{configuration}/{fov}.zarr", "prepare", "{K}"),
    output:
        temp(scatter.marker("results/ingest/{configuration}/{fov}.zarr", "{k}", "{K}")),
    log:
        "logs/ingest_part/{configuration}/{fov}.{k}-of-{K}.log",
    benchmark:
        bench("ingest_part", "{configuration}/{fov}.{k}-of-{K}")
    wildcard_constraints:
        k=r"\d+",
        K=r"\d+",
    conda:
        N2SR_ENV
    params:
        out=lambda wildcards: ingested(wildcards.configuration, wildcards.fov),
    threads: INGEST_THREADS
    shell:
        "n2sr ingest --part {wildcards.k}/{wildcards.K} -- {input.raw:q} {params.out:q} > {log:q} 2>&1"
