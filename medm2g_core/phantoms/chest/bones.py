"""The bones of the chest: thoracic vertebrae, ribs, clavicles and sternum.

Thoracic vertebrae with endplates, pedicles, transverse and spinous processes; twelve pairs of ribs (cortex
and marrow; posterior arcs near horizontal, anterior arcs sloping down toward the sternum); sternum; clavicles.
"""

import numpy as np

from medm2g_core.phantoms.chest.grid import (
    SIDE_SIGN,
    Canvas,
    resample_polyline,
    smooth_path,
    smoothstep,
    soft,
    tube_weights,
)
from medm2g_core.phantoms.chest.thorax import Thorax
from medm2g_core.phantoms.findings import SIDES

MARROW_HU = 260.0
CORTEX_HU = 1100.0
DISC_HU = 90.0
VERTEBRA_CORTEX_HU = 800.0
VERTEBRA_MARROW_HU = 200.0
RIB_END_ANGLE = (2.4, 2.45, 2.45, 2.45, 2.45, 2.4, 2.35, 2.2, 2.05, 1.9, 1.5, 1.2)


def _paint_bone_tube(canvas: Canvas, centre: np.ndarray, radius, label: str, cortex_mm: float = 1.6) -> None:
    """A tubular bone: cortical shell around marrow."""
    radius = np.broadcast_to(np.asarray(radius, float), len(centre))
    canvas.paint_patch(tube_weights(canvas.grid, centre, radius), CORTEX_HU, label)
    canvas.paint_patch(tube_weights(canvas.grid, centre, np.maximum(radius - cortex_mm, 0.3)), MARROW_HU, label)


def paint_spine(canvas: Canvas, thorax: Thorax) -> None:
    grid = canvas.grid
    box = grid.box((-40, thorax.spine_y - 30, -1e3), (40, thorax.spine_y + 30, 1e3))
    x, y, z = grid.coords(box)
    level = np.rint((thorax.t1_z - z) / thorax.level_mm)
    dz = np.abs(z - (thorax.t1_z - level * thorax.level_mm))
    rx, ry = 14.0 + 0.7 * np.clip(level, 0, 14), 11.0 + 0.6 * np.clip(level, 0, 14)
    across = (np.sqrt((x / rx) ** 2 + ((y - thorax.spine_y) / ry) ** 2) - 1.0) * ry
    height = dz - 0.39 * thorax.level_mm
    body = np.maximum(across, height)
    canvas.paint(soft(across, grid.spacing) * (1.0 - soft(height, grid.spacing)), DISC_HU, "body", box)
    canvas.paint(soft(body, grid.spacing), VERTEBRA_CORTEX_HU, "spine", box)
    canvas.paint(soft(body + 1.2, grid.spacing), VERTEBRA_MARROW_HU, "spine", box)
    parts = [part for n in range(int((thorax.t1_z - grid.origin[2]) / thorax.level_mm) + 2)
             for part in _posterior_elements(thorax, n, grid.spacing / 2)]
    _paint_bone_tube(canvas, np.vstack([c for c, _ in parts]),
                     np.concatenate([np.full(len(c), r) for c, r in parts]), "spine", cortex_mm=1.2)


def _posterior_elements(thorax: Thorax, n: int, step: float) -> list[tuple[np.ndarray, float]]:
    """Pedicles, laminae, transverse and spinous processes of vertebra ``n`` (0 = T1) as tubes."""
    z = thorax.vertebra_z(n)
    ry = 11.0 + 0.6 * min(n, 14)
    back = thorax.spine_y - ry
    spinous_tip = np.array([0.0, back - 42.0, z - 0.9 * thorax.level_mm])
    parts = [(np.array([[0.0, back - 20.0, z], spinous_tip]), 3.0)]
    for sign in (1.0, -1.0):
        pedicle = np.array([[sign * 9.0, back + 4.0, z + 2], [sign * 10.0, back - 9.0, z + 2]])
        lamina = np.array([pedicle[1], [sign * 4.0, back - 19.0, z]])
        transverse = np.array([pedicle[1], [sign * 30.0, back - 12.0, z + 3]])
        parts += [(pedicle, 4.0), (lamina, 2.5), (transverse, 3.5)]
    return [(resample_polyline(path, step), radius) for path, radius in parts]


def rib_centre_line(thorax: Thorax, n: int, side: str, step: float) -> np.ndarray:
    """Centre line of rib ``n + 1`` on one side: from the spine around the cage, falling anteriorly."""
    sign = SIDE_SIGN[side]
    head_z = thorax.vertebra_z(n)
    end = RIB_END_ANGLE[n]
    drop = 35.0 + 6.0 * n if n < 10 else 12.0
    phi = np.linspace(0.3, end, 400)
    lateral_fall = (2.0 + 2.2 * n) * np.clip((phi - 0.3) / 1.3, 0.0, 1.5)  # lower ribs slope down more
    anterior_fall = drop * smoothstep((phi - 1.3) / max(end - 1.3, 0.2))
    z = head_z + 8.0 * np.sin(np.pi * np.clip(phi / 2.0, 0, 1)) - lateral_fall - anterior_fall
    radius_out = 6.0
    a = thorax.cage_half_width_at(z) + radius_out
    b = thorax.cavity_half_depth + radius_out
    arc = np.column_stack([sign * a * np.sin(phi), thorax.cavity_centre_y - b * np.cos(phi), z])
    head = np.array([sign * 16.0, thorax.spine_y - 4.0, head_z])
    return resample_polyline(np.vstack([head, arc]), step)


def paint_ribs(canvas: Canvas, thorax: Thorax) -> None:
    lines = [(rib_centre_line(thorax, n, side, canvas.grid.spacing / 2), 3.8 if n == 0 or n >= 10 else 4.5)
             for n in range(12) for side in SIDES]
    _paint_bone_tube(canvas, np.vstack([c for c, _ in lines]),
                     np.concatenate([np.full(len(c), r) for c, r in lines]), "rib")


def clavicle_centre_line(thorax: Thorax, side: str, step: float) -> np.ndarray:
    sign = SIDE_SIGN[side]
    half = thorax.body_width / 2
    front = thorax.cavity_centre_y + thorax.cavity_half_depth
    control = np.array([
        [sign * 22.0, front + 12.0, thorax.t1_z - 48.0], [sign * 0.32 * half, front + 10.0, thorax.t1_z - 40.0],
        [sign * 0.6 * half, front - 4.0, thorax.t1_z - 36.0], [sign * 0.84 * half, thorax.cavity_centre_y - 10.0,
                                                                 thorax.t1_z - 30.0],
    ])
    return smooth_path(control, step)


def paint_clavicles_and_sternum(canvas: Canvas, thorax: Thorax) -> None:
    for side in SIDES:
        centre = clavicle_centre_line(thorax, side, canvas.grid.spacing / 2)
        _paint_bone_tube(canvas, centre, np.linspace(8.0, 6.5, len(centre)), "clavicle", cortex_mm=2.0)
    grid = canvas.grid
    front = thorax.cavity_centre_y + thorax.cavity_half_depth
    top, bottom = thorax.t1_z - 22.0, thorax.t1_z - 200.0
    box = grid.box((-30, front - 2, bottom - 5), (30, front + 16, top + 5))
    x, y, z = grid.coords(box)
    half_width = 14.0 + 10.0 * smoothstep((z - (top - 50.0)) / 50.0)
    distance = np.maximum(np.maximum(np.abs(x) - half_width, np.abs(y - front - 7.0) - 6.0),
                          np.maximum(z - top, bottom - z))
    canvas.paint(soft(distance, grid.spacing), 450.0, "bone", box)
