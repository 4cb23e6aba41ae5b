rule evaluate_noisy:
    input:
        reference="results/reference/{configuration}/{fov}.zarr",
        image="results/ingest/{configuration}/{fov}.zarr",
    output:
        "results/metrics/noisy/{configuration}/{fov}.csv",
    log:
        "logs/evaluate/noisy/{configuration}/{fov}.log",
    conda:
        N2SR_ENV
    params:
        options=cli_options({"captures": config["test_captures"], **config["evaluate"]}),
    shell:
        "n2sr evaluate --reference {input.reference:q} {input.image:q} --csv {output:q} --method noisy"
        " --label configuration={wildcards.configuration} --label fov={wildcards.fov}"
        " {params.options} > {log:q} 2>&1"


rule evaluate:
    input:
        reference="results/reference/{configuration}/{fov}.zarr",
        image=denoised,
    output:
        "results/metrics/{method}/{configuration}/{fov}.csv",
    log:
        "logs/evaluate/{method}/{configuration}/{fov}.log",
    conda:
        N2SR_ENV
    params:
        options=cli_options(config["evaluate"]),
    shell:
        "n2sr evaluate --reference {input.reference:q} {input.image:q} --csv {output:q} --method {wildcards.method}"
        " --label configuration={wildcards.configuration} --label fov={wildcards.fov}"
        " {params.options} > {log:q} 2>&1"
