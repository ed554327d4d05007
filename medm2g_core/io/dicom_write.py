"""Write a Volume as a DICOM series: one single-frame image per slice, in a new folder, atomically.

Identity. A Volume read from DICOM keeps its Study (UID, patient and study attributes) and Frame of
Reference; every write makes a new Series and new SOP Instances, and each slice references the source
image it was made from. Any other Volume (NIfTI, raster, generated from text) gets a new Study and an
obviously fake patient. Every image is DERIVED\\SECONDARY, has a Contributing Equipment item naming medm2g
and the model ("Synthesizing Equipment" for generated images, "Processing Equipment" for conversions) and a
DerivationDescription; a generated image's SeriesDescription starts with "SYNTHETIC".

SOP classes. CT Image for CT, MR Image for MR, Digital X-Ray For Presentation for XRAY (a radiograph has no
3D position, so its geometry is PixelSpacing/ImagerPixelSpacing and PatientOrientation, which is what the DX
IOD defines), Secondary Capture for OT (with Image Plane attributes added, so that a 3D OT volume keeps its
place in the patient).

Values. ``value = stored * RescaleSlope + RescaleIntercept``. CT is int16: integer HU are stored as they
are (slope 1, intercept 0); other values get one slope and intercept per series, chosen so that every value
comes back within slope / 2. MR and OT are uint16 the same way (MR writes Rescale attributes only when they
are not the identity). The DX IOD fixes slope 1 and intercept 0, so an X-ray is stored as display values:
the range [min(0, lowest), max(1, highest)] maps linearly onto 0..65535, which is exact to 1/65535 for
X-rays in medm2g's [0, 1] convention.
"""

import copy
import os
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import Code, codes
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

import medm2g_core
from medm2g_core.atomic import atomic_dir
from medm2g_core.errors import InputError
from medm2g_core.io.volume import SourceMeta, Volume, dicom_geometry

SOP_CLASSES = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "XRAY": DigitalXRayImageStorageForPresentation,
    "OT": SecondaryCaptureImageStorage,
}
DICOM_MODALITY = {"CT": "CT", "MR": "MR", "XRAY": "DX", "OT": "OT"}
_TOLERANCE = 1e-4  # direction cosines: perpendicular rows/columns, slice step along the normal
_TEXT_VRS = ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT")
_TYPE2_STUDY = ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
_IMAGE_TYPE_VALUE_3 = {"CT": ["AXIAL"], "MR": ["OTHER"]}  # the CT and MR Image modules require a value 3
_TYPE2_PATIENT = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")


@dataclass(frozen=True)
class _Encoding:
    """How values become stored integers: ``value = stored * slope + intercept``."""

    dtype: type
    slope: float
    intercept: float

    def encode(self, values: np.ndarray) -> np.ndarray:
        info = np.iinfo(self.dtype)
        stored = np.round((values.astype(np.float64) - self.intercept) / self.slope)
        return np.clip(stored, info.min, info.max).astype(self.dtype)


@dataclass(frozen=True)
class _Geometry:
    orientation: list[float]  # ImageOrientationPatient
    pixel_spacing: list[float]  # (row spacing, column spacing)
    positions: np.ndarray  # (K, 3) ImagePositionPatient per slice, LPS mm
    normal: np.ndarray
    thickness: float


def write_dicom_series(
    volume: Volume, folder: str | os.PathLike, overwrite: bool = False, series_description: str | None = None
) -> Path:
    """Write ``volume`` as a new folder of ``IM000001.dcm``, ... (one file per slice k, in order)."""
    datasets = dicom_datasets(volume, series_description)
    width = max(6, len(str(len(datasets))))
    with atomic_dir(folder, overwrite) as tmp:
        for number, dataset in enumerate(datasets, start=1):
            pydicom.dcmwrite(tmp / f"IM{number:0{width}d}.dcm", dataset, enforce_file_format=True)
    return Path(folder)


def derived_from_series(volume: Volume, series: str | os.PathLike) -> Volume:
    """``volume``, on the grid of the series :func:`write_dicom_series` wrote at ``series``, as a derivative of
    that series: written, it joins the series' patient, study and frame of reference as a series of its own whose
    slice k references the series' image k (an uncertainty map beside the synthetic image it describes)."""
    files = sorted(Path(series).glob("IM*.dcm"))
    if len(files) != volume.shape[2]:
        raise InputError(f"{series} holds {len(files)} images; the derived volume has {volume.shape[2]} slices")
    datasets = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    first = datasets[0]

    def texts(keywords: tuple[str, ...]) -> dict[str, str]:
        return {key: str(first.get(key)) for key in keywords if first.get(key) is not None}

    meta = replace(volume.meta, format="dicom", study_instance_uid=str(first.StudyInstanceUID),
                   series_instance_uid=str(first.SeriesInstanceUID),
                   frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")) or None,
                   sop_class_uid=str(first.SOPClassUID), sop_instance_uids=[str(d.SOPInstanceUID) for d in datasets],
                   patient=texts((*_TYPE2_PATIENT, "PatientComments")),
                   study=texts((*_TYPE2_STUDY, "StudyDescription")))
    return replace(volume, meta=meta)


def dicom_datasets(volume: Volume, series_description: str | None = None) -> list[Dataset]:
    """The datasets :func:`write_dicom_series` writes, one per slice, with file meta information."""
    if volume.modality == "XRAY" and not volume.is_2d:
        raise InputError(f"an X-ray is written as one DICOM image; this XRAY Volume has {volume.shape[2]} slices")
    if not np.isfinite(volume.data).all():
        raise InputError("the Volume holds NaN or infinite values, which DICOM integers cannot store")
    geometry = _geometry(volume)
    encoding = _encoding(volume)
    now = datetime.now()
    series = Dataset()
    series.update(_patient_and_study(volume, now))
    series.update(_series_and_equipment(volume, series_description, now))
    series.update(_image_pixel_and_values(volume, encoding))
    series.update(_modality_modules(volume, geometry))
    if any(not str(element.value).isascii() for element in series.iterall() if element.VR in _TEXT_VRS):
        series.SpecificCharacterSet = "ISO_IR 192"
    return [_slice_dataset(series, volume, geometry, encoding, k) for k in range(volume.shape[2])]


def _geometry(volume: Volume) -> _Geometry:
    orientation, pixel_spacing, step, origin = dicom_geometry(volume.affine)
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    if abs(row @ column) > _TOLERANCE:
        raise InputError("the image rows and columns are not perpendicular; DICOM cannot represent this grid")
    normal = np.cross(row, column)
    thickness = float(np.linalg.norm(step))
    if volume.shape[2] > 1 and np.linalg.norm(np.cross(step / thickness, normal)) > _TOLERANCE:
        raise InputError(
            "the slice step is not perpendicular to the slice plane (a sheared grid, e.g. gantry tilt); "
            "DICOM image planes cannot represent it: resample the Volume onto an orthogonal grid first"
        )
    positions = origin[None, :] + np.arange(volume.shape[2])[:, None] * step[None, :]
    return _Geometry(orientation, pixel_spacing, positions, normal, thickness)


def _encoding(volume: Volume) -> _Encoding:
    data = volume.data
    if volume.modality == "XRAY":
        low, high = min(0.0, float(data.min())), max(1.0, float(data.max()))
        return _Encoding(np.uint16, (high - low) / np.iinfo(np.uint16).max, low)
    dtype = np.int16 if volume.modality == "CT" else np.uint16
    info = np.iinfo(dtype)
    low, high = float(data.min()), float(data.max())
    if low >= info.min and high <= info.max and np.array_equal(data, np.round(data)):
        return _Encoding(dtype, 1.0, 0.0)
    if high - low < 1e-12 * max(1.0, abs(low)):
        return _Encoding(dtype, 1.0, _as_ds(low))
    # A little headroom keeps every value in range after the slope and intercept are rounded to 16-char DS.
    slope = _as_ds((high - low) * 1.001 / (int(info.max) - int(info.min)))
    intercept = _as_ds((low + high) / 2 - slope * (int(info.max) + int(info.min)) / 2)
    return _Encoding(dtype, slope, intercept)


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for ``value``."""
    return format_number_as_ds(float(value))


def _as_ds(value: float) -> float:
    """``value`` rounded to what a DICOM decimal string holds, so that what is written is what is used."""
    return float(_ds(value))


def _patient_and_study(volume: Volume, now: datetime) -> Dataset:
    meta = volume.meta
    ds = Dataset()
    if meta.format == "dicom" and meta.study_instance_uid:
        _copy_keywords(ds, meta.patient)
        _copy_keywords(ds, meta.study)
        ds.StudyInstanceUID = meta.study_instance_uid
    else:
        ds.PatientName = "SYNTHETIC^MEDM2G" if volume.synthetic else "ANONYMOUS^MEDM2G"
        ds.PatientID = f"MEDM2G-{uuid.uuid4().hex[:16].upper()}"
        ds.PatientComments = (
            "Synthetic image generated by medm2g; not a real patient" if volume.synthetic
            else f"Converted by medm2g from {meta.format} input without patient identity"
        )
        ds.StudyInstanceUID = generate_uid()
        ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.StudyID = "MEDM2G"
    for keyword in (*_TYPE2_PATIENT, *_TYPE2_STUDY):
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def _copy_keywords(ds: Dataset, values: dict[str, str]) -> None:
    """Copy source attributes by DICOM keyword; keys that are not DICOM keywords are not DICOM data."""
    for keyword, value in values.items():
        if tag_for_keyword(keyword) is not None:
            setattr(ds, keyword, value)


def _series_and_equipment(volume: Volume, series_description: str | None, now: datetime) -> Dataset:
    model = volume.provenance.get("model", "medm2g")
    versions = [v for v in (volume.provenance.get("model_version"), f"medm2g {medm2g_core.__version__}") if v]
    derivation = _derivation_description(volume)
    ds = Dataset()
    ds.Modality = DICOM_MODALITY[volume.modality]
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001 if volume.synthetic else 9000  # listed after the acquired series in viewers
    ds.SeriesDescription = _series_description(volume, series_description)
    ds.SeriesDate, ds.SeriesTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    if volume.meta.body_part:
        ds.BodyPartExamined = volume.meta.body_part
    if volume.modality != "XRAY" and not volume.meta.body_part:  # unknown (DX says ImageLaterality instead);
        ds.Laterality = ""  # a named body part here (head, chest) is unpaired, where Laterality must be absent
    ds.Manufacturer = "medm2g"
    ds.ManufacturerModelName = model
    ds.SoftwareVersions = versions
    equipment = Dataset()
    purpose = codes.DCM.SynthesizingEquipment if volume.synthetic else codes.DCM.ProcessingEquipment
    equipment.PurposeOfReferenceCodeSequence = [_code_item(purpose)]
    equipment.Manufacturer = "medm2g"
    equipment.ManufacturerModelName = model
    equipment.SoftwareVersions = versions
    equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S")
    equipment.ContributionDescription = derivation
    ds.ContributingEquipmentSequence = [equipment]
    ds.DerivationDescription = derivation
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    return ds


def _series_description(volume: Volume, requested: str | None) -> str:
    text = requested or " ".join(filter(None, ("medm2g", volume.modality, volume.contrast)))
    if volume.synthetic and not text.upper().startswith("SYNTHETIC"):
        text = f"SYNTHETIC {text}"
    return text[:64]


def _derivation_description(volume: Volume) -> str:
    meta = volume.meta
    if meta.format == "dicom":
        source = f"DICOM series {meta.series_instance_uid or '(unknown UID)'}"
    elif meta.format in ("nifti", "raster"):
        source = f"a {meta.format} image"
    else:
        source = "no source image"
    if volume.synthetic:
        provenance = volume.provenance
        model = " ".join(filter(None, (provenance.get("model", "medm2g"), provenance.get("model_version"))))
        return f"Synthesized by {model} from {source}; not for diagnosis"
    return f"Converted by medm2g {medm2g_core.__version__} from {source}"


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, code.scheme_designator, code.meaning
    return item


def _image_pixel_and_values(volume: Volume, encoding: _Encoding) -> Dataset:
    ds = Dataset()
    ds.ImageType = ["DERIVED", "SECONDARY", *_IMAGE_TYPE_VALUE_3.get(volume.modality, [])]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Columns, ds.Rows = volume.shape[0], volume.shape[1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1 if encoding.dtype == np.int16 else 0
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    identity = encoding.slope == 1.0 and encoding.intercept == 0.0
    if volume.modality in ("CT", "OT") or (volume.modality == "MR" and not identity):
        ds.RescaleSlope, ds.RescaleIntercept = _ds(encoding.slope), _ds(encoding.intercept)
        ds.RescaleType = "HU" if volume.modality == "CT" else "US"
    center, width = _window(volume)
    if volume.modality == "XRAY":  # the DX header says slope 1, intercept 0: the window is in stored values
        center, width = (center - encoding.intercept) / encoding.slope, max(1.0, width / encoding.slope)
    if width >= 1.0:  # the standard requires a width of at least 1; viewers window themselves without one
        ds.WindowCenter, ds.WindowWidth = _ds(center), _ds(width)
    return ds


def _window(volume: Volume) -> tuple[float, float]:
    """The source's window for a conversion; for a generated image (often of another modality) the data's."""
    meta = volume.meta
    if not volume.synthetic and meta.window_center is not None and meta.window_width is not None:
        return float(meta.window_center), float(meta.window_width)
    low, high = np.percentile(volume.data, [1, 99])
    return float(low + high) / 2, float(high - low)


def _modality_modules(volume: Volume, geometry: _Geometry) -> Dataset:
    ds = Dataset()
    if volume.modality == "CT":
        ds.KVP, ds.AcquisitionNumber = "", ""
    if volume.modality == "MR":
        ds.ScanningSequence, ds.SequenceVariant = "RM", "NONE"  # research mode: no acquisition took place
        ds.ScanOptions, ds.MRAcquisitionType = "", ""
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "", "", ""
    if volume.modality in ("CT", "MR"):
        ds.PatientPosition = ""
    if volume.modality == "OT":
        ds.ConversionType = "SYN" if volume.synthetic else "WSD"
    if volume.modality == "XRAY":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
        ds.PresentationLUTShape = "IDENTITY"
        ds.DetectorType = ""
        ds.ImagerPixelSpacing = [_ds(v) for v in geometry.pixel_spacing]
        ds.AcquisitionContextSequence = []
        ds.AnatomicRegionSequence = []
    if volume.modality in ("XRAY", "OT"):
        ds.PatientOrientation = _patient_orientation(geometry.orientation)
    ds.PixelSpacing = [_ds(v) for v in geometry.pixel_spacing]
    if volume.modality != "XRAY":
        ds.update(_image_plane_and_frame(volume.meta, geometry))
    return ds


def _image_plane_and_frame(meta: SourceMeta, geometry: _Geometry) -> Dataset:
    """What all slices share of the Image Plane and Frame of Reference modules."""
    ds = Dataset()
    ds.ImageOrientationPatient = [_ds(v) for v in geometry.orientation]
    ds.SliceThickness = ds.SpacingBetweenSlices = _ds(geometry.thickness)
    keep = meta.format == "dicom" and meta.frame_of_reference_uid
    ds.FrameOfReferenceUID = meta.frame_of_reference_uid if keep else generate_uid()
    ds.PositionReferenceIndicator = ""
    return ds


def _patient_orientation(orientation: list[float]) -> list[str]:
    """PatientOrientation letters (L/R, P/A, H/F, most significant first) of the row and column directions."""
    values = []
    for vector in (orientation[:3], orientation[3:]):
        order = np.argsort(-np.abs(vector))
        values.append("".join(("LPH" if vector[a] > 0 else "RAF")[a] for a in order if abs(vector[a]) > 1e-3))
    return values


def _slice_dataset(series: Dataset, volume: Volume, geometry: _Geometry, encoding: _Encoding, k: int) -> Dataset:
    ds = copy.deepcopy(series)
    ds.SOPClassUID = SOP_CLASSES[volume.modality]
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = k + 1
    if volume.modality != "XRAY":
        position = geometry.positions[k]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ geometry.normal))
    references = _source_references(volume.meta, k, volume.shape[2])
    if references:
        ds.SourceImageSequence = references
    stored = encoding.encode(volume.data[:, :, k].T)  # (rows, columns)
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _source_references(meta: SourceMeta, k: int, slices: int) -> list[Dataset]:
    """The source image of slice k when the source had one per slice, else every source image."""
    if meta.format != "dicom" or not meta.sop_class_uid or not meta.sop_instance_uids:
        return []
    uids = [meta.sop_instance_uids[k]] if len(meta.sop_instance_uids) == slices else meta.sop_instance_uids
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID = meta.sop_class_uid
        item.ReferencedSOPInstanceUID = uid
        item.PurposeOfReferenceCodeSequence = [_code_item(codes.DCM.SourceImageForImageProcessingOperation)]
        items.append(item)
    return items
