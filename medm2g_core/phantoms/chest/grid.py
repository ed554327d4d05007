"""The voxel grid, the label names and the canvas the chest is painted on, with soft shapes and tubes.

Grid and orientation: ``data[i, j, k]`` with ``i`` toward the patient's right (RAS +x), ``j`` anterior (+y),
``k`` superior (+z), isotropic ``spacing_mm``; the world origin is the centre of the field of view
(``FIELD_OF_VIEW_MM``). The orientation code is ``RAS``; axial slices lie along ``k``.

Shapes are painted with partial-volume weights (:func:`soft` of a signed distance, :func:`tube_weights` for
tubes swept along centre lines) into a :class:`Canvas` of HU and labels (names in ``LABELS``).
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LABELS = (
    "background", "body", "fat", "muscle", "lung", "vessel", "heart", "aorta", "spine", "rib", "clavicle",
    "effusion", "nodule", "mass", "consolidation", "pneumothorax", "atelectasis", "device", "airway", "bone",
    "great_vessel",
)
LABEL = {name: index for index, name in enumerate(LABELS)}

FIELD_OF_VIEW_MM = (440.0, 300.0, 330.0)
LINEAR_NOISE_STD = 0.55  # standard deviation of trilinearly interpolated unit white noise
AIR_HU = -1000.0
SIDE_SIGN = {"right": 1.0, "left": -1.0}  # RAS +x is the patient's right


@dataclass(frozen=True)
class Grid:
    """An isotropic RAS-aligned voxel grid: voxel (0, 0, 0) at ``origin`` (mm)."""

    shape: tuple[int, int, int]
    spacing: float
    origin: np.ndarray

    @classmethod
    def centred(cls, spacing_mm: float, fov_mm: tuple[float, float, float] = FIELD_OF_VIEW_MM) -> "Grid":
        shape = tuple(max(8, round(f / spacing_mm)) for f in fov_mm)
        return cls(shape, float(spacing_mm), -(np.asarray(shape) - 1) / 2.0 * spacing_mm)  # type: ignore[arg-type]

    def affine(self) -> np.ndarray:
        affine = np.diag([self.spacing] * 3 + [1.0])
        affine[:3, 3] = self.origin
        return affine

    def axis(self, a: int, part: slice = slice(None)) -> np.ndarray:
        return (self.origin[a] + self.spacing * np.arange(self.shape[a])[part]).astype(np.float32)

    def coords(self, box: tuple[slice, slice, slice] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable RAS coordinates (x[:, None, None], y[None, :, None], z[None, None, :]) of a box."""
        box = box or (slice(None),) * 3
        x, y, z = (self.axis(a, box[a]) for a in range(3))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def box(self, low_mm, high_mm) -> tuple[slice, slice, slice]:
        """Index slices covering the RAS box [low, high] (clipped to the grid)."""
        low = np.floor((np.asarray(low_mm) - self.origin) / self.spacing).astype(int)
        high = np.ceil((np.asarray(high_mm) - self.origin) / self.spacing).astype(int) + 1
        return tuple(slice(max(0, lo), max(0, min(n, hi))) for lo, hi, n in zip(low, high, self.shape, strict=True))

    def index(self, points_mm: np.ndarray) -> np.ndarray:
        return (np.asarray(points_mm, dtype=np.float64) - self.origin) / self.spacing

    def world(self, indices: np.ndarray) -> np.ndarray:
        return self.origin + self.spacing * np.asarray(indices, dtype=np.float64)


def soft(signed_distance_mm: np.ndarray, spacing: float) -> np.ndarray:
    """Partial-volume weight of a shape from an (approximate) signed distance, negative inside."""
    return np.clip(0.5 - signed_distance_mm / np.float32(spacing), 0.0, 1.0).astype(np.float32)


def ellipsoid_distance(dx, dy, dz, axes) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid with semi-axes ``axes`` centred at 0."""
    rho = np.sqrt((dx / axes[0]) ** 2 + (dy / axes[1]) ** 2 + (dz / axes[2]) ** 2)
    return (rho - 1.0) * np.float32(min(axes))


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def smooth_path(control_mm: np.ndarray, step_mm: float) -> np.ndarray:
    """A smooth curve through the ends of a control polygon (Chaikin corner cutting), resampled every ``step_mm``."""
    points = np.asarray(control_mm, dtype=np.float64)
    for _ in range(4):
        if len(points) < 3:
            break
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.vstack([points[:1], np.column_stack([q, r]).reshape(-1, 3), points[-1:]])
    return resample_polyline(points, step_mm)


def resample_polyline(points: np.ndarray, step_mm: float) -> np.ndarray:
    lengths = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    samples = np.linspace(0.0, lengths[-1], max(2, int(np.ceil(lengths[-1] / step_mm)) + 1))
    return np.column_stack([np.interp(samples, lengths, points[:, a]) for a in range(3)])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


@dataclass
class Canvas:
    """HU and label volumes being painted, on one grid."""

    grid: Grid
    hu: np.ndarray
    labels: np.ndarray

    @classmethod
    def empty(cls, grid: Grid) -> "Canvas":
        return cls(grid, np.full(grid.shape, AIR_HU, np.float32), np.zeros(grid.shape, np.uint8))

    def paint(self, weight: np.ndarray, value, label: str | None, box=None, where: np.ndarray | None = None) -> None:
        """Blend ``value`` in with ``weight`` (partial volume); label the voxels where the weight exceeds 0.5."""
        box = box or (slice(None),) * 3
        if where is not None:
            weight = weight * where
        hu = self.hu[box]
        hu += weight * (np.asarray(value, dtype=np.float32) - hu)
        if label is not None:
            self.labels[box][weight > 0.5] = LABEL[label]

    def paint_patch(self, patch: tuple[np.ndarray, tuple[slice, slice, slice]], value, label: str | None) -> None:
        """:meth:`paint` a (weight, box) pair such as :func:`tube_weights` returns."""
        weight, box = patch
        self.paint(weight, value, label, box)

    def mask(self, *names: str) -> np.ndarray:
        return np.isin(self.labels, [LABEL[n] for n in names])


def _ball_offsets(reach: int) -> np.ndarray:
    r = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    return offsets[(offsets**2).sum(axis=1) <= (reach + 0.5) ** 2]


def _thin_strength(radii_mm: np.ndarray, spacing: float) -> np.ndarray:
    """Scale of a tube's weight profile so that its cross-sectional sum is the tube's area (pi r^2 / s^2).

    The profile ``clip((r - d)/s + 0.5, 0, 1)`` is a plateau of radius ``p = r - s/2`` (if positive) with a
    linear rim out to ``a = r + s/2``; its integral over the cross-section is computed in closed form.
    """
    r = np.asarray(radii_mm, float)
    plateau, outer = np.maximum(r - spacing / 2, 0.0), r + spacing / 2
    rim = outer**3 / 6 - outer * plateau**2 / 2 + plateau**3 / 3
    profile = np.pi * plateau**2 + 2 * np.pi / spacing * rim
    return np.minimum(1.0, np.pi * r**2 / profile)


def tube_weights(
    grid: Grid, points_mm: np.ndarray, radii_mm, thin_fade: bool = False,
) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    """Partial-volume weight (max over samples) of spheres swept along sampled centre lines, and its box.

    The weight array covers only the returned box of the grid. With ``thin_fade`` the weights across a tube
    add up to its cross-section in voxels, so a sub-voxel vessel or wire blends toward the background (keeping
    its line integral on a radiograph) instead of vanishing or looking voxel-thick.
    """
    points_mm = np.asarray(points_mm, np.float64).reshape(-1, 3)
    radii_mm = np.broadcast_to(np.asarray(radii_mm, np.float64), len(points_mm))
    index = grid.index(points_mm)
    base = np.rint(index).astype(np.int64)
    frac = (index - base).astype(np.float32)
    reach = np.ceil(radii_mm / grid.spacing + 0.5).astype(int)
    shape = np.asarray(grid.shape)
    low = np.clip((base - reach[:, None]).min(axis=0, initial=shape.max()), 0, shape)
    high = np.clip((base + reach[:, None]).max(axis=0, initial=-1) + 1, low, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
    weights = np.zeros(tuple(high - low), np.float32)
    strength = _thin_strength(radii_mm, grid.spacing) if thin_fade else np.ones(len(points_mm))
    for k in np.unique(reach):
        sel = reach == k
        offsets = _ball_offsets(int(k))
        distance = np.sqrt(((offsets[None] - frac[sel][:, None]) ** 2).sum(axis=-1)) * np.float32(grid.spacing)
        w = np.clip((radii_mm[sel][:, None] - distance) / grid.spacing + 0.5, 0.0, 1.0) * strength[sel][:, None]
        voxels = base[sel][:, None, :] + offsets[None] - low
        ok = (w > 0) & np.all((voxels >= 0) & (voxels < high - low), axis=-1)
        flat = np.ravel_multi_index(tuple(voxels[ok].T), weights.shape)
        np.maximum.at(weights.reshape(-1), flat, w[ok].astype(np.float32))
    return weights, box  # type: ignore[return-value]


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, cell: int, amplitude: float) -> np.ndarray:
    """Band-limited noise (features about ``cell`` voxels wide) with a standard deviation about ``amplitude``."""
    coarse = rng.standard_normal(tuple(n // cell + 2 for n in shape)).astype(np.float32)
    fine = ndimage.zoom(coarse, cell, order=1, prefilter=False)[tuple(slice(0, n) for n in shape)]
    return fine * np.float32(amplitude / LINEAR_NOISE_STD)


def box_of(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice, slice]:
    box = []
    for a in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))
        box.append(slice(max(0, hit[0] - margin), min(mask.shape[a], hit[-1] + margin + 1)))
    return tuple(box)  # type: ignore[return-value]
