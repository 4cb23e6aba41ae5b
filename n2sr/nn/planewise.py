"""`denoise_array` for the engine wrappers (`n2sr.nn.decorrelate.Decorrelated`,
`n2sr.nn.whiten.Whitened`) from their `denoise_window`, so both run a whole array alike."""

from __future__ import annotations

import abc

import numpy as np

from n2sr.nn.inference import Window


class PlaneWise(abc.ABC):
    """`denoise_array` for an engine wrapper (PD sub-images, whitening) from its `denoise_window`:
    every plane of ``(..., Y, X)`` as one window, one at a time; float32, no 2x output."""

    @abc.abstractmethod
    def denoise_window(self, planes: np.ndarray, window: Window, return_sr: bool = False,
                       dtype: np.dtype | None = None) -> tuple[np.ndarray, None]:
        """The denoised `window` of `planes` (a block with its context)."""

    def denoise_array(self, arr: np.ndarray, return_sr: bool = False, progress: bool = True
                      ) -> tuple[np.ndarray, None]:
        arr = np.asarray(arr)
        flat = arr.reshape(-1, *arr.shape[-2:])
        window = ((0, 0), (0, 0, *arr.shape[-2:]), arr.shape[-2:])
        out = np.stack([self.denoise_window(p[None], window, return_sr)[0][0] for p in flat])
        return out.reshape(arr.shape), None
