"""The Snakemake workflow: lint, dry runs of the shipped configs, config and sample-sheet errors,
and (slow) whole runs on a tiny synthetic archive and on noisy copies of tiny references.

Every run happens in a fresh working directory (`workdir`), never in the checkout: a dry run
there would find the checkout's results/ and have nothing left to do."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from conftest import data_root
from n2sr.io import checkpoints
from n2sr.io import samples as smp
from pipeline_helpers import snakemake as pinned_snakemake
from pipeline_helpers import NARROW, tiny_references_config, tiny_synthetic_config, write_references

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
CONFIG_SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
SAMPLE_SCHEMA = yaml.safe_load((REPO / "workflow/schemas/samples.schema.yaml").read_text())


def workdir(tmp_path: Path) -> Path:
    """A fresh working directory `tmp_path/work` holding a copy of the shipped config/, beside
    ``tmp_path/shared/data`` -> the real data, so the configs' relative paths (config/samples.tsv,
    ../shared/data/fmd) resolve as they do from the checkout, whose results/ and resources/ are
    not seen."""
    work = tmp_path / "work"
    shutil.copytree(REPO / "config", work / "config")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_root().resolve(), target_is_directory=True)
    return work


def snakemake(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the repository's workflow in `work`; stdout and stderr together in `.stdout`."""
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *args]
    return subprocess.run(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The first "Job stats" table of a Snakemake log: rule -> number of jobs."""
    lines = output.splitlines()
    counts = {}
    for line in lines[lines.index("Job stats:") + 3:]:
        words = line.split()
        if len(words) != 2 or not words[1].isdigit():
            break
        counts[words[0]] = int(words[1])
    return counts


# -- shipped configs -------------------------------------------------------------------------

# (--configfile arguments, whether the config reads the real FMD data)
CONFIGS = [
    pytest.param([], False, id="config.yaml"),
    pytest.param(["--configfile", "config/fmd.yaml"], True, id="fmd.yaml"),
    pytest.param(["--configfile", "config/baselines.yaml"], False, id="baselines.yaml"),
    pytest.param(["--configfile", "config/synthetic.yaml", "config/baselines.yaml"], True,
                 id="synthetic.yaml+baselines.yaml"),
]


def shipped_workdir(tmp_path: Path, needs_data: bool) -> Path:
    """`workdir`, or a skip naming where the data was looked for when the config needs it."""
    fmd = data_root() / "fmd"
    if needs_data and not fmd.is_dir():
        pytest.skip(f"FMD data not found at {fmd}; set N2SR_DATA to the shared data folder")
    return workdir(tmp_path)


@pytest.mark.parametrize("args, needs_data", CONFIGS)
def test_lint_reports_nothing(tmp_path, args, needs_data):
    run = snakemake(shipped_workdir(tmp_path, needs_data), "--lint", *args)
    assert run.returncode == 0, run.stdout
    assert "Congratulations, your workflow is in a good condition" in run.stdout, run.stdout


@pytest.mark.parametrize("args, needs_data", CONFIGS)
def test_dry_run(tmp_path, args, needs_data):
    run = snakemake(shipped_workdir(tmp_path, needs_data), "-n", "--nolock", *args)
    assert run.returncode == 0, run.stdout
    for rule in ("ingest", "reference", "train", "denoise", "evaluate", "evaluate_noisy", "summarize"):
        assert f"rule {rule}:" in run.stdout, run.stdout


def test_dry_run_of_the_synthetic_noise_experiment(tmp_path):
    """config/synthetic.yaml + baselines: the noise is drawn once per noise model (one add_noise
    job each, with every reference and the seed), then one model per noise model and method."""
    run = snakemake(shipped_workdir(tmp_path, True), "-n", "--nolock",
                    "--configfile", "config/synthetic.yaml", "config/baselines.yaml")
    assert run.returncode == 0, run.stdout
    counts = job_counts(run.stdout)
    assert counts["add_noise"] == 5 and "synth" not in counts, counts
    assert counts["train"] == 5 and counts["train_baseline"] == 5 * 3, counts  # n2v, n2s, n2n per noise model
    commands = [line for line in run.stdout.splitlines() if "n2sr add-noise " in line]
    assert len(commands) == 5, commands
    for command, noise in zip(sorted(commands, key=lambda c: c.split("--noise ")[1]),
                              ("correlated_l30_s2_c03:lam=30,sigma=2,correlation=0.3",
                               "correlated_l30_s2_c06:lam=30,sigma=2,correlation=0.6",
                               "gaussian_s15:sigma=15", "poisson_gaussian_l15_s5:lam=15,sigma=5", "poisson_l20:lam=20")):
        assert command.startswith("Shell command: n2sr add-noise resources/fmd_synthetic_noise --reference "), command
        assert command.count("--reference ") == 16 + 2 + 4, command  # Confocal_BPAE_B 1-18, four other FOV 1s
        assert command.count("--noise ") == 1 and f"--noise {noise} " in command, command
        for option in ("--captures 2", "--seed 0", "--dtype float32",
                       "--reference Confocal_BPAE_B-17=../shared/data/fmd/Confocal_BPAE_B/gt/17/avg50.png"):
            assert option in command, command


def test_dry_run_tells_a_point_scanning_configurations_steps_so(tmp_path):
    """point_scanning: [low_noise]: that configuration's denoise, bm3d and evaluate commands get
    --scanned (their estimates' noise model); high_noise's commands are what they were without the key."""
    config = tmp_path / "scan.yaml"
    config.write_text(yaml.safe_dump({"point_scanning": ["low_noise"], "methods": ["n2sr", "bm3d"]}))
    run = snakemake(workdir(tmp_path), "-n", "--nolock", "--configfile", str(config))
    assert run.returncode == 0, run.stdout
    steps = ("n2sr denoise ", "n2sr bm3d ", "n2sr evaluate ")
    commands = [line for line in run.stdout.splitlines() if line.startswith("Shell command: ") and
                any(step in line for step in steps)]
    for step in steps:
        for configuration, scanned in (("low_noise", True), ("high_noise", False)):
            mine = [c for c in commands if step in c and f"/{configuration}/" in c]
            assert mine and all(c.endswith(" --scanned") == scanned for c in
                                (c.split(" > ")[0] for c in mine)), (step, configuration, mine)


@pytest.mark.parametrize("learns_from", [[], ["low_noise"]])
def test_dry_run_of_a_warm_start_from_the_generic_model(tmp_path, learns_from):
    """train.init: generic: one train_generic job on the train FOVs of generic.configurations
    (all when empty), from scratch with the generic budget; each configuration's n2sr then
    fine-tunes it (--init, and the model as an input so it waits), its own images only; the
    baselines start from scratch."""
    config = tmp_path / "generic.yaml"
    config.write_text(yaml.safe_dump({"train": {"init": "generic"}, "methods": ["n2sr", "n2v"],
                                      "generic": {"configurations": learns_from, "minutes": 7}}))
    run = snakemake(shipped_workdir(tmp_path, False), "-n", "--nolock", "-p", "--configfile", str(config))
    assert run.returncode == 0, run.stdout
    counts = job_counts(run.stdout)
    assert counts["train_generic"] == 1 and counts["train"] == 2 and counts["train_baseline"] == 2, counts
    commands = [line.removeprefix("Shell command: ") for line in run.stdout.splitlines()
                if line.startswith("Shell command: n2sr train ")]
    generic = [c for c in commands if "--out results/generic/model.pt " in c]
    assert len(generic) == 1 and "--init scratch " in generic[0] and "--minutes 7 " in generic[0], generic
    images = generic[0].split(" --out ")[0].split()[2:]
    assert {i.split("/")[2] for i in images} == set(learns_from or ["high_noise", "low_noise"]), images
    for name in ("high_noise", "low_noise"):
        (own,) = [c for c in commands if f"--out results/models/{name}/model.pt " in c]
        assert "--init results/generic/model.pt " in own and "--minutes 2 " in own, own
        assert {i.split("/")[2] for i in own.split(" --out ")[0].split()[2:]} == {name}, own
        (baseline,) = [c for c in commands if f"--out results/models/{name}/n2v/model.pt " in c]
        assert "--init scratch " in baseline, baseline


def test_dry_run_scatters_the_ingest_of_a_large_tiff_stack(tmp_path):
    """ingest.part_size: a 12-plane stack in shards of 3 planes is converted by prepare, 4 parts and
    the gathering ingest job (K from the TIFF header, in whole shards); the 2-plane stack below the
    size by one ingest job."""
    rng = np.random.default_rng(0)
    tifffile.imwrite(tmp_path / "big.tif", rng.integers(0, 255, (12, 64, 64), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "small.tif", rng.integers(0, 255, (2, 64, 64), dtype=np.uint8))
    tifffile.imwrite(tmp_path / "ref.tif", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path / 'small.tif'}\t\ttrain",
                                   f"A\t2\t{tmp_path / 'big.tif'}\t{tmp_path / 'ref.tif'}\ttest"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"samples": str(sheet), "synthetic": None, "test_captures": [0],
                                      "ingest": {"part_size": 3 * 64 * 64, "shard_mb": 3 * 64 * 64 / 2**20}}))
    run = snakemake(workdir(tmp_path), "-n", "--nolock", "--configfile", str(config))
    assert run.returncode == 0, run.stdout
    counts = job_counts(run.stdout)
    assert (counts["ingest_prepare"], counts["ingest_part"], counts["ingest"]) == (1, 4, 2), counts
    commands = [line for line in run.stdout.splitlines() if "n2sr ingest " in line]
    options = "--clevel 5 --shard-mb 0.01171875"
    assert any(f"n2sr ingest --part gather/4 {options} -- {tmp_path / 'big.tif'}" in c for c in commands), commands
    assert any(f"n2sr ingest  {options} -- {tmp_path / 'small.tif'}" in c for c in commands), commands
    assert sum(f"--part prepare/4 {options} -- " in c for c in commands) == 1, commands
    assert sum(f"--part {k}/4 -- " in c for c in commands for k in range(1, 5)) == 4, commands


def test_fmd_sets_every_key_of_the_default():
    """--configfile is merged over config/config.yaml: a key fmd.yaml omits would leak the demo's value."""
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    fmd = yaml.safe_load((REPO / "config/fmd.yaml").read_text())
    assert set(default) <= set(fmd)
    for section in ("train", "denoise", "evaluate"):
        assert set(default[section]) <= set(fmd[section]), section


def test_every_schema_key_is_described():
    def walk(schema: dict, path: str):
        for key, sub in schema.get("properties", {}).items():
            assert sub.get("description"), f"{path}{key} has no description"
            yield from walk(sub, f"{path}{key}.")
            yield from walk(sub.get("then", {}), f"{path}{key}.")
            extra = sub.get("additionalProperties")
            if isinstance(extra, dict):
                yield from walk(extra, f"{path}{key}.*.")
        yield path

    list(walk(CONFIG_SCHEMA, ""))
    list(walk(SAMPLE_SCHEMA, ""))


# -- config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("override, names", [
    ({"train": {"iterationz": 5}}, ["iterationz"]),
    ({"train": {"iterations": "many"}}, ["iterations", "integer"]),
    ({"denoise": {"tile_size": 100}}, ["tile_size", "multiple of 32"]),
    ({"resolution": 2}, ["resolution"]),
    ({"train": {"init": "generic"}, "generic": {"configurations": ["nope"]}}, ["generic.configurations", "nope"]),
    ({"point_scanning": ["low_noise", "nope"]}, ["point_scanning", "nope", "not in the sample sheet"]),
])
def test_bad_config_fails_naming_the_key(tmp_path, override, names):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(override))
    run = snakemake(workdir(tmp_path), "-n", "--nolock", "--configfile", str(path))
    assert run.returncode != 0
    for name in names:
        assert name in run.stdout, run.stdout


def test_sheet_row_naming_a_missing_file_fails_naming_the_row(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("configuration\tfov\traw\tsplit\n"
                     f"a\t1\t{tmp_path}\ttrain\n"
                     f"a\t2\t{tmp_path / 'nowhere.tif'}\ttest\n")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"samples": str(sheet), "synthetic": None}))
    run = snakemake(workdir(tmp_path), "-n", "--nolock", "--configfile", str(config))
    assert run.returncode != 0
    assert f"{sheet} line 3: raw '{tmp_path / 'nowhere.tif'}' does not exist" in run.stdout, run.stdout


# -- sample table ----------------------------------------------------------------------------

def write_sheet(tmp_path: Path, rows: list[str], header: str = "configuration\tfov\traw\treference\tsplit") -> Path:
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("\n".join([header, *rows]) + "\n")
    return sheet


def table(sheet: Path, produced=()) -> pd.DataFrame:
    return smp.check_rows(smp.read_sheet(sheet), SAMPLE_SCHEMA, produced)


def test_sheet_rows_get_defaults_and_index(tmp_path):
    (tmp_path / "a.tif").touch()
    sheet = write_sheet(tmp_path, [f"A\t01\t{tmp_path / 'a.tif'}"], header="configuration\tfov\traw")
    t = table(sheet)
    assert t.loc[("A", "01")].to_dict() == {"configuration": "A", "fov": "01", "raw": str(tmp_path / "a.tif"),
                                            "reference": "", "reference_policy": "auto", "split": "both"}


@pytest.mark.parametrize("row, message", [
    ("A\t1\t{d}\t\tlater", "line 2: column 'split': 'later' is not one of"),
    ("A\t1\t{d}\t{d}/ref.png\ttest", "line 2: reference '{d}/ref.png' does not exist"),
    ("A\tx/y\t{d}\t\ttest", "line 2: column 'fov': 'x/y' does not match"),
    ("A\t1\t\t\ttest", "line 2: 'raw' is a required property"),
])
def test_bad_row_is_named(tmp_path, row, message):
    sheet = write_sheet(tmp_path, [row.format(d=tmp_path)])
    with pytest.raises(smp.SampleError) as err:
        table(sheet)
    assert message.format(d=tmp_path) in str(err.value)


def test_unknown_column_is_named(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path}\t\tboth\tx"],
                        header="configuration\tfov\traw\treference\tsplit\tobjective")
    with pytest.raises(smp.SampleError, match="line 2: .*'objective' was unexpected"):
        table(sheet)


def test_duplicate_fov_names_both_rows(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path}\t\ttrain", f"A\t1\t{tmp_path}\t\ttest"])
    with pytest.raises(smp.SampleError, match=r"line 3: configuration A FOV 1 is already given by .* line 2"):
        table(sheet)


def test_test_fovs_need_a_train_fov(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path}\t\ttest"])
    with pytest.raises(smp.SampleError, match="configuration A has test FOVs but no FOV with split train or both"):
        table(sheet)


def test_paths_inside_a_produced_folder_need_not_exist(tmp_path):
    sheet = write_sheet(tmp_path, [f"A\t1\t{tmp_path / 'archive/A/raw/1'}\t\tboth"])
    assert len(table(sheet, produced=[tmp_path / "archive"])) == 1


def test_exactly_one_sample_source():
    with pytest.raises(smp.SampleError, match="exactly one of 'samples'"):
        smp.sample_table({"samples": None, "archive": None, "synthetic": None}, SAMPLE_SCHEMA)


def test_discover_fmd_layout(tmp_path):
    for fov in ("1", "2", "10"):
        (tmp_path / "Conf/raw" / fov).mkdir(parents=True)
        (tmp_path / "Conf/gt" / fov).mkdir(parents=True)
        (tmp_path / "Conf/gt" / fov / "avg50.png").touch()
    archive = {"root": str(tmp_path), "reference": "{configuration}/gt/{fov}/avg50.png",
               "configurations": {"Conf": {"train_fovs": [1, 2], "test_fovs": [2, 10]}}}
    t = smp.check_rows(smp.discover(archive), SAMPLE_SCHEMA)
    assert t["split"].to_dict() == {("Conf", "1"): "train", ("Conf", "10"): "test", ("Conf", "2"): "both"}
    assert t.loc[("Conf", "10"), "reference"] == str(tmp_path / "Conf/gt/10/avg50.png")

    archive["configurations"]["Conf"]["test_fovs"] = [19]
    with pytest.raises(smp.SampleError, match=r"configuration Conf FOV 19: no folder .*; FOVs present: 1, 2, 10"):
        smp.discover(archive)


def references_config(tmp_path: Path) -> dict:
    """A config (schema defaults filled) generating noisy copies of references Conf 1-3 under
    two noise models: Conf 1 trains, 2 trains and is tested, 3 is tested."""
    write_references(tmp_path / "refs", "Conf", [1, 2, 3], shape=(16, 16))
    return {"samples": None, "archive": None, "synthetic": {
        "root": str(tmp_path / "noisy"), "seed": 0, "spec": None, "captures": 2, "dtype": "float32",
        "noise": {"g": {"sigma": 15}, "p": {"lam": 20}},
        "references": {"root": str(tmp_path / "refs"), "path": "{configuration}/gt/{fov}/avg50.png",
                       "configurations": {"Conf": {"train_fovs": [1, 2], "test_fovs": [2, 3]}}}}}


def test_reference_rows_one_per_noise_and_reference(tmp_path):
    t = smp.sample_table(references_config(tmp_path), SAMPLE_SCHEMA)
    assert sorted(t.index) == [(noise, f"Conf-{fov}") for noise in ("g", "p") for fov in (1, 2, 3)]
    assert t["split"].to_dict() == {(noise, f"Conf-{fov}"): split for noise in ("g", "p")
                                    for fov, split in ((1, "train"), (2, "both"), (3, "test"))}
    for (noise, fov), row in t.iterrows():
        source = fov.split("-")[1]
        assert row["reference"] == str(tmp_path / "refs/Conf/gt" / source / "avg50.png")
        assert row["raw"] == str(tmp_path / "noisy" / noise / "raw" / fov)  # generated by add_noise


@pytest.mark.parametrize("other", [{"samples": "samples.tsv"}, {"archive": {"root": "x", "configurations": {}}}])
def test_reference_rows_exclude_other_sources(tmp_path, other):
    """Two sources of samples would leave one silently ignored."""
    config = {**references_config(tmp_path), **other}
    with pytest.raises(smp.SampleError, match="synthetic.references generates the samples; set samples and archive "
                                              "to null"):
        smp.sample_table(config, SAMPLE_SCHEMA)


def test_missing_reference_is_named_at_table_time(tmp_path):
    """Noticed when the workflow is read, not when add_noise runs (or hours later on a cluster)."""
    config = references_config(tmp_path)
    missing = tmp_path / "refs/Conf/gt/3/avg50.png"
    missing.unlink()
    with pytest.raises(smp.SampleError) as err:
        smp.sample_table(config, SAMPLE_SCHEMA)
    assert f"synthetic noise g reference Conf-3: reference '{missing}' does not exist" in str(err.value)


# -- end to end ------------------------------------------------------------------------------

METHODS = ("n2sr", "bm3d", "n2v", "n2s", "n2n")


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    """Tiny archive in folders whose names need quoting; every method's denoised PSNR must beat noisy PSNR."""
    work = tmp_path / "run dir"
    work.mkdir()
    config = tiny_synthetic_config(work, "archive 'demo'")
    config["methods"] = list(METHODS)
    config["train"].update(iterations=150, minutes=None, patch_size=32, val_every=50, checkpoint_every=50, **NARROW)
    config["denoise"].update(tile_size=32, write_sr=True, write_tiff=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))

    run = snakemake(work, "--cores", "2", "--configfile", "config.yaml", timeout=900)
    assert run.returncode == 0, run.stdout

    results = work / "results"
    for path in ("models/demo/model.pt", "models/demo/curve.csv", "models/demo/curve.png",
                 "denoised/n2sr/demo/2.zarr", "denoised/n2sr/demo/2.sr.zarr", "denoised/n2sr/demo/2.tif",
                 "reports/table.csv", "reports/table_fixed.csv", "reports/demo_summary.csv",
                 *(f"models/demo/{m}/{f}" for m in ("n2v", "n2s", "n2n") for f in ("model.pt", "curve.png")),
                 *(f"denoised/{m}/demo/2.{ext}" for m in METHODS for ext in ("zarr", "tif"))):
        assert (results / path).exists(), path
    assert not (results / "denoised/n2v/demo/2.sr.zarr").exists()  # only n2sr has a 2x output
    per_image = pd.concat(pd.read_csv(results / f"metrics/{m}/demo/2.csv") for m in ("noisy", *METHODS))
    assert {"configuration", "fov", "image", "method", "psnr", "ssim", "psnr_per_image",
            "ssim_per_image"} <= set(per_image.columns)
    assert sorted(per_image["image"]) == ["2.zarr[0]"] * 6 + ["2.zarr[2]"] * 6
    summary = pd.read_csv(results / "reports/summary.csv").set_index("method")
    assert {"configuration", "n", "psnr_mean", "psnr_std", "ssim_mean", "psnr_per_image_mean"} <= set(summary.columns)
    print(summary[["psnr_mean", "ssim_mean", "psnr_per_image_mean", "ssim_per_image_mean", "est_psnr_sure_mean",
                   "est_psnr_held_out_mean"]].to_string())
    # reference-free estimates beside the true PSNR: SURE for every method and the noisy input,
    # the Theorem-1 held-out loss for the self-supervised networks
    assert summary["est_psnr_sure_mean"].notna().all(), summary
    assert summary.loc[["n2sr", "n2v", "n2s"], "est_psnr_held_out_mean"].notna().all(), summary
    for method in METHODS:
        assert summary.loc[method, "psnr_mean"] > summary.loc["noisy", "psnr_mean"], summary
    table = pd.read_csv(results / "reports/table_fixed.csv", keep_default_na=False)
    assert list(table.columns) == ["configuration", "convention", "n", "noisy", *METHODS]
    assert table.loc[0, "n"] == 2 and table.loc[0, "convention"] == "fixed"

    # run.json traces the tables to what made them (config/README.md, "The run manifest")
    manifest = json.loads((results / "reports/run.json").read_text())
    assert manifest["versions"]["n2sr"] and manifest["config"]["methods"] == list(METHODS)
    assert [(s["configuration"], s["fov"]) for s in manifest["samples"]] == [("demo", "1"), ("demo", "2")]
    trained = {Path(m["path"]).parent.name: m for m in manifest["models"]}
    assert set(trained) == {"demo", "n2v", "n2s", "n2n"}, trained
    model = results / "models/demo/model.pt"
    assert trained["demo"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert trained["demo"]["steps"] == 150 and trained["demo"]["best_val_loss"] > 0
    by_rule = manifest["jobs_by_rule"]
    assert by_rule["train"]["jobs"] == 4 and by_rule["denoise"]["jobs"] == len(METHODS), by_rule
    assert by_rule["ingest"]["jobs"] == 2 and by_rule["evaluate"]["jobs"] == len(METHODS) + 1, by_rule
    for job in manifest["jobs"]:
        assert job["seconds"] > 0 and job["max_rss_mb"] > 0, job

    rerun = snakemake(work, "-n", "--configfile", "config.yaml")
    assert "Nothing to be done" in rerun.stdout, rerun.stdout

    # the HTML report the catalog file promises (`report: true`), from a folder that needs quoting
    made = snakemake(work, "--configfile", "config.yaml", "--report", "report.zip")
    assert made.returncode == 0, made.stdout
    with zipfile.ZipFile(work / "report.zip") as z:
        names = {Path(n).name for n in z.namelist()}
    assert {"report.html", "summary.csv", "table.csv", "curve.png"} <= names, names


@pytest.mark.slow
def test_synthetic_noise_experiment_end_to_end(tmp_path):
    """The paper's synthetic experiment on three tiny references: the noise is drawn once and
    stored (a rerun re-draws nothing), n2n trains on the stored pairs, and both methods
    improve on the noisy input."""
    work = tmp_path / "work"
    work.mkdir()
    write_references(work / "refs", "demo", [1, 2, 3])
    # lr 1e-3 (synthetic.yaml has the authors' 1e-4, for 20000 iterations): 200 iterations then suffice.
    config = tiny_references_config("refs", {"demo": {"train_fovs": [1, 2], "test_fovs": [3]}},
                                    {"poisson_l20": {"lam": 20}}, root="noisy", iterations=200, lr=0.001,
                                    val_every=50, checkpoint_every=50)
    config.update(methods=["n2sr", "n2n"], test_captures=[0])
    config["synthetic"]["seed"] = 5
    (work / "config.yaml").write_text(yaml.safe_dump(config))

    # Pinned to one CPU (one torch thread per job): unpinned, each job's threads would spin
    # against the other's on 2 shared cores, 50x slower.
    run = pinned_snakemake(work, "--cores", "2", "--configfile", "config.yaml", timeout=300)
    assert run.returncode == 0, run.stdout

    manifest = pd.read_csv(work / "noisy/poisson_l20/manifest.csv")
    assert len(manifest) == 3 * 2 and manifest["seed"].eq(5).all() and manifest["lam"].eq(20).all()
    noisy = sorted((work / "noisy").rglob("*.tif"))
    assert len(noisy) == 6
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in noisy}

    results = work / "results"
    n2n = checkpoints.load(results / "models/poisson_l20/n2n/model.pt")
    assert n2n["method"] == "n2n"
    assert n2n["sources"] == [f"results/ingest/poisson_l20/demo-{fov}.zarr[0,1]" for fov in (1, 2)]
    assert checkpoints.load(results / "models/poisson_l20/model.pt")["method"] == "n2sr"
    assert tifffile.imread(noisy[0]).dtype == np.float32  # config/synthetic.yaml's dtype reached add-noise
    summary = pd.read_csv(results / "reports/summary.csv").set_index("method")
    print(summary[["psnr_mean", "ssim_mean"]].to_string())
    assert summary.loc["noisy", "n"] == 1
    for method in ("n2sr", "n2n"):
        assert summary.loc[method, "psnr_mean"] > summary.loc["noisy", "psnr_mean"], summary

    rerun = pinned_snakemake(work, "-n", "--configfile", "config.yaml")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout, rerun.stdout
    rerun = pinned_snakemake(work, "--cores", "2", "--configfile", "config.yaml")
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout, rerun.stdout
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in noisy} == before

    # A noise model added to the finished experiment is generated, trained and scored alone.
    config["synthetic"]["noise"]["gaussian_s15"] = {"sigma": 15}
    (work / "extended.yaml").write_text(yaml.safe_dump(config))
    plan = pinned_snakemake(work, "-n", "--configfile", "extended.yaml")
    assert plan.returncode == 0, plan.stdout
    counts = job_counts(plan.stdout)
    assert counts["add_noise"] == 1 and counts["train"] == 1 and counts["train_baseline"] == 1, counts
    assert "wildcards: noise=gaussian_s15" in plan.stdout, plan.stdout
    jobs = [line for line in plan.stdout.splitlines() if line.strip().startswith("wildcards:")]
    assert not [line for line in jobs if "poisson_l20" in line], jobs  # nothing of the finished model reruns
