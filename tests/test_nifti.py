"""NIfTI read/write: exact affines, scl fields, 4D frame choice, provenance, real nibabel test images."""

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medm2g_core.errors import InputError, OutputExistsError
from medm2g_core.io.nifti import read_nifti, write_nifti
from medm2g_core.io.volume import SourceMeta, Volume

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q if np.linalg.det(q) > 0 else -q


def affine(direction: np.ndarray, spacing=(0.7, 0.9, 2.5), origin=(-120.25, 85.5, 301.75)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = direction * np.asarray(spacing)
    a[:3, 3] = origin
    return a


AXES = {
    "axial": np.eye(3),
    "sagittal": np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]], float),
    "coronal": np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], float),
    "oblique": rotation(7),
}


@pytest.mark.parametrize("name", AXES)
def test_round_trip_keeps_affine_and_hu(tmp_path, name):
    rng = np.random.default_rng(1)
    volume = Volume(rng.integers(-1024, 3072, (12, 10, 5)).astype(np.float32), affine(AXES[name]), "CT", "HU")
    path = write_nifti(volume, tmp_path / "ct.nii.gz")
    back = read_nifti(path)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(back.data, volume.data)
    assert (back.modality, back.units) == ("CT", "HU")
    image = nib.load(path)
    header = image.header
    assert header.get_sform(coded=True)[1] == 1 and header.get_qform(coded=True)[1] == 1
    np.testing.assert_allclose(header.get_qform(), volume.affine, atol=1e-4)  # qform says the same place
    assert header.get_data_dtype() == np.int16  # integral HU stored exactly
    # nibabel moves the file's scl fields onto the array proxy when it loads
    assert (image.dataobj.slope, image.dataobj.inter) == (1.0, 0.0)


def test_float_data_is_stored_as_float32(tmp_path):
    data = np.linspace(0, 1, 60, dtype=np.float32).reshape(5, 4, 3)
    path = write_nifti(Volume(data, np.eye(4), "MR", contrast="T2"), tmp_path / "mr.nii")
    back = read_nifti(path)
    np.testing.assert_array_equal(back.data, data)
    assert back.contrast == "T2"


def test_body_part_is_kept(tmp_path):
    """The body part (CHEST, SKULL) travels with a medm2g NIfTI: reports check findings against the anatomy."""
    film = Volume(np.zeros((4, 4, 1), np.float32), np.eye(4), "XRAY", meta=SourceMeta(body_part="SKULL"))
    assert read_nifti(write_nifti(film, tmp_path / "film.nii.gz")).meta.body_part == "SKULL"
    assert read_nifti(write_nifti(replace(film, meta=SourceMeta()), tmp_path / "bare.nii")).meta.body_part is None


def test_synthetic_images_say_so_in_the_header(tmp_path):
    volume = Volume(np.zeros((4, 4, 2)), np.eye(4), "CT", "HU", synthetic=True,
                    provenance={"model": "medm2g/phantom-tiny", "model_version": "0.1.0"})
    path = write_nifti(volume, tmp_path / "syn.nii.gz")
    header = nib.load(path).header
    assert header["descrip"].item().decode().startswith("SYNTHETIC")
    back = read_nifti(path)
    assert back.synthetic and back.provenance["model"] == "medm2g/phantom-tiny"


def test_scl_slope_and_inter_are_applied(tmp_path):
    image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii")
    back = read_nifti(tmp_path / "scaled.nii")
    np.testing.assert_array_equal(back.data, np.arange(24).reshape(2, 3, 4) * 2.0 - 1024.0)


def test_sform_takes_precedence_over_qform(tmp_path):
    image = nib.Nifti1Image(np.zeros((3, 3, 3), np.float32), None)
    sform = affine(np.eye(3), origin=(10, 20, 30))
    image.header.set_qform(affine(np.eye(3), origin=(0, 0, 0)), code=1)
    image.header.set_sform(sform, code=2)
    nib.save(image, tmp_path / "both.nii")
    np.testing.assert_allclose(read_nifti(tmp_path / "both.nii").affine, sform, atol=1e-5)


def test_4d_needs_a_frame_choice(tmp_path):
    path = NIBABEL_DATA / "example4d.nii.gz"
    with pytest.raises(InputError, match="choose one frame") as excinfo:
        read_nifti(path)
    assert excinfo.value.option == "frame"
    frame1 = read_nifti(path, frame=1)
    assert frame1.shape == (128, 96, 24)
    expected = np.asarray(nib.load(path).dataobj[..., 1], dtype=np.float32)
    np.testing.assert_array_equal(frame1.data, expected)
    with pytest.raises(InputError, match="out of range"):
        read_nifti(path, frame=2)


def test_real_nibabel_anatomical_image():
    volume = read_nifti(NIBABEL_DATA / "anatomical.nii")
    reference = nib.load(NIBABEL_DATA / "anatomical.nii")
    assert volume.shape == (33, 41, 25)
    np.testing.assert_allclose(volume.affine, reference.affine)
    assert volume.orientation == "".join(nib.aff2axcodes(reference.affine))
    assert volume.data.max() > volume.data.min()


def test_nan_image_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(InputError, match="NaN"):
        read_nifti(tmp_path / "nan.nii")


def test_2d_nifti_is_a_single_slice(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((6, 5), np.float32), np.diag([0.2, 0.3, 1, 1])), tmp_path / "xr.nii")
    volume = read_nifti(tmp_path / "xr.nii", modality="XRAY")
    assert volume.shape == (6, 5, 1) and volume.is_2d
    assert volume.spacing[:2] == pytest.approx((0.2, 0.3))


def test_existing_output_is_refused(tmp_path):
    volume = Volume(np.zeros((2, 2, 2)), np.eye(4))
    write_nifti(volume, tmp_path / "a.nii")
    with pytest.raises(OutputExistsError):
        write_nifti(volume, tmp_path / "a.nii")
    write_nifti(volume, tmp_path / "a.nii", overwrite=True)


def test_truncated_file_is_an_input_error(tmp_path):
    write_nifti(Volume(np.ones((20, 20, 20)), np.eye(4)), tmp_path / "full.nii")
    raw = (tmp_path / "full.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"cut\.nii"):
        read_nifti(tmp_path / "cut.nii")


def test_quantized_float_images_are_int16_within_half_a_step(tmp_path):
    data = np.random.default_rng(4).uniform(0.0, 1234.5, (16, 12, 3)).astype(np.float32)
    path = write_nifti(Volume(data, np.eye(4), "MR", contrast="T1"), tmp_path / "q.nii.gz", quantize=True)
    image = nib.load(path)
    assert image.get_data_dtype() == np.int16
    step = image.dataobj.slope
    assert 0 < step < 1234.5 / 60000
    back = read_nifti(path)
    assert np.abs(back.data - data).max() <= step / 2 + 1e-4
    assert back.data.min() == pytest.approx(data.min(), abs=step)
    assert back.data.max() == pytest.approx(data.max(), abs=step)
