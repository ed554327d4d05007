"""Per-modality intensity normalisation to [-1, 1] and its exact inverse.

CT: HU clipped to a fixed window (the recipe's), MRI: robust percentiles of the volume's foreground,
X-ray: its own range (a DRR is already [0, 1]). All three are one clipped linear map, kept with the data so
model outputs go back to HU or the source's scale.
"""

from dataclasses import dataclass

import numpy as np

from medm2g_core.errors import InputError

DEFAULT_CT_CLIP_HU = (-1024.0, 2048.0)
DEFAULT_MRI_PERCENTILES = (0.5, 99.5)


@dataclass(frozen=True)
class IntensityMap:
    """``y = 2 * (clip(x, low, high) - low) / (high - low) - 1``; values outside [low, high] are clipped."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise InputError(f"intensity range is empty ({self.low} .. {self.high}): is the image constant?")

    def forward(self, x: np.ndarray) -> np.ndarray:
        scaled = (np.clip(x, self.low, self.high) - self.low) / (self.high - self.low)
        return (2.0 * scaled - 1.0).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return ((np.clip(y, -1.0, 1.0) + 1.0) / 2.0 * (self.high - self.low) + self.low).astype(np.float32)


def intensity_map(
    data: np.ndarray, modality: str, ct_clip_hu: tuple[float, float] = DEFAULT_CT_CLIP_HU,
    mri_percentiles: tuple[float, float] = DEFAULT_MRI_PERCENTILES,
) -> IntensityMap:
    """The map for one image of ``modality`` (CT, MR, XRAY)."""
    if modality == "CT":
        return IntensityMap(*ct_clip_hu)
    if modality == "MR":
        foreground = data[data > data.min()]
        values = foreground if foreground.size else data
        low, high = np.percentile(values, mri_percentiles)
        return IntensityMap(float(min(low, 0.0)), float(high))
    if modality == "XRAY":
        return IntensityMap(float(data.min()), float(data.max()))
    raise InputError(f"no intensity normalisation for modality {modality!r}")
