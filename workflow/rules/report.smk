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
    log:
        "logs/summarize/summarize.log",
    conda:
        N2SR_ENV
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "n2sr summarize {input:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule crops:
    input:
        unpack(crops_inputs),
    output:
        report(
            "results/reports/crops/{configuration}.png",
            caption="../report/crops.rst",
            category="Before and after",
            labels={"configuration": "{configuration}"},
        ),
    log:
        "logs/crops/{configuration}.log",
    conda:
        N2SR_ENV
    params:
        # images first, then one --method per image in the same order: argparse cannot take
        # positional images interleaved with options
        images=lambda wildcards, input: " ".join(
            [shlex.quote(input[m]) for m in ["noisy", *config["methods"]]]
            + [f"--method {m}" for m in ["noisy", *config["methods"]]]
        ),
        capture=crops_capture(),
        title=lambda wildcards: shlex.quote(f"{wildcards.configuration}, FOV {first_test_fov(wildcards)}:"),
    shell:
        "n2sr crops --reference {input.reference:q} {params.images} --capture {params.capture}"
        " --title {params.title} --out {output:q} > {log:q} 2>&1"
