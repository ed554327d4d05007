"""verify_manifest: a good manifest passes and each kind of problem is found and named."""

import json
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medm2g_core.data.manifest import CaseRecord, write_manifest
from medm2g_core.data.verify import KINDS, verify_manifest

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def write_nifti(path: Path, data: np.ndarray | None = None, affine: np.ndarray = AFFINE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = np.arange(8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path.name


def good_records(folder: Path) -> list[CaseRecord]:
    records = []
    for number, split in enumerate(("train", "train", "val", "test")):
        case = f"case-{number}"
        images = {
            "ct": "images/" + write_nifti(folder / "images" / f"{case}_ct.nii.gz"),
            "mr_t1": "images/" + write_nifti(folder / "images" / f"{case}_t1.nii.gz"),
        }
        records.append(CaseRecord(
            id=case, split=split, subject=f"subject-{number}", source="phantom", images=images,
            report=f"report {number}", labels={"tumor": number % 2, "atrophy": 0},
        ))
    return records


def write(folder: Path, records: list[CaseRecord]) -> Path:
    return write_manifest(folder / "manifest.jsonl", records, overwrite=True)


def kinds(report) -> list[tuple[str, str]]:
    return sorted((p.case, p.kind) for p in report.problems)


def test_good_manifest_passes_with_counts(tmp_path):
    calls = []
    report = verify_manifest(write(tmp_path, good_records(tmp_path)), progress=lambda d, t: calls.append((d, t)))
    assert report.ok, report.problems
    assert (report.cases, report.images_checked) == (4, 8)
    assert report.splits == {"train": 2, "val": 1, "test": 1}
    assert report.sources == {"phantom": 4}
    assert report.labels == {"atrophy": {0: 4}, "tumor": {0: 2, 1: 2}}
    assert calls[-1] == (4, 4)
    assert json.loads(json.dumps(report.to_dict()))["labels"]["tumor"] == {"0": 2, "1": 2}


def test_unreadable_manifest_is_one_problem(tmp_path):
    (tmp_path / "manifest.jsonl").write_text("{not json\n")
    report = verify_manifest(tmp_path / "manifest.jsonl")
    assert [(p.case, p.kind) for p in report.problems] == [("", "manifest")]
    assert not report.ok


def test_missing_file_is_found_even_without_loading_images(tmp_path):
    records = good_records(tmp_path)
    (tmp_path / records[1].images["mr_t1"]).unlink()
    for check_images in (True, False):
        report = verify_manifest(write(tmp_path, records), check_images=check_images)
        assert kinds(report) == [("case-1", "missing_file")]
        assert "mr_t1 image images/case-1_t1.nii.gz does not exist" in report.problems[0].message


def test_nan_image_is_found(tmp_path):
    records = good_records(tmp_path)
    data = np.zeros((8, 8, 4), np.float32)
    data[0, 0, :2] = np.nan
    data[1, 1, 1] = np.inf
    write_nifti(tmp_path / records[2].images["ct"], data)
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-2", "nonfinite")]
    assert "3 of 256 values are NaN or infinite" in report.problems[0].message
    assert verify_manifest(write(tmp_path, records), check_images=False).ok


def test_unreadable_image_is_found(tmp_path):
    records = good_records(tmp_path)
    (tmp_path / records[0].images["ct"]).write_bytes(b"not a nifti at all")
    assert kinds(verify_manifest(write(tmp_path, records))) == [("case-0", "unreadable")]


def test_shape_mismatch_between_ct_and_mr(tmp_path):
    records = good_records(tmp_path)
    write_nifti(tmp_path / records[0].images["mr_t1"], np.zeros((8, 8, 5), np.float32))
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-0", "geometry")]
    assert report.problems[0].message == "mr_t1 shape (8, 8, 5) differs from ct shape (8, 8, 4)"


@pytest.mark.parametrize(("change", "expected"), [
    (np.diag([1.0, 1.0, 2.5, 1.0]), "mr_t1 spacing (1, 1, 2.5) mm differs from ct spacing (1, 1, 2) mm"),
    (np.diag([-1.0, 1.0, 2.0, 1.0]), "mr_t1 axis directions differ from ct's (orientation LAS vs RAS)"),
])
def test_spacing_and_direction_mismatch(tmp_path, change, expected):
    records = good_records(tmp_path)
    write_nifti(tmp_path / records[3].images["mr_t1"], affine=change)
    report = verify_manifest(write(tmp_path, records))
    assert [(p.case, p.kind, p.message) for p in report.problems] == [("case-3", "geometry", expected)]


def test_origin_tolerance(tmp_path):
    records = good_records(tmp_path)
    shifted = AFFINE.copy()
    shifted[:3, 3] = [0.005, 0, 0]  # within 1e-2 mm
    write_nifti(tmp_path / records[3].images["mr_t1"], affine=shifted)
    assert verify_manifest(write(tmp_path, records)).ok
    shifted[:3, 3] = [3.0, 4.0, 0]
    write_nifti(tmp_path / records[3].images["mr_t1"], affine=shifted)
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-3", "geometry")]
    assert "is 5 mm from ct origin" in report.problems[0].message


def test_declared_aligned_keys_limit_the_geometry_check(tmp_path):
    records = good_records(tmp_path)
    write_nifti(tmp_path / records[0].images["mr_t1"], np.zeros((8, 8, 5), np.float32))
    records[0].meta["aligned"] = []
    assert verify_manifest(write(tmp_path, records)).ok


def test_xray_is_not_compared_with_ct(tmp_path):
    records = good_records(tmp_path)
    records[0].images["xray"] = "images/" + write_nifti(tmp_path / "images" / "xray.nii.gz", np.zeros((16, 16), "f4"))
    assert verify_manifest(write(tmp_path, records)).ok


def test_split_leakage(tmp_path):
    records = good_records(tmp_path)
    records[2].subject = records[0].subject
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-0", "split_leakage")]
    assert report.problems[0].message == "subject subject-0 (phantom) is in 2 splits: train: case-0; val: case-2"


def test_same_subject_in_two_sources_is_not_leakage(tmp_path):
    records = good_records(tmp_path)
    records[2].subject, records[2].source = records[0].subject, "other"
    records[2].labels, records[2].report = {}, None
    assert verify_manifest(write(tmp_path, records)).ok


@pytest.mark.parametrize("value", [2, 0.5, True, "1"])
def test_bad_label_value(tmp_path, value):
    records = good_records(tmp_path)
    records[1].labels["tumor"] = value
    report = verify_manifest(write(tmp_path, records))
    assert ("case-1", "label_value") in kinds(report)


def test_inconsistent_label_names(tmp_path):
    records = good_records(tmp_path)
    records[1].labels = {"tumour": 1, "atrophy": 0}
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-1", "label_names")]
    assert "unknown ['tumour'], missing ['tumor']" in report.problems[0].message


def test_known_source_vocabulary(tmp_path):
    records = good_records(tmp_path)
    for record in records:
        record.source = "mimic-cxr"  # sparse CheXpert labels: missing names are fine, unknown ones are not
        record.images.pop("mr_t1")
        record.labels = {"cardiomegaly": 1}
    records[0].labels = {}
    records[2].labels = {"cardiomegally": 1}
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-2", "label_names")]


def test_duplicate_image(tmp_path):
    records = good_records(tmp_path)
    records[3].images["ct"] = records[0].images["ct"]
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-0", "duplicate_image")]
    assert "used 2 times: case-0 (ct), case-3 (ct)" in report.problems[0].message


def test_one_dicom_folder_with_two_series_is_not_a_duplicate(tmp_path):
    records = good_records(tmp_path)
    records[0].images["mr_t1"] = records[0].images["ct"]
    records[0].meta["series"] = {"ct": "1.2.3", "mr_t1": "1.2.4"}
    assert "duplicate_image" not in {p.kind for p in verify_manifest(write(tmp_path, records), False).problems}


def test_empty_report(tmp_path):
    records = good_records(tmp_path)
    records[3].report = "   "
    report = verify_manifest(write(tmp_path, records))
    assert kinds(report) == [("case-3", "empty_report")]


def test_every_problem_kind_is_documented(tmp_path):
    records = good_records(tmp_path)
    records[0].labels["tumor"] = 7
    report = verify_manifest(write(tmp_path, records))
    assert {p.kind for p in report.problems} <= set(KINDS)
    assert asdict(report.problems[0]) == {"case": "case-0", "kind": "label_value",
                                          "message": "label 'tumor' is 7; a label is -1, 0 or 1"}
