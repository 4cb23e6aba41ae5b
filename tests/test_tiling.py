"""Tile specs and blending windows: coverage, alignment, and stitching that round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from n2sr.nn import tiling

ALIGN = 32
SHAPES = [(96, 130), (45, 77), (200, 64), (33, 300)]


def stitch(plane: np.ndarray, model, tile: int, overlap: int, receptive_field: int, scale: int) -> np.ndarray:
    """What denoise does, in numpy: blend `model(window)` over tiles, divide once."""
    acc = np.zeros((scale * plane.shape[0], scale * plane.shape[1]))
    wsum = np.zeros_like(acc)
    for t in tiling.tiles(plane.shape, tile, tiling.round_up(overlap, ALIGN), ALIGN, receptive_field):
        w = t.weights(scale)
        acc[t.window(scale)] += w * model(plane[t.window()])
        wsum[t.window(scale)] += w
    assert wsum.min() > 0
    return acc / wsum


def box_sum(x: np.ndarray, radius: int) -> np.ndarray:
    """A shift-equivariant 'model' with receptive field `radius` and zero padding like a conv net."""
    return ndimage.uniform_filter(x.astype(np.float64), 2 * radius + 1, mode="constant") * (2 * radius + 1) ** 2


@pytest.mark.parametrize("size", [1, 31, 32, 64, 65, 95, 96, 97, 130, 1000])
@pytest.mark.parametrize("tile", [32, 64, 128])
def test_tile_starts_are_aligned_and_cover(size: int, tile: int) -> None:
    starts = tiling.tile_starts(size, tile, ALIGN)
    assert starts[0] == 0 and all(s % ALIGN == 0 for s in starts)
    assert starts == sorted(set(starts)) and starts[-1] < size
    lengths = np.diff(starts + [size])
    assert all(lengths[:-1] == tile)
    # The last core is never thinner than the pooling multiple unless the plane is.
    assert lengths[-1] >= min(size, ALIGN) and lengths[-1] < tile + ALIGN


def test_plane_up_to_tile_is_one_tile() -> None:
    assert tiling.tile_starts(1024, 1024, ALIGN) == [0]
    assert len(tiling.tiles((1000, 1024), 1024, 192, ALIGN, 150)) == 1


@pytest.mark.parametrize("tile", [0, 48, 100])
def test_tile_must_be_multiple_of_align(tile: int) -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        tiling.tile_starts(100, tile, ALIGN)


@pytest.mark.parametrize("overlap", [0, 1, 32, 40, 64, 500])
def test_spans_partition_and_align(overlap: int) -> None:
    spans = tiling.spans(300, 64, tiling.overlap_pixels(overlap, 10), ALIGN, 10)
    assert [s.core_start for s in spans[1:]] == [s.core_stop for s in spans[:-1]]
    assert spans[0].core_start == 0 and spans[-1].core_stop == 300
    for s in spans:
        assert s.start % ALIGN == 0 and s.start <= s.core_start < s.core_stop <= s.stop <= 300
        assert s.core_start - s.start == min(s.core_start, tiling.round_up(overlap, ALIGN))


def test_blend_window_ramps_are_a_partition_of_unity() -> None:
    w = tiling.blend_window(100, (5, 7), (16, 10))
    assert w.shape == (100,) and w.dtype == np.float32
    assert np.all(w[:5] == 0) and np.all(w[-7:] == 0) and np.all(w[21:83] == 1)
    assert np.all((w[5:21] > 0) & (w[5:21] < 1)) and np.all(np.diff(w[5:21]) > 0)
    rise, fall = w[5:21], tiling.blend_window(16, (0, 0), (0, 16))
    np.testing.assert_allclose(rise + fall, 1.0, atol=1e-6)
    assert np.all(tiling.blend_window(10, (0, 0), (0, 0)) == 1)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("overlap,rf", [(0, 0), (32, 10), (32, 32), (64, 20), (32, 50)])
def test_weights_are_positive_everywhere_and_zero_near_interior_borders(shape, overlap: int, rf: int) -> None:
    wsum = np.zeros(shape)
    for t in tiling.tiles(shape, 32, tiling.round_up(overlap, ALIGN), ALIGN, rf):
        w = t.weights()
        wsum[t.window()] += w
        if overlap >= rf:
            for axis, span in enumerate((t.y, t.x)):
                edge = np.moveaxis(w, axis, 0)
                if span.start > 0:
                    assert np.all(edge[:rf] == 0)
                if span.stop < shape[axis]:
                    assert np.all(edge[edge.shape[0] - rf:] == 0)
    assert wsum.min() > 0


@pytest.mark.parametrize("shape", SHAPES)
def test_weights_sum_to_one_when_cores_hold_the_ramps(shape) -> None:
    wsum = np.zeros(shape)
    for t in tiling.tiles(shape, 64, 32, ALIGN, 16):
        wsum[t.window()] += t.weights()
    np.testing.assert_allclose(wsum, 1.0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("overlap", [0, 32, 64])
def test_identity_model_stitches_arange_back_exactly(shape, overlap: int) -> None:
    plane = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    upsample = lambda x: np.repeat(np.repeat(x, 2, 0), 2, 1)  # noqa: E731
    sr = stitch(plane, upsample, 32, overlap, 0, scale=2)
    np.testing.assert_allclose(sr.reshape(shape[0], 2, shape[1], 2).mean((1, 3)), plane, rtol=1e-12)
    np.testing.assert_allclose(stitch(plane, lambda x: x, 32, overlap, 0, scale=1), plane, rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("radius", [3, 20, 32])
def test_local_model_with_overlap_at_least_receptive_field_is_seamless(shape, radius: int) -> None:
    rng = np.random.default_rng(0)
    plane = rng.integers(0, 1000, shape).astype(np.float64)
    whole = box_sum(plane, radius)
    tiled = stitch(plane, lambda x: box_sum(x, radius), 32, radius, radius, scale=1)
    np.testing.assert_allclose(tiled, whole, rtol=1e-9)


def test_overlap_below_receptive_field_is_inexact_but_blended() -> None:
    rng = np.random.default_rng(1)
    plane = rng.integers(0, 1000, (96, 130)).astype(np.float64)
    whole = box_sum(plane, 40)
    tiled = stitch(plane, lambda x: box_sum(x, 40), 32, 32, 40, scale=1)
    assert not np.allclose(tiled, whole)
    assert np.abs(tiled - whole).max() < np.abs(whole).max()


@pytest.mark.parametrize("size, tile, overlap", [(320, 64, 32), (512, 128, 64), (96, 64, 64), (640, 256, 0)])
def test_fixed_windows_have_one_shape_and_hold_their_context(size: int, tile: int, overlap: int) -> None:
    """For a compiled network every window has the same length, starts on the pooling grid and
    still holds its core plus the overlap (or the image border); the weights still sum to 1."""
    spans = tiling.spans(size, tile, overlap, ALIGN, 16, fixed=True)
    assert len({s.stop - s.start for s in spans}) == 1
    for s in spans:
        assert s.start % ALIGN == 0 and 0 <= s.start and s.stop <= size
        assert s.start <= max(0, s.core_start - overlap) and s.stop >= min(size, s.core_stop + overlap)
    total = np.zeros(size)
    for s in spans:
        total[s.start:s.stop] += s.weights()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="multiple of"):
        tiling.spans(size + 1, tile, overlap, ALIGN, 16, fixed=True)
