"""Denoising: shapes, tiled == whole plane, N-D == plane loop, Zarr out of core == in memory."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from n2sr.config import MULTIPLE, DenoiseConfig, ModelConfig
from n2sr.io.blocks import check_blocks, stream_blocks
from n2sr.nn import tiling
from n2sr.nn.inference import Engine
from n2sr.nn.model import build_model, receptive_field
from n2sr.nn.normalize import Normalizer

# A narrow network keeps each test fast; the receptive field does not depend on the widths.
SMALL = ModelConfig(features=8, final_features=16, unet_out_channels=8, sr_channels=8)
RF = receptive_field(SMALL)
NORM = Normalizer(offset=100.0, scale=400.0, mode="meanstd")
FP32 = dict(device="cpu", precision="fp32")
EXACT = dict(FP32, overlap="exact")  # tiled == whole bit for bit (deterministic kernels, hard cuts)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    """The real network with He-initialised weights: unlike PyTorch's default init, its output
    varies strongly with the input, so a tile seen with too little context shows."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(SMALL).eval()
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                torch.nn.init.zeros_(m.bias)
    return model


def upsample_net(x: torch.Tensor) -> torch.Tensor:
    """An identity-like 'network': nearest 2x upsampling, undone exactly by the 2x2 mean."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def plane_of(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(np.uint16)


def engine(net, cfg, receptive_field=RF) -> Engine:
    return Engine(net, cfg, scale=2, receptive_field=receptive_field, normalizer=NORM)


def run(net, plane, cfg, return_sr=True):
    return engine(net, cfg).denoise_plane(plane, return_sr=return_sr)


def denoise_array(net, arr, cfg, return_sr=False):
    return engine(net, cfg).denoise_array(arr, return_sr=return_sr, progress=False)


def denoise_zarr(net, src, dst, cfg, sr_dst=None, **kwargs):
    e = engine(net, cfg)
    return stream_blocks(src, lambda planes, window: e.denoise_window(planes, window, sr_dst is not None, dst.dtype),
                         dst, sr_dst, context=e.overlap, block_size=cfg.block_size, align=MULTIPLE,
                         prefetch=cfg.prefetch, **kwargs)


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float32 rounding, relative to the data's scale."""
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


assert_same = np.testing.assert_array_equal  # what `overlap: exact` promises


@pytest.mark.parametrize("shape,tile", [((45, 77), 1024), ((45, 77), 32), ((33, 129), 64)])
def test_shapes_and_dtypes(net, shape, tile: int) -> None:
    plane = plane_of(shape)
    denoised, sr = run(net, plane, DenoiseConfig(tile_size=tile, **EXACT))
    assert denoised.shape == shape and denoised.dtype == np.float32
    assert sr.shape == (2 * shape[0], 2 * shape[1]) and sr.dtype == np.float32
    assert np.isfinite(sr).all()
    assert run(net, plane, DenoiseConfig(**EXACT), return_sr=False)[1] is None


# bf16 on the strips only: a CPU without native bf16 (AVX512-BF16/AMX) emulates it, and the 2-D
# plane's 9 tiles, each with 190 pixels of context, then cost over a minute. The strips already
# tile bf16 with partial context on both sides.
@pytest.mark.parametrize("mode,shape,tile,precision", [
    *((mode, (40, 700), 64, precision) for mode in ("avgpool", "bilinear") for precision in ("fp32", "bf16")),
    ("avgpool", (420, 420), 192, "fp32")])
def test_tiled_equals_whole_plane_bit_for_bit_at_exact_overlap(net, mode: str, shape, tile: int, precision) -> None:
    plane = plane_of(shape)
    exact = dict(EXACT, precision=precision)
    whole = run(net, plane, DenoiseConfig(downsample=mode, **exact))
    tiled = run(net, plane, DenoiseConfig(tile_size=tile, downsample=mode, **exact))
    assert_same(tiled[1], whole[1])
    assert_same(tiled[0], whole[0])


def test_small_overlap_is_close_but_not_exact(net) -> None:
    plane = plane_of((40, 700))
    whole = run(net, plane, DenoiseConfig(**EXACT))[0]
    tiled = run(net, plane, DenoiseConfig(tile_size=64, overlap=64, **FP32))[0]
    assert not np.allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    assert np.abs(tiled - whole).mean() < 0.01 * np.ptp(whole)


@pytest.mark.parametrize("tile", [1024, 32])
def test_normalisation_is_undone_exactly(tile: int) -> None:
    plane = plane_of((45, 77))
    denoised, sr = engine(upsample_net, DenoiseConfig(tile_size=tile, **EXACT), receptive_field=0).denoise_plane(
        plane, return_sr=True)
    np.testing.assert_allclose(denoised, plane, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(sr, np.repeat(np.repeat(plane, 2, 0), 2, 1), rtol=1e-6, atol=1e-3)


def test_bilinear_matches_the_authors_interpolate(net) -> None:
    plane = plane_of((45, 77))
    denoised, sr = run(net, plane, DenoiseConfig(downsample="bilinear", **EXACT))
    with torch.inference_mode():
        out = net(torch.from_numpy(NORM.forward(plane))[None, None])
        expected = NORM.inverse(F.interpolate(out, scale_factor=0.5, mode="bilinear", align_corners=True)[0, 0].numpy())
    assert_close(denoised, expected)
    assert_close(sr, NORM.inverse(out[0, 0].numpy()))


def test_avgpool_is_the_2x2_mean(net) -> None:
    denoised, sr = run(net, plane_of((45, 77)), DenoiseConfig(**EXACT))
    assert_close(denoised, sr.reshape(45, 2, 77, 2).mean((1, 3)))


def test_array_is_plane_wise(net) -> None:
    stack = plane_of((2, 1, 2, 33, 50))
    cfg = DenoiseConfig(tile_size=32, **EXACT)
    denoised, sr = denoise_array(net, stack, cfg, return_sr=True)
    assert denoised.shape == stack.shape and sr.shape == (2, 1, 2, 66, 100)
    for index in np.ndindex(*stack.shape[:-2]):
        d, s = run(net, stack[index], cfg)
        np.testing.assert_array_equal(denoised[index], d)
        np.testing.assert_array_equal(sr[index], s)
    assert denoise_array(net, stack, cfg)[1] is None


def zarr_array(tmp_path, name: str, data_or_shape, chunks, dtype=None, shards=None) -> zarr.Array:
    shape = getattr(data_or_shape, "shape", data_or_shape)
    arr = zarr.create_array(store=str(tmp_path / name), shape=shape, chunks=chunks, shards=shards,
                            dtype=dtype or data_or_shape.dtype, fill_value=0)
    if isinstance(data_or_shape, np.ndarray):
        arr[...] = data_or_shape
    return arr


@pytest.mark.parametrize("mode", ["avgpool", "bilinear"])
@pytest.mark.parametrize("shape,chunks,sr_chunks,shards,block", [
    ((2, 1, 1, 45, 77), (1, 1, 1, 45, 77), (1, 1, 1, 90, 154), None, 2048),  # one block per plane
    ((1, 1, 2, 40, 600), (1, 1, 1, 7, 50), (1, 1, 1, 20, 64), None, 100),  # odd chunks, blocks split y and x
    ((1, 1, 1, 40, 400), (1, 1, 1, 8, 64), (1, 1, 1, 16, 128), (1, 1, 1, 40, 192), 64),  # sharded
])
def test_zarr_out_of_core_equals_in_memory(net, tmp_path, mode, shape, chunks, sr_chunks, shards, block) -> None:
    stack = plane_of(shape)
    src = zarr_array(tmp_path, "src.zarr", stack, chunks)
    dst = zarr_array(tmp_path, "dst.zarr", shape, chunks, np.float32, shards)
    sr_shards = None if shards is None else (*shards[:3], 2 * shards[3], 2 * shards[4])
    sr_dst = zarr_array(tmp_path, "sr.zarr", (*shape[:3], 2 * shape[3], 2 * shape[4]), sr_chunks, np.float32, sr_shards)
    cfg = DenoiseConfig(tile_size=64, block_size=block, downsample=mode, **EXACT)
    denoise_zarr(net, src, dst, cfg, sr_dst=sr_dst, progress=False)
    denoised, sr = denoise_array(net, stack, cfg, return_sr=True)
    reread = zarr.open_array(str(tmp_path / "dst.zarr"), mode="r")
    assert_same(reread[...], denoised)
    assert_same(zarr.open_array(str(tmp_path / "sr.zarr"), mode="r")[...], sr)


def test_zarr_reads_a_dask_selection_of_captures(net, tmp_path) -> None:
    stack = plane_of((3, 1, 1, 40, 70))
    src = da.from_zarr(zarr_array(tmp_path, "src.zarr", stack, (1, 1, 1, 40, 70)))[[2, 0]]
    dst = zarr_array(tmp_path, "dst.zarr", src.shape, (1, 1, 1, 16, 32), np.float32)
    cfg = DenoiseConfig(block_size=32, **EXACT)
    denoise_zarr(net, src, dst, cfg, progress=False)
    expected, _ = denoise_array(net, stack[[2, 0]], cfg)
    assert_same(dst[...], expected)


def test_zarr_lock_free_writes_under_threads(net, tmp_path) -> None:
    """Concurrent lock-free blocks (2 x 3 of 2 planes each: the dst chunk on t is 2) with odd
    chunks; every pixel read back must match the in-memory result."""
    stack = plane_of((2, 1, 1, 40, 150))
    src = zarr_array(tmp_path, "src.zarr", stack, (1, 1, 1, 40, 150))
    dst = zarr_array(tmp_path, "dst.zarr", stack.shape, (2, 1, 1, 7, 50), np.float32)
    sr_dst = zarr_array(tmp_path, "sr.zarr", (2, 1, 1, 80, 300), (1, 1, 1, 14, 100), np.float32)
    cfg = DenoiseConfig(tile_size=64, block_size=21, **EXACT)
    denoise_zarr(net, src, dst, cfg, sr_dst=sr_dst, progress=False)
    denoised, sr = denoise_array(net, stack, cfg, return_sr=True)
    assert_same(zarr.open_array(str(tmp_path / "dst.zarr"), mode="r")[...], denoised)
    assert_same(zarr.open_array(str(tmp_path / "sr.zarr"), mode="r")[...], sr)


def test_zarr_batches_planes_and_writes_every_chunk_once(net, tmp_path, capsys) -> None:
    calls = []

    def counting_net(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return net(x)

    class Recording:
        """A zarr.Array that records the region of every write."""

        def __init__(self, arr):
            self.arr, self.writes = arr, []
            self.shape, self.dtype, self.chunks, self.shards = arr.shape, arr.dtype, arr.chunks, arr.shards

        def __setitem__(self, key, value):
            self.writes.append(tuple((k.start, k.stop) for k in key))
            self.arr[key] = value

    stack = plane_of((5, 1, 1, 45, 77))
    src = zarr_array(tmp_path, "src.zarr", stack, (1, 1, 1, 45, 77))
    dst = Recording(zarr_array(tmp_path, "dst.zarr", stack.shape, (1, 1, 1, 16, 32), np.float32))
    sr_dst = Recording(zarr_array(tmp_path, "sr.zarr", (5, 1, 1, 90, 154), (1, 1, 1, 90, 154), np.float32))
    blocks = denoise_zarr(counting_net, src, dst, DenoiseConfig(block_size=128, **EXACT), sr_dst=sr_dst)
    assert sum(calls) == 5 and len(calls) < 5  # every plane once, several planes per forward pass
    assert f"{blocks}/{blocks}" in capsys.readouterr().err
    for target in (dst, sr_dst):  # the writes tile the array exactly: no chunk twice, none missed
        covered = np.zeros(target.shape, np.int64)
        for region in target.writes:
            covered[tuple(slice(a, b) for a, b in region)] += 1
        assert (covered == 1).all()
    denoised, sr = denoise_array(net, stack, DenoiseConfig(**EXACT), return_sr=True)
    assert_close(dst.arr[...], denoised)
    assert_close(sr_dst.arr[...], sr)


def test_input_dtype_output_is_rounded_and_clipped(tmp_path) -> None:
    stack = plane_of((2, 1, 1, 40, 64))
    src = zarr_array(tmp_path, "src.zarr", stack, (1, 1, 1, 40, 64))
    dst = zarr_array(tmp_path, "dst.zarr", stack.shape, (1, 1, 1, 40, 64), np.uint16)
    shift = lambda x: F.interpolate(x, scale_factor=2, mode="nearest") + 0.3 / NORM.scale  # noqa: E731
    denoise_zarr(shift, src, dst, DenoiseConfig(**EXACT))
    np.testing.assert_array_equal(dst[...], stack)  # x + 0.3 rounds back to x
    low = lambda x: F.interpolate(x, scale_factor=2, mode="nearest") * 0 - 1.0  # noqa: E731  (raw -300)
    denoise_zarr(low, src, dst, DenoiseConfig(**EXACT))
    assert (dst[...] == 0).all()  # clipped to the dtype's range, not wrapped


def blocks_along(axis: int, lengths: list[int], shape: tuple[int, ...]) -> list:
    """Blocks cutting `shape` along `axis` only, with these lengths."""
    starts = np.cumsum([0, *lengths])
    blocks = []
    for a, b in zip(starts[:-1], starts[1:]):
        s = [slice(int(a), int(b)) if i == axis else slice(0, n) for i, n in enumerate(shape)]
        blocks.append((tuple(s[:-2]), s[-2], s[-1]))
    return blocks


def test_misaligned_blocks_are_refused(tmp_path) -> None:
    target = zarr_array(tmp_path, "t.zarr", (2, 40, 100), (1, 8, 50), np.float32, shards=(1, 16, 100))
    check_blocks(blocks_along(1, [32, 8], target.shape), target, 1, "dst")  # whole shards, short last block
    for lengths, axis in [([8, 32], 1), ([50, 50], 2), ([20, 20], 1)]:  # part shards on y, x, y
        with pytest.raises(ValueError, match="splits a chunk"):
            check_blocks(blocks_along(axis, lengths, target.shape), target, 1, "dst")
    with pytest.raises(ValueError, match="axis 0"):
        u = zarr_array(tmp_path, "u.zarr", (2, 40, 100), (2, 8, 50), np.float32)
        check_blocks(blocks_along(0, [1, 1], u.shape), u, 1, "dst")
    with pytest.raises(ValueError, match="axis 2"):  # a 2x target: source edge 25 is its 50, but 30 is 60
        sr = zarr_array(tmp_path, "sr.zarr", (2, 80, 200), (1, 16, 50), np.float32)
        check_blocks(blocks_along(2, [30, 20], (2, 40, 50)), sr, 2, "sr_dst")
    check_blocks(blocks_along(2, [25, 25], (2, 40, 50)), sr, 2, "sr_dst")


def test_zarr_refuses_targets_that_do_not_fit(net, tmp_path) -> None:
    src = zarr_array(tmp_path, "src.zarr", plane_of((1, 1, 1, 33, 40)), (1, 1, 1, 33, 40))
    cfg = DenoiseConfig(**EXACT)
    with pytest.raises(ValueError, match="shape"):
        denoise_zarr(net, src, zarr_array(tmp_path, "a.zarr", (1, 1, 1, 33, 41), (1, 1, 1, 33, 41), np.float32), cfg)
    with pytest.raises(ValueError, match="real numeric dtype"):
        denoise_zarr(net, src, zarr_array(tmp_path, "b.zarr", src.shape, src.chunks, np.bool_), cfg)


def test_config_and_network_errors(net) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        DenoiseConfig(tile_size=100)
    with pytest.raises(ValueError, match="downsample"):
        DenoiseConfig(downsample="nearest")
    assert tiling.overlap_pixels("exact", RF) == 192
    assert tiling.overlap_pixels(DenoiseConfig(overlap=40).overlap, RF) == 64
    tiles = [Engine(net, DenoiseConfig(tile_size=256, **FP32), scale=2, receptive_field=RF, normalizer=NORM,
                    attempt=a).tile for a in (1, 2, 3, 9)]
    assert tiles == [256, 128, 64, 32]  # a retry halves the tile
    assert engine(net, DenoiseConfig(**FP32)).tile == 1024  # "auto" on the CPU
    training = build_model(SMALL)
    with pytest.raises(ValueError, match="eval"):
        run(training, plane_of((32, 32)), DenoiseConfig(**EXACT))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_streaming_holds_a_bounded_number_of_blocks(tmp_path, prefetch) -> None:
    """Blocks read but not yet written never exceed 2 * prefetch + 2 (queues plus the one computed),
    however long the stack: memory follows the block size and queue depth, not the stack size."""
    import threading
    import time as clock

    lock, state = threading.Lock(), {"read": 0, "written": 0, "most": 0}

    class Source:
        def __init__(self, arr):
            self.arr, self.shape, self.dtype = arr, arr.shape, arr.dtype

        def __getitem__(self, key):
            with lock:
                state["read"] += 1
                state["most"] = max(state["most"], state["read"] - state["written"])
            return self.arr[key]

    class Target:
        def __init__(self, arr):
            self.arr, self.shape, self.dtype, self.chunks, self.shards = arr, arr.shape, arr.dtype, (1, 1, 1, 32, 32), None

        def __setitem__(self, key, value):
            clock.sleep(0.01)  # a slow disk: the writer falls behind
            self.arr[key] = value
            with lock:
                state["written"] += 1

    stack = plane_of((24, 1, 1, 32, 32))
    dst = Target(np.zeros(stack.shape, np.float32))
    blocks = stream_blocks(Source(stack), lambda planes, window: (planes.astype(np.float32), None), dst,
                           context=0, block_size=32, align=32, prefetch=prefetch, progress=False)
    assert blocks == 24 and state["written"] == 24
    np.testing.assert_array_equal(dst.arr, stack)
    assert state["most"] <= 2 * prefetch + 2, state


@pytest.mark.parametrize("overlap", [DenoiseConfig().overlap, "exact"])
def test_batched_engine_equals_one_tile_at_a_time(net, overlap) -> None:
    """Tiles of several planes batched per forward pass give the one-tile-at-a-time result: bit for
    bit at `overlap: exact`, up to float rounding otherwise (oneDNN's accumulation order depends
    on the batch)."""
    stack = plane_of((3, 100, 150))
    settings = dict(tile_size=64, overlap=overlap, **FP32)
    batched = engine(net, DenoiseConfig(**settings))
    single = engine(net, DenoiseConfig(batch_pixels=1, **settings))
    assert batched.batch_pixels > 9 * 64 * 64 and single.batch_pixels == 1
    got, sr = batched.denoise_array(stack, return_sr=True, progress=False)
    ref, ref_sr = single.denoise_array(stack, return_sr=True, progress=False)
    check = assert_same if overlap == "exact" else assert_close
    check(got, ref)
    check(sr, ref_sr)


def test_compiled_mode_feeds_the_network_one_shape(net) -> None:
    """What a compiled engine does (fixed windows, short batches padded): every forward pass gets
    the same input shape, so one graph serves the job, and the output matches the eager engine's."""
    stack = plane_of((3, 100, 450))
    settings = dict(tile_size=64, **EXACT)
    fixed = engine(net, DenoiseConfig(batch_pixels=2 * 128 * 448, **settings))
    fixed.fixed = True  # as set for a compiled network (compiling itself takes minutes on a CPU)
    shapes = []
    prepared = fixed.net
    fixed.net = lambda x: (shapes.append(tuple(x.shape)), prepared(x))[1]
    got = fixed.denoise_array(stack, progress=False)[0]
    assert len(set(shapes)) == 1, set(shapes)
    assert_same(got, engine(net, DenoiseConfig(**settings)).denoise_array(stack, progress=False)[0])


def _blur_upsample_net(x: torch.Tensor) -> torch.Tensor:
    """A network equivariant to flips and 90-degree rotations by construction: nearest 2x
    upsampling, then a blur with a kernel of the square's symmetry."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=x.device) / 16
    return F.conv2d(upsample_net(x), kernel[None, None], padding=1)


def test_ensemble_of_an_equivariant_model_equals_its_single_pass() -> None:
    plane = plane_of((64, 96))  # a multiple of 32: no bottom/right padding to break the symmetry
    single = engine(_blur_upsample_net, DenoiseConfig(**FP32), receptive_field=2).denoise_plane(plane, True)
    eight = engine(_blur_upsample_net, DenoiseConfig(ensemble=8, **FP32), receptive_field=2).denoise_plane(plane, True)
    assert not np.allclose(single[0], plane)  # the blur does something
    for a, b in zip(eight, single):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-4)


def test_ensemble_averages_the_eight_flips_and_rotations(net) -> None:
    """With a network that is not equivariant, `ensemble: 8` is the mean of the single passes over
    the 8 transformed planes, each turned back, and differs from one pass."""
    plane = plane_of((64, 96))
    cfg = dict(tile_size=64, **EXACT)
    got, got_sr = engine(net, DenoiseConfig(ensemble=8, **cfg)).denoise_plane(plane, return_sr=True)
    one = engine(net, DenoiseConfig(**cfg))
    outs, srs = [], []
    for turns in range(4):
        for flip in (False, True):
            view = np.rot90(plane, turns)
            d, s = one.denoise_plane(np.ascontiguousarray(view[:, ::-1] if flip else view), return_sr=True)
            outs.append(np.rot90(d[:, ::-1] if flip else d, -turns))
            srs.append(np.rot90(s[:, ::-1] if flip else s, -turns))
    assert_close(got, np.mean(outs, axis=0))
    assert_close(got_sr, np.mean(srs, axis=0))
    assert not np.allclose(got, outs[0], rtol=0, atol=1e-3 * np.abs(got).max())


def test_ensemble_is_one_or_eight() -> None:
    with pytest.raises(ValueError, match="ensemble must be 1 or 8"):
        DenoiseConfig(ensemble=4)
