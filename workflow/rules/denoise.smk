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
        options=cli_options(
            {
                "captures": config["test_captures"],
                **{k: v for k, v in config["denoise"].items() if k not in ("tile_size", "write_sr", "write_tiff")},
            }
        ),
        outputs=lambda wildcards, output: cli_options({k: v for k, v in output.items() if k != "zarr"}),
    threads: config["resources"]["denoise"]["threads"]
    resources:
        gpu=config["resources"]["denoise"]["gpu"],
        mem_mb=scaled_mem("denoise"),
        runtime=config["resources"]["denoise"]["runtime"],
        tile_size=tile_size,
    shell:
        "n2sr denoise {input.model:q} {input.noisy:q} {output.zarr:q} --tile-size {resources.tile_size}"
        " {params.outputs} {params.options} > {log:q} 2>&1"
