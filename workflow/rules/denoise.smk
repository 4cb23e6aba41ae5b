rule denoise:
    input:
        model="results/models/{configuration}/model.pt",
        noisy="results/ingest/{configuration}/{fov}.zarr",
    output:
        zarr=directory("results/denoised/n2sr/{configuration}/{fov}.zarr"),
        **denoise_extra_outputs(),
    log:
        "logs/denoise/{configuration}/{fov}.log",
    conda:
        N2SR_ENV
    params:
        options=denoise_options(),
        outputs=lambda wildcards, output: cli_options({k: v for k, v in output.items() if k != "zarr"}),
    threads: lookup(dpath="resources/denoise/threads", within=config)
    resources:
        gpu=lookup(dpath="resources/denoise/gpu", within=config),
        mem_mb=scaled_mem("denoise"),
        runtime=lookup(dpath="resources/denoise/runtime", within=config),
        attempt=attempt,
    shell:
        "n2sr denoise {input.model:q} {input.noisy:q} {output.zarr:q} --attempt {resources.attempt}"
        " {params.outputs} {params.options} > {log:q} 2>&1"


use rule denoise as denoise_baseline with:
    input:
        model="results/models/{configuration}/{method}/model.pt",
        noisy="results/ingest/{configuration}/{fov}.zarr",
    output:
        zarr=directory(f"results/denoised/{{method,{UNET_BASELINES}}}/{{configuration}}/{{fov}}.zarr"),
        **denoise_extra_outputs("{method}"),
    log:
        "logs/denoise/{method}/{configuration}/{fov}.log",


# BM3D needs no model: the noise of each plane is estimated from the plane itself.
rule denoise_bm3d:
    input:
        noisy="results/ingest/{configuration}/{fov}.zarr",
    output:
        zarr=directory("results/denoised/bm3d/{configuration}/{fov}.zarr"),
        **denoise_extra_outputs("bm3d"),
    log:
        "logs/denoise/bm3d/{configuration}/{fov}.log",
    conda:
        N2SR_ENV
    params:
        captures=cli_options({"captures": config["test_captures"]}),
        outputs=lambda wildcards, output: cli_options({k: v for k, v in output.items() if k != "zarr"}),
    resources:
        mem_mb=scaled_mem("denoise"),
        runtime=lookup(dpath="resources/denoise/runtime", within=config),
    shell:
        "n2sr bm3d {input.noisy:q} {output.zarr:q} {params.outputs} {params.captures} > {log:q} 2>&1"
