"""Dataset adapters against tiny replicas of each publisher's layout, built here in tmp_path."""

import copy
import csv
import gzip
import json
import logging
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from medm2g_core.data.adapters import ADAPTERS, LABEL_VOCABULARY
from medm2g_core.data.adapters.brain_ct_mri import BY_ORDER
from medm2g_core.data.adapters.mimic_cxr import report_sections
from medm2g_core.data.manifest import read_manifest, split_for
from medm2g_core.data.verify import verify_manifest
from medm2g_core.errors import InputError, OutputExistsError

# ---- builders ---------------------------------------------------------------------------------------------------


def write_nifti(path: Path, shape=(8, 8, 4), zooms=(1.0, 1.0, 2.0), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 100, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([*zooms, 1.0])), path)
    return path


def write_raster(path: Path, size: int = 16, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size)).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def write_series(
    folder: Path, template: str, description: str, n: int = 3, size: int | None = None,
    spacing: tuple[float, float] | None = None, origin=(0.0, 0.0, 0.0), step: float = 2.0, prefix: str = "",
) -> str:
    """A DICOM series from one of pydicom's test files: new UIDs, ``n`` slices ``step`` mm apart."""
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(get_testdata_file(template))
    uid = generate_uid()
    for k in range(n):
        ds = copy.deepcopy(source)
        if size is not None:
            ds.PixelData = np.ascontiguousarray(ds.pixel_array[:size, :size]).tobytes()
            ds.Rows = ds.Columns = size
        if spacing is not None:
            ds.PixelSpacing = list(spacing)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesDescription = description
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * step]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = step
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{prefix}{uid[-6:]}.{k}.dcm")
    return uid


def write_csv_gz(path: Path, header: list[str], rows: list[list]) -> None:
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def records_by_id(manifest: Path) -> dict:
    return {r.id: r for r in read_manifest(manifest).records}


def assert_one_line_error(excinfo, *parts: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def assert_verified(manifest: Path) -> None:
    report = verify_manifest(manifest)
    assert report.ok, report.problems
    assert report.images_checked > 0


def test_registry_names_every_dataset():
    assert set(ADAPTERS) == {"mimic-cxr", "iu-xray", "brats", "ixi", "gold-atlas", "brain-ct-mri"}
    assert set(LABEL_VOCABULARY) <= set(ADAPTERS)


# ---- MIMIC-CXR-JPG ---------------------------------------------------------------------------------------------

REPORT_1 = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:

 The heart is enlarged.  Small left
 pleural effusion.

 IMPRESSION:

 Cardiomegaly and small effusion.
"""
REPORT_2 = """                                 FINAL REPORT
 INDICATION:  Line placement.

 IMPRESSION:  Tip of the line in the SVC.
"""
REPORT_3 = """                                 FINAL REPORT
 PORTABLE CHEST

 No acute cardiopulmonary process.
"""
REPORT_4 = """ FINDINGS: Clear lungs.
"""
MIMIC_IMAGES = [  # dicom_id, subject, study, view, split
    ("aaa1", "10000032", "50414267", "PA", "train"),
    ("aaa2", "10000032", "50414267", "LATERAL", "train"),
    ("bbb2", "10000032", "53189527", "AP", "train"),
    ("bbb1", "10000032", "53189527", "AP", "train"),
    ("ccc1", "10000764", "57375967", "LL", "validate"),
    ("ddd1", "10000764", "56699142", "PA", "validate"),
    ("eee1", "11000001", "59999999", "PA", "test"),
]
MIMIC_REPORTS = {"50414267": REPORT_1, "53189527": REPORT_2, "56699142": REPORT_3, "59999999": REPORT_4,
                 "57375967": REPORT_4}
CHEXPERT_HEADER = [
    "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
]


def study_folder(root: Path, subject: str, study: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def build_mimic(root: Path, reports: str = "txt") -> Path:
    for dicom_id, subject, study, _, _ in MIMIC_IMAGES:
        write_raster(study_folder(root, subject, study) / f"{dicom_id}.jpg")
    write_csv_gz(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
                 [[d, st, su, sp] for d, su, st, _, sp in MIMIC_IMAGES])
    write_csv_gz(root / "mimic-cxr-2.0.0-metadata.csv.gz",
                 ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows"],
                 [[d, su, st, "CHEST (PA AND LAT)", v, 16] for d, su, st, v, _ in MIMIC_IMAGES])
    blank = [""] * 14
    rows = [
        ["10000032", "50414267", "", "1.0", "", "", "", "", "", "", "", "-1.0", "", "", "0.0", ""],
        ["10000032", "53189527", *blank[:13], "1.0"],
        ["10000764", "56699142", *blank[:8], "1.0", *blank[:5]],
    ]
    write_csv_gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", CHEXPERT_HEADER, rows)
    subjects = {st: su for _, su, st, _, _ in MIMIC_IMAGES}
    if reports == "txt":
        for study, text in MIMIC_REPORTS.items():
            (study_folder(root, subjects[study], study).parent / f"s{study}.txt").write_text(text)
    else:
        with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as archive:
            for study, text in MIMIC_REPORTS.items():
                archive.writestr(f"files/p{subjects[study][:2]}/p{subjects[study]}/s{study}.txt", text)
    return root


def test_mimic_cxr_manifest(tmp_path):
    root = build_mimic(tmp_path / "mimic-cxr-jpg")
    calls = []
    manifest = ADAPTERS["mimic-cxr"](root, tmp_path / "out", progress=lambda done, total: calls.append((done, total)))
    assert manifest == tmp_path / "out" / "manifest.jsonl"
    records = records_by_id(manifest)
    assert sorted(records) == ["s50414267", "s53189527", "s56699142", "s59999999"]  # lateral-only study skipped
    first = records["s50414267"]
    assert (first.split, first.subject, first.source) == ("train", "p10000032", "mimic-cxr")
    assert first.images == {"xray": "../mimic-cxr-jpg/files/p10/p10000032/s50414267/aaa1.jpg"}
    assert first.report == "The heart is enlarged. Small left pleural effusion. Cardiomegaly and small effusion."
    assert first.labels == {"cardiomegaly": 1, "pleural_effusion": -1, "pneumothorax": 0}
    assert first.meta == {"dicom_id": "aaa1", "view": "PA", "other_frontal": [],
                          "report_sections": ["findings", "impression"]}
    second = records["s53189527"]
    assert second.images["xray"].endswith("s53189527/bbb1.jpg")
    assert second.meta["other_frontal"] == ["../mimic-cxr-jpg/files/p10/p10000032/s53189527/bbb2.jpg"]
    assert second.report == "Tip of the line in the SVC."
    assert second.labels == {"support_device": 1}
    third = records["s56699142"]
    assert (third.split, third.report, third.labels) == ("val", "No acute cardiopulmonary process.", {"no_finding": 1})
    assert third.meta["report_sections"] == ["last paragraph"]
    last = records["s59999999"]
    assert (last.split, last.subject, last.labels, last.report) == ("test", "p11000001", {}, "Clear lungs.")
    assert calls[-1] == (4, 4)
    assert_verified(manifest)


def test_mimic_cxr_reports_from_zip_match_text_files(tmp_path):
    from_txt = ADAPTERS["mimic-cxr"](build_mimic(tmp_path / "a"), tmp_path / "a" / "out")
    from_zip = ADAPTERS["mimic-cxr"](build_mimic(tmp_path / "b", reports="zip"), tmp_path / "b" / "out")
    assert from_txt.read_text() == from_zip.read_text()


def test_mimic_cxr_partial_download_skips_absent_groups(tmp_path, caplog):
    root = build_mimic(tmp_path / "raw")
    for path in sorted((root / "files" / "p11").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "files" / "p11").rmdir()
    with caplog.at_level(logging.WARNING, logger="medm2g.data.adapters"):
        manifest = ADAPTERS["mimic-cxr"](root, tmp_path / "out")
    assert "s59999999" not in records_by_id(manifest)
    assert "p11" in caplog.text


def test_mimic_cxr_missing_image_and_report_name_the_study(tmp_path):
    root = build_mimic(tmp_path / "raw")
    (study_folder(root, "10000764", "56699142") / "ddd1.jpg").unlink()
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["mimic-cxr"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "mimic-cxr: study s56699142", "ddd1.jpg")
    write_raster(study_folder(root, "10000764", "56699142") / "ddd1.jpg")
    (root / "files" / "p10" / "p10000032" / "s53189527.txt").unlink()
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["mimic-cxr"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "study s53189527", "mimic-cxr-reports.zip")


def test_mimic_cxr_needs_the_split_file(tmp_path):
    root = build_mimic(tmp_path / "raw")
    (root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(InputError, match=r"mimic-cxr-2\.0\.0-split\.csv\.gz"):
        ADAPTERS["mimic-cxr"](root, tmp_path / "out")


def test_report_sections_keep_findings_and_impression():
    assert report_sections(REPORT_1)[1] == ["findings", "impression"]
    assert report_sections("FINAL REPORT\n\n") == (None, [])


# ---- IU X-ray (R2Gen) ---------------------------------------------------------------------------------------------


def build_iu(root: Path) -> Path:
    folder = root / "iu_xray"
    entries = {
        "train": [("CXR2384_IM-0942", 2, "The lungs are clear. No effusion."), ("CXR1_1_IM-0001", 1, "Normal.")],
        "val": [("CXR3_IM-1384", 2, "Mild cardiomegaly.")],
        "test": [("CXR10_IM-0002", 2, "No acute  disease.")],
    }
    annotation = {split: [] for split in entries}
    for split, items in entries.items():
        for case, views, report in items:
            paths = [f"{case}/{k}.png" for k in range(views)]
            for k, name in enumerate(paths):
                write_raster(folder / "images" / name, seed=k)
            annotation[split].append({"id": case, "report": report, "image_path": paths, "split": split})
    (folder / "annotation.json").write_text(json.dumps(annotation))
    return root


def test_iu_xray_manifest(tmp_path):
    root = build_iu(tmp_path / "raw")
    manifest = ADAPTERS["iu-xray"](root, tmp_path / "out")
    records = records_by_id(manifest)
    assert {r.id: r.split for r in records.values()} == {
        "CXR2384_IM-0942": "train", "CXR1_1_IM-0001": "train", "CXR3_IM-1384": "val", "CXR10_IM-0002": "test",
    }
    case = records["CXR2384_IM-0942"]
    assert (case.subject, case.source, case.labels) == ("CXR2384", "iu-xray", {})
    assert case.images == {"xray": "../raw/iu_xray/images/CXR2384_IM-0942/0.png"}
    assert case.meta == {"other_views": ["../raw/iu_xray/images/CXR2384_IM-0942/1.png"]}
    assert case.report == "The lungs are clear. No effusion."
    assert records["CXR10_IM-0002"].report == "No acute disease."
    assert records["CXR1_1_IM-0001"].meta == {"other_views": []}
    assert ADAPTERS["iu-xray"](root / "iu_xray", tmp_path / "out2").read_text() == manifest.read_text()
    assert_verified(manifest)


def test_iu_xray_missing_image_names_the_case(tmp_path):
    root = build_iu(tmp_path / "raw")
    (root / "iu_xray" / "images" / "CXR3_IM-1384" / "1.png").unlink()
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["iu-xray"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "iu-xray: case CXR3_IM-1384", "1.png")


# ---- BraTS 2020 ---------------------------------------------------------------------------------------------------

BRATS_TRAINING = ("BraTS20_Training_001", "BraTS20_Training_007", "BraTS20_Training_355")


def build_brats(root: Path) -> Path:
    for number, case in enumerate(BRATS_TRAINING):
        folder = root / "MICCAI_BraTS2020_TrainingData" / case
        for k, contrast in enumerate(("flair", "t1", "t1ce", "t2")):
            write_nifti(folder / f"{case}_{contrast}.nii.gz", seed=10 * number + k)
        seg = "W39_1998.09.19_Segm.nii" if case.endswith("355") else f"{case}_seg.nii.gz"
        write_nifti(folder / seg)
    folder = root / "MICCAI_BraTS2020_ValidationData" / "BraTS20_Validation_001"
    for contrast in ("flair", "t1", "t1ce", "t2"):
        write_nifti(folder / f"BraTS20_Validation_001_{contrast}.nii")
    (root / "MICCAI_BraTS2020_TrainingData" / "name_mapping.csv").write_text("BraTS_2020_subject_ID\n")
    return root


def test_brats_manifest(tmp_path):
    root = build_brats(tmp_path / "raw")
    records = records_by_id(ADAPTERS["brats"](root, tmp_path / "out"))
    assert list(records) == [*BRATS_TRAINING, "BraTS20_Validation_001"]
    first = records["BraTS20_Training_001"]
    prefix = "../raw/MICCAI_BraTS2020_TrainingData/BraTS20_Training_001/BraTS20_Training_001"
    assert first.images == {f"mr_{c}": f"{prefix}_{c}.nii.gz" for c in ("flair", "t1", "t1ce", "t2")}
    assert (first.split, first.subject, first.source, first.labels) == (
        split_for("BraTS20_Training_001"), "BraTS20_Training_001", "brats", {"tumor": 1},
    )
    assert first.meta == {"official_split": "training", "seg": f"{prefix}_seg.nii.gz"}
    assert records["BraTS20_Training_355"].meta["seg"].endswith("BraTS20_Training_355/W39_1998.09.19_Segm.nii")
    validation = records["BraTS20_Validation_001"]
    assert (validation.split, validation.meta) == ("val", {"official_split": "validation", "seg": None})
    assert validation.images["mr_t1"].endswith("BraTS20_Validation_001_t1.nii")
    assert validation.report is None
    assert_verified(tmp_path / "out" / "manifest.jsonl")


def test_brats_missing_contrast_or_seg_names_the_case(tmp_path):
    root = build_brats(tmp_path / "raw")
    case = root / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_007"
    (case / "BraTS20_Training_007_t1ce.nii.gz").unlink()
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["brats"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "brats: case BraTS20_Training_007 has no t1ce file")
    write_nifti(case / "BraTS20_Training_007_t1ce.nii.gz")
    (case / "BraTS20_Training_007_seg.nii.gz").unlink()
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["brats"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "brats: case BraTS20_Training_007 has no seg file")


def test_brats_refuses_to_overwrite_without_asking(tmp_path):
    root = build_brats(tmp_path / "raw")
    manifest = ADAPTERS["brats"](root, tmp_path / "out")
    with pytest.raises(OutputExistsError):
        ADAPTERS["brats"](root, tmp_path / "out")
    assert ADAPTERS["brats"](root, tmp_path / "out", overwrite=True) == manifest


def test_failed_prepare_leaves_no_output_folder(tmp_path):
    root = build_brats(tmp_path / "raw")
    (root / "MICCAI_BraTS2020_TrainingData" / "BraTS20_Training_001" / "BraTS20_Training_001_t2.nii.gz").unlink()
    with pytest.raises(InputError):
        ADAPTERS["brats"](root, tmp_path / "new" / "out")
    assert not (tmp_path / "new").exists()


def test_empty_raw_folder_is_an_error(tmp_path):
    (tmp_path / "raw").mkdir()
    for name, adapter in ADAPTERS.items():
        with pytest.raises(InputError) as excinfo:
            adapter(tmp_path / "raw", tmp_path / f"out-{name}")
        assert_one_line_error(excinfo, f"{name}:")
    with pytest.raises(InputError, match="does not exist"):
        ADAPTERS["brats"](tmp_path / "absent", tmp_path / "out")


# ---- IXI -----------------------------------------------------------------------------------------------------------

IXI_SUBJECTS = ("IXI002-Guys-0828", "IXI012-HH-1211")


def build_ixi(root: Path, per_contrast_folders: bool = True) -> Path:
    for number, subject in enumerate(IXI_SUBJECTS):
        for contrast in ("T1", "T2", "PD"):
            folder = root / f"IXI-{contrast}" if per_contrast_folders else root
            shape = (8, 6, 10) if contrast == "T1" else (8, 8, 4)  # T1: its own (sagittal) grid
            write_nifti(folder / f"{subject}-{contrast}.nii.gz", shape=shape, seed=number)
    write_nifti(root / "IXI-MRA" / "IXI002-Guys-0828-MRA.nii.gz")
    return root


def test_ixi_manifest_from_either_layout(tmp_path):
    manifest = ADAPTERS["ixi"](build_ixi(tmp_path / "raw"), tmp_path / "out")
    records = records_by_id(manifest)
    assert list(records) == list(IXI_SUBJECTS)
    guys = records["IXI002-Guys-0828"]
    assert guys.images == {
        "mr_t1": "../raw/IXI-T1/IXI002-Guys-0828-T1.nii.gz",
        "mr_t2": "../raw/IXI-T2/IXI002-Guys-0828-T2.nii.gz",
        "mr_pd": "../raw/IXI-PD/IXI002-Guys-0828-PD.nii.gz",
    }
    assert (guys.split, guys.subject, guys.source) == (split_for("IXI002-Guys-0828"), "IXI002-Guys-0828", "ixi")
    assert guys.meta == {"site": "Guys", "aligned": ["mr_t2", "mr_pd"]}
    assert records["IXI012-HH-1211"].meta["site"] == "HH"
    assert_verified(manifest)
    flat = records_by_id(ADAPTERS["ixi"](build_ixi(tmp_path / "flat", per_contrast_folders=False), tmp_path / "o2"))
    assert flat["IXI012-HH-1211"].images["mr_pd"] == "../flat/IXI012-HH-1211-PD.nii.gz"


def test_ixi_missing_contrast_is_an_error_unless_incomplete_allowed(tmp_path):
    root = build_ixi(tmp_path / "raw")
    (root / "IXI-PD" / "IXI012-HH-1211-PD.nii.gz").unlink()
    write_nifti(root / "IXI-T1" / "IXI013-HH-1212-T1.nii.gz")
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["ixi"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "ixi: subject IXI012-HH-1211 has no PD image")
    records = records_by_id(ADAPTERS["ixi"](root, tmp_path / "out", allow_incomplete=True))
    assert list(records) == list(IXI_SUBJECTS)  # IXI013 (T1 only) is dropped
    assert set(records["IXI012-HH-1211"].images) == {"mr_t1", "mr_t2"}
    assert records["IXI012-HH-1211"].meta["aligned"] == ["mr_t2"]


def test_ixi_same_contrast_twice_is_an_error(tmp_path):
    root = build_ixi(tmp_path / "raw")
    write_nifti(root / "copy" / "IXI002-Guys-0828-T2.nii")
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["ixi"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "subject IXI002-Guys-0828 has two T2 images")


# ---- Gold Atlas pelvis -----------------------------------------------------------------------------------------------

MR_SPACING = (0.3125, 0.3125)
MR_ORIGIN = (-83.9, -91.2, 6.6)


def build_gold_atlas(root: Path) -> tuple[Path, dict]:
    flat = root / "gold_atlas_pelvis" / "1_01_P"
    uids = {
        "planning": write_series(flat, "CT_small.dcm", "CT Pelvis", origin=(-150, -170, -70), step=3.0),
        "ct": write_series(flat, "CT_small.dcm", "CTtoMR deformed", size=64, spacing=MR_SPACING, origin=MR_ORIGIN),
        "mr_t2": write_series(flat, "MR_small.dcm", "T2 TSE tra", origin=MR_ORIGIN),
        "t1": write_series(flat, "MR_small.dcm", "T1 VIBE", origin=(0, 0, 0), step=1.0),
    }
    (flat / "notes.txt").write_text("not DICOM")
    per_series = root / "gold_atlas_pelvis" / "2_03_P"
    uids["2_ct"] = write_series(per_series / "CT", "CT_small.dcm", "")
    uids["2_mr"] = write_series(per_series / "MR_T2", "MR_small.dcm", "")
    return root, uids


def test_gold_atlas_manifest(tmp_path):
    root, uids = build_gold_atlas(tmp_path / "raw")
    manifest = ADAPTERS["gold-atlas"](root, tmp_path / "out")
    records = records_by_id(manifest)
    assert list(records) == ["1_01_P", "2_03_P"]
    first = records["1_01_P"]
    assert first.images == {"ct": "../raw/gold_atlas_pelvis/1_01_P", "mr_t2": "../raw/gold_atlas_pelvis/1_01_P"}
    assert first.meta == {"series": {"ct": uids["ct"], "mr_t2": uids["mr_t2"]}, "ct_registered": True,
                          "aligned": ["ct", "mr_t2"]}
    assert (first.split, first.subject, first.source) == (split_for("1_01_P"), "1_01_P", "gold-atlas")
    assert first.report is None
    second = records["2_03_P"]
    folder = "../raw/gold_atlas_pelvis/2_03_P"
    assert second.images == {"ct": f"{folder}/CT", "mr_t2": f"{folder}/MR_T2"}
    assert second.meta == {"series": {"ct": uids["2_ct"], "mr_t2": uids["2_mr"]}, "ct_registered": False,
                           "aligned": []}
    assert_verified(manifest)


def test_gold_atlas_missing_or_ambiguous_series_names_the_patient(tmp_path):
    root, _ = build_gold_atlas(tmp_path / "raw")
    write_series(root / "gold_atlas_pelvis" / "3_01_P", "CT_small.dcm", "CT")
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["gold-atlas"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "gold-atlas: patient 3_01_P has no MR T2 series")
    write_series(root / "gold_atlas_pelvis" / "3_01_P", "MR_small.dcm", "t2_tse_a")
    write_series(root / "gold_atlas_pelvis" / "3_01_P", "MR_small.dcm", "t2_tse_b")
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["gold-atlas"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "gold-atlas: patient 3_01_P has 2 MR T2 series")


# ---- Kaggle brain tumor CT/MRI -----------------------------------------------------------------------------------


def build_brain_ct_mri(root: Path, numbers=(1, 2, 10)) -> Path:
    dataset = root / "Dataset"
    for name in ("Healthy", "Tumor"):
        for n in numbers:
            write_raster(dataset / "Brain Tumor CT scan Images" / name / f"ct_{name.lower()} ({n}).jpg", seed=n)
            write_raster(dataset / "Brain Tumor MRI images" / name / f"mri_{name.lower()} ({n}).jpg", size=20)
    return root


def test_brain_ct_mri_manifest(tmp_path):
    manifest = ADAPTERS["brain-ct-mri"](build_brain_ct_mri(tmp_path / "raw"), tmp_path / "out")
    records = records_by_id(manifest)
    assert list(records) == [f"{c}-{n:04d}" for c in ("healthy", "tumor") for n in (1, 2, 10)]
    case = records["tumor-0010"]
    assert case.images == {
        "ct": "../raw/Dataset/Brain Tumor CT scan Images/Tumor/ct_tumor (10).jpg",
        "mr": "../raw/Dataset/Brain Tumor MRI images/Tumor/mri_tumor (10).jpg",
    }
    assert (case.labels, case.subject, case.split) == ({"tumor": 1}, "tumor-0010", split_for("tumor-0010"))
    assert records["healthy-0002"].labels == {"tumor": 0}
    assert case.meta["pairing"].startswith("by the number in the file name")
    assert case.meta["aligned"] == []
    assert_verified(manifest)


def test_brain_ct_mri_pairs_by_sorted_order_without_numbers(tmp_path):
    dataset = tmp_path / "raw"
    for modality in ("CT", "MRI"):
        for name in ("b.png", "a.png"):
            write_raster(dataset / f"Brain Tumor {modality} images" / "healthy" / name)
    records = records_by_id(ADAPTERS["brain-ct-mri"](dataset, tmp_path / "out"))
    assert list(records) == ["healthy-0001", "healthy-0002"]
    assert records["healthy-0001"].images["ct"].endswith("CT images/healthy/a.png")
    assert records["healthy-0001"].meta["pairing"] == BY_ORDER
    assert BY_ORDER == "by sorted order within class; the publisher provides no subject ids"


def test_brain_ct_mri_unpaired_image_is_an_error_unless_incomplete_allowed(tmp_path):
    root = build_brain_ct_mri(tmp_path / "raw")
    write_raster(root / "Dataset" / "Brain Tumor CT scan Images" / "Tumor" / "ct_tumor (11).jpg")
    with pytest.raises(InputError) as excinfo:
        ADAPTERS["brain-ct-mri"](root, tmp_path / "out")
    assert_one_line_error(excinfo, "brain-ct-mri: Tumor/ct_tumor (11).jpg has no partner")
    records = records_by_id(ADAPTERS["brain-ct-mri"](root, tmp_path / "out", allow_incomplete=True))
    assert "tumor-0011" not in records and len(records) == 6
