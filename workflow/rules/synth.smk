rule synth:
    input:
        spec=SYNTHETIC["spec"] or [],
    output:
        directory(SYNTHETIC["root"]),
    log:
        "logs/synth/synth.log",
    conda:
        N2SR_ENV
    params:
        options=cli_options({"seed": SYNTHETIC["seed"], "spec": SYNTHETIC["spec"]}),
    shell:
        "n2sr synth {output:q} {params.options} > {log:q} 2>&1"
