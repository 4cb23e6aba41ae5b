rule reference:
    input:
        lambda wildcards: produced(reference_source(wildcards)),
    output:
        directory("results/reference/{configuration}/{fov}.zarr"),
    log:
        "logs/reference/{configuration}/{fov}.log",
    benchmark:
        bench("reference", "{configuration}/{fov}")
    conda:
        N2SR_ENV
    params:
        source=reference_source,
        policy=reference_policy,
    shell:
        "n2sr reference --policy {params.policy} -- {params.source:q} {output:q} > {log:q} 2>&1"
