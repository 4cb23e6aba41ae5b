"""The pipeline's steps as plain functions: files in, files out.

Each Snakemake rule and each CLI command calls exactly one of these; a notebook can call
them too. They only wire I/O to the numerics (`train`, `denoise`, `metrics`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from n2sr import io, omezarr

log = logging.getLogger(__name__)


def load_planes(path: str | os.PathLike[str], captures: Sequence[int] | None = None) -> np.ndarray:
    """All planes of an image as ``ndarray (N, Y, X)`` in the source dtype.

    `captures` selects indices on the leading axis (``t`` of an OME-Zarr, pages of a TIFF
    stack); a capture that does not exist is an input error naming the file.
    """
    path = Path(path)
    if io.kind_of(path) == "zarr":
        arr = io.open_zarr_array(io.check_exists(path))
        n = arr.shape[0]
        picked = range(n) if captures is None else captures
        _check_captures(path, picked, n)
        data = np.stack([np.asarray(arr[t]) for t in picked])
        io.check_finite(path, data)
    else:
        data = io.read_image(path)
        if captures is not None:
            n = data.shape[0] if data.ndim >= 3 else 1
            _check_captures(path, captures, n)
            data = data[list(captures)] if data.ndim >= 3 else data[None]
    return data.reshape(-1, *data.shape[-2:])


def _check_captures(path: Path, captures: Sequence[int], n: int) -> None:
    bad = [t for t in captures if not 0 <= t < n]
    if bad:
        raise io.InputError(path, f"has {n} capture(s) (t = 0..{n - 1}); captures {bad} do not exist")


def train_step(images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], cfg, *,
               captures: Sequence[int] | None = None, curve: str | os.PathLike[str] | None = None,
               plot: str | os.PathLike[str] | None = None, resume: bool = False, method: str = "n2sr",
               pairs: str = "captures"):
    """Train one `method` model on every plane of `images` (the selected captures of each).

    ``n2n`` trains on pairs of independent captures of one field of view; ``pairs="captures"``
    takes consecutive selected captures of each image, ``(c0, c1), (c1, c2), ...``.
    """
    from n2sr.objectives import objective
    from n2sr.train import train, write_curve

    paired = objective(method).captures == 2
    if paired and pairs != "captures":
        raise ValueError(f"pairs must be 'captures' (consecutive captures of each field of view), not {pairs!r}")
    planes, sources = [], []
    for path in images:
        stack = load_planes(path, captures)
        for i, plane in enumerate(stack):
            if min(plane.shape) < cfg.patch_size:
                raise io.InputError(path, f"plane of {plane.shape[0]}x{plane.shape[1]} pixels is smaller than the "
                                          f"training patch ({cfg.patch_size}); lower patch_size")
        if paired:
            ids = list(captures) if captures is not None else list(range(len(stack)))
            planes += [stack[i:i + 2] for i in range(len(stack) - 1)]
            sources += [f"{path}[{a},{b}]" for a, b in zip(ids, ids[1:])]
        else:
            planes += list(stack)
            sources += [f"{path}[{i}]" for i in range(len(stack))]
    if paired and not planes:
        raise io.InputError(images[0], "n2n needs at least 2 captures of one field of view to pair; "
                                       "every training image has 1 (drop n2n from methods or add captures)")
    result = train(planes, cfg, out, method=method, resume=resume, sources=sources)
    write_curve(result.curve, curve, plot)
    log.info("trained %d iterations in %.0f s; best validation loss %.5g at iteration %d -> %s",
             result.steps, result.seconds, result.best_val, result.best_step, out)
    return result


def synth_step(out_dir: str | os.PathLike[str], *, seed: int = 0, spec: str | os.PathLike[str] | None = None):
    """Generate the embedded demo archive; `spec` is a YAML file of `make_archive` keywords."""
    import yaml

    from n2sr.synthetic import make_archive

    kwargs = {}
    if spec is not None:
        with open(spec, encoding="utf-8") as f:
            kwargs = yaml.safe_load(f) or {}
        if "shape" in kwargs:
            kwargs["shape"] = tuple(kwargs["shape"])
    return make_archive(out_dir, seed=seed, **kwargs)


def _capture_ids(path: Path, captures: Sequence[int] | None, n: int) -> list[int]:
    """Original capture indices of the planes read from `path` (a denoised Zarr records them)."""
    if captures is not None:
        return list(captures)
    if io.kind_of(path) == "zarr":
        recorded = omezarr.read_attrs(path).get("captures")
        if recorded is not None and len(recorded) == n:
            return list(recorded)
    return list(range(n))


def evaluate_step(reference: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]], *,
                  csv: str | os.PathLike[str] | None = None, data_range: float | None = None,
                  captures: Sequence[int] | None = None, labels: dict[str, str] | None = None,
                  methods: Sequence[str] = ()) -> list[dict]:
    """PSNR/SSIM (both conventions) of every selected plane of `images` against `reference`."""
    from n2sr.evaluate import evaluate_images, write_image_csv

    if methods and len(methods) != len(images):
        raise ValueError(f"{len(methods)} --method value(s) for {len(images)} image(s); give one per image or none")
    ref = load_planes(reference)
    if ref.shape[0] != 1:
        raise io.InputError(reference, f"has {ref.shape[0]} planes; a reference must be a single plane")
    rows = []
    for i, path in enumerate(images):
        path = Path(path)
        stack = load_planes(path, captures)
        if stack.shape[-2:] != ref.shape[-2:]:
            raise io.InputError(path, f"planes are {stack.shape[-2]}x{stack.shape[-1]} but the reference "
                                      f"{reference} is {ref.shape[-2]}x{ref.shape[-1]}")
        method = methods[i] if methods else path.name.split(".")[0]
        ids = _capture_ids(path, captures, stack.shape[0])
        planes = {f"{path.name}[{t}]": plane for t, plane in zip(ids, stack)}
        try:
            rows += evaluate_images(ref[0], planes, fixed_data_range=data_range,
                                    labels={"configuration": "", **(labels or {}), "method": method})
        except io.InputError:
            raise
        except ValueError as exc:  # e.g. a constant reference, or a float one without a data range
            hint = ("; in the pipeline, set evaluate.data_range" if "no fixed data range" in str(exc) else "")
            raise io.InputError(reference, f"{exc} (scoring {path}){hint}") from exc
    if csv is not None:
        write_image_csv(rows, csv)
    return rows


def denoise_step(model: str | os.PathLike[str], input: str | os.PathLike[str], output: str | os.PathLike[str],
                 cfg, *, captures: Sequence[int] | None = None, sr: str | os.PathLike[str] | None = None,
                 tiff: str | os.PathLike[str] | None = None) -> None:
    """Denoise an image or stack; Zarr to Zarr runs out of core, block by block.

    Every output records the model (path and sha256), the settings and the source it came
    from, so a result found later can be traced to what produced it.
    """
    from dataclasses import asdict

    import dask.array as da

    from n2sr import checkpoint
    from n2sr.accel import prepare_for_inference
    from n2sr.denoise import denoise_array, denoise_zarr
    from n2sr.device import pick_device
    from n2sr.model import ModelConfig, receptive_field

    input, output = io.check_exists(input), Path(output)
    device = pick_device(cfg.device)
    module, normalizer, ckpt = checkpoint.load_model(model, device)
    scale = ckpt["scale"]
    if sr is not None and scale != 2:
        raise io.InputError(model, f"is a {ckpt['method']} model (same-size U-Net) without a 2x output; drop --sr")
    rf = receptive_field(ModelConfig(**ckpt["model_config"]), sr=scale == 2)
    net = prepare_for_inference(module, device, cfg.precision)
    stream = io.kind_of(input) == "zarr" and io.kind_of(output) == "zarr" and (sr is None or io.kind_of(sr) == "zarr")
    if stream:
        src = io.open_zarr_array(input)
        n = src.shape[0]
        picked = list(range(n)) if captures is None else list(captures)
        _check_captures(input, picked, n)
        source = da.from_zarr(src)[picked] if captures is not None else src
    else:
        stack, picked = _read_selected(input, captures)
    attrs = {
        "source": str(input), "captures": picked, "method": ckpt["method"], "model": str(model),
        "model_sha256": io.sha256_file(model),
        "model_train_config": ckpt["train_config"], "denoise_config": asdict(cfg),
        "versions": checkpoint.versions(),
    }
    if stream:
        with _atomic_all([output] + ([Path(sr)] if sr else [])) as tmps:
            dst = omezarr.create_image(tmps[0], source.shape, np.float32, chunks=src.chunks, attrs=attrs)
            sr_dst = None
            if sr:
                sr_shape = (*source.shape[:-2], 2 * source.shape[-2], 2 * source.shape[-1])
                sr_dst = omezarr.create_image(tmps[1], sr_shape, np.float32, attrs={**attrs, "kind": "2x super-resolution"})
            denoise_zarr(net, source, dst, normalizer, cfg, receptive_field=rf, sr_dst=sr_dst, scale=scale)
        if tiff:
            export_tiff(output, tiff)
        return
    denoised, sr_arr = denoise_array(net, stack, normalizer, cfg, receptive_field=rf, return_sr=sr is not None,
                                     scale=scale)
    io.write_image(output, denoised, attrs=attrs)
    if sr is not None:
        io.write_image(sr, sr_arr, attrs={**attrs, "kind": "2x super-resolution"})
    if tiff:
        io.write_image(tiff, denoised, attrs=attrs)


def _read_selected(path: Path, captures: Sequence[int] | None) -> tuple[np.ndarray, list[int]]:
    """An image in memory, its leading (capture) axis cut to `captures`; and the captures kept."""
    if io.kind_of(path) == "zarr":
        arr = io.open_zarr_array(path)
        picked = list(range(arr.shape[0])) if captures is None else list(captures)
        _check_captures(path, picked, arr.shape[0])
        return np.stack([np.asarray(arr[t]) for t in picked]), picked
    stack = io.read_image(path)
    n = stack.shape[0] if stack.ndim >= 3 else 1
    picked = list(range(n)) if captures is None else list(captures)
    if captures is not None:
        _check_captures(path, picked, n)
        stack = stack[picked] if stack.ndim >= 3 else stack[None]
    return stack, picked


def bm3d_step(input: str | os.PathLike[str], output: str | os.PathLike[str], *,
              captures: Sequence[int] | None = None, tiff: str | os.PathLike[str] | None = None) -> None:
    """Denoise every plane of an image with BM3D, its noise estimated blind from the plane itself.

    No training: the method needs no model. Outputs have the layout and attributes of
    `denoise_step`'s, so evaluation and reports treat BM3D like the learned methods. The
    selected captures are held in memory (BM3D works on whole planes anyway).
    """
    from n2sr import checkpoint
    from n2sr.bm3d_denoise import bm3d_denoise

    input = io.check_exists(input)
    stack, picked = _read_selected(input, captures)
    denoised = np.empty(stack.shape, np.float32)
    for index in np.ndindex(*stack.shape[:-2]):
        denoised[index] = bm3d_denoise(stack[index])
    attrs = {"source": str(input), "captures": picked, "method": "bm3d", "noise": "blind Poisson-Gaussian + GAT",
             "versions": checkpoint.versions()}
    io.write_image(output, denoised, attrs=attrs)
    if tiff:
        io.write_image(tiff, denoised, attrs=attrs)


def _atomic_all(paths: Sequence[Path]):
    """Atomic temp paths for several outputs, all renamed into place only if all succeed."""
    import contextlib

    stack = contextlib.ExitStack()

    @contextlib.contextmanager
    def manager():
        with stack:
            yield [stack.enter_context(io.atomic_path(p)) for p in paths]

    return manager()


def export_tiff(zarr_path: str | os.PathLike[str], tiff_path: str | os.PathLike[str]) -> None:
    """Stream an OME-Zarr image into an ImageJ hyperstack TIFF that Fiji opens, plane by plane."""
    import json

    import tifffile

    arr = omezarr.open_image(zarr_path)
    t, c, z, y, x = arr.shape
    attrs = omezarr.read_attrs(zarr_path)
    planes = (np.asarray(arr[i, k, j], dtype=np.float32) for i in range(t) for j in range(z) for k in range(c))
    with io.atomic_path(tiff_path) as tmp:
        with tifffile.TiffWriter(tmp, imagej=True) as tw:
            tw.write(planes, shape=(t, z, c, y, x), dtype=np.float32,
                     metadata={"axes": "TZCYX", "Info": json.dumps(attrs, default=str)})


def crops_step(reference: str | os.PathLike[str], images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
               capture: int = 0, methods: Sequence[str] = (), size: int = 128, title: str = "") -> None:
    """Before/after figure of one capture: each image's plane that came from capture `capture`."""
    from n2sr.crops import crops_figure

    if methods and len(methods) != len(images):
        raise ValueError(f"{len(methods)} --method value(s) for {len(images)} image(s); give one per image or none")
    ref = load_planes(reference)[0]
    panels = {}
    for i, path in enumerate(images):
        path = Path(path)
        stack = load_planes(path)
        ids = _capture_ids(path, None, stack.shape[0])
        if capture not in ids:
            raise io.InputError(path, f"holds captures {ids}, not capture {capture}")
        panels[methods[i] if methods else path.name.split(".")[0]] = stack[ids.index(capture)]
    try:
        crops_figure(ref, panels, out, size=size, title=title)
    except io.InputError:
        raise
    except ValueError as exc:  # e.g. a constant reference has no display range
        raise io.InputError(reference, str(exc)) from exc
