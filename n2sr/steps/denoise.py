"""Step `denoise`: an image or stack through a trained model; Zarr to Zarr streams block by block.

Every output records the model (path and the sha256 of the very bytes loaded), the settings
and the source it came from, so a result found later can be traced to what produced it.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from n2sr.config import MULTIPLE, DenoiseConfig, ModelConfig
from n2sr.errors import InputError
from n2sr.io import checkpoints, omezarr, parts
from n2sr.io.atomic import atomic_path
from n2sr.io.blocks import block_grid, stream_blocks
from n2sr.io.guard import check_outputs
from n2sr.io.images import export_tiff, kind_of, write_image
from n2sr.io.planes import PlaneView, select
from n2sr.io.provenance import versions
from n2sr.io.pyramid import add_levels
from n2sr.nn.decorrelate import runner as decorrelation_runner
from n2sr.nn.device import set_threads
from n2sr.nn.inference import Engine, as_dtype
from n2sr.nn.model import from_state, receptive_field
from n2sr.nn.normalize import Normalizer
from n2sr.nn.probe import Runner, plane_estimates
from n2sr.nn.whiten import as_kernel


def denoise(model: str | os.PathLike[str], input: str | os.PathLike[str], output: str | os.PathLike[str],
            cfg: DenoiseConfig = DenoiseConfig(), *, captures: Sequence[int] | None = None,
            sr: str | os.PathLike[str] | None = None, tiff: str | os.PathLike[str] | None = None,
            attempt: int = 1, part: str | None = None, scanned: bool = False) -> None:
    """Denoise the selected captures of `input` into `output` (TIFF or OME-Zarr by extension).

    `sr` also writes the 2x super-resolved image (Noise2SR models only), `tiff` an ImageJ TIFF
    export of the output. `attempt` is the job's try number: a retry uses half the tile side
    per extra attempt (`n2sr.nn.inference.Engine`), so it needs less memory. With
    ``cfg.dtype == "input"`` the outputs keep the input's dtype (rounded half up and clipped).
    `part` runs one stage of a job scattered over K parts (``prepare/K``, ``k/K``, ``gather/K``;
    Zarr to Zarr only, `n2sr.io.parts`): the output is bit for bit that of one job. `scanned`:
    the input comes from a point-scanning microscope, whose noise the estimates then take as
    correlated along the scan lines only (`n2sr.estimate.fit`).
    """
    check_outputs([model, input], [output, sr, tiff])  # before anything is read or written
    stage = parts.parse(part) if part is not None else None
    set_threads()  # the cores SLURM or the affinity mask gave us, not the whole node's
    ckpt = checkpoints.load(model)
    stride = ckpt.get("stride", 2)  # checkpoints before the stride setting: the 2x2 sub-sampler
    whiten = ckpt.get("whiten")  # the kernel its inputs are whitened by (n2sr.nn.whiten), or None
    if sr is not None and stride != 2:
        raise InputError(model, f"was trained with stride {stride} (PD sub-images): no 2x output; drop --sr")
    if sr is not None and whiten is not None:
        raise InputError(model, "was trained on whitened planes (correlated noise): its 2x output is whitened too; "
                                "drop --sr, or train with whiten: false")
    if sr is not None and ckpt["scale"] != 2:
        raise InputError(model, f"is a {ckpt['method']} model (same-size U-Net) without a 2x output; drop --sr")
    try:
        net = from_state(ckpt["model_config"], ckpt["scale"], ckpt["model"])
        rf = receptive_field(ModelConfig(**ckpt["model_config"]), sr=ckpt["scale"] == 2)
        normalizer = Normalizer.from_dict(ckpt["normalizer"])
        kernel = None if whiten is None else as_kernel(whiten)
    except (TypeError, ValueError, AttributeError) as exc:
        raise InputError(model, f"damaged or foreign checkpoint: {exc}") from None
    except KeyError as exc:  # a recorded setting lacks a key
        raise InputError(model, f"damaged or foreign checkpoint: no key {exc} in its recorded settings") from None
    selection = select(input, captures)
    dtype = np.dtype(np.float32) if cfg.dtype == "float32" else selection.dtype
    attrs = {
        "source": str(selection.path), "captures": selection.captures, "method": ckpt["method"], "model": str(model),
        "model_sha256": ckpt["sha256"], "model_train_config": ckpt.get("train_config"),
        "denoise_config": asdict(cfg), "stride": stride, "whiten": whiten, "dtype": dtype.name, "versions": versions(),
        "scanned": scanned,
    }
    outputs = [Path(output)] + ([Path(sr)] if sr is not None else [])
    streamed = all(kind_of(p) == "zarr" for p in outputs) and kind_of(selection.path) == "zarr"
    if stage is not None and not streamed:
        raise InputError(output, "--part needs an OME-Zarr input and OME-Zarr outputs")
    if stage is not None and stage.kind == "prepare":
        _prepare(output, outputs, selection, dtype, cfg, stage)
        return
    engine = Engine(net, cfg, scale=ckpt["scale"], receptive_field=rf, normalizer=normalizer, attempt=attempt,
                    job_pixels=math.prod(selection.shape))  # the whole stack's: every part decides alike
    runner = decorrelation_runner(engine, stride, kernel)  # the checkpoint's stride and whitening, honoured
    context = runner.context
    attrs.update(attempt=attempt, tile_size=engine.tile, overlap_pixels=context)
    fn = lambda planes, window: runner.denoise_window(planes, window, sr is not None, dtype)  # noqa: E731
    # Reference-free estimates of every plane (n2sr.nn.probe), from the finished output: a
    # scattered stack's by its gather job, as one job's (parts hold blocks, not planes).
    estimates = (lambda array: _estimates(runner, selection, _reader(array, selection.shape, dtype), ckpt, stride,
                                          cfg.estimate_draws, cfg.estimate_pixels, scanned)
                 ) if cfg.estimate_draws else None
    if stage is not None and stage.kind == "gather":
        _gather(output, outputs, attrs, stage, tiff, cfg.pyramid, estimates)
        return
    stream = dict(context=context, block_size=cfg.block_size, align=MULTIPLE, prefetch=cfg.prefetch)
    if stage is not None:  # one part, into the prepared outputs; its marker last
        dst, *sr_dst = parts.open_partials(output, outputs, stage)
        grid = block_grid(selection.shape, [(tuple(a.shards or a.chunks), s) for a, s in zip([dst, *sr_dst], (1, 2))],
                          cfg.block_size)
        run, (start, stop) = parts.part_blocks(output, stage, grid)
        stream_blocks(selection, fn, dst, sr_dst[0] if sr_dst else None, blocks=run, **stream)
        for p, array, scale in zip(outputs, [dst, *sr_dst], (1, 2)):
            parts.sync_blocks(parts.partial(output, p), array, run, scale)
        parts.write_marker(output, stage, {"blocks": [start, stop], "attempt": attempt, "tile_size": engine.tile,
                                           "overlap_pixels": context})
        return
    if streamed:
        with _atomic_all(outputs) as tmps:
            dst = omezarr.create_image(tmps[0], selection.shape, dtype, chunks=selection.source.chunks, attrs=attrs)
            sr_dst = None
            if sr is not None:
                sr_dst = omezarr.create_image(tmps[1], _sr_shape(selection.shape), dtype,
                                              attrs={**attrs, "kind": "2x super-resolution"})
            stream_blocks(selection, fn, dst, sr_dst, **stream)
            if estimates is not None:
                attrs["estimates"] = estimates(dst)
                omezarr.write_attrs(tmps[0], attrs)
            for tmp in tmps:
                add_levels(tmp, cfg.pyramid)
        if tiff:
            export_tiff(output, tiff)
        return
    denoised, sr_arr = runner.denoise_array(selection.read(), return_sr=sr is not None)
    if estimates is not None:
        attrs["estimates"] = estimates(denoised)
    if dtype != np.float32:
        denoised, sr_arr = (None if a is None else as_dtype(a, dtype) for a in (denoised, sr_arr))
    write_image(output, denoised, attrs=attrs, pyramid=cfg.pyramid)
    if sr is not None:  # the estimates are the output's, as on the streamed path
        write_image(sr, sr_arr, attrs={**{k: v for k, v in attrs.items() if k != "estimates"},
                                       "kind": "2x super-resolution"}, pyramid=cfg.pyramid)
    if tiff:
        write_image(tiff, denoised, attrs=attrs)


def _reader(array, shape: Sequence[int], dtype: np.dtype) -> Callable[[int], np.ndarray] | None:
    """Plane `i` (flat over the leading axes) of a float32 output; None for a rounded one."""
    return (lambda i: np.asarray(array[np.unravel_index(i, tuple(shape[:-2]))])) if dtype == np.float32 else None


def _estimates(runner: Runner, selection, output: Callable[[int], np.ndarray] | None,
               ckpt: dict, stride: int, draws: int, pixels: int, scanned: bool) -> list[dict]:
    """Reference-free estimates of every selected plane (flat index over the leading axes), from
    the float output `output(i)` (None: recomputed, as the written output was rounded to integers;
    neither where the plane is estimated on crops of `pixels`, which compute their own)."""
    rows = []
    for i in range(int(np.prod(selection.shape[:-2]))):
        noisy = PlaneView(selection, tuple(int(j) for j in np.unravel_index(i, selection.shape[:-2])))
        denoised = (lambda: np.asarray(output(i))) if output is not None else (  # noqa: E731
            lambda: runner.denoise_array(noisy[:, :].astype(np.float32), progress=False)[0])
        sr = ckpt["scale"] == 2 and stride == 2 and ckpt.get("whiten") is None  # the 2x2 path, unfiltered
        rows.append(plane_estimates(runner, noisy, denoised, method=ckpt["method"],
                                    settings=ckpt.get("method_config"), sr=sr, draws=draws, seed=i, pixels=pixels,
                                    scanned=scanned))
    return rows


def _sr_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return (*shape[:-2], 2 * shape[-2], 2 * shape[-1])


def _prepare(output: Path | str, outputs: list[Path], selection, dtype: np.dtype, cfg: DenoiseConfig,
             stage: parts.Stage) -> None:
    """Empty partial outputs with the same chunks a single job creates, and the plan of the parts."""
    grids = parts.denoise_grids(selection.shape, selection.source.chunks, len(outputs) > 1)
    blocks = block_grid(selection.shape, grids, cfg.block_size)
    parts.split(len(blocks), stage.count)  # K too large: refused before anything is written
    parts.clear(output)
    omezarr.create_image(parts.partial(output, outputs[0]), selection.shape, dtype, chunks=selection.source.chunks)
    if len(outputs) > 1:
        omezarr.create_image(parts.partial(output, outputs[1]), _sr_shape(selection.shape), dtype)
    plan = parts.write_plan(output, stage, blocks)
    parts.write_marker(output, stage, plan)


def _gather(output: Path | str, outputs: list[Path], attrs: dict, stage: parts.Stage,
            tiff: str | os.PathLike[str] | None, pyramid: int, estimates: Callable | None) -> None:
    """Every part done: the final provenance (with the `estimates` of the gathered output) and
    the multiscale levels (out of core), then the outputs renamed into place, all or none."""
    records = parts.records(output, stage.count)
    for key in ("attempt", "tile_size", "overlap_pixels"):
        values = [r[key] for r in records]
        attrs[key] = values[0] if len(set(values)) == 1 else values
    attrs["parts"] = records
    if estimates is not None:
        attrs["estimates"] = estimates(omezarr.open_image(parts.partial(output, outputs[0])))
    kinds = [{}, {"kind": "2x super-resolution"}]
    for p, kind in zip(outputs, kinds):
        own = attrs if not kind else {k: v for k, v in attrs.items() if k != "estimates"}  # the output's only
        omezarr.write_attrs(parts.partial(output, p), {**own, **kind})
        add_levels(parts.partial(output, p), pyramid)
    with _atomic_all(outputs) as tmps:
        for p, tmp in zip(outputs, tmps):
            os.replace(parts.partial(output, p), tmp)
    parts.clear(output)
    if tiff:
        export_tiff(output, tiff)


@contextlib.contextmanager
def _atomic_all(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """Temporary paths for several outputs, renamed into place only if all were written."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]
