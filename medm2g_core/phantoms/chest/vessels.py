"""Pulmonary vessels: random-walk branching trees from the hila, and the hilar pulmonary arteries.

The trees taper outward and blend by partial volume, from about -600 HU for sub-voxel vessels to +40 HU;
:func:`grow_tree` also grows the air bronchograms of a consolidation.
"""

import numpy as np

from medm2g_core.phantoms.chest.grid import SIDE_SIGN, Canvas, smooth_path, tube_weights, unit
from medm2g_core.phantoms.chest.thorax import Heart, Thorax, hila_of, mediastinal_paths

VESSEL_HU = 40.0
BLOOD_HU = 45.0

TRUNKS = (  # (lateral, anterior, superior) direction, starting radius mm
    ((0.3, -0.1, 1.0), 4.2), ((0.8, 0.1, 0.6), 4.2), ((1.0, 0.1, 0.0), 4.5), ((0.6, 0.7, -0.3), 4.8),
    ((0.7, 0.0, -0.7), 5.6), ((0.3, -0.3, -1.0), 6.0), ((0.3, -0.8, -0.6), 5.6), ((0.4, -0.9, 0.3), 4.8),
    ((0.4, 0.8, 0.3), 4.3), ((0.5, 0.5, 0.8), 4.0), ((0.9, -0.4, -0.2), 5.0),
)
TREE_STEP_MM = 3.0
TREE_TAPER = 0.99
TREE_BRANCH_PROBABILITY = 0.16
TREE_MIN_RADIUS_MM = 0.45
TREE_MAX_STEPS = 90


def _rotate_away(directions: np.ndarray, angle: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Directions turned by ``angle`` (radians) about random perpendicular axes."""
    axis = unit(np.cross(directions, rng.standard_normal(directions.shape)))
    side = np.cross(axis, directions)
    return unit(directions * np.cos(angle)[:, None] + side * np.sin(angle)[:, None])


def grow_tree(
    inside, start: np.ndarray, directions: np.ndarray, radii: np.ndarray, rng: np.random.Generator,
    sample_mm: float, min_radius_mm: float = TREE_MIN_RADIUS_MM,
) -> tuple[np.ndarray, np.ndarray]:
    """A random-walk branching tree of tubes from ``start``: centre-line samples (N, 3) and radii (N,).

    ``inside(points) -> bool array`` says where tips may go; a tip stops outside or below ``min_radius_mm``.
    Each step turns the tip a little at random and outward from the start, tapers it, and sometimes splits it
    into two thinner children. Samples are ``sample_mm`` apart along each branch.
    """
    direction = unit(np.asarray(directions, float) + 0.25 * rng.standard_normal(np.shape(directions)))
    position = start[None] + 6.0 * direction
    radius = np.asarray(radii, float).copy()
    n_sub = max(1, int(np.ceil(TREE_STEP_MM / sample_mm)))
    points, sizes = [], []
    for _ in range(TREE_MAX_STEPS):
        alive = inside(position) & (radius > min_radius_mm)
        position, direction, radius = position[alive], direction[alive], radius[alive]
        if not len(position):
            break
        outward = unit(position - start)
        direction = unit(direction + 0.22 * rng.standard_normal(direction.shape) + 0.12 * outward)
        for t in np.arange(n_sub) / n_sub:
            points.append(position + t * TREE_STEP_MM * direction)
            sizes.append(radius)
        split = rng.random(len(position)) < TREE_BRANCH_PROBABILITY
        angle = rng.uniform(0.35, 0.6, int(split.sum()))
        children = _rotate_away(direction[split], angle, rng)
        direction[split] = _rotate_away(direction[split], -0.6 * angle, rng)
        radius[split] *= 0.82
        position = np.vstack([position, position[split]])
        direction = np.vstack([direction, children])
        radius = np.concatenate([radius, radius[split] * 0.85])
        position = position + TREE_STEP_MM * direction
        radius = radius * TREE_TAPER
    if not points:
        return np.zeros((0, 3)), np.zeros(0)
    return np.vstack(points), np.concatenate(sizes)


def paint_vessels(canvas: Canvas, thorax: Thorax, lung_weight: np.ndarray, rng: np.random.Generator) -> None:
    """Vessel trees from both hila, drawn only where there is lung."""
    points, radii = [], []
    for side, hilum in hila_of(thorax).items():
        sign = SIDE_SIGN[side]
        directions = np.array([[sign * d[0], d[1], d[2]] for d, _ in TRUNKS])
        start_radii = np.array([r for _, r in TRUNKS]) * rng.uniform(0.85, 1.15, len(TRUNKS))

        def inside(p, side=side):
            return thorax.lung_distance(side, *p.T) < -2.0

        p, r = grow_tree(inside, hilum, directions, start_radii, rng, canvas.grid.spacing / 2)
        points.append(p)
        radii.append(r)
    weight, box = tube_weights(canvas.grid, np.vstack(points), np.concatenate(radii), thin_fade=True)
    canvas.paint(weight * lung_weight[box], VESSEL_HU, "vessel", box)


def paint_hilar_arteries(canvas: Canvas, thorax: Thorax, heart: Heart) -> None:
    paths = mediastinal_paths(thorax, heart)
    for name in ("right pulmonary artery", "left pulmonary artery"):
        control, radius = paths[name]
        centre = smooth_path(control, canvas.grid.spacing / 2)
        canvas.paint_patch(tube_weights(canvas.grid, centre, np.linspace(radius, 0.7 * radius, len(centre))),
                           BLOOD_HU, "great_vessel")
