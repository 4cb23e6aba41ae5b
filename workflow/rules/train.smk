rule train:
    input:
        train_images,
    output:
        model="results/models/{configuration}/model.pt",
        curve="results/models/{configuration}/curve.csv",
        plot=report(
            "results/models/{configuration}/curve.png",
            caption="../report/curve.rst",
            category="Training",
            labels={"configuration": "{configuration}"},
        ),
    log:
        "logs/train/{configuration}.log",
    conda:
        N2SR_ENV
    params:
        options=cli_options({"captures": config["train_captures"], **config["train"]}),
    threads: config["resources"]["train"]["threads"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        mem_mb=scaled_mem("train"),
        runtime=config["resources"]["train"]["runtime"],
    shell:
        "n2sr train {input:q} --out {output.model:q} --curve {output.curve:q} --plot {output.plot:q}"
        " {params.options} > {log:q} 2>&1"
