"""Input standardisation of the frame: where the anatomy lies in the slices, and how large it is (issue 18).

The phantom world draws every head centred and at a similar size in its field of view; a scanner does not (head
position, field of view, in-plane matrix). Measured on the default model, an MRI whose head sits 15 % of the field of
view off centre loses 8 dB on MRI -> CT even when the truth is moved with it: the denoisers learned absolute
positions. So a translation moves its inputs into the frame the model was trained on and its outputs back.

A stack's frame is the centroid of the union of its slices' foreground in normalised coordinates ([-1, 1] across the
square slice, x right, y down) and its size, the square root of that union's area as a share of the slice. Foreground
is the slices after a Gaussian blur of ``SMOOTH`` pixels above their Otsu threshold, holes filled, not the slicer's
fixed -0.9: noise lifts an MRI's background in normalised intensities (its robust map starts below zero), and a fixed
threshold calls the whole field of view head. The training frame of each modality (``medm2g train ood`` measures it
on the train split's volumes and keeps it in the model's ``ood_reference`` beside the out-of-distribution statistics;
:func:`medm2g_core.sampling.slices.standardise` reads it) is a range of each. An input whose centroid or size is
outside the range is scaled about its centroid to the nearest size in the range and moved to the nearest centre in
it; one inside is left exactly as it is, so every training input is unchanged by construction, which is what makes
the standardisation the same in training and inference. The outputs go back through the inverse map; what the inverse
map brings in from outside the model's frame is background.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

SMOOTH = 2.0  # pixels: the blur before the threshold


@dataclass(frozen=True)
class Frame:
    """Where the anatomy of a stack of slices lies: centroid (x, y) in [-1, 1] and size (sqrt of area share)."""

    x: float
    y: float
    size: float


@dataclass(frozen=True)
class FrameRange:
    """The frames a model was trained on: [low, high] of x, y and size."""

    x: tuple[float, float]
    y: tuple[float, float]
    size: tuple[float, float]

    def as_list(self) -> list[float]:
        return [float(v) for v in (*self.x, *self.y, *self.size)]

    @classmethod
    def from_list(cls, values: list[float]) -> "FrameRange":
        return cls(tuple(values[0:2]), tuple(values[2:4]), tuple(values[4:6]))


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best splits ``values`` into two classes (Otsu 1979: maximal between-class variance)."""
    counts, edges = np.histogram(values, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    above = below[-1] - below
    mass = np.cumsum(counts * centres)
    mean_below = mass / np.maximum(below, 1)
    mean_above = (mass[-1] - mass) / np.maximum(above, 1)
    return float(centres[np.argmax(below * above * (mean_below - mean_above) ** 2)])


def measure(images: np.ndarray) -> Frame | None:
    """The frame of slices [S, R, R] in [-1, 1]; None when they are one intensity everywhere."""
    smooth = ndimage.gaussian_filter(np.asarray(images, np.float32), (0, SMOOTH, SMOOTH))
    if np.ptp(smooth) < 1e-3:  # one intensity everywhere: nothing to frame
        return None
    mask = ndimage.binary_fill_holes((smooth > otsu(smooth)).any(axis=0))  # [R, R]
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    side = mask.shape[0]
    return Frame(x=float((cols.mean() + 0.5) / side * 2 - 1), y=float((rows.mean() + 0.5) / side * 2 - 1),
                 size=float(np.sqrt(mask.mean())))


def frame_range(frames: list[Frame]) -> FrameRange:
    """The smallest range holding every frame."""
    values = np.array([[f.x, f.y, f.size] for f in frames])
    low, high = values.min(axis=0), values.max(axis=0)
    return FrameRange((low[0], high[0]), (low[1], high[1]), (low[2], high[2]))


@dataclass(frozen=True)
class Reframe:
    """The similarity that takes an input's frame into the training range: scale about ``source`` and move it to
    ``target`` (both (x, y) in [-1, 1])."""

    scale: float = 1.0
    source: tuple[float, float] = (0.0, 0.0)
    target: tuple[float, float] = (0.0, 0.0)

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.source == self.target

    def forward(self, images: np.ndarray) -> np.ndarray:
        """Input slices [S, R, R] -> the same slices in the training frame."""
        s, (cx, cy), (tx, ty) = self.scale, self.source, self.target
        return self._sample(images, [[1 / s, 0, cx - tx / s], [0, 1 / s, cy - ty / s]])

    def inverse(self, images: np.ndarray) -> np.ndarray:
        """Slices [S, R, R] in the training frame -> the input's frame."""
        s, (cx, cy), (tx, ty) = self.scale, self.source, self.target
        return self._sample(images, [[s, 0, tx - s * cx], [0, s, ty - s * cy]])

    def _sample(self, images: np.ndarray, theta: list[list[float]]) -> np.ndarray:
        """Each output pixel at normalised (x, y) reads ``images`` at theta @ (x, y, 1), bilinear; background
        (-1) outside."""
        if self.identity:
            return images
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None] + 1.0  # 0 = background
        grid = F.affine_grid(torch.tensor(theta, dtype=torch.float32).expand(len(batch), 2, 3), list(batch.shape),
                             align_corners=False)
        moved = F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (moved[:, 0] - 1.0).numpy()


def reframe(frame: Frame | None, trained: FrameRange | None) -> Reframe:
    """The map of ``frame`` into ``trained``: the identity when it is inside (or either is unknown)."""
    if frame is None or trained is None:
        return Reframe()
    size = float(np.clip(frame.size, *trained.size))
    target = (float(np.clip(frame.x, *trained.x)), float(np.clip(frame.y, *trained.y)))
    if size == frame.size and target == (frame.x, frame.y):
        return Reframe()
    return Reframe(size / frame.size, (frame.x, frame.y), target)
