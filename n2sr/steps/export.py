"""Step `export`: a trained model as a BioImage Model Zoo package (``bioimageio.spec`` 0.5).

So the model a run trained runs in the tools microscopists use (deepImageJ, ilastik, napari's
bioimageio plugin) without n2sr: TorchScript weights of the whole raw-in, denoised-out network
(`n2sr.nn.bmz`), a test input and the output n2sr's own engine (`n2sr.nn.inference.Engine`, fp32
on the CPU) computes for it, and a README recording how the model was trained (the checkpoint's
settings, sources, versions and sha256). The package is checked with ``bioimageio.core``'s
``test_model`` (the model run on the test input, and at other sizes, against the test output)
before it is moved into place, so a package found at `out` has passed.

``bioimageio.spec`` and ``bioimageio.core`` are the optional extra ``bioimageio`` and imported
here only; the rest of n2sr needs neither. No network access: nothing in the description is a
URL to check, and the citation is a DOI.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

import n2sr
from n2sr.config import MULTIPLE, DenoiseConfig, ModelConfig
from n2sr.errors import InputError
from n2sr.io import checkpoints
from n2sr.io.atomic import atomic_path
from n2sr.io.guard import check_outputs
from n2sr.io.planes import select
from n2sr.nn.bmz import Packaged, script
from n2sr.nn.inference import Engine
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.noise import PoissonGaussian, poisson_gaussian
from n2sr.synthetic import clean_image

log = logging.getLogger(__name__)

CROP = 256  # largest side of the test tensor: big enough to judge the output, small enough to test fast
NAMES = {"n2sr": "Noise2SR", "n2v": "Noise2Void", "n2s": "Noise2Self", "n2n": "Noise2Noise"}
PAPER = ("Tian, X., Wu, Q., Wei, H., Zhang, Y.: Noise2SR: Learning to Denoise from Super-Resolved "
         "Single Noisy Fluorescence Image. MICCAI 2022, LNCS 13434, pp. 334-343.")
PAPER_DOI = "10.1007/978-3-031-16446-0_32"


def export(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
           sample: str | os.PathLike[str] | None = None, downsample: str = DenoiseConfig.downsample,
           name: str | None = None) -> dict:
    """Write `checkpoint`'s model to `out` (a .zip) as a bioimage.io model package, tested.

    `sample`: an image whose first plane, cropped at the centre to a multiple of 32 pixels up to
    `CROP`, is the test input (default: a synthetic plane in the model's intensity range).
    `downsample`: how a Noise2SR model's 2x output returns to the input grid (as ``denoise``).
    Returns ``bioimageio.core``'s validation summary as a dict.
    """
    try:
        from bioimageio.core import test_model
        from bioimageio.spec import save_bioimageio_package
    except ImportError:
        raise InputError(checkpoint, "export needs bioimageio.core: pip install 'n2sr[bioimageio]'") from None
    check_outputs([checkpoint] + ([sample] if sample is not None else []), [out])
    if Path(out).suffix != ".zip":
        raise InputError(out, "a bioimage.io package is a .zip file; name it <name>.zip")
    ckpt = checkpoints.load(checkpoint)
    if ckpt.get("stride", 2) != 2:
        raise InputError(checkpoint, f"was trained with stride {ckpt['stride']} (pixel-shuffle sub-images), "
                                     "which the exported network does not do; only stride 2 models export")
    if ckpt.get("whiten") is not None:
        raise InputError(checkpoint, "was trained on whitened planes (correlated noise), which the exported network "
                                     "does not do; train with whiten: false to export")
    try:
        net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
        normalizer = Normalizer.from_dict(ckpt["normalizer"])
        rf = receptive_field(ModelConfig(**ckpt["model_config"]), sr=ckpt["scale"] == 2)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(checkpoint, f"damaged or foreign checkpoint: {exc}") from None
    engine = Engine(net, DenoiseConfig(device="cpu", precision="fp32", downsample=downsample),
                    scale=ckpt["scale"], receptive_field=rf, normalizer=normalizer)
    plane = _test_plane(sample, normalizer, min_side(engine.overlap))
    expected, _ = engine.denoise_plane(plane)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        torch.jit.save(script(Packaged(net, ckpt["scale"], normalizer, downsample)), d / "weights.pt")
        np.save(d / "test_input.npy", plane[None, None].astype(np.float32))
        np.save(d / "test_output.npy", expected[None, None].astype(np.float32))
        tifffile.imwrite(d / "sample_input.tif", plane.astype(np.float32))  # for people: viewers open TIFF
        tifffile.imwrite(d / "sample_output.tif", expected.astype(np.float32))
        (d / "README.md").write_text(readme(ckpt, checkpoint, sample, downsample, plane.shape), encoding="utf-8")
        descr = describe(ckpt, d, name or f"n2sr {NAMES.get(ckpt['method'], ckpt['method'])} denoiser", engine.overlap)
        package = save_bioimageio_package(descr, output_path=d / "package.zip")
        summary = test_model(package, weight_format="torchscript", devices=["cpu"])
        if summary.status != "passed":
            raise InputError(out, "the exported package fails bioimageio.core's test_model:\n" + summary.format())
        with atomic_path(out) as dst:
            shutil.copyfile(package, dst)
    log.info("exported %s -> %s (bioimageio.core test_model: %s)", checkpoint, out, summary.status)
    return summary.model_dump(mode="json")


def min_side(halo: int) -> int:
    """The smallest input side the package declares: a tile keeps at least `MULTIPLE` pixels
    between its two halos."""
    return 2 * halo + MULTIPLE


def _test_plane(sample: str | os.PathLike[str] | None, normalizer: Normalizer, smallest: int) -> np.ndarray:
    """float32 ``(h, w)``: the centre of `sample`'s first plane, or a synthetic plane with noise;
    sides multiples of `MULTIPLE`, at least `smallest`."""
    if sample is None:  # clean structure in [0, 1] network units plus 10 % Gaussian noise, in raw units
        rng = np.random.default_rng(0)
        side = max(128, smallest)
        noisy = poisson_gaussian(clean_image((side, side), rng), PoissonGaussian(0.0, 0.01), rng)
        return normalizer.inverse(noisy)
    first = select(sample, [0])[0, ...]
    first = first.reshape(-1, *first.shape[-2:])[0]
    side = [min(max(CROP, smallest), n // MULTIPLE * MULTIPLE) for n in first.shape]
    if min(side) < smallest:
        raise InputError(sample, f"a plane of {first.shape[0]}x{first.shape[1]} pixels is smaller than the "
                                 f"{smallest}x{smallest} the package needs as test input")
    y0, x0 = ((n - s) // 2 for n, s in zip(first.shape, side))
    return np.asarray(first[y0:y0 + side[0], x0:x0 + side[1]], dtype=np.float32)


def describe(ckpt: dict, folder: Path, name: str, halo: int) -> Any:
    """The ``bioimageio.spec`` 0.5 model description (a ``ModelDescr``) of the files in `folder`.

    `halo`: output pixels a tiling consumer crops from each side of a tile, the engine's overlap.
    """
    from bioimageio.spec.model.v0_5 import (
        Author, AxisId, BatchAxis, ChannelAxis, CiteEntry, Doi, FileDescr, Identifier, InputTensorDescr,
        IntervalOrRatioDataDescr, LicenseId, ModelDescr, OutputTensorDescr, ParameterizedSize, SizeReference,
        SpaceInputAxis, SpaceOutputAxisWithHalo, TensorId, TorchscriptWeightsDescr, Version, WeightsDescr, generate_covers)

    method = NAMES.get(ckpt["method"], ckpt["method"])
    raw, out = TensorId("raw"), TensorId("denoised")
    size = ParameterizedSize(min=min_side(halo), step=MULTIPLE)
    data = IntervalOrRatioDataDescr(type="float32")
    ipt = InputTensorDescr(
        id=raw, description="a noisy fluorescence plane in the raw intensities the model was trained on",
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("intensity")]),
              SpaceInputAxis(id=AxisId("y"), size=size), SpaceInputAxis(id=AxisId("x"), size=size)],
        test_tensor=FileDescr(source=folder / "test_input.npy"),
        sample_tensor=FileDescr(source=folder / "sample_input.tif"), data=data)
    opt = OutputTensorDescr(
        id=out, description="the denoised plane, same size and intensity units as the input",
        axes=[BatchAxis(), ChannelAxis(channel_names=[Identifier("intensity")]),
              *(SpaceOutputAxisWithHalo(id=AxisId(a), size=SizeReference(tensor_id=raw, axis_id=AxisId(a)), halo=halo)
                for a in ("y", "x"))],
        test_tensor=FileDescr(source=folder / "test_output.npy"),
        sample_tensor=FileDescr(source=folder / "sample_output.tif"), data=data)
    # the zoo's own cover (input and output split along the diagonal), moved out of its temporary folder
    cover, = generate_covers([(ipt, np.load(folder / "test_input.npy"))], [(opt, np.load(folder / "test_output.npy"))])
    shutil.move(cover.source, folder / "cover.png")
    os.rmdir(Path(cover.source).parent)
    what = ("a U-Net with a 2x super-resolution head trained on sub-sampled noisy images (Noise2SR); its 2x output "
            "is averaged back to the input grid" if ckpt["scale"] == 2 else f"a U-Net trained with {method}")
    return ModelDescr(
        name=name,
        description=f"Self-supervised denoising of fluorescence microscopy planes: {what}. Trained with n2sr "
                    f"{n2sr.__version__} on the data recorded in the README; raw intensities in, denoised out.",
        authors=[Author(name="n2sr")],
        cite=[CiteEntry(text=PAPER, doi=Doi(PAPER_DOI))],
        license=LicenseId("MIT"),
        documentation=FileDescr(source=folder / "README.md"),
        covers=[FileDescr(source=folder / "cover.png")],
        tags=["denoising", "fluorescence-light-microscopy", "2d", "self-supervised", "pytorch", ckpt["method"]],
        inputs=[ipt],
        outputs=[opt],
        weights=WeightsDescr(torchscript=TorchscriptWeightsDescr(
            source=folder / "weights.pt", pytorch_version=Version(torch.__version__.split("+")[0]))),
        version=Version(n2sr.__version__),
    )


def readme(ckpt: dict, checkpoint: str | os.PathLike[str], sample: str | os.PathLike[str] | None,
           downsample: str, shape: tuple[int, int]) -> str:
    """The package's documentation: what the network does and everything the checkpoint records."""
    method = NAMES.get(ckpt["method"], ckpt["method"])
    sources = ckpt.get("sources") or []
    shown = "\n".join(f"- `{s}`" for s in sources[:50]) + (f"\n- ... ({len(sources)} in all)" if len(sources) > 50 else "")
    versions = "\n".join(f"- {k}: {v}" for k, v in (ckpt.get("versions") or {}).items())
    lines = [
        f"# {method} denoiser exported by n2sr", "",
        "Self-supervised denoising of single noisy fluorescence microscopy planes "
        f"(Tian et al., MICCAI 2022, doi:{PAPER_DOI}).", "",
        "## What the network does", "",
        "Input `raw`: float32 (batch, 1, y, x), raw intensities, y and x multiples of 32. Output `denoised`: the same "
        "shape and units. Inside the TorchScript weights: `(raw - offset) / scale` with the normalisation fitted on "
        f"the training data ({ckpt['normalizer']}), the network"
        + (f", the 2x output brought back to the input grid ({downsample})" if ckpt["scale"] == 2 else "")
        + ", and the normalisation undone. No pre- or postprocessing is needed.", "",
        "## Training", "",
        f"- checkpoint: `{Path(checkpoint).name}`, sha256 `{ckpt['sha256']}`",
        f"- method: {ckpt['method']} (output scale {ckpt['scale']}), iterations: {ckpt.get('steps')}, "
        f"best validation loss: {ckpt.get('best_val')}",
        f"- network: `{ckpt['model_config']}`",
        f"- training settings: `{ckpt.get('train_config')}`",
        f"- method settings: `{ckpt.get('method_config')}`", "",
        "Training images (captures):", "", shown or "- (not recorded)", "",
        "Software versions at training:", "", versions or "- (not recorded)", "",
        "## Validation", "",
        f"The test output is what `n2sr denoise` (its engine, fp32 on the CPU) gives for the test input, a {shape[0]}x"
        f"{shape[1]} crop of " + (f"`{Path(sample).name}`" if sample is not None else "a synthetic noisy plane")
        + "; the package passed `bioimageio.core`'s `test_model` against it when exported. Denoising quality was "
        "measured by n2sr's workflow (PSNR/SSIM against averaged references), not by this package.", "",
    ]
    return "\n".join(lines)
