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
        per_configuration=configuration_summaries(),
    log:
        "logs/summarize/summarize.log",
    conda:
        N2SR_ENV
    params:
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    shell:
        "n2sr summarize {input:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
