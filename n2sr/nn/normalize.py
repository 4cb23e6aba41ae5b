"""Intensity normalisation, fitted once on the training data and stored in the checkpoint.

Storing it is what lets inference undo it exactly, whatever data the model later meets.
The authors divide 8-bit validation data by 255 (and forget to scale the training data);
``range`` mode does that division for both, so it reproduces their scale for 8-bit
images, and uses the training data's maximum for other dtypes (e.g. 12-bit in uint16).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Literal

import numpy as np

Mode = Literal["range", "meanstd"]


@dataclass(frozen=True)
class Normalizer:
    """``normalised = (raw - offset) / scale``."""

    offset: float
    scale: float
    mode: str

    @classmethod
    def fit(cls, planes: Iterable[np.ndarray], mode: Mode = "range") -> "Normalizer":
        """Fit on the training planes (streamed: one plane in memory at a time)."""
        count, total, total_sq, peak = 0, 0.0, 0.0, -np.inf
        dtype = None
        for plane in planes:
            p = np.asarray(plane)
            dtype = p.dtype
            values = p.astype(np.float64, copy=False)
            count += values.size
            total += float(values.sum())
            total_sq += float(np.square(values).sum())
            peak = max(peak, float(values.max()))
        if count == 0 or dtype is None:
            raise ValueError("cannot fit a normalisation on no data")
        if mode == "range":
            scale = 255.0 if dtype == np.uint8 else peak
            return cls(offset=0.0, scale=scale if scale > 0 else 1.0, mode=mode)
        if mode == "meanstd":
            mean = total / count
            std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
            return cls(offset=mean, scale=std if std > 0 else 1.0, mode=mode)
        raise ValueError(f"normalization must be 'range' or 'meanstd', not {mode!r}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Raw intensities -> float32 network units."""
        return ((np.asarray(x, dtype=np.float32) - self.offset) / self.scale).astype(np.float32, copy=False)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Network units -> float32 raw intensities."""
        return (np.asarray(x, dtype=np.float32) * self.scale + self.offset).astype(np.float32, copy=False)

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        return cls(offset=float(d["offset"]), scale=float(d["scale"]), mode=str(d["mode"]))
