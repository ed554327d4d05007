"""`medm2g inspect` and `medm2g convert` through the CLI: real files, round trips, and every bad input."""

import json
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medm2g_core.io.dicom_write import write_dicom_series
from medm2g_core.io.nifti import write_nifti
from medm2g_core.io.volume import Volume

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")


def ct_volume(shape=(16, 12, 6)) -> Volume:
    rng = np.random.default_rng(3)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [-40.0, 30.0, 100.0]
    return Volume(rng.integers(-1024, 2000, shape).astype(np.float32), affine, "CT", "HU")


def assert_one_line_error(result, *words):
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def test_inspect_real_ct_json(cli):
    result = cli("inspect", CT_SMALL, "--json")
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["modality"] == "CT" and facts["units"] == "HU"
    assert facts["shape"] == [128, 128, 1]
    assert facts["spacing_mm"][:2] == pytest.approx([0.661468, 0.661468], abs=1e-5)
    assert facts["source"]["study_instance_uid"]


def test_inspect_human_output_names_the_facts(cli):
    result = cli("inspect", MR_SMALL)
    assert result.exit_code == 0, result.stderr
    for word in ("modality", "MR", "spacing", "orientation", "values"):
        assert word in result.stdout


def test_convert_nifti_to_dicom_to_nifti_is_exact(cli, tmp_path):
    volume = ct_volume()
    write_nifti(volume, tmp_path / "in.nii.gz")
    first = cli("convert", str(tmp_path / "in.nii.gz"), str(tmp_path / "series"), "--modality", "CT")
    assert first.exit_code == 0, first.stderr
    assert first.stdout.strip() == str(tmp_path / "series")
    assert len(list((tmp_path / "series").glob("*.dcm"))) == 6
    second = cli("convert", str(tmp_path / "series"), str(tmp_path / "out.nii.gz"))
    assert second.exit_code == 0, second.stderr
    back = nib.load(tmp_path / "out.nii.gz")
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(back.dataobj, dtype=np.float32), volume.data)


def test_convert_to_png_preview(cli, tmp_path):
    result = cli("convert", CT_SMALL, str(tmp_path / "ct.png"), "--preset", "bone")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "ct.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_folder_with_two_series_lists_them(cli, tmp_path):
    folder = tmp_path / "study"
    folder.mkdir()
    write_dicom_series(ct_volume(), folder / "a")
    write_dicom_series(ct_volume((16, 12, 4)), folder / "b")
    listing = cli("inspect", str(folder), "--json")
    assert listing.exit_code == 0, listing.stderr
    assert len(json.loads(listing.stdout)["series"]) == 2
    picked = cli("inspect", str(folder), "--series", "1", "--json")
    assert picked.exit_code == 0, picked.stderr
    assert json.loads(picked.stdout)["shape"][2] in (4, 6)
    result = cli("convert", str(folder), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "--series")
    assert not (tmp_path / "out.nii").exists()


# Each bad input: one line naming the problem, exit code 2, no output left behind.


def test_missing_path(cli, tmp_path):
    result = cli("convert", str(tmp_path / "nope.nii"), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "nope.nii", "no such file")
    assert not (tmp_path / "out.nii").exists()


def test_zero_byte_file(cli, tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    result = cli("convert", str(tmp_path / "empty.dcm"), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "empty.dcm", "empty")
    assert not (tmp_path / "out.nii").exists()


def test_truncated_dicom(cli, tmp_path):
    raw = Path(CT_SMALL).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(raw[: len(raw) // 2])
    result = cli("convert", str(tmp_path / "cut.dcm"), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "cut.dcm")
    assert not (tmp_path / "out.nii").exists()


def test_dicom_without_pixel_data(cli, tmp_path):
    result = cli("convert", get_testdata_file("test-SR.dcm"), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "test-SR.dcm", "pixel data")
    assert not (tmp_path / "out.nii").exists()


def test_series_with_a_missing_slice(cli, tmp_path):
    series = write_dicom_series(ct_volume(), tmp_path / "series")
    files = sorted(series.glob("*.dcm"))
    files[3].unlink()
    result = cli("convert", str(series), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "missing slice")
    assert not (tmp_path / "out.nii").exists()


def test_4d_nifti_without_frame(cli, tmp_path):
    source = nib.__file__.replace("__init__.py", "tests/data/example4d.nii.gz")
    result = cli("convert", source, str(tmp_path / "out.nii"))
    assert_one_line_error(result, "--frame")
    ok = cli("convert", source, str(tmp_path / "out.nii"), "--frame", "0")
    assert ok.exit_code == 0, ok.stderr


def test_nifti_full_of_nan(cli, tmp_path):
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), tmp_path / "nan.nii")
    result = cli("convert", str(tmp_path / "nan.nii"), str(tmp_path / "out.nii.gz"))
    assert_one_line_error(result, "NaN")
    assert not (tmp_path / "out.nii.gz").exists()


def test_output_that_exists(cli, tmp_path):
    shutil.copy(CT_SMALL, tmp_path / "ct.dcm")
    (tmp_path / "out.nii").write_bytes(b"keep me")
    result = cli("convert", str(tmp_path / "ct.dcm"), str(tmp_path / "out.nii"))
    assert_one_line_error(result, "out.nii", "--overwrite")
    assert (tmp_path / "out.nii").read_bytes() == b"keep me"
    assert cli("convert", str(tmp_path / "ct.dcm"), str(tmp_path / "out.nii"), "--overwrite").exit_code == 0
    assert nib.load(tmp_path / "out.nii").shape == (128, 128)


def test_unknown_output_format(cli, tmp_path):
    result = cli("convert", CT_SMALL, str(tmp_path / "out.xyz"))
    assert_one_line_error(result, "out.xyz")
    assert not (tmp_path / "out.xyz").exists()


def test_synthetic_marking_survives_dicom_and_nifti(cli, tmp_path):
    volume = ct_volume()
    volume.synthetic = True
    volume.provenance = {"model": "medm2g/test-model", "model_version": "1"}
    write_dicom_series(volume, tmp_path / "series")
    result = cli("convert", str(tmp_path / "series"), str(tmp_path / "back.nii.gz"))
    assert result.exit_code == 0, result.stderr
    facts = json.loads(cli("inspect", str(tmp_path / "back.nii.gz"), "--json").stdout)
    assert facts["synthetic"] is True
    assert facts["provenance"]["model"] == "medm2g/test-model"
    assert nib.load(tmp_path / "back.nii.gz").header["descrip"].item().decode().startswith("SYNTHETIC")


WRITING_COMMANDS = [  # every command that writes a folder, with the least it needs to reach the write
    ["prepare", "phantom", "--cases", "2"],
    ["prepare", "cache", "manifest.jsonl", "--resolution", "16"],
    ["prepare", "iu-xray", "--root", "."],
    ["synthesize-dataset", "--n", "1"],
    ["generate", "Small left pleural effusion."],
    ["demo"],
    ["evaluate", "mri-to-ct", "--data", "."],
    ["train", "vae", "--modality", "image", "--recipe", "micro", "--data", "."],
    ["weights", "pack"],
]


def _with_out(argv: list[str], out: Path) -> list[str]:
    return [*argv, str(out)] if argv == ["weights", "pack"] else [*argv, "--out", str(out)]


@pytest.mark.parametrize("argv", WRITING_COMMANDS, ids=[" ".join(a[:2]) for a in WRITING_COMMANDS])
def test_an_output_folder_under_a_file_is_one_line_and_exit_2(cli, tmp_path, argv):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    result = cli(*_with_out(argv, plain / "out"))
    assert_one_line_error(result, f"output folder {plain} is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]  # nothing left behind


def _sys_refuses_writes() -> bool:
    """/sys takes no new files, even from root (tests may run as root, where a 0o555 folder does not stop writes)."""
    try:
        with tempfile.TemporaryFile(dir="/sys"):
            return False
    except OSError:
        return Path("/sys").is_dir()


@pytest.mark.skipif(not _sys_refuses_writes(), reason="needs a /sys that refuses new files")
@pytest.mark.parametrize("argv", WRITING_COMMANDS, ids=[" ".join(a[:2]) for a in WRITING_COMMANDS])
def test_an_output_folder_without_permission_is_one_line_and_exit_2(cli, argv):
    result = cli(*_with_out(argv, Path("/sys/medm2g-out")))
    assert_one_line_error(result, "cannot write into /sys (")
    assert not Path("/sys/medm2g-out").exists()
