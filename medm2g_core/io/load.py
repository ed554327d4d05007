"""One entry point to read any supported image and one to write it: the format follows the path.

Readers: NIfTI (``.nii``, ``.nii.gz``), a DICOM file or folder, PNG/JPEG. Writers: NIfTI, a DICOM
series (a folder), or a PNG preview. Every write goes through the atomic writer.
"""

import os
from pathlib import Path

from medm2g_core.atomic import check_writable
from medm2g_core.errors import InputError
from medm2g_core.io.dicom_read import is_dicom, read_dicom
from medm2g_core.io.nifti import is_nifti, read_nifti, write_nifti
from medm2g_core.io.raster import is_raster
from medm2g_core.io.volume import Volume, canonical_modality
from medm2g_core.vocabulary import FILE_MODALITIES

OUTPUT_FORMATS = ("nifti", "dicom", "png")


def input_format(path: Path) -> str:
    """``dicom``, ``nifti`` or ``raster`` for an existing input path; an InputError otherwise."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return "dicom"
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    if is_nifti(path):
        return "nifti"
    if is_raster(path):
        return "raster"
    if path.suffix.lower() in (".dcm", ".dicom", ".ima") or is_dicom(path):
        return "dicom"
    raise InputError(f"{path}: unknown format; medm2g reads NIfTI (.nii, .nii.gz), DICOM files or folders, PNG, JPEG")


def read_volume(
    path: str | os.PathLike, series: str | None = None, frame: int | None = None, modality: str | None = None
) -> Volume:
    """Read an image from ``path``; ``series`` picks a DICOM series, ``frame`` a 4D NIfTI frame.

    ``modality`` tells the reader what a format without that information (NIfTI, PNG) holds.
    """
    path = Path(path)
    kind = input_format(path)
    modality = canonical_modality(modality)
    if modality is not None and modality not in FILE_MODALITIES:
        raise InputError(f"modality must be one of {', '.join(FILE_MODALITIES)}; got {modality!r}", option="modality")
    if series is not None and kind != "dicom":
        raise InputError(f"{path}: a series choice applies to DICOM input only", option="series")
    if frame is not None and kind != "nifti":
        raise InputError(f"{path}: a frame choice applies to 4D NIfTI input only", option="frame")
    if kind == "nifti":
        return read_nifti(path, frame=frame, modality=modality)
    if kind == "raster":
        from medm2g_core.io.raster import read_raster  # Pillow: imported only for PNG/JPEG input

        return read_raster(path, modality=modality or "XRAY")
    volume = read_dicom(path, series=series)
    if modality is not None and modality != volume.modality:
        raise InputError(f"{path}: the DICOM says modality {volume.modality}, not {modality}")
    return volume


def output_format(path: str | os.PathLike, to: str | None = None) -> str:
    """The format to write: ``to`` when given, else from the extension (no extension: a DICOM folder)."""
    if to is not None:
        if to not in OUTPUT_FORMATS:
            raise InputError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}; got {to!r}", option="to")
        return to
    name = str(path).lower()
    if is_nifti(name):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if Path(name).suffix in ("", ".dcm", ".dicom"):
        return "dicom"
    raise InputError(
        f"{path}: cannot tell the output format from the extension; use .nii/.nii.gz, .png, "
        "a folder name for a DICOM series, or name the format",
        option="to",
    )


def check_output(path: str | os.PathLike, to: str | None = None, overwrite: bool = False) -> str:
    """Validate an output path before any work is done; returns its format."""
    fmt = output_format(path, to)
    check_writable(path, overwrite)
    return fmt


def write_volume(
    volume: Volume, path: str | os.PathLike, to: str | None = None, overwrite: bool = False,
    preset: str | None = None, series_description: str | None = None,
) -> Path:
    """Write ``volume`` to ``path`` as NIfTI, a DICOM series folder or a PNG preview."""
    fmt = output_format(path, to)
    if fmt == "nifti":
        return write_nifti(volume, path, overwrite=overwrite)
    if fmt == "png":
        from medm2g_core.io.preview import write_preview  # Pillow: imported only for previews

        return write_preview(volume, path, preset=preset, overwrite=overwrite)
    from medm2g_core.io.dicom_write import write_dicom_series  # pydicom's SR codes: imported only to write DICOM

    return write_dicom_series(volume, path, overwrite=overwrite, series_description=series_description)
