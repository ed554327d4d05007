"""The synthetic chest anatomy, painted on a centred grid from the per-seed dimensions (:func:`synthetic_anatomy`).

Anatomy (all sizes vary per seed): an elliptic body (width 300-380 mm, depth 200-260 mm, shoulders at the top)
with subcutaneous fat over a muscle wall; a thoracic cavity per slice (an ellipse narrowing toward the
thoracic inlet); two lungs = cavity, lateral of a thin mediastinal septum, above the diaphragm domes (right
dome higher, both descending steeply to sharp lateral costophrenic angles and deep posterior recesses) and
below apical caps under the clavicles, carved by the heart, great vessels, airway and spine; a heart ellipsoid
left of midline sized so that its frontal width over the inner thoracic width on the radiograph is the
requested cardiothoracic ratio; ascending aorta, arch (aortic knob) and descending aorta; SVC; pulmonary
trunk and arteries to the hila; trachea and main bronchi; random-walk branching vessel trees from the hila
(:mod:`~medm2g_core.phantoms.chest.vessels`); thoracic vertebrae, twelve pairs of ribs, sternum and clavicles
(:mod:`~medm2g_core.phantoms.chest.bones`); liver and a gastric air bubble under the left dome.
"""

import numpy as np

from medm2g_core.phantoms.chest.bones import paint_clavicles_and_sternum, paint_ribs, paint_spine
from medm2g_core.phantoms.chest.grid import (
    AIR_HU,
    SIDE_SIGN,
    Canvas,
    Grid,
    ellipsoid_distance,
    smooth_noise,
    smooth_path,
    soft,
    tube_weights,
)
from medm2g_core.phantoms.chest.lobes import Landmarks, Lobes, side_masks
from medm2g_core.phantoms.chest.thorax import Heart, Thorax, hila_of, mediastinal_paths
from medm2g_core.phantoms.chest.vessels import BLOOD_HU, paint_hilar_arteries, paint_vessels
from medm2g_core.phantoms.drr import PAGeometry
from medm2g_core.phantoms.findings import SIDES

FAT_HU = -100.0
MUSCLE_HU = 50.0
MEDIASTINUM_HU = 10.0
LIVER_HU = 60.0
LUNG_HU = -860.0
LUNG_DEPENDENT_HU = 60.0  # extra density of the posterior (dependent) lung
HEART_HU = 42.0


def synthetic_anatomy(
    spacing: float, ratio: float, rng: np.random.Generator, pixels: int,
) -> tuple[Canvas, Lobes, Landmarks]:
    """The painted synthetic chest on a centred grid, its lobes and its landmarks."""
    grid = Grid.centred(spacing)
    canvas = Canvas.empty(grid)
    thorax = Thorax.sample(rng)
    geometry = PAGeometry(grid.origin, np.full(3, spacing), grid.shape, pixels)
    heart = Heart.for_ratio(thorax, ratio, geometry)
    _paint_body(canvas, thorax)
    _paint_cavity(canvas, thorax)
    carve = _paint_mediastinum(canvas, thorax, heart)
    lung_weight = _paint_lungs(canvas, thorax, carve, rng)
    paint_vessels(canvas, thorax, lung_weight, rng)
    paint_hilar_arteries(canvas, thorax, heart)
    paint_spine(canvas, thorax)
    paint_ribs(canvas, thorax)
    paint_clavicles_and_sternum(canvas, thorax)
    return canvas, Lobes.from_masks(grid, side_masks(canvas, 0.0), 0.0), _synthetic_landmarks(thorax, heart)


def _synthetic_landmarks(thorax: Thorax, heart: Heart) -> Landmarks:
    paths = mediastinal_paths(thorax, heart)
    svc = paths["svc"][0]
    half = thorax.body_width / 2
    front = thorax.cavity_centre_y + thorax.cavity_half_depth
    pocket_x = -0.5 * half
    u2 = (pocket_x / half) ** 2
    surface = thorax.body_depth / 2 * np.sqrt((1.0 - u2) / (1.0 - 0.3 * u2))  # the body's squared ellipse
    return Landmarks(
        midline_x=0.0, hila=hila_of(thorax), trachea=paths["trachea"][0][0], carina=paths["trachea"][0][-1],
        cavo_atrial=svc[-1], right_ventricle_apex=heart.point(0.6) + np.array([10.0, 8.0, 0.0]),
        pocket=np.array([pocket_x, surface - 0.5 * thorax.fat - 6.0, thorax.t1_z - 48.0]),
        subclavian={side: np.array([SIDE_SIGN[side] * 0.4 * half, front - 6.0, thorax.t1_z - 26.0]) for side in SIDES},
    )


def _paint_body(canvas: Canvas, thorax: Thorax) -> None:
    grid = canvas.grid
    x, y, z = grid.coords()
    half_w = thorax.body_half_width_at(z)
    half_d = np.float32(thorax.body_depth / 2)
    squareness = np.float32(-0.3)
    for inset, value, label in ((0.0, FAT_HU, "fat"), (thorax.fat, MUSCLE_HU, "muscle")):
        u2 = (x / (half_w - inset)) ** 2
        v2 = (y / (half_d - inset)) ** 2
        rho = np.sqrt(u2 + v2 + squareness * u2 * v2)
        canvas.paint(soft((rho - 1.0) * (half_d - inset), grid.spacing), value, label)


def _paint_cavity(canvas: Canvas, thorax: Thorax) -> None:
    """Mediastinum above the domes, abdomen (liver density) below them, and the gastric air bubble."""
    grid = canvas.grid
    x, y, z = grid.coords()
    a = thorax.cage_half_width_at(z)
    rho = np.sqrt((x / a) ** 2 + ((y - thorax.cavity_centre_y) / thorax.cavity_half_depth) ** 2)
    cavity = soft((rho - 1.0) * np.minimum(a, thorax.cavity_half_depth), grid.spacing)
    dome = np.where(x >= 0, thorax.dome_z("right", x, y), thorax.dome_z("left", x, y))
    below = soft(z - dome, grid.spacing)
    canvas.paint(cavity, MEDIASTINUM_HU, "body")
    canvas.paint(cavity * below, LIVER_HU, "body")
    _paint_stomach_bubble(canvas, thorax)


def _paint_stomach_bubble(canvas: Canvas, thorax: Thorax) -> None:
    centre = np.array([-0.55 * thorax.cage_half_width, thorax.cavity_centre_y + 10.0,
                       thorax.dome_top["left"] - 30.0])
    axes = (32.0, 28.0, 16.0)
    box = canvas.grid.box(centre - np.array(axes) - 5, centre + np.array(axes) + 5)
    x, y, z = canvas.grid.coords(box)
    gas = soft(ellipsoid_distance(x - centre[0], y - centre[1], z - centre[2], axes), canvas.grid.spacing)
    canvas.paint(gas * soft(centre[2] - 4.0 - z, canvas.grid.spacing), AIR_HU, "body", box)


def _paint_mediastinum(canvas: Canvas, thorax: Thorax, heart: Heart) -> np.ndarray:
    """Heart, great vessels and airway; returns the weight of what the lungs must not enter."""
    grid = canvas.grid
    low, high = heart.bounds(margin=6.0)
    box = grid.box(low, high)
    x, y, z = grid.coords(box)
    distance = heart.distance(x, y, z)
    carve = np.zeros(grid.shape, np.float32)
    carve[box] = soft(distance - 3.0, grid.spacing)
    canvas.paint(soft(distance, grid.spacing), HEART_HU, "heart", box)
    paths = mediastinal_paths(thorax, heart)
    for name in ("aorta", "svc", "pulmonary trunk", "brachiocephalic trunk", "left carotid", "left subclavian"):
        control, radius = paths[name]
        centre = smooth_path(control, grid.spacing / 2)
        canvas.paint_patch(tube_weights(grid, centre, radius), BLOOD_HU, "aorta" if name == "aorta" else "great_vessel")
        _add_carve(carve, *tube_weights(grid, centre, radius + 4.0))
    for name in ("trachea", "right bronchus", "left bronchus"):
        control, radius = paths[name]
        centre = smooth_path(control, grid.spacing / 2)
        wall, box = tube_weights(grid, centre, radius + 1.5)
        _add_carve(carve, wall, box)
        canvas.paint(wall, MUSCLE_HU, "body", box)
        canvas.paint_patch(tube_weights(grid, centre, radius), AIR_HU, "airway")
    return carve


def _add_carve(carve: np.ndarray, weight: np.ndarray, box: tuple[slice, slice, slice]) -> None:
    np.maximum(carve[box], weight, out=carve[box])


def _paint_lungs(canvas: Canvas, thorax: Thorax, carve: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Both lungs with a dependent density gradient and fine texture; returns the lung weight."""
    grid = canvas.grid
    weight = np.zeros(grid.shape, np.float32)
    middle = grid.shape[0] // 2
    for side, part in (("right", slice(middle, None)), ("left", slice(0, middle))):
        box = (part, slice(None), slice(None))
        x, y, z = grid.coords(box)
        weight[box] = soft(thorax.lung_distance(side, x, y, z), grid.spacing)
    weight *= 1.0 - carve
    _, y, _ = grid.coords()
    dependent = np.clip((thorax.cavity_centre_y - y) / (2 * thorax.cavity_half_depth) + 0.5, 0.0, 1.0)
    texture = LUNG_HU + LUNG_DEPENDENT_HU * dependent + smooth_noise(grid.shape, rng, 8, 12.0)
    canvas.paint(weight, texture, "lung")
    return weight
