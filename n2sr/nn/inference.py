"""The inference engine: a trained network applied to planes, tiled, blended and brought back
to the input grid, on the device. It never sees a file or Zarr: `n2sr.io.blocks` streams stacks
through `Engine.denoise_window`.

Everything between the host copy in and the host copy out stays on the device: normalisation,
padding, tiles of every plane of a window batched up to ``batch_pixels`` per forward pass,
blending and downsampling. Only the kept region (and the 2x output when asked) comes back,
through pinned memory on CUDA; ``dtype: input`` rounding happens on the host copy (`as_dtype`).
When the network is compiled, tiles have one fixed shape per plane size (`n2sr.nn.tiling.spans`
with ``fixed=True``), so one graph serves a whole job; eager, border tiles stay smaller, which
saves compute.

A Noise2SR network maps a plane to its 2x super-resolution (``scale=2``); the denoised plane is
that SR output brought back to the input grid. The baselines' plain U-Net (``scale=1``) outputs
the denoised plane itself. Large planes go through as overlapping tiles blended in the output
space (`n2sr.nn.tiling`).

With ``overlap: exact`` (the receptive field) the result does not depend on the tile size or
the block a plane region was computed in, bit for bit on the CPU: tiles start on the network's
pooling grid, each kept pixel comes unchanged from the one tile that computed it with its whole
receptive field (`n2sr.nn.tiling`), and the convolutions run in PyTorch's native kernels in
NCHW, which sum every output pixel in the same order whatever the input shape and batch
(oneDNN's blocking depends on the shape, about 3e-6 relative in fp32 and more in bf16; NNPACK
takes over from a batch of 16; the native NHWC kernels differ by an ulp at some widths). That
costs time: on the project's CPU a 512^2 plane takes 6.4 s in fp32 (which ``precision: auto``
means in exact mode) against 1.06 s on the default bf16 oneDNN path, so exact mode is for
checks and reproducibility; the default overlap (32) is within the tolerance measured in
``benchmarks/results/overlap.md``. On CUDA, exact mode asks cuDNN for deterministic algorithms;
bitwise equality across tile shapes has not been measured there.

The fast path, chosen by measurement on the project's 2-core AVX512-BF16 CPU
(``benchmarks/speed.py``, ``benchmarks/results/speed.md``):

- bf16 *weights* beat bf16 autocast by 2-3x: autocast re-casts every weight on every call
  and runs the ReLUs, pooling, concatenations and pixel shuffle in fp32. So inference never
  uses autocast; the precision decided by `n2sr.nn.device.resolve_precision` sets the weights.
- channels_last (NHWC) is what oneDNN's convolutions want; NCHW pays a reorder per conv.
- The last U-Net concatenation joins 96 channels with the 1-channel input; a 1-channel NCHW
  tensor makes ``torch.cat`` fall back to NCHW and the next conv reorder ~100 channels at
  full resolution, so the input is handed over with NHWC strides.
- ``torch.compile`` gains little on CPU (the time is in oneDNN's convolutions either way) and
  each new input shape costs a compilation of tens of seconds, so ``compile="auto"`` compiles
  on CUDA only.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Callable, Iterator, Literal

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from n2sr.config import MULTIPLE, DenoiseConfig
from n2sr.nn import tiling
from n2sr.nn.device import pick_device, resolve_precision
from n2sr.nn.downsample import downsample
from n2sr.nn.model import pad_to_multiple
from n2sr.nn.normalize import Normalizer
from n2sr.noise import quantize

Forward = Callable[[torch.Tensor], torch.Tensor]
"""``Tensor (N, 1, h, w) float32 -> Tensor (N, 1, s h, s w) float32``, ``s`` the scale."""
Window = tuple[tuple[int, int], tuple[int, int, int, int], tuple[int, int]]
"""``(origin (wy0, wx0), region (y0, x0, y1, x1), plane shape (Y, X))``, as in `n2sr.io.blocks`."""

CPU_TILE = 1024  # tile side on the CPU: larger tiles gain nothing there (benchmarks/results/speed.md)
CPU_BATCH_PIXELS = 1 << 20  # input pixels per forward pass on the CPU: about 1.2 GB of bf16 activations
COMPILE_MIN_PIXELS = 8 << 30  # "auto" compiles on CUDA from this job size (see `Engine.should_compile`)
_ACTIVATION_BYTES_PER_PIXEL = 12_000  # generous bound on the default network's peak bytes per input pixel


def _nhwc_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, H, W) -> same values in `dtype` with NHWC strides, also when C == 1."""
    n, c, h, w = x.shape
    out = torch.empty((n, h, w, c), dtype=dtype, device=x.device).permute(0, 3, 1, 2)
    return out.copy_(x)


@contextlib.contextmanager
def deterministic_kernels(device: torch.device, enabled: bool) -> Iterator[None]:
    """Convolutions that sum each output pixel in the same order for every input shape (CPU:
    PyTorch's native kernels, neither oneDNN nor NNPACK, whose algorithms depend on the shape
    and, for NNPACK, on a batch of 16 or more; CUDA: cuDNN's deterministic algorithms)."""
    if not enabled:
        yield
    elif device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
            yield
    else:
        with warnings.catch_warnings():  # restoring the flags warns about an Intel-GPU-only setting
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            with torch.backends.mkldnn.flags(enabled=False), torch.backends.nnpack.flags(enabled=False):
                yield


def prepare(model: nn.Module, device: torch.device, precision: Literal["bf16", "fp32"],
            compile: bool | str = False, deterministic: bool = False) -> Forward:
    """The model's forward at its fastest: ``f(x (N, 1, H, W)) -> float32 (N, 1, sH, sW)``.

    The caller's model is never modified (a copy is moved, cast and laid out), so it can keep
    training or be saved afterwards. ``compile``: False eager; True ``torch.compile`` with
    frozen weights; another string is the compile ``mode`` (e.g. "reduce-overhead" for CUDA
    graphs). Shapes are static: the engine feeds one tile shape per job. ``deterministic``:
    `deterministic_kernels` (never compiled: inductor picks its own kernels).
    """
    if compile and deterministic:
        raise ValueError("deterministic kernels cannot be compiled; use compile=False")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    net = copy.deepcopy(model).eval().requires_grad_(False)
    # NHWC is what oneDNN and cuDNN want; the native kernels are deterministic in NCHW only
    layout = torch.contiguous_format if deterministic else torch.channels_last
    net = net.to(device=device, dtype=dtype, memory_format=layout)
    if compile:
        if isinstance(compile, str):
            net = torch.compile(net, dynamic=False, mode=compile)
        else:  # freezing: weights become constants, prepacked into oneDNN's / cuDNN's layouts
            net = torch.compile(net, dynamic=False, options={"freezing": True})

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xin = pad_to_multiple(x.to(device), MULTIPLE)
        xin = xin.to(dtype).contiguous() if deterministic else _nhwc_input(xin, dtype)
        with torch.inference_mode(), deterministic_kernels(device, deterministic):
            y = net(xin)
        return y[..., : y.shape[-2] * h // xin.shape[-2], : y.shape[-1] * w // xin.shape[-1]].float().contiguous()

    return forward


class Engine:
    """A trained network ready for inference: device, precision, tile, batch and overlap decided once.

    Parameters
    ----------
    net : an eval-mode ``nn.Module`` (prepared here: `prepare`), or a ready `Forward`
        callable taking float32 tensors on the engine's device.
    cfg : DenoiseConfig
    scale : 2 for a Noise2SR network, 1 for a same-size U-Net.
    receptive_field : radius of the network's receptive field in input pixels
        (`n2sr.nn.model.receptive_field`); ``overlap: exact`` and where tiles are exact.
    normalizer : the training normalisation; applied before and undone after the network.
    attempt : the job's try number; a retry uses half the tile side per extra attempt.
    job_pixels : input pixels of the whole job, for the compile decision.
    """

    def __init__(self, net: nn.Module | Forward, cfg: DenoiseConfig, *, scale: int, receptive_field: int,
                 normalizer: Normalizer, attempt: int = 1, job_pixels: int = 0) -> None:
        if scale not in (1, 2):
            raise ValueError(f"scale must be 1 (same-size U-Net) or 2 (Noise2SR), got {scale}")
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        self.cfg, self.scale, self.receptive_field, self.normalizer = cfg, scale, receptive_field, normalizer
        self.device = pick_device(cfg.device)
        self.exact = cfg.overlap == "exact"  # bitwise independent of tiling (see the module docstring)
        # the native kernels of exact mode are slow in bf16 (16x), so "auto" means fp32 there
        self.precision = resolve_precision("fp32" if self.exact and cfg.precision == "auto" else cfg.precision,
                                           self.device)
        self.overlap = tiling.overlap_pixels(cfg.overlap, receptive_field)
        self.batch_pixels = cfg.batch_pixels or self._auto_batch_pixels()
        tile = cfg.tile_size if cfg.tile_size != "auto" else self._auto_tile()
        self.tile = max(MULTIPLE, (tile >> (attempt - 1)) // MULTIPLE * MULTIPLE)
        if isinstance(net, nn.Module):
            if net.training:
                raise ValueError("the network is in training mode; call .eval() before denoising")
            compile = self.should_compile(job_pixels) and ("reduce-overhead" if cfg.cuda_graphs else True)
            net = prepare(net, self.device, self.precision, compile, deterministic=self.exact)
            # One tile shape per plane size when compiled (one graph); eager, border tiles may be
            # smaller, which saves compute (no recompilation to pay for).
            self.fixed = bool(compile)
        else:
            self.fixed = False
        self.net = net
        self._weights: dict[tuple, tuple[list, torch.Tensor]] = {}

    @property
    def context(self) -> int:
        """Input pixels a streamed block needs around it (as `Decorrelated.context`)."""
        return self.overlap

    def should_compile(self, job_pixels: int) -> bool:
        """Compile when it pays back: about a minute of compilation against a 1.7x faster network
        (77 -> 133 Mpx/s eager vs compiled on an H200, issue 12) saves a minute from ~8 Gpx on.
        Never with ``overlap: exact``, which needs `deterministic_kernels`."""
        if self.exact:
            return False
        if self.cfg.compile != "auto":
            return self.cfg.compile == "always"
        return self.device.type == "cuda" and job_pixels >= COMPILE_MIN_PIXELS

    def _free_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        return free // 2

    def _auto_batch_pixels(self) -> int:
        if self.device.type != "cuda":
            return CPU_BATCH_PIXELS
        return max(MULTIPLE * MULTIPLE, self._free_bytes() // _ACTIVATION_BYTES_PER_PIXEL)

    def _auto_tile(self) -> int:
        """CPU: `CPU_TILE`. CUDA: the side of the largest square window that fits the batch budget,
        so a plane that fits goes through whole."""
        if self.device.type != "cuda":
            return CPU_TILE
        side = int(math.isqrt(self.batch_pixels)) - 2 * self.overlap
        return max(MULTIPLE, side // MULTIPLE * MULTIPLE)

    def check_sr(self) -> None:
        if self.scale != 2:
            raise ValueError("this network has no 2x super-resolved output (a baseline's same-size U-Net); "
                             "do not ask for one (--sr, write_sr)")

    def denoise_window(self, planes: np.ndarray, window: Window, return_sr: bool = True,
                       dtype: np.dtype | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Denoise `region` of planes from their `window`.

        planes : ndarray (n, wh, ww), raw intensities of the window starting at ``origin``.
        dtype : output dtype (default float32); integers are rounded half up and clipped.
        Returns ``(denoised (n, h, w), sr (n, 2h, 2w) or None)`` for the region
        ``(y0, x0, y1, x1)``, in raw intensity units; SR only for ``scale=2`` and `return_sr`.
        """
        origin, (y0, x0, y1, x1), shape = window
        oy, ox = origin
        out = self.predict_ensemble(self._to_device(planes))
        denoised = self._raw(self._to_input_grid(out, origin, (y0, x0, y1, x1), shape), dtype)
        sr = None
        if return_sr and self.scale == 2:
            sr = self._raw(out[:, 2 * (y0 - oy):2 * (y1 - oy), 2 * (x0 - ox):2 * (x1 - ox)], dtype)
        return denoised, sr

    def denoise_plane(self, plane: np.ndarray, return_sr: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """One plane ``(Y, X)``, any real dtype -> ``(denoised (Y, X), sr (2Y, 2X) or None)``, float32."""
        plane = np.asarray(plane)
        if plane.ndim != 2:
            raise ValueError(f"expected a plane of shape (Y, X), got shape {plane.shape}")
        if return_sr:
            self.check_sr()
        denoised, sr = self.denoise_window(plane[None], ((0, 0), (0, 0, *plane.shape), plane.shape), return_sr)
        return denoised[0], None if sr is None else sr[0]

    def denoise_array(self, arr: np.ndarray, return_sr: bool = False, progress: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """Every plane of ``ndarray (..., Y, X)`` independently, in batches of planes:
        ``(denoised (..., Y, X), sr (..., 2Y, 2X) or None)``, float32."""
        arr = np.asarray(arr)
        if arr.ndim < 2:
            raise ValueError(f"expected an array of shape (..., Y, X), got shape {arr.shape}")
        if return_sr:
            self.check_sr()
        *lead, ny, nx = arr.shape
        flat = arr.reshape(-1, ny, nx)
        denoised = np.empty(flat.shape, np.float32)
        sr = np.empty((len(flat), 2 * ny, 2 * nx), np.float32) if return_sr else None
        step = max(1, self.batch_pixels // (ny * nx))
        window = ((0, 0), (0, 0, ny, nx), (ny, nx))
        for start in tqdm(range(0, len(flat), step), desc="denoise", unit="batch", disable=not progress):
            d, s = self.denoise_window(flat[start:start + step], window, return_sr)
            denoised[start:start + step] = d
            if sr is not None:
                sr[start:start + step] = s
        return denoised.reshape(arr.shape), None if sr is None else sr.reshape(*lead, 2 * ny, 2 * nx)

    def _to_device(self, planes: np.ndarray) -> torch.Tensor:
        """Raw planes -> normalised float32 ``(n, h, w)`` on the device (pinned, asynchronous copy on CUDA)."""
        x = torch.tensor(np.asarray(planes), dtype=torch.float32)  # always a copy: changed in place below
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        return x.sub_(self.normalizer.offset).div_(self.normalizer.scale)

    def _raw(self, x: torch.Tensor, dtype: np.dtype | None) -> np.ndarray:
        """Network units on the device -> raw intensities on the host, in `dtype` (see `as_dtype`)."""
        x = x.float().mul(self.normalizer.scale).add_(self.normalizer.offset)
        if self.device.type == "cuda":
            host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
            host.copy_(x, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            x = host
        out = x.numpy()
        return out if dtype is None else as_dtype(out, dtype)

    def _to_input_grid(self, out: torch.Tensor, origin: tuple[int, int], region: tuple[int, int, int, int],
                       shape: tuple[int, int]) -> torch.Tensor:
        """`region` of the planes from the network output `out` of the window at `origin` (see `n2sr.nn.downsample`)."""
        if self.scale == 1:
            y0, x0, y1, x1 = region
            return out[:, y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]]
        return downsample(out, self.cfg.downsample, origin, region, shape)

    def predict_ensemble(self, x: torch.Tensor) -> torch.Tensor:
        """`predict`, or with ``ensemble: 8`` the mean of its outputs for the 8 flips and 90-degree
        rotations of the planes, each turned back (the 2x output, before downsampling)."""
        if self.cfg.ensemble == 1:
            return self.predict(x)
        total = None
        for turns in range(4):
            for flip in (False, True):
                view = torch.rot90(x, turns, (1, 2))
                out = self.predict((view.flip(2) if flip else view).contiguous())
                out = torch.rot90(out.flip(2) if flip else out, -turns, (1, 2))
                total = out.clone() if total is None else total.add_(out)
        return total.div_(8)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(n, h, w)`` on the device -> the network output ``(n, s h, s w)`` float32, tiled.

        The planes are padded once (bottom/right, by reflection, to the pooling multiple, as the
        network itself would), cut into tiles, run in batches of same-shaped tiles of all
        planes, and blended in the output space (divided once). For Noise2SR the downsampling
        happens after, on the blended plane, so even a non-shift-invariant one sees no tiles.
        """
        n, h, w = x.shape
        s = self.scale
        padded = pad_to_multiple(x[:, None], MULTIPLE)[:, 0]
        tiles, total = self._tiling(padded.shape[-2:])
        if total is None:  # one tile: the planes themselves, in batches; nothing to blend
            per_batch = max(1, self.batch_pixels // (padded.shape[-2] * padded.shape[-1]))
            outs = [self.forward(chunk[:, None], per_batch) for chunk in padded.split(per_batch)]
            out = (outs[0] if len(outs) == 1 else torch.cat(outs))[:, 0]
            return out[:, : s * h, : s * w]
        acc = torch.zeros((n, s * padded.shape[-2], s * padded.shape[-1]), dtype=torch.float32, device=x.device)
        for group in _by_shape(tiles, n):
            wy, wx = tiles[group[0][0]][0]
            per_batch = max(1, self.batch_pixels // ((wy.stop - wy.start) * (wx.stop - wx.start)))
            for first in range(0, len(group), per_batch):
                chunk = group[first:first + per_batch]
                batch = torch.stack([padded[p, tiles[t][0][0], tiles[t][0][1]] for t, p in chunk])[:, None]
                y = self.forward(batch, per_batch)
                for k, (t, p) in enumerate(chunk):
                    (sy, sx), weight = tiles[t][1], tiles[t][2]
                    acc[p, sy, sx] += weight * y[k, 0]
        acc /= total
        return acc[:, : s * h, : s * w]

    def _tiling(self, shape: tuple[int, int]) -> tuple[list, torch.Tensor | None]:
        """Tiles of a padded plane, each ``(input window, output window, weight or None)``, and the
        summed weight (None for a single tile); cached per plane shape."""
        if shape not in self._weights:
            s = self.scale
            found = tiling.tiles(shape, self.tile, self.overlap, MULTIPLE, self.receptive_field, fixed=self.fixed)
            if len(found) == 1:
                tiles = [(found[0].window(), found[0].window(s), None)]
                total = None
            else:
                total = torch.zeros((s * shape[0], s * shape[1]), dtype=torch.float32, device=self.device)
                tiles = []
                for t in found:
                    weight = torch.from_numpy(t.weights(scale=s)).to(self.device)
                    total[t.window(s)] += weight
                    tiles.append((t.window(), t.window(s), weight))
            self._weights[shape] = (tiles, total)
        return self._weights[shape]

    def forward(self, x: torch.Tensor, batch: int = 0) -> torch.Tensor:
        """One forward pass: ``(N, 1, h, w)`` float32 on the device -> ``(N, 1, s h, s w)`` float32.

        A compiled network gets every batch at its full size `batch` (a short last batch is padded
        with zeros and the padding's output dropped), so one graph serves the whole job.
        """
        n = x.shape[0]
        if self.fixed and n < batch:
            x = torch.cat([x, x.new_zeros((batch - n, *x.shape[1:]))])
        with torch.inference_mode():
            out = self.net(x)[:n]
        x = x[:n]
        expected = (x.shape[0], 1, self.scale * x.shape[-2], self.scale * x.shape[-1])
        if tuple(out.shape) != expected:
            raise ValueError(f"network output has shape {tuple(out.shape)} for input {tuple(x.shape)}; "
                             f"expected {expected}")
        return out.float()


def _by_shape(tiles: list, n: int) -> list[list[tuple[int, int]]]:
    """(tile, plane) jobs grouped by window shape, in tile order: each group can share batches."""
    groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for t, ((wy, wx), _, _) in enumerate(tiles):
        groups.setdefault((wy.stop - wy.start, wx.stop - wx.start), []).extend((t, p) for p in range(n))
    return list(groups.values())


def as_dtype(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """float32 intensities in `dtype`: integers rounded half up and clipped to the dtype's range."""
    dtype = np.dtype(dtype)
    return quantize(x, dtype) if np.issubdtype(dtype, np.integer) else x.astype(dtype, copy=False)
