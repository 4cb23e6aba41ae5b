# A stack of more than denoise.part_size pixels is scored by K evaluate_part jobs (runs of
# captures), whose CSVs the rule concatenates (--part gather/K) into the same rows.
rule evaluate_noisy:
    input:
        reference="results/reference/{configuration}/{fov}.zarr",
        image="results/ingest/{configuration}/{fov}.zarr",
        parts=part_inputs("evaluate"),
    output:
        "results/metrics/noisy/{configuration}/{fov}.csv",
    log:
        "logs/evaluate/noisy/{configuration}/{fov}.log",
    benchmark:
        bench("evaluate", "noisy/{configuration}/{fov}")
    conda:
        N2SR_ENV
    params:
        options=scanned(EVALUATE_NOISY_OPTIONS),
        part=gather_option("evaluate"),
    shell:
        "n2sr evaluate --reference {input.reference:q} {input.image:q} --csv {output:q} --method noisy"
        " --label configuration={wildcards.configuration} --label fov={wildcards.fov}"
        " {params.part} {params.options} > {log:q} 2>&1"


rule evaluate:
    input:
        reference="results/reference/{configuration}/{fov}.zarr",
        image=denoised,
        noisy="results/ingest/{configuration}/{fov}.zarr",
        parts=part_inputs("evaluate"),
    output:
        "results/metrics/{method}/{configuration}/{fov}.csv",
    log:
        "logs/evaluate/{method}/{configuration}/{fov}.log",
    benchmark:
        bench("evaluate", "{method}/{configuration}/{fov}")
    conda:
        N2SR_ENV
    params:
        options=scanned(EVALUATE_OPTIONS),
        part=gather_option("evaluate"),
    shell:
        "n2sr evaluate --reference {input.reference:q} {input.image:q} --noisy {input.noisy:q} --csv {output:q}"
        " --method {wildcards.method} --label configuration={wildcards.configuration} --label fov={wildcards.fov}"
        " {params.part} {params.options} > {log:q} 2>&1"


rule evaluate_part:
    input:
        reference="results/reference/{configuration}/{fov}.zarr",
        image=lambda wildcards: (ingested(wildcards.configuration, wildcards.fov) if wildcards.method == "noisy"
                                 else denoised(wildcards)),
        noisy="results/ingest/{configuration}/{fov}.zarr",
    output:
        temp(scatter.marker("results/metrics/{method}/{configuration}/{fov}.csv", "{k}", "{K}", ".csv")),
    log:
        "logs/evaluate_part/{method}/{configuration}/{fov}.{k}-of-{K}.log",
    benchmark:
        bench("evaluate_part", "{method}/{configuration}/{fov}.{k}-of-{K}")
    wildcard_constraints:
        method=_one_of(["noisy", *METHODS]),
        k=r"\d+",
        K=r"\d+",
    conda:
        N2SR_ENV
    params:
        out=metrics_of,
        # the noisy input holds every capture; a denoised output only the test captures
        options=lambda wildcards: scanned(cli_options({
            "captures": config["test_captures"] if wildcards.method == "noisy" else None, **config["evaluate"]}))(wildcards),
    shell:
        "n2sr evaluate --reference {input.reference:q} {input.image:q} --noisy {input.noisy:q} --csv {params.out:q}"
        " --method {wildcards.method} --label configuration={wildcards.configuration} --label fov={wildcards.fov}"
        " --part {wildcards.k}/{wildcards.K} {params.options} > {log:q} 2>&1"
