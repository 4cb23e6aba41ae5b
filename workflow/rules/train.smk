# The command of a scratch run (and of the generic model) is the one from before train.init: generic
# existed: Snakemake reruns a job whose command changed, and an upgrade must not retrain whole archives.
TRAIN_COMMAND = (
    "n2sr train {input:q} --out {output.model:q} --curve {output.curve:q} --plot {output.plot:q} --resume"
    " {params.options} > {log:q} 2>&1"
)
TRAIN_SHELL = TRAIN_COMMAND.replace("{input:q}", "{input.images:q}") if GENERIC else TRAIN_COMMAND


rule train:
    input:
        unpack(train_inputs) if GENERIC else train_images,
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
    benchmark:
        bench("train", "{configuration}")
    wildcard_constraints:
        configuration=_one_of(TRAINABLE),  # not a frozen one (train.retrain: never)
    conda:
        N2SR_ENV
    params:
        options=train_options("n2sr"),
    threads: lookup(dpath="resources/train/threads", within=config)
    resources:
        gpu=lookup(dpath="resources/train/gpu", within=config),
        mem_mb=scaled_mem("train"),
        runtime=lookup(dpath="resources/train/runtime", within=config),
    # --resume: a killed job continues from model.pt.state (saved every checkpoint_every
    # iterations, ignored when the data or settings differ) instead of starting over.
    shell:
        TRAIN_SHELL


# The baselines' U-Nets train with the same settings, each in its own folder under the
# configuration's models (n2sr keeps the top level).
use rule train as train_baseline with:
    output:
        model=f"results/models/{{configuration}}/{{method,{UNET_BASELINES}}}/model.pt",
        curve="results/models/{configuration}/{method}/curve.csv",
        plot=report(
            "results/models/{configuration}/{method}/curve.png",
            caption="../report/curve.rst",
            category="Training",
            labels={"configuration": "{configuration}", "method": "{method}"},
        ),
    log:
        "logs/train/{configuration}/{method}.log",
    benchmark:
        bench("train", "{configuration}/{method}")
    params:
        options=lambda wildcards: train_options(wildcards.method),


# A model trained before (config models) replaces training: its check (n2sr adopt) writes
# adopted.json, which the denoise jobs wait for; they read the checkpoint where it lies.
rule adopt:
    input:
        adopted_checkpoint,
    output:
        "results/models/{configuration}/adopted.json",
    log:
        "logs/adopt/{configuration}.log",
    benchmark:
        bench("adopt", "{configuration}")
    conda:
        N2SR_ENV
    params:
        method=lambda wildcards: getattr(wildcards, "method", "n2sr"),
        normalization=config["train"]["normalization"],
    shell:
        "n2sr adopt {input:q} --out {output:q} --method {params.method} --normalization {params.normalization:q}"
        " > {log:q} 2>&1"


use rule adopt as adopt_baseline with:
    output:
        f"results/models/{{configuration}}/{{method,{UNET_BASELINES}}}/adopted.json",
    log:
        "logs/adopt/{configuration}/{method}.log",
    benchmark:
        bench("adopt", "{configuration}/{method}")


# train.init: generic: the model every configuration's n2sr fine-tunes, trained first on the train
# FOVs of generic.configurations (n2sr train, as above, with the generic section's budget).
if GENERIC_NEEDED:

    rule train_generic:
        input:
            generic_images,
        output:
            model=GENERIC_MODEL,
            curve="results/generic/curve.csv",
            plot=report(
                "results/generic/curve.png",
                caption="../report/curve.rst",
                category="Training",
                labels={"configuration": "generic"},
            ),
        log:
            "logs/train/generic.log",
        benchmark:
            bench("train", "generic")
        conda:
            N2SR_ENV
        params:
            options=generic_options(),
        threads: lookup(dpath="resources/train/threads", within=config)
        resources:
            gpu=lookup(dpath="resources/train/gpu", within=config),
            mem_mb=scaled_mem("train"),
            runtime=lookup(dpath="resources/train/runtime", within=config),
        shell:
            TRAIN_COMMAND
