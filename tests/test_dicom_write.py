"""The DICOM series writer, checked by real tools: dciodvfy (conformance), dcm2niix (geometry), pydicom."""

import hashlib
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import require_tool
from pydicom.uid import CTImageStorage, generate_uid

from medm2g_core.errors import InputError, OutputExistsError
from medm2g_core.io.dicom_read import read_dicom
from medm2g_core.io.dicom_write import dicom_datasets, write_dicom_series
from medm2g_core.io.volume import SourceMeta, Volume

SHAPE = (24, 20, 6)
SPACING = np.array([0.7, 0.9, 2.5])
ORIGIN = np.array([-31.5, 12.25, 47.0])
# Columns: the RAS+ directions of the i, j, k axes.
ORIENTATIONS = {
    "axial": np.array([[-1.0, 0, 0], [0, -1, 0], [0, 0, 1]]),
    "sagittal": np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]]),
    "coronal": np.array([[-1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),  # slice step opposite to the DICOM normal
    "oblique": np.linalg.qr(np.random.default_rng(7).normal(size=(3, 3)))[0],
}


def make_volume(
    modality: str = "CT", orientation: str = "axial", source: str = "dicom", synthetic: bool = True,
    data: np.ndarray | None = None,
) -> Volume:
    rng = np.random.default_rng(0)
    shape = (24, 20, 1) if modality == "XRAY" else SHAPE
    if data is None:
        scale = {"CT": 0, "XRAY": 1}.get(modality, 800)
        data = rng.integers(-1024, 3072, shape) if modality == "CT" else rng.random(shape) * scale
    affine = np.eye(4)
    affine[:3, :3] = ORIENTATIONS[orientation] * SPACING
    affine[:3, 3] = ORIGIN
    meta = SourceMeta(format=source)
    if source == "dicom":
        meta = SourceMeta(
            format="dicom", study_instance_uid=generate_uid(), series_instance_uid=generate_uid(),
            frame_of_reference_uid=generate_uid(), sop_class_uid=CTImageStorage,
            sop_instance_uids=[generate_uid() for _ in range(shape[2])],
            patient={"PatientName": "Müller^Jürgen", "PatientID": "P-17", "PatientBirthDate": "19700101",
                     "PatientSex": "M"},
            study={"StudyDate": "20240105", "StudyTime": "101500", "StudyID": "4711", "AccessionNumber": "ACC1",
                   "ReferringPhysicianName": "", "StudyDescription": "Thorax"},
        )
    provenance = {"model": "medm2g-phantom-tiny", "model_version": "0.1.0"} if synthetic else {}
    return Volume(np.asarray(data, np.float32), affine, modality=modality, meta=meta, synthetic=synthetic,
                  provenance=provenance)


def read_series(folder) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(path) for path in folder.glob("*.dcm")), key=lambda ds: int(ds.InstanceNumber))


def assert_same_image(affine: np.ndarray, data: np.ndarray, volume: Volume, atol: float) -> None:
    """``affine`` and ``data`` put the same values at the same places as ``volume``, whatever their axis order."""
    assert data.size == volume.data.size

    def corners(matrix, shape):
        grid = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1).T
        return np.sort(np.round(nib.affines.apply_affine(matrix, grid), 3), axis=0)

    np.testing.assert_allclose(corners(affine, data.shape), corners(volume.affine, volume.shape), atol=atol)
    ours = np.indices(volume.shape).reshape(3, -1).T
    world = nib.affines.apply_affine(volume.affine, ours)
    theirs = np.round(nib.affines.apply_affine(np.linalg.inv(affine), world)).astype(int)
    np.testing.assert_allclose(nib.affines.apply_affine(affine, theirs), world, atol=atol)
    assert len({tuple(index) for index in theirs}) == len(theirs)
    np.testing.assert_array_equal(data[tuple(theirs.T)], volume.data[tuple(ours.T)])


def values(ds: pydicom.Dataset) -> np.ndarray:
    """Modality values of one slice in Volume layout (i, j)."""
    return (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).T


@pytest.mark.parametrize("synthetic", [True, False], ids=["synthetic", "converted"])
@pytest.mark.parametrize("source", ["dicom", "nifti"])
@pytest.mark.parametrize("modality", ["CT", "MR", "XRAY", "OT"])
def test_dciodvfy_reports_no_errors(tmp_path, modality, source, synthetic):
    dciodvfy = require_tool("dciodvfy")
    folder = write_dicom_series(make_volume(modality, source=source, synthetic=synthetic), tmp_path / "series")
    files = sorted(folder.iterdir())
    assert [f.name for f in files][:2] == ["IM000001.dcm", "IM000002.dcm"][: len(files)]
    for path in {files[0], files[-1]}:
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
        report = (result.stdout + result.stderr).splitlines()
        errors = [line for line in report if "Error" in line]
        assert not errors, f"dciodvfy {path.name}:\n" + "\n".join(report)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_dcm2niix_sees_the_same_geometry_and_values(tmp_path, orientation):
    dcm2niix = require_tool("dcm2niix")
    volume = make_volume("CT", orientation)
    folder = write_dicom_series(volume, tmp_path / "series")
    out = tmp_path / "nifti"
    out.mkdir()
    subprocess.run([dcm2niix, "-z", "n", "-b", "n", "-f", "out", "-o", str(out), str(folder)],
                   check=True, capture_output=True, timeout=120)
    (converted,) = out.glob("*.nii")
    image = nib.load(converted)
    assert_same_image(image.affine, np.asarray(image.dataobj, dtype=np.float64), volume, atol=1e-3)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_read_dicom_gives_back_the_written_volume(tmp_path, orientation):
    volume = make_volume("CT", orientation)
    folder = write_dicom_series(volume, tmp_path / "series")
    read = read_dicom(folder)
    assert (read.modality, read.units) == ("CT", "HU")
    assert_same_image(read.affine, read.data, volume, atol=1e-4)
    if orientation != "coronal":  # there the reader orders slices along the normal, against our k
        np.testing.assert_allclose(read.affine, volume.affine, atol=1e-4)
    written = read_series(folder)
    by_location = {float(ds.SliceLocation): ds.SOPInstanceUID for ds in written}
    for ds in dicom_datasets(read):  # a series made from the written one references it slice by slice
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == by_location[float(ds.SliceLocation)]
        assert ds.StudyInstanceUID == written[0].StudyInstanceUID
        assert ds.FrameOfReferenceUID == written[0].FrameOfReferenceUID


def test_read_dicom_gives_back_mr_xray_and_ot_values(tmp_path):
    for modality in ("MR", "XRAY", "OT"):
        volume = make_volume(modality, source="nifti", synthetic=False)
        read = read_dicom(write_dicom_series(volume, tmp_path / modality))
        assert read.modality == modality
        datasets = read_series(tmp_path / modality)
        step = 1 / 65535 if modality == "XRAY" else float(datasets[0].RescaleSlope)
        scale = 65535 if modality == "XRAY" else 1  # the DX header says slope 1: values come back as display values
        np.testing.assert_allclose(read.data / scale, volume.data, atol=step / 2 * (1 + 1e-6))
        axes = 2 if modality == "XRAY" else 4  # a radiograph has no slice thickness nor position in DX
        np.testing.assert_allclose(read.affine[:3, :axes], volume.affine[:3, :axes], atol=1e-4)


def test_synthetic_series_keeps_the_study_and_references_every_source_slice(tmp_path):
    volume = make_volume("CT")
    written = read_series(write_dicom_series(volume, tmp_path / "series"))
    meta = volume.meta
    assert len(written) == SHAPE[2]
    assert len({ds.SOPInstanceUID for ds in written}) == SHAPE[2]
    assert {ds.SeriesInstanceUID for ds in written} != {meta.series_instance_uid}
    assert len({ds.SeriesInstanceUID for ds in written}) == 1
    for k, ds in enumerate(written):
        assert ds.SOPClassUID == CTImageStorage
        assert ds.StudyInstanceUID == meta.study_instance_uid
        assert ds.FrameOfReferenceUID == meta.frame_of_reference_uid
        assert (ds.PatientName, ds.PatientID, ds.AccessionNumber) == ("Müller^Jürgen", "P-17", "ACC1")
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.SeriesDescription.startswith("SYNTHETIC")
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"]
        assert ds.BurnedInAnnotation == "NO"
        assert "medm2g-phantom-tiny" in ds.DerivationDescription and "not for diagnosis" in ds.DerivationDescription
        equipment = ds.ContributingEquipmentSequence[0]
        purpose = equipment.PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            "109100", "DCM", "Synthesizing Equipment")
        assert (equipment.Manufacturer, equipment.ManufacturerModelName) == ("medm2g", "medm2g-phantom-tiny")
        assert "0.1.0" in list(equipment.SoftwareVersions)
        (reference,) = ds.SourceImageSequence
        assert reference.ReferencedSOPClassUID == meta.sop_class_uid
        assert reference.ReferencedSOPInstanceUID == meta.sop_instance_uids[k]
        assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert int(ds.InstanceNumber) == k + 1
        np.testing.assert_array_equal(values(ds), volume.data[:, :, k])


def test_conversion_of_a_nifti_makes_a_new_study_with_processing_equipment(tmp_path):
    datasets = dicom_datasets(make_volume("MR", source="nifti", synthetic=False), series_description="T1 export")
    first = datasets[0]
    assert first.SeriesDescription == "T1 export"
    assert str(first.PatientName) == "ANONYMOUS^MEDM2G" and first.PatientID.startswith("MEDM2G-")
    assert "SpecificCharacterSet" not in first
    assert "SourceImageSequence" not in first
    assert list(first.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert first.DerivationDescription.startswith("Converted by medm2g")
    purpose = first.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodeMeaning) == ("109102", "Processing Equipment")
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    synthetic = dicom_datasets(make_volume("MR", source="nifti", synthetic=True))[0]
    assert str(synthetic.PatientName) == "SYNTHETIC^MEDM2G"
    assert synthetic.SeriesDescription.startswith("SYNTHETIC")
    assert synthetic.StudyInstanceUID != first.StudyInstanceUID


def test_the_source_window_is_kept_for_conversions_only():
    volume = make_volume("CT", synthetic=False)
    volume.meta.window_center, volume.meta.window_width = 40.0, 400.0
    converted = dicom_datasets(volume)[0]
    assert (float(converted.WindowCenter), float(converted.WindowWidth)) == (40.0, 400.0)
    volume.synthetic = True  # e.g. a CT generated from an MR: the MR's window means nothing here
    low, high = np.percentile(volume.data, [1, 99])
    generated = dicom_datasets(volume)[0]
    assert float(generated.WindowWidth) == pytest.approx(high - low)
    assert float(generated.WindowCenter) == pytest.approx((low + high) / 2)


def test_integer_hu_are_stored_exactly_as_int16(tmp_path):
    hu = np.arange(-1024, 3072).reshape(32, 32, 4)
    volume = make_volume("CT", data=hu)
    for k, ds in enumerate(read_series(write_dicom_series(volume, tmp_path / "series"))):
        assert ds.PixelRepresentation == 1 and ds.pixel_array.dtype == np.int16
        assert (float(ds.RescaleSlope), float(ds.RescaleIntercept), ds.RescaleType) == (1.0, 0.0, "HU")
        np.testing.assert_array_equal(values(ds), hu[:, :, k])


@pytest.mark.parametrize("modality", ["CT", "MR", "OT"])
def test_float_values_come_back_within_half_a_step(modality):
    rng = np.random.default_rng(3)
    data = rng.uniform(-1000.25, 2500.5, SHAPE) if modality == "CT" else rng.uniform(0.0, 1.0, SHAPE)
    volume = make_volume(modality, data=data)
    datasets = dicom_datasets(volume)
    slopes = {float(ds.RescaleSlope) for ds in datasets}
    intercepts = {float(ds.RescaleIntercept) for ds in datasets}
    assert len(slopes) == len(intercepts) == 1  # one mapping per series
    (slope,) = slopes
    for k, ds in enumerate(datasets):
        error = np.abs(values(ds) - volume.data[:, :, k].astype(np.float64))
        assert error.max() <= slope / 2 * (1 + 1e-9)


def test_xray_is_a_dx_image_whose_values_map_onto_the_full_range():
    volume = make_volume("XRAY", data=np.linspace(0, 1, 24 * 20).reshape(24, 20, 1))
    (ds,) = dicom_datasets(volume)
    assert (ds.SOPClassUID.name, ds.Modality) == ("Digital X-Ray Image Storage - For Presentation", "DX")
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    assert list(ds.ImagerPixelSpacing) == list(ds.PixelSpacing) == [0.9, 0.7]
    assert list(ds.PatientOrientation) == ["L", "P"]
    assert "ImagePositionPatient" not in ds
    np.testing.assert_allclose(ds.pixel_array.T / 65535, volume.data[:, :, 0], atol=0.5 / 65535 + 1e-9)


def test_an_existing_folder_is_refused_and_left_untouched(tmp_path):
    folder = write_dicom_series(make_volume("CT"), tmp_path / "series")

    def snapshot():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}

    before = snapshot()
    with pytest.raises(OutputExistsError, match="ask for overwrite to replace it") as refused:
        write_dicom_series(make_volume("MR"), folder)
    assert refused.value.option == "overwrite"
    assert snapshot() == before
    write_dicom_series(make_volume("MR"), folder, overwrite=True)
    assert read_series(folder)[0].Modality == "MR"
    assert [p.name for p in tmp_path.iterdir()] == ["series"]


def test_a_failure_mid_series_leaves_no_folder(tmp_path, monkeypatch):
    real_write = pydicom.dcmwrite
    calls = []

    def failing_write(path, dataset, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        real_write(path, dataset, **kwargs)

    monkeypatch.setattr(pydicom, "dcmwrite", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_series(make_volume("CT"), tmp_path / "series")
    assert list(tmp_path.iterdir()) == []


def test_grids_dicom_cannot_represent_are_refused(tmp_path):
    sheared = make_volume("CT")
    sheared.affine[:3, 2] += [0.0, 0.8, 0.0]  # slice step tilted against the slice normal
    with pytest.raises(InputError, match="sheared"):
        write_dicom_series(sheared, tmp_path / "series")
    skewed = make_volume("CT")
    skewed.affine[:3, 1] += [0.1, 0.0, 0.0]  # rows and columns not perpendicular
    with pytest.raises(InputError, match="perpendicular"):
        dicom_datasets(skewed)
    holes = make_volume("MR")
    holes.data[3, 4, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        dicom_datasets(holes)
    stack = make_volume("XRAY", data=np.zeros((8, 8, 3)))
    with pytest.raises(InputError, match="one DICOM image"):
        dicom_datasets(stack)
    assert list(tmp_path.iterdir()) == []
