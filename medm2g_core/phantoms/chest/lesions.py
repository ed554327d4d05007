"""The lung and pleural findings (:class:`~medm2g_core.phantoms.findings.ChestFindings`) drawn into an anatomy.

Pleural effusion (15 HU fluid filling the hemithorax from its lowest point up to the height fraction, with a
meniscus rising along the chest wall, which blunts the costophrenic angle); nodules (40 HU spheres of the
given diameter placed inside the named lobe); a mass (lobulated, spiculated); consolidation (the lobe at
-100..+30 HU with air bronchograms); pneumothorax (the lung shrunk toward its hilum so that a rim of the given
fraction of the hemithorax width is air at -1000 HU with no vessels, edged by the visceral pleural line);
atelectasis (a dense band across the lobe and volume-loss crowding of the rest of it). Cardiomegaly is not
here: it is the heart size of the anatomy.
"""

import numpy as np
from scipy import ndimage

from medm2g_core.errors import InputError
from medm2g_core.phantoms.chest.grid import AIR_HU, LABEL, SIDE_SIGN, box_of, smooth_noise, soft, tube_weights, unit
from medm2g_core.phantoms.chest.lobes import Anatomy, mask_bounds, side_of
from medm2g_core.phantoms.chest.vessels import grow_tree
from medm2g_core.phantoms.findings import LUNG_LOBES, Lesion

FLUID_HU = 15.0
NODULE_HU = 40.0
MASS_HU = 45.0
PARENCHYMA = ("lung", "vessel", "nodule", "mass", "consolidation", "atelectasis")
DIRECTIONS = unit(np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                             if (a, b, c) != (0, 0, 0)], dtype=float))


def consolidate(anatomy: Anatomy, lobe: str, rng: np.random.Generator) -> None:
    """The lobe's air spaces filled (-100..+30 HU) except for bronchi, which stay air (air bronchograms)."""
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    region = anatomy.lobe_region(lobe)
    if not region.any():
        return
    box = box_of(region)
    texture = np.clip(-35.0 + smooth_noise(canvas.hu[box].shape, rng, 4, 30.0), -100.0, 30.0)
    canvas.paint(region[box].astype(np.float32), texture, "consolidation", box)
    hilum = anatomy.landmarks.hila[side_of(lobe)]
    candidates = np.argwhere(region)
    root = grid.world(candidates[np.argmin(np.linalg.norm(grid.world(candidates) - hilum, axis=1))])
    directions = unit(grid.world(candidates[rng.choice(len(candidates), 6)]) - root)

    def inside(p):
        index = np.rint(grid.index(p)).astype(int)
        ok = np.all((index >= 0) & (index < grid.shape), axis=1)
        ok[ok] = region[tuple(index[ok].T)]
        return ok

    points, radii = grow_tree(inside, root, directions, np.full(6, 2.6), rng, grid.spacing / 2, 0.8)
    if len(points):
        air, air_box = tube_weights(grid, points, radii, thin_fade=True)
        canvas.paint(air, -900.0, None, air_box, where=region[air_box])


def collapse(anatomy: Anatomy, lobe: str, rng: np.random.Generator) -> None:
    """Atelectasis: a dense plate across the lobe and crowding (higher density) of the rest of it."""
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    region = anatomy.lobe_region(lobe, ("lung", "vessel", "consolidation"))
    if not region.any():
        return
    box = box_of(region)
    x, y, z = grid.coords(box)
    centre = grid.world(np.argwhere(region).mean(axis=0))
    normal = unit(np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), 1.0]))
    offset = (x - centre[0]) * normal[0] + (y - centre[1]) * normal[1] + (z - centre[2]) * normal[2]
    thickness = rng.uniform(10.0, 16.0)
    canvas.hu[box] += (anatomy.lobe_region(lobe)[box] * np.float32(120.0)).astype(np.float32)
    canvas.paint(soft(np.abs(offset) - thickness / 2, grid.spacing), 20.0, "atelectasis", box, where=region[box])


def _lesion_centre(anatomy: Anatomy, lesion: Lesion, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A point in the lobe with the whole sphere inside the lung if possible (else the best of the tries)."""
    grid = anatomy.canvas.grid
    space = anatomy.space(side_of(lesion.lobe))
    candidates = np.argwhere(anatomy.lobe_region(lesion.lobe, PARENCHYMA))
    if not len(candidates):
        candidates = np.argwhere(space)
    if not len(candidates):
        raise InputError(f"there is no {side_of(lesion.lobe)} lung to place a lesion in")
    lobe_index = LUNG_LOBES.index(lesion.lobe)
    best, best_score = None, -1.0
    for index in rng.choice(len(candidates), min(200, len(candidates)), replace=False):
        centre = grid.world(candidates[index])
        probes = centre + radius * DIRECTIONS
        voxels = np.clip(np.rint(grid.index(probes)).astype(int), 0, np.asarray(grid.shape) - 1)
        score = np.mean(space[tuple(voxels.T)] & (anatomy.lobes.lobe_index(*probes.T) == lobe_index))
        if score > best_score:
            best, best_score = centre, score
        if score == 1.0:
            break
    return best


def insert_lesion(anatomy: Anatomy, lesion: Lesion, label: str, rng: np.random.Generator) -> None:
    """A nodule (a sphere) or a mass (lobulated and spiculated), clipped to its own lung."""
    grid, canvas = anatomy.canvas.grid, anatomy.canvas
    radius = lesion.size_mm / 2
    main = 0.75 * radius if label == "mass" else radius
    centre = _lesion_centre(anatomy, lesion, main, rng)
    points, radii = [centre[None]], [np.array([main])]
    if label == "mass":
        lobules = int(rng.integers(3, 6))
        points.append(centre + 0.55 * main * unit(rng.standard_normal((lobules, 3))))
        radii.append(main * rng.uniform(0.45, 0.6, lobules))
        for direction in unit(rng.standard_normal((int(rng.integers(6, 11)), 3))):
            length = main + rng.uniform(6.0, 16.0)
            t = np.arange(0.0, length, grid.spacing / 2)
            points.append(centre + t[:, None] * direction)
            radii.append(np.linspace(1.6, 0.5, len(t)))
    weight, box = tube_weights(grid, np.vstack(points), np.concatenate(radii), thin_fade=True)
    value = MASS_HU if label == "mass" else NODULE_HU
    canvas.paint(weight, value, label, box, where=anatomy.space(side_of(lesion.lobe))[box])


def pneumothorax(anatomy: Anatomy, side: str, fraction: float) -> None:
    """The lung retracted from the chest wall and apex (upright patient): the freed rim is air with no vessels.

    The lung is scaled toward its medial edge across, its hilum front-to-back and its base vertically, so the
    lateral rim is ``fraction`` of the hemithorax width and the apical rim as many millimetres; the visceral
    pleural line edges the retracted lung.
    """
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    space = anatomy.space(side)
    if not space.any():
        return
    low, high = mask_bounds(grid, space)
    medial = low[0] if side == "right" else high[0]
    width, height = high[0] - low[0], high[2] - low[2]
    anchor = np.array([medial, anatomy.landmarks.hila[side][1], low[2]])
    scale = np.array([1.0 - fraction, 1.0 - 0.5 * fraction, max(0.3, 1.0 - fraction * width / height)])
    box = box_of(space, margin=2)
    target = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) for b in box], indexing="ij"), axis=0)
    anchor_index = grid.index(anchor)[:, None, None, None]
    source = anchor_index + (target - anchor_index) / scale[:, None, None, None]
    from_space = ndimage.map_coordinates(space.astype(np.uint8), source, order=0) > 0
    labels = ndimage.map_coordinates(canvas.labels, source, order=0)
    hu = ndimage.map_coordinates(canvas.hu, source, order=1)
    inside = space[box]
    lung, air = inside & from_space, inside & ~from_space
    canvas.hu[box] = np.where(lung, hu, np.where(air, AIR_HU, canvas.hu[box]))
    canvas.labels[box] = np.where(lung, labels, np.where(air, LABEL["pneumothorax"], canvas.labels[box]))
    pleura = lung & ndimage.binary_dilation(air)
    canvas.hu[box][pleura] = np.maximum(canvas.hu[box][pleura], -450.0)


def effusion(anatomy: Anatomy, side: str, fraction: float, rng: np.random.Generator) -> None:
    """Fluid from the lowest point of the hemithorax up to ``fraction`` of its height, with a meniscus."""
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    space = anatomy.space(side)
    if not space.any():
        return
    same_side = (SIDE_SIGN[side] * (grid.axis(0) - anatomy.landmarks.midline_x) > 0)[:, None, None]
    edge = ndimage.binary_dilation(space) & same_side & (canvas.hu < -100.0) & (canvas.labels != LABEL["airway"])
    space = space | edge
    low, high = mask_bounds(grid, space)
    box = box_of(space)
    x, y, z = grid.coords(box)
    sign = SIDE_SIGN[side]
    lateral_low, lateral_high = sorted(sign * (np.array([low[0], high[0]]) - anatomy.landmarks.midline_x))
    t = np.clip((sign * (x - anatomy.landmarks.midline_x) - lateral_low) / (lateral_high - lateral_low), 0, 1)
    v = np.clip((y - (low[1] + high[1]) / 2) / ((high[1] - low[1]) / 2), -1, 1)
    radial = np.sqrt(((t - 0.45) / 0.55) ** 2 + v**2)
    meniscus = 20.0 + 60.0 * fraction
    surface = low[2] + fraction * (high[2] - low[2]) + meniscus * (radial**2.5 - 0.5) - 15.0 * v
    weight = soft(z - surface, grid.spacing) * space[box]
    fluid = FLUID_HU + smooth_noise(weight.shape, rng, 3, 4.0)
    canvas.paint(weight, fluid, "effusion", box)
