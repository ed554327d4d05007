"""The synthetic chest: a CT in HU with a structure label map, and its PA radiograph computed from the same voxels.

One case per seed, deterministic. ``np.random.SeedSequence(seed)`` is split into independent streams for the
anatomy, the placement of findings and the image noise, so the same seed with different (explicit) findings
has the same body, lungs, bones and vessels; only the findings (and the heart size, from the requested
cardiothoracic ratio) change. Without explicit findings they are ``ChestFindings.sample(default_rng(seed))``.

Grid and orientation: ``data[i, j, k]`` with ``i`` toward the patient's right (RAS +x), ``j`` anterior (+y),
``k`` superior (+z), isotropic ``spacing_mm``; the world origin is the centre of the field of view
(``FIELD_OF_VIEW_MM``). The orientation code is ``RAS``; axial slices lie along ``k``.

Anatomy (all sizes vary per seed): an elliptic body (width 300-380 mm, depth 200-260 mm, shoulders at the top)
with subcutaneous fat over a muscle wall; a thoracic cavity per slice (an ellipse narrowing toward the
thoracic inlet); two lungs = cavity, lateral of a thin mediastinal septum, above the diaphragm domes (right
dome higher, both descending steeply to sharp lateral costophrenic angles and deep posterior recesses) and
below apical caps under the clavicles, carved by the heart, great vessels, airway and spine; a heart ellipsoid
left of midline sized so that its frontal width over the inner thoracic width on the radiograph is the
requested cardiothoracic ratio; ascending aorta, arch (aortic knob) and descending aorta; SVC; pulmonary
trunk and arteries to the hila; trachea and main bronchi; random-walk branching vessel trees from the hila
(radius tapering outward, partial-volume blending from about -600 HU for sub-voxel vessels to +40 HU);
thoracic vertebrae with endplates, pedicles, transverse and spinous processes; twelve pairs of ribs (cortex
and marrow; posterior arcs near horizontal, anterior arcs sloping down toward the sternum); sternum;
clavicles; liver and a gastric air bubble under the left dome.

Lobes (geometric, per lung, from the lung's own extent so that a real base CT gets them too): the major
(oblique) fissure is the plane, constant across x, through (posterior edge of the lung, 30% of the lung height
below the apex) and (anterior edge, 15% of the height above the lowest point); below it is the lower lobe.
Right lung only: the minor (horizontal) fissure is the plane ``z = lowest + 55% height``; above the major
fissure and above it is the right upper lobe, below it the right middle lobe. The left lung above the major
fissure is the left upper lobe (with the lingula). See :class:`Lobes`.

Findings (:class:`~medm2g_core.phantoms.findings.ChestFindings`): cardiomegaly through the heart size;
pleural effusion (15 HU fluid filling the hemithorax from its lowest point up to the height fraction, with a
meniscus rising along the chest wall, which blunts the costophrenic angle); nodules (40 HU spheres of the
given diameter placed inside the named lobe); a mass (lobulated, spiculated); consolidation (the lobe at
-100..+30 HU with air bronchograms); pneumothorax (the lung shrunk toward its hilum so that a rim of the given
fraction of the hemithorax width is air at -1000 HU with no vessels, edged by the visceral pleural line);
atelectasis (a dense band across the lobe and volume-loss crowding of the rest of it); devices (an endotracheal
tube with a radiopaque stripe and its tip 30-50 mm above the carina, a right subclavian or jugular central venous
catheter with its tip at the cavo-atrial junction, or a left pectoral pacemaker with a lead to the right
ventricular apex). Radiopaque wires fill the voxels along their centre line at metal density, as metal blooms on
CT, so the radiograph shows them as thin white lines. Findings are drawn in a fixed order (consolidation,
atelectasis, nodules, mass, pneumothorax, effusion, device); a pneumothorax moves what lies in the lung with it.

:class:`ChestCase` holds the CT, the radiograph, the label map (names in ``LABELS``), the lobe geometry
(:class:`Lobes`: ``lobe_of(points)``, ``lobe_map()`` on the case) and the landmarks the findings were placed
from (:class:`Landmarks`: hila, carina, cavo-atrial junction, ...), for reports that say where things are.

A real CT can be the base anatomy (``base``): it is reoriented to RAS, resampled to the grid spacing and
cropped to the body; body, lungs (< -400 HU inside the body), fat and bone are segmented by thresholds, lobes
follow the geometric definition above, and the findings are inserted into it. The heart cannot be segmented
by thresholds, so the cardiothoracic ratio of a base case is the base's own (a note on the CT says so). A base
must be 3D: at least ``MIN_BASE_EXTENT_MM`` cranio-caudally with lungs in it; a single slice is rejected.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

import medm2g_core
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume
from medm2g_core.phantoms.drr import PAGeometry, canonical, drr
from medm2g_core.phantoms.findings import DEVICES, LUNG_LOBES, SIDES, ChestFindings, Lesion

LABELS = (
    "background", "body", "fat", "muscle", "lung", "vessel", "heart", "aorta", "spine", "rib", "clavicle",
    "effusion", "nodule", "mass", "consolidation", "pneumothorax", "atelectasis", "device", "airway", "bone",
    "great_vessel",
)
LABEL = {name: index for index, name in enumerate(LABELS)}
LUNG_SPACE = ("lung", "vessel", "nodule", "mass", "consolidation", "atelectasis", "pneumothorax", "effusion")
PARENCHYMA = ("lung", "vessel", "nodule", "mass", "consolidation", "atelectasis")

FIELD_OF_VIEW_MM = (440.0, 300.0, 330.0)
MIN_BASE_EXTENT_MM = 100.0
MIN_LUNG_ML = 100.0
CT_NOISE_HU = 10.0
LUNG_FLOOR_Z = -150.0  # the posterior costophrenic recesses approach but never reach this height (mm)
LINEAR_NOISE_STD = 0.55  # standard deviation of trilinearly interpolated unit white noise

AIR_HU = -1000.0
FAT_HU = -100.0
MUSCLE_HU = 50.0
MEDIASTINUM_HU = 10.0
LIVER_HU = 60.0
LUNG_HU = -860.0
LUNG_DEPENDENT_HU = 60.0  # extra density of the posterior (dependent) lung
VESSEL_HU = 40.0
HEART_HU = 42.0
BLOOD_HU = 45.0
MARROW_HU = 260.0
CORTEX_HU = 1100.0
DISC_HU = 90.0
VERTEBRA_CORTEX_HU = 800.0
VERTEBRA_MARROW_HU = 200.0
FLUID_HU = 15.0
NODULE_HU = 40.0
MASS_HU = 45.0
METAL_HU = 3071.0
PLASTIC_HU = 150.0

SIDE_SIGN = {"right": 1.0, "left": -1.0}  # RAS +x is the patient's right


# ---- grid and soft shapes ----------------------------------------------------------------------------------------


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


# ---- the image being built ---------------------------------------------------------------------------------------


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


# ---- anatomy parameters ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thorax:
    """Per-seed body and thoracic-cage dimensions (mm, RAS, origin at the centre of the field of view)."""

    body_width: float
    body_depth: float
    fat: float
    cage_half_width: float  # A0: half width of the thoracic cavity at its widest
    cavity_centre_y: float
    cavity_half_depth: float
    apex_z: float
    dome_top: dict[str, float]  # side -> highest point of the hemidiaphragm
    dome_lateral_drop: float
    dome_posterior_drop: float
    level_mm: float  # vertebral level height
    t1_z: float
    heart_yaw: float  # radians, tilt of the heart's long axis below horizontal toward the left
    heart_roll: float
    heart_axes: tuple[float, float, float]  # shape (relative), scaled by the cardiothoracic ratio
    carina_z: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "Thorax":
        width = float(rng.uniform(300.0, 380.0))
        depth = float(np.clip(0.68 * width + rng.normal(0.0, 10.0), 200.0, 260.0))
        fat = float(rng.uniform(8.0, 22.0) + (width - 300.0) * 0.08)
        y_ant = depth / 2 - 0.8 * fat - rng.uniform(14.0, 20.0)
        y_post = -depth / 2 + 0.6 * fat + rng.uniform(38.0, 46.0)
        apex = float(rng.uniform(128.0, 140.0))
        dome_right = float(rng.uniform(-78.0, -60.0))
        t1 = apex + 8.0
        return cls(
            body_width=width, body_depth=depth, fat=fat,
            cage_half_width=float(width / 2 - fat - rng.uniform(16.0, 22.0)),
            cavity_centre_y=float((y_ant + y_post) / 2), cavity_half_depth=float((y_ant - y_post) / 2),
            apex_z=apex, dome_top={"right": dome_right, "left": dome_right - float(rng.uniform(10.0, 20.0))},
            dome_lateral_drop=float(rng.uniform(55.0, 68.0)), dome_posterior_drop=float(rng.uniform(35.0, 50.0)),
            level_mm=(t1 - dome_right) / 9.0, t1_z=t1,
            heart_yaw=float(np.radians(rng.uniform(30.0, 45.0))), heart_roll=float(np.radians(rng.uniform(15.0, 30.0))),
            heart_axes=(1.0, float(rng.uniform(0.72, 0.82)), float(rng.uniform(0.7, 0.8))),
            carina_z=float(apex - rng.uniform(0.36, 0.42) * (apex - dome_right)),
        )

    def cage_half_width_at(self, z) -> np.ndarray:
        """Half width of the thoracic cavity at height z: narrowing toward the inlet, slightly toward the abdomen."""
        z = np.asarray(z, dtype=np.float32)
        widest = self.dome_top["right"] + 30.0
        up = np.clip((z - widest) / (self.t1_z + 10.0 - widest), 0.0, 1.1) ** 2.2
        down = np.clip((widest - z) / 120.0, 0.0, 1.0)
        return (self.cage_half_width * (1.0 - 0.6 * up - 0.08 * down)).astype(np.float32)

    def body_half_width_at(self, z) -> np.ndarray:
        """Half width of the body contour: the chest, widening into the shoulders at the top."""
        z = np.asarray(z, dtype=np.float32)
        shoulder = smoothstep((z - (self.t1_z - 40.0)) / 60.0)
        return (self.body_width / 2 * (1.0 + 0.1 * shoulder)).astype(np.float32)

    def dome_z(self, side: str, x, y) -> np.ndarray:
        """Height of the hemidiaphragm under (x, y): a dome over mid-hemithorax, steep laterally and posteriorly."""
        lateral = SIDE_SIGN[side] * x
        centre = 0.45 * self.cage_half_width
        u = (lateral - centre) / np.where(lateral > centre, self.cage_half_width - centre, centre)
        v = (y - self.cavity_centre_y) / self.cavity_half_depth
        circle = 1.0 - np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
        drop = np.where(u > 0, self.dome_lateral_drop * (0.75 * u**2 + 0.25 * circle), 15.0 * u**2)
        drop = drop + self.dome_posterior_drop * np.minimum(v, 0.0) ** 2 + 12.0 * np.maximum(v, 0.0) ** 2
        deepest = self.dome_top[side] - LUNG_FLOOR_Z
        return (self.dome_top[side] - deepest * (1.0 - np.exp(-drop / deepest))).astype(np.float32)

    def lung_distance(self, side: str, x, y, z) -> np.ndarray:
        """Approximate signed distance (mm) to one lung's outline before the mediastinal organs carve it."""
        lateral = SIDE_SIGN[side] * x
        a = self.cage_half_width_at(z)
        dy = y - self.cavity_centre_y
        rho = np.sqrt((x / a) ** 2 + (dy / self.cavity_half_depth) ** 2)
        cage = (rho - 1.0) * np.minimum(a, self.cavity_half_depth)
        dome = self.dome_z(side, x, y) - z
        cap_x, cap_y, cap_z = 0.62 * self.cage_half_width, 1.1 * self.cavity_half_depth, self.apex_z - self.cap_base
        apex = ellipsoid_distance(lateral - 0.5 * self.cage_half_width, dy + 0.15 * self.cavity_half_depth,
                                  np.maximum(z - self.cap_base, 0.0), (cap_x, cap_y, cap_z))
        septum = self.mediastinum_half_width(y) - lateral
        return np.maximum(np.maximum(cage, dome), np.maximum(apex, septum))

    def mediastinum_half_width(self, y) -> np.ndarray:
        """Half width of the mediastinum between the lungs: narrow anteriorly, wide around airway and spine."""
        front = self.cavity_centre_y + 0.45 * self.cavity_half_depth
        return 9.0 + 12.0 * smoothstep((front - y) / 35.0)

    @property
    def cap_base(self) -> float:
        return self.apex_z - 110.0

    @property
    def inner_width(self) -> float:
        """Widest inner thoracic width at the lateral lung edges (mm, frontal projection)."""
        return 2.0 * float(self.cage_half_width_at(self.dome_top["right"] + 30.0))

    @property
    def spine_y(self) -> float:
        """Centre of the vertebral bodies (y)."""
        return self.cavity_centre_y - self.cavity_half_depth + 6.0

    def vertebra_z(self, n: int) -> float:
        return self.t1_z - n * self.level_mm


@dataclass(frozen=True)
class Heart:
    """The heart ellipsoid: centre, rotation (columns = body axes of the ellipsoid) and semi-axes (mm)."""

    centre: np.ndarray
    rotation: np.ndarray
    axes: np.ndarray

    @classmethod
    def for_ratio(cls, thorax: Thorax, ratio: float, geometry: PAGeometry | None) -> "Heart":
        """The heart whose frontal width is ``ratio`` x the inner thoracic width as seen on the radiograph."""
        down, forward = thorax.heart_yaw, thorax.heart_roll
        apex = np.array([-np.cos(down) * np.cos(forward), np.cos(down) * np.sin(forward), -np.sin(down)])
        second = _unit(np.cross(apex, [0.0, 1.0, 0.0]))
        rotation = np.column_stack([apex, second, np.cross(apex, second)])  # first column: toward the apex
        shape = np.asarray(thorax.heart_axes)
        covariance = rotation @ np.diag(shape**2) @ rotation.T
        y_centre = thorax.cavity_centre_y + 0.3 * thorax.cavity_half_depth
        width = ratio * thorax.inner_width
        if geometry is not None:
            width *= float(geometry.magnification(thorax.cavity_centre_y) / geometry.magnification(y_centre))
        scale = width / (2.0 * np.sqrt(covariance[0, 0]))
        half_height = scale * np.sqrt(covariance[2, 2])
        centre = np.array([-width / 6.0, y_centre, thorax.dome_top["left"] - 12.0 + half_height])
        return cls(centre, rotation, shape * scale)

    def distance(self, x, y, z) -> np.ndarray:
        d = [x - self.centre[0], y - self.centre[1], z - self.centre[2]]
        local = [sum(self.rotation[r, c] * d[r] for r in range(3)) for c in range(3)]
        return ellipsoid_distance(*local, self.axes)

    def bounds(self, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(np.diag(self.rotation @ np.diag(self.axes**2) @ self.rotation.T)) + margin
        return self.centre - half, self.centre + half

    def point(self, along: float) -> np.ndarray:
        """A point on the long axis: ``along`` = 1 at the apex end, -1 at the base."""
        return self.centre + along * self.axes[0] * self.rotation[:, 0]


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


# ---- building the synthetic anatomy ------------------------------------------------------------------------------


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


def _mediastinal_paths(thorax: Thorax, heart: Heart) -> dict[str, tuple[np.ndarray, float]]:
    """Centre lines and radii (mm) of the aorta, SVC, pulmonary trunk and arteries, trachea and bronchi."""
    top = 170.0
    base = heart.point(-0.75)
    spine_y = thorax.spine_y
    carina = np.array([0.0, spine_y + 34.0, thorax.carina_z])
    knob_z = thorax.carina_z + 38.0
    hila = _hila(thorax)
    aorta = [_shifted(base, 10, 5, 0), [22, base[1] - 5, knob_z - 30], [14, spine_y + 60, knob_z],
             [-30, spine_y + 40, knob_z + 6], [-36, spine_y + 18, knob_z - 10], [-24, spine_y + 10, knob_z - 60],
             [-20, spine_y + 12, thorax.dome_top["left"] - 60], [-14, spine_y + 16, -200]]
    trunk_top = np.array([-12.0, carina[1] + 12, thorax.carina_z - 12])
    return {
        "aorta": (np.array(aorta, dtype=float), 13.0),
        "svc": (np.array([[28, spine_y + 55, top], [26, spine_y + 55, knob_z - 10], [24, base[1], base[2] + 15]]), 9.0),
        "pulmonary trunk": (np.array([_shifted(heart.point(-0.6), -8, 12, 0), trunk_top]), 12.0),
        "brachiocephalic trunk": (np.array([[10, spine_y + 56, knob_z + 4], [20, spine_y + 50, top]]), 7.0),
        "left carotid": (np.array([[-6, spine_y + 50, knob_z + 8], [-16, spine_y + 46, top]]), 5.0),
        "left subclavian": (np.array([[-18, spine_y + 42, knob_z + 8], [-30, spine_y + 36, top]]), 6.0),
        "right pulmonary artery": (np.array([trunk_top, [20, carina[1] - 4, thorax.carina_z - 16], hila["right"]]),
                                   11.0),
        "left pulmonary artery": (np.array([trunk_top, [-30, carina[1] - 8, thorax.carina_z], hila["left"]]), 11.0),
        "trachea": (np.array([[0, spine_y + 32, top], [0, spine_y + 34, thorax.carina_z + 40], carina]), 8.5),
        "right bronchus": (np.array([carina, _shifted(carina, 22, -4, -22), _shifted(hila["right"], -6, -10, -4)]),
                           6.5),
        "left bronchus": (np.array([carina, _shifted(carina, -28, -6, -14), _shifted(hila["left"], 6, -10, -6)]), 6.0),
    }


def _shifted(point: np.ndarray, dx: float, dy: float, dz: float) -> np.ndarray:
    return point + np.array([dx, dy, dz])


def _hila(thorax: Thorax) -> dict[str, np.ndarray]:
    y = thorax.cavity_centre_y - 0.15 * thorax.cavity_half_depth
    return {"right": np.array([58.0, y, thorax.carina_z - 22.0]), "left": np.array([-56.0, y, thorax.carina_z - 10.0])}


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
    paths = _mediastinal_paths(thorax, heart)
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


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, cell: int, amplitude: float) -> np.ndarray:
    """Band-limited noise (features about ``cell`` voxels wide) with a standard deviation about ``amplitude``."""
    coarse = rng.standard_normal(tuple(n // cell + 2 for n in shape)).astype(np.float32)
    fine = ndimage.zoom(coarse, cell, order=1, prefilter=False)[tuple(slice(0, n) for n in shape)]
    return fine * np.float32(amplitude / LINEAR_NOISE_STD)


# ---- vessel trees ------------------------------------------------------------------------------------------------

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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _rotate_away(directions: np.ndarray, angle: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Directions turned by ``angle`` (radians) about random perpendicular axes."""
    axis = _unit(np.cross(directions, rng.standard_normal(directions.shape)))
    side = np.cross(axis, directions)
    return _unit(directions * np.cos(angle)[:, None] + side * np.sin(angle)[:, None])


def grow_tree(
    inside, start: np.ndarray, directions: np.ndarray, radii: np.ndarray, rng: np.random.Generator,
    sample_mm: float, min_radius_mm: float = TREE_MIN_RADIUS_MM,
) -> tuple[np.ndarray, np.ndarray]:
    """A random-walk branching tree of tubes from ``start``: centre-line samples (N, 3) and radii (N,).

    ``inside(points) -> bool array`` says where tips may go; a tip stops outside or below ``min_radius_mm``.
    Each step turns the tip a little at random and outward from the start, tapers it, and sometimes splits it
    into two thinner children. Samples are ``sample_mm`` apart along each branch.
    """
    direction = _unit(np.asarray(directions, float) + 0.25 * rng.standard_normal(np.shape(directions)))
    position = start[None] + 6.0 * direction
    radius = np.asarray(radii, float).copy()
    n_sub = max(1, int(np.ceil(TREE_STEP_MM / sample_mm)))
    points, sizes = [], []
    for _ in range(TREE_MAX_STEPS):
        alive = inside(position) & (radius > min_radius_mm)
        position, direction, radius = position[alive], direction[alive], radius[alive]
        if not len(position):
            break
        outward = _unit(position - start)
        direction = _unit(direction + 0.22 * rng.standard_normal(direction.shape) + 0.12 * outward)
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


def _paint_vessels(canvas: Canvas, thorax: Thorax, lung_weight: np.ndarray, rng: np.random.Generator) -> None:
    """Vessel trees from both hila, drawn only where there is lung."""
    points, radii = [], []
    for side, hilum in _hila(thorax).items():
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


def _paint_hilar_arteries(canvas: Canvas, thorax: Thorax, heart: Heart) -> None:
    paths = _mediastinal_paths(thorax, heart)
    for name in ("right pulmonary artery", "left pulmonary artery"):
        control, radius = paths[name]
        centre = smooth_path(control, canvas.grid.spacing / 2)
        canvas.paint_patch(tube_weights(canvas.grid, centre, np.linspace(radius, 0.7 * radius, len(centre))),
                     BLOOD_HU, "great_vessel")


# ---- bones -------------------------------------------------------------------------------------------------------


def _paint_bone_tube(canvas: Canvas, centre: np.ndarray, radius, label: str, cortex_mm: float = 1.6) -> None:
    """A tubular bone: cortical shell around marrow."""
    radius = np.broadcast_to(np.asarray(radius, float), len(centre))
    canvas.paint_patch(tube_weights(canvas.grid, centre, radius), CORTEX_HU, label)
    canvas.paint_patch(tube_weights(canvas.grid, centre, np.maximum(radius - cortex_mm, 0.3)), MARROW_HU, label)


def _paint_spine(canvas: Canvas, thorax: Thorax) -> None:
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


RIB_END_ANGLE = (2.4, 2.45, 2.45, 2.45, 2.45, 2.4, 2.35, 2.2, 2.05, 1.9, 1.5, 1.2)


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


def _paint_ribs(canvas: Canvas, thorax: Thorax) -> None:
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


def _paint_clavicles_and_sternum(canvas: Canvas, thorax: Thorax) -> None:
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


# ---- lobes -------------------------------------------------------------------------------------------------------


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
            low, high = _mask_bounds(grid, mask)
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


def _mask_bounds(grid: Grid, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


# ---- synthetic anatomy -------------------------------------------------------------------------------------------


def _synthetic_anatomy(
    spacing: float, ratio: float, rng: np.random.Generator, pixels: int,
) -> tuple[Canvas, Thorax, Heart]:
    grid = Grid.centred(spacing)
    canvas = Canvas.empty(grid)
    thorax = Thorax.sample(rng)
    geometry = PAGeometry(grid.origin, np.full(3, spacing), grid.shape, pixels)
    heart = Heart.for_ratio(thorax, ratio, geometry)
    _paint_body(canvas, thorax)
    _paint_cavity(canvas, thorax)
    carve = _paint_mediastinum(canvas, thorax, heart)
    lung_weight = _paint_lungs(canvas, thorax, carve, rng)
    _paint_vessels(canvas, thorax, lung_weight, rng)
    _paint_hilar_arteries(canvas, thorax, heart)
    _paint_spine(canvas, thorax)
    _paint_ribs(canvas, thorax)
    _paint_clavicles_and_sternum(canvas, thorax)
    return canvas, thorax, heart


def _synthetic_landmarks(thorax: Thorax, heart: Heart) -> Landmarks:
    paths = _mediastinal_paths(thorax, heart)
    svc = paths["svc"][0]
    half = thorax.body_width / 2
    front = thorax.cavity_centre_y + thorax.cavity_half_depth
    pocket_x = -0.5 * half
    u2 = (pocket_x / half) ** 2
    surface = thorax.body_depth / 2 * np.sqrt((1.0 - u2) / (1.0 - 0.3 * u2))  # the body's squared ellipse
    return Landmarks(
        midline_x=0.0, hila=_hila(thorax), trachea=paths["trachea"][0][0], carina=paths["trachea"][0][-1],
        cavo_atrial=svc[-1], right_ventricle_apex=heart.point(0.6) + np.array([10.0, 8.0, 0.0]),
        pocket=np.array([pocket_x, surface - 0.5 * thorax.fat - 6.0, thorax.t1_z - 48.0]),
        subclavian={side: np.array([SIDE_SIGN[side] * 0.4 * half, front - 6.0, thorax.t1_z - 26.0]) for side in SIDES},
    )


# ---- findings ----------------------------------------------------------------------------------------------------


def _validate(findings: ChestFindings) -> None:
    lobes = [lesion.lobe for lesion in findings.nodules] + [findings.consolidation, findings.atelectasis]
    lobes += [findings.mass.lobe] if findings.mass else []
    for lobe in lobes:
        if lobe is not None and lobe not in LUNG_LOBES:
            raise InputError(f"unknown lung lobe {lobe!r}; use one of {', '.join(LUNG_LOBES)}")
    sides = list(findings.effusion) + ([findings.pneumothorax[0]] if findings.pneumothorax else [])
    for side in sides:
        if side not in SIDES:
            raise InputError(f"unknown side {side!r}; use left or right")
    fractions = [*findings.effusion.values(), *([findings.pneumothorax[1]] if findings.pneumothorax else [])]
    if any(not 0.0 < f < 1.0 for f in fractions):
        raise InputError(f"effusion heights and pneumothorax widths are fractions in (0, 1); got {fractions}")
    if findings.device is not None and findings.device not in DEVICES:
        raise InputError(f"unknown device {findings.device!r}; use one of {', '.join(DEVICES)}")
    if not 0.25 <= findings.cardiothoracic_ratio <= 0.8:
        raise InputError(f"cardiothoracic ratio must be within 0.25-0.8; got {findings.cardiothoracic_ratio}")
    for lesion in [*findings.nodules, *([findings.mass] if findings.mass else [])]:
        if not 2.0 <= lesion.size_mm <= 120.0:
            raise InputError(f"lesion size must be within 2-120 mm; got {lesion.size_mm}")


def _side_of(lobe: str) -> str:
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
        space = side_masks(self.canvas, self.landmarks.midline_x, names)[_side_of(lobe)]
        return self.lobes.region(self.canvas.grid, lobe, space)


def _box_of(mask: np.ndarray, margin: int = 1) -> tuple[slice, slice, slice]:
    box = []
    for a in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))
        box.append(slice(max(0, hit[0] - margin), min(mask.shape[a], hit[-1] + margin + 1)))
    return tuple(box)  # type: ignore[return-value]


def _consolidate(anatomy: Anatomy, lobe: str, rng: np.random.Generator) -> None:
    """The lobe's air spaces filled (-100..+30 HU) except for bronchi, which stay air (air bronchograms)."""
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    region = anatomy.lobe_region(lobe)
    if not region.any():
        return
    box = _box_of(region)
    texture = np.clip(-35.0 + smooth_noise(canvas.hu[box].shape, rng, 4, 30.0), -100.0, 30.0)
    canvas.paint(region[box].astype(np.float32), texture, "consolidation", box)
    hilum = anatomy.landmarks.hila[_side_of(lobe)]
    candidates = np.argwhere(region)
    root = grid.world(candidates[np.argmin(np.linalg.norm(grid.world(candidates) - hilum, axis=1))])
    directions = _unit(grid.world(candidates[rng.choice(len(candidates), 6)]) - root)

    def inside(p):
        index = np.rint(grid.index(p)).astype(int)
        ok = np.all((index >= 0) & (index < grid.shape), axis=1)
        ok[ok] = region[tuple(index[ok].T)]
        return ok

    points, radii = grow_tree(inside, root, directions, np.full(6, 2.6), rng, grid.spacing / 2, 0.8)
    if len(points):
        air, air_box = tube_weights(grid, points, radii, thin_fade=True)
        canvas.paint(air, -900.0, None, air_box, where=region[air_box])


def _collapse(anatomy: Anatomy, lobe: str, rng: np.random.Generator) -> None:
    """Atelectasis: a dense plate across the lobe and crowding (higher density) of the rest of it."""
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    region = anatomy.lobe_region(lobe, ("lung", "vessel", "consolidation"))
    if not region.any():
        return
    box = _box_of(region)
    x, y, z = grid.coords(box)
    centre = grid.world(np.argwhere(region).mean(axis=0))
    normal = _unit(np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), 1.0]))
    offset = (x - centre[0]) * normal[0] + (y - centre[1]) * normal[1] + (z - centre[2]) * normal[2]
    thickness = rng.uniform(10.0, 16.0)
    canvas.hu[box] += (anatomy.lobe_region(lobe)[box] * np.float32(120.0)).astype(np.float32)
    canvas.paint(soft(np.abs(offset) - thickness / 2, grid.spacing), 20.0, "atelectasis", box, where=region[box])


DIRECTIONS = _unit(np.array([[a, b, c] for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1)
                             if (a, b, c) != (0, 0, 0)], dtype=float))


def _lesion_centre(anatomy: Anatomy, lesion: Lesion, radius: float, rng: np.random.Generator) -> np.ndarray:
    """A point in the lobe with the whole sphere inside the lung if possible (else the best of the tries)."""
    grid = anatomy.canvas.grid
    space = anatomy.space(_side_of(lesion.lobe))
    candidates = np.argwhere(anatomy.lobe_region(lesion.lobe, PARENCHYMA))
    if not len(candidates):
        candidates = np.argwhere(space)
    if not len(candidates):
        raise InputError(f"there is no {_side_of(lesion.lobe)} lung to place a lesion in")
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


def _insert_lesion(anatomy: Anatomy, lesion: Lesion, label: str, rng: np.random.Generator) -> None:
    """A nodule (a sphere) or a mass (lobulated and spiculated), clipped to its own lung."""
    grid, canvas = anatomy.canvas.grid, anatomy.canvas
    radius = lesion.size_mm / 2
    main = 0.75 * radius if label == "mass" else radius
    centre = _lesion_centre(anatomy, lesion, main, rng)
    points, radii = [centre[None]], [np.array([main])]
    if label == "mass":
        lobules = int(rng.integers(3, 6))
        points.append(centre + 0.55 * main * _unit(rng.standard_normal((lobules, 3))))
        radii.append(main * rng.uniform(0.45, 0.6, lobules))
        for direction in _unit(rng.standard_normal((int(rng.integers(6, 11)), 3))):
            length = main + rng.uniform(6.0, 16.0)
            t = np.arange(0.0, length, grid.spacing / 2)
            points.append(centre + t[:, None] * direction)
            radii.append(np.linspace(1.6, 0.5, len(t)))
    weight, box = tube_weights(grid, np.vstack(points), np.concatenate(radii), thin_fade=True)
    value = MASS_HU if label == "mass" else NODULE_HU
    canvas.paint(weight, value, label, box, where=anatomy.space(_side_of(lesion.lobe))[box])


def _pneumothorax(anatomy: Anatomy, side: str, fraction: float) -> None:
    """The lung retracted from the chest wall and apex (upright patient): the freed rim is air with no vessels.

    The lung is scaled toward its medial edge across, its hilum front-to-back and its base vertically, so the
    lateral rim is ``fraction`` of the hemithorax width and the apical rim as many millimetres; the visceral
    pleural line edges the retracted lung.
    """
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    space = anatomy.space(side)
    if not space.any():
        return
    low, high = _mask_bounds(grid, space)
    medial = low[0] if side == "right" else high[0]
    width, height = high[0] - low[0], high[2] - low[2]
    anchor = np.array([medial, anatomy.landmarks.hila[side][1], low[2]])
    scale = np.array([1.0 - fraction, 1.0 - 0.5 * fraction, max(0.3, 1.0 - fraction * width / height)])
    box = _box_of(space, margin=2)
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


def _effusion(anatomy: Anatomy, side: str, fraction: float, rng: np.random.Generator) -> None:
    """Fluid from the lowest point of the hemithorax up to ``fraction`` of its height, with a meniscus."""
    canvas, grid = anatomy.canvas, anatomy.canvas.grid
    space = anatomy.space(side)
    if not space.any():
        return
    same_side = (SIDE_SIGN[side] * (grid.axis(0) - anatomy.landmarks.midline_x) > 0)[:, None, None]
    edge = ndimage.binary_dilation(space) & same_side & (canvas.hu < -100.0) & (canvas.labels != LABEL["airway"])
    space = space | edge
    low, high = _mask_bounds(grid, space)
    box = _box_of(space)
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


def _endotracheal_tube(anatomy: Anatomy, rng: np.random.Generator) -> None:
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


def _central_line(anatomy: Anatomy, rng: np.random.Generator) -> None:
    marks = anatomy.landmarks
    if rng.random() < 0.5:
        control = _venous_path(anatomy, "right")
    else:
        neck = marks.cavo_atrial + np.array([12.0, 0.0, 130.0])
        control = [neck + np.array([0.0, 0.0, 60.0]), neck, marks.cavo_atrial + np.array([2.0, 0.0, 70.0]),
                   marks.cavo_atrial]
    _paint_device_tube(anatomy.canvas, smooth_path(np.array(control), anatomy.canvas.grid.spacing / 2), 1.1,
                       METAL_HU)


def _pacemaker(anatomy: Anatomy) -> None:
    canvas, marks = anatomy.canvas, anatomy.landmarks
    axes = (24.0, 5.0, 20.0)
    box = canvas.grid.box(marks.pocket - np.array(axes) - 4, marks.pocket + np.array(axes) + 4)
    x, y, z = canvas.grid.coords(box)
    distance = ellipsoid_distance(x - marks.pocket[0], y - marks.pocket[1], z - marks.pocket[2], axes)
    canvas.paint(soft(distance, canvas.grid.spacing), METAL_HU, "device", box)
    path = [marks.pocket + np.array([20.0, 0.0, 8.0]), *_venous_path(anatomy, "left")[1:],
            marks.cavo_atrial + np.array([-10.0, 8.0, -20.0]), marks.right_ventricle_apex]
    _paint_device_tube(canvas, smooth_path(np.array(path), canvas.grid.spacing / 2), 1.0, METAL_HU)


def insert_findings(anatomy: Anatomy, findings: ChestFindings, rng: np.random.Generator) -> None:
    """Draw the findings into the anatomy (the heart size is part of the anatomy, not done here)."""
    if findings.consolidation:
        _consolidate(anatomy, findings.consolidation, rng)
    if findings.atelectasis:
        _collapse(anatomy, findings.atelectasis, rng)
    for nodule in findings.nodules:
        _insert_lesion(anatomy, nodule, "nodule", rng)
    if findings.mass:
        _insert_lesion(anatomy, findings.mass, "mass", rng)
    if findings.pneumothorax:
        _pneumothorax(anatomy, *findings.pneumothorax)
    for side, fraction in sorted(findings.effusion.items()):
        _effusion(anatomy, side, fraction, rng)
    if findings.device == "endotracheal tube":
        _endotracheal_tube(anatomy, rng)
    elif findings.device == "central venous catheter":
        _central_line(anatomy, rng)
    elif findings.device == "pacemaker":
        _pacemaker(anatomy)


# ---- a real CT as the base ---------------------------------------------------------------------------------------


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
    box = _box_of(body, margin=max(1, round(10.0 / canvas.grid.spacing)))
    start = np.array([b.start for b in box])
    grid = Grid(tuple(b.stop - b.start for b in box), canvas.grid.spacing, canvas.grid.world(start))
    return Canvas(grid, np.ascontiguousarray(canvas.hu[box]), np.ascontiguousarray(canvas.labels[box]))


def _base_landmarks(canvas: Canvas) -> tuple[Lobes, Landmarks]:
    """Lobes and landmarks estimated from the segmented lungs and body; air above the apices becomes airway."""
    grid = canvas.grid
    lung = canvas.mask("lung")
    low, high = _mask_bounds(grid, lung)
    midline = float((low[0] + high[0]) / 2)
    sides = side_masks(canvas, midline)
    apical = {side: _trim_top(grid, mask) for side, mask in sides.items()}
    canvas.labels[lung & ~apical["right"] & ~apical["left"]] = LABEL["airway"]
    lobes = Lobes.from_masks(grid, apical, midline)
    top, bottom = max(_mask_bounds(grid, m)[1][2] for m in apical.values()), low[2]
    height = top - bottom
    hila = {side: _hilum(grid, mask, top - 0.45 * height, midline) for side, mask in apical.items()}
    y_mid, depth = (low[1] + high[1]) / 2, high[1] - low[1]
    width = high[0] - low[0]
    trachea = _base_trachea(grid, lung, top, np.array([midline, y_mid]))
    carina = np.array([trachea[0], trachea[1], top - 0.35 * height])
    body_front = _mask_bounds(grid, canvas.labels > 0)[1][1]
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


# ---- the case ----------------------------------------------------------------------------------------------------


@dataclass
class ChestCase:
    """One paired chest case: CT (HU), its PA radiograph (DRR), structure labels and lobe geometry."""

    seed: int
    findings: ChestFindings
    ct: Volume
    xray: Volume
    labels: np.ndarray  # uint8 on the CT grid, names in LABELS
    lobes: Lobes
    landmarks: Landmarks

    def lobe_map(self) -> np.ndarray:
        """uint8 on the CT grid: 0 outside the lungs, else 1 + the index into LUNG_LOBES."""
        space = np.isin(self.labels, [LABEL[n] for n in LUNG_SPACE])
        grid = Grid(self.ct.shape, self.ct.spacing[0], self.ct.affine[:3, 3])
        x, y, z = grid.coords()
        return np.where(space, self.lobes.lobe_index(x, y, z) + 1, 0).astype(np.uint8)


def _check_arguments(seed: int, spacing_mm: float, xray_pixels: int) -> None:
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"seed must be a non-negative integer; got {seed!r}")
    if not 0.5 <= spacing_mm <= 8.0:
        raise InputError(f"chest grid spacing must be within 0.5-8 mm; got {spacing_mm}")
    if not 16 <= xray_pixels <= 4096:
        raise InputError(f"xray_pixels must be within 16-4096; got {xray_pixels}")


def _ct_volume(seed: int, canvas: Canvas, notes: list[str]) -> Volume:
    provenance = {"model": "medm2g-phantom-chest", "model_version": medm2g_core.__version__, "seed": str(seed)}
    meta = SourceMeta(format="synthetic", body_part="CHEST", series_description="SYNTHETIC chest CT phantom",
                      window_center=-600.0, window_width=1500.0, notes=[f"medm2g chest phantom, seed {seed}", *notes])
    return Volume(canvas.hu, canvas.grid.affine(), modality="CT", units="HU", meta=meta, synthetic=True,
                  provenance=provenance)


def make_chest_case(
    seed: int, findings: ChestFindings | None = None, spacing_mm: float = 2.5, base: Volume | None = None,
    xray_pixels: int = 256,
) -> ChestCase:
    """A chest CT with ``findings`` (sampled from ``seed`` when None) and its PA radiograph (module docstring)."""
    _check_arguments(seed, spacing_mm, xray_pixels)
    findings = findings if findings is not None else ChestFindings.sample(np.random.default_rng(seed))
    _validate(findings)
    anatomy_rng, placement_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    notes = []
    if base is None:
        canvas, thorax, heart = _synthetic_anatomy(spacing_mm, findings.cardiothoracic_ratio, anatomy_rng, xray_pixels)
        landmarks = _synthetic_landmarks(thorax, heart)
        lobes = Lobes.from_masks(canvas.grid, side_masks(canvas, 0.0), 0.0)
    else:
        grid, hu = _resample_base(base, spacing_mm)
        canvas, body = _segment_base(grid, hu)
        canvas = _crop(canvas, body)
        lobes, landmarks = _base_landmarks(canvas)
        notes.append("base anatomy from a real CT" + (f" ({base.meta.path})" if base.meta.path else "")
                     + "; the cardiothoracic ratio is the base's own, not the requested one")
    insert_findings(Anatomy(canvas, lobes, landmarks), findings, placement_rng)
    canvas.hu += noise_rng.standard_normal(canvas.hu.shape, dtype=np.float32) * np.float32(CT_NOISE_HU)
    np.clip(canvas.hu, -1024.0, 3071.0, out=canvas.hu)
    np.rint(canvas.hu, out=canvas.hu)  # integer HU, as a scanner stores them (and exact in int16 files)
    ct = _ct_volume(seed, canvas, notes)
    xray = drr(ct, pixels=xray_pixels, seed=noise_rng)
    return ChestCase(seed=int(seed), findings=findings, ct=ct, xray=xray, labels=canvas.labels, lobes=lobes,
                     landmarks=landmarks)
