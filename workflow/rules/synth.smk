if SYNTHETIC["references"]:

    # The paper's synthetic experiment: noisy copies of clean references, drawn once from the
    # recorded seed and stored, so every method trains on the same fixed noisy images.
    rule add_noise:
        input:
            references=[source for _, source, _ in reference_names(SYNTHETIC["references"])],
        output:
            directory(SYNTHETIC["root"]),
        log:
            "logs/synth/add_noise.log",
        conda:
            N2SR_ENV
        params:
            options=add_noise_options(),
        shell:
            "n2sr add-noise {output:q} {params.options} > {log:q} 2>&1"

else:

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
