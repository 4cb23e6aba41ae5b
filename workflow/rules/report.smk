rule summarize:
    input:
        metrics_csvs(),
    output:
        summary=report(
            "results/reports/summary.csv",
            caption="../report/summary.rst",
            category="Evaluation",
        ),
        table=report(
            "results/reports/table.csv",
            caption="../report/table.rst",
            category="Evaluation",
        ),
        table_fixed=report(
            "results/reports/table_fixed.csv",
            caption="../report/table.rst",
            category="Evaluation",
        ),
        per_configuration=configuration_summaries(),
        estimates=[report(p, caption="../report/estimates.rst", category="Reference-free estimates")
                   for p in estimate_figures()],
    log:
        "logs/summarize/summarize.log",
    benchmark:
        bench("summarize", "summarize")
    conda:
        N2SR_ENV
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "n2sr summarize {input:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule crops:
    input:
        reference=crops_reference,
        images=crops_images,
    output:
        report(
            "results/reports/crops/{configuration}.png",
            caption="../report/crops.rst",
            category="Before and after",
            labels={"configuration": "{configuration}"},
        ),
    log:
        "logs/crops/{configuration}.log",
    benchmark:
        bench("crops", "{configuration}")
    conda:
        N2SR_ENV
    params:
        methods=",".join(CROPS_METHODS),
        capture=crops_capture(),
        title=lambda wildcards: f"{wildcards.configuration}, FOV {first_test_fov(wildcards)}:",
    shell:
        "n2sr crops --reference {input.reference:q} {input.images:q} --methods {params.methods:q}"
        " --capture {params.capture} --title {params.title:q} --out {output:q} > {log:q} 2>&1"


# run.json: versions, config and its hash, samples, models, and every job's wall time and peak
# memory (the benchmark files); written last, after every other output of the run.
rule manifest:
    input:
        done=[f for f in get_final_output() if f != "results/reports/run.json"],
        models=model_records(),
    output:
        "results/reports/run.json",
    log:
        "logs/manifest/manifest.log",
    params:
        config_sha256=lambda wildcards: config_sha256(config),  # a changed config reruns the manifest
    localrule: True
    run:
        from n2sr.steps.manifest import manifest

        manifest(output[0], config=config, samples=samples, models=input.models, benchmarks=BENCHMARKS, log=log[0])
