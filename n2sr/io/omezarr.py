"""OME-Zarr v3 (NGFF 0.5) images in n2sr's one canonical layout.

Every stage reads and writes the same layout (group with one array ``0``, axes
``t c z y x``, one chunk per plane or plane tile, ingested stacks with runs of planes in one
shard file), so steps can stream plane by plane,
tiles can be aligned to chunks, and Fiji/napari (via their OME-Zarr readers) open outputs.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from n2sr import __version__

AXES = ("t", "c", "z", "y", "x")
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
NGFF_VERSION = "0.5"
MAX_CHUNK = 2048


def compressor(clevel: int = 5, cname: str = "zstd") -> BloscCodec:
    """n2sr's codec: Blosc `cname` (zstd, or lz4 for less CPU) at `clevel`, bitshuffled (helps noisy
    8/16-bit microscopy much more than byte shuffle)."""
    return BloscCodec(cname=cname, clevel=clevel, shuffle="bitshuffle")


COMPRESSOR = compressor()


def canonical_shape(shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    """Map ``(y, x)``, ``(t, y, x)`` or ``(t, c, z, y, x)`` onto the 5-D ``t c z y x`` shape.

    A 3-D stack is repeated captures (t), as everywhere in n2sr; 4-D is ambiguous and refused.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 2:
        return (1, 1, 1, *shape)
    if len(shape) == 3:
        return (shape[0], 1, 1, shape[1], shape[2])
    if len(shape) == 5:
        return shape
    raise ValueError(f"shape {shape}: expected (y, x), (t, y, x) or (t, c, z, y, x)")


def plane_chunks(shape: Sequence[int]) -> tuple[int, int, int, int, int]:
    """One chunk per plane, or per plane tile when a side exceeds `MAX_CHUNK`."""
    *_, ny, nx = canonical_shape(shape)
    return (1, 1, 1, min(ny, MAX_CHUNK), min(nx, MAX_CHUNK))


def plane_shards(shape: Sequence[int], dtype: Any, shard_mb: float) -> tuple[int, ...] | None:
    """Shards of whole planes for an array of plane chunks: runs of up to `shard_mb` MiB of planes
    along the innermost of ``t c z`` longer than 1, so a shard's planes are consecutive in
    ``t c z`` order. None (one file per chunk) when that would put fewer than 2 planes in a shard
    or a plane is tiled into several chunks (its tiles are already large files).

    One file per plane costs ingest more kernel time creating, writing and syncing files than
    compressing them (``benchmarks/results/ingest.md``), and cluster file systems serve a
    few large files far better than many small ones."""
    shape5 = canonical_shape(shape)
    chunks = plane_chunks(shape5)
    if not shard_mb or chunks[-2:] != shape5[-2:]:
        return None
    axis = next((a for a in (2, 1, 0) if shape5[a] > 1), None)
    plane_bytes = shape5[-2] * shape5[-1] * np.dtype(dtype).itemsize
    k = 0 if axis is None else min(shape5[axis], int(shard_mb * 2**20 // plane_bytes))
    if k < 2:
        return None
    return tuple(k if a == axis else n for a, n in enumerate(chunks))


def ngff_attributes(*, name: str = "image", scale: Sequence[float] | None = None,
                    units: dict[str, str] | None = None) -> dict[str, Any]:
    """NGFF 0.5 ``ome`` attributes for one full-resolution dataset ``0``.

    `scale` is the pixel size per axis in ``t c z y x`` order (default 1.0 everywhere);
    `units` maps axis names to NGFF units (e.g. ``{"y": "micrometer"}``) when they are known.
    """
    scale = [1.0] * 5 if scale is None else [float(s) for s in scale]
    if len(scale) != 5:
        raise ValueError(f"scale {scale}: expected 5 values for axes t c z y x")
    axes = []
    for axis in AXES:
        entry = {"name": axis, "type": AXIS_TYPES[axis]}
        if units and axis in units:
            entry["unit"] = units[axis]
        axes.append(entry)
    return {
        "version": NGFF_VERSION,
        "multiscales": [{
            "name": name,
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
        }],
    }


def create_image(path: str | os.PathLike[str], shape: Sequence[int], dtype: Any, *,
                 chunks: Sequence[int] | None = None, attrs: dict[str, Any] | None = None,
                 scale: Sequence[float] | None = None, units: dict[str, str] | None = None,
                 codec: BloscCodec = COMPRESSOR, shards: Sequence[int] | None = None) -> zarr.Array:
    """Create an empty OME-Zarr image at `path` and return its array ``0`` for writing.

    `shape` is ``(y, x)``, ``(t, y, x)`` or ``(t, c, z, y, x)`` (see `canonical_shape`). `attrs`
    (provenance: source path, sha256, source dtype, ...) is stored under the group
    attribute ``n2sr`` together with the n2sr version; `codec` compresses the chunks; `shards`
    (see `plane_shards`) groups chunks into shard files (write them whole: `n2sr.io.stream`). Fails if `path` exists
    (mode ``w-``): callers write into an `n2sr.io.atomic_path` temp directory.
    """
    shape5 = canonical_shape(shape)
    chunks5 = plane_chunks(shape5) if chunks is None else canonical_shape(chunks)
    provenance = {"n2sr_version": __version__, **(attrs or {})}
    group = zarr.open_group(
        store=os.fspath(path),
        mode="w-",
        zarr_format=3,
        attributes={"ome": ngff_attributes(scale=scale, units=units), "n2sr": provenance},
    )
    return group.create_array(
        "0",
        shape=shape5,
        dtype=np.dtype(dtype),
        chunks=chunks5,
        shards=None if shards is None else canonical_shape(shards),
        compressors=codec,
        fill_value=0,
        dimension_names=AXES,
    )


def open_image(path: str | os.PathLike[str], mode: str = "r") -> zarr.Array:
    """Open an OME-Zarr image (read-only unless `mode` says otherwise) and return its full-resolution array.

    Follows the first multiscales dataset path (``0`` for n2sr's own images), so
    OME-Zarr images written by other tools also open.
    """
    group = zarr.open_group(store=os.fspath(path), mode=mode)
    ome = group.attrs.get("ome", {})
    multiscales = ome.get("multiscales") or group.attrs.get("multiscales")
    name = multiscales[0]["datasets"][0]["path"] if multiscales else "0"
    array = group[name]
    if not isinstance(array, zarr.Array):
        raise ValueError(f"{os.fspath(path)}: {name!r} is a group, expected the image array")
    return array


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the ``n2sr`` provenance attributes of an OME-Zarr image ({} if none, or a bare array)."""
    node = zarr.open(store=os.fspath(path), mode="r")
    return dict(node.attrs.get("n2sr", {})) if isinstance(node, zarr.Group) else {}


def write_attrs(path: str | os.PathLike[str], attrs: dict[str, Any]) -> None:
    """Replace the ``n2sr`` provenance attributes of an OME-Zarr image (with the n2sr version)."""
    group = zarr.open_group(store=os.fspath(path), mode="r+")
    group.attrs["n2sr"] = {"n2sr_version": __version__, **attrs}


def plane_grid(axes: str, shape: Sequence[int]) -> tuple[int, ...]:
    """`shape` with the plane's axes (Y, X, S) set to 1: one entry per plane, in stored order."""
    return tuple(1 if a in "YXS" else n for a, n in zip(axes.upper(), shape))


def tczyx_shape(axes: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The 5-D shape `to_tczyx` gives an array of `shape` with tifffile `axes` (no pixels touched)."""
    sizes = dict(zip(axes.upper(), shape))
    return (*to_tczyx(np.empty(plane_grid(axes, shape), np.uint8), axes).shape[:3], sizes["Y"], sizes["X"])


def to_tczyx(arr: Any, axes: str) -> Any:
    """Reorder an array with tifffile `axes` (e.g. ``"TZCYX"``, ``"QYX"``, ``"YX"``) to 5-D ``t c z y x``.

    Axes other than T, C, Z, Y, X (Q, I, R, ... : pages of unknown meaning) are repeated
    captures for n2sr and are merged with T, in their stored order, into the t axis.
    A singleton sample axis S is dropped; S > 1 (RGB) is refused. Works on anything with
    ``.shape``, ``.transpose`` and ``.reshape`` (numpy, dask).
    """
    axes = axes.upper()
    if len(axes) != len(arr.shape):
        raise ValueError(f"axes {axes!r} do not match an array of shape {tuple(arr.shape)}")
    if axes.count("Y") != 1 or axes.count("X") != 1:
        raise ValueError(f"axes {axes!r}: need exactly one Y and one X axis")
    sizes = dict(zip(range(len(axes)), arr.shape))
    samples = [i for i, a in enumerate(axes) if a == "S"]
    if any(sizes[i] > 1 for i in samples):
        raise ValueError(f"axes {axes!r} have {max(sizes[i] for i in samples)} samples per pixel (RGB); "
                         "expected grayscale")

    def positions(letter: str) -> list[int]:
        return [i for i, a in enumerate(axes) if a == letter]

    time = [i for i, a in enumerate(axes) if a not in "CZYXS"]
    groups = [time, positions("C"), positions("Z"), positions("Y"), positions("X")]
    order = [i for group in groups for i in group] + samples
    shape5 = tuple(int(np.prod([sizes[i] for i in group], dtype=np.int64)) for group in groups)
    return arr.transpose(order).reshape(shape5)
