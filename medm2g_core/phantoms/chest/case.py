"""One paired chest case: the CT, its PA radiograph, the labels, lobes and landmarks (:func:`make_chest_case`).

One case per seed, deterministic. ``np.random.SeedSequence(seed)`` is split into independent streams for the
anatomy, the placement of findings and the image noise, so the same seed with different (explicit) findings
has the same body, lungs, bones and vessels; only the findings (and the heart size, from the requested
cardiothoracic ratio) change. Without explicit findings they are ``ChestFindings.sample(default_rng(seed))``.
Findings are drawn in a fixed order (consolidation, atelectasis, nodules, mass, pneumothorax, effusion,
device); a pneumothorax moves what lies in the lung with it.

:class:`ChestCase` holds the CT, the radiograph, the label map (names in ``LABELS``), the lobe geometry
(:class:`~medm2g_core.phantoms.chest.lobes.Lobes`: ``lobe_of(points)``, ``lobe_map()`` on the case) and the
landmarks the findings were placed from.
"""

from dataclasses import dataclass

import numpy as np

import medm2g_core
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume
from medm2g_core.phantoms.chest.anatomy import synthetic_anatomy
from medm2g_core.phantoms.chest.devices import central_line, endotracheal_tube, pacemaker
from medm2g_core.phantoms.chest.grid import LABEL, Canvas, Grid
from medm2g_core.phantoms.chest.lesions import collapse, consolidate, effusion, insert_lesion, pneumothorax
from medm2g_core.phantoms.chest.lobes import LUNG_SPACE, Anatomy, Landmarks, Lobes
from medm2g_core.phantoms.chest.segmentation import base_anatomy
from medm2g_core.phantoms.drr import drr
from medm2g_core.phantoms.findings import DEVICES, LUNG_LOBES, SIDES, ChestFindings

CT_NOISE_HU = 10.0


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


def insert_findings(anatomy: Anatomy, findings: ChestFindings, rng: np.random.Generator) -> None:
    """Draw the findings into the anatomy (the heart size is part of the anatomy, not done here)."""
    if findings.consolidation:
        consolidate(anatomy, findings.consolidation, rng)
    if findings.atelectasis:
        collapse(anatomy, findings.atelectasis, rng)
    for nodule in findings.nodules:
        insert_lesion(anatomy, nodule, "nodule", rng)
    if findings.mass:
        insert_lesion(anatomy, findings.mass, "mass", rng)
    if findings.pneumothorax:
        pneumothorax(anatomy, *findings.pneumothorax)
    for side, fraction in sorted(findings.effusion.items()):
        effusion(anatomy, side, fraction, rng)
    if findings.device == "endotracheal tube":
        endotracheal_tube(anatomy, rng)
    elif findings.device == "central venous catheter":
        central_line(anatomy, rng)
    elif findings.device == "pacemaker":
        pacemaker(anatomy)


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
        canvas, lobes, landmarks = synthetic_anatomy(spacing_mm, findings.cardiothoracic_ratio, anatomy_rng,
                                                     xray_pixels)
    else:
        canvas, lobes, landmarks = base_anatomy(base, spacing_mm)
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
