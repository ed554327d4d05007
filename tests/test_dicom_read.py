"""DICOM reading: real single files (CT, MR, CR, Enhanced CT/MR, Secondary Capture, compressed), folders built
from CT_small.dcm (sorting, per-slice rescale, localizers, series choice, gaps, duplicates, oblique geometry)
and every bad input as a one-line InputError."""

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import require_tool
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, generate_uid

from medm2g_core.errors import InputError, MissingDependencyError
from medm2g_core.io.dicom_read import SeriesInfo, is_dicom, list_series, read_dicom

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
SAGITTAL = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
ROW_SPACING, COL_SPACING = 0.7, 0.5  # deliberately different, and 128 rows x 96 columns: catches swapped axes


def rotation(a: float, b: float, c: float) -> np.ndarray:
    """A proper rotation from three angles (degrees)."""
    a, b, c = np.radians([a, b, c])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


OBLIQUE = [*rotation(20, -15, 30)[:, 0], *rotation(20, -15, 30)[:, 1]]


def raw(path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


def one_line_error(excinfo, *words: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def voxel_ras(affine: np.ndarray, ijk) -> np.ndarray:
    return (affine @ [*ijk, 1.0])[:3]


def expected_ras(iop, ipp_k, i: int, j: int) -> np.ndarray:
    """DICOM's voxel position (PS3.3 C.7.6.2.1.1) for column i, row j of the slice at ipp_k, in RAS."""
    row_cos, col_cos = np.array(iop[:3]), np.array(iop[3:])
    return LPS_TO_RAS @ (np.array(ipp_k) + i * COL_SPACING * row_cos + j * ROW_SPACING * col_cos)


# ---- folder fixtures built from CT_small.dcm ---------------------------------------------------------------------


def ct_slice(series_uid: str, iop, ipp, stored: np.ndarray, slope=1.0, intercept=-1024.0, instance=1,
             image_type=("ORIGINAL", "PRIMARY", "AXIAL"), series_number=4) -> pydicom.FileDataset:
    ds = pydicom.dcmread(CT_SMALL)
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.ImageType = list(image_type)
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
    ds.PixelSpacing = [ROW_SPACING, COL_SPACING]
    ds.Rows, ds.Columns = stored.shape
    ds.PixelData = stored.astype(np.int16).tobytes()
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    return ds


def stored_slice(k: int) -> np.ndarray:
    """The stored values of slice k: CT_small cropped to 128 rows x 96 columns plus a per-slice marker."""
    return raw(CT_SMALL)[:, :96].astype(np.int16) + 10 * k


def slice_positions(iop, n: int, step: float = 2.5) -> list[np.ndarray]:
    normal = np.cross(iop[:3], iop[3:])
    origin = np.array([-40.0, -60.0, -75.0])
    return [origin + k * step * normal for k in range(n)]


def write_series(folder, n=5, iop=AXIAL, step=2.5, skip=(), duplicate=None, series_number=4, subfolders=True,
                 rescale=None):
    """n slices of one series, written in shuffled order with shuffled InstanceNumber; returns (uid, IPPs)."""
    uid = generate_uid()
    positions = slice_positions(iop, n, step)
    if duplicate is not None:
        positions[duplicate + 1] = positions[duplicate]
    rng = np.random.default_rng(7)
    order = rng.permutation(n)
    for rank, k in enumerate(order):
        if k in skip:
            continue
        slope, intercept = rescale(k) if rescale else (1.0, -1024.0)
        ds = ct_slice(uid, iop, positions[k], stored_slice(k), slope, intercept, instance=int(rank + 1),
                      series_number=series_number)
        target = folder / (f"sub{k % 2}" if subfolders else "") / f"img{rank:03d}.dcm"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target)
    return uid, positions


def per_slice_rescale(k: int) -> tuple[float, float]:
    return (1.0, 0.5, 2.0)[k % 3], -1024.0 + 100.0 * k


def write_localizer(folder, uid: str, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), iop=SAGITTAL, name="loc"):
    ds = ct_slice(uid, iop, [0.0, -100.0, 100.0], stored_slice(0), image_type=image_type, instance=99)
    ds.save_as(folder / f"{name}.dcm")


@pytest.fixture
def axial_folder(tmp_path):
    folder = tmp_path / "axial"
    uid, positions = write_series(folder, rescale=per_slice_rescale)
    return folder, uid, positions


# ---- is_dicom ----------------------------------------------------------------------------------------------------


def test_is_dicom_checks_the_preamble(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a DICOM file\n" * 20)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert is_dicom(CT_SMALL) and is_dicom(get_testdata_file("RG1_UNCI.dcm"))
    assert not is_dicom(text)
    assert not is_dicom(empty)
    assert not is_dicom(tmp_path)
    assert not is_dicom(tmp_path / "missing.dcm")
    assert not is_dicom(get_testdata_file("no_meta.dcm"))


# ---- single files ------------------------------------------------------------------------------------------------


def test_ct_file_is_exact_hu_with_dicom_geometry():
    volume = read_dicom(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    assert volume.shape == (128, 128, 1)
    assert volume.modality == "CT" and volume.units == "HU" and volume.contrast is None
    assert volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.data[:, :, 0], ds.pixel_array.T.astype(np.float64) - 1024.0)
    spacing = 0.661468
    expected = np.array([
        [-spacing, 0, 0, 158.135803],
        [0, -spacing, 0, 179.035797],
        [0, 0, 5.0, -75.699997],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(volume.affine, expected, atol=1e-4)
    meta = volume.meta
    assert meta.format == "dicom" and meta.path == CT_SMALL
    assert meta.study_instance_uid == ds.StudyInstanceUID and meta.series_instance_uid == ds.SeriesInstanceUID
    assert meta.frame_of_reference_uid == ds.FrameOfReferenceUID and meta.sop_class_uid == ds.SOPClassUID
    assert meta.sop_instance_uids == [ds.SOPInstanceUID]
    assert meta.patient == {"PatientName": "CompressedSamples^CT1", "PatientID": "1CT1",
                            "PatientBirthDate": str(ds.PatientBirthDate), "PatientSex": str(ds.PatientSex)}
    assert meta.study["StudyDate"] == "20040119" and meta.study["StudyID"] == "1CT1"
    assert meta.photometric_interpretation == "MONOCHROME2" and meta.notes == []


def test_mr_file():
    volume = read_dicom(MR_SMALL)
    assert volume.shape == (64, 64, 1)
    assert volume.modality == "MR" and volume.units == "a.u."
    assert volume.contrast is None  # no description, no acquisition contrast: not guessed
    np.testing.assert_array_equal(volume.data[:, :, 0], raw(MR_SMALL).T)
    assert volume.spacing == pytest.approx((0.3125, 0.3125, 0.8))
    assert volume.orientation == "LPS"
    assert (volume.meta.window_center, volume.meta.window_width) == (600.0, 1600.0)


@pytest.mark.parametrize(("description", "agent", "contrast"), [
    ("AX T1 POST GD", "", "T1ce"),
    ("t1_mprage_sag", "Gadovist", "T1ce"),
    ("t1_mprage_sag", "", "T1"),
    ("T2 FLAIR AXIAL", "", "FLAIR"),
    ("T2W_TSE", "", "T2"),
    ("PD_TSE", "", "PD"),
    ("T2* GRE", "", None),
    ("3-plane loc T1 T2", "", None),
])
def test_mr_contrast_is_guessed_only_from_plain_headers(tmp_path, description, agent, contrast):
    ds = pydicom.dcmread(MR_SMALL)
    ds.SeriesDescription = description
    ds.ContrastBolusAgent = agent
    ds.save_as(tmp_path / "mr.dcm")
    assert read_dicom(tmp_path / "mr.dcm").contrast == contrast


@pytest.fixture(scope="module")
def chest():
    path = get_testdata_file("RG1_UNCI.dcm")
    return read_dicom(path), raw(path)


def test_cr_monochrome1_is_inverted_so_lungs_are_dark(chest):
    volume, stored = chest
    assert volume.shape == (1841, 1955, 1)
    assert volume.modality == "XRAY" and volume.units == "a.u."
    # BitsStored 15, unsigned: inverted = (2**15 - 1) + 0 - stored
    np.testing.assert_array_equal(volume.data[:, :, 0], 32767.0 - stored.T)
    data = volume.data[:, :, 0]  # [column, row]
    right_lung, left_lung = data[320:640, 320:720].mean(), data[1200:1520, 320:720].mean()
    mediastinum = data[860:980, 320:1000].mean()
    assert right_lung < mediastinum - 3000 and left_lung < mediastinum - 3000
    meta = volume.meta
    assert meta.photometric_interpretation == "MONOCHROME1"
    assert "MONOCHROME1 inverted to MONOCHROME2 (higher value = brighter)" in meta.notes
    assert meta.window_center == 32767 - 15000 and meta.window_width == 30000  # same window on inverted values
    assert meta.body_part == "CHEST"


def test_cr_geometry_from_patient_orientation_and_no_spacing(chest):
    volume, _ = chest
    notes = volume.meta.notes
    assert "orientation from Patient Orientation L\\F" in notes
    assert "Pixel Spacing 0\\0 is not positive: ignored" in notes
    assert "no pixel spacing: unit spacing (1 mm) assumed" in notes
    # rows point to the patient's left (+x LPS), columns to the feet (-z LPS); slice normal L x F = posterior
    lps = np.column_stack([[1, 0, 0], [0, 0, -1], [0, 1, 0]])
    np.testing.assert_allclose(volume.affine[:3, :3], LPS_TO_RAS @ lps, atol=1e-12)
    assert volume.orientation == "LIP"


def dx_dataset(**changes) -> pydicom.FileDataset:
    """A digital radiograph made from CT_small: 12-bit unsigned MONOCHROME1, no patient geometry."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "DX"
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 0, 12, 11
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness",
                    "RescaleSlope", "RescaleIntercept", "SpacingBetweenSlices"):
        delattr(ds, keyword)
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    return ds


def test_dx_imager_pixel_spacing_patient_orientation_and_inversion(tmp_path):
    dx_dataset(ImagerPixelSpacing=[0.15, 0.2], PatientOrientation=["P", "F"]).save_as(tmp_path / "dx.dcm")
    volume = read_dicom(tmp_path / "dx.dcm")
    assert volume.modality == "XRAY"
    np.testing.assert_array_equal(volume.data[:, :, 0], 4095.0 - raw(CT_SMALL).T)
    # i (columns) -> posterior at 0.2 mm, j (rows) -> feet at 0.15 mm, k = P x F = right (-x LPS) at 1 mm
    lps = np.column_stack([[0, 0.2, 0], [0, 0, -0.15], [-1, 0, 0]])
    np.testing.assert_allclose(volume.affine[:3, :3], LPS_TO_RAS @ lps, atol=1e-12)
    np.testing.assert_allclose(volume.affine[:3, 3], 0.0)
    notes = volume.meta.notes
    assert "no Pixel Spacing: Imager Pixel Spacing used (size at the detector, not the patient)" in notes
    assert "orientation from Patient Orientation P\\F" in notes
    assert "no Image Position (Patient): origin at 0" in notes
    assert "MONOCHROME1 inverted to MONOCHROME2 (higher value = brighter)" in notes


def test_dx_without_any_geometry_gets_identity_and_says_so(tmp_path):
    dx_dataset(PhotometricInterpretation="MONOCHROME2").save_as(tmp_path / "dx.dcm")
    volume = read_dicom(tmp_path / "dx.dcm")
    np.testing.assert_allclose(volume.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert "no orientation: identity assumed" in volume.meta.notes
    assert "no pixel spacing: unit spacing (1 mm) assumed" in volume.meta.notes
    np.testing.assert_array_equal(volume.data[:, :, 0], raw(CT_SMALL).T)


def test_secondary_capture_rgb_is_luminance_and_modality_ot():
    path = get_testdata_file("SC_rgb.dcm")
    volume = read_dicom(path)
    rgb = raw(path).astype(np.float64)
    assert volume.modality == "OT" and volume.shape == (100, 100, 1)
    luminance = rgb @ [0.299, 0.587, 0.114]
    np.testing.assert_allclose(volume.data[:, :, 0], luminance.T, atol=1e-4)
    assert any("RGB image converted to luminance" in note for note in volume.meta.notes)


def test_secondary_capture_of_a_ct_is_not_hu(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.save_as(tmp_path / "sc.dcm")
    volume = read_dicom(tmp_path / "sc.dcm")
    assert volume.modality == "OT" and volume.units == "a.u."


def test_enhanced_ct_frames_sorted_along_the_normal_with_per_frame_geometry():
    path = get_testdata_file("eCT_Supplemental.dcm")
    volume = read_dicom(path)
    frames = raw(path)
    assert volume.shape == (512, 512, 2) and volume.modality == "CT" and volume.units == "HU"
    # IOP (-1,0,0, 0,1,0): normal (0,0,-1). Frame 2 (z=-149) lies before frame 1 (z=-159) along the normal.
    np.testing.assert_array_equal(volume.data[:, :, 0], frames[1].T.astype(np.float64) - 1024.0)
    np.testing.assert_array_equal(volume.data[:, :, 1], frames[0].T.astype(np.float64) - 1024.0)
    s = 0.388672
    lps = np.array([[-s, 0, 0, 99.5], [0, s, 0, -301.5], [0, 0, -10.0, -149.0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine, np.diag([-1.0, -1, 1, 1]) @ lps, atol=1e-4)
    assert (volume.meta.window_center, volume.meta.window_width) == (49.0, 102.0)
    assert len(volume.meta.sop_instance_uids) == 1


def test_enhanced_mr_without_functional_groups():
    path = get_testdata_file("emri_small.dcm")
    volume = read_dicom(path)
    assert volume.shape == (64, 64, 10) and volume.modality == "MR"
    assert volume.contrast == "T1"  # Acquisition Contrast T1, no contrast agent
    np.testing.assert_array_equal(volume.data, raw(path).transpose(2, 1, 0))
    np.testing.assert_allclose(volume.affine, np.diag([-1.0, -1.0, 1.2, 1.0]))
    assert "no Image Position (Patient): origin at 0, frames in file order" in volume.meta.notes
    assert "no orientation: identity assumed" in volume.meta.notes


def item(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_enhanced_mr_per_frame_positions_and_rescale(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("emri_small.dcm"))
    stored = ds.pixel_array
    normal = np.cross(SAGITTAL[:3], SAGITTAL[3:])
    place = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]  # frame k lies at place[k] along the normal
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=SAGITTAL)]),
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.9, 0.6], SliceThickness=1.5)]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([item(
        PlanePositionSequence=Sequence([item(ImagePositionPatient=list(np.array([5.0, -20, 30]) + 1.5 * p * normal))]),
        PixelValueTransformationSequence=Sequence([item(RescaleSlope=0.5 * (1 + k % 2), RescaleIntercept=10.0 * k,
                                                        RescaleType="US")]),
    ) for k, p in enumerate(place)])
    ds.save_as(tmp_path / "emr.dcm")
    volume = read_dicom(tmp_path / "emr.dcm")
    for k, p in enumerate(place):
        expected = stored[k].T * 0.5 * (1 + k % 2) + 10.0 * k
        np.testing.assert_array_equal(volume.data[:, :, p], expected)
    lps = np.column_stack([np.array(SAGITTAL[:3]) * 0.6, np.array(SAGITTAL[3:]) * 0.9, 1.5 * normal])
    np.testing.assert_allclose(volume.affine[:3, :3], LPS_TO_RAS @ lps, atol=1e-6)
    np.testing.assert_allclose(volume.affine[:3, 3], LPS_TO_RAS @ [5.0, -20, 30], atol=1e-6)
    assert volume.meta.notes == []


def test_file_without_preamble_is_read_with_a_note(tmp_path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.preamble = None
    ds.file_meta = FileMetaDataset()
    pydicom.dcmwrite(tmp_path / "bare.dcm", ds, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert not is_dicom(tmp_path / "bare.dcm")
    volume = read_dicom(tmp_path / "bare.dcm")
    np.testing.assert_array_equal(volume.data, read_dicom(CT_SMALL).data)
    assert any("read with force=True" in note for note in volume.meta.notes)


# ---- compressed transfer syntaxes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "plugin"), [
    ("MR_small_jp2klossless.dcm", "openjpeg"),
    ("MR_small_jpeg_ls_lossless.dcm", "libjpeg"),
    ("MR_small_RLE.dcm", None),
])
def test_compressed_mr_decodes_to_the_uncompressed_values(name, plugin):
    if plugin:
        pytest.importorskip(plugin)
    volume, reference = read_dicom(get_testdata_file(name)), read_dicom(MR_SMALL)
    np.testing.assert_array_equal(volume.data, reference.data)
    np.testing.assert_array_equal(volume.affine, reference.affine)


def test_jpeg2000_ct_is_exact_hu(tmp_path):
    pytest.importorskip("openjpeg")
    ds = pydicom.dcmread(CT_SMALL)
    ds.compress(JPEG2000Lossless)
    ds.save_as(tmp_path / "j2k.dcm")
    np.testing.assert_array_equal(read_dicom(tmp_path / "j2k.dcm").data, read_dicom(CT_SMALL).data)


def test_missing_codec_names_the_transfer_syntax_and_the_extra(monkeypatch):
    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    with pytest.raises(MissingDependencyError) as excinfo:
        read_dicom(get_testdata_file("MR_small_jp2klossless.dcm"))
    one_line_error(excinfo, "JPEG 2000 Image Compression (Lossless Only)", "1.2.840.10008.1.2.4.90",
                   "pip install 'medm2g[codecs]'")
    assert excinfo.value.install == "pip install 'medm2g[codecs]'"


# ---- folders -----------------------------------------------------------------------------------------------------


def test_folder_sorted_by_position_with_per_slice_rescale(axial_folder):
    folder, uid, _ = axial_folder
    volume = read_dicom(folder)
    assert volume.shape == (96, 128, 5) and volume.modality == "CT" and volume.units == "HU"
    for k in range(5):  # slice k carries the marker 10 * k and its own slope and intercept
        slope, intercept = per_slice_rescale(k)
        expected = stored_slice(k).T.astype(np.float64) * slope + intercept
        np.testing.assert_array_equal(volume.data[:, :, k], expected)
    expected_affine = np.array([
        [-COL_SPACING, 0, 0, 40.0],
        [0, -ROW_SPACING, 0, 60.0],
        [0, 0, 2.5, -75.0],
        [0, 0, 0, 1],
    ])
    np.testing.assert_allclose(volume.affine, expected_affine, atol=1e-4)
    assert volume.meta.series_instance_uid == uid and volume.meta.path == str(folder)
    sop_uids = [pydicom.dcmread(p).SOPInstanceUID for p in sorted(folder.rglob("*.dcm"),
                key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))]
    assert volume.meta.sop_instance_uids == sop_uids


def test_oblique_folder_voxel_positions_follow_dicom(tmp_path):
    _, positions = write_series(tmp_path, n=4, iop=OBLIQUE, step=3.0)
    volume = read_dicom(tmp_path)
    for i, j, k in [(0, 0, 0), (95, 0, 0), (0, 127, 1), (95, 127, 3), (17, 42, 2)]:
        np.testing.assert_allclose(voxel_ras(volume.affine, (i, j, k)), expected_ras(OBLIQUE, positions[k], i, j),
                                   atol=1e-4)
    assert volume.spacing == pytest.approx((COL_SPACING, ROW_SPACING, 3.0), abs=1e-6)


@pytest.mark.parametrize("iop", [AXIAL, CORONAL, SAGITTAL, OBLIQUE], ids=["axial", "coronal", "sagittal", "oblique"])
def test_geometry_matches_dcm2niix(tmp_path, iop):
    dcm2niix = require_tool("dcm2niix")
    write_series(tmp_path / "in", n=6, iop=iop, step=2.0, subfolders=False)
    (tmp_path / "out").mkdir()
    subprocess.run([dcm2niix, "-z", "n", "-f", "ref", "-o", str(tmp_path / "out"), str(tmp_path / "in")],
                   check=True, capture_output=True, timeout=60)
    reference = nib.as_closest_canonical(nib.load(tmp_path / "out" / "ref.nii"))
    volume = read_dicom(tmp_path / "in")
    ours = nib.as_closest_canonical(nib.Nifti1Image(volume.data, volume.affine))
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), reference.get_fdata())


def test_localizers_are_dropped_and_counted(axial_folder):
    folder, uid, _ = axial_folder
    write_localizer(folder, uid)
    write_localizer(folder, uid, image_type=("ORIGINAL", "PRIMARY", "AXIAL"), iop=CORONAL, name="tilted")
    volume = read_dicom(folder)
    assert volume.shape == (96, 128, 5)
    assert "dropped 1 localizer/scout image(s) (ImageType)" in volume.meta.notes
    assert "dropped 1 localizer image(s) (orientation differs from the series)" in volume.meta.notes
    [info] = list_series(folder)
    assert (info.n_files, info.n_slices) == (7, 5)


def test_non_dicom_files_and_reports_are_ignored(axial_folder):
    folder, _, _ = axial_folder
    (folder / "README.txt").write_text("not DICOM")
    (folder / "DICOMDIR.bak").write_bytes(b"\0" * 300)
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "report.dcm")
    volume = read_dicom(folder)
    assert volume.shape == (96, 128, 5)
    assert "ignored 2 non-DICOM file(s)" in volume.meta.notes
    assert "ignored 1 DICOM file(s) without pixel data" in volume.meta.notes


def test_list_series_and_choosing_one(tmp_path):
    uid_a, _ = write_series(tmp_path / "a", n=3, series_number=5)
    uid_b, _ = write_series(tmp_path / "b", n=4, iop=CORONAL, series_number=2)
    found = list_series(tmp_path)
    assert [s.series_instance_uid for s in found] == [uid_b, uid_a]  # SeriesNumber 2 before 5
    assert found[0] == SeriesInfo(index=0, series_instance_uid=uid_b, modality="CT", description="", n_files=4,
                                  n_slices=4, image_type="ORIGINAL\\PRIMARY\\AXIAL", series_number=2)
    assert (found[1].index, found[1].n_files) == (1, 3)
    assert read_dicom(tmp_path, series="0").shape == (96, 128, 4)
    assert read_dicom(tmp_path, series="1").meta.series_instance_uid == uid_a
    by_uid = read_dicom(tmp_path, series=uid_a)
    assert by_uid.shape == (96, 128, 3) and "series " + uid_a + " chosen from 2 series" in by_uid.meta.notes


def test_two_series_without_a_choice_is_an_input_error_listing_them(tmp_path):
    uid_a, _ = write_series(tmp_path / "a", n=3, series_number=5)
    uid_b, _ = write_series(tmp_path / "b", n=4, series_number=2)
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path)
    one_line_error(excinfo, str(tmp_path), "2 series", "by index or UID", f"[0] {uid_b} CT", "4 file(s)",
                   f"[1] {uid_a} CT", "3 file(s)")
    assert excinfo.value.option == "series"


@pytest.mark.parametrize("choice", ["2", "1.2.3.4", "-1"])
def test_unknown_series_choice_is_an_input_error(tmp_path, choice):
    write_series(tmp_path / "a", n=2)
    write_series(tmp_path / "b", n=2)
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path, series=choice)
    one_line_error(excinfo, f"no series {choice!r}", "[0]", "[1]")


def test_a_localizer_only_series_does_not_force_a_choice(axial_folder):
    folder, uid, _ = axial_folder
    scout = folder / "scout"
    scout.mkdir()
    write_localizer(scout, generate_uid())
    found = list_series(folder)
    assert sorted(s.n_slices for s in found) == [0, 5]
    assert read_dicom(folder).meta.series_instance_uid == uid
    scout_index = next(s.index for s in found if s.n_slices == 0)
    with pytest.raises(InputError) as excinfo:
        read_dicom(folder, series=str(scout_index))
    one_line_error(excinfo, "holds only localizer images")


def test_missing_slice_is_an_input_error_naming_the_positions(tmp_path):
    write_series(tmp_path, n=6, skip=(3,))
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path)
    one_line_error(excinfo, str(tmp_path), "not uniform", "5.000 mm gap between the slices at -70.000 mm and "
                   "-65.000 mm", "the step is 2.500 mm", "missing slice")


def test_duplicate_positions_are_an_input_error(tmp_path):
    write_series(tmp_path, n=5, duplicate=1)
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path)
    one_line_error(excinfo, "two slices at the same position -72.500 mm")


@pytest.mark.parametrize(("change", "words"), [
    ({"Columns": 64}, "128x64 pixels, not 128x96"),
    ({"PixelSpacing": [0.8, 0.5]}, "pixel spacing 0.8\\0.5 mm, not 0.7\\0.5 mm"),
])
def test_a_slice_that_does_not_fit_is_an_input_error_naming_it(axial_folder, change, words):
    folder, uid, positions = axial_folder
    ds = ct_slice(uid, AXIAL, positions[-1] + [0, 0, 2.5], stored_slice(0)[:, : change.get("Columns", 96)])
    ds.PixelSpacing = change.get("PixelSpacing", ds.PixelSpacing)
    ds.save_as(folder / "odd.dcm")
    with pytest.raises(InputError) as excinfo:
        read_dicom(folder)
    one_line_error(excinfo, "odd.dcm", words)


def test_gantry_tilt_gives_a_sheared_affine_that_keeps_every_voxel_in_place(tmp_path):
    uid, tilt = generate_uid(), np.array([0.0, 0.9, 2.5])  # each slice 2.5 mm up and 0.9 mm back
    positions = [np.array([-40.0, -60.0, -75.0]) + k * tilt for k in range(4)]
    for k in (2, 0, 3, 1):
        ct_slice(uid, AXIAL, positions[k], stored_slice(k), instance=4 - k).save_as(tmp_path / f"s{k}.dcm")
    volume = read_dicom(tmp_path)
    for i, j, k in [(0, 0, 0), (95, 127, 3), (10, 20, 2)]:
        np.testing.assert_allclose(voxel_ras(volume.affine, (i, j, k)), expected_ras(AXIAL, positions[k], i, j),
                                   atol=1e-4)
    np.testing.assert_array_equal(volume.data[:, :, 3], stored_slice(3).T - 1024.0)


def test_slice_off_the_line_is_an_input_error(axial_folder):
    folder, _, _ = axial_folder
    victim = next(p for p in folder.rglob("*.dcm") if float(pydicom.dcmread(p).ImagePositionPatient[2]) == -70.0)
    ds = pydicom.dcmread(victim)
    ds.ImagePositionPatient = [-35.0, -60.0, -70.0]
    ds.save_as(victim)
    with pytest.raises(InputError) as excinfo:
        read_dicom(folder)
    one_line_error(excinfo, "do not lie evenly on one line", "5.000 mm off")


def test_series_choice_for_a_single_file():
    uid = pydicom.dcmread(CT_SMALL).SeriesInstanceUID
    assert read_dicom(CT_SMALL, series=uid).shape == read_dicom(CT_SMALL, series="0").shape == (128, 128, 1)
    with pytest.raises(InputError) as excinfo:
        read_dicom(CT_SMALL, series="1")
    one_line_error(excinfo, "no series '1'", uid)


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path / "nothing.dcm")
    one_line_error(excinfo, "nothing.dcm", "no such file or folder")


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path / "empty.dcm")
    one_line_error(excinfo, "empty.dcm", "empty (0 bytes)")


@pytest.mark.parametrize("fraction", [0.5, 0.25, 0.05])
def test_truncated_file(tmp_path, fraction):
    data = Path(CT_SMALL).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path / "cut.dcm")
    one_line_error(excinfo, "cut.dcm", "truncated")


def test_truncated_slice_in_a_folder_names_the_file(axial_folder):
    folder, _, _ = axial_folder
    victim = sorted(folder.rglob("*.dcm"))[2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError) as excinfo:
        read_dicom(folder)
    one_line_error(excinfo, str(victim), "truncated")


@pytest.mark.parametrize("name", ["test-SR.dcm", "reportsi.dcm"])
def test_dicom_without_pixel_data(name):
    with pytest.raises(InputError) as excinfo:
        read_dicom(get_testdata_file(name))
    one_line_error(excinfo, name, "no pixel data", "SR Storage")


def test_not_dicom_at_all(tmp_path):
    (tmp_path / "notes.dcm").write_text("hello\n" * 100)
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path / "notes.dcm")
    one_line_error(excinfo, "notes.dcm", "not a DICOM file")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path)
    one_line_error(excinfo, str(tmp_path), "no DICOM files")
    with pytest.raises(InputError):
        list_series(tmp_path)


def test_folder_with_only_reports(tmp_path):
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "sr.dcm")
    with pytest.raises(InputError) as excinfo:
        read_dicom(tmp_path)
    one_line_error(excinfo, str(tmp_path), "none is an image")


def test_a_corrupt_attribute_in_one_file_of_a_folder_is_refused(axial_folder):
    """Attributes that repeat across a series are decoded once; a file whose copy differs is still decoded."""
    folder, _, _ = axial_folder
    last = sorted(folder.rglob("*.dcm"))[-1]
    data = last.read_bytes()
    at = data.find(b"\x08\x00\x08\x00CS")  # (0008,0008) ImageType, explicit VR "CS", the same in every file
    last.write_bytes(data[: at + 4] + b"CW" + data[at + 6:])
    with pytest.raises(InputError, match=f"{last.name}: not a readable DICOM file .*Unknown Value Representation"):
        read_dicom(folder)
