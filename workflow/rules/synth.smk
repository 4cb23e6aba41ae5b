if SYNTHETIC["references"]:

    # The paper's synthetic experiment: noisy copies of clean references, drawn once from the
    # recorded seed and stored, so every method trains on the same fixed noisy images. One job
    # per noise model: adding a model to a finished experiment leaves the others' copies (and
    # everything trained on them) as they are. The output is the model folder's manifest, written
    # last: a directory() output would be deleted, with anything else in it, before every rerun
    # (n2sr/io/generated.py).
    rule add_noise:
        input:
            references=[source for _, source, _ in reference_names(SYNTHETIC["references"])],
        output:
            os.path.join(SYNTHETIC["root"], "{noise}", "manifest.csv"),
        log:
            "logs/synth/add_noise/{noise}.log",
        wildcard_constraints:
            noise=_one_of(SYNTHETIC["noise"]),
        conda:
            N2SR_ENV
        params:
            root=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),  # add-noise writes <root>/<noise>
            options=lambda wildcards: add_noise_options(wildcards.noise),
        shell:
            "n2sr add-noise {params.root:q} {params.options} > {log:q} 2>&1"

else:

    # The demo archive; its manifest, written last, stands for the folder (see add_noise).
    rule synth:
        input:
            spec=SYNTHETIC["spec"] or [],
        output:
            os.path.join(SYNTHETIC["root"], "manifest.csv"),
        log:
            "logs/synth/synth.log",
        conda:
            N2SR_ENV
        params:
            root=lambda wildcards, output: os.path.dirname(output[0]),  # synth writes the manifest's folder
            options=cli_options({"seed": SYNTHETIC["seed"], "spec": SYNTHETIC["spec"]}),
        shell:
            "n2sr synth {params.root:q} {params.options} > {log:q} 2>&1"
