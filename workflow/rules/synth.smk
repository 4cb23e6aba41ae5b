if SYNTHETIC["references"]:

    # The paper's synthetic experiment: noisy copies of clean references, drawn once from the
    # recorded seed and stored, so every method trains on the same fixed noisy images. One job
    # per noise model: adding a model to a finished experiment leaves the others' copies (and
    # everything trained on them) as they are.
    rule add_noise:
        input:
            references=[source for _, source, _ in reference_names(SYNTHETIC["references"])],
        output:
            directory(os.path.join(SYNTHETIC["root"], "{noise}")),
        log:
            "logs/synth/add_noise/{noise}.log",
        wildcard_constraints:
            noise=_one_of(SYNTHETIC["noise"]),
        conda:
            N2SR_ENV
        params:
            root=lambda wildcards, output: os.path.dirname(output[0]),  # add-noise writes <root>/<noise>
            options=lambda wildcards: add_noise_options(wildcards.noise),
        shell:
            "n2sr add-noise {params.root:q} {params.options} > {log:q} 2>&1"

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
