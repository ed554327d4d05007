"""What a real scanner does to an image that the phantom world does not: the perturbations of issue 18.

Each perturbation takes a volume (or a film) and a strength in [0, 1] and returns a volume on the same grid, in
the same units, drawn from its own generator (``seed``): noise, a smooth multiplicative bias field, intensity
scaling, a lower bit depth, in-plane blur, thick slices, lower in-plane resolution, a shifted field of view and a
larger or smaller one.
The robustness benchmark (``benchmarks/robustness.py``) applies them to test inputs at two strengths; training's
domain randomisation (:func:`randomise`, a random scanner: a random subset of the acquisition perturbations at random
strengths) draws from the same functions, so that what is measured is what is trained. The geometric ones (field of
view) are the input standardisation's job (:mod:`medm2g_core.data.framing`), intensity scale the intensity map's.
"""

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from medm2g_core.io.volume import Volume

Perturbation = Callable[[Volume, float, int], Volume]


def _scale(volume: Volume) -> float:
    """The image's intensity scale: the 99th percentile of its foreground's distance from the background."""
    data = volume.data
    low = float(np.percentile(data, 1))
    return float(np.percentile(data - low, 99)) or 1.0


def noise(volume: Volume, strength: float, seed: int) -> Volume:
    """Gaussian noise of ``0.08 * strength`` of the image's intensity scale."""
    rng = np.random.default_rng(seed)
    sigma = 0.08 * strength * _scale(volume)
    return volume.with_data((volume.data + rng.normal(0, sigma, volume.data.shape)).astype(np.float32))


def bias_field(volume: Volume, strength: float, seed: int) -> Volume:
    """A smooth multiplicative field (MRI receive-coil shading): exp of a low-frequency random field spanning
    about +/- ``0.5 * strength`` in log gain across the image."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (4,) * volume.data.ndim)
    field = ndimage.zoom(coarse, [n / 4 for n in volume.data.shape], order=3)
    field = field / (np.abs(field).max() or 1.0)
    low = float(np.percentile(volume.data, 1))
    gained = low + (volume.data - low) * np.exp(0.5 * strength * field)
    return volume.with_data(gained.astype(np.float32))


def intensity_scale(volume: Volume, strength: float, seed: int) -> Volume:
    """Another scanner's units: intensities times ``1 + 3 * strength`` (MRI) or, for CT, a calibration offset of
    ``100 * strength`` HU."""
    del seed  # deterministic
    if volume.modality == "CT":
        return volume.with_data((volume.data + 100.0 * strength).astype(np.float32))
    return volume.with_data((volume.data * (1.0 + 3.0 * strength)).astype(np.float32))


def bit_depth(volume: Volume, strength: float, seed: int) -> Volume:
    """Quantised to ``12 - 8 * strength`` bits over the image's range (8 bits at 0.5, 4 at 1)."""
    del seed
    bits = max(1, round(12 - 8 * strength))
    low, high = float(volume.data.min()), float(volume.data.max())
    steps = 2 ** bits - 1
    levels = np.round((volume.data - low) / ((high - low) or 1.0) * steps)
    return volume.with_data((low + levels / steps * (high - low)).astype(np.float32))


def blur(volume: Volume, strength: float, seed: int) -> Volume:
    """In-plane Gaussian blur of ``2 * strength`` voxels (motion, a soft reconstruction kernel)."""
    del seed
    sigma = [2.0 * strength, 2.0 * strength] + [0.0] * (volume.data.ndim - 2)
    return volume.with_data(ndimage.gaussian_filter(volume.data, sigma).astype(np.float32))


def thick_slices(volume: Volume, strength: float, seed: int) -> Volume:
    """Slices ``1 + 3 * strength`` times thicker (partial volume): each run of that many slices averaged, on the
    original grid. A film has no slices and is returned unchanged."""
    del seed
    factor = max(1, round(1 + 3 * strength))
    if volume.data.ndim < 3 or factor == 1:
        return volume
    averaged = ndimage.uniform_filter1d(volume.data, factor, axis=2, mode="nearest")
    runs = np.arange(volume.data.shape[2]) // factor * factor + factor // 2
    return volume.with_data(averaged[:, :, np.minimum(runs, volume.data.shape[2] - 1)].astype(np.float32))


def low_resolution(volume: Volume, strength: float, seed: int) -> Volume:
    """In-plane resolution ``1 + 2 * strength`` times coarser: averaged down and interpolated back."""
    del seed
    factor = 1.0 + 2.0 * strength
    zoom = [1 / factor, 1 / factor] + [1.0] * (volume.data.ndim - 2)
    small = ndimage.zoom(volume.data, zoom, order=1)
    back = ndimage.zoom(small, [a / b for a, b in zip(volume.data.shape, small.shape, strict=True)], order=1)
    return volume.with_data(back.astype(np.float32))


def shifted_field_of_view(volume: Volume, strength: float, seed: int) -> Volume:
    """The anatomy moved by ``0.15 * strength`` of the field of view in a random in-plane direction (head position);
    what moves in fills with the image's background."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi)
    shift = [0.15 * strength * n * f for n, f in zip(volume.data.shape[:2], (np.cos(angle), np.sin(angle)),
                                                      strict=True)]
    background = float(np.percentile(volume.data, 1))
    moved = ndimage.shift(volume.data, shift + [0.0] * (volume.data.ndim - 2), order=1, cval=background)
    return volume.with_data(moved.astype(np.float32))


def field_of_view(volume: Volume, strength: float, seed: int) -> Volume:
    """Another field of view: the anatomy zoomed in-plane about the image centre by ``1 +/- 0.3 * strength`` (a
    random sign: a tighter field of view, anatomy cut at the edges, or a wider one); what moves in fills with the
    image's background."""
    rng = np.random.default_rng(seed)
    zoom = 1.0 + 0.3 * strength * rng.choice((-1.0, 1.0))
    matrix = np.array([1 / zoom, 1 / zoom] + [1.0] * (volume.data.ndim - 2))
    centre = (np.array(volume.data.shape, float) - 1) / 2
    offset = centre - matrix * centre
    background = float(np.percentile(volume.data, 1))
    zoomed = ndimage.affine_transform(volume.data, matrix, offset, order=1, cval=background)
    return volume.with_data(zoomed.astype(np.float32))


PERTURBATIONS: dict[str, Perturbation] = {
    "noise": noise, "bias field": bias_field, "intensity scale": intensity_scale, "bit depth": bit_depth,
    "blur": blur, "thick slices": thick_slices, "low resolution": low_resolution,
    "shifted field of view": shifted_field_of_view, "field of view size": field_of_view,
}
GEOMETRIC = frozenset({"shifted field of view", "field of view size"})
"""Perturbations that move the anatomy: the right output moves with it, so a benchmark moves the truth too."""
ACQUISITION = ("noise", "bias field", "bit depth", "blur", "thick slices", "low resolution")
"""What a scanner changes in the image that normalisation and framing do not undo: what training randomises."""


def randomise(volume: Volume, seed: int, chance: float = 1 / 3) -> tuple[Volume, list[tuple[str, float]]]:
    """A random scanner's acquisition of ``volume``: each of :data:`ACQUISITION` with probability ``chance`` (at least
    one), at a strength drawn from [0, 1], in that order; deterministic by ``seed``. Returns the volume and the
    (perturbation, strength) pairs applied."""
    rng = np.random.default_rng(seed)
    chosen = rng.random(len(ACQUISITION)) < chance
    if not chosen.any():
        chosen[rng.integers(len(ACQUISITION))] = True
    strengths = rng.uniform(0.0, 1.0, len(ACQUISITION))
    applied = []
    for name, picked, strength in zip(ACQUISITION, chosen, strengths, strict=True):
        if picked:
            volume = PERTURBATIONS[name](volume, float(strength), int(rng.integers(2 ** 31)))
            applied.append((name, float(strength)))
    return volume, applied
