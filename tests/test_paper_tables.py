"""benchmarks/paper_tables.py's report: our means land in the paper's layout beside the paper's
numbers, per convention, with the held-out subset and the training times (from a fake finished
run, so no training happens here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper_tables():
    spec = importlib.util.spec_from_file_location("paper_tables", REPO / "benchmarks" / "paper_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_scores(work: Path, configuration: str, fov: str, method: str, psnr: float, ssim: float) -> None:
    """One per-image metric CSV as the evaluate rule writes it; the fixed-range PSNR is 1 dB lower."""
    path = work / "results" / "metrics" / method / configuration / f"{fov}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"configuration": configuration, "image": f"{fov}.zarr[0]", "method": method,
                   "psnr": psnr - 1, "ssim": ssim - 0.01, "psnr_per_image": psnr, "ssim_per_image": ssim,
                   "data_range": 255.0, "data_range_per_image": 200.0, "fov": fov}]).to_csv(path, index=False)


def test_report_puts_our_means_beside_the_papers(tmp_path, paper_tables):
    work = tmp_path / "synthetic"
    for fov, offset in (("Confocal_BPAE_B-17", 0.0), ("Confocal_FISH-1", 2.0)):
        write_scores(work, "gaussian_s15", fov, "noisy", 24 + offset, 0.5)
        write_scores(work, "gaussian_s15", fov, "n2sr", 33 + offset, 0.9)
    (work / "benchmark_config.yaml").write_text(yaml.safe_dump(
        {"train": {"iterations": 3000, "batch_size": 4, "patch_size": 64, "lr": 0.001},
         "resources": {"train": {"threads": 2}}}))
    log = work / "logs" / "train" / "gaussian_s15.log"
    log.parent.mkdir(parents=True)
    log.write_text("... n2sr.train: trained 3000 iterations in 150 s\n")
    out = tmp_path / "report" / "tables.md"

    paper_tables.main(["--tables-only", "--workdir", str(tmp_path), "--out", str(out)])

    text = out.read_text()
    lines = text.splitlines()
    # the budget the run recorded, not this invocation's (default 600) --iterations
    assert "Budget: 3000 iterations of batch 4 x 64² crops, Adam lr 0.001, per trained model, on 2 CPU cores" in text
    assert "## Table 2" not in text  # no FMD run: no empty Table 2
    per_image = lines.index("**All 6 test references, per-image range (paper's convention)**")
    # ours: the mean of the two images (33, 35 -> 34); methods without results are marked, not zero
    assert lines[per_image + 4] == "| Gaussian (σ = 15) | ours | 2 | 25.00/0.5000 | — | — | — | 34.00/0.9000 | — |"
    assert lines[per_image + 5] == ("| | paper | 36 | — | 34.15/0.8572 | 34.56/0.8871 | 34.99/0.8938 | 35.27/0.8936 "
                                    "| 35.42/0.9002 |")
    fixed = lines.index("**All 6 test references, fixed range 255**")
    assert lines[fixed + 4].startswith("| Gaussian (σ = 15) | ours | 2 | 24.00/0.4900 |")
    assert "paper" not in lines[fixed + 5]  # the paper has no fixed-range numbers
    held_out = lines.index("**Held-out only (Confocal_BPAE_B FOVs 17-18), per-image range**")
    assert lines[held_out + 4].startswith("| Gaussian (σ = 15) | ours | 1 | 24.00/0.5000 |")
    assert "| N2SR | 1 | 3000 | 150 | 150 | 150 |" in lines
    rows = pd.read_csv(out.with_suffix(".csv"))
    assert len(rows) == 4 and set(rows["run"]) == {"synthetic"}


def test_report_without_finished_runs_says_so(tmp_path, paper_tables):
    with pytest.raises(SystemExit, match="no finished runs; run without --tables-only first"):
        paper_tables.main(["--tables-only", "--workdir", str(tmp_path), "--out", str(tmp_path / "t.md")])


def test_noise_option_restricts_the_synthetic_run(paper_tables):
    args = paper_tables.argparse.Namespace(iterations=10, batch_size=2, patch_size=32, lr=1e-3, val_every=5, cores=1,
                                           noise=["gaussian_s15"])
    config = paper_tables.runs(args)["synthetic"]
    assert list(config["synthetic"]["noise"]) == ["gaussian_s15"]
    assert config["train"]["iterations"] == 10 and config["resources"]["train"]["threads"] == 1
