"""Support devices drawn into an anatomy: endotracheal tube, central venous catheter, pacemaker.

An endotracheal tube with a radiopaque stripe and its tip 30-50 mm above the carina, a right subclavian or
jugular central venous catheter with its tip at the cavo-atrial junction, or a left pectoral pacemaker with a
lead to the right ventricular apex. Radiopaque wires fill the voxels along their centre line at metal density,
as metal blooms on CT, so the radiograph shows them as thin white lines.
"""

import numpy as np

from medm2g_core.phantoms.chest.grid import (
    AIR_HU,
    LABEL,
    SIDE_SIGN,
    Canvas,
    ellipsoid_distance,
    smooth_path,
    soft,
    tube_weights,
)
from medm2g_core.phantoms.chest.lobes import Anatomy

METAL_HU = 3071.0
PLASTIC_HU = 150.0


def _paint_device_tube(canvas: Canvas, centre: np.ndarray, radius: float, value: float) -> None:
    """A tube, or a radiopaque wire: one thinner than a voxel fills the voxels along its centre line, as metal
    blooms on CT, so that the radiograph shows the line (a partial-volumed wire would fade into soft tissue)."""
    weight, box = tube_weights(canvas.grid, centre, radius, thin_fade=True)
    core = weight >= 0.5
    nearest = np.rint(canvas.grid.index(centre)).astype(int) - [b.start for b in box]
    nearest = nearest[np.all((nearest >= 0) & (nearest < weight.shape), axis=1)]
    core[tuple(nearest.T)] = True
    canvas.paint(np.where(core, np.float32(1.0), weight), value, None, box)
    canvas.labels[box][core] = LABEL["device"]


def endotracheal_tube(anatomy: Anatomy, rng: np.random.Generator) -> None:
    canvas, marks = anatomy.canvas, anatomy.landmarks
    tip = marks.carina + np.array([0.0, 0.0, rng.uniform(30.0, 50.0)])
    top = np.array([marks.trachea[0], marks.trachea[1] + 6.0, canvas.grid.world(np.asarray(canvas.grid.shape))[2] + 20])
    centre = smooth_path(np.array([top, marks.trachea + np.array([0, 0, -10.0]), tip]), canvas.grid.spacing / 2)
    _paint_device_tube(canvas, centre, 4.5, PLASTIC_HU)
    canvas.paint_patch(tube_weights(canvas.grid, centre, 3.3), AIR_HU, "airway")
    _paint_device_tube(canvas, centre + np.array([-3.6, -1.5, 0.0]), 0.8, METAL_HU)


def _venous_path(anatomy: Anatomy, side: str) -> list[np.ndarray]:
    """From a subclavian vein across to the SVC and down to the cavo-atrial junction."""
    marks = anatomy.landmarks
    top_svc = marks.cavo_atrial + np.array([2.0, 0.0, 70.0])
    lateral = marks.subclavian[side] + np.array([SIDE_SIGN[side] * 45.0, 10.0, -8.0])
    return [lateral, marks.subclavian[side], top_svc + np.array([0.0, 0.0, 10.0]), top_svc, marks.cavo_atrial]


def central_line(anatomy: Anatomy, rng: np.random.Generator) -> None:
    marks = anatomy.landmarks
    if rng.random() < 0.5:
        control = _venous_path(anatomy, "right")
    else:
        neck = marks.cavo_atrial + np.array([12.0, 0.0, 130.0])
        control = [neck + np.array([0.0, 0.0, 60.0]), neck, marks.cavo_atrial + np.array([2.0, 0.0, 70.0]),
                   marks.cavo_atrial]
    _paint_device_tube(anatomy.canvas, smooth_path(np.array(control), anatomy.canvas.grid.spacing / 2), 1.1,
                       METAL_HU)


def pacemaker(anatomy: Anatomy) -> None:
    canvas, marks = anatomy.canvas, anatomy.landmarks
    axes = (24.0, 5.0, 20.0)
    box = canvas.grid.box(marks.pocket - np.array(axes) - 4, marks.pocket + np.array(axes) + 4)
    x, y, z = canvas.grid.coords(box)
    distance = ellipsoid_distance(x - marks.pocket[0], y - marks.pocket[1], z - marks.pocket[2], axes)
    canvas.paint(soft(distance, canvas.grid.spacing), METAL_HU, "device", box)
    path = [marks.pocket + np.array([20.0, 0.0, 8.0]), *_venous_path(anatomy, "left")[1:],
            marks.cavo_atrial + np.array([-10.0, 8.0, -20.0]), marks.right_ventricle_apex]
    _paint_device_tube(canvas, smooth_path(np.array(path), canvas.grid.spacing / 2), 1.0, METAL_HU)
