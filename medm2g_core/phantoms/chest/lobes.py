"""Where findings go: the lung lobes, the landmarks, and the :class:`Anatomy` findings are drawn into.

Lobes (geometric, per lung, from the lung's own extent so that a real base CT gets them too): the major
(oblique) fissure is the plane, constant across x, through (posterior edge of the lung, 30% of the lung height
below the apex) and (anterior edge, 15% of the height above the lowest point); below it is the lower lobe.
Right lung only: the minor (horizontal) fissure is the plane ``z = lowest + 55% height``; above the major
fissure and above it is the right upper lobe, below it the right middle lobe. The left lung above the major
fissure is the left upper lobe (with the lingula). See :class:`Lobes`.

:class:`Landmarks` are the points findings are placed from (hila, carina, cavo-atrial junction, ...), for
reports that say where things are.
"""

from dataclasses import dataclass

import numpy as np

from medm2g_core.errors import InputError
from medm2g_core.phantoms.chest.grid import Canvas, Grid
from medm2g_core.phantoms.findings import LUNG_LOBES, SIDES

LUNG_SPACE = ("lung", "vessel", "nodule", "mass", "consolidation", "atelectasis", "pneumothorax", "effusion")


@dataclass(frozen=True)
class Lobes:
    """Geometric lobes (see the module docstring): fissure planes per lung from the lung's extent."""

    midline_x: float
    major: dict[str, tuple[float, float, float, float]]  # side -> (y_post, z_post, y_ant, z_ant)
    minor_z: float  # right horizontal fissure

    @classmethod
    def from_masks(cls, grid: Grid, sides: dict[str, np.ndarray], midline_x: float) -> "Lobes":
        major, minor_z = {}, 0.0
        for side, mask in sides.items():
            low, high = mask_bounds(grid, mask)
            height = high[2] - low[2]
            major[side] = (low[1], high[2] - 0.3 * height, high[1], low[2] + 0.15 * height)
            if side == "right":
                minor_z = low[2] + 0.55 * height
        return cls(midline_x, major, minor_z)

    def lobe_of(self, points_mm: np.ndarray) -> np.ndarray:
        """Lobe name of each RAS point (..., 3) by side and fissure planes (lung membership not checked)."""
        p = np.asarray(points_mm, float)
        x, y, z = p[..., 0], p[..., 1], p[..., 2]
        index = np.array(self.lobe_index(x, y, z))
        return np.asarray(LUNG_LOBES, dtype=object)[index]

    def lobe_index(self, x, y, z) -> np.ndarray:
        """Index into LUNG_LOBES of (broadcastable) coordinates."""
        right = x > self.midline_x
        below = {side: z < self._major_z(side, y) for side in SIDES}
        right_index = np.where(below["right"], 2, np.where(z > self.minor_z, 0, 1))
        left_index = np.where(below["left"], 4, 3)
        return np.where(right, right_index, left_index).astype(np.uint8)

    def _major_z(self, side: str, y) -> np.ndarray:
        y_post, z_post, y_ant, z_ant = self.major[side]
        return z_post + (z_ant - z_post) * (y - y_post) / max(y_ant - y_post, 1.0)

    def region(self, grid: Grid, lobe: str, space: np.ndarray) -> np.ndarray:
        """Voxels of ``space`` (a boolean volume) that lie in ``lobe``."""
        x, y, z = grid.coords()
        return space & (self.lobe_index(x, y, z) == LUNG_LOBES.index(lobe))


@dataclass(frozen=True)
class Landmarks:
    """Points the findings are placed from (RAS mm)."""

    midline_x: float
    hila: dict[str, np.ndarray]
    trachea: np.ndarray  # a point in the trachea above the carina (x, y) at the top of the grid
    carina: np.ndarray
    cavo_atrial: np.ndarray  # SVC entering the right atrium
    right_ventricle_apex: np.ndarray
    pocket: np.ndarray  # left pectoral pacemaker pocket
    subclavian: dict[str, np.ndarray]  # side -> a point in the subclavian vein below the clavicle


def mask_bounds(grid: Grid, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RAS bounding box (low, high) of a boolean volume."""
    if not mask.any():
        raise InputError("no lung found where one was expected")
    low = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))[0] for a in range(3)]
    high = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))[-1] for a in range(3)]
    return grid.world(low), grid.world(high)


def side_masks(canvas: Canvas, midline_x: float, names: tuple[str, ...] = LUNG_SPACE) -> dict[str, np.ndarray]:
    space = canvas.mask(*names)
    right = (canvas.grid.axis(0) > midline_x)[:, None, None]
    return {"right": space & right, "left": space & ~right}


def side_of(lobe: str) -> str:
    return lobe.split()[0]


@dataclass
class Anatomy:
    """What findings are inserted into: the canvas, its lobes and landmarks."""

    canvas: Canvas
    lobes: Lobes
    landmarks: Landmarks

    def space(self, side: str) -> np.ndarray:
        return side_masks(self.canvas, self.landmarks.midline_x)[side]

    def lobe_region(self, lobe: str, names: tuple[str, ...] = ("lung", "vessel")) -> np.ndarray:
        space = side_masks(self.canvas, self.landmarks.midline_x, names)[side_of(lobe)]
        return self.lobes.region(self.canvas.grid, lobe, space)
