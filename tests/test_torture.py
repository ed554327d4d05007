"""Reliability on hostile input: every error is one escaped line with exit 2 and nothing written.

Runs in-process through ``app.run`` (as the torture benchmark does): the wheels' test files and seeded mutants,
unknown VRs, unwritable outputs, file modes of output folders, sheared NIfTI affines, rich markup in messages.
"""

import os
import random
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file

from medm2g_cli.app import run
from medm2g_core.io import dicom_read

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import torture  # the benchmark's corpus and verdicts, so the test and the benchmark judge alike

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))


def cli(capsys, *argv: str) -> tuple[int, list[str]]:
    """Exit code and the non-empty stderr lines of one in-process run."""
    capsys.readouterr()
    code = run(list(argv))
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_error_messages_are_printed_verbatim_not_as_markup(capsys, tmp_path):
    missing = tmp_path / "scan[/old]" / "missing.nii.gz"
    code, lines = cli(capsys, "inspect", str(missing))
    assert code == 2
    assert lines == [f"error: {missing}: no such file or folder"]


def test_codecs_hint_keeps_its_brackets(capsys, monkeypatch):
    class Unavailable:  # what pydicom reports when no plugin for the syntax is installed
        is_available = False

    monkeypatch.setattr(dicom_read, "get_decoder", lambda syntax: Unavailable())
    code, lines = cli(capsys, "inspect", get_testdata_file("JPEG2000.dcm"))
    assert code == 1
    assert len(lines) == 1 and "pip install 'medm2g[codecs]'" in lines[0]


def test_unknown_and_malformed_value_representations_are_refused_in_one_line(capsys, tmp_path):
    data = CT_SMALL.read_bytes()
    at = data.find(b"\x08\x00\x08\x00CS")  # (0008,0008) ImageType, explicit VR "CS"
    unknown_vr = tmp_path / "cw.dcm"
    unknown_vr.write_bytes(data[: at + 4] + b"CW" + data[at + 6:])
    for source, says in ((unknown_vr, "Unknown Value Representation 'CW' in tag (0008,0008)"),
                         (Path(get_testdata_file("badVR.dcm")), "is not a number")):
        for argv in (["inspect", str(source)], ["convert", str(source), str(tmp_path / "out.nii.gz")]):
            code, lines = cli(capsys, *argv)
            assert code == 2, lines
            assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
            assert not (tmp_path / "out.nii.gz").exists()


@pytest.mark.parametrize("target", ["/sys/medm2g-out.nii.gz", "/proc/medm2g-out.png", "/sys/medm2g-series"])
def test_unwritable_outputs_are_refused_in_one_line(capsys, target):
    extra = ["--to", "dicom"] if target.endswith("series") else []
    code, lines = cli(capsys, "convert", str(CT_SMALL), target, *extra)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: cannot write into ")
    assert not Path(target).exists()


def test_output_under_a_file_is_refused(capsys, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    code, lines = cli(capsys, "convert", str(CT_SMALL), str(plain / "ct.nii.gz"))
    assert (code, lines) == (2, [f"error: output folder {plain} is not a folder"])


def test_output_folders_get_the_umask_mode(capsys, tmp_path):
    previous = os.umask(0o022)
    try:
        code, _ = cli(capsys, "convert", str(CT_SMALL), str(tmp_path / "series"), "--to", "dicom")
        os.umask(0o027)
        code2, _ = cli(capsys, "convert", str(CT_SMALL), str(tmp_path / "series2"), "--to", "dicom")
    finally:
        os.umask(previous)
    assert (code, code2) == (0, 0)
    assert (tmp_path / "series").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "series2").stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "series").iterdir()} == {0o644}


def _nifti(path: Path, affine: np.ndarray) -> Path:
    image = nib.Nifti1Image(np.random.default_rng(0).random((8, 9, 5), dtype=np.float32), affine)
    image.header.set_sform(affine, code=1)
    image.header.set_qform(affine, code=1)
    nib.save(image, path)
    return path


def test_sheared_affine_keeps_the_sform_and_drops_the_qform(capsys, tmp_path):
    sheared = np.array([[1.0, 0.3, 0, 10], [0, 1, 0, -5], [0, 0, 2, 3], [0, 0, 0, 1]])
    plain = np.array([[0, -1.0, 0, 10], [1.5, 0, 0, -5], [0, 0, 2, 3], [0, 0, 0, 1]])  # rotated, zoomed: no shear
    for affine, qform_code in ((sheared, 0), (plain, 1)):
        source = _nifti(tmp_path / "in.nii.gz", affine)
        code, _ = cli(capsys, "convert", str(source), str(tmp_path / "out.nii.gz"), "--overwrite")
        assert code == 0
        header = nib.load(tmp_path / "out.nii.gz").header
        assert int(header["sform_code"]) == 1 and int(header["qform_code"]) == qform_code
        np.testing.assert_allclose(header.get_sform(), affine, atol=1e-4)
        if qform_code:
            np.testing.assert_allclose(header.get_qform(), affine, atol=1e-4)
    capsys.readouterr()
    assert run(["inspect", str(tmp_path / "out.nii.gz")]) == 0
    assert "sheared affine" not in capsys.readouterr().out
    _nifti(tmp_path / "in.nii.gz", sheared)
    assert run(["inspect", str(tmp_path / "in.nii.gz")]) == 0
    assert "sheared affine: voxel axes 16.70 degrees off perpendicular" in capsys.readouterr().out


def test_torture_subset_never_crashes(tmp_path):
    files = torture.wheel_files()
    assert len(files) > 150  # pydicom + pydicom-data + nibabel test data are all installed
    small = [f for f in files if f.stat().st_size < 1_000_000]  # the benchmark takes the large ones too
    subset = random.Random(1).sample(small, 24)
    damaged = torture.mutants(subset, 1, tmp_path / "mutants", seed=1)
    outcomes = torture.torture(subset + damaged, tmp_path / "out")
    crashes = [(o.command, o.source, o.code, o.stderr[-300:]) for o in outcomes if o.verdict == "crash"]
    assert crashes == []
    verdicts = {o.verdict for o in outcomes}
    assert verdicts == {"ok", "refused"}  # the subset exercises both paths, so the verdicts are not vacuous
