"""A real CT as the base anatomy of a chest case (:func:`base_anatomy`).

The base is reoriented to RAS, resampled to the grid spacing and cropped to the body; body, lungs (< -400 HU
inside the body), fat and bone are segmented by thresholds, lobes follow the geometric definition of
:mod:`~medm2g_core.phantoms.chest.lobes`, and the findings are inserted into it. The heart cannot be segmented
by thresholds, so the cardiothoracic ratio of a base case is the base's own (a note on the CT says so). A base
must be 3D: at least ``MIN_BASE_EXTENT_MM`` cranio-caudally with lungs in it; a single slice is rejected.
"""

import numpy as np
from scipy import ndimage

from medm2g_core.errors import InputError
from medm2g_core.io.volume import Volume
from medm2g_core.phantoms.chest.grid import LABEL, SIDE_SIGN, Canvas, Grid, box_of
from medm2g_core.phantoms.chest.lobes import Landmarks, Lobes, mask_bounds, side_masks
from medm2g_core.phantoms.drr import canonical
from medm2g_core.phantoms.findings import SIDES

MIN_BASE_EXTENT_MM = 100.0
MIN_LUNG_ML = 100.0


def base_anatomy(base: Volume, spacing_mm: float) -> tuple[Canvas, Lobes, Landmarks]:
    """The base CT resampled to ``spacing_mm``, segmented and cropped to the body, with its lobes and landmarks."""
    grid, hu = _resample_base(base, spacing_mm)
    canvas, body = _segment_base(grid, hu)
    canvas = _crop(canvas, body)
    lobes, landmarks = _base_landmarks(canvas)
    return canvas, lobes, landmarks


def _resample_base(base: Volume, spacing: float) -> tuple[Grid, np.ndarray]:
    """The base reoriented to RAS and resampled (trilinear) to isotropic ``spacing``."""
    if base.is_2d:
        raise InputError(
            "a chest base CT must be a 3D volume covering the lungs; got a single slice "
            f"(at least {MIN_BASE_EXTENT_MM:g} mm cranio-caudally is needed)"
        )
    data, origin, original = canonical(base)
    extent = original * (np.asarray(data.shape) - 1)
    if extent[2] < MIN_BASE_EXTENT_MM:
        raise InputError(f"a chest base CT must cover at least {MIN_BASE_EXTENT_MM:g} mm cranio-caudally; "
                         f"this one covers {extent[2]:.0f} mm")
    sample = data[::4, ::4, ::2]
    if np.percentile(sample, 1) > -500.0 or sample.max() < 0.0:
        raise InputError("the chest base does not look like a CT in HU (no air below -500 HU or nothing above 0)")
    shape = tuple(int(n) for n in np.floor(extent / spacing) + 1)
    step = spacing / original
    hu = ndimage.affine_transform(data, step, output_shape=shape, order=1, mode="nearest")
    return Grid(shape, float(spacing), origin.astype(float)), hu.astype(np.float32)


def _segment_base(grid: Grid, hu: np.ndarray) -> tuple[Canvas, np.ndarray]:
    """Body, fat, bone and lungs of a real CT by thresholds; returns the canvas and the filled body mask."""
    solid, count = ndimage.label(hu > -500.0)
    if count == 0:
        raise InputError("the chest base has no body (nothing above -500 HU)")
    sizes = ndimage.sum_labels(np.ones_like(solid), solid, index=np.arange(1, count + 1))
    body = solid == 1 + int(np.argmax(sizes))
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    body = ndimage.binary_fill_holes(body, structure=in_plane)
    canvas = Canvas(grid, np.clip(hu, -1024.0, 3071.0), np.zeros(grid.shape, np.uint8))
    canvas.labels[body] = LABEL["body"]
    canvas.labels[body & (hu > -190.0) & (hu < -30.0)] = LABEL["fat"]
    canvas.labels[body & (hu > 200.0)] = LABEL["bone"]
    lung, count = ndimage.label(body & (hu < -400.0))
    sizes = ndimage.sum_labels(np.ones_like(lung), lung, index=np.arange(1, count + 1)) * grid.spacing**3 / 1000.0
    keep = 1 + np.flatnonzero(sizes >= 20.0)
    canvas.labels[np.isin(lung, keep)] = LABEL["lung"]
    if sizes.sum() < MIN_LUNG_ML if count else True:
        raise InputError(f"the chest base has less than {MIN_LUNG_ML:g} ml of lung (< -400 HU inside the body)")
    return canvas, body


def _crop(canvas: Canvas, body: np.ndarray) -> Canvas:
    box = box_of(body, margin=max(1, round(10.0 / canvas.grid.spacing)))
    start = np.array([b.start for b in box])
    grid = Grid(tuple(b.stop - b.start for b in box), canvas.grid.spacing, canvas.grid.world(start))
    return Canvas(grid, np.ascontiguousarray(canvas.hu[box]), np.ascontiguousarray(canvas.labels[box]))


def _base_landmarks(canvas: Canvas) -> tuple[Lobes, Landmarks]:
    """Lobes and landmarks estimated from the segmented lungs and body; air above the apices becomes airway."""
    grid = canvas.grid
    lung = canvas.mask("lung")
    low, high = mask_bounds(grid, lung)
    midline = float((low[0] + high[0]) / 2)
    sides = side_masks(canvas, midline)
    apical = {side: _trim_top(grid, mask) for side, mask in sides.items()}
    canvas.labels[lung & ~apical["right"] & ~apical["left"]] = LABEL["airway"]
    lobes = Lobes.from_masks(grid, apical, midline)
    top, bottom = max(mask_bounds(grid, m)[1][2] for m in apical.values()), low[2]
    height = top - bottom
    hila = {side: _hilum(grid, mask, top - 0.45 * height, midline) for side, mask in apical.items()}
    y_mid, depth = (low[1] + high[1]) / 2, high[1] - low[1]
    width = high[0] - low[0]
    trachea = _base_trachea(grid, lung, top, np.array([midline, y_mid]))
    carina = np.array([trachea[0], trachea[1], top - 0.35 * height])
    body_front = mask_bounds(grid, canvas.labels > 0)[1][1]
    return lobes, Landmarks(
        midline_x=midline, hila=hila, trachea=np.array([*trachea, grid.world(np.asarray(grid.shape))[2]]),
        carina=carina, cavo_atrial=np.array([midline + 0.08 * width, y_mid + 0.1 * depth, bottom + 0.45 * height]),
        right_ventricle_apex=np.array([midline - 0.12 * width, y_mid + 0.3 * depth, bottom + 0.22 * height]),
        pocket=np.array([midline - 0.3 * width, body_front - 15.0, top - 0.2 * height]),
        subclavian={s: np.array([midline + SIDE_SIGN[s] * 0.22 * width, y_mid + 0.25 * depth, top - 0.1 * height])
                    for s in SIDES},
    )


def _base_trachea(grid: Grid, air: np.ndarray, apex_z: float, fallback: np.ndarray) -> np.ndarray:
    """(x, y) of the trachea: the air inside the body above the lung apices, nearest the midline."""
    first = int(np.ceil((apex_z - grid.origin[2]) / grid.spacing)) + 1
    points = np.argwhere(air[:, :, first:])
    if not len(points):
        return fallback
    xy = grid.world(np.column_stack([points[:, :2], np.zeros(len(points))]))[:, :2]
    near = np.abs(xy[:, 0] - fallback[0]) < 30.0
    return xy[near].mean(axis=0) if near.any() else fallback


def _trim_top(grid: Grid, mask: np.ndarray, min_area_mm2: float = 300.0) -> np.ndarray:
    """The mask without the slices above the lung apex (airway only: less than ``min_area_mm2`` per slice)."""
    area = mask.sum(axis=(0, 1)) * grid.spacing**2
    big = np.flatnonzero(area >= min_area_mm2)
    if not len(big):
        raise InputError("the chest base has a lung too small to use")
    trimmed = mask.copy()
    trimmed[:, :, big[-1] + 1:] = False
    return trimmed


def _hilum(grid: Grid, mask: np.ndarray, z: float, midline: float) -> np.ndarray:
    k = int(np.clip(round((z - grid.origin[2]) / grid.spacing), 0, grid.shape[2] - 1))
    while not mask[:, :, k].any() and k > 0:
        k -= 1
    points = grid.world(np.column_stack([*np.nonzero(mask[:, :, k]), np.full(int(mask[:, :, k].sum()), k)]))
    medial = points[np.argmin(np.abs(points[:, 0] - midline))]
    return np.array([medial[0] + np.sign(medial[0] - midline) * 12.0, points[:, 1].mean(), points[0, 2]])
