"""Read a DICOM file or a folder of DICOM series into a :class:`Volume` (RAS+ affine, float32, rescaled).

A folder is searched recursively; files without the ``DICM`` preamble and DICOM files without pixel data
(structured reports, DICOMDIR) are ignored. Images are grouped by SeriesInstanceUID, localizers are
dropped (ImageType LOCALIZER/SCOUT/TOPOGRAM, or an orientation that differs from the rest of the series),
slices are sorted by their position along the slice normal (never by InstanceNumber) and must be evenly
spaced. Rescale Slope/Intercept are applied per slice (per frame for Enhanced CT/MR, whose geometry comes
from the functional groups). MONOCHROME1 images are inverted so that a higher value is always brighter.
Compressed pixel data are decoded by pydicom's plugins; when none is installed for the transfer syntax a
:class:`MissingDependencyError` names the ``medm2g[codecs]`` extra. Every bad input is an
:class:`InputError` whose one-line message names the file and the problem.
"""

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, get_decoder, pixel_array
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medm2g_core.errors import InputError, MissingDependencyError
from medm2g_core.io.volume import SourceMeta, Volume, affine_from_dicom

CODECS_INSTALL = "pip install 'medm2g[codecs]'"
XRAY_MODALITIES = frozenset({"CR", "DX", "RF", "MG", "XA", "IO", "PX", "RG", "DF", "DS"})
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_TAGS = frozenset(tag_for_keyword(keyword) for keyword in PIXEL_KEYWORDS)
SPECIFIC_CHARACTER_SET = tag_for_keyword("SpecificCharacterSet")
PATIENT_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYWORDS = ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription", "ReferringPhysicianName")
# Patient Orientation letters as LPS unit vectors.
LPS_LETTERS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "H": (0, 0, 1), "F": (0, 0, -1)}
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
POSITION_TOLERANCE_MM = 0.01  # plus 1% of the slice step, for slice positions
DEFER_SIZE = "64 KB"  # scanning a folder reads pixel data only for the chosen series
LUMINANCE = np.array([0.299, 0.587, 0.114])
ENHANCED_CONTRASTS = {"T1": "T1", "T2": "T2", "PROTON_DENSITY": "PD", "FLUID_ATTENUATED": "FLAIR", "FLAIR": "FLAIR"}


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder, as :func:`list_series` reports it."""

    index: int  # what ``read_dicom(folder, series=str(index))`` accepts
    series_instance_uid: str
    modality: str  # DICOM Modality as written (CT, MR, CR, DX, OT, ...)
    description: str
    n_files: int
    n_slices: int  # frames left after dropping localizers: what read_dicom would stack
    image_type: str  # ImageType of the first image, values joined by "\"
    series_number: int | None = None


@dataclass
class _Frame:
    """One 2D image: a single-frame file or one frame of a multi-frame file (headers only)."""

    image: "_Image"
    index: int  # frame number in its file
    rows: int
    columns: int
    orientation: np.ndarray | None  # 6 direction cosines (ImageOrientationPatient), LPS
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    spacing: tuple[float, float] | None  # (row spacing, column spacing) mm
    thickness: float | None  # SliceThickness mm
    slope: float
    intercept: float
    localizer: bool


@dataclass
class _Image:
    """One DICOM file with pixel data and the frames it holds."""

    path: Path
    ds: Dataset
    frames: list[_Frame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def is_dicom(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """The image series in a DICOM folder (or the one of a DICOM file), sorted by SeriesNumber then UID."""
    groups, _ = _series_groups(Path(folder))
    return [_series_info(index, images) for index, images in enumerate(groups)]


def read_dicom(path: str | os.PathLike, series: str | None = None) -> Volume:
    """Read a DICOM file, or one series of a folder (``series``: SeriesInstanceUID or index), into a Volume."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        images, frames, notes = _folder_frames(path, series)
    else:
        image = _image(path, *_read(path, defer=False))
        if series is not None:
            _choose(path, [[image]], series)
        images, frames, notes = [image], image.frames, []
    return _volume(path, images, frames, notes)


# ---- reading files ---------------------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read(path: Path, defer: bool, parsed: set[tuple] | None = None) -> tuple[Dataset, list[str]]:
    """One file's dataset (pixel data deferred when ``defer``) and notes on how it was read.

    ``parsed`` is shared by the files of one folder: see :func:`_parse_attributes`.
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    defer_size = DEFER_SIZE if defer else None
    try:
        preamble = is_dicom(path)
        ds = pydicom.dcmread(path, force=not preamble, defer_size=defer_size)
        _parse_attributes(ds, parsed)
    except Exception as exc:  # pydicom raises many types for a broken file
        raise InputError(f"{path}: not a readable DICOM file ({_one_line(exc)})") from exc
    notes = _default_syntax(path, ds)
    if preamble:
        return ds, notes
    _check_forced(path, ds)
    return ds, [*notes, f"{path.name}: no DICOM preamble/File Meta; read with force=True after checking that it "
                "has a SOP Class UID and pixel data"]


def _parse_attributes(ds: Dataset, parsed: set[tuple] | None = None) -> None:
    """Decode every attribute but the pixel data now: pydicom parses lazily, so a corrupt value (an unknown VR,
    a broken sequence) would otherwise fail wherever it is first touched, deep inside the geometry code.

    ``parsed`` collects the top-level public attributes already decoded in other files of the folder, keyed by
    their raw bytes, VR, encoding and character set: the same bytes decode the same way again, so they stay raw
    until they are used. Most attributes of a series repeat in every file; only the rest are decoded per file.
    """
    charset = ds.get_item(SPECIFIC_CHARACTER_SET)
    for tag in list(ds.keys()):
        if tag in PIXEL_TAGS:
            continue
        raw = ds.get_item(tag)
        key = None
        if parsed is not None and isinstance(raw, RawDataElement) and raw.value is not None and not tag.is_private:
            key = (raw.tag, raw.VR, raw.value, raw.is_implicit_VR, raw.is_little_endian, charset and charset.value)
            if key in parsed:
                continue
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _parse_attributes(item)
        if key is not None:
            parsed.add(key)


def _image(path: Path, ds: Dataset, notes: list[str]) -> _Image:
    _check_has_pixels(path, ds)
    image = _Image(path, ds, notes=notes)
    image.frames = _frames(image)
    return image


def _check_forced(path: Path, ds: Dataset) -> None:
    if "SOPClassUID" not in ds or not any(key in ds for key in PIXEL_KEYWORDS):
        raise InputError(f"{path}: not a DICOM file (no 'DICM' preamble, and no SOP Class UID and pixel data)")


def _default_syntax(path: Path, ds: Dataset) -> list[str]:
    """A file meta without a Transfer Syntax UID gets the one the dataset was read with (pixel data native)."""
    if ds.file_meta.get("TransferSyntaxUID"):
        return []
    implicit, little = ds.original_encoding
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    ds.file_meta.TransferSyntaxUID = syntax
    return [f"{path.name}: no Transfer Syntax UID; read as {syntax.name}, the encoding of its attributes"]


def _check_has_pixels(path: Path, ds: Dataset) -> None:
    if any(key in ds for key in PIXEL_KEYWORDS):
        return
    if "Rows" in ds:
        raise InputError(f"{path}: image attributes but no pixel data; the file is probably truncated")
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    kind = sop_class.name if sop_class else "unknown SOP class"
    raise InputError(f"{path}: no pixel data, not an image ({kind})")


def _functional_item(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of ``sequence`` in the frame's per-frame functional group, else the shared one."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    groups = [per_frame[frame] if per_frame and frame < len(per_frame) else None, shared[0] if shared else None]
    for group in groups:
        if group is not None and group.get(sequence):
            return group[sequence][0]
    return None


def _attribute(ds: Dataset, frame: int, sequence: str, keyword: str):
    """``keyword`` from the frame's functional groups (Enhanced objects), else from the top level."""
    item = _functional_item(ds, frame, sequence)
    if item is not None and item.get(keyword) not in (None, ""):
        return item.get(keyword)
    value = ds.get(keyword)
    return None if value in (None, "") else value


def _floats(value, count: int) -> np.ndarray | None:
    try:
        numbers = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return numbers if numbers.size == count and np.isfinite(numbers).all() else None


def _frames(image: _Image) -> list[_Frame]:
    ds = image.ds
    count = _int(ds.get("NumberOfFrames")) or 1
    per_frame_positions = _has_per_frame(ds, "PlanePositionSequence")
    frames = [_frame(image, k) for k in range(count)]
    if count > 1 and not per_frame_positions:
        _stack_without_positions(image, frames)
    return frames


def _has_per_frame(ds: Dataset, sequence: str) -> bool:
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    return bool(per_frame) and all(group.get(sequence) for group in per_frame)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _number(value, default: float | None) -> float | None:
    try:
        number = float(value[0] if isinstance(value, MultiValue) else value)
    except (TypeError, ValueError, IndexError):
        return default
    return number if np.isfinite(number) else default


def _frame(image: _Image, k: int) -> _Frame:
    ds = image.ds
    thickness = _number(_attribute(ds, k, "PixelMeasuresSequence", "SliceThickness"), None)
    return _Frame(
        image=image,
        index=k,
        rows=_int(ds.get("Rows")) or 0,
        columns=_int(ds.get("Columns")) or 0,
        orientation=_orientation(image, k),
        position=_floats(_attribute(ds, k, "PlanePositionSequence", "ImagePositionPatient") or (), 3),
        spacing=_pixel_spacing(image, k),
        thickness=thickness if thickness is not None and thickness > 0 else None,
        slope=_number(_attribute(ds, k, "PixelValueTransformationSequence", "RescaleSlope"), 1.0),
        intercept=_number(_attribute(ds, k, "PixelValueTransformationSequence", "RescaleIntercept"), 0.0),
        localizer=_is_localizer(ds, k),
    )


def _is_localizer(ds: Dataset, k: int) -> bool:
    types = {str(v).upper() for v in _as_list(ds.get("ImageType"))}
    for sequence in ("CTImageFrameTypeSequence", "MRImageFrameTypeSequence"):
        item = _functional_item(ds, k, sequence)
        if item is not None:
            types |= {str(v).upper() for v in _as_list(item.get("FrameType"))}
    return bool(types & LOCALIZER_TYPES)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _orientation(image: _Image, k: int) -> np.ndarray | None:
    ds = image.ds
    cosines = _floats(_attribute(ds, k, "PlaneOrientationSequence", "ImageOrientationPatient") or (), 6)
    if cosines is None:
        cosines = _patient_orientation(image)
    if cosines is None:
        return None
    row, column = cosines[:3], cosines[3:]
    norms = np.linalg.norm(row), np.linalg.norm(column)
    if min(norms) < 0.5 or abs(np.dot(row, column)) > 1e-2 * norms[0] * norms[1]:
        text = "\\".join(f"{v:g}" for v in cosines)
        raise InputError(f"{image.path}: Image Orientation (Patient) {text} is not two orthogonal directions")
    return np.concatenate([row / norms[0], column / norms[1]])


def _patient_orientation(image: _Image) -> np.ndarray | None:
    """Direction cosines from Patient Orientation (0020,0020), e.g. ``L\\F`` (radiographs)."""
    values = [str(v).upper() for v in _as_list(image.ds.get("PatientOrientation"))]
    if len(values) != 2 or not all(values) or not all(set(v) <= set(LPS_LETTERS) for v in values):
        return None
    vectors = [np.sum([LPS_LETTERS[letter] for letter in value], axis=0).astype(float) for value in values]
    row, column = (v / np.linalg.norm(v) for v in vectors)
    if abs(np.dot(row, column)) > 1e-6:
        return None
    image.notes.append(f"orientation from Patient Orientation {values[0]}\\{values[1]}")
    return np.concatenate([row, column])


def _pixel_spacing(image: _Image, k: int) -> tuple[float, float] | None:
    ds = image.ds
    spacing = _floats(_attribute(ds, k, "PixelMeasuresSequence", "PixelSpacing") or (), 2)
    if spacing is not None and (spacing > 0).all():
        return float(spacing[0]), float(spacing[1])
    if spacing is not None:
        image.notes.append(f"Pixel Spacing {spacing[0]:g}\\{spacing[1]:g} is not positive: ignored")
    imager = _floats(ds.get("ImagerPixelSpacing") or (), 2)
    if imager is not None and (imager > 0).all():
        image.notes.append("no Pixel Spacing: Imager Pixel Spacing used (size at the detector, not the patient)")
        return float(imager[0]), float(imager[1])
    return None


def _stack_without_positions(image: _Image, frames: list[_Frame]) -> None:
    """A multi-frame file without per-frame positions: frames follow the first at the slice spacing."""
    first = frames[0]
    if first.position is None or first.orientation is None:
        for frame in frames:
            frame.position = None
        return
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    step = _slice_gap(first)
    for k, frame in enumerate(frames):
        frame.position = first.position + k * step * normal
    image.notes.append(f"no per-frame positions: frames assumed {step:g} mm apart along the slice normal")


def _slice_gap(frame: _Frame) -> float:
    """Spacing Between Slices, else Slice Thickness, else 1 mm: the step when positions are unknown."""
    between = _number(frame.image.ds.get("SpacingBetweenSlices"), None)
    return next((v for v in (between, frame.thickness) if v is not None and v > 0), 1.0)


# ---- folders and series ----------------------------------------------------------------------------------------


def _scan(path: Path) -> tuple[list[_Image], list[str]]:
    """Every DICOM image under ``path`` (headers only) and notes on what was ignored."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        return [_image(path, *_read(path, defer=True))], []
    files = sorted(p for p in path.rglob("*") if p.is_file())
    dicom = [p for p in files if p.stat().st_size > 0 and is_dicom(p)]
    if not dicom:
        raise InputError(f"{path}: no DICOM files (with the 'DICM' preamble) in this folder ({len(files)} files)")
    images, no_pixels = [], []
    parsed: set[tuple] = set()
    for file in dicom:
        ds, notes = _read(file, defer=True, parsed=parsed)
        if "Rows" in ds or any(key in ds for key in PIXEL_KEYWORDS):
            images.append(_image(file, ds, notes))
        else:
            no_pixels.append(file)
    if not images:
        raise InputError(f"{path}: {len(dicom)} DICOM files but none is an image (no pixel data, e.g. {no_pixels[0]})")
    notes = []
    if len(files) > len(dicom):
        notes.append(f"ignored {len(files) - len(dicom)} non-DICOM file(s)")
    if no_pixels:
        notes.append(f"ignored {len(no_pixels)} DICOM file(s) without pixel data")
    return images, notes


def _series_groups(path: Path) -> tuple[list[list[_Image]], list[str]]:
    """Images grouped by SeriesInstanceUID, groups sorted by SeriesNumber then UID."""
    images, notes = _scan(path)
    groups: dict[str, list[_Image]] = {}
    for image in images:
        groups.setdefault(str(image.ds.get("SeriesInstanceUID", "")), []).append(image)

    def key(uid: str) -> tuple:
        number = _int(groups[uid][0].ds.get("SeriesNumber"))
        return (number is None, number or 0, uid)

    return [groups[uid] for uid in sorted(groups, key=key)], notes


def _kept_frames(images: list[_Image]) -> tuple[list[_Frame], list[str]]:
    """Frames of a series without localizers and without frames in a minority orientation."""
    frames = [frame for image in images for frame in image.frames]
    kept = [frame for frame in frames if not frame.localizer]
    notes = []
    if len(kept) < len(frames):
        notes.append(f"dropped {len(frames) - len(kept)} localizer/scout image(s) (ImageType)")
    if kept and all(frame.orientation is not None for frame in kept):
        labels = _orientation_labels(kept)
        majority = Counter(labels).most_common(1)[0][0]
        oriented = [frame for frame, label in zip(kept, labels, strict=True) if label == majority]
        if len(oriented) < len(kept):
            dropped = len(kept) - len(oriented)
            notes.append(f"dropped {dropped} localizer image(s) (orientation differs from the series)")
        kept = oriented
    return kept, notes


def _orientation_labels(frames: list[_Frame]) -> list[int]:
    """Frames with the same orientation (within tolerance) share a label; labels in order of first appearance."""
    representatives: list[np.ndarray] = []
    labels = []
    for frame in frames:
        for label, orientation in enumerate(representatives):
            if np.allclose(frame.orientation, orientation, atol=ORIENTATION_TOLERANCE):
                labels.append(label)
                break
        else:
            representatives.append(frame.orientation)
            labels.append(len(representatives) - 1)
    return labels


def _series_info(index: int, images: list[_Image]) -> SeriesInfo:
    ds = images[0].ds
    return SeriesInfo(
        index=index,
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        modality=str(ds.get("Modality", "")),
        description=str(ds.get("SeriesDescription", "")),
        n_files=len(images),
        n_slices=len(_kept_frames(images)[0]),
        image_type="\\".join(str(v) for v in _as_list(ds.get("ImageType"))),
        series_number=_int(ds.get("SeriesNumber")),
    )


def _describe(infos: list[SeriesInfo]) -> str:
    return "; ".join(
        f"[{s.index}] {s.series_instance_uid} {s.modality or '?'} '{s.description}' {s.n_files} file(s)" for s in infos
    )


def _choose(folder: Path, groups: list[list[_Image]], series: str | None) -> list[_Image]:
    infos = [_series_info(index, images) for index, images in enumerate(groups)]
    if series is not None:
        wanted = str(series).strip()
        for info in infos:
            if wanted == info.series_instance_uid:
                return groups[info.index]
        if wanted.isdigit() and int(wanted) < len(groups):
            return groups[int(wanted)]
        raise InputError(f"{folder}: no series {wanted!r} (give an index or a SeriesInstanceUID): {_describe(infos)}")
    with_slices = [info for info in infos if info.n_slices > 0]
    if len(groups) == 1 or len(with_slices) == 1:
        return groups[(with_slices or infos)[0].index]
    raise InputError(f"{folder}: {len(groups)} series; choose one by index or UID: {_describe(infos)}", option="series")


def _folder_frames(folder: Path, series: str | None) -> tuple[list[_Image], list[_Frame], list[str]]:
    groups, notes = _series_groups(folder)
    images = _choose(folder, groups, series)
    frames, dropped = _kept_frames(images)
    uid = str(images[0].ds.get("SeriesInstanceUID", ""))
    if not frames:
        raise InputError(f"{folder}: series {uid} holds only localizer images")
    if len(groups) > 1:
        notes.append(f"series {uid} chosen from {len(groups)} series")
    return images, frames, notes + dropped


# ---- geometry --------------------------------------------------------------------------------------------------


def _grid_key(frame: _Frame) -> tuple:
    spacing = None if frame.spacing is None else tuple(round(v, 4) for v in frame.spacing)
    return frame.rows, frame.columns, spacing


def _name(frame: _Frame) -> str:
    multi = len(frame.image.frames) > 1
    return f"{frame.image.path}" + (f" (frame {frame.index + 1})" if multi else "")


def _check_consistent(where: str, frames: list[_Frame]) -> None:
    """Every frame has the size, pixel spacing and orientation of the majority; else name the odd one."""
    majority = Counter(_grid_key(frame) for frame in frames).most_common(1)[0][0]
    reference = next(frame for frame in frames if _grid_key(frame) == majority)
    for frame in frames:
        problem = None
        if (frame.rows, frame.columns) != (reference.rows, reference.columns):
            problem = f"{frame.rows}x{frame.columns} pixels, not {reference.rows}x{reference.columns}"
        elif _grid_key(frame) != majority:
            problem = f"pixel spacing {_spacing_text(frame)}, not {_spacing_text(reference)}"
        elif (frame.orientation is None) != (reference.orientation is None) or (
            frame.orientation is not None
            and not np.allclose(frame.orientation, reference.orientation, atol=ORIENTATION_TOLERANCE)
        ):
            problem = "an orientation that differs from the other slices"
        if problem:
            raise InputError(f"{where}: {_name(frame)} has {problem}")


def _spacing_text(frame: _Frame) -> str:
    return "none" if frame.spacing is None else f"{frame.spacing[0]:g}\\{frame.spacing[1]:g} mm"


def _sorted_by_position(where: str, frames: list[_Frame], normal: np.ndarray) -> tuple[list[_Frame], np.ndarray]:
    """Frames sorted along ``normal`` and the step between them; duplicates and gaps are errors."""
    distances = np.array([float(np.dot(frame.position, normal)) for frame in frames])
    order = np.argsort(distances, kind="stable")
    frames, distances = [frames[k] for k in order], distances[order]
    if len(frames) == 1:
        return frames, normal * (frames[0].thickness or 1.0)
    gaps = np.diff(distances)
    same = np.flatnonzero(gaps < POSITION_TOLERANCE_MM)
    if same.size:
        k = int(same[0])
        raise InputError(
            f"{where}: two slices at the same position {distances[k]:.3f} mm along the slice normal "
            f"({_name(frames[k])}, {_name(frames[k + 1])}); several acquisitions in one series?"
        )
    step = float(gaps.min())
    uneven = np.flatnonzero(gaps > step + POSITION_TOLERANCE_MM + 0.01 * step)
    if uneven.size:
        k = int(uneven[0])
        raise InputError(
            f"{where}: slice spacing is not uniform: a {gaps[k]:.3f} mm gap between the slices at {distances[k]:.3f} "
            f"mm and {distances[k + 1]:.3f} mm where the step is {step:.3f} mm (a missing slice?)"
        )
    positions = np.array([frame.position for frame in frames])
    step_vector = (positions[-1] - positions[0]) / (len(frames) - 1)
    expected = positions[0] + np.outer(np.arange(len(frames)), step_vector)
    off_line = float(np.abs(positions - expected).max())
    if off_line > POSITION_TOLERANCE_MM + 0.01 * step:
        raise InputError(f"{where}: slice positions do not lie evenly on one line (up to {off_line:.3f} mm off)")
    return frames, step_vector


def _geometry(where: str, frames: list[_Frame], notes: list[str]) -> tuple[list[_Frame], np.ndarray]:
    """Frames in slice order and the RAS+ affine."""
    first = frames[0]
    if first.orientation is None:
        notes.append("no orientation: identity assumed")
        row, column = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    else:
        row, column = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row, column)
    if first.spacing is None:
        notes.append("no pixel spacing: unit spacing (1 mm) assumed")
    spacing = first.spacing or (1.0, 1.0)
    if all(frame.position is not None for frame in frames):
        frames, step = _sorted_by_position(where, frames, normal)
        origin = frames[0].position
    else:
        notes.append("no Image Position (Patient): origin at 0" + (", frames in file order" if len(frames) > 1 else ""))
        origin, step = np.zeros(3), normal * (_slice_gap(first) if len(frames) > 1 else first.thickness or 1.0)
    return frames, affine_from_dicom(row, column, spacing, origin, step)


# ---- pixels ----------------------------------------------------------------------------------------------------


def _check_decoder(path: Path, ds: Dataset) -> UID:
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise InputError(f"{path}: pixel data in an unsupported transfer syntax {syntax.name} ({syntax})") from exc
    if not decoder.is_available:
        raise MissingDependencyError(what=f"a decoder for {syntax.name} ({syntax})", install=CODECS_INSTALL)
    return syntax


def _check_length(path: Path, ds: Dataset, syntax: UID) -> None:
    if syntax.is_encapsulated or "PixelData" not in ds:
        return
    try:
        expected = get_expected_length(ds)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: incomplete image attributes ({_one_line(exc)})") from exc
    if not isinstance(expected, int):  # a malformed IS value (e.g. NumberOfFrames '1A') stays a str in pydicom
        raise InputError(f"{path}: invalid image attributes (Rows, Columns, NumberOfFrames, SamplesPerPixel or "
                         f"BitsAllocated is not a number)")
    actual = len(ds.PixelData)
    if actual < expected:
        raise InputError(f"{path}: truncated file: {actual} of {expected} bytes of pixel data")


def _decode(image: _Image) -> np.ndarray:
    """Stored values of every frame of a file, as (frames, rows, columns); colour images as luminance."""
    path, ds = image.path, image.ds
    syntax = _check_decoder(path, ds)
    _check_length(path, ds, syntax)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    # Native grey pixels need no correction: read them as a view of the file's bytes, not a copy. (pydicom
    # copies, and warns, where it must clear unused high bits, convert colour or swap big-endian bytes.)
    view = (_int(ds.get("BitsStored")) == _int(ds.get("BitsAllocated")) and (_int(ds.get("SamplesPerPixel")) or 1) == 1
            and syntax != ExplicitVRBigEndian)
    try:
        pixels = pixel_array(ds, view_only=view)
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, ds)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # many types for corrupt data; Rust plugins panic (a BaseException)
        hint = f"; more decoders: {CODECS_INSTALL}" if syntax.is_encapsulated else ""
        raise InputError(f"{path}: cannot decode the pixel data ({_one_line(exc)}){hint}") from exc
    if photometric == "PALETTE COLOR" or (_int(ds.get("SamplesPerPixel")) or 1) > 1:
        pixels = pixels @ LUMINANCE
        image.notes.append(f"{photometric} image converted to luminance (0.299 R + 0.587 G + 0.114 B)")
    if pixels.ndim == 2:
        pixels = pixels[None]
    for keyword in PIXEL_KEYWORDS:  # the headers stay, the encoded pixels need not
        if keyword in ds:
            del ds[keyword]
    if pixels.shape[0] != len(image.frames):
        raise InputError(f"{path}: {pixels.shape[0]} frames of pixel data but {len(image.frames)} in the headers")
    return pixels


def _stored_range(ds: Dataset) -> tuple[int, int]:
    bits = _int(ds.get("BitsStored")) or _int(ds.get("BitsAllocated")) or 16
    if _int(ds.get("PixelRepresentation")) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _slices(frames: list[_Frame], notes: list[str]) -> np.ndarray:
    """The (columns, rows, slices) float32 array of ``frames`` in order, rescaled per frame.

    The array is in Fortran order, so that one slice is one contiguous block laid out as a DICOM frame (and as
    a NIfTI slice): each frame is rescaled straight into its place, through one frame-sized float64 buffer
    (the values are those of float64 arithmetic), and the volume is never copied or transposed.
    """
    decoded: dict[int, np.ndarray] = {}
    remaining = Counter(id(frame.image) for frame in frames)
    data = np.empty((frames[0].columns, frames[0].rows, len(frames)), dtype=np.float32, order="F")
    work = np.empty((frames[0].rows, frames[0].columns), dtype=np.float64)
    for k, frame in enumerate(frames):
        image, key = frame.image, id(frame.image)
        if key not in decoded:
            decoded[key] = _decode(image)
        np.copyto(work, decoded[key][frame.index])
        remaining[key] -= 1
        if not remaining[key]:  # keep at most the files still needed in memory
            del decoded[key]
        if _is_monochrome1(image.ds):
            low, high = _stored_range(image.ds)
            np.subtract(low + high, work, out=work)
        work *= frame.slope
        work += frame.intercept
        np.copyto(data[:, :, k].T, work)
    if any(_is_monochrome1(frame.image.ds) for frame in frames):
        notes.append("MONOCHROME1 inverted to MONOCHROME2 (higher value = brighter)")
    return data


def _is_monochrome1(ds: Dataset) -> bool:
    return str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"


# ---- the Volume ------------------------------------------------------------------------------------------------


def _modality(ds: Dataset) -> str:
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class == SECONDARY_CAPTURE or sop_class.startswith(SECONDARY_CAPTURE + "."):
        return "OT"
    modality = str(ds.get("Modality", "")).upper()
    if modality in ("CT", "MR"):
        return modality
    return "XRAY" if modality in XRAY_MODALITIES else "OT"


def _mr_contrast(ds: Dataset) -> str | None:
    """T1, T1ce, T2, FLAIR or PD when the headers say so plainly; None otherwise."""
    base = ENHANCED_CONTRASTS.get(str(ds.get("AcquisitionContrast", "")).upper())
    description = str(ds.get("SeriesDescription", "")).upper()
    if base is None:
        found = {
            name for name, pattern in (
                ("T1", r"(?<![A-Z0-9])T1(?![0-9*]|STAR)"), ("T2", r"(?<![A-Z0-9])T2(?![0-9*]|STAR)"),
                ("PD", r"(?<![A-Z0-9])PDW?I?(?![A-Z0-9])"), ("FLAIR", r"FLAIR"),
            ) if re.search(pattern, description)
        }
        if "FLAIR" in found:
            found = {"T1"} if "T1" in found else {"FLAIR"}
        base = found.pop() if len(found) == 1 else None
    if base == "T1" and _contrast_given(ds, description):
        return "T1ce"
    return base


def _contrast_given(ds: Dataset, description: str) -> bool:
    if str(ds.get("ContrastBolusAgent", "")).strip() or ds.get("ContrastBolusAgentSequence"):
        return True
    usage = _functional_item(ds, 0, "ContrastBolusUsageSequence")
    if usage is not None and str(usage.get("ContrastBolusAgentAdministered", "")).upper() == "YES":
        return True
    return re.search(r"(\+ ?C(?![A-Z])|(?<![A-Z])C\+|(?<![A-Z])(POST|GD|GAD|CE)(?![A-Z]))", description) is not None


def _window(ds: Dataset, frame: _Frame) -> tuple[float | None, float | None]:
    center = _number(_attribute(ds, frame.index, "FrameVOILUTSequence", "WindowCenter"), None)
    width = _number(_attribute(ds, frame.index, "FrameVOILUTSequence", "WindowWidth"), None)
    if center is not None and _is_monochrome1(ds):
        low, high = _stored_range(ds)
        center = frame.slope * (low + high) + 2 * frame.intercept - center
    return center, width


def _texts(ds: Dataset, keywords: tuple[str, ...]) -> dict[str, str]:
    return {key: str(ds.get(key)) for key in keywords if ds.get(key) is not None}


def _source_meta(path: Path, frames: list[_Frame], notes: list[str]) -> SourceMeta:
    ds = frames[0].image.ds
    center, width = _window(ds, frames[0])
    uids = [str(frame.image.ds.get("SOPInstanceUID", "")) for frame in frames]
    return SourceMeta(
        format="dicom",
        path=str(path),
        study_instance_uid=_text(ds, "StudyInstanceUID"),
        series_instance_uid=_text(ds, "SeriesInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uids=list(dict.fromkeys(uids)),
        patient=_texts(ds, PATIENT_KEYWORDS),
        study=_texts(ds, STUDY_KEYWORDS),
        series_description=_text(ds, "SeriesDescription"),
        body_part=_text(ds, "BodyPartExamined"),
        window_center=center,
        window_width=width,
        photometric_interpretation=_text(ds, "PhotometricInterpretation"),
        notes=list(dict.fromkeys(notes)),
    )


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or str(value) == "" else str(value)


def _synthesizer(ds: Dataset) -> str | None:
    """The model named by a Contributing Equipment item with purpose Synthesizing Equipment (DCM 109100)."""
    for item in ds.get("ContributingEquipmentSequence", []):
        purposes = item.get("PurposeOfReferenceCodeSequence", [])
        if any(code.get("CodeValue") == "109100" for code in purposes):
            return str(item.get("ManufacturerModelName", "") or item.get("Manufacturer", "unknown model"))
    return None


def _volume(path: Path, images: list[_Image], frames: list[_Frame], notes: list[str]) -> Volume:
    series_uid = str(frames[0].image.ds.get("SeriesInstanceUID", ""))
    where = f"{path} (series {series_uid})" if path.is_dir() else str(path)
    _check_consistent(where, frames)
    geometry_notes: list[str] = []
    frames, affine = _geometry(where, frames, geometry_notes)
    data = _slices(frames, geometry_notes)
    used = {id(frame.image) for frame in frames}
    image_notes = [note for image in images if id(image) in used for note in image.notes]
    ds = frames[0].image.ds
    modality = _modality(ds)
    synthesizer = _synthesizer(ds)
    return Volume(
        data=data,
        affine=affine,
        modality=modality,
        units="HU" if modality == "CT" else "a.u.",
        contrast=_mr_contrast(ds) if modality == "MR" else None,
        meta=_source_meta(path, frames, notes + image_notes + geometry_notes),
        synthetic=synthesizer is not None or str(ds.get("SeriesDescription", "")).startswith("SYNTHETIC"),
        provenance={"model": synthesizer} if synthesizer else {},
    )
