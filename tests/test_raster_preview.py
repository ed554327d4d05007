"""PNG/JPEG reading (exact values, transposition, conversions, errors) and windowed, oriented previews."""

import json
import os

import numpy as np
import pytest
from PIL import Image

import medm2g_core
from medm2g_core.errors import InputError, OutputExistsError
from medm2g_core.io.preview import (
    SEPARATOR,
    WINDOW_PRESETS,
    montage,
    preview_scale,
    reorient_for_display,
    to_display,
    window,
    write_preview,
)
from medm2g_core.io.raster import is_raster, read_raster
from medm2g_core.io.volume import LPS_TO_RAS, SourceMeta, Volume


def _png(path, array, **save):
    Image.fromarray(array).save(path, **save)
    return path


def _marked_image(rows=4, cols=7, dtype=np.uint16):
    """A non-square gradient with a bright marker at (row 2, column 5)."""
    image = (np.arange(rows * cols).reshape(rows, cols) * 100).astype(dtype)
    image[2, 5] = np.iinfo(dtype).max
    return image


# --- raster reading ----------------------------------------------------------------------------------


def test_16bit_png_is_read_exactly_and_transposed(tmp_path):
    image = _marked_image()
    volume = read_raster(_png(tmp_path / "cxr.png", image))
    assert Image.open(tmp_path / "cxr.png").mode == "I;16"
    assert volume.shape == (7, 4, 1)
    assert volume.data.dtype == np.float32
    assert np.array_equal(volume.data[:, :, 0], image.T.astype(np.float32))
    assert volume.data[5, 2, 0] == 65535
    assert volume.modality == "XRAY" and volume.units == "a.u."
    assert volume.meta.format == "raster" and volume.meta.path == str(tmp_path / "cxr.png")
    assert "no geometry: unit spacing assumed" in volume.meta.notes
    assert np.array_equal(volume.affine, LPS_TO_RAS)
    assert volume.spacing == (1.0, 1.0, 1.0) and volume.orientation == "LPS"


def test_8bit_jpeg_keeps_its_stored_range(tmp_path):
    image = np.tile(np.linspace(10, 240, 32), (16, 1)).astype(np.uint8)
    path = _png(tmp_path / "xray.JPEG", image, quality=100)
    assert is_raster(path) and not is_raster(tmp_path / "ct.nii.gz")
    volume = read_raster(path, modality="OT")
    assert volume.shape == (32, 16, 1) and volume.modality == "OT"
    assert np.abs(volume.data[:, :, 0] - image.T).max() <= 3


def test_rgb_becomes_luminance_with_a_note(tmp_path):
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (100, 100, 100)
    volume = read_raster(_png(tmp_path / "colour.png", rgb))
    assert abs(volume.data[0, 0, 0] - 0.299 * 255) < 1
    assert volume.data[1, 1, 0] == 100
    assert any("RGB image converted to luminance" in note for note in volume.meta.notes)


def test_palette_image_gives_its_grey_values(tmp_path):
    grey = _marked_image(dtype=np.uint8)
    Image.fromarray(grey).convert("P").save(tmp_path / "palette.png")
    volume = read_raster(tmp_path / "palette.png")
    assert np.array_equal(volume.data[:, :, 0], grey.T)
    assert any("palette" in note for note in volume.meta.notes)


def _write_case(kind, tmp_path):
    path = tmp_path / f"{kind}.png"
    good = tmp_path / "good.png"
    _png(good, (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8))
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:-200])
    elif kind == "corrupt":
        data = bytearray(good.read_bytes())
        data[40:80] = bytes(40)
        path.write_bytes(bytes(data))
    elif kind == "text":
        path.write_text("PatientName,Age\nDoe^John,42\n")
    elif kind == "animated":
        frames = [Image.new("L", (8, 8), 0), Image.new("L", (8, 8), 255)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    elif kind == "folder":
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["missing", "zero-byte", "truncated", "corrupt", "text", "animated", "folder"])
def test_unreadable_files_are_input_errors_naming_the_file(tmp_path, kind):
    path = _write_case(kind, tmp_path)
    with pytest.raises(InputError) as error:
        read_raster(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


# --- windowing ---------------------------------------------------------------------------------------


def _ct(values, **meta):
    return Volume(np.asarray(values, np.float32).reshape(-1, 1, 1), np.eye(4), "CT", "HU", meta=SourceMeta(**meta))


def test_ct_lung_preset_maps_level_and_edges():
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0)
    result = window(_ct([-600, -1350, 150, -2000, 1000]), "lung")
    assert result.dtype == np.float32 and result.shape == (5, 1, 1)
    assert np.allclose(result.ravel(), [0.5, 0.0, 1.0, 0.0, 1.0])


def test_ct_default_is_the_stored_window_else_soft_tissue():
    values = [-125, 50, 225]
    assert np.allclose(window(_ct(values)).ravel(), [0.0, 0.5, 1.0])  # soft tissue: L50 W350
    stored = window(_ct([0, 40, 80], window_center=40.0, window_width=80.0))
    assert np.allclose(stored.ravel(), [0.0, 0.5, 1.0])


def test_mr_uses_robust_percentiles_of_the_foreground():
    rng = np.random.default_rng(1)
    data = np.zeros((40, 40, 10), np.float32)
    data[5:35, 5:35] = rng.gamma(4.0, 100.0, (30, 30, 10))
    mr = Volume(data, np.eye(4), "MR")
    result = window(mr)
    foreground = data[data > 0]
    low, high = np.percentile(foreground, [0.5, 99.5])
    assert result.shape == data.shape and result.min() >= 0 and result.max() <= 1
    assert np.all(result[data == 0] == 0)
    at_high = np.argmin(np.abs(data - high))
    assert result.ravel()[at_high] == pytest.approx(1.0, abs=1e-3)
    assert np.mean(result[data >= high]) == 1.0 and np.mean(result[(data > 0) & (data <= low)]) == 0.0
    assert window(mr, percentiles=(0, 100)).max() == 1.0


def test_constant_images_are_black_and_masks_white():
    assert not window(Volume(np.full((4, 4, 2), 7.0), np.eye(4), "MR")).any()
    mask = np.zeros((4, 4, 2))
    mask[1:3, 1:3] = 1000
    assert np.array_equal(window(Volume(mask, np.eye(4), "OT")), mask / 1000)


def test_unknown_preset_lists_the_valid_ones_and_presets_need_hu():
    with pytest.raises(InputError, match="brain, subdural, bone, lung"):
        window(_ct([0]), "liverish")
    with pytest.raises(InputError, match="presets are in HU"):
        window(Volume(np.ones((2, 2, 2)), np.eye(4), "MR"), "brain")
    with pytest.raises(InputError, match="percentiles"):
        window(Volume(np.ones((2, 2, 2)), np.eye(4), "MR"), percentiles=(99, 1))


# --- display orientation -----------------------------------------------------------------------------


def _ras_phantom():
    """A RAS-stored MR volume with a marker at the patient's right-anterior, in the most superior slice."""
    data = np.zeros((20, 24, 4), np.float32)
    data[2:-2, 2:-2, :] = 10.0 + np.arange(16)[:, None, None]  # a body with air around it
    data[15:, 18:, 3] = 100.0  # high i = patient right, high j = anterior, k = 3 superior
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[:3, 3] = (-10, -12, 0)
    return Volume(data, affine, "MR")


def _flip(volume, axis):
    """The same image stored with ``axis`` reversed: data flipped, affine column negated and origin moved."""
    affine = volume.affine.copy()
    affine[:3, 3] += affine[:3, axis] * (volume.shape[axis] - 1)
    affine[:, axis] *= -1
    return Volume(np.flip(volume.data, axis), affine, volume.modality)


def _swap_ij(volume):
    affine = volume.affine[:, [1, 0, 2, 3]]
    return Volume(np.transpose(volume.data, (1, 0, 2)), affine, volume.modality)


def _lps_storage(volume):
    """As a DICOM-derived volume would be: columns along LPS +x (patient left), rows along LPS +y."""
    return _flip(_flip(volume, 0), 1)


STORAGES = {
    "ras": lambda v: v,
    "lps": _lps_storage,
    "flipped-columns": lambda v: _flip(v, 0),
    "flipped-slices": lambda v: _flip(v, 2),
    "transposed": _swap_ij,
    "transposed-flipped": lambda v: _flip(_swap_ij(v), 1),
}


@pytest.mark.parametrize("storage", list(STORAGES))
def test_right_anterior_is_top_left_whatever_the_storage_order(storage):
    volume = STORAGES[storage](_ras_phantom())
    display = reorient_for_display(volume)
    assert display.orientation == "LPS" and display.shape == (20, 24, 4)
    corner = display.affine @ [0, 0, 0, 1]
    assert np.allclose(corner[:3], (9, 11, 0))  # the same voxel of the patient as before: R, A, I corner
    grid = montage(volume, n_slices=4, columns=4)
    assert grid.shape == (24, 4 * 20 + 3 * SEPARATOR)
    last = grid[:, 3 * (20 + SEPARATOR):]
    rows, cols = np.nonzero(last == 255)
    assert rows.size == 5 * 6 and rows.max() < 12 and cols.max() < 10
    assert np.array_equal(grid, montage(_ras_phantom(), n_slices=4, columns=4))
    assert not (grid[:, :3 * 20] == 255).any()  # the marker is only in the most superior slice


def test_to_display_transposes_and_quantises():
    shown = to_display(np.array([[0.0, 1.0, 0.5], [2.0, -1.0, np.nan]]))
    assert shown.dtype == np.uint8 and shown.shape == (3, 2)
    assert shown.tolist() == [[0, 255], [255, 0], [128, 0]]


def test_montage_grid_shape_and_square_pixels():
    volume = Volume(np.random.default_rng(2).random((30, 20, 12)), np.eye(4), "MR")
    assert montage(volume, n_slices=6, columns=3).shape == (2 * 20 + SEPARATOR, 3 * 30 + 2 * SEPARATOR)
    assert montage(volume, n_slices=5, columns=3).shape == (2 * 20 + SEPARATOR, 3 * 30 + 2 * SEPARATOR)
    assert montage(volume, n_slices=100).shape == (3 * 20 + 2 * SEPARATOR, 4 * 30 + 3 * SEPARATOR)  # all 12
    anisotropic = Volume(np.ones((40, 20, 1)), np.diag([0.5, 1.0, 1.0, 1.0]), "XRAY")
    assert montage(anisotropic).shape == (40, 40)  # 20 mm x 20 mm at 0.5 mm pixels
    wide = Volume(np.ones((3000, 1500, 1)), np.eye(4), "XRAY")
    assert montage(wide).shape == (512, 1024)


def test_mni_template_montage_shows_the_brain_in_the_middle():
    datasets = pytest.importorskip("nilearn.datasets")
    template = datasets.load_mni152_template(resolution=2)
    volume = Volume(np.asarray(template.dataobj), template.affine, "MR", contrast="T1")
    grid = montage(volume)
    rows, cols = 117, 99  # (99, 117, 95) stored RAS: screen x = i, screen y = j
    assert grid.shape == (4 * rows + 3 * SEPARATOR, 4 * cols + 3 * SEPARATOR)
    tile = grid[2 * (rows + SEPARATOR):][:rows, 1 * (cols + SEPARATOR):][:, :cols].astype(float)
    centre = tile[rows // 4: 3 * rows // 4, cols // 4: 3 * cols // 4]
    border = np.concatenate([tile[:8].ravel(), tile[-8:].ravel(), tile[:, :8].ravel(), tile[:, -8:].ravel()])
    assert centre.mean() > 60 and border.mean() < 10
    tiles = [grid[r * (rows + SEPARATOR):][:rows, c * (cols + SEPARATOR):][:, :cols]
             for r in range(4) for c in range(4)]
    assert all(tile.max() > 100 for tile in tiles)  # the empty slices above the brain are skipped


# --- preview files -----------------------------------------------------------------------------------


def _png_pixels_and_text(path):
    with Image.open(path) as image:
        return np.asarray(image), dict(image.text)


def test_synthetic_preview_is_labelled_in_pixels_and_text(tmp_path):
    volume = _ras_phantom()
    real = write_preview(volume, tmp_path / "real.png")
    synthetic = Volume(volume.data, volume.affine, "MR", synthetic=True,
                       provenance={"model": "medm2g/phantom-tiny", "revision": "abc123"})
    fake = write_preview(synthetic, tmp_path / "fake.png")
    real_pixels, real_text = _png_pixels_and_text(real)
    fake_pixels, fake_text = _png_pixels_and_text(fake)
    assert real_text == {"Software": f"medm2g {medm2g_core.__version__}"}
    assert fake_text["Software"] == real_text["Software"]
    assert fake_text["Description"].startswith("SYNTHETIC") and "medm2g/phantom-tiny" in fake_text["Description"]
    assert json.loads(fake_text["Comment"])["provenance"]["revision"] == "abc123"
    assert real_pixels.shape == fake_pixels.shape and not np.array_equal(real_pixels, fake_pixels)
    factor = preview_scale(montage(volume).shape)
    assert np.array_equal(real_pixels[::factor, ::factor], montage(volume))
    label = (fake_pixels != real_pixels).any(axis=-1) if fake_pixels.ndim == 3 else fake_pixels != real_pixels
    rows, cols = np.nonzero(label)
    assert rows.max() < real_pixels.shape[0] / 4 and cols.max() < real_pixels.shape[1] / 2  # a corner, not across


def test_preview_refuses_to_overwrite_and_needs_png(tmp_path):
    volume = _ras_phantom()
    target = write_preview(volume, tmp_path / "preview.png")
    before = target.read_bytes()
    with pytest.raises(OutputExistsError, match="ask for overwrite to replace it") as refused:
        write_preview(_flip(volume, 2), target, n_slices=1)
    assert refused.value.option == "overwrite"
    assert target.read_bytes() == before
    write_preview(volume, target, overwrite=True, n_slices=1)
    assert target.read_bytes() != before
    with pytest.raises(InputError, match=r"\.png"):
        write_preview(volume, tmp_path / "preview.jpg")
    assert os.listdir(tmp_path) == ["preview.png"]


def test_xray_preview_keeps_the_stored_orientation(tmp_path):
    volume = read_raster(_png(tmp_path / "cxr.png", _marked_image(rows=6, cols=9)))
    pixels, _ = _png_pixels_and_text(write_preview(volume, tmp_path / "cxr-preview.png"))
    factor = preview_scale((6, 9))
    assert factor == 43 and pixels.shape == (6 * factor, 9 * factor)  # enlarged to 256+ px a side, pixels kept
    pixels = pixels[::factor, ::factor]
    assert np.unravel_index(np.argmax(pixels), pixels.shape) == (2, 5) and pixels[2, 5] == 255
    assert pixels[0, 0] == 0
