"""Digitally reconstructed radiographs: a PA chest X-ray computed from a CT volume.

Geometry (a point source, as an upright PA chest radiograph is taken):
- the CT is reoriented to RAS+ (axis flips and swaps only) and the beam runs along +y, posterior to anterior;
- the detector is a square of ``detector_size_mm`` in the coronal plane that touches the anterior face of
  the CT grid; the source is ``sid_mm`` (1.8 m) behind it; the central ray passes through the grid centre in
  x and z. A point at depth ``y`` is magnified by ``M(y) = sid / (y - y_source)`` (about 1.05-1.15 for a chest,
  posterior structures more than anterior ones, as in a real PA film);
- the line integral is computed slab by slab (slabs of ``SLAB_MM``): each slab's attenuation is summed
  along y, magnified about the central ray and averaged over each detector pixel's footprint (the exact
  pixel average of the linearly interpolated slab), then multiplied by the ray obliquity factor. The body is
  taken to continue beyond the first and last CT slice (edge extension along z), as a radiograph's field
  reaches past a chest CT's scan range; outside the grid laterally and in depth there is air.

Image layout of the returned Volume (2D, shape ``(pixels, pixels, 1)``): ``data[u, v]`` with ``u`` the screen
column and ``v`` the screen row of a conventionally displayed PA film: the patient's RIGHT is on the LEFT of
the screen, so ``u`` increases toward the patient's left (RAS -x), and ``v`` increases downward, toward the
feet (RAS -z). The third axis is the beam's opposite, RAS -y, as DICOM's row x column normal for a PA image
(ImageOrientationPatient 1,0,0,0,0,-1 in LPS): the orientation code is ``LIP``. The affine places the pixels
on the detector plane; pixel spacing is ``detector_size_mm / pixels`` (DICOM's Imager Pixel Spacing).

Attenuation (a bilinear HU model, as used for CT-based attenuation correction): at the effective energy
``E``, ``mu = mu_water(E) * (1 + HU/1000)`` for HU <= 0 (air to water) and for HU > 0 a steeper line through
cortical bone, ``mu = mu_water + HU/1500 * (mu_bone(E) - mu_water)``, because calcium's photoelectric
absorption makes bone attenuate more at radiographic energies than its CT number says. CT numbers saturate in
metal, so voxels at or above ``METAL_HU`` are taken as titanium (pacemaker cans, wires). Mass attenuation
coefficients of water, ICRU cortical bone (1.92 g/cm3) and titanium (4.54 g/cm3) are NIST XCOM values,
interpolated log-log in energy (40-100 keV).

Detection: Beer-Lambert ``I = I0 exp(-integral)``, Poisson counts with ``photons`` per pixel in the open
beam (``math.inf`` gives the noise-free expectation), ``p = -log(I/I0)``, unsharp masking of ``p`` as digital
radiography processing does (``UNSHARP_GAIN`` x the detail finer than ``UNSHARP_SIGMA_MM``: vessel markings and
rib edges stand out, large areas keep their level), then a sigmoid characteristic curve in ``p`` (film-like
H&D response) mapped to [0, 1]: MONOCHROME2, bright where attenuation is high (bone,
mediastinum, diaphragm), dark in the lungs, black in open air. The curve is fixed, not fitted per image, so
images of different cases are on one intensity scale.
"""

import math
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

import medm2g_core
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume
from medm2g_core.vocabulary import DETECTOR_SIZE_MM

SID_MM = 1800.0
SLAB_MM = 10.0
BONE_REFERENCE_HU = 1500.0
BONE_DENSITY_G_CM3 = 1.92
# NIST XCOM mass attenuation coefficients (cm^2/g) with coherent scattering.
ENERGIES_KEV = np.array([40.0, 50.0, 60.0, 80.0, 100.0])
WATER_MASS_ATTENUATION_CM2_G = np.array([0.2683, 0.2269, 0.2059, 0.1837, 0.1707])
BONE_MASS_ATTENUATION_CM2_G = np.array([0.6655, 0.4242, 0.3148, 0.2229, 0.1855])
TITANIUM_MASS_ATTENUATION_CM2_G = np.array([1.213, 0.6833, 0.4625, 0.2655, 0.1940])
TITANIUM_DENSITY_G_CM3 = 4.54
METAL_HU = 3000.0  # CT numbers saturate in metal: at and above this, a voxel is taken to be titanium
# Characteristic curve: p (dimensionless line integral) -> display value; midpoint and width in p.
CURVE_MIDPOINT = 4.0
CURVE_WIDTH = 1.1
MIN_COUNTS = 0.5  # a pixel that detected no photon is read as half a photon (finite log)
# Unsharp masking of the log image, as radiograph processing does: p + gain * (p - gaussian(p, sigma)).
UNSHARP_SIGMA_MM = 12.0
UNSHARP_GAIN = 0.8


def attenuation_per_mm(kev: float) -> tuple[float, float, float]:
    """Linear attenuation (1/mm) of water, cortical bone and titanium at ``kev``."""
    if not ENERGIES_KEV[0] <= kev <= ENERGIES_KEV[-1]:
        raise InputError(f"effective energy must be within {ENERGIES_KEV[0]:g}-{ENERGIES_KEV[-1]:g} keV; got {kev:g}")

    def at(table: np.ndarray) -> float:
        return math.exp(np.interp(math.log(kev), np.log(ENERGIES_KEV), np.log(table))) / 10.0

    return (at(WATER_MASS_ATTENUATION_CM2_G), at(BONE_MASS_ATTENUATION_CM2_G) * BONE_DENSITY_G_CM3,
            at(TITANIUM_MASS_ATTENUATION_CM2_G) * TITANIUM_DENSITY_G_CM3)


def hu_to_mu(hu: np.ndarray, kev: float = 60.0) -> np.ndarray:
    """Linear attenuation (1/mm, float32) of CT numbers by the bilinear model (metal apart); never negative."""
    mu_water, mu_bone, mu_metal = attenuation_per_mm(kev)
    hu = np.asarray(hu, dtype=np.float32)
    soft = mu_water * (1.0 + np.minimum(hu, 0.0) / 1000.0)
    dense = (mu_bone - mu_water) / BONE_REFERENCE_HU * np.maximum(hu, 0.0)
    mu = np.maximum(soft + dense, 0.0)
    return np.where(hu >= METAL_HU, np.float32(mu_metal), mu).astype(np.float32)


def _hat_integral(t: np.ndarray) -> np.ndarray:
    """Antiderivative of the linear-interpolation hat function (support -1..1, integral 1)."""
    t = np.clip(t, -1.0, 1.0)
    return np.where(t < 0, 0.5 * (t + 1.0) ** 2, 1.0 - 0.5 * (1.0 - t) ** 2)


def _footprint_weights(centres: np.ndarray, width: float, n: int, extend_edges: bool) -> np.ndarray:
    """(pixels, n) weights averaging a linearly interpolated row of ``n`` samples over each pixel footprint.

    ``centres`` and ``width`` are in sample-index units. Beyond the samples the row is zero, or with
    ``extend_edges`` equal to its first/last sample.
    """
    low, high = centres - width / 2.0, centres + width / 2.0
    if extend_edges:
        below = np.clip(np.minimum(high, 0.0) - low, 0.0, None)
        above = np.clip(high - np.maximum(low, n - 1.0), 0.0, None)
        low, high = np.clip(low, 0.0, n - 1.0), np.clip(high, 0.0, n - 1.0)
    index = np.arange(n, dtype=np.float64)
    weights = _hat_integral(high[:, None] - index) - _hat_integral(low[:, None] - index)
    if extend_edges:
        weights[:, 0] += below
        weights[:, -1] += above
    return (weights / width).astype(np.float32)


def canonical_grid(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Origin (mm), spacing (mm) and shape of a grid once reoriented to RAS+ by flips and axis swaps."""
    transform = nib.orientations.io_orientation(affine)
    reoriented = affine @ nib.orientations.inv_ornt_aff(transform, shape)
    order = transform[:, 0].astype(int)
    new_shape = tuple(int(shape[a]) for a in np.argsort(order))
    return reoriented[:3, 3].copy(), np.linalg.norm(reoriented[:3, :3], axis=0), new_shape


def canonical(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The voxels reoriented to RAS+ by flips and axis swaps, with that grid's origin and spacing (mm)."""
    data = nib.orientations.apply_orientation(volume.data, nib.orientations.io_orientation(volume.affine))
    origin, spacing, _ = canonical_grid(volume.affine, volume.shape)
    return np.ascontiguousarray(data), origin, spacing


@dataclass(frozen=True)
class PAGeometry:
    """Where a CT grid, the source and the detector are for one PA projection (all RAS+ mm)."""

    origin: np.ndarray  # RAS position of voxel (0, 0, 0) of the canonical grid
    spacing: np.ndarray  # canonical voxel size
    shape: tuple[int, int, int]  # canonical grid shape
    pixels: int
    detector_size_mm: float = DETECTOR_SIZE_MM
    sid_mm: float = SID_MM

    @classmethod
    def for_volume(cls, ct: Volume, pixels: int, detector_size_mm: float = DETECTOR_SIZE_MM,
                   sid_mm: float = SID_MM) -> "PAGeometry":
        if ct.is_2d:
            raise InputError("a DRR needs a 3D CT volume; got a single slice")
        origin, spacing, shape = canonical_grid(ct.affine, ct.shape)
        return cls(origin, spacing, shape, int(pixels), float(detector_size_mm), float(sid_mm))  # type: ignore[arg-type]

    @property
    def pixel_mm(self) -> float:
        return self.detector_size_mm / self.pixels

    @property
    def centre(self) -> np.ndarray:
        """Where the central ray crosses the grid centre (RAS)."""
        return self.origin + self.spacing * (np.asarray(self.shape) - 1) / 2.0

    @property
    def detector_y(self) -> float:
        return float(self.origin[1] + self.spacing[1] * (self.shape[1] - 0.5))

    def magnification(self, y_mm: np.ndarray | float) -> np.ndarray | float:
        """Detector-plane magnification of points at depth ``y_mm`` (RAS y)."""
        return self.sid_mm / (np.asarray(y_mm) - (self.detector_y - self.sid_mm))

    def pixel_offsets(self) -> np.ndarray:
        """Offset (mm) of each column/row centre from the central ray on the detector, in screen direction."""
        return (np.arange(self.pixels) - (self.pixels - 1) / 2.0) * self.pixel_mm

    def project_point(self, ras_mm: np.ndarray) -> np.ndarray:
        """Continuous (column, row) of RAS points (..., 3) on the detector."""
        ras_mm = np.asarray(ras_mm, dtype=np.float64)
        m = self.magnification(ras_mm[..., 1])
        along_column = -(ras_mm[..., 0] - self.centre[0]) * m
        along_row = -(ras_mm[..., 2] - self.centre[2]) * m
        middle = (self.pixels - 1) / 2.0
        return np.stack([middle + along_column / self.pixel_mm, middle + along_row / self.pixel_mm], axis=-1)

    def affine(self) -> np.ndarray:
        """RAS+ affine of the detector image: columns toward patient left, rows toward the feet."""
        affine = np.zeros((4, 4))
        affine[0, 0] = -self.pixel_mm
        affine[2, 1] = -self.pixel_mm
        affine[1, 2] = -1.0
        affine[3, 3] = 1.0
        first = -self.pixel_offsets()[0]
        affine[:3, 3] = [self.centre[0] + first, self.detector_y, self.centre[2] + first]
        return affine

    def integrate(self, values: np.ndarray) -> np.ndarray:
        """Line integrals (value x mm) of a canonical-grid array along the rays: a (pixels, pixels) image."""
        values = np.asarray(values, dtype=np.float32)
        slab = max(1, round(SLAB_MM / self.spacing[1]))
        offsets = self.pixel_offsets()
        image = np.zeros((self.pixels, self.pixels), dtype=np.float32)
        for start in range(0, self.shape[1], slab):
            stop = min(start + slab, self.shape[1])
            summed = values[:, start:stop, :].sum(axis=1) * np.float32(self.spacing[1])
            depth = self.origin[1] + self.spacing[1] * (start + stop - 1) / 2.0
            m = float(self.magnification(depth))
            cols = (self.centre[0] - offsets / m - self.origin[0]) / self.spacing[0]
            rows = (self.centre[2] - offsets / m - self.origin[2]) / self.spacing[2]
            along_x = _footprint_weights(cols, self.pixel_mm / (m * self.spacing[0]), self.shape[0], False)
            along_z = _footprint_weights(rows, self.pixel_mm / (m * self.spacing[2]), self.shape[2], True)
            image += along_x @ summed @ along_z.T
        radial = offsets[:, None] ** 2 + offsets[None, :] ** 2
        return image * np.sqrt(1.0 + radial / self.sid_mm**2).astype(np.float32)


def characteristic_curve(p: np.ndarray) -> np.ndarray:
    """Display value in [0, 1] of line integrals ``p``: a sigmoid in p with 0 for open beam."""
    floor = 1.0 / (1.0 + math.exp(CURVE_MIDPOINT / CURVE_WIDTH))
    sigmoid = 1.0 / (1.0 + np.exp(-(p - CURVE_MIDPOINT) / CURVE_WIDTH))
    return np.clip((sigmoid - floor) / (1.0 - floor), 0.0, 1.0).astype(np.float32)


def enhance(p: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Unsharp masking in the log domain: local contrast (vessels, ribs, edges) raised, large areas unchanged."""
    blurred = ndimage.gaussian_filter(p, UNSHARP_SIGMA_MM / pixel_mm, mode="nearest")
    return p + np.float32(UNSHARP_GAIN) * (p - blurred)


def detect(line_integral: np.ndarray, photons: float, rng: np.random.Generator) -> np.ndarray:
    """Measured ``-log(I/I0)`` with Poisson counts (``photons`` per open-beam pixel; inf = expectation)."""
    if not photons > 0:
        raise InputError(f"photons per pixel must be positive; got {photons}")
    if math.isinf(photons):
        return line_integral
    counts = rng.poisson(photons * np.exp(-line_integral.astype(np.float64)))
    return (-np.log(np.maximum(counts, MIN_COUNTS) / photons)).astype(np.float32)


def drr(
    ct: Volume, pixels: int = 256, kvp_effective_kev: float = 60.0, photons: float = 1e5,
    seed: int | np.random.Generator | None = 0, detector_size_mm: float = DETECTOR_SIZE_MM, sid_mm: float = SID_MM,
    body_part: str = "CHEST",
) -> Volume:
    """PA frontal radiograph of a CT (HU) as a 2D MONOCHROME2 Volume in [0, 1] (see the module docstring)."""
    if ct.modality != "CT" or ct.units != "HU":
        raise InputError(f"a DRR needs a CT in HU; got modality {ct.modality!r} in {ct.units!r}")
    if pixels < 8:
        raise InputError(f"a DRR needs at least 8 pixels per side; got {pixels}")
    geometry = PAGeometry.for_volume(ct, pixels, detector_size_mm, sid_mm)
    data, _, _ = canonical(ct)
    line_integral = geometry.integrate(hu_to_mu(data, kvp_effective_kev))
    measured = detect(line_integral, photons, np.random.default_rng(seed))
    image = characteristic_curve(enhance(measured, geometry.pixel_mm))
    magnification = float(geometry.magnification(geometry.centre[1]))
    meta = SourceMeta(
        format="synthetic",
        photometric_interpretation="MONOCHROME2",
        body_part=body_part,
        series_description=f"SYNTHETIC PA {body_part.lower()} DRR",
        notes=[*ct.meta.notes, f"DRR: PA point source, SID {sid_mm:g} mm, {kvp_effective_kev:g} keV effective, "
               f"{photons:g} photons/pixel; magnification at the grid centre {magnification:.3f}"],
    )
    return Volume(
        data=image[:, :, None], affine=geometry.affine(), modality="XRAY", units="a.u.", meta=meta,
        synthetic=ct.synthetic, provenance=dict(ct.provenance) or {"model": "medm2g-drr",
                                                                   "model_version": medm2g_core.__version__},
    )


def project_mask(ct: Volume, mask: np.ndarray, pixels: int = 256, detector_size_mm: float = DETECTOR_SIZE_MM,
                 sid_mm: float = SID_MM) -> np.ndarray:
    """Thickness (mm) of a boolean mask on the CT grid along each ray of :func:`drr`: (pixels, pixels), [u, v]."""
    mask = np.asarray(mask)
    if mask.shape != ct.shape:
        raise InputError(f"mask shape {mask.shape} does not match the CT grid {ct.shape}")
    geometry = PAGeometry.for_volume(ct, pixels, detector_size_mm, sid_mm)
    data, _, _ = canonical(ct.with_data(mask.astype(np.float32)))
    return geometry.integrate(data)
