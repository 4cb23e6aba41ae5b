# With batch_size > 1, the per-FOV steps run as one job per batch of up to batch_size FOVs of a
# configuration (in sheet order) instead of one job per FOV: an archive of many small images is
# then a few hundred jobs to plan and submit, not tens of thousands, and `n2sr batch` runs a
# batch's commands in one process, so the interpreter and library start-up is paid once per batch.
# The commands, outputs and per-FOV logs are those of the per-FOV rules (ingest.smk, reference.smk,
# denoise.smk, evaluate.smk), which this file replaces. The cost, said in config/README.md: a job is
# the unit Snakemake redoes, so a bad file fails (and a kill or a new member reruns) its batch.
import shlex
from collections import namedtuple

Member = namedtuple("Member", "configuration fov method", defaults=("n2sr",))  # a per-FOV rule's wildcards


def batches(rows: pd.DataFrame, method: str = "n2sr") -> list[tuple[str, int, list[Member]]]:
    """(configuration, index from 1, members) of every batch of `rows`, in sheet order."""
    found = []
    for configuration in CONFIGURATIONS:
        fovs = list(rows.loc[rows["configuration"] == configuration, "fov"])
        for k, start in enumerate(range(0, len(fovs), BATCH_SIZE), 1):
            found.append((configuration, k, [Member(configuration, f, method) for f in fovs[start:start + BATCH_SIZE]]))
    return found


def batch_jobs(members: list[Member], log: str, command) -> list[str]:
    """`n2sr batch` arguments: --job LOG COMMAND per member; `log` a pattern of the member's fields."""
    words = []
    for m in members:
        words += ["--job", log.format(**m._asdict()), command(m)]
    return words


def q(path: str) -> str:
    return shlex.quote(str(path))


def extra_outputs(m: Member) -> dict[str, str]:
    return {k: str(v).format(configuration=m.configuration, fov=m.fov)
            for k, v in denoise_extra_outputs(m.method).items()}


def ingest_command(m: Member) -> str:
    return f"ingest {INGEST_OPTIONS} -- {q(raw_path(m))} {q(ingested(m.configuration, m.fov))}"


def reference_command(m: Member) -> str:
    return (f"reference --policy {reference_policy(m)} -- {q(reference_source(m))} "
            f"{q(f'results/reference/{m.configuration}/{m.fov}.zarr')}")


def denoise_command(m: Member) -> str:
    noisy, out, extra = ingested(m.configuration, m.fov), denoised_of(m, m.method), cli_options(extra_outputs(m))
    if m.method == "bm3d":
        return f"bm3d {q(noisy)} {q(out)} {extra} {scanned(BM3D_OPTIONS)(m)}"
    return f"denoise {q(model_of(m))} {q(noisy)} {q(out)} {extra} {scanned(DENOISE_OPTIONS)(m)}"


def evaluate_command(m: Member) -> str:
    labels = f"--label {q(f'configuration={m.configuration}')} --label {q(f'fov={m.fov}')}"
    reference, noisy, csv = (f"results/reference/{m.configuration}/{m.fov}.zarr", ingested(m.configuration, m.fov),
                             metrics_of(m, m.method))
    if m.method == "noisy":
        return (f"evaluate --reference {q(reference)} {q(noisy)} --csv {q(csv)} --method noisy {labels} "
                f"{scanned(EVALUATE_NOISY_OPTIONS)(m)}")
    return (f"evaluate --reference {q(reference)} {q(denoised_of(m, m.method))} --noisy {q(noisy)} --csv {q(csv)} "
            f"--method {m.method} {labels} {scanned(EVALUATE_OPTIONS)(m)}")


BATCH = "n2sr batch {params.jobs:q} > {log:q} 2>&1"


for configuration, k, members in batches(samples):

    rule:
        name:
            f"ingest_batch_{CONFIGURATIONS.index(configuration)}_{k}"
        input:
            [produced(raw_path(m)) for m in members],
        output:
            [directory(ingested(m.configuration, m.fov)) for m in members],
        log:
            f"logs/batches/ingest/{configuration}/{k}.log",
        benchmark:
            bench("ingest_batch", f"{configuration}/{k}")
        conda:
            N2SR_ENV
        params:
            jobs=batch_jobs(members, "logs/ingest/{configuration}/{fov}.log", ingest_command),
        threads: config["resources"]["ingest"]["threads"]
        shell:
            BATCH


for configuration, k, members in batches(TEST):

    rule:
        name:
            f"reference_batch_{CONFIGURATIONS.index(configuration)}_{k}"
        input:
            [produced(reference_source(m)) for m in members],
        output:
            [directory(f"results/reference/{m.configuration}/{m.fov}.zarr") for m in members],
        log:
            f"logs/batches/reference/{configuration}/{k}.log",
        benchmark:
            bench("reference_batch", f"{configuration}/{k}")
        conda:
            N2SR_ENV
        params:
            jobs=batch_jobs(members, "logs/reference/{configuration}/{fov}.log", reference_command),
        shell:
            BATCH


for method in METHODS:
    for configuration, k, members in batches(TEST, method):

        rule:
            name:
                f"denoise_batch_{method}_{CONFIGURATIONS.index(configuration)}_{k}"
            input:
                model=[] if method == "bm3d" else model_of(members[0]),
                adopted=[] if method == "bm3d" else adoption_record(members[0]),
                noisy=[ingested(m.configuration, m.fov) for m in members],
            output:
                [directory(denoised_of(m, method)) for m in members],
                [directory(p) if k_ == "sr" else p for m in members for k_, p in extra_outputs(m).items()],
            log:
                f"logs/batches/denoise/{method}/{configuration}/{k}.log",
            benchmark:
                bench("denoise_batch", f"{method}/{configuration}/{k}")
            conda:
                N2SR_ENV
            params:
                jobs=batch_jobs(members, "logs/denoise/{method}/{configuration}/{fov}.log"
                                if method != "n2sr" else "logs/denoise/{configuration}/{fov}.log", denoise_command),
            threads: 1 if method == "bm3d" else config["resources"]["denoise"]["threads"]
            resources:
                gpu=0 if method == "bm3d" else config["resources"]["denoise"]["gpu"],
                mem_mb=scaled_mem("denoise"),
                runtime=config["resources"]["denoise"]["runtime"] * len(members),
                attempt=attempt,
            shell:
                "n2sr batch --append '--attempt {resources.attempt}' {params.jobs:q} > {log:q} 2>&1"
                if method != "bm3d" else BATCH


for method in ["noisy", *METHODS]:
    for configuration, k, members in batches(TEST, method):

        rule:
            name:
                f"evaluate_batch_{method}_{CONFIGURATIONS.index(configuration)}_{k}"
            input:
                reference=[f"results/reference/{m.configuration}/{m.fov}.zarr" for m in members],
                images=[ingested(m.configuration, m.fov) if method == "noisy" else denoised_of(m, method)
                        for m in members],
                noisy=[ingested(m.configuration, m.fov) for m in members],
            output:
                [metrics_of(m, method) for m in members],
            log:
                f"logs/batches/evaluate/{method}/{configuration}/{k}.log",
            benchmark:
                bench("evaluate_batch", f"{method}/{configuration}/{k}")
            conda:
                N2SR_ENV
            params:
                jobs=batch_jobs(members, "logs/evaluate/{method}/{configuration}/{fov}.log", evaluate_command),
            shell:
                BATCH
