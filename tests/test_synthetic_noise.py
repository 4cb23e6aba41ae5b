"""The paper's synthetic-noise archive (`n2sr add-noise`): noise statistics, independence and
reproducibility of the stored copies, the manifest, bad inputs, and the CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from n2sr.errors import InputError
from n2sr.cli import main
from n2sr.steps.add_noise import add_noise, parse_noise

# The paper's three settings (Sec. 3.1), as `synthetic.noise` entries.
PAPER_NOISE = {
    "gaussian_s15": {"sigma": 15.0},
    "poisson_l20": {"lam": 20.0},
    "mixed_l15_s5": {"lam": 15.0, "sigma": 5.0},
}
LEVELS = (30, 200)  # the two halves of the two-level reference: dark and bright
SHAPE = (256, 256)


def two_level(shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """uint8 reference: top half LEVELS[0], bottom half LEVELS[1], so a signal-dependent
    variance shows as a different variance in each half."""
    image = np.full(shape, LEVELS[0], dtype=np.uint8)
    image[shape[0] // 2:] = LEVELS[1]
    return image


def ramp(shape: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    """A smooth uint8 image with a different pattern per `seed`."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    return np.clip(120 + 80 * np.sin(y / 7.0 + seed) * np.cos(x / 5.0), 0, 255).astype(np.uint8)


def write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def write_tiff(path: Path, image: np.ndarray) -> Path:
    tifffile.imwrite(path, image, photometric="minisblack")
    return path


def capture(root: Path, noise: str, name: str, k: int) -> np.ndarray:
    return tifffile.imread(root / noise / "raw" / name / f"capture_{k:02d}.tif")


def files(root: Path) -> dict[str, bytes]:
    """Every noisy TIFF of an archive, by path relative to `root`."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.tif"))}


def manifests(root: Path) -> pd.DataFrame:
    """The noise models' manifests, concatenated in folder order, with `path` made relative to `root`."""
    frames = [pd.read_csv(m) for m in sorted(root.glob("*/manifest.csv"))]
    frame = pd.concat(frames, ignore_index=True)
    return frame.assign(path=frame["configuration"] + "/" + frame["path"])


# -- noise statistics ------------------------------------------------------------------------

@pytest.mark.parametrize("noise", PAPER_NOISE)
def test_stored_copies_have_the_stated_mean_and_variance(tmp_path, noise):
    """The archive is what every method trains on, so its noise must be the paper's model:
    zero mean and Var = 255 x / lam + sigma^2 at every clean level x (float32: unclipped).

    Tolerances: both captures of a half pool n = 2 * 128 * 256 = 65536 independent pixels.
    The mean of the residual has standard error sqrt(V / n); the sample variance has relative
    standard error sqrt((2 + kappa) / n), kappa = 1 / (lam x / 255) the excess kurtosis of the
    scaled Poisson part (<= 0.43 here). Both are allowed 5 standard errors (a false failure
    has probability < 1e-6 per check; the seed is fixed, so the test is deterministic anyway),
    i.e. about 3 % of the variance, well below the 255 x / lam term's change between the halves.
    """
    ref = write_png(tmp_path / "ref.png", two_level())
    params = PAPER_NOISE[noise]
    manifest = add_noise(tmp_path / "archive", {"r": ref}, {noise: params}, captures=2, seed=0)
    assert manifest["dtype"].eq("float32").all()
    clean = two_level().astype(np.float64)
    residuals = [capture(tmp_path / "archive", noise, "r", k) - clean for k in (0, 1)]
    assert all(capture(tmp_path / "archive", noise, "r", k).dtype == np.float32 for k in (0, 1))
    lam, sigma = params.get("lam"), params.get("sigma", 0.0)
    for level in LEVELS:
        mask = clean == level
        pooled = np.concatenate([r[mask] for r in residuals])
        n = pooled.size
        var = (255.0 * level / lam if lam else 0.0) + sigma**2
        kurtosis = 255.0 / (lam * level) if lam else 0.0
        assert abs(pooled.mean()) < 5 * np.sqrt(var / n), (level, pooled.mean())
        assert pooled.var() == pytest.approx(var, rel=5 * np.sqrt((2 + kurtosis) / n)), (level, pooled.var(), var)


def test_copies_are_independent(tmp_path):
    """Noise2Noise needs the two copies' noise independent; and two references with the same
    pixels must not share noise (their keys differ by name). Under independence the sample
    correlation of n = 65536 pixels has standard deviation 1 / sqrt(n) = 0.004; allowed 5 of it."""
    image = two_level()
    ref = write_tiff(tmp_path / "ref.tif", image)
    twin = write_tiff(tmp_path / "twin.tif", image)
    root = tmp_path / "archive"
    add_noise(root, {"r": ref, "twin": twin}, {"mixed": PAPER_NOISE["mixed_l15_s5"]}, seed=0)
    clean = image.astype(np.float64)
    r0, r1, t0 = (capture(root, "mixed", name, k) - clean for name, k in (("r", 0), ("r", 1), ("twin", 0)))
    bound = 5 / np.sqrt(clean.size)
    for a, b in ((r0, r1), (r0, t0)):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < bound
    assert np.corrcoef(r0.ravel(), r0.ravel())[0, 1] > 1 - bound  # the check can tell correlated noise


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    refs = {"a": write_png(tmp_path / "a.png", ramp(seed=0)), "b": write_tiff(tmp_path / "b.tif", ramp(seed=1))}
    for name, seed in (("one", 7), ("two", 7), ("three", 8)):
        add_noise(tmp_path / name, refs, PAPER_NOISE, seed=seed)
    one, two, three = (files(tmp_path / name) for name in ("one", "two", "three"))
    assert len(one) == 2 * 3 * 2 and one == two
    assert sorted(three) == sorted(one)
    assert all(three[k] != one[k] for k in one)  # every single image changes with the seed


def test_adding_a_reference_or_noise_leaves_existing_images_unchanged(tmp_path):
    """Extending the experiment must not re-draw the noise the other images already have."""
    a = write_png(tmp_path / "a.png", ramp(seed=0))
    b = write_png(tmp_path / "b.png", ramp(seed=1))
    add_noise(tmp_path / "small", {"a": a}, {"poisson": {"lam": 20}}, seed=3)
    add_noise(tmp_path / "big", {"b": b, "a": a}, {"gauss": {"sigma": 15}, "poisson": {"lam": 20}}, seed=3)
    small, big = files(tmp_path / "small"), files(tmp_path / "big")
    assert set(small) < set(big) and len(big) == 2 * 2 * 2
    for rel, data in small.items():
        assert big[rel] == data, rel


# -- manifest --------------------------------------------------------------------------------

def test_manifest_records_seed_noise_and_source_per_file(tmp_path):
    refs = {"a": write_png(tmp_path / "a.png", ramp(seed=0)), "b": write_tiff(tmp_path / "b.tif", ramp(seed=1))}
    root = tmp_path / "archive"
    returned = add_noise(root, refs, PAPER_NOISE, captures=3, seed=11)
    for noise, part in returned.groupby("configuration"):  # each model's manifest sits in its folder
        written = pd.read_csv(root / noise / "manifest.csv")
        pd.testing.assert_frame_equal(written, part.reset_index(drop=True), check_dtype=False)
    manifest = manifests(root)
    assert sorted(manifest["path"]) == sorted(files(root))  # one row per file, no more
    assert len(manifest) == 3 * 2 * 3
    assert manifest["seed"].eq(11).all() and manifest["dtype"].eq("float32").all()
    for row in returned.itertuples():
        params = PAPER_NOISE[row.configuration]
        assert row.path == f"raw/{row.fov}/capture_{row.capture:02d}.tif"
        assert row.source == str(refs[row.fov])
        assert row.source_sha256 == hashlib.sha256(refs[row.fov].read_bytes()).hexdigest()
        assert (np.isnan(row.lam) if "lam" not in params else row.lam == params["lam"]), row
        assert row.sigma == params.get("sigma", 0.0), row
        assert row.a == pytest.approx(255.0 / params["lam"] if "lam" in params else 0.0)
        assert row.b == pytest.approx(params.get("sigma", 0.0) ** 2)


def test_rerun_replaces_its_noise_model_only_and_never_a_foreign_folder(tmp_path):
    """Each noise model is written on its own (one pipeline job each): regenerating one leaves
    the others' files untouched, and a folder the generator did not write is refused."""
    ref = write_png(tmp_path / "a.png", ramp())
    root = tmp_path / "archive"
    add_noise(root, {"a": ref}, {"g": {"sigma": 15}}, seed=0)
    add_noise(root, {"a": ref}, {"p": {"lam": 20}}, seed=1)
    kept = {k: v for k, v in files(root).items() if k.startswith("p/")}
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "p").rglob("*")}
    add_noise(root, {"a": ref}, {"g": {"sigma": 15}}, seed=2)
    assert pd.read_csv(root / "g" / "manifest.csv")["seed"].eq(2).all()
    assert pd.read_csv(root / "p" / "manifest.csv")["seed"].eq(1).all()
    assert {k: v for k, v in files(root).items() if k.startswith("p/")} == kept
    assert {p: p.stat().st_mtime_ns for p in (root / "p").rglob("*")} == mtimes
    assert sorted(files(root)) == [f"{n}/raw/a/capture_0{k}.tif" for n in ("g", "p") for k in (0, 1)]
    (root / "mine").mkdir()
    (root / "mine" / "thesis.txt").write_text("precious")
    with pytest.raises(ValueError, match=r"mine: exists and is not a generated noise model"):
        add_noise(root, {"a": ref}, {"g": {"sigma": 15}, "mine": {"sigma": 15}}, seed=3)
    assert (root / "mine" / "thesis.txt").read_text() == "precious"
    assert pd.read_csv(root / "g" / "manifest.csv")["seed"].eq(2).all()  # refused before writing anything


# -- bad inputs ------------------------------------------------------------------------------

def test_missing_reference_is_named(tmp_path):
    missing = tmp_path / "nowhere.png"
    with pytest.raises(InputError, match="nowhere.png: no such file"):
        add_noise(tmp_path / "out", {"a": missing}, {"g": {"sigma": 15}})
    assert not (tmp_path / "out").exists()


def test_reference_beyond_8_bit_is_refused(tmp_path):
    """lam and sigma are defined on the 0-255 scale; a 16-bit reference would silently get far
    less noise than the paper's."""
    ref = write_tiff(tmp_path / "wide.tif", np.full((32, 32), 1000, dtype=np.uint16))
    with pytest.raises(InputError, match=r"wide.tif: has values 1000\.\.1000; .* 0-255 scale"):
        add_noise(tmp_path / "out", {"a": ref}, {"g": {"sigma": 15}})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("references, noise, captures, match", [
    ({"a": "REF"}, {"g": {"sigma": 15, "lamda": 20}}, 2, r"noise 'g' has keys \['lamda', 'sigma'\]; expected lam"),
    ({"a": "REF"}, {"g": {}}, 2, "noise 'g' has keys"),
    ({"a": "REF"}, {"p": {"lam": 0}}, 2, "noise 'p': lam must be > 0"),
    ({"a": "REF"}, {"g": {"sigma": -1}}, 2, "noise 'g': sigma must be >= 0"),
    ({"a/b": "REF"}, {"g": {"sigma": 15}}, 2, "reference name 'a/b' must be a plain folder name"),
    ({"a": "REF"}, {"x/raw": {"sigma": 15}}, 2, "noise name 'x/raw' must be a plain folder name"),
    ({"a": "REF"}, {"g": {"sigma": 15}}, 0, "captures must be >= 1; got 0"),
    ({}, {"g": {"sigma": 15}}, 2, "no references"),
    ({"a": "REF"}, {}, 2, "no noise models"),
])
def test_bad_spec_is_named_and_writes_nothing(tmp_path, references, noise, captures, match):
    ref = write_png(tmp_path / "a.png", ramp())
    references = {k: ref if v == "REF" else v for k, v in references.items()}
    with pytest.raises(ValueError, match=match):
        add_noise(tmp_path / "out", references, noise, captures=captures)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_bad_dtype_is_named_and_leaves_nothing(tmp_path):
    ref = write_png(tmp_path / "a.png", ramp())
    with pytest.raises(ValueError, match="dtype must be one of float32, uint8; got 'float64'"):
        add_noise(tmp_path / "out", {"a": ref}, {"g": {"sigma": 15}}, dtype="float64")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # not even a temporary sibling


def test_uint8_copies_are_clipped_and_integer(tmp_path):
    """An 8-bit archive, as a camera would write it: 0-255 and whole numbers, with the clipping
    visible where the noise crosses the range's ends (black and white halves)."""
    image = np.zeros(SHAPE, dtype=np.uint8)
    image[SHAPE[0] // 2:] = 255
    ref = write_png(tmp_path / "bw.png", image)
    root = tmp_path / "archive"
    manifest = add_noise(root, {"bw": ref}, {"g": {"sigma": 15}}, dtype="uint8", seed=0)
    assert manifest["dtype"].eq("uint8").all()
    for k in (0, 1):
        noisy = capture(root, "g", "bw", k)
        assert noisy.dtype == np.uint8
        # Half of the pixels of each half would leave the range; clipped, they sit on its ends.
        assert 0.4 < np.mean(noisy[: SHAPE[0] // 2] == 0) < 0.6
        assert 0.4 < np.mean(noisy[SHAPE[0] // 2:] == 255) < 0.6
        assert len(np.unique(noisy)) > 30  # the noise is still there, not just the two ends


# -- parse_noise and the CLI -----------------------------------------------------------------

def test_parse_noise():
    assert parse_noise("mixed:lam=15,sigma=5") == ("mixed", {"lam": 15.0, "sigma": 5.0})
    assert parse_noise("g:sigma=15") == ("g", {"sigma": 15.0})
    for text, match in (("mixed", "expected NAME:KEY=VALUE"), (":lam=1", "expected NAME:KEY=VALUE"),
                        ("m:lamda=15", "'lamda=15' is not KEY=VALUE"), ("m:lam", "'lam' is not KEY=VALUE"),
                        ("m:lam=lots", "lam value 'lots' is not a number")):
        with pytest.raises(ValueError, match=match):
            parse_noise(text)


def test_cli_round_trip(tmp_path):
    a, b = write_png(tmp_path / "a.png", ramp(seed=0)), write_tiff(tmp_path / "b.tif", ramp(seed=1))
    out = tmp_path / "out"
    status = main(["add-noise", str(out), "--reference", f"a={a}", "--reference", f"b={b}",
                   "--noise", "mixed:lam=15,sigma=5", "--noise", "gaussian_s15:sigma=15",
                   "--captures", "3", "--seed", "4", "--dtype", "uint8"])
    assert status == 0
    manifest = manifests(out)
    assert sorted(manifest["path"]) == sorted(files(out)) and len(manifest) == 2 * 2 * 3
    assert manifest["seed"].eq(4).all() and manifest["dtype"].eq("uint8").all()
    assert set(manifest["configuration"]) == {"mixed", "gaussian_s15"}
    mixed = manifest[manifest["configuration"] == "mixed"]
    assert mixed["lam"].eq(15).all() and mixed["sigma"].eq(5).all()
    # The same archive as the library call makes: the CLI adds nothing of its own.
    add_noise(tmp_path / "lib", {"a": a, "b": b}, {"mixed": {"lam": 15, "sigma": 5},
                                                             "gaussian_s15": {"sigma": 15}},
                       captures=3, seed=4, dtype="uint8")
    assert files(out) == files(tmp_path / "lib")


@pytest.mark.parametrize("noise, names", [
    ("mixed:lamda=15", "'lamda=15' is not KEY=VALUE"),
    ("mixed", "expected NAME:KEY=VALUE"),
    ("mixed:lam=0", "noise 'mixed': lam must be > 0"),
])
def test_cli_bad_noise_is_one_line(tmp_path, capsys, noise, names):
    ref = write_png(tmp_path / "a.png", ramp())
    status = main(["add-noise", str(tmp_path / "out"), "--reference", f"a={ref}", "--noise", noise])
    assert status == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("n2sr: error: ") and names in err, err
    assert not (tmp_path / "out").exists()
