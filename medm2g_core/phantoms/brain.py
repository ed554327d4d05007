"""Brain phantom cases: one head per seed, imaged as CT and five MRI contrasts from one tissue model.

Anatomy comes from the MNI152 tissue atlas (:mod:`medm2g_core.phantoms.brain_atlas`): grey/white-matter
and fluid fractions, ventricles, and shells of subarachnoid CSF, dura, skull (cortical tables and
diploe) and scalp (galea/temporalis, fat, skin). Each case warps it with a random global scaling (0.92-1.08 per
axis), a small rotation and shift and a smooth displacement field of a few mm, and draws its findings
(:class:`~medm2g_core.phantoms.findings.BrainFindings`): a BraTS-like glioma (necrotic core, enhancing rim,
vasogenic oedema following the white matter, with mass effect), periventricular white-matter lesions, or
atrophy (larger ventricles, wider sulci and subarachnoid space).

Every voxel holds fractions of the tissues in :data:`LABELS` (partial volume), and each image is the
fraction-weighted sum of pure-tissue values, so all six images share one anatomy:

- MRI from physics: tissue proton density, T1 and T2 (3 T literature values, :data:`TISSUES`) through the
  spin-echo and inversion-recovery signal equations (:data:`MR_SEQUENCES`); T1ce is the T1 sequence with
  T1 and T2 shortened by gadolinium where it leaks (enhancing tumour, choroid plexus, venous sinus, dura,
  a little in muscle). Then one smooth multiplicative bias field per case, shared by all contrasts (it is the
  receive-coil sensitivity, a property of coil and head position, not of the sequence), and Rician noise
  (magnitude of signal plus complex Gaussian noise), so air has a positive noise floor.
- CT from tissue HU plus Gaussian noise, rounded to integer HU (exact in DICOM), clipped to -1024..3071.

Geometry: all six Volumes share one affine (RAS+ mm) laid out as a scanner writes axial slices: ``i``
runs from the patient's right to left, ``j`` from anterior to posterior, ``k`` from inferior to superior
(orientation code ``LPS``, DICOM ImageOrientationPatient 1,0,0,0,1,0). World coordinates are those of
the template (MNI mm, origin near the anterior commissure). The whole-head grid covers
:data:`HEAD_FOV_MM` (110 x 130 x 100 voxels at 2 mm); the head ends below in a short stump where the
template ends (z = -72 mm, the medulla); there is no face or neck. ``labels`` is on the same grid.

Random streams: findings come from ``default_rng(seed)`` when not given; anatomy, pathology placement and
acquisition (bias, noise) each have their own stream spawned from ``SeedSequence(seed)``, so the same seed
with other findings gives the same head and noise, and the same slab unless a tumour centres it.
"""

import functools
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

import medm2g_core
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume
from medm2g_core.phantoms.brain_atlas import (
    ATLAS_LABELS,
    FRACTION_CODE,
    HEAD_CENTRE_MM,
    LAYERS,
    SHELL_DEPTH_CODE,
    VENTRICLE_DEPTH_CODE,
    BrainAtlas,
    ShellScale,
    box_fraction,
    decode,
    layer_fractions,
    load_atlas,
    shell_boundaries,
)
from medm2g_core.phantoms.drr import drr
from medm2g_core.phantoms.findings import BrainFindings, Tumor
from medm2g_core.vocabulary import CONTRAST_OF_KEY, SKULL_DETECTOR_MM

LABELS = (*ATLAS_LABELS, "venous_sinus", "choroid_plexus", "necrosis", "enhancing", "edema", "wm_lesion")
LABEL_INDEX = {name: i for i, name in enumerate(LABELS)}
IMAGE_KEYS = ("ct", "mr_t1", "mr_t1ce", "mr_t2", "mr_flair", "mr_pd")
HEAD_FOV_MM = (220.0, 260.0, 200.0)  # x, y, z extent of the whole-head grid: room for the largest heads
FOV_CENTRE_MM = (0.0, -14.0, 14.0)
CT_RANGE_HU = (-1024.0, 3071.0)
MR_GAIN = 1000.0  # signal of pure water (PD 1, full recovery, no decay), a.u.


@dataclass(frozen=True)
class Tissue:
    """Pure-tissue properties: relative proton density, relaxation at 3 T, CT number, gadolinium after contrast."""

    pd: float
    t1_ms: float
    t2_ms: float
    hu: float
    gd_mmol_l: float = 0.0


# Sources (3 T):
# - GM, WM: T1 1331/832 ms, T2 110/80 ms, Wansapura et al., JMRI 1999; PD = water content (about 0.80/0.69),
#   Neeb et al., NeuroImage 2006.
# - CSF: water-like, T1 about 4.3 s and T2 about 2 s (approximate literature consensus).
# - Subcutaneous fat (T1 382, T2 68) and bone marrow (T1 586, T2 49): de Bazelaire et al., Radiology 2004.
#   The diploe is roughly a third trabecular bone, which gives no signal: hence its PD of 0.55.
# - Muscle (the scalp label: galea, temporalis, skin; T1 1412, T2 50) and blood (T1 1932): Stanisz et al.,
#   MRM 2005. Venous blood has a shorter T2 than arterial (deoxygenation): 70 ms. No flow voids.
# - Cortical bone: T2 well under 1 ms (ultrashort-TE studies, e.g. Du and Bydder), so no signal at
#   clinical echo times. Dura: dense collagen with a short T2 (approximate).
# - Tumour, oedema, lesions: approximate values in the ranges reported for gliomas and white-matter
#   hyperintensities (long T1 and T2; necrosis close to fluid). No single source: change when measured.
# - HU: air -1000, fat -100, muscle/skin 45, cortical bone 1500, diploe 600, dura 50, CSF 8, GM 38, WM 28,
#   blood 45; unenhanced tumour slightly hypodense, necrosis, oedema and lesions more so.
TISSUES: dict[str, Tissue] = {
    "background": Tissue(pd=0.0, t1_ms=1.0, t2_ms=1.0, hu=-1000.0),
    "scalp": Tissue(pd=0.75, t1_ms=1412.0, t2_ms=50.0, hu=45.0, gd_mmol_l=0.1),
    "fat": Tissue(pd=0.9, t1_ms=382.0, t2_ms=68.0, hu=-100.0),
    "skull_cortical": Tissue(pd=0.2, t1_ms=250.0, t2_ms=0.5, hu=1500.0),
    "skull_marrow": Tissue(pd=0.55, t1_ms=586.0, t2_ms=49.0, hu=600.0),
    "dura": Tissue(pd=0.5, t1_ms=1000.0, t2_ms=30.0, hu=50.0, gd_mmol_l=0.3),
    "csf": Tissue(pd=1.0, t1_ms=4300.0, t2_ms=2000.0, hu=8.0),
    "ventricle": Tissue(pd=1.0, t1_ms=4300.0, t2_ms=2000.0, hu=8.0),
    "gm": Tissue(pd=0.80, t1_ms=1331.0, t2_ms=110.0, hu=38.0),
    "wm": Tissue(pd=0.69, t1_ms=832.0, t2_ms=80.0, hu=28.0),
    "venous_sinus": Tissue(pd=0.85, t1_ms=1932.0, t2_ms=70.0, hu=45.0, gd_mmol_l=1.0),
    "choroid_plexus": Tissue(pd=0.85, t1_ms=1500.0, t2_ms=110.0, hu=40.0, gd_mmol_l=0.4),
    "necrosis": Tissue(pd=0.95, t1_ms=3000.0, t2_ms=400.0, hu=18.0),
    "enhancing": Tissue(pd=0.85, t1_ms=1700.0, t2_ms=120.0, hu=36.0, gd_mmol_l=0.25),
    "edema": Tissue(pd=0.88, t1_ms=1500.0, t2_ms=200.0, hu=20.0),
    "wm_lesion": Tissue(pd=0.78, t1_ms=1200.0, t2_ms=140.0, hu=22.0),
}
# Relaxivity of a gadoterate/gadobutrol-like agent at 3 T, per mmol/l and second (Rohrer et al., Invest
# Radiol 2005; Pintaske et al., Invest Radiol 2006): 1/T1 = 1/T1_0 + r1 C, 1/T2 = 1/T2_0 + r2 C.
GD_R1_PER_MMOL_S = 3.6
GD_R2_PER_MMOL_S = 4.3


@dataclass(frozen=True)
class MrSequence:
    """A spin-echo sequence, or inversion recovery when ``ti_ms`` is set (magnitude image)."""

    tr_ms: float
    te_ms: float
    ti_ms: float | None = None

    def signal(self, pd: np.ndarray, t1_ms: np.ndarray, t2_ms: np.ndarray) -> np.ndarray:
        """S = PD (1 - e^{-TR/T1}) e^{-TE/T2}, or PD |1 - 2 e^{-TI/T1} + e^{-TR/T1}| e^{-TE/T2} for IR."""
        recovery = np.exp(-self.tr_ms / t1_ms)
        if self.ti_ms is None:
            longitudinal = 1.0 - recovery
        else:
            longitudinal = np.abs(1.0 - 2.0 * np.exp(-self.ti_ms / t1_ms) + recovery)
        return pd * longitudinal * np.exp(-self.te_ms / t2_ms)


def csf_null_ti_ms(tr_ms: float, t1_csf_ms: float = TISSUES["csf"].t1_ms) -> float:
    """Inversion time that nulls CSF: T1 ln(2 / (1 + e^{-TR/T1})), close to T1 ln 2 for long TR."""
    return float(t1_csf_ms * np.log(2.0 / (1.0 + np.exp(-tr_ms / t1_csf_ms))))


MR_SEQUENCES: dict[str, MrSequence] = {
    "T1": MrSequence(tr_ms=500.0, te_ms=15.0),
    "T1ce": MrSequence(tr_ms=500.0, te_ms=15.0),
    "T2": MrSequence(tr_ms=4000.0, te_ms=100.0),
    "PD": MrSequence(tr_ms=3000.0, te_ms=15.0),
    "FLAIR": MrSequence(tr_ms=9000.0, te_ms=120.0, ti_ms=csf_null_ti_ms(9000.0)),
}


@dataclass(frozen=True)
class AnatomyRanges:
    """Per-case variation of the head (uniform ranges unless said otherwise)."""

    scale: tuple[float, float] = (0.92, 1.08)  # per axis, about HEAD_CENTRE_MM
    rotation_deg: tuple[float, float, float] = (3.0, 6.0, 4.0)  # max |angle| about x (pitch), y (roll), z (yaw)
    shift_mm: float = 3.0
    displacement_sd_mm: float = 1.5  # coefficients of the smooth field (about 2 mm sd, up to 5-7 mm)
    displacement_basis_mm: tuple[float, float] = (40.0, 28.0)  # (spacing, width)
    csf: tuple[float, float] = (0.8, 1.3)
    skull: tuple[float, float] = (0.85, 1.2)
    skull_ripple: float = 0.08  # amplitude of each of 3 thickness waves over the head
    muscle: tuple[float, float] = (0.7, 1.3)
    fat: tuple[float, float] = (0.5, 2.0)
    ventricle_mm: tuple[float, float] = (0.0, 1.0)  # ventricles wider than the template by this much


@dataclass(frozen=True)
class AtrophyEffect:
    """What atrophy = 1 does (scaled linearly by BrainFindings.atrophy)."""

    ventricle_mm: float = 4.0  # ventricle walls move out by this much
    sulcal_erosion: float = 0.45  # tissue fractions below this vanish (soft erosion of the cortex)
    cortical_thinning: float = 0.2  # fraction of grey matter lost where it remains
    subarachnoid_mm: float = 2.5  # wider CSF layer under the skull


@dataclass(frozen=True)
class AcquisitionRanges:
    """Per-case imaging imperfections."""

    mr_noise: tuple[float, float] = (0.015, 0.04)  # noise sd / brightest of GM and WM signal, per contrast
    bias_log_sd: float = 0.07  # log bias field coefficients, bases every 80 mm: about +-20 % over the head
    ct_noise_hu: tuple[float, float] = (3.0, 6.0)


# Tumour centres (MNI mm) per lobe in the right hemisphere; x is negated for the left one.
LOBE_CENTRES_MM = {
    "frontal": (28.0, 32.0, 22.0),
    "parietal": (30.0, -48.0, 38.0),
    "temporal": (44.0, -18.0, -14.0),
    "occipital": (22.0, -80.0, 8.0),
}
TUMOUR_JITTER_MM = 4.0
LESION_RADIUS_MM = (2.0, 5.0)
CHOROID_RADII_MM = (4.0, 7.0, 4.0)
LATERAL_VENTRICLE_LEVELS_MM = (4.0, 24.0)  # MNI z range of the lateral ventricle bodies, for axial slabs

ANATOMY = AnatomyRanges()
ATROPHY = AtrophyEffect()
ACQUISITION = AcquisitionRanges()


@dataclass
class BrainCase:
    """One phantom head: findings, six co-registered images, and the tissue label of every voxel."""

    seed: int
    findings: BrainFindings
    images: dict[str, Volume]  # IMAGE_KEYS
    labels: np.ndarray  # uint8 index into LABELS, same grid as the images


@dataclass(frozen=True)
class _Anatomy:
    """The per-case draw of everything that is not a finding or the acquisition."""

    to_atlas: np.ndarray  # (3, 3) world -> atlas linear part, about HEAD_CENTRE_MM
    shift_mm: np.ndarray  # (3,)
    displacement: np.ndarray  # (3, na, nb, nc) coefficients, mm
    shell: ShellScale
    ventricle_mm: float
    slab_level: float  # 0..1 within LATERAL_VENTRICLE_LEVELS_MM


@dataclass
class _Grid:
    """Output grid: world coordinates (mm) of the voxel centres along i (R->L), j (A->P), k (I->S)."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    spacing_mm: float
    affine: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.affine = np.diag([-self.spacing_mm, -self.spacing_mm, self.spacing_mm, 1.0])
        self.affine[:3, 3] = [self.x[0], self.y[0], self.z[0]]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.x.size, self.y.size, self.z.size)


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _basis_centres(spacing_mm: float) -> list[np.ndarray]:
    return [
        np.arange(c - e / 2, c + e / 2 + spacing_mm / 2, spacing_mm)
        for c, e in zip(FOV_CENTRE_MM, HEAD_FOV_MM, strict=True)
    ]


def _sample_anatomy(rng: np.random.Generator, atrophy: float) -> _Anatomy:
    r = ANATOMY
    scale = rng.uniform(*r.scale, size=3)
    angles = np.deg2rad(rng.uniform(-1, 1, size=3) * np.array(r.rotation_deg))
    shift = rng.uniform(-r.shift_mm, r.shift_mm, size=3)
    centres = _basis_centres(r.displacement_basis_mm[0])
    displacement = rng.normal(0, r.displacement_sd_mm, size=(3, *(c.size for c in centres)))
    ripple = tuple(
        (*rng.normal(0, 1.5, size=3), rng.uniform(0, 2 * np.pi), r.skull_ripple) for _ in range(3)
    )
    shell = ShellScale(
        csf=rng.uniform(*r.csf), csf_extra_mm=ATROPHY.subarachnoid_mm * atrophy, skull=rng.uniform(*r.skull),
        muscle=rng.uniform(*r.muscle), fat=rng.uniform(*r.fat), skull_ripple=ripple,
    )
    ventricle = rng.uniform(*r.ventricle_mm) + ATROPHY.ventricle_mm * atrophy
    to_atlas = np.linalg.inv(_rotation(angles) @ np.diag(scale))
    return _Anatomy(to_atlas, shift, displacement, shell, float(ventricle), float(rng.uniform(0.25, 0.75)))


def _to_world(anatomy: _Anatomy, atlas_mm: np.ndarray) -> np.ndarray:
    """World position of an atlas point, ignoring the small displacement field."""
    centre = np.asarray(HEAD_CENTRE_MM)
    return np.linalg.solve(anatomy.to_atlas, np.asarray(atlas_mm) - centre) + centre + anatomy.shift_mm


def _grid(anatomy: _Anatomy, spacing_mm: float, slices: int | None, focus_mm: np.ndarray | None) -> _Grid:
    """The whole-head grid, or an axial slab of ``slices`` slices on the same lattice."""
    n = [round(extent / spacing_mm) for extent in HEAD_FOV_MM]
    half = [(count - 1) * spacing_mm / 2 for count in n]
    cx, cy, cz = FOV_CENTRE_MM
    x = cx + half[0] - spacing_mm * np.arange(n[0])  # right to left
    y = cy + half[1] - spacing_mm * np.arange(n[1])  # anterior to posterior
    z = cz - half[2] + spacing_mm * np.arange(n[2])  # inferior to superior
    if slices is not None:
        if focus_mm is None:
            lo, hi = LATERAL_VENTRICLE_LEVELS_MM
            focus_mm = np.array([0.0, -14.0, lo + anatomy.slab_level * (hi - lo)])
        level = _to_world(anatomy, focus_mm)[2]
        first = round((level - z[0]) / spacing_mm - (slices - 1) / 2)
        z = z[0] + spacing_mm * np.arange(first, first + slices)
    return _Grid(x, y, z, spacing_mm)


def _gaussian_bases(axis_mm: np.ndarray, centres_mm: np.ndarray, width_mm: float) -> np.ndarray:
    return np.exp(-0.5 * ((axis_mm[:, None] - centres_mm[None, :]) / width_mm) ** 2)


def _smooth_field(coefficients: np.ndarray, grid: _Grid, spacing_mm: float, width_mm: float) -> np.ndarray:
    """Sum of separable Gaussian bases on a lattice (centres every ``spacing_mm``) at the grid, shape (I, J, K)."""
    bx, by, bz = (
        _gaussian_bases(axis, centres, width_mm)
        for axis, centres in zip((grid.x, grid.y, grid.z), _basis_centres(spacing_mm), strict=True)
    )
    return np.einsum("abc,ia,jb,kc->ijk", coefficients, bx, by, bz, optimize=True)


def _atlas_points(anatomy: _Anatomy, grid: _Grid) -> np.ndarray:
    """Atlas (MNI mm) position of every output voxel, shape (3, N)."""
    axes = (grid.x, grid.y, grid.z)
    rel = [axis - centre - shift for axis, centre, shift in zip(axes, HEAD_CENTRE_MM, anatomy.shift_mm, strict=True)]
    spacing, width = ANATOMY.displacement_basis_mm
    points = np.empty((3, *grid.shape))
    for a in range(3):
        m = anatomy.to_atlas[a]
        points[a] = m[0] * rel[0][:, None, None] + m[1] * rel[1][None, :, None] + m[2] * rel[2][None, None, :]
        points[a] += HEAD_CENTRE_MM[a] + _smooth_field(anatomy.displacement[a], grid, spacing, width)
    return points.reshape(3, -1)


def _sample(atlas: BrainAtlas, name: str, points: np.ndarray, code: tuple[float, float]) -> np.ndarray:
    shell = name == "shell_depth"
    raw = ndimage.map_coordinates(
        getattr(atlas, name), atlas.to_index(points, shell=shell), order=1, mode="nearest", output=np.float32
    )
    return decode(raw, code)


@functools.lru_cache(maxsize=1)
def _periventricular_wm() -> np.ndarray:
    """Atlas points (3, N) in white matter 2-12 mm from the lateral ventricles: where WM lesions cluster."""
    atlas = load_atlas()
    distance = decode(atlas.ventricle_depth, VENTRICLE_DEPTH_CODE)
    wm = decode(atlas.wm, FRACTION_CODE)
    idx = np.nonzero((wm > 0.85) & (distance > 2.0) & (distance < 12.0))
    points = atlas.affine[:3, :3] @ np.array(idx, dtype=float) + atlas.affine[:3, 3:4]
    return points[:, points[2] > 0.0]  # above the third ventricle and basal ganglia


@dataclass(frozen=True)
class _TumourShape:
    centre_mm: np.ndarray
    axes: np.ndarray  # (3, 3) rows: direction / relative radius (ellipsoid)
    lobulation: tuple[tuple[float, float, float, float, float], ...]
    necrosis_lobulation: tuple[tuple[float, float, float, float, float], ...]
    edema_lobulation: tuple[tuple[float, float, float, float, float], ...]


def _waves(rng: np.random.Generator, amplitude: float) -> tuple[tuple[float, float, float, float, float], ...]:
    return tuple((*rng.normal(0, 2.0, size=3), rng.uniform(0, 2 * np.pi), amplitude) for _ in range(3))


def _sample_tumour(rng: np.random.Generator, tumor: Tumor) -> _TumourShape:
    centre = np.array(LOBE_CENTRES_MM[tumor.lobe]) + rng.normal(0, TUMOUR_JITTER_MM, size=3)
    centre[0] = abs(centre[0]) * (1.0 if tumor.hemisphere == "right" else -1.0)  # RAS: left is negative x
    rotation = _rotation(rng.uniform(-np.pi, np.pi, size=3))
    axes = rotation.T / rng.uniform(0.8, 1.2, size=3)[:, None]
    return _TumourShape(centre, axes, _waves(rng, 0.12), _waves(rng, 0.2), _waves(rng, 0.3))


@dataclass(frozen=True)
class _Pathology:
    """The per-case draw of where and how the findings appear."""

    tumour: _TumourShape | None
    lesions: tuple[np.ndarray, np.ndarray]  # centres (N, 3) and radii (N, 3), atlas mm
    enhancement: float  # factor on the enhancing tumour's gadolinium concentration


def _wave_sum(unit: np.ndarray, waves: tuple[tuple[float, float, float, float, float], ...]) -> np.ndarray:
    return sum((a * np.cos(kx * unit[0] + ky * unit[1] + kz * unit[2] + ph) for kx, ky, kz, ph, a in waves),
               np.zeros(unit.shape[1], dtype=unit.dtype))


def _mass_effect(points: np.ndarray, centre: np.ndarray, radius_mm: float) -> np.ndarray:
    """Push tissue away from ``centre`` as if a ball of ``radius_mm`` were inserted (volume-preserving)."""
    rel = points - centre[:, None]
    r = np.linalg.norm(rel, axis=0)
    near = r < 6 * radius_mm
    source = np.cbrt(np.maximum(r[near] ** 3 - radius_mm**3, 0.0))
    moved = points.copy()
    moved[:, near] = centre[:, None] + rel[:, near] * (source / np.maximum(r[near], 1e-6))
    return moved


def _tumour_fractions(points: np.ndarray, shape: _TumourShape, tumor: Tumor,
                      width_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tumour, necrosis, oedema zone) fractions at atlas points (before mass effect)."""
    rel = points - shape.centre_mm[:, None]
    distance = np.linalg.norm(shape.axes @ rel, axis=0)
    unit = rel / np.maximum(np.linalg.norm(rel, axis=0), 1e-6)
    radius = tumor.radius_mm * (1.0 + _wave_sum(unit, shape.lobulation))
    tumour = box_fraction(radius - distance, width_mm)
    core = tumor.necrosis_fraction * tumor.radius_mm * (1.0 + _wave_sum(unit, shape.necrosis_lobulation))
    necrosis = box_fraction(np.minimum(core, radius - 2.0) - distance, width_mm)  # rim at least 2 mm
    edema_radius = radius + tumor.edema_mm * np.clip(1.0 + _wave_sum(unit, shape.edema_lobulation), 0.2, None)
    return tumour, necrosis, box_fraction(edema_radius - distance, width_mm) - tumour


def _sample_lesions(rng: np.random.Generator, count: int,
                    z_range_mm: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """(centres (N, 3), radii (N, 3)) of WM lesions in periventricular white matter (within a slab's range)."""
    candidates = _periventricular_wm()
    if z_range_mm is not None:
        within = (candidates[2] > z_range_mm[0]) & (candidates[2] < z_range_mm[1])
        candidates = candidates[:, within] if within.any() else candidates
    centres = candidates[:, rng.integers(0, candidates.shape[1], size=count)].T
    return centres, rng.uniform(*LESION_RADIUS_MM, size=(count, 3))


def _lesion_fraction(points: np.ndarray, lesions: tuple[np.ndarray, np.ndarray], width_mm: float) -> np.ndarray:
    """Union of small ellipsoids at atlas points."""
    fraction = np.zeros(points.shape[1], dtype=np.float32)
    for centre, radius in zip(*lesions, strict=True):
        rel = (points - centre[:, None]) / radius[:, None]
        near = np.all(np.abs(rel) < 1.0 + width_mm / radius.min(), axis=0)
        rho = np.linalg.norm(rel[:, near], axis=0)
        fraction[near] = np.maximum(fraction[near], box_fraction((1.0 - rho) * radius.min(), width_mm))
    return fraction


def _sinus_fraction(points: np.ndarray, depth_mm: np.ndarray, dura_outer_mm: np.ndarray,
                    width_mm: float) -> np.ndarray:
    """Superior sagittal sinus: a midline triangle in the dura from the frontal bone to the torcula."""
    x, y, z = points
    base_half_width = 2.5 + 2.5 * np.clip((45.0 - y) / 145.0, 0.0, 1.0)
    taper = np.clip((depth_mm - (dura_outer_mm - 7.0)) / 7.0, 0.0, 1.0) * (depth_mm < dura_outer_mm)
    along = box_fraction(45.0 - y, 10.0) * box_fraction(z, 10.0)  # fades out frontally and at the torcula
    return box_fraction(base_half_width * taper - np.abs(x), width_mm) * along


def _choroid_fraction(atlas: BrainAtlas, points: np.ndarray, width_mm: float) -> np.ndarray:
    radii = np.array(CHOROID_RADII_MM)[:, None]
    rho = np.min([np.linalg.norm((points - c[:, None]) / radii, axis=0) for c in atlas.choroid_mm], axis=0)
    return box_fraction((1.0 - rho) * radii.min(), width_mm)


def _brain_tissue(atlas: BrainAtlas, points: np.ndarray, inside: np.ndarray, anatomy: _Anatomy, atrophy: float,
                  width_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(GM, WM, distance from the ventricles in mm) at atlas points, after atrophy and per-case ventricle size."""
    gm, wm = (_sample(atlas, name, points, FRACTION_CODE) for name in ("gm", "wm"))
    ventricle_mm = _sample(atlas, "ventricle_depth", points, VENTRICLE_DEPTH_CODE)
    tissue = gm + wm
    erosion = ATROPHY.sulcal_erosion * atrophy
    kept = np.clip((tissue - erosion) / (1.0 - erosion), 0.0, 1.0) / np.maximum(tissue, 1e-6)
    widened = box_fraction(anatomy.ventricle_mm - ventricle_mm, width_mm) - box_fraction(-ventricle_mm, width_mm)
    gm *= kept * (1.0 - ATROPHY.cortical_thinning * atrophy) * (1.0 - widened)
    wm *= kept * (1.0 - widened)
    fit = np.minimum(1.0, inside / np.maximum(gm + wm, 1e-6))
    return gm * fit, wm * fit, ventricle_mm


def _add_tumour(parts: dict[str, np.ndarray], points: np.ndarray, inside: np.ndarray, shape: _TumourShape,
                tumor: Tumor, width_mm: float) -> None:
    """Replace tissue by tumour (necrosis, enhancing rim) and turn surrounding white matter into oedema."""
    tumour, necrosis, zone = _tumour_fractions(points, shape, tumor, width_mm)
    gm, wm = parts["gm"] * (1.0 - tumour), parts["wm"] * (1.0 - tumour)
    edema_wm, edema_gm = 0.9 * zone * wm, 0.3 * zone * gm
    parts.update(
        necrosis=necrosis * inside, enhancing=(tumour - necrosis) * inside, edema=edema_wm + edema_gm,
        gm=gm - edema_gm, wm=wm - edema_wm,
    )


def _intracranial(atlas: BrainAtlas, points: np.ndarray, inside: np.ndarray, findings: BrainFindings,
                  anatomy: _Anatomy, pathology: _Pathology, width_mm: float) -> dict[str, np.ndarray]:
    """Fractions of the brain-side tissues in voxels with an intracranial part (``inside`` of each voxel)."""
    shape, tumor = pathology.tumour, findings.tumor
    moved = points
    if shape is not None and tumor is not None:
        moved = _mass_effect(points, shape.centre_mm, 0.5 * tumor.radius_mm + 0.25 * tumor.edema_mm)
    gm, wm, ventricle_mm = _brain_tissue(atlas, moved, inside, anatomy, findings.atrophy, width_mm)
    zero = np.zeros_like(gm)
    parts = {"gm": gm, "wm": wm, "necrosis": zero, "enhancing": zero, "edema": zero, "wm_lesion": zero}
    if shape is not None and tumor is not None:
        _add_tumour(parts, points, inside, shape, tumor, width_mm)
    if findings.wm_lesions:
        parts["wm_lesion"] = _lesion_fraction(moved, pathology.lesions, width_mm) * parts["wm"]
        parts["wm"] = parts["wm"] - parts["wm_lesion"]
    fluid = np.clip(inside - sum(parts.values()), 0.0, None)
    ventricular = fluid * box_fraction(anatomy.ventricle_mm + 1.5 - ventricle_mm, width_mm)
    choroid = _choroid_fraction(atlas, moved, width_mm) * ventricular
    return {**parts, "choroid_plexus": choroid, "ventricle": ventricular - choroid, "csf": fluid - ventricular}


def _fractions(atlas: BrainAtlas, points: np.ndarray, findings: BrainFindings, anatomy: _Anatomy,
               pathology: _Pathology, width_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices of non-air voxels, tissue fractions (len(LABELS), M) there)."""
    depth = _sample(atlas, "shell_depth", points, SHELL_DEPTH_CODE)
    head = np.nonzero(depth < 45.0)[0]
    points, depth = points[:, head], depth[head]
    bounds = shell_boundaries(points, anatomy.shell)
    inside, layers = layer_fractions(depth, bounds, width_mm)
    fractions = np.zeros((len(LABELS), head.size), dtype=np.float32)
    fractions[LABEL_INDEX["background"]] = 1.0 - inside - layers.sum(axis=0)
    for layer, name in zip(layers, LAYERS, strict=True):
        fractions[LABEL_INDEX[name]] += layer
    brain = np.nonzero(inside > 0)[0]
    brain_parts = _intracranial(atlas, points[:, brain], inside[brain], findings, anatomy, pathology, width_mm)
    for name, values in brain_parts.items():
        fractions[LABEL_INDEX[name], brain] += values
    share = _sinus_fraction(points, depth, bounds[1], width_mm)
    for name in ("csf", "dura"):
        fractions[LABEL_INDEX["venous_sinus"]] += share * fractions[LABEL_INDEX[name]]
        fractions[LABEL_INDEX[name]] *= 1.0 - share
    return head, fractions


def _tissue_values(enhancing_gd: float) -> np.ndarray:
    """Pure-tissue value of each image (rows IMAGE_KEYS) for each label (columns LABELS)."""
    tissues = [TISSUES[name] for name in LABELS]
    pd, t1, t2 = (np.array([getattr(t, key) for t in tissues]) for key in ("pd", "t1_ms", "t2_ms"))
    gd = np.array([enhancing_gd if name == "enhancing" else TISSUES[name].gd_mmol_l for name in LABELS])
    t1_gd = 1.0 / (1.0 / t1 + GD_R1_PER_MMOL_S * gd / 1000.0)
    t2_gd = 1.0 / (1.0 / t2 + GD_R2_PER_MMOL_S * gd / 1000.0)
    rows = [np.array([t.hu for t in tissues])]
    for key in IMAGE_KEYS[1:]:
        contrast = CONTRAST_OF_KEY[key]
        relax = (t1_gd, t2_gd) if contrast == "T1ce" else (t1, t2)
        rows.append(MR_GAIN * MR_SEQUENCES[contrast].signal(pd, *relax))
    return np.array(rows, dtype=np.float32)


def _acquire(clean: np.ndarray, grid: _Grid, rng: np.random.Generator, values: np.ndarray) -> dict[str, np.ndarray]:
    """Noisy images from noise-free ones (IMAGE_KEYS, I, J, K): bias field and Rician noise on MR, noise on CT."""
    a = ACQUISITION
    bias_coefficients = rng.normal(0, a.bias_log_sd, size=tuple(c.size for c in _basis_centres(80.0)))
    bias = np.exp(_smooth_field(bias_coefficients, grid, 80.0, 60.0)).astype(np.float32)
    images = {}
    ct_sd = rng.uniform(*a.ct_noise_hu)
    noise = rng.standard_normal(grid.shape, dtype=np.float32)
    images["ct"] = np.clip(np.rint(clean[0] + ct_sd * noise), *CT_RANGE_HU)
    brain = [LABEL_INDEX["gm"], LABEL_INDEX["wm"]]
    for row, key in enumerate(IMAGE_KEYS[1:], start=1):
        sd = rng.uniform(*a.mr_noise) * values[row, brain].max()
        real, imag = rng.standard_normal((2, *grid.shape), dtype=np.float32) * sd
        images[key] = np.hypot(clean[row] * bias + real, imag)
    return images


def _volumes(images: dict[str, np.ndarray], grid: _Grid, seed: int) -> dict[str, Volume]:
    provenance = {"model": "medm2g-phantom-brain", "model_version": medm2g_core.__version__, "seed": str(seed)}
    volumes = {}
    for key, data in images.items():
        contrast = CONTRAST_OF_KEY.get(key)
        meta = SourceMeta(
            format="synthetic", body_part="HEAD", notes=[f"medm2g brain phantom, seed {seed}"],
            series_description=f"SYNTHETIC phantom {contrast or 'CT'}",
            window_center=None if contrast else 40.0, window_width=None if contrast else 80.0,
        )
        volumes[key] = Volume(
            data=data.astype(np.float32), affine=grid.affine.copy(), modality="MR" if contrast else "CT",
            units="a.u." if contrast else "HU", contrast=contrast, meta=meta, synthetic=True,
            provenance=dict(provenance),
        )
    return volumes


def make_brain_case(seed: int, findings: BrainFindings | None = None, spacing_mm: float = 2.0,
                    slices: int | None = None) -> BrainCase:
    """One brain phantom case: CT, T1, T1ce, T2, FLAIR and PD images and a label map on one grid.

    ``findings`` defaults to ``BrainFindings.sample(np.random.default_rng(seed))``. ``slices`` gives an
    axial slab of that many slices centred on a seeded level through the lateral ventricles (through the
    tumour centre when there is one, so the slab shows it); ``None`` gives the whole head.
    """
    if seed < 0 or spacing_mm <= 0 or (slices is not None and slices < 1):
        raise InputError(f"need seed >= 0, spacing_mm > 0 and slices >= 1; got {seed}, {spacing_mm} and {slices}")
    if findings is None:
        findings = BrainFindings.sample(np.random.default_rng(seed))
    anatomy_seq, pathology_seq, acquisition_seq = np.random.SeedSequence(seed).spawn(3)
    anatomy = _sample_anatomy(np.random.default_rng(anatomy_seq), findings.atrophy)
    rng = np.random.default_rng(pathology_seq)
    tumour = _sample_tumour(rng, findings.tumor) if findings.tumor is not None else None
    grid = _grid(anatomy, spacing_mm, slices, None if tumour is None else tumour.centre_mm)
    points = _atlas_points(anatomy, grid)
    z_range = (float(points[2].min()), float(points[2].max())) if slices is not None else None
    pathology = _Pathology(tumour, _sample_lesions(rng, findings.wm_lesions, z_range), rng.uniform(0.7, 1.3))
    width = spacing_mm / float(np.cbrt(abs(np.linalg.det(np.linalg.inv(anatomy.to_atlas)))))
    head, fractions = _fractions(load_atlas(), points, findings, anatomy, pathology, width)
    values = _tissue_values(TISSUES["enhancing"].gd_mmol_l * pathology.enhancement)
    clean = np.zeros((len(IMAGE_KEYS), int(np.prod(grid.shape))), dtype=np.float32)
    clean[0] = TISSUES["background"].hu
    clean[:, head] = values @ fractions
    labels = np.zeros(clean.shape[1], dtype=np.uint8)
    labels[head] = np.argmax(fractions, axis=0)
    images = _acquire(clean.reshape(-1, *grid.shape), grid, np.random.default_rng(acquisition_seq), values)
    return BrainCase(seed=seed, findings=findings, images=_volumes(images, grid, seed),
                     labels=labels.reshape(grid.shape))





def skull_radiograph(seed: int, findings: BrainFindings, spacing_mm: float = 2.0, pixels: int = 256) -> Volume:
    """PA skull radiograph of a brain case: the DRR of its whole-head CT.

    The head is the case's own (same seed and findings, so the same skull, pose and tumour); only the white
    matter lesions, which a radiograph cannot show, are placed anew because they follow the grid's extent.
    """
    head = make_brain_case(seed, findings=findings, spacing_mm=spacing_mm, slices=None)
    noise = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    return drr(head.images["ct"], pixels=pixels, seed=noise, detector_size_mm=SKULL_DETECTOR_MM, body_part="SKULL")
