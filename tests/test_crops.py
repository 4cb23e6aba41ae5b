import numpy as np
import pytest
from PIL import Image

from n2sr.errors import InputError
from n2sr.io import images
from n2sr.steps.crops import busiest_window, crops


def test_busiest_window_finds_the_structure():
    ref = np.zeros((256, 256))
    ref[150:200, 20:70] = np.random.default_rng(0).random((50, 50))
    ys, xs = busiest_window(ref, 64)
    assert ys.start <= 150 and ys.stop >= 200 - 32 and xs.start <= 20 + 32 and xs.stop >= 70 - 32
    assert (ys.stop - ys.start, xs.stop - xs.start) == (64, 64)


def test_crops_step_writes_a_figure_of_the_requested_capture(tmp_path):
    rng = np.random.default_rng(1)
    ref = (rng.random((96, 96)) * 200).astype(np.uint8)
    images.write_image(tmp_path / "ref.zarr", ref)
    images.write_image(tmp_path / "noisy.zarr", np.stack([ref, ref // 2, ref // 3]))
    images.write_image(tmp_path / "den.zarr", np.stack([ref, ref]).astype(np.float32), attrs={"captures": [1, 2]})
    crops(tmp_path / "ref.zarr", [tmp_path / "noisy.zarr", tmp_path / "den.zarr"], tmp_path / "c.png",
          capture=2, methods=["noisy", "n2sr"], size=64)
    with Image.open(tmp_path / "c.png") as img:
        assert img.width > 3 * img.height // 2
    with pytest.raises(InputError, match=r"den.zarr: holds captures \[1, 2\], not capture 0"):
        crops(tmp_path / "ref.zarr", [tmp_path / "den.zarr"], tmp_path / "d.png", capture=0)
    assert not (tmp_path / "d.png").exists()
