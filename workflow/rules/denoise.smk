# A stack of more than denoise.part_size pixels is denoised by K jobs (common.smk: stack_parts):
# denoise_prepare creates the empty outputs under a hidden name, each denoise_part computes a run
# of whole blocks into them, and the denoise rule itself (--part gather/K) publishes the output
# once every part's marker is there (n2sr/io/parts.py); it then asks for no GPU. Markers are temp():
# a killed part is redone alone, and they go once the output is published.
rule denoise:
    input:
        model=model_of,
        adopted=adoption_record,
        noisy="results/ingest/{configuration}/{fov}.zarr",
        parts=part_inputs("denoise"),
    output:
        zarr=directory("results/denoised/n2sr/{configuration}/{fov}.zarr"),
        **denoise_extra_outputs(),
    log:
        "logs/denoise/{configuration}/{fov}.log",
    benchmark:
        bench("denoise", "n2sr/{configuration}/{fov}")
    conda:
        N2SR_ENV
    params:
        options=scanned(DENOISE_OPTIONS),
        outputs=lambda wildcards, output: cli_options({k: v for k, v in output.items() if k != "zarr"}),
        part=gather_option("denoise"),
    threads: lookup(dpath="resources/denoise/threads", within=config)
    resources:
        gpu=denoise_gpus,
        mem_mb=scaled_mem("denoise"),
        runtime=lookup(dpath="resources/denoise/runtime", within=config),
        attempt=attempt,
    shell:
        "n2sr denoise {input.model:q} {input.noisy:q} {output.zarr:q} --attempt {resources.attempt}"
        " {params.part} {params.outputs} {params.options} > {log:q} 2>&1"


use rule denoise as denoise_baseline with:
    input:
        model=model_of,
        adopted=adoption_record,
        noisy="results/ingest/{configuration}/{fov}.zarr",
        parts=part_inputs("denoise"),
    output:
        zarr=directory(f"results/denoised/{{method,{UNET_BASELINES}}}/{{configuration}}/{{fov}}.zarr"),
        **denoise_extra_outputs("{method}"),
    log:
        "logs/denoise/{method}/{configuration}/{fov}.log",
    benchmark:
        bench("denoise", "{method}/{configuration}/{fov}")


# BM3D needs no model: the noise of each plane is estimated from the plane itself.
rule denoise_bm3d:
    input:
        noisy="results/ingest/{configuration}/{fov}.zarr",
    output:
        zarr=directory("results/denoised/bm3d/{configuration}/{fov}.zarr"),
        **denoise_extra_outputs("bm3d"),
    log:
        "logs/denoise/bm3d/{configuration}/{fov}.log",
    benchmark:
        bench("denoise", "bm3d/{configuration}/{fov}")
    conda:
        N2SR_ENV
    params:
        options=scanned(BM3D_OPTIONS),
        outputs=lambda wildcards, output: cli_options({k: v for k, v in output.items() if k != "zarr"}),
    resources:
        mem_mb=scaled_mem("denoise"),
        runtime=lookup(dpath="resources/denoise/runtime", within=config),
    shell:
        "n2sr bm3d {input.noisy:q} {output.zarr:q} {params.outputs} {params.options} > {log:q} 2>&1"


rule denoise_prepare:
    input:
        model=model_of,
        adopted=adoption_record,
        noisy="results/ingest/{configuration}/{fov}.zarr",
    output:
        temp(scatter.marker("results/denoised/{method}/{configuration}/{fov}.zarr", "prepare", "{K}")),
    log:
        "logs/denoise_prepare/{method}/{configuration}/{fov}.of-{K}.log",
    benchmark:
        bench("denoise_prepare", "{method}/{configuration}/{fov}.of-{K}")
    wildcard_constraints:
        method=_one_of(TRAINED),
        K=r"\d+",
    conda:
        N2SR_ENV
    params:
        out=denoised_of,
        outputs=companions,
        options=scanned(DENOISE_OPTIONS),
    shell:
        "n2sr denoise {input.model:q} {input.noisy:q} {params.out:q} --part prepare/{wildcards.K}"
        " {params.outputs} {params.options} > {log:q} 2>&1"


rule denoise_part:
    input:
        model=model_of,
        noisy="results/ingest/{configuration}/{fov}.zarr",
        prepared=scatter.marker("results/denoised/{method}/{configuration}/{fov}.zarr", "prepare", "{K}"),
    output:
        temp(scatter.marker("results/denoised/{method}/{configuration}/{fov}.zarr", "{k}", "{K}")),
    log:
        "logs/denoise_part/{method}/{configuration}/{fov}.{k}-of-{K}.log",
    benchmark:
        bench("denoise_part", "{method}/{configuration}/{fov}.{k}-of-{K}")
    wildcard_constraints:
        method=_one_of(TRAINED),
        k=r"\d+",
        K=r"\d+",
    conda:
        N2SR_ENV
    params:
        out=denoised_of,
        outputs=companions,
        options=scanned(DENOISE_OPTIONS),
    threads: lookup(dpath="resources/denoise/threads", within=config)
    resources:
        gpu=lookup(dpath="resources/denoise/gpu", within=config),
        mem_mb=scaled_mem("denoise"),
        runtime=lookup(dpath="resources/denoise/runtime", within=config),
        attempt=attempt,
    shell:
        "n2sr denoise {input.model:q} {input.noisy:q} {params.out:q} --part {wildcards.k}/{wildcards.K}"
        " --attempt {resources.attempt} {params.outputs} {params.options} > {log:q} 2>&1"
