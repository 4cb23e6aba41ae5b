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
        tile_size=tile_size,
    shell:
        "n2sr denoise {input.model:q} {input.noisy:q} {output.zarr:q} --tile-size {resources.tile_size}"
        " {params.outputs} {params.options} > {log:q} 2>&1"
