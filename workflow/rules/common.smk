import os
import re
import shlex
import sys
from collections.abc import Mapping
from typing import Any

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from n2sr.config import DenoiseConfig, IngestConfig
from n2sr.io import parts as scatter
from n2sr.io.atomic import atomic_path
from n2sr.io.samples import TEST_SPLITS, TRAIN_SPLITS, reference_names, sample_table
from n2sr.steps.manifest import config_sha256


class ConfigError(ValueError):
    """A config key is unknown or has a wrong value; the message names the key."""


def validate_config() -> None:
    """Validate (and fill defaults) with Snakemake; on failure, one line naming the key and the
    problem instead of Snakemake's dump of the whole schema and config."""
    try:
        validate(config, schema="../schemas/config.schema.yaml")
    except WorkflowError:
        import jsonschema

        with open(workflow.source_path("../schemas/config.schema.yaml"), encoding="utf-8") as f:
            schema = yaml.safe_load(f)
        error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
        if error is None:
            raise
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        raise ConfigError(f"config {key}: {error.message}") from None


validate_config()


# Config keys naming folders the workflow writes into (results/ and logs/ are fixed).
WRITTEN_ROOTS = ("synthetic.root",)
MANAGED = ("results", "logs", ".snakemake")  # the workflow's own folders


def check_written_roots() -> None:
    """Every folder the workflow writes must lie inside the working directory, outside the
    workflow's own folders: a config must not point a generator at, say, a home folder. Paths
    are compared resolved (symlinks followed), so a link cannot lead outside."""
    work = os.path.realpath(os.getcwd())
    for key in WRITTEN_ROOTS:
        section, _, name = key.partition(".")
        path = (config.get(section) or {}).get(name)
        if not path:
            continue
        real = os.path.realpath(path)
        if os.path.commonpath([real, work]) != work:
            raise ConfigError(f"config {key}: {path} lies outside the working directory {work}; "
                              "generated data must go inside it (e.g. resources/synthetic)")
        if real == work:
            raise ConfigError(f"config {key}: {path} is the working directory itself; "
                              "give a folder inside it (e.g. resources/synthetic)")
        for own in MANAGED:
            managed = os.path.realpath(own)
            if os.path.commonpath([real, managed]) == managed:
                raise ConfigError(f"config {key}: {path} lies inside {own}/, which the workflow manages; "
                                  "give another folder (e.g. resources/synthetic)")


check_written_roots()

with open(workflow.source_path("../schemas/samples.schema.yaml"), encoding="utf-8") as f:
    samples = sample_table(config, yaml.safe_load(f))

# Jobs call the `n2sr` installed beside this Snakemake, also when its environment (e.g. the
# .venv of `make run`) is not activated.
os.environ.update(PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))

# One environment for all jobs: each runs `n2sr`, and Snakemake itself imports n2sr (above).
N2SR_ENV = "../envs/n2sr.yaml"
SYNTHETIC = config["synthetic"]
TEST = samples[samples["split"].isin(TEST_SPLITS)]
CONFIGURATIONS = list(samples["configuration"].unique())
METHODS = config["methods"]
# Methods with a model: n2sr and the U-Net baselines; bm3d needs none.
TRAINED = [m for m in METHODS if m != "bm3d"]
UNET_BASELINES = "n2v|n2s|n2n"  # regex for the {method} wildcard of the baselines' train/denoise rules


def _one_of(names) -> str:
    """Regex matching exactly these names, so a wildcard never spans a '/' or a suffix."""
    return "|".join(map(re.escape, sorted(set(names)))) or "(?!)"  # no names: matches nothing


wildcard_constraints:
    configuration=_one_of(samples["configuration"]),
    fov=_one_of(samples["fov"]),
    method=_one_of(config["methods"]),


def cli_options(values: Mapping[str, Any]) -> str:
    """`--key value` for every set key, quoted for the shell.

    Config keys are the CLI's option names (docs/design.md), so a value travels from the
    config to the step unrenamed. True/False become --key/--no-key (the CLI's boolean
    options), lists are comma-joined (--captures 0,1), None leaves the CLI default.
    """
    words = []
    for key, value in values.items():
        name = key.replace("_", "-")
        if isinstance(value, bool):
            words.append(f"--{name}" if value else f"--no-{name}")
        elif value is not None:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            words.extend([f"--{name}", shlex.quote(text)])
    return " ".join(words)


def add_noise_options(noise: str) -> str:
    """`n2sr add-noise` options for one noise model: one --reference NAME=PATH per reference."""
    words = [f"--reference {shlex.quote(f'{name}={source}')}"
             for name, source, _ in reference_names(SYNTHETIC["references"])]
    levels = ",".join(f"{k}={v}" for k, v in SYNTHETIC["noise"][noise].items())
    words.append(f"--noise {shlex.quote(f'{noise}:{levels}')}")
    options = cli_options({"captures": SYNTHETIC["captures"], "seed": SYNTHETIC["seed"], "dtype": SYNTHETIC["dtype"]})
    return " ".join([*words, options])


def produced(path: str) -> str:
    """The DAG input for a sample path: the manifest of the generated folder it lies in, if any.

    A generated folder is declared by its manifest (written last), not as a directory() output
    (n2sr/io/generated.py): the demo archive's root, or the noise model's folder of the
    synthetic-noise experiment.
    """
    if SYNTHETIC:
        root = os.path.abspath(SYNTHETIC["root"])
        if os.path.commonpath([os.path.abspath(path), root]) == root:
            if SYNTHETIC["references"]:
                noise = os.path.relpath(os.path.abspath(path), root).split(os.sep)[0]
                return os.path.join(SYNTHETIC["root"], noise, "manifest.csv")
            return os.path.join(SYNTHETIC["root"], "manifest.csv")
    return path


# (configuration, fov) -> its sheet row: a dict lookup per job (pandas .loc costs ~0.2 ms, which
# an archive of 10,000 FOVs pays tens of thousands of times while the DAG is built)
ROWS = dict(zip(samples.index, samples.to_dict("records")))


def sample(wildcards) -> dict[str, Any]:
    return ROWS[(wildcards.configuration, wildcards.fov)]


def raw_path(wildcards) -> str:
    return sample(wildcards)["raw"]


def ingested(configuration: str, fov: str) -> str:
    return f"results/ingest/{configuration}/{fov}.zarr"


def reference_policy(wildcards) -> str:
    """The FOV's reference policy (sheet column reference_policy, else the config's), with auto
    resolved to file where a reference file is given; the reference step decides the rest."""
    row = sample(wildcards)
    policy = row["reference_policy"]
    return "file" if policy == "auto" and row["reference"] else policy


def reference_source(wildcards) -> str:
    """The given reference file (policy file), or the ingested captures (to average, or to name
    in the marker of no reference)."""
    given = sample(wildcards)["reference"]
    return given if reference_policy(wildcards) == "file" else ingested(wildcards.configuration, wildcards.fov)


def train_images(wildcards) -> list[str]:
    part = samples[(samples["configuration"] == wildcards.configuration) & samples["split"].isin(TRAIN_SPLITS)]
    return [ingested(c, f) for c, f in zip(part["configuration"], part["fov"])]


def model_dir(method: str) -> str:
    """Where a method's model and curves go: n2sr's at the configuration's top level (the layout
    from before the baselines), each baseline's in a sub-folder named after it."""
    return os.path.join("results", "models", "{configuration}", *([] if method == "n2sr" else [method]))


def train_options(method: str, **overrides: Any) -> str:
    """`n2sr train` options of `method`: the shared training settings (with `overrides`) and the
    method's own (config section `n2v`, `n2s` or `n2n`, options `--n2v-box`, ...). With
    train.init: generic, n2sr starts from the generic model and the baselines (other networks)
    from scratch."""
    own = {f"{method}_{key}": value for key, value in config.get(method, {}).items()}
    train = {k: v for k, v in config["train"].items() if k != "retrain"}  # the workflow's, not n2sr train's
    # whiten: auto is the CLI's default and stays off the command (models trained before the key are
    # not retrained); a whitened model has no 2x output, so write_sr keeps n2sr unwhitened
    if train.get("whiten") is True and config["denoise"]["write_sr"]:
        raise ConfigError("config train.whiten: true with denoise.write_sr: true: a whitened model has no 2x "
                          "output; set whiten to auto or false, or write_sr to false")
    if train.get("whiten", "auto") == "auto":
        train["whiten"] = False if config["denoise"]["write_sr"] and method == "n2sr" else None
    if GENERIC:
        train["init"] = GENERIC_MODEL if method == "n2sr" else "scratch"
    return cli_options({"method": method, "captures": config["train_captures"], **train, **overrides, **own})


# train.init: generic -> every n2sr model fine-tunes one generic model, trained first on the train
# FOVs of generic.configurations (all by default). It lives outside results/models/, where a
# configuration could be named "generic".
GENERIC = config["train"]["init"] == "generic"
GENERIC_MODEL = "results/generic/model.pt"


def generic_configurations() -> list[str]:
    """The configurations whose train FOVs the generic model learns from; an unknown name, or
    none with a train FOV, is a config error naming the key."""
    names = config["generic"]["configurations"] or CONFIGURATIONS
    unknown = sorted(set(names) - set(CONFIGURATIONS))
    if unknown:
        raise ConfigError(f"config generic.configurations: {', '.join(unknown)} not in the sample sheet "
                          f"(configurations: {', '.join(CONFIGURATIONS)})")
    trained = samples[samples["split"].isin(TRAIN_SPLITS)]["configuration"]
    names = [n for n in names if n in set(trained)]
    if not names:
        raise ConfigError("config generic.configurations: none of them has a train FOV to learn from")
    return names


def generic_images(wildcards) -> list[str]:
    part = samples[samples["configuration"].isin(GENERIC_CONFIGURATIONS) & samples["split"].isin(TRAIN_SPLITS)]
    return [ingested(c, f) for c, f in zip(part["configuration"], part["fov"])]


def generic_options() -> str:
    """`n2sr train` options of the generic model: n2sr's, from scratch, with the generic
    section's budget where set (a longer one: it sees every configuration)."""
    budget = {k: v for k, v in config["generic"].items() if k in ("iterations", "minutes") and v is not None}
    return train_options("n2sr", init="scratch", **budget)


def train_inputs(wildcards) -> dict[str, Any]:
    """Training images, and the generic model n2sr starts from (train.init: generic)."""
    inputs = {"images": train_images(wildcards)}
    if getattr(wildcards, "method", "n2sr") == "n2sr":
        inputs["init"] = GENERIC_MODEL
    return inputs


def denoised(wildcards) -> str:
    return f"results/denoised/{wildcards.method}/{wildcards.configuration}/{wildcards.fov}.zarr"


def denoise_extra_outputs(method: str = "n2sr") -> dict[str, str]:
    """Optional outputs of a denoise rule, named like their CLI options (--sr, --tiff); only
    n2sr has a 2x super-resolved output. `method` may be the "{method}" wildcard itself."""
    stem = f"results/denoised/{method}/{{configuration}}/{{fov}}"
    extra = {}
    if config["denoise"]["write_sr"] and method == "n2sr":
        extra["sr"] = directory(f"{stem}.sr.zarr")
    if config["denoise"]["write_tiff"]:
        extra["tiff"] = f"{stem}.tif"
    return extra


def denoise_options() -> str:
    """`n2sr denoise` options from the config, except the output switches (which add
    outputs, see denoise_extra_outputs)."""
    values = {k: v for k, v in config["denoise"].items() if k not in ("write_sr", "write_tiff")}
    return cli_options({"captures": config["test_captures"], **values})


# Option strings shared by the per-FOV rules and their batched form (batches.smk), so both run
# the same commands.
# --codec and --shard-mb only when not the CLI's defaults (zstd was the codec of every ingest before
# the key existed): Snakemake reruns a job whose command changed (params trigger), and an upgrade
# must not re-ingest whole archives.
INGEST_OPTIONS = cli_options({"codec": None if config["ingest"]["codec"] == "zstd" else config["ingest"]["codec"],
                              "clevel": config["ingest"]["clevel"],
                              "shard_mb": None if config["ingest"]["shard_mb"] == IngestConfig.shard_mb else config["ingest"]["shard_mb"]})
DENOISE_OPTIONS = denoise_options()
# denoise.estimate_pixels reaches evaluate only when changed, so that existing evaluate commands
# (and Snakemake's params trigger) stay as they were
_EVALUATE = {**config["evaluate"], "estimate_pixels": None if config["denoise"]["estimate_pixels"] ==
             DenoiseConfig.estimate_pixels else config["denoise"]["estimate_pixels"]}
EVALUATE_NOISY_OPTIONS = cli_options({"captures": config["test_captures"], **_EVALUATE})
EVALUATE_OPTIONS = cli_options(_EVALUATE)
BM3D_OPTIONS = cli_options({"captures": config["test_captures"], "pyramid": config["denoise"]["pyramid"],
                            "estimate": config["denoise"]["estimate_draws"] > 0,
                            "estimate_pixels": config["denoise"]["estimate_pixels"]})



def point_scanning() -> set[str]:
    """config point_scanning: the configurations imaged by a point-scanning microscope; an unknown
    name is a config error naming the key."""
    unknown = sorted(set(config["point_scanning"]) - set(CONFIGURATIONS))
    if unknown:
        raise ConfigError(f"config point_scanning: {', '.join(unknown)} not in the sample sheet "
                          f"(configurations: {', '.join(CONFIGURATIONS)})")
    return set(config["point_scanning"])


POINT_SCANNING = point_scanning()


def scanned(options: str):
    """`options`, plus --scanned for a point-scanning configuration (a params function): its
    reference-free estimates take the noise as correlated along the scan lines only. The other
    configurations' commands stay as they were, so Snakemake's params trigger reruns nothing."""
    return lambda wildcards: f"{options} --scanned" if wildcards.configuration in POINT_SCANNING else options


INGEST_PART_SIZE = config["ingest"]["part_size"]  # source pixels per ingest job; None: one job each


def ingest_parts(wildcards) -> int:
    """K, the jobs a FOV's raw TIFF stack is converted by: from its header, when the file is there
    before the workflow starts (a generated archive's stacks are small: one job); 1 without
    ingest.part_size (n2sr/io/parts.py)."""
    raw = raw_path(wildcards)
    if not INGEST_PART_SIZE or produced(raw) != raw:
        return 1
    return scatter.ingest_count(raw, part_size=INGEST_PART_SIZE, shard_mb=config["ingest"]["shard_mb"])


def ingest_part_inputs(wildcards) -> list[str]:
    """Inputs of the gathering ingest job: every part's marker when K > 1."""
    k = ingest_parts(wildcards)
    out = ingested(wildcards.configuration, wildcards.fov)
    return [scatter.marker(out, i, k) for i in range(1, k + 1)] if k > 1 else []


def ingest_gather_option(wildcards) -> str:
    k = ingest_parts(wildcards)
    return f"--part gather/{k}" if k > 1 else ""


PART_SIZE = config["denoise"]["part_size"]  # pixels per job of a scattered stack; None: one job each


def stack_parts(wildcards, kind: str) -> int:
    """K, the jobs the denoise (`kind` "denoise") or evaluation ("evaluate") of a test FOV is
    scattered over: from the ingested stack's shape (selected captures), read once the ingest
    checkpoint is done; 1 without denoise.part_size (n2sr/io/parts.py)."""
    if not PART_SIZE:
        return 1
    path = checkpoints.ingest.get(configuration=wildcards.configuration, fov=wildcards.fov).output[0]
    if kind == "evaluate":
        return scatter.evaluate_count(path, config["test_captures"], part_size=PART_SIZE)
    method = getattr(wildcards, "method", "n2sr")
    return scatter.denoise_count(path, config["test_captures"], part_size=PART_SIZE,
                                 block_size=config["denoise"]["block_size"], sr="sr" in denoise_extra_outputs(method))


def denoised_of(wildcards, method: str | None = None) -> str:
    method = method or getattr(wildcards, "method", "n2sr")
    return f"results/denoised/{method}/{wildcards.configuration}/{wildcards.fov}.zarr"


def metrics_of(wildcards, method: str | None = None) -> str:
    method = method or getattr(wildcards, "method", "noisy")
    return f"results/metrics/{method}/{wildcards.configuration}/{wildcards.fov}.csv"


def part_inputs(kind: str):
    """Inputs of the gathering jobs (denoise, evaluate), every part's marker or CSV when K > 1."""
    def inputs(wildcards) -> list[str]:
        k = stack_parts(wildcards, kind)
        if k == 1:
            return []
        out, suffix = (denoised_of(wildcards), ".json") if kind == "denoise" else (metrics_of(wildcards), ".csv")
        return [scatter.marker(out, i, k, suffix) for i in range(1, k + 1)]

    return inputs


def gather_option(kind: str):
    """`--part gather/K` for a gathering rule when its stack is scattered, else nothing."""
    def option(wildcards) -> str:
        k = stack_parts(wildcards, kind)
        return f"--part gather/{k}" if k > 1 else ""

    return option


BATCH_SIZE = config["batch_size"]  # FOVs per job of the per-FOV steps (batches.smk); 1: a job each
if BATCH_SIZE > 1 and (PART_SIZE or INGEST_PART_SIZE):
    raise ConfigError("config batch_size: batches of FOVs (for archives of many small images) and "
                      "denoise.part_size / ingest.part_size (for huge stacks) cannot be combined; "
                      "run the huge stacks with batch_size: 1")


def denoise_gpus(wildcards) -> int:
    """GPUs of the denoise rule: none when it only gathers a scattered stack's parts, unless it
    also computes the reference-free estimates (denoise.estimate_draws > 0: network passes)."""
    gathers_only = stack_parts(wildcards, "denoise") > 1 and not config["denoise"]["estimate_draws"]
    return 0 if gathers_only else config["resources"]["denoise"]["gpu"]


def adopted_models() -> dict[tuple[str, str], str]:
    """(configuration, method) -> the checkpoint trained before that this run uses instead of
    training (config `models`: a model.pt, or a folder laid out like results/models/<configuration>)."""
    found = {}
    for configuration, path in (config.get("models") or {}).items():
        key = f"config models.{configuration}"
        if configuration not in CONFIGURATIONS:
            raise ConfigError(f"{key}: no such configuration in the samples (they are {', '.join(CONFIGURATIONS)})")
        if os.path.isdir(path):
            for method in TRAINED:
                candidate = os.path.join(path, *([] if method == "n2sr" else [method]), "model.pt")
                if os.path.isfile(candidate):
                    found[(configuration, method)] = candidate
            if not any(c == configuration for c, _ in found):
                raise ConfigError(f"{key}: folder {path} holds no model.pt (nor <method>/model.pt) of {', '.join(TRAINED)}")
        elif os.path.isfile(path):
            found[(configuration, "n2sr")] = path
        else:
            raise ConfigError(f"{key}: {path} does not exist; give a model.pt or a folder holding one")
        part = samples[samples["configuration"] == configuration]
        untrainable = [m for m in TRAINED if (configuration, m) not in found]
        if untrainable and not part["split"].isin(TRAIN_SPLITS).any():
            raise ConfigError(f"{key}: no model of {', '.join(untrainable)} there, and configuration {configuration} "
                              "has no train FOVs to train one")
    return found


ADOPTED = adopted_models()


def frozen_configurations() -> set[str]:
    """With train.retrain: never, the configurations whose trained models all exist: no rule
    produces their models any more, so nothing (new train FOVs, other settings) retrains them."""
    if config["train"]["retrain"] != "never":
        return set()
    return {c for c in CONFIGURATIONS
            if all(os.path.isfile(os.path.join(model_dir(m).format(configuration=c), "model.pt"))
                   for m in TRAINED if (c, m) not in ADOPTED)}


TRAINABLE = [c for c in CONFIGURATIONS if c not in frozen_configurations()]
# The generic model is trained (and its config checked) only where some n2sr model starts from it:
# not when every configuration's model is adopted or frozen.
GENERIC_NEEDED = GENERIC and "n2sr" in TRAINED and any((c, "n2sr") not in ADOPTED for c in TRAINABLE)
GENERIC_CONFIGURATIONS = generic_configurations() if GENERIC_NEEDED else []


def model_of(wildcards) -> str:
    """The model a denoise job uses: the one trained before (config models), else this run's."""
    method = getattr(wildcards, "method", "n2sr")
    adopted = ADOPTED.get((wildcards.configuration, method))
    return adopted or os.path.join(model_dir(method).format(configuration=wildcards.configuration), "model.pt")


def adoption_record(wildcards) -> list[str]:
    """The check of a model trained before (adopted.json), which must pass before it denoises."""
    method = getattr(wildcards, "method", "n2sr")
    if (wildcards.configuration, method) not in ADOPTED:
        return []
    return [os.path.join(model_dir(method).format(configuration=wildcards.configuration), "adopted.json")]


def adopted_checkpoint(wildcards) -> str:
    return ADOPTED[(wildcards.configuration, getattr(wildcards, "method", "n2sr"))]


def companions(wildcards) -> str:
    """--sr/--tiff of a denoise part: the final paths of the gathered outputs (not its outputs)."""
    extra = denoise_extra_outputs(wildcards.method)
    return cli_options({k: str(v).format(method=wildcards.method, configuration=wildcards.configuration,
                                         fov=wildcards.fov) for k, v in extra.items()})


def attempt(wildcards, attempt: int) -> int:
    """The job's try number, for `n2sr denoise --attempt` (a retry uses smaller tiles)."""
    return attempt


def scaled_mem(rule: str):
    """mem_mb for `rule` from the config, times the attempt number."""
    return lambda wildcards, attempt: config["resources"][rule]["mem_mb"] * attempt


def metrics_csvs() -> list[str]:
    """Per-FOV metric CSVs of every test FOV: the noisy input and each method."""
    return [f"results/metrics/{method}/{c}/{f}.csv"
            for method in ["noisy", *METHODS]
            for c, f in zip(TEST["configuration"], TEST["fov"])]


PARTIAL_REPORTS = "results/reports/partial"


def partial_report() -> None:
    """After a run with failed jobs (--keep-going), summarise the test FOVs that were scored.

    The real summary needs every test FOV, so one bad file would leave the morning's report
    empty. This writes the same tables over the per-FOV metric CSVs present into
    results/reports/partial/, with missing.txt listing the ones that are not, and never touches
    the real summary (Snakemake does not see these files).
    """
    expected = metrics_csvs()
    present = [p for p in expected if os.path.isfile(p)]
    if not present:
        return
    os.makedirs(PARTIAL_REPORTS, exist_ok=True)
    os.makedirs("logs/summarize", exist_ok=True)
    with atomic_path(os.path.join(PARTIAL_REPORTS, "missing.txt")) as tmp:
        tmp.write_text("".join(f"{p}\n" for p in expected if p not in present), encoding="utf-8")
    try:
        shell(f"n2sr summarize {' '.join(map(shlex.quote, present))} --out-dir {shlex.quote(PARTIAL_REPORTS)}"
              " > logs/summarize/partial.log 2>&1")
    except Exception:  # a failure here must not mask the run's own errors
        print("n2sr: the partial summary failed too; see logs/summarize/partial.log", file=sys.stderr)
        return
    print(f"n2sr: {len(present)} of {len(expected)} per-FOV metric CSVs summarised in {PARTIAL_REPORTS}/ "
          f"(missing ones listed in {PARTIAL_REPORTS}/missing.txt)", file=sys.stderr)


SUMMARY = "results/reports/summary.csv"


def discard_partial_report() -> None:
    """Remove the partial tables of an earlier failed run once the real summary supersedes them.

    Only when the summary is up to date: it exists, every test FOV's metric CSV exists, and the
    summary is newer than each of them and than the partial tables. A successful run that did not
    reach the summary (--until, other targets) leaves the partial tables as they are.
    """
    import shutil

    if not os.path.isdir(PARTIAL_REPORTS) or not len(TEST):
        return
    expected = metrics_csvs()
    if not os.path.isfile(SUMMARY) or not all(os.path.isfile(p) for p in expected):
        return
    partial = [os.path.join(PARTIAL_REPORTS, name) for name in os.listdir(PARTIAL_REPORTS)]
    newest = max(os.stat(p).st_mtime_ns for p in [*expected, *partial, PARTIAL_REPORTS])
    if os.stat(SUMMARY).st_mtime_ns >= newest:
        shutil.rmtree(PARTIAL_REPORTS, ignore_errors=True)


def configuration_summaries() -> list[str]:
    return [f"results/reports/{c}_summary.csv" for c in TEST["configuration"].unique()]


def estimate_figures() -> list[str]:
    """Estimated against true PSNR, one figure per configuration (n2sr summarize)."""
    return [f"results/reports/estimates/{c}.png" for c in TEST["configuration"].unique()]


def crops_figures() -> list[str]:
    """One before/after figure per configuration, of its first test FOV."""
    return [f"results/reports/crops/{c}.png" for c in TEST["configuration"].unique()]


def first_test_fov(wildcards) -> str:
    return str(TEST[TEST["configuration"] == wildcards.configuration]["fov"].iloc[0])


CROPS_METHODS = ["noisy", *METHODS]  # panels of the before/after figure, in order


def crops_reference(wildcards) -> str:
    return f"results/reference/{wildcards.configuration}/{first_test_fov(wildcards)}.zarr"


def crops_images(wildcards) -> list[str]:
    """The noisy input, then each method's denoised output, of the first test FOV (order of CROPS_METHODS)."""
    fov = first_test_fov(wildcards)
    return [ingested(wildcards.configuration, fov)] + [
        f"results/denoised/{m}/{wildcards.configuration}/{fov}.zarr" for m in METHODS]


def crops_capture() -> int:
    return (config["test_captures"] or [0])[0]


def model_records() -> list[str]:
    """Every model this run uses: model.pt of a trained one, adopted.json of one trained before,
    and the generic model that trained ones started from."""
    used = [f"{model_dir(m).format(configuration=c)}/{'adopted.json' if (c, m) in ADOPTED else 'model.pt'}"
            for c in CONFIGURATIONS for m in TRAINED]
    if GENERIC_NEEDED:
        used.append(GENERIC_MODEL)
    return used


BENCHMARKS = "results/benchmarks"


def bench(rule: str, wildcards: str) -> str:
    """The Snakemake benchmark file of a job (wall time, peak memory; gathered into run.json)."""
    return f"{BENCHMARKS}/{rule}/{wildcards}.tsv"


def get_final_output() -> list[str]:
    """Reports when there is something to test; models (with their curves) of every trained
    method for every configuration."""
    models = [f"{model_dir(m).format(configuration=c)}/{name}" for m in TRAINED for c in CONFIGURATIONS
              for name in (("adopted.json",) if (c, m) in ADOPTED else ("model.pt", "curve.png"))]
    reports = ["results/reports/summary.csv", "results/reports/table.csv", "results/reports/table_fixed.csv",
               *configuration_summaries(), *estimate_figures(), *crops_figures()]
    return models + (reports if len(TEST) else []) + ["results/reports/run.json"]
