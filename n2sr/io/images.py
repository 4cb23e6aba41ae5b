"""Read and write TIFF, PNG and Zarr images.

Everything that touches an input file goes through here, so a bad file fails in one
place with one kind of error (`InputError`) that names the file, says what is wrong and,
where possible, how to fix it; the CLI prints that as one line and exits with code 1.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tifffile
import zarr
from PIL import Image

from n2sr.errors import InputError
from n2sr.io import omezarr
from n2sr.io.atomic import atomic_path
from n2sr.io.pyramid import add_levels

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
ZARR_SUFFIXES = (".zarr",)
PNG_MODES = {"L": np.uint8, "I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16}
# ImageJ hyperstacks hold only these sample types; anything else is written as plain TIFF.
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
# What a broken or truncated file raises inside tifffile / Pillow / zarr.
READ_ERRORS = (tifffile.TiffFileError, ValueError, OSError, EOFError, KeyError, IndexError)
# What a damaged Zarr chunk raises when decoded (blosc/zstd errors are RuntimeErrors).
CHUNK_ERRORS = (RuntimeError, ValueError, OSError, EOFError, TypeError)
# The largest plane (Y * X pixels) n2sr opens, unless the environment variable says otherwise. It
# replaces Pillow's "decompression bomb" limit (89 Mpixels), too small for stitched microscopy
# planes, with one limit for every format, checked from the header before any pixel is decoded.
MAX_PIXELS_ENV = "N2SR_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 2**30  # a 32768 x 32768 plane: 2 GiB as uint16, 4 GiB as float32


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], kind: str) -> Iterator[None]:
    """Turn what a broken or truncated file raises inside tifffile/Pillow/zarr into an `InputError`."""
    try:
        yield
    except InputError:
        raise
    except READ_ERRORS as exc:
        kind = kind.upper()
        raise InputError(path, f"cannot read as {kind} ({exc}); is it truncated, corrupt or not a {kind}?") from exc


def kind_of(path: str | os.PathLike[str]) -> str:
    """Return ``"tiff"``, ``"png"`` or ``"zarr"`` from the file name, the one place that decides."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in PNG_SUFFIXES:
        return "png"
    if suffix in ZARR_SUFFIXES or (path.is_dir() and (path / "zarr.json").is_file()):
        return "zarr"
    raise InputError(path, f"unknown image format {suffix!r}; expected .tif, .tiff, .png or .zarr")


def check_exists(path: str | os.PathLike[str]) -> Path:
    """Fail early, naming the file, when an input is missing, a broken or looping link, or empty."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(path, "symbolic link loop (the link leads back to itself); point it at the real "
                                   "file") from None
        if exc.errno == errno.ENOENT and os.path.islink(path):
            raise InputError(path, f"broken symbolic link (to {os.readlink(path)!r}, which does not exist)") from None
        if exc.errno == errno.ENOENT:
            raise InputError(path, "no such file or directory") from None
        raise InputError(path, f"cannot open ({exc.strerror})") from None
    if path.is_file() and st.st_size == 0:
        raise InputError(path, "file is empty (0 bytes); re-copy it from the source")
    return path


def max_pixels() -> int:
    """The plane size limit: `N2SR_MAX_PIXELS` from the environment, else `DEFAULT_MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"environment variable {MAX_PIXELS_ENV}={text!r}: expected a whole number of pixels > 0")
    return value


def check_plane_size(path: str | os.PathLike[str], height: int, width: int) -> None:
    """Refuse a plane over the pixel limit before it is decoded (a damaged header, or a decompression bomb)."""
    limit = max_pixels()
    if int(height) * int(width) > limit:
        raise InputError(path, f"plane of {height}x{width} = {int(height) * int(width)} pixels is over the limit of "
                               f"{limit} pixels; if the file is genuine, raise the limit with the environment "
                               f"variable {MAX_PIXELS_ENV}")


def open_png(path: str | os.PathLike[str]) -> Image.Image:
    """Open a PNG (header only) under n2sr's pixel limit instead of Pillow's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:  # only if another thread restored Pillow's limit
            raise InputError(path, f"{exc}; raise the limit with {MAX_PIXELS_ENV}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    try:
        check_plane_size(path, img.height, img.width)
    except InputError:
        img.close()
        raise
    return img


def first_series(path: str | os.PathLike[str], tif: tifffile.TiffFile) -> Any:
    """The TIFF's first series (the one n2sr reads), checked: planes within the pixel limit, and
    no pages of another plane shape that it would leave out without a word."""
    series = tif.series[0]
    axes = tiff_plane_axes(path, series.axes, series.shape)
    sizes = dict(zip(axes, series.shape))
    if not tif.is_ome:  # an OME-TIFF declares its images; elsewhere a second series is stray pages
        for other in tif.series[1:]:
            other_axes = other.axes.replace("S", "")
            other_sizes = dict(zip(other.axes, other.shape))
            if "Y" in other_axes and "X" in other_axes and (other_sizes["Y"], other_sizes["X"]) != (sizes["Y"],
                                                                                               sizes["X"]):
                page = other.pages[0].index if other.pages and other.pages[0] is not None else "?"
                raise InputError(path, f"pages differ in shape: page 0 is {sizes['Y']}x{sizes['X']} but page {page} "
                                       f"is {other_sizes['Y']}x{other_sizes['X']}; a stack needs planes of one "
                                       "shape: save the odd pages as their own file")
    check_plane_size(path, sizes["Y"], sizes["X"])
    return series


def read_zarr(path: str | os.PathLike[str], arr: Any, key: Any) -> np.ndarray:
    """``arr[key]`` of a Zarr array opened from `path`; a chunk that cannot be decoded is an
    `InputError` naming the chunk."""
    try:
        return np.asarray(arr[key])
    except CHUNK_ERRORS as exc:
        chunk = _damaged_chunk(arr, key)
        where = f"{'shard' if getattr(arr, 'shards', None) else 'chunk'} {chunk}" if chunk else "a chunk"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"{where} is damaged ({detail}); re-run the step that wrote it, or re-copy "
                               "the Zarr") from None


def _damaged_chunk(arr: Any, key: Any) -> str | None:
    """The key (``0/c/1/0/0/0/0``) of the first chunk (its shard's, if sharded) within `key` that fails
    to decode."""
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        key = (*key[:i], *(slice(None),) * (arr.ndim - len(key) + 1), *key[i + 1:])
    key = (*key, *(slice(None),) * (arr.ndim - len(key)))
    ranges = []
    for k, n, c in zip(key, arr.shape, arr.chunks):
        if isinstance(k, slice):
            lo, hi, _ = k.indices(n)
        else:
            lo = int(k) % n if n else 0
            hi = lo + 1
        ranges.append(range(lo // c, max(hi - 1, lo) // c + 1))
    for coords in itertools.product(*ranges):
        region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(coords, arr.chunks, arr.shape))
        try:
            np.asarray(arr[region])
        except CHUNK_ERRORS:
            shards = getattr(arr, "shards", None)
            if shards:  # keys name shard files; a shard holds whole chunks
                coords = tuple(i * c // s for i, c, s in zip(coords, arr.chunks, shards))
            encode = getattr(arr.metadata, "encode_chunk_key", None)
            name = encode(coords) if encode else "/".join(map(str, coords))
            return f"{arr.path}/{name}" if arr.path else name
    return None


def check_finite(path: str | os.PathLike[str], arr: np.ndarray) -> None:
    """Refuse NaN/Inf in float data: one NaN poisons training losses and normalisation."""
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(path, f"complex data ({arr.dtype}) is not supported; expected real intensities")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(path, f"contains {bad} NaN/Inf values; replace them (e.g. with 0) before processing")


def tiff_plane_axes(path: str | os.PathLike[str], axes: str, shape: tuple[int, ...]) -> str:
    """Check a tifffile axes string has one grayscale plane per page and return it.

    Samples (S) > 1 mean RGB or interleaved channels, which the single-channel model cannot
    take; S == 1 is dropped by the caller.
    """
    if "Y" not in axes or "X" not in axes:
        raise InputError(path, f"axes {axes} have no Y and X image plane")
    if "S" in axes and shape[axes.index("S")] > 1:
        samples = shape[axes.index("S")]
        kind = " (RGB)" if samples in (3, 4) else ""
        raise InputError(
            path,
            f"axes {axes} has {samples} samples per pixel{kind}; expected grayscale: "
            "split the channels (e.g. Fiji Image > Color > Split Channels) and save each as its own file",
        )
    return axes


def image_info(path: str | os.PathLike[str]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape ``(..., Y, X)`` and dtype of a TIFF or PNG without decoding pixels.

    Lets a folder series be checked for consistent captures before anything is written.
    """
    path = check_exists(path)
    kind = kind_of(path)
    with reading(path, kind):
        if kind == "png":
            with open_png(path) as img:
                return (img.height, img.width), np.dtype(_png_dtype(path, img))
        if kind == "tiff":
            axes, shape, dtype = tiff_layout(path)
            sizes = dict(zip(axes, shape))
            lead = [n for a, n in zip(axes, shape) if a not in "YXS"]
            return (*lead, sizes["Y"], sizes["X"]), dtype
        arr = open_zarr_array(path)
        return tuple(arr.shape), np.dtype(arr.dtype)


def tiff_layout(path: str | os.PathLike[str]) -> tuple[str, tuple[int, ...], np.dtype]:
    """Axes, shape and dtype of a TIFF's first series, from its header."""
    path = check_exists(path)
    with reading(path, "tiff"), tifffile.TiffFile(path) as tif:
        series = first_series(path, tif)
        return tiff_plane_axes(path, series.axes, series.shape), tuple(series.shape), np.dtype(series.dtype)


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a whole TIFF, PNG or Zarr image into memory.

    Returns ``ndarray (..., Y, X)`` in the source dtype: a TIFF's first series in its stored
    axis order (singleton samples dropped), a PNG plane, an OME-Zarr's array ``0``
    (``t c z y x``) or a plain Zarr array. Use `n2sr.ingest` for stacks too large for memory.
    """
    path = check_exists(path)
    kind = kind_of(path)
    with reading(path, kind):
        if kind == "tiff":
            arr = _read_tiff(path)
        elif kind == "png":
            arr = read_png(path)
        else:
            arr = read_zarr(path, open_zarr_array(path), ...)
    if arr.ndim < 2:
        raise InputError(path, f"has {arr.ndim} dimension(s); expected an image with at least Y and X")
    check_finite(path, arr)
    return arr


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        series = first_series(path, tif)
        axes = tiff_plane_axes(path, series.axes, series.shape)
        arr = series.asarray()
    if "S" in axes:
        arr = np.take(arr, 0, axis=axes.index("S"))
        axes = axes.replace("S", "")
    return np.moveaxis(arr, [axes.index("Y"), axes.index("X")], [-2, -1])


def read_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one grayscale PNG plane as ``ndarray (Y, X)`` uint8 (mode L) or uint16 (mode I;16)."""
    with open_png(path) as img:
        return np.asarray(img, dtype=_png_dtype(path, img))


def _png_dtype(path: str | os.PathLike[str], img: Image.Image) -> type:
    if img.mode not in PNG_MODES:
        raise InputError(
            path,
            f"PNG mode {img.mode} ({len(img.getbands())} channel(s)); expected 8- or 16-bit grayscale "
            "(L or I;16): convert to grayscale or split the channels first",
        )
    return PNG_MODES[img.mode]


def open_zarr_array(path: str | os.PathLike[str]) -> zarr.Array:
    """Open a Zarr input read-only: an OME-Zarr group gives its full-resolution array."""
    node = zarr.open(store=os.fspath(path), mode="r")
    if isinstance(node, zarr.Group):
        return omezarr.open_image(path)
    return node


def write_image(path: str | os.PathLike[str], arr: np.ndarray, *, attrs: dict[str, Any] | None = None,
                pyramid: int = 0) -> Path:
    """Write `arr` atomically as TIFF or OME-Zarr, chosen by the extension.

    `arr` is ``(y, x)``, ``(t, y, x)`` or ``(t, c, z, y, x)`` (`omezarr.canonical_shape`). TIFFs are
    ImageJ hyperstacks (axes ``TZCYX``, ImageJ's order) when the dtype allows, so Fiji opens
    them; `attrs` go to the ImageJ ``Info`` field (JSON) or the OME-Zarr ``n2sr`` attributes.
    A Zarr whose plane side exceeds `pyramid` also gets multiscale levels (`n2sr.io.pyramid`).
    """
    path = Path(path)
    arr = np.asarray(arr)
    shape5 = omezarr.canonical_shape(arr.shape)
    kind = kind_of(path)
    if kind == "png":
        raise ValueError(f"{path}: PNG output is not supported; write .tif or .zarr")
    with atomic_path(path) as tmp:
        if kind == "tiff":
            _write_tiff(tmp, arr, attrs or {})
        else:
            omezarr.create_image(tmp, shape5, arr.dtype, attrs=attrs)[...] = arr.reshape(shape5)
            add_levels(tmp, pyramid)
    return path


def _write_tiff(path: Path, arr: np.ndarray, attrs: dict[str, Any]) -> None:
    if arr.dtype in _IMAGEJ_DTYPES:
        tifffile.imwrite(
            path,
            arr.reshape(omezarr.canonical_shape(arr.shape)).transpose(0, 2, 1, 3, 4),
            imagej=True,
            metadata={"axes": "TZCYX", "Info": json.dumps(attrs)},
        )
    else:
        tifffile.imwrite(path, arr, photometric="minisblack", metadata={"n2sr": attrs})


def sha256_file(path: str | os.PathLike[str], *, block_size: int = 1 << 20, stop: threading.Event | None = None) -> str:
    """Hex sha256 of a file, read in blocks so multi-GB stacks need no memory.

    Hashing releases the GIL, so it runs in a thread beside other work (ingest); `stop` set
    by that work's failure ends it early with "" (nobody will read the checksum). One buffer is
    reused, so the memory it takes is `block_size` whatever the file's size."""
    digest = hashlib.sha256()
    buffer = bytearray(block_size)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            if stop is not None and stop.is_set():
                return ""
            digest.update(view[:n])
    return digest.hexdigest()


def export_tiff(zarr_path: str | os.PathLike[str], tiff_path: str | os.PathLike[str]) -> None:
    """Stream an OME-Zarr image into an ImageJ hyperstack TIFF that Fiji opens, plane by plane."""
    arr = omezarr.open_image(zarr_path)
    t, c, z, y, x = arr.shape
    attrs = omezarr.read_attrs(zarr_path)
    planes = (read_zarr(zarr_path, arr, (i, k, j)).astype(np.float32) for i in range(t) for j in range(z) for k in range(c))
    with atomic_path(tiff_path) as tmp:
        with tifffile.TiffWriter(tmp, imagej=True) as tw:
            tw.write(planes, shape=(t, z, c, y, x), dtype=np.float32,
                     metadata={"axes": "TZCYX", "Info": json.dumps(attrs, default=str)})
