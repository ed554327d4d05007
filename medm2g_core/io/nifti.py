"""NIfTI-1 read and write with the affine kept exactly and provenance in a header extension.

Reading follows nibabel's affine precedence (sform when its code is set, else qform) and applies
scl_slope/scl_inter. Writing stores the Volume's affine as both sform and qform (code 1, scanner; a sheared
affine, which a qform quaternion cannot hold, as the sform alone with qform_code 0), sets
the scl fields explicitly, says "SYNTHETIC" in the description of generated images, and keeps modality,
units, body part and provenance in a JSON comment extension that medm2g reads back.
"""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener
from nibabel.volumeutils import seek_tell

import medm2g_core
from medm2g_core.atomic import atomic_path
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume, shear

NIFTI_SUFFIXES = (".nii", ".nii.gz")
_EXTENSION_CODE = 6  # "comment"
_EXTENSION_TAG = "medm2g:"
SHEAR_TOLERANCE = 1e-4  # |cos| between voxel axes; DICOM direction cosines carry ~1e-6 of rounding


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _medm2g_extension(header: nib.Nifti1Header) -> dict:
    for extension in header.extensions:
        if extension.get_code() == _EXTENSION_CODE:
            content = extension.get_content()
            text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
            if text.startswith(_EXTENSION_TAG):
                try:
                    return json.loads(text[len(_EXTENSION_TAG):].rstrip("\x00"))
                except json.JSONDecodeError:
                    return {}
    return {}


def read_nifti(path: str | os.PathLike, frame: int | None = None, modality: str | None = None) -> Volume:
    """Read a 2D or 3D NIfTI (a 4D one only with ``frame``) into a Volume."""
    path = Path(path)
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for a broken file
        raise InputError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(f"{path}: not a NIfTI-1/2 image")
    shape = image.shape
    try:
        if len(shape) == 4 and shape[3] == 1 and frame is None:
            frame = 0
        if len(shape) == 4:
            if frame is None:
                raise InputError(f"{path}: 4D image with {shape[3]} frames; choose one frame", option="frame")
            if not 0 <= frame < shape[3]:
                raise InputError(
                    f"{path}: frame {frame} is out of range (the image has {shape[3]} frames)", option="frame"
                )
            data = np.asarray(image.dataobj[..., frame], dtype=np.float32)
        elif len(shape) in (2, 3):
            if frame not in (None, 0):
                raise InputError(f"{path}: a frame was chosen but the image is {len(shape)}D", option="frame")
            data = np.asarray(image.dataobj, dtype=np.float32)
        else:
            raise InputError(f"{path}: {len(shape)}D images are not supported (2D, 3D, or a 4D frame)", option="frame")
    except (OSError, EOFError, ValueError) as exc:  # truncated or corrupt voxel data
        raise InputError(f"{path}: cannot read the voxel data ({exc})") from exc
    data = _finite_or_fail(data, path)
    affine = image.affine
    if data.ndim == 2:
        data = data[:, :, None]
    saved = _medm2g_extension(image.header)
    meta = SourceMeta(format="nifti", path=str(path), notes=list(saved.get("notes", [])),
                      body_part=saved.get("body_part"))
    if image.header.get_sform(coded=True)[1] == 0 and image.header.get_qform(coded=True)[1] == 0:
        meta.notes.append("no sform/qform: nibabel's fallback affine (voxel sizes only)")
    if shear(affine) > SHEAR_TOLERANCE:
        note = (f"sheared affine: voxel axes {np.degrees(np.arcsin(min(shear(affine), 1.0))):.2f} degrees off "
                "perpendicular; only the sform holds it (a qform cannot)")
        meta.notes += [note] if note not in meta.notes else []
    return Volume(
        data=data,
        affine=affine,
        modality=modality or saved.get("modality", "OT"),
        units=saved.get("units", "HU" if (modality or saved.get("modality")) == "CT" else "a.u."),
        contrast=saved.get("contrast"),
        meta=meta,
        synthetic=bool(saved.get("synthetic", False)),
        provenance=dict(saved.get("provenance", {})),
    )


def _finite_or_fail(data: np.ndarray, path: Path) -> np.ndarray:
    finite = np.isfinite(data)
    if not finite.any():
        raise InputError(f"{path}: every voxel is NaN or infinite; the image holds no data")
    if not finite.all():
        raise InputError(
            f"{path}: {int((~finite).sum())} of {data.size} voxels are NaN or infinite; clean the image first"
        )
    return data


def _stored(volume: Volume, quantize: bool) -> tuple[np.ndarray, type, float, float]:
    """(array, on-disk type, scl_slope, scl_inter) with ``value = array.astype(type) * slope + inter``.

    Integer voxels in the int16 range (CT HU) are stored exactly as int16 (the float32 voxels themselves
    are returned: they are cast slice by slice as they are written). Other voxels are float32, or, with
    ``quantize``, int16 with a per-image slope and intercept (error at most slope / 2): a 2x smaller file for
    images whose noise is far above that step (MRI, radiographs).
    """
    data = volume.data[:, :, 0] if volume.is_2d else volume.data
    low, high = float(data.min()), float(data.max())
    info = np.iinfo(np.int16)
    if low >= info.min and high <= info.max and _integral(data):
        return data, np.int16, 1.0, 0.0
    if not quantize or high == low:
        return data, np.float32, 1.0, 0.0
    slope = (high - low) / (info.max - info.min - 1)
    inter = (high + low) / 2
    scaled = data - inter
    scaled /= slope
    return np.round(scaled, out=scaled).astype(np.int16), np.int16, slope, inter


def _integral(data: np.ndarray) -> bool:
    """Whether every voxel is a whole number, checked one slice at a time (no volume-sized temporary)."""
    slices = data.T if data.flags.f_contiguous else data  # iterate along the axis that varies slowest in memory
    return all(np.array_equal(part, np.round(part)) for part in slices)


def description(volume: Volume) -> str:
    """The 80-byte NIfTI description: says SYNTHETIC first for generated images (and what a generated map shows)."""
    if volume.synthetic:
        model = volume.provenance.get("model", "medm2g")
        text = f"SYNTHETIC {volume.provenance.get('map', 'image')} by {model} - not for diagnosis"
    else:
        text = f"medm2g {medm2g_core.__version__} {volume.modality}"
    return text[:79]


def to_nifti_image(volume: Volume, quantize: bool = False) -> nib.Nifti1Image:
    """The Nifti1Image medm2g writes for ``volume`` (affine in sform and qform, scl fields, provenance)."""
    stored, disk_type, slope, inter = _stored(volume, quantize)
    image = nib.Nifti1Image(stored, affine=None, dtype=disk_type)
    header = image.header
    header.set_sform(volume.affine, code=1)
    sheared = shear(volume.affine) > SHEAR_TOLERANCE  # qform code 0: viewers must not place it by the unsheared qform
    header.set_qform(volume.affine, code=0 if sheared else 1)
    header.set_slope_inter(slope, inter)
    header.set_xyzt_units("mm", "sec")
    header["descrip"] = description(volume).encode("ascii", "replace")
    header["aux_file"] = b"medm2g"
    record = {
        "medm2g": medm2g_core.__version__,
        "modality": volume.modality,
        "units": volume.units,
        "contrast": volume.contrast,
        "body_part": volume.meta.body_part,
        "synthetic": volume.synthetic,
        "provenance": volume.provenance,
        "notes": volume.meta.notes,
    }
    payload = (_EXTENSION_TAG + json.dumps(record, sort_keys=True)).encode("utf-8")
    header.extensions.append(nib.nifti1.Nifti1Extension(_EXTENSION_CODE, payload))
    return image


def write_nifti(volume: Volume, path: str | os.PathLike, overwrite: bool = False, quantize: bool = False) -> Path:
    """Write ``volume`` as ``.nii`` or ``.nii.gz`` atomically; ``quantize`` stores float images as scaled int16."""
    path = Path(path)
    if not is_nifti(path):
        raise InputError(f"{path}: a NIfTI output must end in .nii or .nii.gz")
    image = to_nifti_image(volume, quantize)
    with atomic_path(path, overwrite) as tmp:
        _save(image, tmp)
    return path


def _save(image: nib.Nifti1Image, path: Path) -> None:
    """What ``nib.save`` writes for ``image``, whose header sets the on-disk type and scaling, with the voxels
    cast one slice at a time: nibabel would need the whole cast array, or take its slow rescaling path."""
    image.update_header()
    header = image.header
    if np.isnan(header["scl_slope"]) and np.isnan(header["scl_inter"]):  # nib.save writes "no scaling" then
        header.set_slope_inter(1.0, 0.0)
    disk_type = header.get_data_dtype()
    with ImageOpener(path, "wb") as handle:
        header.write_to(handle)
        seek_tell(handle, header.get_data_offset(), write0=True)
        for part in np.asanyarray(image.dataobj).T:  # Fortran order on disk: the last axis varies slowest
            handle.write(part.astype(disk_type, copy=False).tobytes())
