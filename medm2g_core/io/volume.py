"""The ``Volume``: voxels, their place in the patient (RAS+ millimetres), and where they came from.

Array layout follows NIfTI: ``data[i, j, k]`` with ``i`` the fastest-varying index in the file (the
DICOM column), ``j`` the DICOM row and ``k`` the slice. ``affine @ [i, j, k, 1]`` is the voxel centre in
RAS+ world millimetres. A 2D radiograph is a Volume of shape ``(columns, rows, 1)``.
"""

from dataclasses import dataclass, field, replace

import nibabel as nib
import numpy as np

from medm2g_core.errors import InputError
from medm2g_core.vocabulary import FILE_MODALITIES, MRI_CONTRASTS

_SPELLINGS = {"mri": "MR", "x-ray": "XRAY", "cxr": "XRAY"}  # what users type for the stored modality names
TARGET_SPELLINGS = {"mr": "mri", "x-ray": "xray", "cxr": "xray"}  # and for the model's image modalities


def canonical_modality(name: str | None) -> str | None:
    """A stored modality (CT, MR, XRAY) however it is spelled: ct, MRI, x-ray ... (unknown names pass through)."""
    if name is None:
        return None
    return _SPELLINGS.get(name.strip().lower(), name.strip().upper())


def canonical_target(name: str) -> str:
    """A model image modality (ct, mri, xray) however it is spelled: CT, MR, X-ray ... (unknown names pass)."""
    return TARGET_SPELLINGS.get(name.strip().lower(), name.strip().lower())


def canonical_contrast(name: str | None) -> str | None:
    """An MRI contrast as stored (T1, T1ce, T2, FLAIR, PD) however it is spelled: t1ce, flair, Pd ..."""
    if name is None:
        return None
    return {c.lower(): c for c in MRI_CONTRASTS}.get(name.strip().lower(), name)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class SourceMeta:
    """What a writer needs to know about the source of a Volume (DICOM identity, display, provenance)."""

    format: str = "unknown"  # dicom | nifti | raster | synthetic
    path: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    frame_of_reference_uid: str | None = None
    sop_class_uid: str | None = None
    sop_instance_uids: list[str] = field(default_factory=list)  # one per slice (or one for a multi-frame file)
    patient: dict[str, str] = field(default_factory=dict)  # PatientName, PatientID, PatientBirthDate, PatientSex
    study: dict[str, str] = field(default_factory=dict)  # StudyDate, StudyTime, StudyID, AccessionNumber, ...
    series_description: str | None = None
    body_part: str | None = None
    window_center: float | None = None
    window_width: float | None = None
    photometric_interpretation: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "no geometry: unit spacing assumed"


@dataclass
class Volume:
    """A float32 image on a grid with a RAS+ affine, a modality and units."""

    data: np.ndarray  # (I, J, K) float32
    affine: np.ndarray  # (4, 4) float64, voxel index -> RAS+ mm
    modality: str = "OT"
    units: str = "a.u."
    contrast: str | None = None  # MRI only: one of MRI_CONTRASTS when known
    meta: SourceMeta = field(default_factory=SourceMeta)
    synthetic: bool = False
    provenance: dict[str, str] = field(default_factory=dict)  # model id, version, ... for synthetic images

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 2:
            data = data[:, :, None]
        if data.ndim != 3:
            raise InputError(f"a Volume is 2D or 3D; got an array of shape {data.shape}")
        self.data = data.astype(np.float32, copy=False)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got {self.affine.shape}")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise InputError("affine is singular: the image has no usable geometry")
        if self.modality not in FILE_MODALITIES:
            raise InputError(f"modality must be one of {', '.join(FILE_MODALITIES)}; got {self.modality!r}")
        if self.contrast is not None and self.contrast not in MRI_CONTRASTS:
            raise InputError(f"MRI contrast must be one of {', '.join(MRI_CONTRASTS)}; got {self.contrast!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Orientation code of the axes i, j, k, e.g. ``RAS`` or ``LPS`` (nibabel's convention)."""
        return "".join(nib.orientations.aff2axcodes(self.affine))

    @property
    def is_2d(self) -> bool:
        return self.data.shape[2] == 1

    def with_data(self, data: np.ndarray, **changes) -> "Volume":
        """A copy on the same grid with new voxels (and optionally other fields changed)."""
        new = replace(self, data=data, **changes)
        if new.shape != self.shape:
            raise InputError(f"new data {new.shape} does not fit the grid {self.shape}")
        return new


def shear(affine: np.ndarray) -> float:
    """How far the voxel axes of ``affine`` are from perpendicular: the largest |cos| of the angle between two of
    them (0 for any rotation + zooms + flip, which a NIfTI qform quaternion can hold; above ~1e-5 it cannot)."""
    axes = np.asarray(affine, float)[:3, :3]
    unit = axes / np.linalg.norm(axes, axis=0)
    cosines = unit.T @ unit - np.eye(3)
    return float(np.abs(cosines).max())


def affine_from_dicom(
    row_cosine: np.ndarray, column_cosine: np.ndarray, pixel_spacing: tuple[float, float],
    origin_lps: np.ndarray, slice_step_lps: np.ndarray,
) -> np.ndarray:
    """RAS+ affine of DICOM slices.

    ``row_cosine`` is the direction of increasing column index (ImageOrientationPatient[:3]),
    ``column_cosine`` the direction of increasing row index (ImageOrientationPatient[3:]),
    ``pixel_spacing`` is DICOM's (row spacing, column spacing), ``origin_lps`` the ImagePositionPatient
    of the first slice and ``slice_step_lps`` the vector from one slice position to the next.
    """
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(row_cosine, float) * float(pixel_spacing[1])
    lps[:3, 1] = np.asarray(column_cosine, float) * float(pixel_spacing[0])
    lps[:3, 2] = np.asarray(slice_step_lps, float)
    lps[:3, 3] = np.asarray(origin_lps, float)
    return LPS_TO_RAS @ lps


def dicom_geometry(affine: np.ndarray) -> tuple[list[float], list[float], np.ndarray, np.ndarray]:
    """Inverse of :func:`affine_from_dicom`: (ImageOrientationPatient, PixelSpacing, slice step, origin), LPS."""
    lps = LPS_TO_RAS @ np.asarray(affine, float)
    col_step, row_step = lps[:3, 0], lps[:3, 1]
    col_spacing, row_spacing = np.linalg.norm(col_step), np.linalg.norm(row_step)
    orientation = [*(col_step / col_spacing), *(row_step / row_spacing)]
    return [float(v) for v in orientation], [float(row_spacing), float(col_spacing)], lps[:3, 2], lps[:3, 3]
